#!/usr/bin/env bash
# Maestro-style multilingual ASR on VoxPopuli transcribed data.
# Implemented so far: the data stages 0-2 (see README.md); pre-training and fine-tuning come later.
#   ./run.sh --corpus-dir /data/voxpopuli --langs en,de,fr,es
#   ./run.sh --stage 1 --stop-stage 2           # corpus path from db.sh
set -euo pipefail

stage=0              # Begin configuration section
stop_stage=100
corpus_dir=          # VoxPopuli root (<dir>/transcribed_data/<lang>/); default: VOXPOPULI in db.sh
langs=en,de,fr,es
vocab_size=1000
# End configuration section
help_message="Usage: $0 [--stage N] [--stop-stage N] [--corpus-dir DIR] [--langs en,de,...] [--vocab-size N]"

. ./path.sh
. ./cmd.sh
. ./db.sh
. utils/log.sh
log "$0 $*"  # the command line as given, before option parsing consumes it
. utils/parse_options.sh

corpus_dir=${corpus_dir:-${VOXPOPULI}}
if [ -z "${corpus_dir}" ]; then
  log "error: no VoxPopuli corpus: set VOXPOPULI (the VoxPopuli root) in db.sh, or pass --corpus-dir DIR"
  exit 1
fi
tok=data/token/bpe${vocab_size}
log "corpus=${corpus_dir}"

if [ ${stage} -le 0 ] && [ ${stop_stage} -ge 0 ]; then
  log "Stage 0: VoxPopuli ASR ${langs}: data/{train,dev,test} (16 kHz ogg read in place)"
  stk corpus voxpopuli --corpus-dir "${corpus_dir}" --out data --langs "${langs}"
fi

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
  log "Stage 1: fbank features and global CMVN (logs: exp/log/fbank_<set>.log)"
  for x in train dev; do
    stk data validate data/${x}
    ${train_cmd} exp/log/fbank_${x}.log stk data fbank data/${x} dump/${x}
  done
  stk data cmvn dump/train --out dump/cmvn.json
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  log "Stage 2: BPE tokenizer (${vocab_size})"
  stk tokenizer train data/train/text --out "${tok}" --vocab-size ${vocab_size} --model-type bpe
fi

# Stages 3+: see egs/mini/<model>/run.sh
# (speech/text pre-training, ASR fine-tuning, averaging/packaging, decoding of data/test and
# WER scoring are not written yet; egs/mini/asr/run.sh shows their shape.)
