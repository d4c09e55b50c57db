#!/usr/bin/env bash
# mSLAM on CoVoST 2 (Common Voice 4 speech, CoVoST 2 translations): joint speech + character-text
# pre-training of one Conformer, speech translation X -> en fine-tuned from it (and from scratch),
# beam decoding of data/test, sacrebleu BLEU per source language, a packaged model in the store.
#   ./run.sh --corpus-dir /data/cv-corpus-4-2019-12-10 --tsv-dir /data/covost2 --src-langs fr,de,es,ca
#   ./run.sh --stage 3                          # corpus paths from db.sh; from pre-training on
#   ./run.sh --size tiny ...                    # conf/*_tiny.yaml: the CI fixture run
set -euo pipefail

stage=0              # Begin configuration section
stop_stage=100
corpus_dir=          # Common Voice root (<dir>/<lang>/clips/*.mp3); default: COVOST2 in db.sh
tsv_dir=             # CoVoST 2 TSV dir; default: COVOST2_TSV in db.sh, else the corpus dir
src_langs=fr,de,es,ca
tgt_lang=en
nj=2                 # parallel mp3 -> 16 kHz wav conversion jobs and decoding jobs
vocab_size=1000      # upper bound of the char vocabulary (source + translation characters)
size=default         # default: conf/<name>.yaml (GPU-sized) | tiny: conf/<name>_tiny.yaml (CI)
pretrain_config=     # default: conf/pretrain.yaml (conf/pretrain_tiny.yaml with --size tiny)
st_config=           # default: conf/finetune_st.yaml (conf/finetune_st_tiny.yaml)
variant=mslam-ctc    # pre-training variant: w2v-bert (speech only) | mslam-tlm | mslam-ctc
rows=                # ST fine-tuning rows, e.g. "scratch mslam-ctc" (default: scratch and ${variant})
nproc=1              # training processes per node (torchrun + DDP when > 1; utils/lib/train.sh)
nnodes=1             # training nodes (> 1: cmd_backend=slurm, one srun task per node)
train_opts=          # extra key=value overrides for every `stk train` (e.g. trainer.max_steps=10)
beam_size=10
device=cpu           # decoding device (cpu | cuda)
bootstrap=1000       # bootstrap resamples for the 95 % BLEU intervals
model_name=covost2-mslam-st  # model-store name of the packaged ST model (stage 7)
# End configuration section
help_message="Usage: $0 [--stage N] [--stop-stage N] [--corpus-dir DIR] [--tsv-dir DIR] [--src-langs fr,de,...] [--size default|tiny] [--rows \"scratch mslam-ctc\"] [--nj N]"

. ./path.sh
. ./cmd.sh
. ./db.sh
. utils/log.sh
log "$0 $*"  # the command line as given, before option parsing consumes it
. utils/parse_options.sh
. utils/lib/train.sh   # stk_train CONFIG EXP_DIR [key=value ...] (skips finished runs: EXP_DIR/.done)
. utils/lib/decode.sh  # stk_decode_nj NJ DATA_DIR OUT_DIR [stk decode options ...]

corpus_dir=${corpus_dir:-${COVOST2}}
tsv_dir=${tsv_dir:-${COVOST2_TSV:-${corpus_dir}}}
if [ -z "${corpus_dir}" ]; then
  log "error: no CoVoST 2 corpus: set COVOST2 (the Common Voice 4 root) in db.sh, or pass --corpus-dir DIR"
  exit 1
fi
rows=${rows:-scratch ${variant}}
sfx=; [ "${size}" = tiny ] && sfx=_tiny
pretrain_config=${pretrain_config:-conf/pretrain${sfx}.yaml}
st_config=${st_config:-conf/finetune_st${sfx}.yaml}
tok=data/token/char
read -r -a extra <<< "${train_opts}"
train() { stk_train "$1" "$2" data.tokenizer=${tok}.model data.cmvn=dump/cmvn.json "${@:3}" "${extra[@]}"; }
. utils/lib/done.sh   # is_done STAGE MARKER KEY: skip a stage that already ran with these settings
log "corpus=${corpus_dir}, tsv=${tsv_dir}"

key0="${corpus_dir} ${tsv_dir} ${src_langs} ${tgt_lang}"
if [ ${stage} -le 0 ] && [ ${stop_stage} -ge 0 ] && ! is_done 0 data/.done "${key0}"; then
  log "Stage 0: CoVoST 2 ${src_langs} -> ${tgt_lang}: data/{train,dev,test} (clips -> data/wav, 16 kHz)"
  stk corpus covost2 --corpus-dir "${corpus_dir}" --tsv-dir "${tsv_dir}" --out data \
    --src-langs "${src_langs}" --tgt-lang "${tgt_lang}" --nj "${nj}"
  echo "${key0}" > data/.done
fi

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ] && ! is_done 1 dump/.done "${key0}"; then
  log "Stage 1: fbank features and global CMVN (logs: exp/log/fbank_<set>.log)"
  for x in train dev; do
    stk data validate data/${x}
    ${train_cmd} exp/log/fbank_${x}.log stk data fbank data/${x} dump/${x}
  done
  stk data cmvn dump/train --out dump/cmvn.json
  echo "${key0}" > dump/.done
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ] && ! is_done 2 ${tok}.done "${key0} ${vocab_size}"; then
  log "Stage 2: char tokenizer shared by the transcripts and the ${tgt_lang} translations"
  stk tokenizer train data/train/text data/train/text.${tgt_lang} --out "${tok}" \
    --vocab-size ${vocab_size} --model-type char
  log "  data/text_train: the transcripts and translations as unpaired text (pre-training's text stream)"
  mkdir -p data/text_train
  { sed 's/ /-src /' data/train/text; sed 's/ /-tgt /' data/train/text.${tgt_lang}; } | LC_ALL=C sort > data/text_train/text
  { sed 's/ /-src /' data/train/utt2lang; awk -v l=${tgt_lang} '{print $1 "-tgt", l}' data/train/utt2lang; } \
    | LC_ALL=C sort > data/text_train/utt2lang
  echo "${key0} ${vocab_size}" > ${tok}.done
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  log "Stage 3: pre-training ${variant} (${pretrain_config}) -> exp/pretrain_${variant}"
  opts=(model.conf.variant=${variant} data.train.speech.data_dir=dump/train data.train.text.data_dir=data/text_train
        data.train.paired.data_dir=dump/train data.valid.data_dir=dump/dev)  # this recipe's dirs, whatever the config
  [ "${variant}" = w2v-bert ] && opts+=(data.train.text.batch.ratio=0 data.train.paired.batch.ratio=0)
  train ${pretrain_config} exp/pretrain_${variant} "${opts[@]}"
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  for row in ${rows}; do
    init=()
    [ "${row}" != scratch ] && init=("init=[{path: exp/pretrain_${row}/model.avg1.safetensors, src: encoder., dst: encoder.}]")
    log "Stage 4: fine-tune ST ${src_langs} -> ${tgt_lang} from ${row} (${st_config}) -> exp/${row}_st"
    train ${st_config} exp/${row}_st data.train.paired.data_dir=dump/train data.valid.data_dir=dump/dev "${init[@]}"
  done
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
  log "Stage 5: package and translate data/test (attention beam ${beam_size}, ${nj} jobs)"
  for row in ${rows}; do
    d=exp/${row}_st key="${beam_size} $(cksum < exp/${row}_st/model.avg1.safetensors)"
    is_done 5 ${d}/decode_test/.done "${key}" && continue
    stk package ${d} --weights ${d}/model.avg1.safetensors --out ${d}/package --method attention \
      --beam-size ${beam_size} --ctc-weight 0 --description "CoVoST 2 ${src_langs} -> ${tgt_lang} ST (mSLAM, ${row})"
    stk_decode_nj ${nj} data/test ${d}/decode_test --model ${d}/package --device ${device}
    echo "${key}" > ${d}/decode_test/.done
  done
fi

key6="${rows} ${bootstrap} $({ for row in ${rows}; do cat exp/${row}_st/decode_test/hyp; done 2>/dev/null || true; } | cksum)"
if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ] && ! is_done 6 exp/.done_results "${key6}"; then
  log "Stage 6: BLEU/chrF (sacrebleu, ${bootstrap} bootstrap samples) per source language -> exp/RESULTS.md"
  cells=()
  for row in ${rows}; do
    d=exp/${row}_st/decode_test
    stk score data/test/text.${tgt_lang} ${d}/hyp --metric bleu --utt2lang data/test/utt2lang \
      --bootstrap ${bootstrap} --json ${d}/score.json > ${d}/score.txt
    cells+=("${row}|BLEU|bleu|${d}/score.json" "${row}|chrF|chrf|${d}/score.json")
    for l in ${src_langs//,/ }; do cells+=("${row}|BLEU ${l}|by_lang.${l}.bleu|${d}/score.json"); done
  done
  stk env --out exp/RESULTS.md
  stk table "${cells[@]}" --out exp/RESULTS.md --append --title "mSLAM ST on CoVoST 2 ${src_langs} -> ${tgt_lang} (test)" \
    --notes "Rows: ST fine-tuned from scratch or from ${variant} pre-training (${pretrain_config}; ST ${st_config}${train_opts:+; overrides: ${train_opts}}). Attention beam ${beam_size}, no CTC in the search; sacrebleu BLEU/chrF on cased, punctuated ${tgt_lang}; 95 % intervals in exp/<row>_st/decode_test/score.txt."
  echo "${key6}" > exp/.done_results
  cat exp/RESULTS.md
fi

best=${variant}; [[ " ${rows} " = *" ${variant} "* ]] || best=${rows%% *}
key7="${model_name} $(cksum 2>/dev/null < exp/${best}_st/model.avg1.safetensors || true)"
if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 7 ] && ! is_done 7 exp/${best}_st/.published "${key7}"; then
  log "Stage 7: publish exp/${best}_st/package to the model store as '${model_name}'"
  stk package exp/${best}_st --weights exp/${best}_st/model.avg1.safetensors --out exp/${best}_st/package \
    --method attention --beam-size ${beam_size} --ctc-weight 0 --name ${model_name} --force \
    --description "CoVoST 2 ${src_langs} -> ${tgt_lang} speech translation (mSLAM ${best})"
  echo "${key7}" > exp/${best}_st/.published
  log "Try: stk decode --model ${model_name} data/test/wav.scp"
fi
