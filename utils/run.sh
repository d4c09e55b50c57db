#!/usr/bin/env bash
# utils/run.sh -- run a command, or an array of jobs, on this machine.
#
# The local backend behind $train_cmd / $decode_cmd (see egs/TEMPLATE/cmd.sh).
# utils/slurm.sh takes the same arguments, so a recipe runs unchanged on either.
#
#   utils/run.sh [options] [JOB=1:N] LOGFILE CMD [ARG ...]
#
#   utils/run.sh exp/log/prep.log local/prep.sh data/train
#   utils/run.sh --max-jobs-run 2 JOB=1:4 exp/asr/decode/log/decode.JOB.log \
#     stk decode data/test/split4/JOB --model exp/asr/package --out exp/asr/decode/hyp.JOB
#   utils/run.sh JOB=1:4 exp/log/x.JOB.log "zcat in.JOB.gz | wc -l > out.JOB"
#
# JOB=A:B runs B-A+1 jobs (any variable name works, e.g. SPLIT=1:8). In LOGFILE
# and in every argument, the name is replaced by the job number where it stands
# as a word: "log.JOB.txt", "split4/JOB", "a JOB b" change; "JOBS", "feats_JOB",
# "$SLURM_JOB_ID" do not.
#
# The command: a single CMD string is run as shell code (pipes, redirections,
# ';' all work). With several words, each word is passed as one argument,
# exactly as given (no globbing, no $-expansion), except a word that is a shell
# operator: '|', '||', '&&', ';', or one that starts with '<', '>', '2>', '&>'
# (e.g. \| or \> out.JOB), so pipelines written Kaldi-style still work.
# Jobs read stdin from /dev/null.
#
# Each job writes its stdout and stderr to its own LOGFILE, which begins with
# the command line and ends with
#   # Accounting: time=SECONDS threads=N
#   # Ended (code RC) at DATE, elapsed time SECONDS seconds
# The exit status is 0 when every job succeeded, 1 otherwise (the failed jobs
# and their logs are listed on stderr). Ctrl-C or SIGTERM stops all jobs.

set -euo pipefail

me=$(basename -- "$0")
usage() {
  cat <<EOF
Usage: $me [options] [JOB=1:N] LOGFILE CMD [ARG ...]
Runs CMD (N copies with JOB=1:N) on this machine, output to LOGFILE.
Options:
  --max-jobs-run N   run at most N jobs at a time (default: number of CPUs, here $(nproc_default))
  --num-threads N    threads per job; only recorded in the log here
Accepted for compatibility with utils/slurm.sh and ignored:
  --mem SIZE  --gpu N  --time T  --partition P  --account A  --sbatch-args ARGS
  --nodes 1 (more than one node is an error here)
EOF
}
# shellcheck source=utils/lib/jobs.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib/jobs.sh"
# CPUs usable here; GNU nproc would otherwise obey OMP_NUM_THREADS (which path.sh sets per job).
nproc_default() { env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1; }

# shell_word ARG: ARG as a word of the job's shell command (see header).
shell_word() {
  local q="'\\''"
  if [[ $1 =~ ^(\||\|\||\|\&|\&\&|\;)$ || $1 =~ ^([0-9]*[\<\>]|\&\>)[^[:space:]]*$ ]]; then
    printf '%s' "$1" # shell operator
  elif [[ -n $1 && $1 =~ ^[A-Za-z0-9_./:,=+@%^-]+$ ]]; then
    printf '%s' "$1" # needs no quotes
  else
    printf "'%s'" "${1//\'/$q}"
  fi
}

# run_job CMD LOG THREADS: run CMD with bash, output into LOG, framed by the
# header and footer described above.
run_job() {
  local cmd=$1 log=$2 threads=$3 start end rc=0
  start=$(date +%s)
  printf '# %s\n# Started at %s\n#\n' "$cmd" "$(date)" >"$log"
  bash -c "$cmd" </dev/null >>"$log" 2>&1 || rc=$?
  end=$(date +%s)
  # Keep the footer on its own line if the output did not end with a newline.
  if [ -n "$(tail -c 1 "$log")" ]; then echo >>"$log"; fi
  printf '# Accounting: time=%d threads=%d\n# Ended (code %d) at %s, elapsed time %d seconds\n' \
    $((end - start)) "$threads" "$rc" "$(date)" $((end - start)) >>"$log"
  return "$rc"
}

# --- options -----------------------------------------------------------------
max_jobs_run=$(nproc_default)
num_threads=1
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --max-jobs-run | --num-threads | --mem | --gpu | --nodes | --time | --partition | --account | --sbatch-args)
      [ $# -ge 2 ] || bad_usage "option $1 needs a value"
      case "$1" in
        --max-jobs-run | --num-threads | --nodes)
          [[ $2 =~ ^[1-9][0-9]*$ ]] || bad_usage "$1 expects a positive integer, got '$2'" ;;
        --gpu)
          [[ $2 =~ ^[0-9]+$ ]] || bad_usage "--gpu expects a non-negative integer, got '$2'" ;;
      esac
      case "$1" in
        --max-jobs-run) max_jobs_run=$2 ;;
        --num-threads) num_threads=$2 ;;
        --nodes) [ "$2" -eq 1 ] || die "--nodes $2: this machine is one node; multi-node jobs need the Slurm backend (cmd_backend=slurm)" ;;
      esac
      shift 2
      ;;
    --*) bad_usage "unknown option $1" ;;
    *) break ;;
  esac
done

# --- JOB=A:B, LOGFILE, CMD ---------------------------------------------------
parse_job_range "$@"
shift "$job_args"

if [ $# -eq 1 ]; then
  cmd_pattern=$1
else
  cmd_pattern=""
  for arg in "$@"; do
    cmd_pattern+="${cmd_pattern:+ }$(shell_word "$arg")"
  done
fi

if [ -n "$job_var" ] && [ "$first" -ne "$last" ] &&
  [ "$(subst_word "$log_pattern" "$job_var" 1)" = "$log_pattern" ]; then
  die "$((last - first + 1)) jobs would share one log file: put $job_var in LOGFILE ($log_pattern)"
fi

# --- run ---------------------------------------------------------------------
# Each job gets its own process group (set -m), so that stopping run.sh can
# stop the jobs and everything they started.
set -m
# shellcheck disable=SC2317 # called from the traps below
stop_jobs() {
  local pid
  for pid in $(jobs -p); do
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
  echo "$me: interrupted; jobs stopped" >&2
  exit "$1"
}
trap 'stop_jobs 130' INT
trap 'stop_jobs 143' TERM

logs=()
running=0
for ((id = first; id <= last; id++)); do
  log=$log_pattern
  cmd=$cmd_pattern
  if [ -n "$job_var" ]; then
    log=$(subst_word "$log" "$job_var" "$id")
    cmd=$(subst_word "$cmd" "$job_var" "$id")
  fi
  mkdir -p -- "$(dirname -- "$log")"
  rm -f -- "$log"
  logs+=("$log")
  if [ "$running" -ge "$max_jobs_run" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  run_job "$cmd" "$log" "$num_threads" &
  running=$((running + 1))
done
wait || true
trap - INT TERM

# --- report ------------------------------------------------------------------
num_failed=0
for i in "${!logs[@]}"; do
  rc=$(job_status "${logs[$i]}")
  [ "$rc" != 0 ] || continue
  num_failed=$((num_failed + 1))
  if [ "$num_failed" -le 5 ]; then
    what="command"
    [ -z "$job_var" ] || what="job $job_var=$((first + i))"
    if [ "$rc" = none ]; then
      echo "$me: $what did not finish; see ${logs[$i]}" >&2
    else
      echo "$me: $what failed (code $rc); see ${logs[$i]}" >&2
    fi
  fi
done
if [ "$num_failed" -gt 0 ]; then
  [ -z "$job_var" ] || echo "$me: $num_failed / ${#logs[@]} jobs failed (logs: $log_pattern)" >&2
  exit 1
fi
exit 0
