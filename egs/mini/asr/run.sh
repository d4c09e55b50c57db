#!/usr/bin/env bash
# Multilingual Conformer ASR (hybrid CTC/attention) on the mini corpus:
# real asterisk prompts (en es fr it ru) + espeak-ng speech (en de fr es it ru).
#   ./run.sh                          # everything, default size (small)
#   ./run.sh --size tiny --stage 3    # the CI configuration, from training on
set -euo pipefail

stage=0              # Begin configuration section
stop_stage=100
size=small           # mini corpus size: tiny | small | full
corpus_dir=          # default: ../corpus/<size> (shared with the other mini recipes)
nproc=1              # training processes (torchrun + DDP when > 1)
train_config=conf/train.yaml
token_type=char      # stage 2 tokenizer: char | bpe (char leaves the CTC blank plateau much sooner)
vocab_size=300       # BPE vocabulary size (token_type=bpe only)
tag=                 # experiment name (default: from the config file)
method=ctc_beam      # decoding: attention | ctc_greedy | ctc_beam
beam_size=10
ctc_weight=0.3
avg_n=1              # average the N checkpoints with the best validation loss
test_sets="synth_test real_test"
# End configuration section
help_message="Usage: $0 [--stage N] [--stop-stage N] [--size tiny|small|full] [--train-config F] [--nproc N] [--token-type char|bpe] [--method M]"

. ./path.sh
. ./cmd.sh
. utils/log.sh
. utils/parse_options.sh

corpus_dir=${corpus_dir:-../corpus/${size}}
tag=${tag:-$(basename "${train_config}" .yaml)_${size}}
exp=exp/${tag}
tok=data/token/char
[ "${token_type}" = char ] || tok=data/token/${token_type}${vocab_size}
log "$0 $*  (exp=${exp})"

if [ ${stage} -le 0 ] && [ ${stop_stage} -ge 0 ]; then
  log "Stage 0: build the mini corpus (${size}) and the ASR training sets"
  stk corpus mini --out "${corpus_dir}" --size "${size}"
  for x in train dev; do
    stk data combine data/${x} "${corpus_dir}/synth_${x}" "${corpus_dir}/real_${x}" --normalize-text
  done
  for x in ${test_sets}; do
    stk data combine data/${x} "${corpus_dir}/${x}" --normalize-text
  done
fi

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
  log "Stage 1: fbank features and global CMVN"
  for x in train dev; do
    stk data validate data/${x}
    ${train_cmd} exp/log/fbank_${x}.log stk data fbank data/${x} dump/${x}
  done
  stk data cmvn dump/train --out dump/cmvn.json
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  log "Stage 2: ${token_type} tokenizer -> ${tok}"
  stk tokenizer train data/train/text --out "${tok}" --vocab-size ${vocab_size} --model-type ${token_type}
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  log "Stage 3: train ${train_config} -> ${exp} (${nproc} process(es); resumes if interrupted)"
  launcher="stk"
  [ "${nproc}" -gt 1 ] && launcher="torchrun --standalone --nproc_per_node ${nproc} -m stk.cli"
  ${cuda_cmd} ${exp}/log/train.log ${launcher} train --config ${train_config} --exp-dir ${exp} \
    data.tokenizer=${tok}.model data.cmvn=dump/cmvn.json
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  log "Stage 4: average the best checkpoints and package the model"
  stk average ${exp} --n ${avg_n}
  stk package ${exp} --weights ${exp}/model.avg${avg_n}.safetensors --out ${exp}/package \
    --method ${method} --beam-size ${beam_size} --ctc-weight ${ctc_weight} --name mini-asr \
    --description "mini corpus multilingual ASR (${tag})"
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
  log "Stage 5: decode ${test_sets} (${method}, beam ${beam_size})"
  for x in ${test_sets}; do
    ${decode_cmd} ${exp}/decode_${method}_${x}/decode.log \
      stk decode data/${x} --model ${exp}/package --method ${method} --beam-size ${beam_size} \
      --ctc-weight ${ctc_weight} --out ${exp}/decode_${method}_${x}/hyp
  done
fi

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
  log "Stage 6: score (CER/WER per language) -> RESULTS.md"
  for x in ${test_sets}; do
    stk score data/${x}/text ${exp}/decode_${method}_${x}/hyp --utt2lang data/${x}/utt2lang \
      --json ${exp}/decode_${method}_${x}/score.json
  done
  stk report ${exp}/decode_*/score.json --out RESULTS.md --title "mini ASR: ${tag}" \
    --notes "Config ${train_config}, corpus size ${size}; rows are <decoding method>_<test set> (every method decoded so far in ${exp}), beam ${beam_size}, CTC weight ${ctc_weight} in attention decoding. real_test: real human speech (asterisk prompts), synth_test: espeak-ng speech with an unseen voice. CER/WER after lowercasing and stripping punctuation."
  cat RESULTS.md
fi
