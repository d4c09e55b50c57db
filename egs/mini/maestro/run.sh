#!/usr/bin/env bash
# MAESTRO on the mini corpus, low-resource split: a share of the paired data stays paired, the
# rest is used as unpaired speech and unpaired text (+ Wesnoth text). CTC alignment model ->
# durations -> pre-training (speech-only, paired-only MAESTRO, MAESTRO with unpaired text) -> RNN-T
# ASR fine-tuning of every row (and scratch) on the paired share -> decoding -> scoring with paired
# bootstrap comparisons -> RESULTS.md -> `stk package --name maestro` (then `stk decode --model maestro`).
#   ./run.sh                                                    # everything (small corpus)
#   ./run.sh --ablation true                                    # + stage 9: ST fine-tuning of every row
#   ./run.sh --size tiny --train_opts "trainer.max_steps=10"    # the CI smoke run
set -euo pipefail

stage=0              # Begin configuration section
stop_stage=100
size=small           # mini corpus size: tiny | small | full
corpus_dir=          # default: ../corpus/<size> (shared with the other mini recipes)
nproc=1              # training processes per run (torchrun + DDP when > 1)
jobs=2               # independent training/decoding runs at a time (each gets OMP_NUM_THREADS/jobs threads)
publish_results=false  # true: copy exp/RESULTS.md over the committed RESULTS.md (a real default run only)
paired_share=0.2     # share of the paired training utterances kept as paired
token_type=char      # stage 2 tokenizer: char | bpe (with BPE 200 the RNN-T still emits only blanks after 600 updates)
vocab_size=200       # BPE vocabulary size (token_type=bpe only)
variants="speech-only paired-only maestro"  # pre-training variants (each a table row next to scratch)
ablation=false       # true: stage 9, ST (X->en) fine-tuning, decoding and scoring of every row (BLEU <= 0.1 at this scale)
bootstrap=1000       # paired-bootstrap samples of the stage 7 comparisons
src_langs=de,es,fr,it,ru
train_opts=          # extra key=value overrides for every `stk train`
beam_size=4
test_sets="synth_test real_test"
model_name=maestro   # name in the model store ($STK_MODEL_STORE, default ~/.cache/stk/models)
# End configuration section
help_message="Usage: $0 [--stage N] [--stop-stage N] [--size tiny|small|full] [--paired-share F] [--ablation true|false] [--train-opts \"k=v ...\"]"

. ./path.sh
. ./cmd.sh
. utils/log.sh
log "$0 $*"  # the command line as given, before option parsing consumes it
. utils/parse_options.sh

corpus_dir=${corpus_dir:-../corpus/${size}}
tok=data/token/${token_type}
read -r -a extra <<< "${train_opts}"
. utils/lib/train.sh  # stk_train CONFIG EXP_DIR [key=value ...] (skips finished runs)
. utils/lib/bg.sh     # bg_run CMD ... / bg_wait: up to ${jobs} runs side by side
train() { stk_train "$1" "$2" data.tokenizer=${tok}.model data.cmvn=dump/cmvn.json "${@:3}" "${extra[@]}"; }

if [ ${stage} -le 0 ] && [ ${stop_stage} -ge 0 ]; then
  log "Stage 0: mini corpus (${size}); low-resource split: ${paired_share} of the paired data stays paired"
  stk corpus mini --out "${corpus_dir}" --size "${size}"
  c=${corpus_dir}
  stk data combine data/paired_all "$c/synth_train" "$c/real_train" --normalize-text
  n=$(awk -v s="${paired_share}" 'END {printf "%d", NR * s}' data/paired_all/utt2spk)
  stk data combine data/paired_low data/paired_all --subset "${n}"
  stk data combine data/rest data/paired_all --exclude data/paired_low
  stk data combine data/speech_unpaired "$c/speech_only_train" data/rest     # audio only (no text file in both)
  stk data combine data/text_unpaired "$c/text_only" data/rest --normalize-text  # text only (no wav.scp in both)
  stk data combine data/dev "$c/synth_dev" "$c/real_dev" --normalize-text --subset 200
  stk data combine data/st_train "$c/synth_train" "$c/real_train" --normalize-text --langs ${src_langs}
  stk data combine data/st_dev "$c/synth_dev" "$c/real_dev" --normalize-text --langs ${src_langs} --subset 150
  for x in ${test_sets}; do
    stk data combine data/${x} "$c/${x}" --normalize-text
    stk data combine data/st_${x} "$c/${x}" --normalize-text --langs ${src_langs}
  done
fi

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
  log "Stage 1: fbank features and global CMVN (logs: exp/log/fbank_<set>.log)"
  for x in speech_unpaired paired_low dev st_train st_dev; do
    bg_run ${train_cmd} exp/log/fbank_${x}.log stk data fbank data/${x} dump/${x}
  done
  bg_wait
  stk data cmvn dump/speech_unpaired --out dump/cmvn.json
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  log "Stage 2: ${token_type} tokenizer on the paired transcripts and the unpaired text"
  stk tokenizer train data/paired_low/text data/text_unpaired/text --out ${tok} --vocab-size ${vocab_size} --model-type ${token_type}
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  log "Stage 3: CTC alignment model on the paired data -> token durations"
  train conf/align.yaml exp/align
  stk package exp/align --weights exp/align/model.avg1.safetensors --out exp/align/package --method ctc_greedy
  for x in paired_low dev; do stk align dump/${x} --model exp/align/package; done
fi

pretrain() {  # VARIANT: speech-only (contrastive on unpaired speech only), paired-only (MAESTRO without the
  # unpaired-text stream: conf/pretrain_paired_only.yaml) or maestro (all three streams)
  local conf=conf/pretrain.yaml opts=()
  case $1 in
    speech-only) opts=(model.conf.variant=speech-only data.train.paired.batch.ratio=0 data.train.text.batch.ratio=0 "data.valid.int_seqs={}") ;;
    paired-only) conf=conf/pretrain_paired_only.yaml ;;
    maestro) ;;
    *) echo "run.sh: unknown variant '$1' (speech-only | paired-only | maestro)" >&2; return 1 ;;
  esac
  train ${conf} exp/pretrain_$1 "${opts[@]}"
}

init_of() {  # ROW WHAT: the `init=` override for ROW's fine-tuning (WHAT: asr = encoder + RNN-T head of the
  # MAESTRO variants, which pre-train one; st = encoder only); nothing for scratch
  local w=exp/pretrain_$1/model.avg1.safetensors
  [ "$1" = scratch ] && return 0
  if [ "$2" = asr ] && [ "$1" != speech-only ]; then
    echo "init=[{path: ${w}, src: encoder., dst: encoder.}, {path: ${w}, src: rnnt., dst: rnnt.}]"
  else
    echo "init=[{path: ${w}, src: encoder., dst: encoder.}]"
  fi
}

finetune_asr() {  # ROW: RNN-T ASR on the paired share, from scratch or from exp/pretrain_ROW (same config for every row)
  local init=()
  [ "$1" = scratch ] || init=("$(init_of $1 asr)")
  train conf/finetune_asr.yaml exp/$1_asr "${init[@]}"
}

finetune_st() {  # ROW: ST (X->en) on the ST pairs (stage 9, --ablation true)
  local init=()
  [ "$1" = scratch ] || init=("$(init_of $1 st)")
  train conf/finetune_st.yaml exp/$1_st "${init[@]}"
}

pretrain_then_finetune() {  # VARIANT: pre-training, then (when stage 5 is to run) its RNN-T fine-tuning in the same slot
  pretrain $1
  [ ${stop_stage} -lt 5 ] || finetune_asr $1
}

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  log "Stage 4: pre-training ${variants}, ${jobs} at a time; each variant's stage 5 fine-tuning follows it in its slot, the from-scratch one fills the slot left free"
  for v in $(printf '%s\n' ${variants} | sort); do  # alphabetical: maestro, the longest, first
    bg_run pretrain_then_finetune ${v}
  done
  [ ${stop_stage} -lt 5 ] || bg_run finetune_asr scratch
  bg_wait
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
  log "Stage 5: fine-tune RNN-T ASR of every row (skipped where stage 4 trained it)"
  for row in scratch ${variants}; do bg_run finetune_asr ${row}; done
  bg_wait
fi

decode_all() {  # DIR: package DIR's model, decode the test sets (ASR: RNN-T greedy + beam; ST: attention beam)
  local x m=attention
  case $1 in *_asr) m=rnnt_beam ;; esac
  stk package "$1" --weights "$1/model.avg1.safetensors" --out "$1/package" --method ${m} --beam-size ${beam_size} --ctc-weight 0
  for x in ${test_sets}; do
    case $1 in
      *_asr) for m in rnnt_greedy rnnt_beam; do ${decode_cmd} "$1/decode_${m}_${x}/decode.log" \
               stk decode data/${x} --model "$1/package" --method ${m} --out "$1/decode_${m}_${x}/hyp"; done ;;
      *) ${decode_cmd} "$1/decode_st_${x}/decode.log" stk decode data/st_${x} --model "$1/package" --out "$1/decode_st_${x}/hyp" ;;
    esac
  done
}

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
  log "Stage 6: package and decode the RNN-T ASR rows (greedy and beam ${beam_size})"
  for row in scratch ${variants}; do bg_run decode_all exp/${row}_asr; done
  bg_wait
fi

score_dir() {  # DIR: score every decode_* of DIR -> decode_*/score.{json,txt}
  local hyp d x
  for hyp in "$1"/decode_*/hyp; do
    d=$(dirname "${hyp}") x=${hyp#*decode_}; x=${x%/hyp}
    case ${x} in
      st_*) stk score data/${x}/text.en "${hyp}" --metric bleu --utt2lang data/${x}/utt2lang --json "${d}/score.json" ;;
      *) x=${x#rnnt_greedy_}; x=${x#rnnt_beam_}
         stk score data/${x}/text "${hyp}" --utt2lang data/${x}/utt2lang --json "${d}/score.json" ;;
    esac > "${d}/score.txt"
  done
}

rows_note="Paired share ${paired_share} ($(wc -l < data/paired_low/utt2spk 2>/dev/null || echo ?) utterances); the rest of the paired data is used as unpaired speech and unpaired text. Rows: fine-tuned from scratch, from speech-only (contrastive on unpaired speech) pre-training, from paired-only MAESTRO (contrastive + the paired-data objectives, no unpaired text) and from MAESTRO (+ aligned MLM on unpaired text); the MAESTRO variants also initialise the RNN-T head. ${train_opts:+Overrides: ${train_opts}.}"

if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 7 ]; then
  log "Stage 7: score, paired-bootstrap comparisons (${bootstrap} samples) -> exp/RESULTS.md (RESULTS.md with --publish-results true)"
  for row in scratch ${variants}; do score_dir exp/${row}_asr; done
  cells=()
  for row in scratch ${variants}; do
    for x in ${test_sets}; do
      cells+=("${row}|${x} CER greedy|cer|exp/${row}_asr/decode_rnnt_greedy_${x}/score.json"
              "${row}|${x} CER beam|cer|exp/${row}_asr/decode_rnnt_beam_${x}/score.json"
              "${row}|${x} WER beam|wer|exp/${row}_asr/decode_rnnt_beam_${x}/score.json")
    done
  done
  # A - B on the same utterances (beam), each pair whose rows are both in this run; the claim is "A better"
  pairs=() have=" scratch ${variants} "; mkdir -p exp/compare
  for pair in "maestro paired-only" "maestro speech-only" "paired-only speech-only" \
              "maestro scratch" "paired-only scratch" "speech-only scratch"; do
    set -- ${pair}
    [[ ${have} == *" $1 "* && ${have} == *" $2 "* ]] || continue
    for x in ${test_sets}; do
      stk score data/${x}/text --compare exp/$1_asr/decode_rnnt_beam_${x}/hyp exp/$2_asr/decode_rnnt_beam_${x}/hyp \
        --bootstrap ${bootstrap} --json exp/compare/$1_vs_$2_${x}.json > /dev/null
      pairs+=("$1|$2|${x}|exp/compare/$1_vs_$2_${x}.json")
    done
  done
  stk env --out exp/RESULTS.md
  stk table "${cells[@]}" --out exp/RESULTS.md --append --title "mini MAESTRO (${size} corpus): low-resource RNN-T ASR" \
    --notes "${rows_note} Every row: the same RNN-T ASR fine-tuning (conf/finetune_asr.yaml) on the paired share only."
  [ ${#pairs[@]} -eq 0 ] || python3 local/compare_table.py "${pairs[@]}" >> exp/RESULTS.md
  if [ "${publish_results}" = true ]; then cp exp/RESULTS.md RESULTS.md; log "published exp/RESULTS.md -> RESULTS.md"; fi
  cat exp/RESULTS.md
fi

if [ ${stage} -le 8 ] && [ ${stop_stage} -ge 8 ]; then
  log "Stage 8: put the MAESTRO ASR model in the model store as '${model_name}'"
  stk package exp/maestro_asr --weights exp/maestro_asr/model.avg1.safetensors --out exp/maestro_asr/package \
    --method rnnt_beam --beam-size ${beam_size} --name ${model_name} --force --description "mini corpus MAESTRO RNN-T ASR"
  log "Try: stk decode --model ${model_name} data/real_test/wav.scp"
fi

if [ ${stage} -le 9 ] && [ ${stop_stage} -ge 9 ] && [ "${ablation}" = true ]; then
  log "Stage 9 (--ablation true): ST (X->en) fine-tuning, decoding and scoring of every row -> exp/RESULTS.md"
  for row in scratch ${variants}; do bg_run finetune_st ${row}; done
  bg_wait
  for row in scratch ${variants}; do bg_run decode_all exp/${row}_st; done
  bg_wait
  cells=()
  for row in scratch ${variants}; do
    score_dir exp/${row}_st
    for x in ${test_sets}; do
      cells+=("${row}|ST BLEU ${x}|bleu|exp/${row}_st/decode_st_${x}/score.json" "${row}|ST chrF ${x}|chrf|exp/${row}_st/decode_st_${x}/score.json")
    done
  done
  sed -i '/^## Ablation: ST/,$d' exp/RESULTS.md  # a re-run replaces its section
  stk table "${cells[@]}" --out exp/RESULTS.md --append --title "Ablation: ST (X->en, de es fr it ru) fine-tuned from each row" \
    --notes "${rows_note} ST: conf/finetune_st.yaml on the ST pairs (encoder initialised from the pre-training; Transformer decoder, CTC on the source transcript)."
  if [ "${publish_results}" = true ]; then cp exp/RESULTS.md RESULTS.md; log "published exp/RESULTS.md -> RESULTS.md"; fi
fi
