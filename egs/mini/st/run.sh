#!/usr/bin/env bash
# Speech translation X -> en on the mini corpus (de es fr it ru -> en), the ESPnet ST recipe way:
# the ST encoder starts from an ASR model of the same speech (the ASR recipe's), its decoder from
# a text MT model, CTC stays on the source transcript. Reference rows: text MT (source transcript
# -> English) trained on the same pairs ("mt") and on those plus the corpus's parallel text
# ("mttext", the model whose decoder ST starts from), and the cascades ASR -> MT of both.
# Real speech pairs come from the asterisk prompts (the same prompt recorded in each language).
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
mt_config=           # default: conf/train_mt.yaml (train_mt_tiny.yaml with --size tiny): MT on the ST pairs
mttext_config=       # default: conf/train_mt_text.yaml (train_mt_text_tiny.yaml): MT on the pairs + text_only
st_dec_init=true     # initialise the ST decoder from the mttext model (false: encoder init only)
vocab_size=400       # joint BPE over source transcripts and English translations (ST, MT)
src_langs=de,es,fr,it,ru
beam_size=10
length_penalty=1.0   # length bonus per token in attention search (MT and ST): without it the beam ends early on
                     # short sentences; chosen on 151 dev sentences (MT BLEU 2.75 / 3.20 / 2.91 at 0 / 1 / 2)
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
mttext_config=${mttext_config:-conf/train_mt_text${sfx}.yaml}
bpe=data/token/bpe${vocab_size}
chars=data/token/char
asr_exp=exp/asr_${size}
st_exp=exp/st_${size}
mt_exp=exp/mt_${size}
mttext_exp=exp/mttext_${size}
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
  stk data combine data/text_train "${corpus_dir}/text_only" --normalize-text --langs ${src_langs}  # parallel text, no speech
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
  log "Stage 3: ASR (${asr_package:-${asr_config}}) | text MT: ${mt_config} -> ${mt_exp}, ${mttext_config} -> ${mttext_exp}"
  if [ -z "${asr_package}" ]; then
    steps=(); [ "${size}" = tiny ] || steps=(trainer.max_steps=${asr_steps} trainer.valid_interval_steps=$((asr_steps / 2)))
    bg_run stk_train ${asr_config} ${asr_exp} data.tokenizer=${chars}.model data.cmvn=${cmvn} "${steps[@]}"
  fi
  bg_run stk_train ${mttext_config} ${mttext_exp} data.tokenizer=${bpe}.model
  bg_run stk_train ${mt_config} ${mt_exp} data.tokenizer=${bpe}.model
  bg_wait
fi

# MT and ST models are used at the end of their cosine schedules (checkpoints/last.pt): their
# validation loss rises from the first validations on while accuracy still improves (the decoder's
# confidence on unseen sentences), so the lowest-loss checkpoint is an early, worse one.
references() {  # package the ASR and MT models; decode MT of the reference transcripts, ASR, the cascades
  if [ -z "${asr_package}" ]; then
    stk package ${asr_exp} --weights ${asr_exp}/model.avg1.safetensors --out ${asr_pkg} --method ${asr_method} \
      --beam-size ${beam_size} --ctc-weight 0 --description "mini corpus ASR ${src_langs} (ST recipe)"
  fi
  for m in mt mttext; do
    d=exp/${m}_${size}
    stk package ${d} --weights ${d}/checkpoints/last.pt --out ${d}/package --method attention \
      --beam-size ${beam_size} --ctc-weight 0 --description "mini corpus text MT ${src_langs} -> en (${m})"
  done
  for x in ${test_sets}; do
    ${decode_cmd} ${asr_exp}/decode_asr_${x}/decode.log \
      stk decode data/${x} --model ${asr_pkg} --method ${asr_method} --beam-size ${beam_size} \
      --out ${asr_exp}/decode_asr_${x}/hyp
    for m in mt mttext; do
      d=exp/${m}_${size}
      ${decode_cmd} ${d}/decode_${m}_${x}/decode.log \
        stk decode --text data/${x}/text --model ${d}/package --length-penalty ${length_penalty} --out ${d}/decode_${m}_${x}/hyp
      ${decode_cmd} ${d}/decode_cascade_${m}_${x}/decode.log \
        stk decode --text ${asr_exp}/decode_asr_${x}/hyp --model ${d}/package --length-penalty ${length_penalty} \
        --out ${d}/decode_cascade_${m}_${x}/hyp
    done
  done
}

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  init="{path: ${asr_init}, src: encoder., dst: encoder.}"
  [ "${st_dec_init}" = true ] && init="${init}, {path: ${mttext_exp}/checkpoints/last.pt, src: decoder., dst: decoder.}"
  log "Stage 4: ST (${st_config}; init ${init}) | the reference rows: MT, ASR (${asr_method}), cascades"
  bg_run stk_train ${st_config} ${st_exp} data.tokenizer=${bpe}.model data.cmvn=${cmvn} "init=[${init}]"
  bg_run references
  bg_wait
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
  log "Stage 5: package the ST model; translate ${test_sets} (attention beam ${beam_size})"
  stk package ${st_exp} --weights ${st_exp}/checkpoints/last.pt --out ${st_exp}/package --method attention \
    --beam-size ${beam_size} --ctc-weight 0 --name mini-st --force --description "mini corpus speech translation ${src_langs} -> en"
  for x in ${test_sets}; do
    bg_run ${decode_cmd} ${st_exp}/decode_st_${x}/decode.log \
      stk decode data/${x} --model ${st_exp}/package --length-penalty ${length_penalty} --out ${st_exp}/decode_st_${x}/hyp
  done
  bg_wait
fi

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
  out=exp/results_${size}.md
  log "Stage 6: BLEU/chrF with 95 % bootstrap intervals (sacrebleu), paired comparisons, ASR CER -> ${out}"
  rows=(); cmps=()
  for x in ${test_sets}; do
    stk score data/${x}/text ${asr_exp}/decode_asr_${x}/hyp --utt2lang data/${x}/utt2lang --bootstrap ${bootstrap} \
      --json ${asr_exp}/decode_asr_${x}/score.json
    for d in ${mt_exp}/decode_mt_${x} ${mt_exp}/decode_cascade_mt_${x} ${mttext_exp}/decode_mttext_${x} \
             ${mttext_exp}/decode_cascade_mttext_${x} ${st_exp}/decode_st_${x}; do
      stk score data/${x}/text.en ${d}/hyp --metric bleu --utt2lang data/${x}/utt2lang --bootstrap ${bootstrap} \
        --json ${d}/score.json
      rows+=(${d}/score.json)
    done
    for b in ${mt_exp}/decode_mt ${mt_exp}/decode_cascade_mt ${mttext_exp}/decode_mttext ${mttext_exp}/decode_cascade_mttext; do
      c=exp/compare_st_vs_${b##*/decode_}_${x}  # ST - B, paired bootstrap over the same utterances
      stk score data/${x}/text.en --compare ${st_exp}/decode_st_${x}/hyp ${b}_${x}/hyp --metric bleu \
        --bootstrap ${bootstrap} --json ${c}.json > ${c}.txt
      cmps+=(${c}.txt)
    done
  done
  stk report "${rows[@]}" --metric bleu --out ${out} --title "mini ST ${src_langs} -> en (${size})" \
    --notes "Rows: mt_* = text MT of the reference transcripts trained on the ST pairs, mttext_* = MT trained on the pairs + the corpus's parallel text (text_only), cascade_<mt>_* = that MT on the ASR hypotheses (${asr_method}, beam ${beam_size}), st_* = end-to-end ST (attention beam ${beam_size}, length bonus ${length_penalty} as in the MT rows; encoder from the ASR model$([ "${st_dec_init}" = true ] && echo ', decoder from mttext')). real_test: real human speech (asterisk prompts), synth_test: espeak-ng speech with an unseen voice."
  stk report ${asr_exp}/decode_asr_*/score.json --out ${out} --append --title "ASR of the cascades (${asr_method})"
  { echo; echo "## Paired comparisons (sacrebleu paired bootstrap, ${bootstrap} samples)"; echo
    for f in "${cmps[@]}"; do echo "### $(basename ${f} .txt)"; echo '```'; cat ${f}; echo '```'; done; } >> ${out}
  cat ${out}
fi
