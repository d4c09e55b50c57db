#!/usr/bin/env bash
# Multilingual Conformer ASR (hybrid CTC/attention) on the mini corpus:
# real asterisk prompts (en es fr it ru) + espeak-ng speech (en de fr es it ru).
#   ./run.sh                          # everything, default size (small)
#   ./run.sh --size tiny --stage 3    # the CI configuration, from training on
#   ./run.sh --stage 5 --nj 4 --device cuda   # decode in 4 jobs through cmd.sh's ${decode_cmd}
#   ./run.sh --stage 7 --use-lm true  # LM fusion: n-gram (ctc_beam) and Transformer LM (attention)
#   ./run.sh --extra-voices true --speed-perturb 0.9,1.0,1.1 --add-noise babble   # robustness: more voices, speed, babble
#                                     (-> exp/train_small_voices_sp_babble, model store mini-asr-voices-sp-babble)
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
extra_voices=false   # stage 0: also train on the corpus's voices_train (flite/Festival voices, en+it; needs those engines)
speed_perturb=       # stage 0: speed factors of the training set, e.g. 0.9,1.0,1.1 (Kaldi/ESPnet; empty: off)
add_noise=           # stage 0: add a noisy copy of the training set: babble | white | pink | brown (empty: off)
noise_snr=5:20       # its SNR range in dB
train_opts=          # extra stk train overrides, e.g. 'model.conf.specaug={}' (SpecAugment, stk's defaults: 2 freq masks of <= 27 bins, 2 time masks of <= 5 %)
package_name=        # model-store name of stage 4 (default: mini-asr; mini-asr-<augmentation> for an augmented run)
test_sets="synth_test real_test pico_test"  # pico_test: held-out TTS engine, only where pico2wave is installed (local/install_pico.sh)
nj=1                 # parallel decoding jobs per test set (split, ${decode_cmd} JOB=1:nj, merge)
device=cpu           # stk decode --device: cpu | cuda
use_lm=false         # stages 7-9: train LMs, decode with and without fusion, compare
lm_config=           # Transformer LM config (default: conf/lm.yaml, conf/lm_tiny.yaml for --size tiny)
lm_weight=0.3        # Transformer LM weight in attention decoding (shallow fusion)
att_ctc_weight=0.5   # CTC weight of the attention decodes of stages 8-9
ngram_order=3        # word n-gram LM for ctc_beam
ngram_weight=0.5     # its weight (natural-log scale) ...
word_score=0.0       # ... and the score added per word
# End configuration section
help_message="Usage: $0 [--stage N] [--stop-stage N] [--size tiny|small|full] [--train-config F] [--nproc N] [--token-type char|bpe] [--method M] [--nj N] [--device cpu|cuda] [--use-lm true]"

. ./path.sh
. ./cmd.sh
. utils/log.sh
. utils/lib/decode.sh
log "$0 $*"
. utils/parse_options.sh

corpus_dir=${corpus_dir:-../corpus/${size}}
aug=; [ "${extra_voices}" = true ] && aug=${aug}_voices; [ -n "${speed_perturb}" ] && aug=${aug}_sp; [ -n "${add_noise}" ] && aug=${aug}_${add_noise}
train_set=train${aug}  # what stage 3 trains on (data/train plus the augmentation)
cmvn=dump/cmvn.json; [ -z "${aug}" ] || cmvn=dump/cmvn_${train_set}.json
package_name=${package_name:-mini-asr${aug//_/-}}
tag=${tag:-$(basename "${train_config}" .yaml)_${size}${aug}}
exp=exp/${tag}
tok=data/token/char
[ "${token_type}" = char ] || tok=data/token/${token_type}${vocab_size}
if [ -z "${lm_config}" ]; then lm_config=conf/lm.yaml; [ "${size}" = tiny ] && lm_config=conf/lm_tiny.yaml; fi
lm_exp=exp/$(basename "${lm_config}" .yaml)_${size}
log "exp=${exp}"

if [ ${stage} -le 0 ] && [ ${stop_stage} -ge 0 ]; then
  log "Stage 0: build the mini corpus (${size}) and the ASR training sets"
  stk corpus mini --out "${corpus_dir}" --size "${size}"
  for x in train dev; do
    stk data combine data/${x} "${corpus_dir}/synth_${x}" "${corpus_dir}/real_${x}" --normalize-text
  done
  for x in ${test_sets}; do
    if [ ! -d "${corpus_dir}/${x}" ]; then
      log "skipping test set ${x}: not in ${corpus_dir} (pico_test needs pico2wave: bash local/install_pico.sh, then rerun stage 0)"
      continue
    fi
    stk data combine data/${x} "${corpus_dir}/${x}" --normalize-text
  done
  if [ -n "${aug}" ]; then
    log "Stage 0: training-set augmentation -> data/${train_set} (voices ${extra_voices}, speed ${speed_perturb:-off}, noise ${add_noise:-off} ${noise_snr} dB)"
    src=data/train
    if [ "${extra_voices}" = true ]; then
      [ -d "${corpus_dir}/voices_train" ] || { log "extra_voices=true: no ${corpus_dir}/voices_train (apt-get install -y flite festival festvox-italp16k festvox-itapc16k, then rerun stage 0)"; exit 1; }
      stk data combine data/train_voices data/train "${corpus_dir}/voices_train" --normalize-text
      src=data/train_voices
    fi
    parts=${src}
    if [ -n "${speed_perturb}" ]; then
      stk data perturb-speed ${src} --out ${src}_sp --factors ${speed_perturb}
      parts=${src}_sp
    fi
    if [ -n "${add_noise}" ]; then
      stk data add-noise ${src} --out ${src}_${add_noise} --noise ${add_noise} --snr ${noise_snr} --seed 1
      parts="${parts} ${src}_${add_noise}"
    fi
    [ "${parts}" = "data/${train_set}" ] || stk data combine data/${train_set} ${parts}
  fi
fi
# test sets prepared in stage 0 (a held-out-engine set is missing where its engine is not installed)
present_sets=; for x in ${test_sets}; do [ -s data/${x}/text ] && present_sets="${present_sets} ${x}"; done

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
  log "Stage 1: fbank features and global CMVN"
  for x in ${train_set} dev; do
    stk data validate data/${x}
    ${train_cmd} exp/log/fbank_${x}.log stk data fbank data/${x} dump/${x}
  done
  stk data cmvn dump/${train_set} --out ${cmvn}
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
    data.tokenizer=${tok}.model data.cmvn=${cmvn} data.train.paired.data_dir=dump/${train_set} ${train_opts}
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  log "Stage 4: average the best checkpoints and package the model"
  stk average ${exp} --n ${avg_n}
  stk package ${exp} --weights ${exp}/model.avg${avg_n}.safetensors --out ${exp}/package \
    --method ${method} --beam-size ${beam_size} --ctc-weight ${ctc_weight} --name ${package_name} --force \
    --description "mini corpus multilingual ASR (${tag})"
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
  log "Stage 5: decode${present_sets} (${method}, beam ${beam_size}, ${nj} job(s), ${device}; logs in ${exp}/decode_${method}_<set>/log)"
  for x in ${present_sets}; do
    stk_decode_nj ${nj} data/${x} ${exp}/decode_${method}_${x} --model ${exp}/package --method ${method} \
      --beam-size ${beam_size} --ctc-weight ${ctc_weight} --device ${device}
  done
fi

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
  log "Stage 6: score (CER/WER per language) -> ${exp}/RESULTS.md (copy it to RESULTS.md by hand after a real run)"
  for x in ${present_sets}; do
    stk score data/${x}/text ${exp}/decode_${method}_${x}/hyp --utt2lang data/${x}/utt2lang \
      --json ${exp}/decode_${method}_${x}/score.json
  done
  stk report ${exp}/decode_*/score.json --out ${exp}/RESULTS.md --title "mini ASR: ${tag}" \
    --notes "Config ${train_config}, corpus size ${size}; rows are <decoding method>_<test set> (every method decoded so far in ${exp}), beam ${beam_size}, CTC weight ${ctc_weight} in attention decoding. real_test: real human speech (asterisk prompts), synth_test: espeak-ng speech with an unseen voice; pico_test: the synth_test sentences read by SVOX Pico, a TTS engine never used in training. CER/WER after lowercasing and stripping punctuation."
  cat ${exp}/RESULTS.md
fi

if [ "${use_lm}" = true ] && [ ${stage} -le 7 ] && [ ${stop_stage} -ge 7 ]; then
  log "Stage 7: LM text (ASR training text + ${corpus_dir}/text_only), ${ngram_order}-gram ARPA, Transformer LM ${lm_config} -> ${lm_exp}"
  stk data combine data/lm_train data/train "${corpus_dir}/text_only" --normalize-text
  mkdir -p ${lm_exp}
  stk ngram data/lm_train/text --order ${ngram_order} --out ${lm_exp}/${ngram_order}gram.arpa
  ${cuda_cmd} ${lm_exp}/log/train.log stk train --config ${lm_config} --exp-dir ${lm_exp} data.tokenizer=${tok}.model
  stk average ${lm_exp} --n 1
  stk package ${lm_exp} --weights ${lm_exp}/model.avg1.safetensors --out ${lm_exp}/package \
    --description "character Transformer LM for mini-asr shallow fusion (${lm_config})"
fi

if [ "${use_lm}" = true ] && [ ${stage} -le 8 ] && [ ${stop_stage} -ge 8 ]; then
  log "Stage 8: decode${present_sets} with and without LM fusion (${nj} job(s), ${device})"
  for x in ${present_sets}; do
    common="--model ${exp}/package --beam-size ${beam_size} --device ${device}"
    [ "${method}" = ctc_beam ] && [ -s ${exp}/decode_ctc_beam_${x}/hyp ] || \
      stk_decode_nj ${nj} data/${x} ${exp}/decode_ctc_beam_${x} ${common} --method ctc_beam  # stage 5's, if there
    stk_decode_nj ${nj} data/${x} ${exp}/decode_ctc_beam_ngram_${x} ${common} --method ctc_beam \
      --lm ${lm_exp}/${ngram_order}gram.arpa --lm-weight ${ngram_weight} --word-score ${word_score}
    stk_decode_nj ${nj} data/${x} ${exp}/decode_attention_${x} ${common} --method attention --ctc-weight ${att_ctc_weight}
    stk_decode_nj ${nj} data/${x} ${exp}/decode_attention_lm_${x} ${common} --method attention \
      --ctc-weight ${att_ctc_weight} --lm ${lm_exp}/package --lm-weight ${lm_weight}
  done
fi

if [ "${use_lm}" = true ] && [ ${stage} -le 9 ] && [ ${stop_stage} -ge 9 ]; then
  log "Stage 9: WER with and without fusion, paired-bootstrap 95 % intervals -> ${exp}/RESULTS_lm.md"
  out=${exp}/RESULTS_lm.md
  { echo "## mini ASR: LM fusion (${tag})"; echo
    echo "| test set | search | WER % | CER % | fused - plain WER (95 % CI) | fused - plain CER (95 % CI) |"
    echo "|---|---|---:|---:|---:|---:|"; } > ${out}
  for x in ${present_sets}; do
    for pair in "ctc_beam ctc_beam_ngram" "attention attention_lm"; do
      set -- ${pair}
      for d in $1 $2; do
        stk score data/${x}/text ${exp}/decode_${d}_${x}/hyp --utt2lang data/${x}/utt2lang \
          --json ${exp}/decode_${d}_${x}/score.json > /dev/null
      done
      stk score data/${x}/text --compare ${exp}/decode_$2_${x}/hyp ${exp}/decode_$1_${x}/hyp \
        --json ${exp}/compare_$2_vs_$1_${x}.json
      python3 - "${x}" "$1" "$2" "${exp}" >> ${out} <<'PY'
import json, sys
x, plain, fused, exp = sys.argv[1:]
c = json.load(open(f"{exp}/compare_{fused}_vs_{plain}_{x}.json"))
for name in (plain, fused):
    s = json.load(open(f"{exp}/decode_{name}_{x}/score.json"))
    d = " | ".join(f"{c[m]['diff']:+.2f} ({c[m]['ci'][0]:+.2f}, {c[m]['ci'][1]:+.2f})" for m in ("wer", "cer")) if name == fused else " | "
    print(f"| {x} | {name} | {s['wer']:.2f} | {s['cer']:.2f} | {d} |")
PY
    done
  done
  { echo; echo "ctc_beam_ngram: ${ngram_order}-gram word LM (stk ngram, interpolated Kneser-Ney) in torchaudio's flashlight decoder,"
    echo "weight ${ngram_weight}, word score ${word_score}; attention_lm: Transformer LM (${lm_config}) shallow fusion, weight ${lm_weight},"
    echo "CTC weight ${att_ctc_weight}; beam ${beam_size}. Intervals: paired bootstrap over utterances (stk score --compare)."; } >> ${out}
  cat ${out}
fi
