# shellcheck shell=bash
# stk_decode_nj NJ DATA_DIR OUT_DIR [stk decode options ...] -- decode a data dir in NJ parallel
# jobs through ${decode_cmd} (cmd.sh): split, decode each part, merge.
#
#   . utils/lib/decode.sh
#   stk_decode_nj 4 data/test exp/asr/decode_test --model exp/asr/package --method ctc_beam --device cpu
#
# Writes OUT_DIR/hyp (`utt-id text`, sorted like `stk decode --out`) and the logs
# OUT_DIR/log/decode[.JOB].log. NJ=1 decodes DATA_DIR in one job. NJ>1 splits it with
# `stk data split` into DATA_DIR/splitNJ/{1..NJ} (contiguous parts; segments stay with their
# recording's wav.scp line), runs `${decode_cmd} JOB=1:NJ ...` with OMP_NUM_THREADS/NJ threads
# per job (at least 1) on the local backend, and concatenates the parts. Fails if a job fails or
# an utterance is missing from the merged hypotheses.
stk_decode_nj() {
  local nj=$1 data=$2 dir=$3
  shift 3
  local cmd=${decode_cmd:-utils/run.sh}
  mkdir -p "${dir}/log"
  if [ "${nj}" -le 1 ]; then
    ${cmd} "${dir}/log/decode.log" stk decode "${data}" --out "${dir}/hyp" "$@"
    return
  fi
  stk data split "${data}" "${nj}" >/dev/null
  local t=$(( ${OMP_NUM_THREADS:-1} / nj ))
  [ "${t}" -ge 1 ] || t=1
  rm -f "${dir}"/hyp.*
  ( export OMP_NUM_THREADS=${t} STK_NUM_THREADS=${t}
    ${cmd} JOB=1:"${nj}" "${dir}/log/decode.JOB.log" \
      stk decode "${data}/split${nj}/JOB" --out "${dir}/hyp.JOB" "$@" )
  local j
  for j in $(seq "${nj}"); do cat "${dir}/hyp.${j}"; done | LC_ALL=C sort > "${dir}/hyp.tmp"
  local want got
  if [ -f "${data}/segments" ]; then want=$(awk 'END {print NR}' "${data}/segments")
  else want=$(awk 'END {print NR}' "${data}/wav.scp"); fi
  got=$(awk 'END {print NR}' "${dir}/hyp.tmp")
  if [ "${got}" != "${want}" ]; then
    echo "stk_decode_nj: ${dir}: ${got} hypotheses for ${want} utterances of ${data}" >&2
    return 1
  fi
  mv "${dir}/hyp.tmp" "${dir}/hyp"
  for j in $(seq "${nj}"); do rm -f "${dir}/hyp.${j}"; done
}
