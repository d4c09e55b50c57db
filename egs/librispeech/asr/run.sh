#!/usr/bin/env bash
# LibriSpeech 960 h ASR: Conformer CTC/attention and Conformer transducer (RNN-T), WER on
# dev-clean, dev-other, test-clean and test-other. See README.md.
#   ./run.sh --corpus-dir /path/to/LibriSpeech --nproc 4 --device cuda   # or set LIBRISPEECH in db.sh
#   ./run.sh --stage 5 --nj 8                    # decode in 8 jobs through cmd.sh's ${decode_cmd}
#   ./run.sh --systems asr --asr-config conf/my.yaml
#   ./run.sh --size tiny --corpus-dir FIXTURE    # the CI configuration (conf/tuning/*_tiny.yaml)
set -euo pipefail

stage=0              # Begin configuration section
stop_stage=100
corpus_dir=          # the LibriSpeech dir (or its parent); default: LIBRISPEECH in db.sh
size=full            # full (the paper-size presets in stk's conf/asr/) | tiny (conf/tuning/*_tiny.yaml, CI)
train_parts="train-clean-100 train-clean-360 train-other-500"   # combined into data/train
valid_set=dev_clean
test_sets="dev_clean dev_other test_clean test_other"
systems="asr rnnt"   # asr: Conformer CTC/attention; rnnt: Conformer transducer
# training configs; defaults: stk's presets conf/asr/librispeech_conformer_{ctc_att,transducer}.yaml
# (--size tiny: conf/tuning/train_{conformer,rnnt}_tiny.yaml here)
asr_config=
rnnt_config=
token_type=unigram   # sentencepiece model: unigram | bpe | char
vocab_size=5000      # pieces for asr (ESPnet: 5000) ...
rnnt_vocab_size=500  # ... and for rnnt (icefall: 500; the joiner's output layer scales with it)
nproc=1              # training processes per node (torchrun + DDP when > 1)
nnodes=1             # nodes (> 1: one Slurm job, bin/stk-torchrun on every node; utils/lib/train.sh)
speed_perturb=       # speed factors, e.g. 0.9,1.0,1.1 (Kaldi's 3-way perturbation of data/train; writes ~2x the audio)
avg_n=10             # average the N checkpoints with the best validation loss (tiny: 1)
asr_method=attention # attention (joint CTC/attention beam search) | ctc_beam | ctc_greedy
asr_beam_size=10
ctc_weight=0.3       # CTC weight in attention decoding
rnnt_method=rnnt_beam # rnnt_beam (batched modified beam search) | rnnt_greedy
rnnt_beam_size=4
nj=1                 # parallel decoding jobs per test set (split, ${decode_cmd} JOB=1:nj, merge)
device=cpu           # stk decode --device: cpu | cuda
prep_nj=4            # threads reading flac headers in stage 0
# End configuration section
help_message="Usage: $0 [--stage N] [--stop-stage N] [--corpus-dir DIR] [--size full|tiny] [--systems 'asr rnnt']
  [--asr-config F] [--rnnt-config F] [--nproc N] [--nnodes N] [--speed-perturb 0.9,1.0,1.1] [--nj N] [--device cpu|cuda]"

. ./path.sh
. ./cmd.sh
. ./db.sh
. utils/log.sh
. utils/lib/decode.sh
. utils/lib/train.sh  # stk_train CONFIG EXP_DIR [key=value ...] (nnodes x nproc processes, skips finished runs)
log "$0 $*"  # the command line as given, before option parsing consumes it
. utils/parse_options.sh

corpus_dir=${corpus_dir:-${LIBRISPEECH}}
if [ -z "${corpus_dir}" ] && [ ${stage} -le 0 ] && [ ${stop_stage} -ge 0 ]; then
  log "error: no LibriSpeech corpus: set LIBRISPEECH in db.sh (or export it), or pass --corpus-dir DIR"
  exit 1
fi
case "${size}" in
  full) asr_config=${asr_config:-${STK_ROOT}/conf/asr/librispeech_conformer_ctc_att.yaml}
        rnnt_config=${rnnt_config:-${STK_ROOT}/conf/asr/librispeech_conformer_transducer.yaml} ;;
  tiny) asr_config=${asr_config:-conf/tuning/train_conformer_tiny.yaml}
        rnnt_config=${rnnt_config:-conf/tuning/train_rnnt_tiny.yaml}; avg_n=1 ;;
  *) log "error: --size must be full or tiny, got '${size}'"; exit 1 ;;
esac
declare -A vocab=([asr]=${vocab_size} [rnnt]=${rnnt_vocab_size})
tok_of() { [ "${token_type}" = char ] && echo data/token/char || echo data/token/${token_type}${vocab[$1]}; }
declare -A config=([asr]=${asr_config} [rnnt]=${rnnt_config})
declare -A method=([asr]=${asr_method} [rnnt]=${rnnt_method})
declare -A beam=([asr]=${asr_beam_size} [rnnt]=${rnnt_beam_size})
exp_of() { echo "exp/$1_$(basename "${config[$1]}" .yaml)"; }
for s in ${systems}; do
  [ -n "${config[$s]:-}" ] || { log "error: unknown system '${s}' (expected asr, rnnt)"; exit 1; }
done
log "corpus=${corpus_dir:-(not needed from stage ${stage})}, systems=${systems}, size=${size}"

if [ ${stage} -le 0 ] && [ ${stop_stage} -ge 0 ]; then
  log "Stage 0: prepare LibriSpeech (data/<part>) and combine ${train_parts} into data/train"
  parts=$(echo ${train_parts} ${valid_set} ${test_sets} | tr ' _' '\n-' | sort -u | paste -sd, -)
  stk corpus librispeech --corpus-dir "${corpus_dir}" --out data --parts "${parts}" --nj ${prep_nj}
  stk data combine data/train $(for p in ${train_parts}; do echo data/${p//-/_}; done)
  if [ -n "${speed_perturb}" ]; then
    log "Stage 0: speed perturbation ${speed_perturb} of data/train -> data/train_sp (audio under data/train_sp/wav)"
    stk data perturb-speed data/train --out data/train_sp --factors "${speed_perturb}"
  fi
fi
train_set=train; [ -n "${speed_perturb}" ] && train_set=train_sp

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
  log "Stage 1: fbank features of data/{${train_set},${valid_set}} and global CMVN (logs: exp/log/fbank_<set>.log)"
  for x in ${train_set} ${valid_set}; do
    stk data validate data/${x}
    ${train_cmd} exp/log/fbank_${x}.log stk data fbank data/${x} dump/${x}
  done
  stk data cmvn dump/${train_set} --out dump/cmvn.json
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  for s in ${systems}; do
    tok=$(tok_of ${s})
    [ -f ${tok}.model ] && [ ${tok}.model -nt data/train/text ] && continue  # shared by the systems
    log "Stage 2: ${token_type} tokenizer (${vocab[$s]}) on data/train/text -> ${tok}"
    stk tokenizer train data/train/text --out "${tok}" --vocab-size ${vocab[$s]} --model-type ${token_type}
  done
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  for s in ${systems}; do
    exp=$(exp_of ${s})
    log "Stage 3: train ${config[$s]} -> ${exp} (${nnodes} node(s) x ${nproc} process(es); resumes if interrupted)"
    stk_train ${config[$s]} ${exp} data.tokenizer=$(tok_of ${s}).model data.cmvn=dump/cmvn.json \
      data.train.paired.data_dir=dump/${train_set} data.valid.data_dir=dump/${valid_set}
  done
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  for s in ${systems}; do
    exp=$(exp_of ${s})
    log "Stage 4: average the ${avg_n} best checkpoints of ${exp} and package it"
    stk average ${exp} --n ${avg_n}
    pkg_opts=(--method ${method[$s]} --beam-size ${beam[$s]})
    [ "${s}" = asr ] && pkg_opts+=(--ctc-weight ${ctc_weight})
    stk package ${exp} --weights ${exp}/model.avg${avg_n}.safetensors --out ${exp}/package "${pkg_opts[@]}" \
      --name librispeech-${s} --force \
      --description "LibriSpeech ${s} ($(basename ${config[$s]} .yaml), $(basename $(tok_of ${s})))"
  done
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
  for s in ${systems}; do
    exp=$(exp_of ${s})
    log "Stage 5: decode ${test_sets} with ${exp} (${method[$s]}, beam ${beam[$s]}, ${nj} job(s), ${device})"
    opts=(--model ${exp}/package --method ${method[$s]} --beam-size ${beam[$s]} --device ${device})
    [ "${s}" = asr ] && opts+=(--ctc-weight ${ctc_weight})
    for x in ${test_sets}; do
      stk_decode_nj ${nj} data/${x} ${exp}/decode_${method[$s]}_${x} "${opts[@]}"
    done
  done
fi

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
  log "Stage 6: WER -> exp/RESULTS.md (copy it to RESULTS.md by hand after a real run)"
  cells=() notes="Size ${size}; no LM."
  for s in ${systems}; do
    exp=$(exp_of ${s}) row="$(basename ${exp}) ${method[$s]}"
    for x in ${test_sets}; do
      d=${exp}/decode_${method[$s]}_${x}
      stk score data/${x}/text ${d}/hyp --json ${d}/score.json >/dev/null
      cells+=("${row}|${x//_/-}|wer|${d}/score.json")
    done
    notes+=" ${s}: ${config[$s]#${STK_ROOT}/}, $(basename $(tok_of ${s})), ${method[$s]} beam ${beam[$s]}"
    [ "${s}" = asr ] && notes+=", CTC weight ${ctc_weight}"
    notes+=";"
  done
  stk env > exp/RESULTS.md
  stk table "${cells[@]}" --title "LibriSpeech WER (%)" --append --out exp/RESULTS.md --notes "${notes} models \
averaged over the ${avg_n} best validation losses. WER after lowercasing and stripping punctuation (stk score); \
per-set details in exp/*/decode_*/score.json."
  cat exp/RESULTS.md
fi
