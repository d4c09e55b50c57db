#!/usr/bin/env bash
# utils/slurm.sh -- run a command, or an array of jobs, on a Slurm cluster.
#
# Same arguments as utils/run.sh (see there for JOB=A:B and how the command is
# built), so cmd.sh can switch a recipe between the two:
#
#   utils/slurm.sh [options] [JOB=1:N] LOGFILE CMD [ARG ...]
#
#   utils/slurm.sh --mem 8G --num-threads 4 --max-jobs-run 10 JOB=1:40 \
#     exp/asr/decode/log/decode.JOB.log \
#     stk decode data/test/split40/JOB --model exp/asr/package --out exp/asr/decode/hyp.JOB
#
# It writes a batch script to LOGDIR/q/NAME.sh (LOGDIR is LOGFILE's folder;
# NAME is LOGFILE's name without JOB and .log, e.g. exp/log/q/decode.sh), and
# submits it with `sbatch --wait`, as a job array --array=A-B[%MAX] when JOB=A:B
# is given. Each array task runs its job through utils/run.sh, so the per-job
# logs look exactly as with the local backend; Slurm's own output for task I
# goes to LOGDIR/q/NAME.I.out (NAME.out without JOB). After sbatch returns, the
# exit code of every job is read from its log; the exit status is 0 when all
# succeeded, 1 otherwise (failed jobs and their logs are listed on stderr).
# Ctrl-C or SIGTERM cancels the Slurm job.

set -euo pipefail

me=$(basename -- "$0")
utils_dir=$(cd -- "$(dirname -- "$0")" && pwd)

usage() {
  cat <<EOF
Usage: $me [options] [JOB=1:N] LOGFILE CMD [ARG ...]
Runs CMD (a job array with JOB=1:N) on Slurm via 'sbatch --wait', output to LOGFILE.
Options (sbatch option in brackets):
  --mem SIZE          memory per job, e.g. 4G            [--mem]
  --num-threads N     CPUs per job                       [--cpus-per-task]
  --gpu N             GPUs per job (per node) (0: none)  [--gres=gpu:N]
  --nodes N           nodes of one job; N > 1 runs CMD once per node through
                      srun (multi-node torchrun: bin/stk-torchrun --nnodes N)
                                                     [--nodes=N --ntasks-per-node=1]
  --time T            time limit, e.g. 4:00:00           [--time]
  --partition P       partition (default: \$SLURM_PARTITION) [--partition]
  --account A         account to charge                  [--account]
  --max-jobs-run N    at most N array tasks at a time    [--array=A-B%N]
  --sbatch-args ARGS  further sbatch options, split on blanks, e.g. "--qos=high"
EOF
}
# shellcheck source=utils/lib/jobs.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib/jobs.sh"

# quote ARG: ARG quoted for a shell script (left bare when that is safe).
quote() {
  local q="'\\''"
  if [[ $1 =~ ^[A-Za-z0-9_./:,=+@%^-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/$q}"
  fi
}

# --- options -----------------------------------------------------------------
mem=""
num_threads=1
gpu=0
nodes=1
time_limit=""
partition=${SLURM_PARTITION:-}
account=""
max_jobs_run=""
sbatch_args=""
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
        --mem) mem=$2 ;;
        --num-threads) num_threads=$2 ;;
        --gpu) gpu=$((10#$2)) ;;
        --nodes) nodes=$2 ;;
        --time) time_limit=$2 ;;
        --partition) partition=$2 ;;
        --account) account=$2 ;;
        --max-jobs-run) max_jobs_run=$2 ;;
        --sbatch-args) sbatch_args=$2 ;;
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

if [ -n "$job_var" ] && [ "$first" -ne "$last" ] &&
  [ "$(subst_word "$log_pattern" "$job_var" 1)" = "$log_pattern" ]; then
  die "$((last - first + 1)) jobs would share one log file: put $job_var in LOGFILE ($log_pattern)"
fi
if [ "$nodes" -gt 1 ] && [ -n "$job_var" ]; then
  die "--nodes $nodes with $job_var=$first:$last: a multi-node job is one command (no job array)"
fi
command -v sbatch >/dev/null || die "sbatch not found on PATH (use utils/run.sh, cmd_backend=local, off Slurm)"

# --- batch script ------------------------------------------------------------
log_dir=$(dirname -- "$log_pattern")
name=${log_pattern##*/}
name=${name%.log}
if [ -n "$job_var" ]; then
  name=$(subst_word "$name" "$job_var" "")
  name=${name//../.}
  name=${name#[._-]}
  name=${name%[._-]}
fi
[ -n "$name" ] || name=job
q_dir=$log_dir/q
script=$q_dir/$name.sh
mkdir -p -- "$q_dir"

# The per-task command: utils/run.sh with the same options and arguments,
# restricted to the task's own job number.
task_cmd="exec $(quote "$utils_dir/run.sh") --num-threads $num_threads"
if [ -n "$job_var" ]; then
  task_cmd+=" $job_var=\$task:\$task"
fi
task_cmd+=" $(quote "$log_pattern")"
if [ "$nodes" -gt 1 ]; then
  # one task per node runs CMD (e.g. stk-torchrun --nnodes N, which starts the node's ranks);
  # run.sh on the first node keeps the log (every node's output) and the exit code
  task_cmd+=" srun --nodes=$nodes --ntasks-per-node=1 --kill-on-bad-exit=1"
fi
for arg in "$@"; do
  task_cmd+=" $(quote "$arg")"
done

{
  echo "#!/usr/bin/env bash"
  echo "# Generated by utils/slurm.sh at $(date); submitted with: sbatch --wait ${sbatch_args:+$sbatch_args }$script"
  echo "#SBATCH --job-name=$name"
  if [ -n "$job_var" ]; then
    echo "#SBATCH --output=$q_dir/$name.%a.out"
    echo "#SBATCH --array=$first-$last${max_jobs_run:+%$max_jobs_run}"
  else
    echo "#SBATCH --output=$q_dir/$name.out"
  fi
  echo "#SBATCH --cpus-per-task=$num_threads"
  if [ "$nodes" -gt 1 ]; then
    echo "#SBATCH --nodes=$nodes"
    echo "#SBATCH --ntasks-per-node=1"
  fi
  [ -z "$mem" ] || echo "#SBATCH --mem=$mem"
  [ "$gpu" -eq 0 ] || echo "#SBATCH --gres=gpu:$gpu"
  [ -z "$time_limit" ] || echo "#SBATCH --time=$time_limit"
  [ -z "$partition" ] || echo "#SBATCH --partition=$partition"
  [ -z "$account" ] || echo "#SBATCH --account=$account"
  echo "set -euo pipefail"
  echo "cd $(quote "$PWD")"
  echo "echo \"\${SLURM_ARRAY_JOB_ID:-\${SLURM_JOB_ID:-}}\" > $(quote "$q_dir/$name.jobid")"
  [ -z "$job_var" ] || echo "task=\$SLURM_ARRAY_TASK_ID"
  echo "$task_cmd"
} >"$script"
chmod +x "$script"

# --- submit and wait ---------------------------------------------------------
logs=()
for ((id = first; id <= last; id++)); do
  if [ -n "$job_var" ]; then
    logs+=("$(subst_word "$log_pattern" "$job_var" "$id")")
  else
    logs+=("$log_pattern")
  fi
done
rm -f -- "${logs[@]}" "$q_dir/$name.jobid"
sbatch_log=$q_dir/$name.sbatch.log

# shellcheck disable=SC2317 # called from the traps below
cancel() {
  local job_id
  job_id=$(sed -n 's/^Submitted batch job \([0-9][0-9]*\).*/\1/p' "$sbatch_log" 2>/dev/null | head -n 1)
  [ -n "$job_id" ] || job_id=$(cat "$q_dir/$name.jobid" 2>/dev/null || true)
  kill -TERM "$sbatch_pid" 2>/dev/null || true
  if [ -n "$job_id" ] && scancel "$job_id"; then
    echo "$me: interrupted; cancelled Slurm job $job_id" >&2
  else
    echo "$me: interrupted; could not find the Slurm job to cancel (see squeue -n $name)" >&2
  fi
  exit "$1"
}

# shellcheck disable=SC2086 # sbatch_args is split on blanks on purpose
sbatch --wait $sbatch_args "$script" >"$sbatch_log" 2>&1 &
sbatch_pid=$!
trap 'cancel 130' INT
trap 'cancel 143' TERM
sbatch_rc=0
wait "$sbatch_pid" || sbatch_rc=$?
trap - INT TERM

# --- report ------------------------------------------------------------------
num_failed=0
num_ran=0
for i in "${!logs[@]}"; do
  rc=$(job_status "${logs[$i]}")
  [ "$rc" = none ] || num_ran=$((num_ran + 1))
  [ "$rc" != 0 ] || continue
  num_failed=$((num_failed + 1))
  [ "$num_failed" -le 5 ] || continue
  if [ -n "$job_var" ]; then
    what="job $job_var=$((first + i))" slurm_out=$q_dir/$name.$((first + i)).out
  else
    what="command" slurm_out=$q_dir/$name.out
  fi
  if [ "$rc" = none ]; then
    echo "$me: $what did not finish (killed? time or memory limit?); see $slurm_out" >&2
  else
    echo "$me: $what failed (code $rc); see ${logs[$i]}" >&2
  fi
done
if [ "$num_ran" -eq 0 ] && [ "$sbatch_rc" -ne 0 ]; then
  echo "$me: sbatch failed (code $sbatch_rc); its output ($sbatch_log):" >&2
  cat "$sbatch_log" >&2
fi
if [ "$num_failed" -gt 0 ]; then
  [ -z "$job_var" ] || echo "$me: $num_failed / ${#logs[@]} jobs failed (logs: $log_pattern)" >&2
  exit 1
fi
exit 0
