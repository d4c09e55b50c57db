#!/usr/bin/env bash
# Speech out on the mini corpus: copy synthesis of English test speech (espeak-ng synth_test_en,
# real asterisk real_test_en) from ground-truth 80-bin log-mels through Griffin-Lim and a HiFi-GAN
# trained here (for a fixed wall budget), and through WORLD analysis-synthesis; unit resynthesis
# (frame units + F0 -> log-mel by the unit_vocoder model trained here -> Griffin-Lim); an x-vector speaker
# encoder trained on the corpus speakers; one table of judge WER/CER (Whisper base, 95 % intervals),
# MCD, speaker similarity and RTF; spectrogram PNGs and listening samples in exp/; the models go to the
# store (mini-hifigan, mini-unit-vocoder, mini-xvector).
#   ./run.sh                                   # everything (small corpus)
#   ./run.sh --size tiny --hifigan-config conf/hifigan_tiny.yaml --xvector-config conf/xvector_tiny.yaml \
#     --unit-vocoder-config conf/unit_vocoder_tiny.yaml   # CI
#   ./run.sh --units-model mini-hubert-units   # the unit vocoder on the store's HuBERT units instead of MFCC k-means
# The judge columns need the judges extra (bash tools/install_judges.sh); without it they show –.
set -euo pipefail

stage=0              # Begin configuration section
stop_stage=100
size=small           # mini corpus size: tiny | small | full
corpus_dir=          # default: ../corpus/<size> (shared with the other mini recipes)
eval_sets="synth_test_en real_test_en"
eval_utts=0          # a seeded subset of each test set (0: all: 48 synth_test_en, 56 real_test_en); the judges cost ~1-2 s per utterance and system
voc_train_utts=1000  # HiFi-GAN training utterances (a seeded subset of synth_train + real_train)
uv_train_utts=0      # unit-vocoder training utterances (a seeded subset of the speaker-encoder training set; 0: all 4,171)
vocoders="griffin-lim world hifigan unit-vocoder"   # rows after the original (hifigan, unit-vocoder: trained in stage 2)
hifigan_config=conf/hifigan.yaml
hifigan_minutes=12   # wall budget of the HiFi-GAN training (SIGTERM: the trainer checkpoints and stops); 0: none
unit_vocoder_config=conf/unit_vocoder.yaml
unit_vocoder_minutes=45  # wall cap of the unit-vocoder training: its config's max_steps (3000: ~20 min at 1 thread on an idle machine with 2 + 3 blocks) ends it first unless loaded; 0: none
units_model=mfcc     # mfcc: MFCC k-means fitted here (k=units_k); else a units model dir or store name (mini-hubert-units)
units_k=1000         # 1000 as UnitY's / mHuBERT's units (k=100 MFCC units gave judge WER 125 % at 300 updates)
xvector_config=conf/xvector.yaml
xvector_package=exp/xvector/package  # the speaker encoder of the x-vector similarity column (default: stage 2's)
train_opts=          # extra key=value overrides for the HiFi-GAN `stk train`
jobs=3               # training runs side by side in stage 2 (each gets OMP_NUM_THREADS/jobs threads, at least 1)
use_judges=auto      # auto: the judge columns when the judges extra is installed; true | false
publish_results=false  # true: copy exp/RESULTS.md over the committed RESULTS.md (a real default run only)
hifigan_name=mini-hifigan   # names in the model store ($STK_MODEL_STORE, default ~/.cache/stk/models)
xvector_name=mini-xvector
unit_vocoder_name=mini-unit-vocoder
# End configuration section
help_message="Usage: $0 [--stage N] [--stop-stage N] [--size tiny|small|full] [--hifigan-config F] [--xvector-config F] [--unit-vocoder-config F] [--units-model mfcc|DIR|NAME] [--hifigan-minutes N] [--train-opts \"k=v ...\"]"

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
  stk data combine data/uv_train data/spk_train $( [ "${uv_train_utts}" -gt 0 ] && echo --subset ${uv_train_utts} )   # unit vocoder: training speakers only
  stk data combine data/uv_dev data/spk_valid --subset 40
  for x in ${eval_sets}; do
    stk data combine data/${x} "$c/${x}" --normalize-text $( [ "${eval_utts}" -gt 0 ] && echo --subset ${eval_utts} )
  done
  stk tokenizer train data/spk_train/text --out ${tok} --vocab-size 200 --model-type char
fi

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
  log "Stage 1: features: fbank + CMVN (speaker encoder), waveform frames (HiFi-GAN), vocoder log-mels (test sets)"
  # .done markers: a finished dump is not redone
  for x in spk_train spk_valid; do
    [ -f dump/${x}/.done ] || { ${train_cmd} exp/log/fbank_${x}.log stk data fbank data/${x} dump/${x} && touch dump/${x}/.done; }
  done
  stk data cmvn dump/spk_train --out dump/cmvn.json
  for x in train dev; do
    [ -f dump/frames_${x}/.done ] || { stk synth frames data/voc_${x} dump/frames_${x} && touch dump/frames_${x}/.done; }
  done
  for x in ${eval_sets}; do
    [ -f dump/mel_${x}/.done ] || { stk synth mels data/${x} dump/mel_${x} && touch dump/mel_${x}/.done; }
  done
  log "Stage 1: units (${units_model}) of the unit-vocoder data and test sets; their log-mels (dump/uv_*: mel data dirs)"
  um=${units_model}
  if [ "${um}" = mfcc ]; then
    um=exp/units_mfcc
    [ -f ${um}/.done ] || { stk units fit data/uv_train --features mfcc --k ${units_k} --max-frames 100000 --out ${um} && touch ${um}/.done; }
  fi
  for x in uv_train uv_dev; do
    [ -f dump/${x}/.done ] || { rm -f dump/${x}/.f0_done; stk synth mels data/${x} dump/${x} && stk units dump dump/${x} --model ${um} && touch dump/${x}/.done; }
  done
  for x in ${eval_sets}; do stk units dump data/${x} --model ${um}; done
  log "Stage 1: F0 bins, one per mel frame (16 ms), 24 per octave: the unit vocoder's F0 input (f0bins beside the units)"
  for x in uv_train uv_dev; do
    [ -f dump/${x}/.f0_done ] || { stk data pitch dump/${x} --frame-shift-ms 16 --bins-per-octave 24 && touch dump/${x}/.f0_done; }
  done
  for x in ${eval_sets}; do stk data pitch data/${x} --frame-shift-ms 16 --bins-per-octave 24; done
  ud=${um}; [ -d "${ud}" ] || ud=${STK_MODEL_STORE:-${HOME}/.cache/stk/models}/${um}
  grep -o '"k": [0-9]*' "${ud}/units.json" | cut -d' ' -f2 > dump/units_k
  echo "${um}:$(grep -o '"features": "[a-z]*"' "${ud}/units.json" | cut -d'"' -f4):k$(cat dump/units_k):units.json-sha256=$(sha256sum "${ud}/units.json" | cut -c1-16)" > dump/units_model
fi

speaker_encoder() {
  local spk
  spk=$(cut -d' ' -f2 data/spk_train/utt2spk | sort -u | paste -sd, -)
  stk_train ${xvector_config} exp/xvector "data.label_vocab.spk=[${spk}]"
  stk package exp/xvector --weights exp/xvector/model.avg1.safetensors --out exp/xvector/package \
    --description "mini corpus x-vector speaker encoder ($(echo "${spk}" | tr ',' ' ' | wc -w) speakers)"
  for x in synth_test real_test; do
    [ -f exp/xvector/eval_${x}.json ] || stk speaker eval "${corpus_dir}/${x}" --model exp/xvector/package --json exp/xvector/eval_${x}.json
  done
}

train_budget() {  # train_budget CONFIG EXP_DIR MINUTES [key=value ...]: `stk train` for a wall budget (0: none)
  # timeout sends SIGTERM after MINUTES: the trainer finishes the step, checkpoints (last.pt) and stops (exit 124)
  local conf=$1 dir=$2 minutes=$3 rc=0 budget=()
  shift 3
  [ -f "${dir}/.done" ] && { log "${dir} done already"; return 0; }
  [ "${minutes}" -gt 0 ] && budget=(timeout --signal=TERM "${minutes}m")
  log "train ${dir} (${minutes} min budget; log: ${dir}/log/train.log)"
  ${cuda_cmd} "${dir}/log/train.log" "${budget[@]}" stk train --config "${conf}" --exp-dir "${dir}" "$@" || rc=$?
  # ${cuda_cmd} exits 1 on any failure; its log's last line keeps the command's code (124: the budget ran out)
  if [ ${rc} -ne 0 ] && ! { tail -n 1 "${dir}/log/train.log" | grep -q "Ended (code 124)" && [ -f "${dir}/checkpoints/last.pt" ]; }; then
    return ${rc}
  fi
  touch "${dir}/.done"
}

hifigan() {
  train_budget ${hifigan_config} exp/hifigan ${hifigan_minutes} "${extra[@]}"
  stk package exp/hifigan --weights exp/hifigan/checkpoints/last.pt --out exp/hifigan/package \
    --description "mini corpus HiFi-GAN mel vocoder (${hifigan_config})"
}

unit_vocoder() {
  local spk
  spk=$(cat dump/uv_train/utt2spk dump/uv_dev/utt2spk | cut -d' ' -f2 | sort -u | paste -sd, -)
  train_budget ${unit_vocoder_config} exp/unit_vocoder ${unit_vocoder_minutes} "data.label_vocab.spk=[${spk}]" \
    "model.conf.num_units=$(cat dump/units_k)" "model.conf.units_model=$(cat dump/units_model)"
  stk package exp/unit_vocoder --weights exp/unit_vocoder/checkpoints/last.pt --out exp/unit_vocoder/package \
    --description "mini corpus unit vocoder, units + F0 bins -> 80-bin log-mel ($(cat dump/units_model)); + Griffin-Lim"
}

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  log "Stage 2: speaker encoder ${xvector_config} -> exp/xvector, HiFi-GAN ${hifigan_config} -> exp/hifigan, unit vocoder ${unit_vocoder_config} -> exp/unit_vocoder, side by side (${jobs} jobs; logs: exp/*/log/train.log)"
  bg_run hifigan
  bg_run unit_vocoder
  bg_run speaker_encoder
  bg_wait
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  log "Stage 3: copy synthesis of ${eval_sets} (1 thread each, RTF in rtf.json)"
  for x in ${eval_sets}; do
    mkdir -p exp/original/${x}
    for v in ${vocoders}; do
      [ -f exp/${v}/${x}/.done ] && continue  # synthesised (and scored) already
      rm -f exp/${v}/${x}/*.json  # scores of an older synthesis
      if [ "${v}" = unit-vocoder ]; then  # from the units of stage 1 (the hifigan row's vocoder: Griffin-Lim here)
        OMP_NUM_THREADS=1 stk synth units data/${x} --model exp/unit_vocoder/package --out exp/${v}/${x} --threads 1 \
          --json exp/${v}/${x}/rtf.json
      else
        model=(); [ "${v}" = hifigan ] && model=(--model exp/hifigan/package)
        OMP_NUM_THREADS=1 stk synth resynth data/${x} exp/${v}/${x} --vocoder ${v} "${model[@]}" --threads 1 \
          --json exp/${v}/${x}/rtf.json
      fi
      touch exp/${v}/${x}/.done
    done
  done
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  log "Stage 4: scores (judges installed: ${judges})"
  for x in ${eval_sets}; do
    for v in original ${vocoders}; do
      d=exp/${v}/${x}; src=${d}; [ "${v}" = original ] && src=data/${x}
      # a score already in ${d} is kept (stage 3 removes them when it synthesises anew)
      if [ "${v}" != original ]; then
        [ -f ${d}/mcd.json ] || stk score --metric mcd data/${x} ${src} --json ${d}/mcd.json
        [ -f ${d}/spk_sim_xvector.json ] || stk speaker similarity data/${x} ${src} --model ${xvector_package} --json ${d}/spk_sim_xvector.json
        if ${judges} && [ ! -f ${d}/spk_sim.json ]; then stk score --metric spk-sim data/${x} ${src} --json ${d}/spk_sim.json; fi
      fi
      if ${judges}; then
        [ -f ${d}/judge_wer.json ] || stk score --metric judge-wer data/${x}/text ${src} --lang en --json ${d}/judge_wer.json
        stk score data/${x}/text ${d}/judge_hyp --bootstrap 1000 --json ${d}/judge_wer_ci.json --no-result-txt >/dev/null
        if [ "${v}" != original ]; then
          stk score data/${x}/text --compare exp/original/${x}/judge_hyp ${d}/judge_hyp --json ${d}/judge_cmp.json >/dev/null
        fi
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
  trained() {  # "N updates, valid mel-L1 X" from a training log
    local steps vl
    steps=$(grep -o ' step [0-9]*' "$1" 2>/dev/null | tail -1 | tr -dc 0-9)
    vl=$(grep 'valid epoch' "$1" 2>/dev/null | tail -1 | grep -o 'mel_l1=[0-9.]*' | cut -d= -f2)
    echo "${steps:-?} updates, last valid mel-L1 ${vl:-?}"
  }
  stk synth report exp --systems original,$(echo ${vocoders} | tr ' ' ',') --sets ${sets} --out exp/RESULTS.md \
    --title "mini vocoders (${size} corpus): copy synthesis of English test speech" \
    --notes "$(date -u +%F), $(nproc --all) CPU(s) (shared with other jobs when loaded), ${eval_utts} utterances per test set (0: all), stages ${stage}-${stop_stage} took $(( elapsed / 60 )) min $(( elapsed % 60 )) s. Griffin-Lim: 32 iterations, momentum 0.99, from ground-truth 80-bin log-mels (16 kHz, hop 256). WORLD: pyworld DIO+StoneMask / CheapTrick / D4C analysis-synthesis. HiFi-GAN (when a row): ${hifigan_config}${train_opts:+ (${train_opts})}, trained in stage 2 for a ${hifigan_minutes}-min wall budget: $(trained exp/hifigan/train.log). Unit vocoder: ${unit_vocoder_config} on $(cat dump/units_model 2>/dev/null) frame units (50/s, not deduplicated) + the source's F0 (DIO, 16 ms, 24 log-F0 bins per octave; \`stk data pitch --bins-per-octave 24\`) of $(wc -l < data/uv_train/utt2spk) training utterances, $(trained exp/unit_vocoder/train.log); its log-mels go through Griffin-Lim as above. x-vector similarity: ${xvector_package}."
  if [ "${publish_results}" = true ]; then cp exp/RESULTS.md RESULTS.md; log "published exp/RESULTS.md -> RESULTS.md"; fi
  cat exp/RESULTS.md
fi

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
  log "Stage 6: model store: '${hifigan_name}', '${unit_vocoder_name}', '${xvector_name}'"
  if [ -f exp/unit_vocoder/.done ]; then
    stk package exp/unit_vocoder --weights exp/unit_vocoder/checkpoints/last.pt --out exp/unit_vocoder/package \
      --name ${unit_vocoder_name} --force --description "mini corpus unit vocoder, units + F0 bins -> 80-bin log-mel ($(cat dump/units_model)); + Griffin-Lim"
  fi
  if [ -f exp/hifigan/.done ]; then
    stk package exp/hifigan --weights exp/hifigan/checkpoints/last.pt --out exp/hifigan/package --name ${hifigan_name} \
      --force --description "mini corpus HiFi-GAN mel vocoder (${hifigan_config})"
  fi
  [ -f exp/xvector/.done ] && stk package exp/xvector --weights exp/xvector/model.avg1.safetensors --out exp/xvector/package --name ${xvector_name} \
    --force --description "mini corpus x-vector speaker encoder"
  log "Try: stk synth vocode MEL_SCP OUT --model ${hifigan_name}; stk synth units DATA_DIR --model ${unit_vocoder_name} --out OUT (units: $(cat dump/units_model)); stk speaker embed DATA_DIR --model ${xvector_name}"
fi
log "done in $(( $(date +%s) - start )) s"
