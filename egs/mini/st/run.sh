#!/usr/bin/env bash
# Speech translation X -> en on the mini corpus (de es fr it ru -> en): Conformer encoder,
# Transformer decoder on the English translation, auxiliary CTC on the source transcript.
# Real speech pairs come from the asterisk prompts (the same prompt recorded in each language).
#   ./run.sh                          # everything, default size (small)
#   ./run.sh --size tiny --stage 3    # the CI configuration, from training on
set -euo pipefail

stage=0              # Begin configuration section
stop_stage=100
size=small           # mini corpus size: tiny | small | full
corpus_dir=          # default: ../corpus/<size> (shared with the other mini recipes)
nproc=1              # training processes (torchrun + DDP when > 1)
train_config=conf/train.yaml
vocab_size=400
src_langs=de,es,fr,it,ru
tag=
beam_size=10
ctc_weight=0.0       # CTC predicts the source, so it cannot score English hypotheses
avg_n=5              # average the N checkpoints with the best validation loss
test_sets="synth_test real_test"
# End configuration section
help_message="Usage: $0 [--stage N] [--stop-stage N] [--size tiny|small|full] [--train-config F] [--nproc N]"

. ./path.sh
. ./cmd.sh
. utils/log.sh
log "$0 $*"  # the command line as given, before option parsing consumes it
. utils/parse_options.sh

corpus_dir=${corpus_dir:-../corpus/${size}}
tag=${tag:-$(basename "${train_config}" .yaml)_${size}}
exp=exp/${tag}
tok=data/token/bpe${vocab_size}
log "exp=${exp}"

if [ ${stage} -le 0 ] && [ ${stop_stage} -ge 0 ]; then
  log "Stage 0: build the mini corpus (${size}); keep ${src_langs} -> en pairs"
  stk corpus mini --out "${corpus_dir}" --size "${size}"
  for x in train dev; do
    stk data combine data/${x} "${corpus_dir}/synth_${x}" "${corpus_dir}/real_${x}" \
      --normalize-text --langs ${src_langs}
  done
  for x in ${test_sets}; do
    stk data combine data/${x} "${corpus_dir}/${x}" --normalize-text --langs ${src_langs}
  done
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
  log "Stage 2: joint BPE over source transcripts and English translations (${vocab_size})"
  stk tokenizer train data/train/text data/train/text.en --out "${tok}" --vocab-size ${vocab_size} --model-type bpe
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  log "Stage 3: train ${train_config} -> ${exp}"
  launcher="stk"
  [ "${nproc}" -gt 1 ] && launcher="torchrun --standalone --nproc_per_node ${nproc} -m stk.cli"
  ${cuda_cmd} ${exp}/log/train.log ${launcher} train --config ${train_config} --exp-dir ${exp} \
    data.tokenizer=${tok}.model data.cmvn=dump/cmvn.json
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  log "Stage 4: average the best checkpoints and package the model"
  stk average ${exp} --n ${avg_n}
  stk package ${exp} --weights ${exp}/model.avg${avg_n}.safetensors --out ${exp}/package \
    --method attention --beam-size ${beam_size} --ctc-weight ${ctc_weight} --name mini-st \
    --description "mini corpus speech translation ${src_langs} -> en (${tag})"
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
  log "Stage 5: translate ${test_sets} (beam ${beam_size})"
  for x in ${test_sets}; do
    ${decode_cmd} ${exp}/decode_${x}/decode.log \
      stk decode data/${x} --model ${exp}/package --out ${exp}/decode_${x}/hyp
  done
fi

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
  log "Stage 6: BLEU/chrF per source language (sacrebleu) -> RESULTS.md"
  for x in ${test_sets}; do
    stk score data/${x}/text.en ${exp}/decode_${x}/hyp --metric bleu --utt2lang data/${x}/utt2lang \
      --json ${exp}/decode_${x}/score.json
  done
  stk report ${exp}/decode_*/score.json --metric bleu --out RESULTS.md --title "mini ST ${src_langs} -> en: ${tag}" \
    --notes "Config ${train_config}, corpus size ${size}; beam ${beam_size}. real_test: real human speech (asterisk prompts), synth_test: espeak-ng speech with an unseen voice."
  cat RESULTS.md
fi
