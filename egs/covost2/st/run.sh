#!/usr/bin/env bash
# Speech translation X -> en on CoVoST 2 (Common Voice 4 speech, CoVoST 2 translations), the ESPnet
# ST recipe way: the ST encoder starts from a source-language ASR model (trained here, or given
# with --encoder-init: any weights with encoder.* of the ST encoder's shape, e.g. a pre-training),
# CTC stays on the source transcript; beam decoding of data/test, sacrebleu BLEU per source language.
#   ./run.sh --corpus-dir /data/cv-corpus-4-2019-12-10 --tsv-dir /data/covost2 --src-langs fr,de,es,ca
#   ./run.sh --stage 3                          # corpus paths from db.sh; from ASR training on
#   ./run.sh --size tiny ...                    # conf/*_tiny.yaml: the CI fixture run
set -euo pipefail

stage=0              # Begin configuration section
stop_stage=100
corpus_dir=          # Common Voice root (<dir>/<lang>/clips/*.mp3); default: COVOST2 in db.sh
tsv_dir=             # CoVoST 2 TSV dir; default: COVOST2_TSV in db.sh, else the corpus dir
src_langs=fr,de,es,ca
tgt_lang=en
nj=2                 # parallel mp3 -> 16 kHz wav conversion jobs and decoding jobs
vocab_size=8000      # joint BPE over source transcripts and translations (ST)
size=default         # default: conf/<name>.yaml (GPU-sized) | tiny: conf/<name>_tiny.yaml (CI)
asr_config=          # default: conf/asr.yaml (conf/asr_tiny.yaml with --size tiny)
st_config=           # default: conf/st.yaml (conf/st_tiny.yaml)
encoder_init=        # weights whose encoder.* start the ST encoder; empty: stage 3's ASR model
nproc=1              # training processes per node (torchrun + DDP when > 1; utils/lib/train.sh)
nnodes=1             # training nodes (> 1: cmd_backend=slurm, one srun task per node)
train_opts=          # extra key=value overrides for every `stk train` (e.g. trainer.max_steps=10)
beam_size=10
length_penalty=0.0   # length bonus per token in the attention search
device=cpu           # decoding device (cpu | cuda)
bootstrap=1000       # bootstrap resamples for the 95 % BLEU intervals
model_name=covost2-st  # model-store name of the packaged ST model (stage 7)
# End configuration section
help_message="Usage: $0 [--stage N] [--stop-stage N] [--corpus-dir DIR] [--tsv-dir DIR] [--src-langs fr,de,...] [--size default|tiny] [--encoder-init FILE] [--nj N]"

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
sfx=; [ "${size}" = tiny ] && sfx=_tiny
asr_config=${asr_config:-conf/asr${sfx}.yaml}
st_config=${st_config:-conf/st${sfx}.yaml}
chars=data/token/char
bpe=data/token/bpe${vocab_size}
asr=exp/asr st=exp/st
read -r -a extra <<< "${train_opts}"
dirs=(data.train.paired.data_dir=dump/train data.valid.data_dir=dump/dev)  # this recipe's dirs, whatever the config
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

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ] && ! is_done 2 data/token/.done "${key0} ${vocab_size}"; then
  log "Stage 2: characters of the source transcripts (ASR); joint BPE ${vocab_size} of transcripts + translations (ST)"
  stk tokenizer train data/train/text --out ${chars} --vocab-size 1000 --model-type char
  stk tokenizer train data/train/text data/train/text.${tgt_lang} --out ${bpe} --vocab-size ${vocab_size} --model-type bpe
  echo "${key0} ${vocab_size}" > data/token/.done
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  if [ -n "${encoder_init}" ]; then
    log "Stage 3: skipped: the ST encoder starts from ${encoder_init}"
  else
    log "Stage 3: source-language ASR (${asr_config}) -> ${asr}: the ST encoder's initialisation"
    stk_train ${asr_config} ${asr} data.tokenizer=${chars}.model data.cmvn=dump/cmvn.json "${dirs[@]}" "${extra[@]}"
  fi
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  init=${encoder_init:-${asr}/model.avg1.safetensors}
  log "Stage 4: ST ${src_langs} -> ${tgt_lang} (${st_config}; encoder from ${init}) -> ${st}"
  stk_train ${st_config} ${st} data.tokenizer=${bpe}.model data.cmvn=dump/cmvn.json "${dirs[@]}" \
    "init=[{path: ${init}, src: encoder., dst: encoder.}]" "${extra[@]}"
fi

key5="${beam_size} ${length_penalty} $(cksum 2>/dev/null < ${st}/model.avg1.safetensors || true)"
if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ] && ! is_done 5 ${st}/decode_test/.done "${key5}"; then
  log "Stage 5: package ${st} and translate data/test (attention beam ${beam_size}, ${nj} jobs)"
  stk package ${st} --weights ${st}/model.avg1.safetensors --out ${st}/package --method attention \
    --beam-size ${beam_size} --ctc-weight 0 --description "CoVoST 2 ${src_langs} -> ${tgt_lang} speech translation"
  stk_decode_nj ${nj} data/test ${st}/decode_test --model ${st}/package --length-penalty ${length_penalty} --device ${device}
  echo "${key5}" > ${st}/decode_test/.done
fi

key6="${bootstrap} $(cksum 2>/dev/null < ${st}/decode_test/hyp || true)"
if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ] && ! is_done 6 ${st}/decode_test/score.done "${key6}"; then
  log "Stage 6: BLEU/chrF (sacrebleu, ${bootstrap} bootstrap samples) per source language -> exp/RESULTS.md"
  d=${st}/decode_test
  stk score data/test/text.${tgt_lang} ${d}/hyp --metric bleu --utt2lang data/test/utt2lang \
    --bootstrap ${bootstrap} --json ${d}/score.json > ${d}/score.txt
  stk report ${d}/score.json --metric bleu --out exp/RESULTS.md --title "ST on CoVoST 2 ${src_langs} -> ${tgt_lang} (test)" \
    --notes "Conformer CTC/attention ST (${st_config}${train_opts:+; overrides: ${train_opts}}), encoder from ${encoder_init:-the source ASR model (${asr_config})}, joint BPE ${vocab_size}; attention beam ${beam_size}, length bonus ${length_penalty}, no CTC in the search; sacrebleu BLEU/chrF on cased, punctuated ${tgt_lang} with 95 % bootstrap intervals."
  echo "${key6}" > ${d}/score.done
  cat exp/RESULTS.md
fi

key7="${model_name} $(cksum 2>/dev/null < ${st}/model.avg1.safetensors || true)"
if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 7 ] && ! is_done 7 ${st}/.published "${key7}"; then
  log "Stage 7: publish ${st}/package to the model store as '${model_name}'"
  stk package ${st} --weights ${st}/model.avg1.safetensors --out ${st}/package --method attention \
    --beam-size ${beam_size} --ctc-weight 0 --name ${model_name} --force \
    --description "CoVoST 2 ${src_langs} -> ${tgt_lang} speech translation"
  echo "${key7}" > ${st}/.published
  log "Try: stk decode --model ${model_name} data/test/wav.scp"
fi
