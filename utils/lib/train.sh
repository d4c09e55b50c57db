# shellcheck shell=bash
# stk_train CONFIG EXP_DIR [key=value ...] -- one `stk train` run for a recipe stage.
#
# Sourced by recipes that train several models in one stage (egs/mini/mslam, egs/mini/maestro).
# Runs through ${cuda_cmd} (cmd.sh) with its log in EXP_DIR/log/train.log, then averages the best
# checkpoint into EXP_DIR/model.avg1.safetensors and marks EXP_DIR/.done. A finished EXP_DIR is
# skipped; an interrupted one resumes from its last checkpoint (the trainer's exact resume).
#
# Processes, from the recipe's variables (run.sh options):
#   nproc_per_node  training processes per node (default ${nproc}, else 1); > 1: torchrun + DDP
#                   through bin/stk-torchrun, and `--gpu ${nproc_per_node}` for ${cuda_cmd}
#                   (one GPU per process; the local backend ignores --gpu)
#   nnodes          nodes (default 1); > 1: `${cuda_cmd} --nodes ${nnodes}` (the Slurm backend runs
#                   stk-torchrun once per node through srun; c10d rendezvous on the job's first node)
# e.g. nnodes=4 nproc_per_node=8 cmd_backend=slurm ./run.sh   # 32 GPUs, one Slurm job (a recipe may
# also declare nnodes/nproc_per_node as run.sh options: --nnodes 4 --nproc-per-node 8)
stk_train() {
  local conf=$1 dir=$2 launcher=(stk) opts=()
  local nnodes=${nnodes:-1} per_node=${nproc_per_node:-${nproc:-1}}
  shift 2
  if [ -f "${dir}/.done" ]; then
    echo "$(date -u +%FT%T) ${dir} done already" >&2
    return 0
  fi
  if [ "${nnodes}" -gt 1 ] || [ "${per_node}" -gt 1 ]; then
    launcher=(stk-torchrun --nnodes "${nnodes}" --nproc-per-node "${per_node}" --)
  fi
  [ "${nnodes}" -le 1 ] || opts+=(--nodes "${nnodes}")
  [ "${per_node}" -le 1 ] || opts+=(--gpu "${per_node}")
  echo "$(date -u +%FT%T) train ${dir} (${nnodes} node(s) x ${per_node} process(es); log: ${dir}/log/train.log)" >&2
  ${cuda_cmd} "${opts[@]}" "${dir}/log/train.log" "${launcher[@]}" train --config "${conf}" --exp-dir "${dir}" "$@"
  stk average "${dir}" --n 1 && touch "${dir}/.done"
}
