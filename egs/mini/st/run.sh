#!/usr/bin/env bash
# Speech translation X -> en on the mini corpus (de es fr it ru -> en), the ESPnet ST recipe way:
# the ST encoder starts from an ASR model trained on the same speech, CTC stays on the source
# transcript, and two reference rows are trained on the same pairs: text MT (source transcript ->
# English, the ceiling) and the cascade ASR -> MT. Real speech pairs come from the asterisk
# prompts (the same prompt recorded in each language).
#   ./run.sh                          # everything, default size (small)
#   ./run.sh --size tiny --stage 3    # the CI configuration, from training on
#   ./run.sh --asr-package DIR        # start from a packaged ASR model (e.g. egs/mini/asr's) instead of training one
set -euo pipefail

stage=0              # Begin configuration section
stop_stage=100
size=small           # mini corpus size: tiny | small | full
corpus_dir=          # default: ../corpus/<size> (shared with the other mini recipes)
nproc=1              # training processes (torchrun + DDP when > 1)
jobs=2               # independent jobs side by side (the ASR and MT trainings, decodes), one thread each
asr_config=          # default: egs/mini/asr/conf/train.yaml (train_tiny.yaml with --size tiny): the ASR recipe's model
asr_steps=1200       # ASR updates (the ASR recipe's 2,400 halved to fit the budget; CTC leaves its plateau by ~400)
asr_package=auto     # a packaged ASR model to start from (its encoder must match st_config); auto: the ASR
                     # recipe's egs/mini/asr/exp/train_<size>/package if it exists; none (or no package): train one
st_config=           # default: conf/train.yaml (train_tiny.yaml with --size tiny)
mt_config=           # default: conf/train_mt.yaml (train_mt_tiny.yaml with --size tiny)
vocab_size=400       # joint BPE over source transcripts and English translations (ST, MT)
src_langs=de,es,fr,it,ru
beam_size=10
asr_method=ctc_beam  # the cascade's first pass
bootstrap=1000       # paired bootstrap resamples for the 95 % intervals
test_sets="synth_test real_test"
# End configuration section
help_message="Usage: $0 [--stage N] [--stop-stage N] [--size tiny|small|full] [--asr-package DIR] [--jobs N] [--nproc N]"

. ./path.sh
. ./cmd.sh
. utils/log.sh
log "$0 $*"  # the command line as given, before option parsing consumes it
. utils/parse_options.sh
. utils/lib/bg.sh
. utils/lib/train.sh

corpus_dir=${corpus_dir:-../corpus/${size}}
sfx=; [ "${size}" = tiny ] && sfx=_tiny
asr_config=${asr_config:-${STK_ROOT}/egs/mini/asr/conf/train${sfx}.yaml}
st_config=${st_config:-conf/train${sfx}.yaml}
mt_config=${mt_config:-conf/train_mt${sfx}.yaml}
bpe=data/token/bpe${vocab_size}
chars=data/token/char
asr_exp=exp/asr_${size}
st_exp=exp/st_${size}
mt_exp=exp/mt_${size}
cmvn=dump/cmvn.json

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
    bg_run ${train_cmd} exp/log/fbank_${x}.log stk data fbank data/${x} dump/${x}
  done
  bg_wait
  stk data cmvn dump/train --out ${cmvn}
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  log "Stage 2: characters of the source transcripts (ASR); joint BPE ${vocab_size} (ST, MT)"
  stk tokenizer train data/train/text --out ${chars} --vocab-size 300 --model-type char
  stk tokenizer train data/train/text data/train/text.en --out ${bpe} --vocab-size ${vocab_size} --model-type bpe
fi

if [ "${asr_package}" = auto ]; then
  asr_package=${STK_ROOT}/egs/mini/asr/exp/train_${size}/package
  [ -f "${asr_package}/model.safetensors" ] || asr_package=
fi
[ "${asr_package}" = none ] && asr_package=
if [ -n "${asr_package}" ]; then  # a packaged ASR model replaces stage 3's
  asr_init=${asr_package}/model.safetensors asr_pkg=${asr_package}
  cmvn=${asr_package}/cmvn.json   # the ST encoder sees the features its ASR encoder was trained on
else
  asr_init=${asr_exp}/model.avg1.safetensors asr_pkg=${asr_exp}/package
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  if [ -z "${asr_package}" ]; then
    log "Stage 3: ASR (${asr_config}, characters, ${asr_steps} updates) -> ${asr_exp}"
    steps=(); [ "${size}" = tiny ] || steps=(trainer.max_steps=${asr_steps} trainer.valid_interval_steps=$((asr_steps / 2)))
    stk_train ${asr_config} ${asr_exp} data.tokenizer=${chars}.model data.cmvn=${cmvn} "${steps[@]}"
    stk package ${asr_exp} --weights ${asr_exp}/model.avg1.safetensors --out ${asr_pkg} --method ${asr_method} \
      --beam-size ${beam_size} --ctc-weight 0 --description "mini corpus ASR ${src_langs} (ST recipe)"
  else
    log "Stage 3: ASR: using ${asr_package}"
  fi
fi

references() {  # train and package text MT; decode the reference rows: MT of the transcripts, ASR, cascade
  stk_train ${mt_config} ${mt_exp} data.tokenizer=${bpe}.model
  stk package ${mt_exp} --weights ${mt_exp}/model.avg1.safetensors --out ${mt_exp}/package --method attention \
    --beam-size ${beam_size} --ctc-weight 0 --name mini-mt --force --description "mini corpus text MT ${src_langs} -> en"
  for x in ${test_sets}; do
    ${decode_cmd} ${mt_exp}/decode_mt_${x}/decode.log \
      stk decode --text data/${x}/text --model ${mt_exp}/package --out ${mt_exp}/decode_mt_${x}/hyp
    ${decode_cmd} ${asr_exp}/decode_asr_${x}/decode.log \
      stk decode data/${x} --model ${asr_pkg} --method ${asr_method} --beam-size ${beam_size} \
      --out ${asr_exp}/decode_asr_${x}/hyp
    ${decode_cmd} ${mt_exp}/decode_cascade_${x}/decode.log \
      stk decode --text ${asr_exp}/decode_asr_${x}/hyp --model ${mt_exp}/package --out ${mt_exp}/decode_cascade_${x}/hyp
  done
}

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  log "Stage 4: ST (${st_config}, encoder from ${asr_init}) | text MT (${mt_config}), then the reference rows: MT, ASR (${asr_method}), cascade"
  bg_run stk_train ${st_config} ${st_exp} data.tokenizer=${bpe}.model data.cmvn=${cmvn} \
    "init=[{path: ${asr_init}, src: encoder., dst: encoder.}]"
  bg_run references
  bg_wait
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
  log "Stage 5: package the ST model; translate ${test_sets} (attention beam ${beam_size})"
  stk package ${st_exp} --weights ${st_exp}/model.avg1.safetensors --out ${st_exp}/package --method attention \
    --beam-size ${beam_size} --ctc-weight 0 --name mini-st --force --description "mini corpus speech translation ${src_langs} -> en"
  for x in ${test_sets}; do
    bg_run ${decode_cmd} ${st_exp}/decode_st_${x}/decode.log \
      stk decode data/${x} --model ${st_exp}/package --out ${st_exp}/decode_st_${x}/hyp
  done
  bg_wait
fi

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
  out=exp/results_${size}.md
  log "Stage 6: BLEU/chrF with 95 % bootstrap intervals (sacrebleu), paired comparisons, ASR CER -> ${out}"
  for x in ${test_sets}; do
    stk score data/${x}/text ${asr_exp}/decode_asr_${x}/hyp --utt2lang data/${x}/utt2lang --bootstrap ${bootstrap} \
      --json ${asr_exp}/decode_asr_${x}/score.json
    for d in ${mt_exp}/decode_mt_${x} ${mt_exp}/decode_cascade_${x} ${st_exp}/decode_st_${x}; do
      stk score data/${x}/text.en ${d}/hyp --metric bleu --utt2lang data/${x}/utt2lang --bootstrap ${bootstrap} \
        --json ${d}/score.json
    done
    for b in cascade mt; do  # ST - B, paired bootstrap over the same utterances
      d=${mt_exp}/decode_${b}_${x}
      stk score data/${x}/text.en --compare ${st_exp}/decode_st_${x}/hyp ${d}/hyp --metric bleu \
        --bootstrap ${bootstrap} --json exp/compare_st_vs_${b}_${x}.json | tee exp/compare_st_vs_${b}_${x}.txt
    done
  done
  stk report ${mt_exp}/decode_mt_*/score.json ${mt_exp}/decode_cascade_*/score.json ${st_exp}/decode_st_*/score.json \
    --metric bleu --out ${out} --title "mini ST ${src_langs} -> en (${size})" \
    --notes "Rows: mt_* = text MT of the reference transcripts (the ceiling), cascade_* = the same MT on the ASR hypotheses (${asr_method}, beam ${beam_size}), st_* = end-to-end ST (attention beam ${beam_size}, encoder from the ASR model). real_test: real human speech (asterisk prompts), synth_test: espeak-ng speech with an unseen voice."
  stk report ${asr_exp}/decode_asr_*/score.json --out ${out} --append --title "ASR of the cascade (${asr_method})"
  { echo; echo "## Paired comparisons (sacrebleu paired bootstrap, ${bootstrap} samples)"; echo
    for f in exp/compare_st_vs_*_*.txt; do echo "### $(basename ${f} .txt)"; echo '```'; cat ${f}; echo '```'; done; } >> ${out}
  cat ${out}
fi
