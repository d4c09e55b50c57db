#!/usr/bin/env bash
# MAESTRO on the mini corpus, low-resource split: a share of the paired data stays paired, the
# rest is used as unpaired speech and unpaired text (+ Wesnoth text). CTC alignment model ->
# durations -> pre-training (speech-only baseline vs MAESTRO) -> RNN-T ASR and ST fine-tuning ->
# decoding -> scoring -> RESULTS.md -> `stk package --name maestro` (then `stk decode --model maestro`).
#   ./run.sh                                                    # everything (small corpus)
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
variants="speech-only maestro"
src_langs=de,es,fr,it,ru
train_opts=          # extra key=value overrides for every `stk train`
beam_size=4
test_sets="synth_test real_test"
model_name=maestro   # name in the model store ($STK_MODEL_STORE, default ~/.cache/stk/models)
# End configuration section
help_message="Usage: $0 [--stage N] [--stop-stage N] [--size tiny|small|full] [--paired-share F] [--train-opts \"k=v ...\"]"

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

finetune() {  # ROW: RNN-T ASR and ST fine-tuning from scratch or from exp/pretrain_ROW (ASR first: the longer runs)
  local w=exp/pretrain_$1/model.avg1.safetensors st_init=() asr_init=()
  [ "$1" != scratch ] && st_init=("init=[{path: ${w}, src: encoder., dst: encoder.}]") asr_init=("${st_init[@]}")
  [ "$1" = maestro ] && asr_init=("init=[{path: ${w}, src: encoder., dst: encoder.}, {path: ${w}, src: rnnt., dst: rnnt.}]")
  log "fine-tune RNN-T ASR and ST from $1"
  bg_run train conf/finetune_asr.yaml exp/$1_asr "${asr_init[@]}"
  bg_run train conf/finetune_st.yaml exp/$1_st "${st_init[@]}"
}

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  log "Stage 4: pre-training ${variants}; the from-scratch fine-tuning runs (stage 5's first row) fill the free slots"
  for v in $(printf '%s\n' ${variants} | sort); do  # alphabetical: maestro, the longest, first
    opts=(model.conf.variant=${v})
    [ "${v}" = speech-only ] && opts+=(data.train.paired.batch.ratio=0 data.train.text.batch.ratio=0 "data.valid.int_seqs={}")
    bg_run train conf/pretrain.yaml exp/pretrain_${v} "${opts[@]}"
  done
  finetune scratch
  bg_wait
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
  log "Stage 5: fine-tune RNN-T ASR and ST (from scratch: skipped when stage 4 trained them)"
  for row in scratch ${variants}; do finetune ${row}; done
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
  log "Stage 6: package and decode (RNN-T greedy and beam ${beam_size}; ST attention beam)"
  for dir in exp/*_asr exp/*_st; do
    [ -f "${dir}/.done" ] || continue
    bg_run decode_all "${dir}"
  done
  bg_wait
fi

if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 7 ]; then
  log "Stage 7: score -> exp/RESULTS.md (RESULTS.md with --publish-results true)"
  for hyp in exp/*/decode_*/hyp; do
    d=$(dirname "${hyp}") x=${hyp#*decode_}; x=${x%/hyp}
    case ${x} in
      st_*) stk score data/${x}/text.en "${hyp}" --metric bleu --utt2lang data/${x}/utt2lang --json "${d}/score.json" ;;
      *) x=${x#rnnt_greedy_}; x=${x#rnnt_beam_}
         stk score data/${x}/text "${hyp}" --utt2lang data/${x}/utt2lang --json "${d}/score.json" ;;
    esac > "${d}/score.txt"
  done
  cells=()
  for row in scratch ${variants}; do
    for x in ${test_sets}; do
      cells+=("${row}|${x} CER greedy|cer|exp/${row}_asr/decode_rnnt_greedy_${x}/score.json"
              "${row}|${x} CER beam|cer|exp/${row}_asr/decode_rnnt_beam_${x}/score.json"
              "${row}|${x} WER beam|wer|exp/${row}_asr/decode_rnnt_beam_${x}/score.json")
    done
    cells+=("${row}|ST BLEU synth|bleu|exp/${row}_st/decode_st_synth_test/score.json"
            "${row}|ST BLEU real|bleu|exp/${row}_st/decode_st_real_test/score.json")
  done
  stk env --out exp/RESULTS.md
  stk table "${cells[@]}" --out exp/RESULTS.md --append --title "mini MAESTRO (${size} corpus): low-resource ablation" \
    --notes "Paired share ${paired_share} ($(wc -l < data/paired_low/utt2spk) utterances); the rest of the paired data is used as unpaired speech and unpaired text. Rows: RNN-T ASR / ST fine-tuned from scratch, from speech-only (contrastive) pre-training, from MAESTRO pre-training. Fine-tuning uses only the low-resource paired data (ASR) or the ST pairs. ${train_opts:+Overrides: ${train_opts}.}"
  if [ "${publish_results}" = true ]; then cp exp/RESULTS.md RESULTS.md; log "published exp/RESULTS.md -> RESULTS.md"; fi
  cat exp/RESULTS.md
fi

if [ ${stage} -le 8 ] && [ ${stop_stage} -ge 8 ]; then
  log "Stage 8: put the MAESTRO ASR model in the model store as '${model_name}'"
  stk package exp/maestro_asr --weights exp/maestro_asr/model.avg1.safetensors --out exp/maestro_asr/package \
    --method rnnt_beam --beam-size ${beam_size} --name ${model_name} --force --description "mini corpus MAESTRO RNN-T ASR"
  log "Try: stk decode --model ${model_name} data/real_test/wav.scp"
fi
