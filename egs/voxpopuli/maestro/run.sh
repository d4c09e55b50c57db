#!/usr/bin/env bash
# MAESTRO on VoxPopuli transcribed data: CTC alignment model -> token durations -> MAESTRO
# pre-training (unpaired speech, paired speech + durations, unpaired text) -> multilingual RNN-T
# ASR fine-tuned from it (and from scratch) -> beam decoding of data/test -> WER per language
# (jiwer) -> a packaged model in the store.
#   ./run.sh --corpus-dir /data/voxpopuli --langs en,de,fr,es
#   ./run.sh --stage 3                          # corpus path from db.sh; from the alignment model on
#   ./run.sh --size tiny ...                    # conf/*_tiny.yaml: the CI fixture run
set -euo pipefail

stage=0              # Begin configuration section
stop_stage=100
corpus_dir=          # VoxPopuli root (<dir>/transcribed_data/<lang>/); default: VOXPOPULI in db.sh
langs=en,de,fr,es
vocab_size=1000
size=default         # default: conf/<name>.yaml (GPU-sized) | tiny: conf/<name>_tiny.yaml (CI)
unpaired_speech=     # optional data dir of untranscribed speech added to the contrastive stream
unpaired_text=       # optional data dir (text [+ utt2lang]) of unpaired text added to the text stream
rows="scratch maestro"  # RNN-T ASR fine-tuning rows: from scratch and/or from MAESTRO
align_config=        # default: conf/align.yaml (conf/align_tiny.yaml with --size tiny)
pretrain_config=     # default: conf/pretrain.yaml (conf/pretrain_tiny.yaml)
asr_config=          # default: conf/finetune_asr.yaml (conf/finetune_asr_tiny.yaml)
nproc=1              # training processes per node (torchrun + DDP when > 1; utils/lib/train.sh)
nnodes=1             # training nodes (> 1: cmd_backend=slurm, one srun task per node)
train_opts=          # extra key=value overrides for every `stk train` (e.g. trainer.max_steps=10)
nj=2                 # parallel decoding jobs
beam_size=4
device=cpu           # alignment and decoding device (cpu | cuda)
model_name=voxpopuli-maestro  # model-store name of the packaged MAESTRO ASR model (stage 8)
# End configuration section
help_message="Usage: $0 [--stage N] [--stop-stage N] [--corpus-dir DIR] [--langs en,de,...] [--vocab-size N] [--size default|tiny] [--rows \"scratch maestro\"] [--unpaired-speech DIR] [--unpaired-text DIR]"

. ./path.sh
. ./cmd.sh
. ./db.sh
. utils/log.sh
log "$0 $*"  # the command line as given, before option parsing consumes it
. utils/parse_options.sh
. utils/lib/train.sh   # stk_train CONFIG EXP_DIR [key=value ...] (skips finished runs: EXP_DIR/.done)
. utils/lib/decode.sh  # stk_decode_nj NJ DATA_DIR OUT_DIR [stk decode options ...]

corpus_dir=${corpus_dir:-${VOXPOPULI}}
if [ -z "${corpus_dir}" ]; then
  log "error: no VoxPopuli corpus: set VOXPOPULI (the VoxPopuli root) in db.sh, or pass --corpus-dir DIR"
  exit 1
fi
sfx=; [ "${size}" = tiny ] && sfx=_tiny
align_config=${align_config:-conf/align${sfx}.yaml}
pretrain_config=${pretrain_config:-conf/pretrain${sfx}.yaml}
asr_config=${asr_config:-conf/finetune_asr${sfx}.yaml}
tok=data/token/bpe${vocab_size}
speech=dump/train; [ -n "${unpaired_speech}" ] && speech=dump/speech_train
read -r -a extra <<< "${train_opts}"
train() { stk_train "$1" "$2" data.tokenizer=${tok}.model data.cmvn=dump/cmvn.json "${@:3}" "${extra[@]}"; }
. utils/lib/done.sh   # is_done STAGE MARKER KEY: skip a stage that already ran with these settings
weights() { cksum 2>/dev/null < "$1/model.avg1.safetensors" || true; }
log "corpus=${corpus_dir}"

key0="${corpus_dir} ${langs}"
if [ ${stage} -le 0 ] && [ ${stop_stage} -ge 0 ] && ! is_done 0 data/.done "${key0}"; then
  log "Stage 0: VoxPopuli ASR ${langs}: data/{train,dev,test} (16 kHz ogg read in place)"
  stk corpus voxpopuli --corpus-dir "${corpus_dir}" --out data --langs "${langs}"
  echo "${key0}" > data/.done
fi

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ] && ! is_done 1 dump/.done "${key0} ${unpaired_speech}"; then
  log "Stage 1: fbank features and global CMVN (logs: exp/log/fbank_<set>.log)"
  sets="train dev"
  if [ -n "${unpaired_speech}" ]; then
    stk data combine data/speech_train data/train "${unpaired_speech}"  # audio of both (no text in the unpaired dir)
    sets="${sets} speech_train"
  fi
  for x in ${sets}; do
    stk data validate data/${x}
    ${train_cmd} exp/log/fbank_${x}.log stk data fbank data/${x} dump/${x}
  done
  stk data cmvn ${speech} --out dump/cmvn.json
  echo "${key0} ${unpaired_speech}" > dump/.done
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ] && ! is_done 2 ${tok}.done "${key0} ${unpaired_text}"; then
  log "Stage 2: BPE tokenizer (${vocab_size}) on the transcripts${unpaired_text:+ and ${unpaired_text}}; data/text_train (unpaired text)"
  stk data combine data/text_train data/train ${unpaired_text}  # pre-training's text stream reads its text
  stk tokenizer train data/text_train/text --out "${tok}" --vocab-size ${vocab_size} --model-type bpe
  echo "${key0} ${unpaired_text}" > ${tok}.done
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  log "Stage 3: CTC alignment model (${align_config}) -> exp/align; token durations of dump/{train,dev}"
  train ${align_config} exp/align data.train.paired.data_dir=dump/train data.valid.data_dir=dump/dev
  if ! is_done 3 dump/.done_durations "$(weights exp/align)"; then
    stk package exp/align --weights exp/align/model.avg1.safetensors --out exp/align/package --method ctc_greedy
    for x in train dev; do stk align dump/${x} --model exp/align/package --device ${device}; done
    weights exp/align > dump/.done_durations
  fi
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  log "Stage 4: MAESTRO pre-training (${pretrain_config}; speech stream ${speech}) -> exp/pretrain_maestro"
  train ${pretrain_config} exp/pretrain_maestro data.train.speech.data_dir=${speech} data.train.paired.data_dir=dump/train \
    data.train.text.data_dir=data/text_train data.valid.data_dir=dump/dev  # this recipe's dirs, whatever the config
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
  w=exp/pretrain_maestro/model.avg1.safetensors
  for row in ${rows}; do
    init=()
    [ "${row}" = maestro ] && init=("init=[{path: ${w}, src: encoder., dst: encoder.}, {path: ${w}, src: rnnt., dst: rnnt.}]")
    log "Stage 5: RNN-T ASR fine-tuning from ${row} (${asr_config}) -> exp/${row}_asr"
    train ${asr_config} exp/${row}_asr data.train.paired.data_dir=dump/train data.valid.data_dir=dump/dev "${init[@]}"
  done
fi

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
  log "Stage 6: package and decode data/test (RNN-T beam ${beam_size}, ${nj} jobs)"
  for row in ${rows}; do
    d=exp/${row}_asr key="${beam_size} $(weights exp/${row}_asr)"
    is_done 6 ${d}/decode_test/.done "${key}" && continue
    stk package ${d} --weights ${d}/model.avg1.safetensors --out ${d}/package --method rnnt_beam \
      --beam-size ${beam_size} --description "VoxPopuli ${langs} RNN-T ASR (${row})"
    stk_decode_nj ${nj} data/test ${d}/decode_test --model ${d}/package --device ${device}
    echo "${key}" > ${d}/decode_test/.done
  done
fi

key7="${rows} $({ for row in ${rows}; do cat exp/${row}_asr/decode_test/hyp; done 2>/dev/null || true; } | cksum)"
if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 7 ] && ! is_done 7 exp/.done_results "${key7}"; then
  log "Stage 7: WER/CER (jiwer) per language -> exp/RESULTS.md"
  cells=()
  for row in ${rows}; do
    d=exp/${row}_asr/decode_test
    stk score data/test/text ${d}/hyp --utt2lang data/test/utt2lang --bootstrap 1000 --json ${d}/score.json > ${d}/score.txt
    cells+=("${row}|WER|wer|${d}/score.json" "${row}|CER|cer|${d}/score.json")
    for l in ${langs//,/ }; do cells+=("${row}|WER ${l}|by_lang.${l}.wer|${d}/score.json"); done
  done
  stk env --out exp/RESULTS.md
  stk table "${cells[@]}" --out exp/RESULTS.md --append --title "MAESTRO RNN-T ASR on VoxPopuli ${langs} (test)" \
    --notes "Rows: RNN-T ASR fine-tuned from scratch or from MAESTRO pre-training (${pretrain_config}; ASR ${asr_config}${train_opts:+; overrides: ${train_opts}}). RNN-T beam ${beam_size}; WER/CER on normalized_text after jiwer normalisation; 95 % intervals in exp/<row>_asr/decode_test/score.txt."
  echo "${key7}" > exp/.done_results
  cat exp/RESULTS.md
fi

key8="${model_name} $(weights exp/maestro_asr)"
if [ ${stage} -le 8 ] && [ ${stop_stage} -ge 8 ] && [[ " ${rows} " = *" maestro "* ]] && ! is_done 8 exp/maestro_asr/.published "${key8}"; then
  log "Stage 8: publish exp/maestro_asr/package to the model store as '${model_name}'"
  stk package exp/maestro_asr --weights exp/maestro_asr/model.avg1.safetensors --out exp/maestro_asr/package \
    --method rnnt_beam --beam-size ${beam_size} --name ${model_name} --force --description "VoxPopuli ${langs} MAESTRO RNN-T ASR"
  echo "${key8}" > exp/maestro_asr/.published
  log "Try: stk decode --model ${model_name} data/test/wav.scp"
fi
