#!/usr/bin/env bash
# Discrete speech units on the mini corpus, the HuBERT way: MFCC k-means -> HuBERT iteration 1
# trained on those targets -> k-means on a middle layer (picked by a layer sweep on the dev sets)
# -> [iteration 2 ...] -> unit quality (purity, PNMI, units/s, perplexity) against CTC
# forced-alignment character labels -> model store (`mini-hubert-units`, and the HuBERT as
# `mini-hubert`) -> deduplicated units of every mini set.
#   ./run.sh                                                       # everything (small corpus)
#   ./run.sh --size tiny --train-opts "trainer.max_steps=10"       # the CI smoke run
# Afterwards units of any data dir are one command away:
#   stk units dump DATA_DIR --model mini-hubert-units --dedup           # 50/s, DATA_DIR/units + units.dur
#   stk units dump DATA_DIR --model mini-hubert-units --rate 25 --dedup --out DATA_DIR/units25
set -euo pipefail

stage=0              # Begin configuration section
stop_stage=100
size=small           # mini corpus size: tiny | small | full
corpus_dir=          # default: ../corpus/<size> (shared with the other mini recipes)
jobs=2               # independent runs at a time (each gets OMP_NUM_THREADS/jobs threads)
publish_results=false  # true: copy exp/RESULTS.md over the committed RESULTS.md (a real default run only)
k=100                # clusters of every k-means (MFCC and HuBERT)
rate=50              # unit frames per second (50 | 25)
iterations=1         # HuBERT iterations (1: trained on MFCC targets; 2: then on iteration 1's units)
sweep_layers="1 2 3 4 5 6"
sweep_frames=30000   # frames per k-means fit of the layer sweep
fit_frames=100000    # frames of the final k-means fits
fit_sets="real_train synth_train"  # k-means frames come from these sets, in equal shares (recorded vs espeak speech)
kmeans_opts="--balance dir --standardize"  # `stk units fit` options of every k-means (MFCC and HuBERT alike)
train_opts=          # extra key=value overrides for every HuBERT `stk train`
align_opts=          # extra key=value overrides for the CTC alignment model
eval_sets="synth_test real_test"
dev_sets="synth_dev real_dev"
dump_sets="speech_only_train synth_train real_train synth_dev real_dev synth_test real_test"
model_name=mini-hubert-units   # units model in the model store ($STK_MODEL_STORE, default ~/.cache/stk/models)
hubert_name=mini-hubert        # its HuBERT package in the model store
# End configuration section
help_message="Usage: $0 [--stage N] [--stop-stage N] [--size tiny|small|full] [--iterations 1|2] [--train-opts \"k=v ...\"]"

. ./path.sh
. ./cmd.sh
. utils/log.sh
log "$0 $*"  # the command line as given, before option parsing consumes it
. utils/parse_options.sh

corpus_dir=${corpus_dir:-../corpus/${size}}
tok=data/token/char
fit_dirs=$(for x in ${fit_sets}; do printf 'data/%s ' "${x}"; done)
read -r -a kopts <<< "${kmeans_opts}"
read -r -a extra <<< "${train_opts}"
read -r -a aextra <<< "${align_opts}"
. utils/lib/train.sh  # stk_train CONFIG EXP_DIR [key=value ...] (skips finished runs)
. utils/lib/bg.sh     # bg_run CMD ... / bg_wait
start=$(date +%s)

if [ ${stage} -le 0 ] && [ ${stop_stage} -ge 0 ]; then
  log "Stage 0: mini corpus (${size}) and data dirs"
  stk corpus mini --out "${corpus_dir}" --size "${size}"
  c=${corpus_dir}
  stk data combine data/paired "$c/synth_train" "$c/real_train" --normalize-text
  stk data combine data/speech_only "$c/speech_only_train"
  stk data combine data/dev "$c/synth_dev" "$c/real_dev" --normalize-text --subset 200
  for x in $(printf '%s\n' ${dump_sets} ${dev_sets} ${eval_sets} ${fit_sets} | sort -u); do
    stk data combine data/${x} "$c/${x}" $( [ -f "$c/${x}/text" ] && echo --normalize-text )
  done
fi

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
  log "Stage 1: fbank features, global CMVN, character tokenizer (for the alignment model; logs: exp/log/fbank_<set>.log)"
  for x in paired speech_only dev; do
    bg_run ${train_cmd} exp/log/fbank_${x}.log stk data fbank data/${x} dump/${x}
  done
  bg_wait
  stk data combine dump/train dump/speech_only dump/paired   # all training speech (text dropped)
  stk data cmvn dump/train --out dump/cmvn.json
  stk tokenizer train data/paired/text --out ${tok} --vocab-size 200 --model-type char
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  log "Stage 2: MFCC k-means (k=${k}, ${rate}/s) -> iteration-1 targets"
  stk units fit ${fit_dirs} --features mfcc --k ${k} --rate ${rate} --max-frames ${fit_frames} "${kopts[@]}" \
    --out exp/units_mfcc
  for x in train dev; do
    bg_run ${train_cmd} exp/log/dump_mfcc_${x}.log stk units dump dump/${x} --model exp/units_mfcc
  done
  bg_wait
fi

align_model() {  # CTC alignment model -> character durations of the dev and test sets
  stk_train conf/align.yaml exp/align "${aextra[@]}"
  stk package exp/align --weights exp/align/model.avg1.safetensors --out exp/align/package --method ctc_greedy
  for x in ${dev_sets} ${eval_sets}; do
    ${train_cmd} exp/log/align_${x}.log stk align data/${x} --model exp/align/package
  done
}

units_of() {  # ITERATION -> the units model its HuBERT is trained on
  if [ "$1" -eq 1 ]; then echo exp/units_mfcc; else echo exp/units_hubert_it$(( $1 - 1 )); fi
}

sweep_layer() {  # ITERATION LAYER: k-means on that layer's train frames, quality on the dev sets
  local d=exp/hubert_it$1/sweep/L$2 x
  stk units fit ${fit_dirs} --features hubert:exp/hubert_it$1/package:$2 --k ${k} --rate ${rate} \
    --max-frames ${sweep_frames} "${kopts[@]}" --out ${d}
  for x in ${dev_sets}; do stk units eval data/${x} --model ${d} --json ${d}/eval_${x}.json; done
}

sweep() {  # ITERATION: k-means per layer on train frames, quality on the dev sets, best layer -> exp/hubert_itN/best_layer
  local it=$1 l
  for l in ${sweep_layers}; do bg_run sweep_layer ${it} ${l}; done
  bg_wait
  stk units pick exp/hubert_it${it}/sweep/L*/eval_*.json --key pnmi > exp/hubert_it${it}/best_layer
  log "iteration ${it}: best layer on ${dev_sets}: $(cat exp/hubert_it${it}/best_layer)"
}

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  log "Stage 3: HuBERT iterations 1..${iterations} (the CTC alignment model trains alongside)"
  bg_run align_model
  for it in $(seq 1 ${iterations}); do
    um=$(units_of ${it})
    if [ "${it}" -gt 1 ]; then
      for x in train dev; do stk units dump dump/${x} --model ${um}; done
    fi
    kk=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['k'])" ${um}/units.json)
    stk_train conf/hubert.yaml exp/hubert_it${it} data.tokenizer=${tok}.model data.cmvn=dump/cmvn.json \
      model.conf.num_units=${kk} "${extra[@]}"
    stk package exp/hubert_it${it} --weights exp/hubert_it${it}/model.avg1.safetensors --out exp/hubert_it${it}/package \
      --method ctc_greedy --description "mini corpus HuBERT iteration ${it} (targets: ${um})"
    if [ "${it}" -eq 1 ]; then bg_wait; fi   # the sweep needs the alignments
    sweep ${it}
    stk units fit ${fit_dirs} --features hubert:exp/hubert_it${it}/package:$(cat exp/hubert_it${it}/best_layer) \
      --k ${k} --rate ${rate} --max-frames ${fit_frames} "${kopts[@]}" --out exp/units_hubert_it${it}
  done
  bg_wait
fi

final=exp/units_hubert_it${iterations}

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  log "Stage 4: unit quality on ${dev_sets} ${eval_sets}"
  for um in exp/units_mfcc $(for it in $(seq 1 ${iterations}); do echo exp/units_hubert_it${it}; done); do
    for x in ${dev_sets} ${eval_sets}; do
      bg_run ${train_cmd} ${um}/log/eval_${x}.log stk units eval data/${x} --model ${um} --json ${um}/eval_${x}.json \
        --codes-out ${um}/codes_${x}
    done
  done
  bg_wait
  for it in $(seq 1 ${iterations}); do  # paired bootstrap: HuBERT iteration N - MFCC k-means
    for x in ${eval_sets}; do
      stk units compare data/${x} exp/units_mfcc/codes_${x} exp/units_hubert_it${it}/codes_${x} \
        --json exp/units_hubert_it${it}/compare_${x}.json
    done
  done
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
  log "Stage 5: RESULTS -> exp/RESULTS.md (RESULTS.md with --publish-results true)"
  cells=()
  for x in ${eval_sets}; do
    cells+=("MFCC k-means|${x}|exp/units_mfcc/eval_${x}.json")
    for it in $(seq 1 ${iterations}); do
      cells+=("HuBERT it-${it} L$(cat exp/hubert_it${it}/best_layer)|${x}|exp/units_hubert_it${it}/eval_${x}.json")
    done
  done
  sweep_cells=()
  for it in $(seq 1 ${iterations}); do
    for l in ${sweep_layers}; do
      for x in ${dev_sets}; do sweep_cells+=(--sweep "it-${it} L${l}|${x}|exp/hubert_it${it}/sweep/L${l}/eval_${x}.json"); done
    done
    for x in ${dev_sets}; do sweep_cells+=(--sweep "MFCC k-means|${x}|exp/units_mfcc/eval_${x}.json"); done
  done
  for it in $(seq 1 ${iterations}); do
    for x in ${eval_sets}; do sweep_cells+=(--compare "HuBERT it-${it} − MFCC|${x}|exp/units_hubert_it${it}/compare_${x}.json"); done
  done
  elapsed=$(( $(date +%s) - start ))
  stk units report "${cells[@]}" "${sweep_cells[@]}" --out exp/RESULTS.md \
    --title "mini units (${size} corpus): MFCC k-means vs HuBERT, k=${k}, ${rate} units/s" \
    --notes "$(date -u +%F), $(nproc) CPU(s), stages ${stage}-${stop_stage} took $(( elapsed / 60 )) min $(( elapsed % 60 )) s. Labels: characters of a CTC forced alignment (exp/align). ${train_opts:+HuBERT overrides: ${train_opts}.}"
  if [ "${publish_results}" = true ]; then cp exp/RESULTS.md RESULTS.md; log "published exp/RESULTS.md -> RESULTS.md"; fi
  cat exp/RESULTS.md
fi

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
  log "Stage 6: model store: units model '${model_name}', HuBERT '${hubert_name}'"
  stk package exp/hubert_it${iterations} --weights exp/hubert_it${iterations}/model.avg1.safetensors \
    --out exp/hubert_it${iterations}/package --method ctc_greedy --name ${hubert_name} --force \
    --description "mini corpus HuBERT iteration ${iterations}"
  stk units publish ${final} --name ${model_name} --force
  log "Try: stk units dump data/real_test --model ${model_name} --dedup"
fi

if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 7 ]; then
  log "Stage 7: deduplicated ${rate}/s units of ${dump_sets} (data/<set>/units, units.dur)"
  for x in ${dump_sets}; do
    bg_run ${train_cmd} exp/log/dump_units_${x}.log stk units dump data/${x} --model ${final} --dedup
  done
  bg_wait
fi

log "done in $(( $(date +%s) - start )) s"
