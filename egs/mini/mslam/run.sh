#!/usr/bin/env bash
# mSLAM on the mini corpus, low-resource split: joint speech + character-text pre-training of one
# Conformer (w2v-bert = speech only, mslam-ctc = speech + text + paired TLM and CTC) on all the
# audio and text, then fine-tuning on a small labelled share (--paired-share) from scratch and from
# each variant: CTC ASR, the CTC probe (frozen encoder + CTC head), language ID; scoring with 95 %
# bootstrap intervals and paired comparisons (`stk score --compare`) -> exp/RESULTS.md.
# Stage 8 (--ablation true) adds the rows and tasks that cannot learn in the default budget: the
# mslam-tlm variant, ST X->en, zero-shot text->text translation with the ST models, intent.
#   ./run.sh                               # the default table, small corpus
#   ./run.sh --ablation true               # + stage 8, the full grid
#   ./run.sh --size tiny --train_opts "trainer.max_steps=10"   # the CI smoke run
set -euo pipefail

stage=0              # Begin configuration section
stop_stage=100
size=small           # mini corpus size: tiny | small | full
corpus_dir=          # default: ../corpus/<size> (shared with the other mini recipes)
nproc=1              # training processes per run (torchrun + DDP when > 1)
jobs=2               # independent training/decoding runs at a time (each gets OMP_NUM_THREADS/jobs threads)
publish_results=false  # true: copy exp/RESULTS.md over the committed RESULTS.md (a real default run only)
paired_share=0.2     # share of the transcribed training utterances kept as labelled (pre-training's paired stream
                     # and every fine-tuning); the rest's audio joins the speech stream, its transcripts the text stream
variants="w2v-bert mslam-ctc"      # pre-training variants, rows of the default table next to scratch
tasks="asr probe lid"              # default fine-tuning tasks (probe: CTC head on the frozen pre-trained encoder)
ablation=false                     # true: stage 8, the full grid (the rows and tasks below, too)
ablation_variants="mslam-tlm"      # stage 8's extra pre-training variants
ablation_tasks="st intent"         # stage 8's extra tasks (st: + zero-shot text->text translation)
bootstrap=1000                     # bootstrap samples of the stage 7 intervals and paired comparisons
src_langs=de,es,fr,it,ru   # ST and zero-shot source languages (-> en)
train_opts=          # extra key=value overrides for every `stk train` (e.g. trainer.max_steps=10)
beam_size=5
test_sets="synth_test real_test"
# End configuration section
help_message="Usage: $0 [--stage N] [--stop-stage N] [--size tiny|small|full] [--paired-share F] [--variants \"...\"] [--ablation true|false] [--train-opts \"k=v ...\"]"

. ./path.sh
. ./cmd.sh
. utils/log.sh
log "$0 $*"  # the command line as given, before option parsing consumes it
. utils/parse_options.sh

corpus_dir=${corpus_dir:-../corpus/${size}}
tok=data/token/char
read -r -a extra <<< "${train_opts}"
labels() { cut -d' ' -f2 "$1" | sort -u | paste -sd, -; }
. utils/lib/train.sh  # stk_train CONFIG EXP_DIR [key=value ...] (skips finished runs)
. utils/lib/bg.sh     # bg_run CMD ... / bg_wait: up to ${jobs} runs side by side
train() { stk_train "$1" "$2" data.tokenizer=${tok}.model data.cmvn=dump/cmvn.json "${@:3}" "${extra[@]}"; }

if [ ${stage} -le 0 ] && [ ${stop_stage} -ge 0 ]; then
  log "Stage 0: mini corpus (${size}); speech, text, paired (low-resource share ${paired_share}), ST, intent and test sets"
  stk corpus mini --out "${corpus_dir}" --size "${size}"
  c=${corpus_dir}
  stk data combine data/paired_all "$c/synth_train" "$c/real_train" --normalize-text
  n=$(awk -v s="${paired_share}" 'END {printf "%d", NR * s}' data/paired_all/utt2spk)
  stk data combine data/paired_train data/paired_all --subset "${n}"       # the labelled share
  stk data combine data/rest data/paired_all --exclude data/paired_train
  stk data combine data/speech_train "$c/speech_only_train" data/paired_all  # all training audio
  stk data combine data/text_train "$c/text_only" data/rest --normalize-text  # text only (no wav.scp in both)
  stk data combine data/dev "$c/synth_dev" "$c/real_dev" --normalize-text --subset 200  # validation only
  stk data combine data/st_train "$c/synth_train" "$c/real_train" --normalize-text --langs ${src_langs}
  stk data combine data/st_dev "$c/synth_dev" "$c/real_dev" --normalize-text --langs ${src_langs} --subset 150
  stk data combine data/real_train "$c/real_train" --normalize-text
  stk data combine data/real_dev "$c/real_dev" --normalize-text
  for x in ${test_sets}; do
    stk data combine data/${x} "$c/${x}" --normalize-text
    stk data combine data/st_${x} "$c/${x}" --normalize-text --langs ${src_langs}
  done
fi

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
  log "Stage 1: fbank features and global CMVN (logs: exp/log/fbank_<set>.log)"
  for x in speech_train paired_train dev st_train st_dev real_train real_dev; do
    stk data validate data/${x}
    bg_run ${train_cmd} exp/log/fbank_${x}.log stk data fbank data/${x} dump/${x}
  done
  bg_wait
  stk data cmvn dump/speech_train --out dump/cmvn.json
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  log "Stage 2: one character vocabulary for all languages (transcripts, text, translations)"
  stk tokenizer train data/paired_train/text data/text_train/text data/st_train/text.en \
    --out ${tok} --vocab-size 300 --model-type char
fi

pretrain() {  # VARIANT (w2v-bert trains on the speech stream only)
  local opts=(model.conf.variant=$1)
  [ "$1" = w2v-bert ] && opts+=(data.train.text.batch.ratio=0 data.train.paired.batch.ratio=0)
  train conf/pretrain.yaml exp/pretrain_$1 "${opts[@]}"
}

finetune() {  # ROW TASK: fine-tune TASK from scratch or from exp/pretrain_ROW (the same config for every row)
  local row=$1 task=$2 init=()
  [ "${row}" = scratch ] || init=("init=[{path: exp/pretrain_${row}/model.avg1.safetensors, src: encoder., dst: encoder.}]")
  local lid=(model.conf.label=lang "data.label_vocab={lang: [$(labels data/paired_train/utt2lang)]}"
             data.train.paired.data_dir=dump/paired_train "data.train.paired.labels={lang: utt2lang}"
             data.valid.data_dir=dump/dev "data.valid.labels={lang: utt2lang}")
  local intent=("data.label_vocab={intent: [$(labels data/real_train/utt2intent)]}")
  case ${task} in
    st)     train conf/finetune_st.yaml exp/${row}_st "${init[@]}" ;;
    asr)    train conf/finetune_asr.yaml exp/${row}_asr "${init[@]}" ;;
    probe)  train conf/probe.yaml exp/${row}_probe "${init[@]}" ;;
    intent) train conf/finetune_cls.yaml exp/${row}_intent "${init[@]}" "${intent[@]}" ;;
    lid)    train conf/finetune_cls.yaml exp/${row}_lid "${init[@]}" "${lid[@]}" ;;
    *) echo "run.sh: unknown task '${task}' (asr | probe | lid | st | intent)" >&2; return 1 ;;
  esac
}

finetune_all() {  # "ROWS" "TASKS": every (row, task), ${jobs} at a time (no probe from scratch)
  local row task
  for row in $1; do
    for task in $2; do
      [ "${row}_${task}" = scratch_probe ] && continue
      log "fine-tune ${task} from ${row}"
      bg_run finetune ${row} ${task}
    done
  done
  bg_wait
}

decode_all() {  # DIR METHOD SETS...: package DIR's model and decode each set
  stk package "$1" --weights "$1/model.avg1.safetensors" --out "$1/package" --method "$2" --beam-size ${beam_size} --ctc-weight 0
  for x in "${@:3}"; do ${decode_cmd} "$1/decode_${x}/decode.log" stk decode data/${x} --model "$1/package" --out "$1/decode_${x}/hyp"; done
}
zeroshot() {  # DIR: the speech-only ST model fed the source *text*
  for x in st_synth_test st_real_test; do
    ${decode_cmd} "$1/zeroshot_${x}/decode.log" stk decode --text data/${x}/text --model "$1/package" --out "$1/zeroshot_${x}/hyp"
  done
}

decode_rows() {  # "ROWS" "TASKS": decode every fine-tuned (row, task) (ST: attention beam; ASR/probe: CTC greedy; classify)
  local row task dir
  for row in $1; do
    for task in $2; do
      dir=exp/${row}_${task}
      [ -f "${dir}/.done" ] || continue
      case ${task} in
        st) bg_run decode_all "${dir}" attention st_synth_test st_real_test ;;
        asr|probe) bg_run decode_all "${dir}" ctc_greedy ${test_sets} ;;
        intent) bg_run decode_all "${dir}" classify real_test ;;
        lid) bg_run decode_all "${dir}" classify ${test_sets} ;;
      esac
    done
  done
  bg_wait
}

score_rows() {  # "ROWS" "TASKS": score.json (with ${bootstrap}-sample 95 % intervals) for every hyp of those runs
  local row task hyp d x ref metric
  for row in $1; do
    for task in $2; do
      for hyp in exp/${row}_${task}/decode_*/hyp exp/${row}_${task}/zeroshot_*/hyp; do
        [ -f "${hyp}" ] || continue
        d=$(dirname "${hyp}") x=${d##*/}; x=${x#decode_}; x=${x#zeroshot_}
        case ${task} in
          st) ref=data/${x}/text.en metric=bleu ;;
          intent) ref=data/${x}/utt2intent metric=acc ;;
          lid) ref=data/${x}/utt2lang metric=acc ;;
          *) ref=data/${x}/text metric=wer ;;
        esac
        stk score "${ref}" "${hyp}" --metric ${metric} --utt2lang data/${x}/utt2lang --bootstrap ${bootstrap} \
          --json "${d}/score.json" > "${d}/score.txt"
      done
    done
  done
}

compare() {  # A B TASK SET: A - B on the same utterances -> exp/compare/TASK_A_vs_B_SET.json; prints the table spec
  local ref=data/$4/text metric=wer
  [ "$3" = lid ] && ref=data/$4/utt2lang metric=acc
  mkdir -p exp/compare
  stk score "${ref}" --metric ${metric} --compare exp/$1_$3/decode_$4/hyp exp/$2_$3/decode_$4/hyp \
    --bootstrap ${bootstrap} --json exp/compare/$3_$1_vs_$2_$4.json > /dev/null
  echo "$1|$2|$3|$4|exp/compare/$3_$1_vs_$2_$4.json"
}

rows_note() {  # the notes under the default table
  echo "Low-resource split: paired share ${paired_share} ($(wc -l < data/paired_train/utt2spk 2>/dev/null || echo ?) transcribed utterances) is the only labelled data: pre-training's paired stream and every fine-tuning (ASR, CTC probe, LID) use it; pre-training's speech stream has all training audio, its text stream the Wesnoth text + the other transcripts. Rows: fine-tuned from scratch or from each pre-training (conf/pretrain.yaml). ASR: CTC greedy on characters, CER after lowercasing/punctuation removal; CTC probe: frozen pre-trained encoder + CTC head (conf/probe.yaml); LID: 6 languages. 95 % intervals: ${bootstrap} bootstrap samples over utterances. ${train_opts:+Overrides: ${train_opts}.}"
}

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  log "Stage 3: pre-training ${variants}, ${jobs} at a time"
  for v in ${variants}; do bg_run pretrain ${v}; done
  bg_wait
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  log "Stage 4: fine-tune ${tasks} from scratch and from ${variants} on the labelled share"
  finetune_all "scratch ${variants}" "${tasks}"
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
  log "Stage 5: package and decode (ASR/probe: CTC greedy; LID: classify)"
  decode_rows "scratch ${variants}" "${tasks}"
fi

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
  log "Stage 6: zero-shot text->text translation with the speech-only ST models (when ${tasks} has st; stage 8 otherwise)"
  for row in scratch ${variants}; do if [ -d exp/${row}_st/package ]; then bg_run zeroshot exp/${row}_st; fi; done
  bg_wait
fi

if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 7 ]; then
  log "Stage 7: score with intervals, paired comparisons (${bootstrap} samples) -> exp/RESULTS.md (RESULTS.md with --publish-results true)"
  score_rows "scratch ${variants}" "${tasks}"
  have=" scratch ${variants} " specs=()
  # the paper's claims: pre-training beats scratch (ASR, LID); mSLAM-CTC's probe beats w2v-BERT's
  for claim in "asr mslam-ctc scratch" "asr w2v-bert scratch" "asr mslam-ctc w2v-bert" "probe mslam-ctc w2v-bert" \
               "lid mslam-ctc scratch" "lid w2v-bert scratch" "lid mslam-ctc w2v-bert"; do
    set -- ${claim}
    [[ " ${tasks} " == *" $1 "* && ${have} == *" $2 "* && ${have} == *" $3 "* ]] || continue
    for x in ${test_sets}; do
      [ -f exp/$2_$1/decode_${x}/hyp ] && [ -f exp/$3_$1/decode_${x}/hyp ] || continue
      specs+=("$(compare $2 $3 $1 ${x})")
    done
  done
  cols=()
  for x in ${test_sets}; do cols+=("asr|ASR CER ${x}|exp/{row}_asr/decode_${x}/score.json"); done
  for x in ${test_sets}; do cols+=("probe|CTC probe CER ${x}|exp/{row}_probe/decode_${x}/score.json"); done
  for x in ${test_sets}; do cols+=("lid|LID acc ${x}|exp/{row}_lid/decode_${x}/score.json"); done
  stk env --out exp/RESULTS.md
  python3 local/results.py --title "mini mSLAM (${size} corpus): low-resource fine-tuning" --notes "$(rows_note)" \
    --rows "scratch ${variants}" --tasks "${tasks}" "${cols[@]}" --compare "${specs[@]}" >> exp/RESULTS.md
  if [ "${publish_results}" = true ]; then cp exp/RESULTS.md RESULTS.md; log "published exp/RESULTS.md -> RESULTS.md"; fi
  cat exp/RESULTS.md
fi

if [ ${stage} -le 8 ] && [ ${stop_stage} -ge 8 ] && [ "${ablation}" = true ]; then
  all_variants="${variants} ${ablation_variants}" all_tasks="${tasks} ${ablation_tasks}"
  log "Stage 8 (--ablation true): the full grid, rows scratch ${all_variants} x tasks ${all_tasks} (finished runs are kept) -> exp/RESULTS.md"
  for v in ${ablation_variants}; do bg_run pretrain ${v}; done
  bg_wait
  finetune_all "scratch ${all_variants}" "${all_tasks}"
  decode_rows "scratch ${variants}" "${ablation_tasks}"  # the default tasks of these rows were decoded by stage 5
  decode_rows "${ablation_variants}" "${all_tasks}"
  for row in scratch ${all_variants}; do if [ -d exp/${row}_st/package ]; then bg_run zeroshot exp/${row}_st; fi; done
  bg_wait
  score_rows "scratch ${variants}" "${ablation_tasks}"
  score_rows "${ablation_variants}" "${all_tasks}"
  rows="scratch ${all_variants}" zs=()
  for l in ${src_langs//,/ }; do zs+=("${l}|by_lang.${l}.bleu|exp/{row}_st/zeroshot_st_synth_test/score.json"); done
  stk table --rows "${rows}" --out exp/RESULTS.md --append \
    "ST BLEU real|bleu|exp/{row}_st/decode_st_real_test/score.json" "ST BLEU synth|bleu|exp/{row}_st/decode_st_synth_test/score.json" \
    "ASR CER synth|cer|exp/{row}_asr/decode_synth_test/score.json" "ASR CER real|cer|exp/{row}_asr/decode_real_test/score.json" \
    "intent acc real|acc|exp/{row}_intent/decode_real_test/score.json" "LID acc synth|acc|exp/{row}_lid/decode_synth_test/score.json" \
    "zero-shot text BLEU synth|bleu|exp/{row}_st/zeroshot_st_synth_test/score.json" "CTC probe CER synth|cer|exp/{row}_probe/decode_synth_test/score.json" \
    --title "Ablation (--ablation true): the full grid" --notes "$(rows_note) ST X->en (${src_langs}, all ST pairs): attention beam ${beam_size}, BLEU on cased English; intent: asterisk prompt class, real speech (real_train). Zero-shot: the speech-only ST model fed the source *text* (characters)."
  stk table --rows "${rows}" "${zs[@]}" --out exp/RESULTS.md --append --title "Ablation: zero-shot text->text BLEU per source language (synth test)"
  if [ "${publish_results}" = true ]; then cp exp/RESULTS.md RESULTS.md; log "published exp/RESULTS.md -> RESULTS.md"; fi
fi
