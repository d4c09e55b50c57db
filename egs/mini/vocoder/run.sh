#!/usr/bin/env bash
# Speech out on the mini corpus: copy synthesis of English test speech (espeak-ng synth_test_en,
# real asterisk real_test_en) from ground-truth 80-bin log-mels through Griffin-Lim and a HiFi-GAN
# trained here, and through WORLD analysis-synthesis; an x-vector speaker encoder trained on the
# corpus speakers; one table of judge WER/CER (Whisper base), MCD, speaker similarity and RTF;
# spectrogram PNGs and listening samples in exp/; the models go to the store (mini-hifigan, mini-xvector).
#   ./run.sh                                   # everything (small corpus)
#   ./run.sh --size tiny --hifigan-config conf/hifigan_tiny.yaml --xvector-config conf/xvector_tiny.yaml   # CI
# The judge columns need the judges extra (bash tools/install_judges.sh); without it they show –.
# Not built yet: the unit vocoder (issue 10, item 3).
set -euo pipefail

stage=0              # Begin configuration section
stop_stage=100
size=small           # mini corpus size: tiny | small | full
corpus_dir=          # default: ../corpus/<size> (shared with the other mini recipes)
eval_sets="synth_test_en real_test_en"
eval_utts=30         # a seeded subset of each test set (0: all); the judges cost ~1-2 s per utterance and system
voc_train_utts=1000  # HiFi-GAN training utterances (a seeded subset of synth_train + real_train)
vocoders="griffin-lim world hifigan"   # rows after the original (hifigan: the one trained in stage 2)
hifigan_config=conf/hifigan.yaml
xvector_config=conf/xvector.yaml
xvector_package=exp/xvector/package  # the speaker encoder of the x-vector similarity column (default: stage 2's)
train_opts=          # extra key=value overrides for the HiFi-GAN `stk train`
jobs=2               # training runs side by side in stage 2 (each gets OMP_NUM_THREADS/jobs threads)
use_judges=auto      # auto: the judge columns when the judges extra is installed; true | false
publish_results=false  # true: copy exp/RESULTS.md over the committed RESULTS.md (a real default run only)
hifigan_name=mini-hifigan   # names in the model store ($STK_MODEL_STORE, default ~/.cache/stk/models)
xvector_name=mini-xvector
# End configuration section
help_message="Usage: $0 [--stage N] [--stop-stage N] [--size tiny|small|full] [--hifigan-config F] [--xvector-config F] [--train-opts \"k=v ...\"]"

. ./path.sh
. ./cmd.sh
. utils/log.sh
log "$0 $*"
. utils/parse_options.sh

corpus_dir=${corpus_dir:-../corpus/${size}}
tok=data/token/char
read -r -a extra <<< "${train_opts}"
. utils/lib/train.sh  # stk_train CONFIG EXP_DIR [key=value ...] (skips finished runs)
. utils/lib/bg.sh     # bg_run CMD ... / bg_wait
start=$(date +%s)
judges=${use_judges}
if [ "${judges}" = auto ]; then
  judges=false
  if "${STK_PYTHON:-$STK_ROOT/.venv/bin/python}" -c "import faster_whisper, resemblyzer" 2>/dev/null; then judges=true; fi
fi

if [ ${stage} -le 0 ] && [ ${stop_stage} -ge 0 ]; then
  log "Stage 0: mini corpus (${size}) and data dirs"
  stk corpus mini --out "${corpus_dir}" --size "${size}"
  c=${corpus_dir}
  stk data combine data/spk_all "$c/synth_train" "$c/real_train" --normalize-text
  stk data combine data/spk_valid data/spk_all --subset 200   # held-out utterances of the training speakers
  stk data combine data/spk_train data/spk_all --exclude data/spk_valid
  stk data combine data/voc_train "$c/synth_train" "$c/real_train" --subset ${voc_train_utts}
  stk data combine data/voc_dev "$c/synth_dev" "$c/real_dev" --subset 40
  for x in ${eval_sets}; do
    stk data combine data/${x} "$c/${x}" --normalize-text $( [ "${eval_utts}" -gt 0 ] && echo --subset ${eval_utts} )
  done
  stk tokenizer train data/spk_train/text --out ${tok} --vocab-size 200 --model-type char
fi

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
  log "Stage 1: features: fbank + CMVN (speaker encoder), waveform frames (HiFi-GAN), vocoder log-mels (test sets)"
  for x in spk_train spk_valid; do ${train_cmd} exp/log/fbank_${x}.log stk data fbank data/${x} dump/${x}; done
  stk data cmvn dump/spk_train --out dump/cmvn.json
  stk synth frames data/voc_train dump/frames_train
  stk synth frames data/voc_dev dump/frames_dev
  for x in ${eval_sets}; do stk synth mels data/${x} dump/mel_${x}; done
fi

speaker_encoder() {
  local spk
  spk=$(cut -d' ' -f2 data/spk_train/utt2spk | sort -u | paste -sd, -)
  stk_train ${xvector_config} exp/xvector "data.label_vocab.spk=[${spk}]"
  stk package exp/xvector --weights exp/xvector/model.avg1.safetensors --out exp/xvector/package \
    --description "mini corpus x-vector speaker encoder ($(echo "${spk}" | tr ',' ' ' | wc -w) speakers)"
  for x in synth_test real_test; do
    stk speaker eval "${corpus_dir}/${x}" --model exp/xvector/package --json exp/xvector/eval_${x}.json
  done
}

hifigan() {
  stk_train ${hifigan_config} exp/hifigan "${extra[@]}"
  stk package exp/hifigan --weights exp/hifigan/checkpoints/last.pt --out exp/hifigan/package \
    --description "mini corpus HiFi-GAN mel vocoder (${hifigan_config})"
}

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  log "Stage 2: speaker encoder ${xvector_config} -> exp/xvector and HiFi-GAN ${hifigan_config} -> exp/hifigan, side by side (${jobs} jobs; logs: exp/*/log/train.log)"
  bg_run speaker_encoder
  bg_run hifigan
  bg_wait
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  log "Stage 3: copy synthesis of ${eval_sets} (1 thread each, RTF in rtf.json)"
  for x in ${eval_sets}; do
    mkdir -p exp/original/${x}
    for v in ${vocoders}; do
      model=(); [ "${v}" = hifigan ] && model=(--model exp/hifigan/package)
      OMP_NUM_THREADS=1 stk synth resynth data/${x} exp/${v}/${x} --vocoder ${v} "${model[@]}" --threads 1 \
        --json exp/${v}/${x}/rtf.json
    done
  done
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  log "Stage 4: scores (judges installed: ${judges})"
  for x in ${eval_sets}; do
    for v in original ${vocoders}; do
      d=exp/${v}/${x}; src=${d}; [ "${v}" = original ] && src=data/${x}
      if [ "${v}" != original ]; then
        stk score --metric mcd data/${x} ${src} --json ${d}/mcd.json
        stk speaker similarity data/${x} ${src} --model ${xvector_package} --json ${d}/spk_sim_xvector.json
        if ${judges}; then stk score --metric spk-sim data/${x} ${src} --json ${d}/spk_sim.json; fi
      fi
      if ${judges}; then
        stk score --metric judge-wer data/${x}/text ${src} --lang en --json ${d}/judge_wer.json
      fi
    done
  done
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
  log "Stage 5: RESULTS -> exp/RESULTS.md (RESULTS.md with --publish-results true), spectrograms, samples"
  sets=$(echo ${eval_sets} | tr ' ' ',')
  for x in ${eval_sets}; do
    stk synth plot exp/spectrogram_${x}.png original=data/${x} $(for v in ${vocoders}; do echo ${v}=exp/${v}/${x}; done)
    mkdir -p exp/samples/${x}
    u=$(head -1 data/${x}/wav.scp | cut -d' ' -f1)
    cp "$(head -1 data/${x}/wav.scp | cut -d' ' -f2)" exp/samples/${x}/${u}_original.wav
    for v in ${vocoders}; do cp exp/${v}/${x}/wav/${u}.wav exp/samples/${x}/${u}_${v}.wav; done
  done
  elapsed=$(( $(date +%s) - start ))
  stk synth report exp --systems original,$(echo ${vocoders} | tr ' ' ',') --sets ${sets} --out exp/RESULTS.md \
    --title "mini vocoders (${size} corpus): copy synthesis of English test speech" \
    --notes "$(date -u +%F), $(nproc --all) CPU(s) (shared with other jobs when loaded), ${eval_utts} utterances per test set (0: all), stages ${stage}-${stop_stage} took $(( elapsed / 60 )) min $(( elapsed % 60 )) s. Griffin-Lim: 32 iterations, momentum 0.99, from ground-truth 80-bin log-mels (16 kHz, hop 256). WORLD: pyworld DIO+StoneMask / CheapTrick / D4C analysis-synthesis. HiFi-GAN (when a row): ${hifigan_config}${train_opts:+ (${train_opts})}, trained in stage 2. x-vector similarity: ${xvector_package}."
  if [ "${publish_results}" = true ]; then cp exp/RESULTS.md RESULTS.md; log "published exp/RESULTS.md -> RESULTS.md"; fi
  cat exp/RESULTS.md
fi

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
  log "Stage 6: model store: '${hifigan_name}', '${xvector_name}'"
  if [ -f exp/hifigan/.done ]; then
    stk package exp/hifigan --weights exp/hifigan/checkpoints/last.pt --out exp/hifigan/package --name ${hifigan_name} \
      --force --description "mini corpus HiFi-GAN mel vocoder (${hifigan_config})"
  fi
  [ -f exp/xvector/.done ] && stk package exp/xvector --weights exp/xvector/model.avg1.safetensors --out exp/xvector/package --name ${xvector_name} \
    --force --description "mini corpus x-vector speaker encoder"
  log "Try: stk synth vocode MEL_SCP OUT --model ${hifigan_name}; stk speaker embed DATA_DIR --model ${xvector_name}"
fi
log "done in $(( $(date +%s) - start )) s"
