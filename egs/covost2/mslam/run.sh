#!/usr/bin/env bash
# mSLAM-style speech translation X -> en on CoVoST 2 (Common Voice 4 speech, CoVoST 2 translations).
# Implemented so far: the data stages 0-2 (see README.md); pre-training and fine-tuning come later.
#   ./run.sh --corpus-dir /data/cv-corpus-4-2019-12-10 --tsv-dir /data/covost2 --src-langs fr,de,es,ca
#   ./run.sh --stage 1 --stop-stage 2           # corpus paths from db.sh
set -euo pipefail

stage=0              # Begin configuration section
stop_stage=100
corpus_dir=          # Common Voice root (<dir>/<lang>/clips/*.mp3); default: COVOST2 in db.sh
tsv_dir=             # CoVoST 2 TSV dir; default: COVOST2_TSV in db.sh, else the corpus dir
src_langs=fr,de,es,ca
tgt_lang=en
nj=2                 # parallel mp3 -> 16 kHz wav conversion jobs
vocab_size=1000      # upper bound of the char vocabulary (source + translation characters)
# End configuration section
help_message="Usage: $0 [--stage N] [--stop-stage N] [--corpus-dir DIR] [--tsv-dir DIR] [--src-langs fr,de,...] [--nj N]"

. ./path.sh
. ./cmd.sh
. ./db.sh
. utils/log.sh
log "$0 $*"  # the command line as given, before option parsing consumes it
. utils/parse_options.sh

corpus_dir=${corpus_dir:-${COVOST2}}
tsv_dir=${tsv_dir:-${COVOST2_TSV:-${corpus_dir}}}
if [ -z "${corpus_dir}" ]; then
  log "error: no CoVoST 2 corpus: set COVOST2 (the Common Voice 4 root) in db.sh, or pass --corpus-dir DIR"
  exit 1
fi
tok=data/token/char
log "corpus=${corpus_dir}, tsv=${tsv_dir}"

if [ ${stage} -le 0 ] && [ ${stop_stage} -ge 0 ]; then
  log "Stage 0: CoVoST 2 ${src_langs} -> ${tgt_lang}: data/{train,dev,test} (clips -> data/wav, 16 kHz)"
  stk corpus covost2 --corpus-dir "${corpus_dir}" --tsv-dir "${tsv_dir}" --out data \
    --src-langs "${src_langs}" --tgt-lang "${tgt_lang}" --nj "${nj}"
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
  log "Stage 2: char tokenizer shared by the transcripts and the ${tgt_lang} translations"
  stk tokenizer train data/train/text data/train/text.${tgt_lang} --out "${tok}" \
    --vocab-size ${vocab_size} --model-type char
fi

# Stages 3+: see egs/mini/<model>/run.sh
# (speech-text pre-training, ST fine-tuning, averaging/packaging, decoding of data/test and
# BLEU scoring are not written yet; egs/mini/st/run.sh shows their shape.)
