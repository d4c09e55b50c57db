#!/usr/bin/env bash
# mSLAM on the mini corpus: joint speech + character-text pre-training of one Conformer
# (variants w2v-bert, mslam-tlm, mslam-ctc), fine-tuning (ST X->en, CTC ASR, intent, language ID)
# from each variant and from scratch, zero-shot text->text translation, a CTC probe, RESULTS.md.
#   ./run.sh                               # everything, default size (small)
#   ./run.sh --size tiny --train_opts "trainer.max_steps=10"   # the CI smoke run
set -euo pipefail

stage=0              # Begin configuration section
stop_stage=100
size=small           # mini corpus size: tiny | small | full
corpus_dir=          # default: ../corpus/<size> (shared with the other mini recipes)
nproc=1              # training processes per run (torchrun + DDP when > 1)
jobs=2               # independent training/decoding runs at a time (each gets OMP_NUM_THREADS/jobs threads)
publish_results=false  # true: copy exp/RESULTS.md over the committed RESULTS.md (a real default run only)
variants="w2v-bert mslam-tlm mslam-ctc"
tasks="st asr intent lid probe"   # probe: CTC head on the frozen pre-trained encoder
src_langs=de,es,fr,it,ru   # ST and zero-shot source languages (-> en)
train_opts=          # extra key=value overrides for every `stk train` (e.g. trainer.max_steps=10)
beam_size=5
test_sets="synth_test real_test"
# End configuration section
help_message="Usage: $0 [--stage N] [--stop-stage N] [--size tiny|small|full] [--variants \"...\"] [--train-opts \"k=v ...\"]"

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
  log "Stage 0: mini corpus (${size}); speech, text, paired, ST, intent and test sets"
  stk corpus mini --out "${corpus_dir}" --size "${size}"
  c=${corpus_dir}
  stk data combine data/speech_train "$c/speech_only_train" "$c/synth_train" "$c/real_train"
  stk data combine data/text_train "$c/text_only" --normalize-text
  stk data combine data/paired_train "$c/synth_train" "$c/real_train" --normalize-text
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

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  for v in ${variants}; do
    log "Stage 3: pre-training ${v}"
    opts=(model.conf.variant=${v})
    [ "${v}" = w2v-bert ] && opts+=(data.train.text.batch.ratio=0 data.train.paired.batch.ratio=0)
    bg_run train conf/pretrain.yaml exp/pretrain_${v} "${opts[@]}"
  done
  bg_wait
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  lid=(model.conf.label=lang "data.label_vocab={lang: [$(labels data/paired_train/utt2lang)]}"
       data.train.paired.data_dir=dump/paired_train "data.train.paired.labels={lang: utt2lang}"
       data.valid.data_dir=dump/dev "data.valid.labels={lang: utt2lang}")
  intent=("data.label_vocab={intent: [$(labels data/real_train/utt2intent)]}")
  for row in scratch ${variants}; do
    init=()
    [ "${row}" != scratch ] && init=("init=[{path: exp/pretrain_${row}/model.avg1.safetensors, src: encoder., dst: encoder.}]")
    for task in ${tasks}; do
      [ "${row}_${task}" = scratch_probe ] && continue
      log "Stage 4: fine-tune ${task} from ${row}"
      case ${task} in
        st)     bg_run train conf/finetune_st.yaml exp/${row}_st "${init[@]}" ;;
        asr)    bg_run train conf/finetune_asr.yaml exp/${row}_asr "${init[@]}" ;;
        intent) bg_run train conf/finetune_cls.yaml exp/${row}_intent "${init[@]}" "${intent[@]}" ;;
        lid)    bg_run train conf/finetune_cls.yaml exp/${row}_lid "${init[@]}" "${lid[@]}" ;;
        probe)  bg_run train conf/finetune_asr.yaml exp/${row}_probe "${init[@]}" "freeze=[encoder.]" ;;
      esac
    done
  done
  bg_wait
fi

decode_all() {  # DIR METHOD SETS...: package DIR's model and decode each set (stage 5)
  stk package "$1" --weights "$1/model.avg1.safetensors" --out "$1/package" --method "$2" --beam-size ${beam_size} --ctc-weight 0
  for x in "${@:3}"; do ${decode_cmd} "$1/decode_${x}/decode.log" stk decode data/${x} --model "$1/package" --out "$1/decode_${x}/hyp"; done
}
zeroshot() {  # DIR: the speech-only ST model fed the source *text* (stage 6)
  for x in st_synth_test st_real_test; do
    ${decode_cmd} "$1/zeroshot_${x}/decode.log" stk decode --text data/${x}/text --model "$1/package" --out "$1/zeroshot_${x}/hyp"
  done
}

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
  log "Stage 5: package and decode (ST: attention beam ${beam_size}; ASR/probe: CTC greedy; classify)"
  for dir in exp/*_st exp/*_asr exp/*_probe exp/*_intent exp/*_lid; do
    [ -f "${dir}/.done" ] || continue
    case ${dir} in
      *_st) bg_run decode_all "${dir}" attention st_synth_test st_real_test ;;
      *_asr|*_probe) bg_run decode_all "${dir}" ctc_greedy ${test_sets} ;;
      *_intent) bg_run decode_all "${dir}" classify real_test ;;
      *_lid) bg_run decode_all "${dir}" classify ${test_sets} ;;
    esac
  done
  bg_wait
fi

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
  log "Stage 6: zero-shot text->text translation with the speech-only ST models (source text in)"
  for dir in exp/*_st; do bg_run zeroshot "${dir}"; done
  bg_wait
fi

if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 7 ]; then
  log "Stage 7: score (BLEU/chrF, CER/WER, accuracy) -> exp/RESULTS.md (RESULTS.md with --publish-results true)"
  for hyp in exp/*/decode_*/hyp exp/*/zeroshot_*/hyp; do
    d=$(dirname "${hyp}") x=${d##*/}; x=${x#decode_}; x=${x#zeroshot_}
    case ${d} in
      *_st/*) ref=data/${x}/text.en metric=bleu ;;
      *_intent/*) ref=data/${x}/utt2intent metric=acc ;;
      *_lid/*) ref=data/${x}/utt2lang metric=acc ;;
      *) ref=data/${x}/text metric=wer ;;
    esac
    stk score "${ref}" "${hyp}" --metric ${metric} --utt2lang data/${x}/utt2lang --json "${d}/score.json" > "${d}/score.txt"
  done
  rows="scratch ${variants}" zs=()
  for l in ${src_langs//,/ }; do zs+=("${l}|by_lang.${l}.bleu|exp/{row}_st/zeroshot_st_synth_test/score.json"); done
  stk env --out exp/RESULTS.md
  stk table --rows "${rows}" --out exp/RESULTS.md --append \
    "ST BLEU real|bleu|exp/{row}_st/decode_st_real_test/score.json" "ST BLEU synth|bleu|exp/{row}_st/decode_st_synth_test/score.json" \
    "ASR CER synth|cer|exp/{row}_asr/decode_synth_test/score.json" "ASR CER real|cer|exp/{row}_asr/decode_real_test/score.json" \
    "intent acc real|acc|exp/{row}_intent/decode_real_test/score.json" "LID acc synth|acc|exp/{row}_lid/decode_synth_test/score.json" \
    "zero-shot text BLEU synth|bleu|exp/{row}_st/zeroshot_st_synth_test/score.json" "CTC probe CER synth|cer|exp/{row}_probe/decode_synth_test/score.json" \
    --title "mini mSLAM (${size} corpus)" --notes "Rows: fine-tuning from scratch or from each pre-training variant (conf/pretrain.yaml, ${train_opts:-default steps}). ST X->en (${src_langs}): attention beam ${beam_size}, BLEU on cased English; ASR: CTC greedy on characters, CER after lowercasing/punctuation removal; intent: asterisk prompt class, real speech; LID: 6 languages, espeak voice unseen in training. Zero-shot: the speech-only ST model fed the source *text* (characters). CTC probe: frozen pre-trained encoder + CTC head."
  stk table --rows "${rows}" "${zs[@]}" --out exp/RESULTS.md --append --title "Zero-shot text->text BLEU per source language (synth test)"
  if [ "${publish_results}" = true ]; then cp exp/RESULTS.md RESULTS.md; log "published exp/RESULTS.md -> RESULTS.md"; fi
  cat exp/RESULTS.md
fi
