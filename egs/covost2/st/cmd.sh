# egs/TEMPLATE/cmd.sh -- how a recipe runs its jobs. Copy it next to a recipe's
# run.sh (which sources it: `. ./cmd.sh`) and edit the options for your site.
#
# Recipes never name a backend; they run every job through these variables:
#   ${train_cmd}  JOB=1:${nj} exp/prep/log/prep.JOB.log local/prep.sh data/train/split${nj}/JOB
#   ${cuda_cmd} --gpu 1 exp/asr/log/train.log stk train --config conf/train.yaml --exp-dir exp/asr
#   ${decode_cmd} JOB=1:${nj} exp/asr/decode/log/decode.JOB.log \
#     stk decode data/test/split${nj}/JOB --model exp/asr/package --out exp/asr/decode/hyp.JOB
# Options a recipe adds (like --gpu 1 above) come after, and win over, the ones
# set here. Both backends take the same options (run `utils/run.sh --help`):
#   --mem SIZE  --num-threads N  --gpu N  --time T  --max-jobs-run N
#   --partition P  --account A  --sbatch-args "..."
#
# Pick the backend with cmd_backend, here or from the environment:
#   ./run.sh                       # local (default)
#   cmd_backend=slurm ./run.sh     # Slurm; the partition comes from
#                                  # $SLURM_PARTITION unless set below
#
#   local  utils/run.sh: jobs run on this machine, at most --max-jobs-run at a
#          time (default: the number of CPUs); --mem, --gpu, --time, ... are
#          accepted and ignored.
#   slurm  utils/slurm.sh: one `sbatch --wait` job (array) per call, scripts
#          and Slurm output under LOGDIR/q/.

cmd_backend=${cmd_backend:-local}

case "${cmd_backend}" in
  local)
    export train_cmd="utils/run.sh"
    export decode_cmd="utils/run.sh"
    export cuda_cmd="utils/run.sh --max-jobs-run 1"    # one GPU job at a time
    ;;
  slurm)
    export train_cmd="utils/slurm.sh --mem 4G --time 1-00:00:00"
    export decode_cmd="utils/slurm.sh --mem 8G --time 4:00:00"
    export cuda_cmd="utils/slurm.sh --gpu 1 --num-threads 4 --mem 16G --time 3-00:00:00"
    ;;
  *)
    echo "cmd.sh: unknown cmd_backend '${cmd_backend}' (expected local or slurm)" >&2
    # shellcheck disable=SC2317 # return when sourced, exit when run
    return 1 2>/dev/null || exit 1
    ;;
esac
