#!/usr/bin/env bash
# utils/split_scp.sh -- split a Kaldi-style list (wav.scp, feats.scp, text, ...)
# into N contiguous parts of near-equal size.
#
#   utils/split_scp.sh [--utt2spk UTT2SPK] IN OUT.1 [OUT.2 ... OUT.N]
#
#   utils/split_scp.sh data/train/wav.scp data/train/split4/{1,2,3,4}/wav.scp
#   utils/split_scp.sh --utt2spk data/train/utt2spk data/train/feats.scp \
#     $(for j in 1 2 3 4; do echo exp/split/feats.$j.scp; done)
#
# Lines keep their order: OUT.1 gets the first lines, OUT.N the last, and
# concatenating the outputs gives IN back. Without --utt2spk, part sizes differ
# by at most one line. With --utt2spk, all lines of a speaker (first field
# looked up in UTT2SPK) go to the same part; each speaker's lines must be
# contiguous in IN (sort IN by speaker, as Kaldi data dirs are), and the parts
# are balanced by line count as far as speaker boundaries allow.
# It is an error to ask for more parts than IN has lines (or speakers).
# Missing output folders are created.

set -euo pipefail

me=$(basename -- "$0")
usage() {
  cat <<EOF
Usage: $me [--utt2spk UTT2SPK] IN OUT.1 [OUT.2 ... OUT.N]
Splits IN into N contiguous parts of near-equal size.
  --utt2spk FILE   keep the lines of each speaker in one part
EOF
}
bad_usage() {
  printf '%s: %s\n\n' "$me" "$*" >&2
  usage >&2
  exit 1
}

utt2spk=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --utt2spk)
      [ $# -ge 2 ] || bad_usage "option --utt2spk needs a value"
      utt2spk=$2
      shift 2
      ;;
    --*) bad_usage "unknown option $1" ;;
    *) break ;;
  esac
done
[ $# -ge 2 ] || bad_usage "expected IN and at least one output"
in=$1
shift
[ -f "$in" ] || bad_usage "no such file: $in"
[ -z "$utt2spk" ] || [ -f "$utt2spk" ] || bad_usage "no such file: $utt2spk"
for out in "$@"; do
  [ "$out" != "$in" ] || bad_usage "output $out is the input"
  [[ $out != *$'\n'* ]] || bad_usage "output names cannot contain newlines"
  mkdir -p -- "$(dirname -- "$out")"
done

# Output names travel through the environment (one per line), so that any
# name is safe from awk's "var=value" argument handling.
SPLIT_SCP_OUTS=$(printf '%s\n' "$@")
export SPLIT_SCP_OUTS

# Pass 1 reads UTT2SPK, pass 2 counts the lines of IN (and its speaker runs),
# pass 3 reads IN again and writes line ranges to the outputs.
# shellcheck disable=SC2016 # awk code, not shell
program='
function fail(msg) { printf "%s: %s\n", me, msg > "/dev/stderr"; failed = 1; exit 1 }
function abs(x) { return x < 0 ? -x : x }
BEGIN { n_out = split(ENVIRON["SPLIT_SCP_OUTS"], outs, "\n") }
pass == 1 {
  if (NF < 2) fail(sprintf("%s:%d: expected \"utt spk\", got \"%s\"", FILENAME, FNR, $0))
  spk_of[$1] = $2
  next
}
pass == 2 {
  n_lines++
  if (use_spk) {
    if (!($1 in spk_of)) fail(sprintf("%s:%d: utterance \"%s\" is not in %s", FILENAME, FNR, $1, utt2spk))
    s = spk_of[$1]
    if (n_runs == 0 || s != cur_spk) {
      if (s in seen) fail(sprintf("speaker \"%s\" is not contiguous in %s (line %d); sort it by speaker", s, FILENAME, FNR))
      seen[s] = 1
      cur_spk = s
      n_runs++
    }
    run_end[n_runs] = n_lines       # cumulative line count at the end of each speaker run
  }
  next
}
pass == 3 && FNR == 1 { plan() }
pass == 3 {
  while (FNR > last_line[k]) { close(outs[k]); k++ }
  print > outs[k]
}
END {
  if (failed) exit 1
  if (n_lines == 0) plan()
  close(outs[k])
}
# plan(): last_line[k] = last input line that goes to output k.
function plan(    j, b, prev, target) {
  if (n_out > n_lines) fail(sprintf("%d outputs but %s has only %d lines", n_out, in_name, n_lines))
  if (!use_spk) {
    for (j = 1; j <= n_out; j++) last_line[j] = int(j * n_lines / n_out)
  } else {
    if (n_out > n_runs) fail(sprintf("%d outputs but %s has only %d speakers", n_out, in_name, n_runs))
    prev = 0
    for (j = 1; j < n_out; j++) {
      # Move the cut to the speaker boundary nearest the ideal line, leaving
      # at least one speaker for each of the remaining outputs.
      target = j * n_lines / n_out
      b = prev + 1
      while (b + 1 <= n_runs - (n_out - j) && abs(run_end[b + 1] - target) < abs(run_end[b] - target)) b++
      last_line[j] = run_end[b]
      prev = b
    }
    last_line[n_out] = n_lines
  }
  k = 1
}
'

# awk_file NAME: NAME, with ./ in front if awk would take it for "var=value".
awk_file() {
  if [[ $1 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; then printf './%s' "$1"; else printf '%s' "$1"; fi
}
if [ -n "$utt2spk" ]; then
  awk -v me="$me" -v use_spk=1 -v utt2spk="$utt2spk" -v in_name="$in" "$program" \
    pass=1 "$(awk_file "$utt2spk")" pass=2 "$(awk_file "$in")" pass=3 "$(awk_file "$in")"
else
  awk -v me="$me" -v use_spk=0 -v in_name="$in" "$program" \
    pass=2 "$(awk_file "$in")" pass=3 "$(awk_file "$in")"
fi
