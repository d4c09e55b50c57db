# shellcheck shell=bash disable=SC2034,SC2154  # sets variables for, and uses $me of, the sourcing script
# utils/lib/jobs.sh -- helpers shared by the job runners utils/run.sh and utils/slurm.sh
# (sourced; expects $me and a usage function from the sourcing script).

die() {
  printf '%s: %s\n' "$me" "$*" >&2
  exit 1
}

bad_usage() {
  printf '%s: %s\n\n' "$me" "$*" >&2
  usage >&2
  exit 1
}

# subst_word STRING NAME VALUE: STRING with each NAME that stands as a word
# (no letter, digit or '_' right before or after it) replaced by VALUE.
subst_word() {
  local s=$1 re="^(.*[^A-Za-z0-9_]|)$2([^A-Za-z0-9_].*|)$"
  # The greedy prefix matches the last occurrence; repeat until none is left.
  while [[ $s =~ $re ]]; do
    s=${BASH_REMATCH[1]}$3${BASH_REMATCH[2]}
  done
  printf '%s' "$s"
}

# job_status LOG: the exit code recorded in LOG's last line, or "none".
job_status() {
  local last
  last=$(tail -n 1 "$1" 2>/dev/null || true)
  if [[ $last =~ ^\#\ Ended\ \(code\ ([0-9]+)\) ]]; then
    printf '%s' "${BASH_REMATCH[1]}"
  else
    printf 'none'
  fi
}

# parse_job_range ARGS...: reads an optional JOB=A:B and the LOGFILE from the
# front of ARGS; sets job_var, first, last, log_pattern and job_args (how many
# arguments were used: shift that many).
parse_job_range() {
  job_var=""
  first=1
  last=1
  job_args=1
  if [[ ${1:-} =~ ^([A-Za-z_][A-Za-z0-9_]*)=([0-9]+):([0-9]+)$ ]]; then
    job_var=${BASH_REMATCH[1]}
    first=$((10#${BASH_REMATCH[2]}))
    last=$((10#${BASH_REMATCH[3]}))
    [ "$first" -le "$last" ] || bad_usage "empty job range $1"
    job_args=2
    shift
  elif [[ ${1:-} =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; then
    bad_usage "bad job range '$1' (expected e.g. JOB=1:4)"
  fi
  [ $# -ge 2 ] || bad_usage "expected LOGFILE and CMD"
  log_pattern=$1
}
