# shellcheck shell=bash
# stk_train CONFIG EXP_DIR [key=value ...] -- one `stk train` run for a recipe stage.
#
# Sourced by recipes that train several models in one stage (egs/mini/mslam, egs/mini/maestro).
# Runs through ${cuda_cmd} (cmd.sh) with its log in EXP_DIR/log/train.log, under torchrun + DDP
# when ${nproc} > 1, then averages the best checkpoint into EXP_DIR/model.avg1.safetensors and
# marks EXP_DIR/.done. A finished EXP_DIR is skipped; an interrupted one resumes from its last
# checkpoint (the trainer's exact resume).
stk_train() {
  local conf=$1 dir=$2 launcher=(stk)
  shift 2
  if [ -f "${dir}/.done" ]; then
    echo "$(date -u +%FT%T) ${dir} done already" >&2
    return 0
  fi
  if [ "${nproc:-1}" -gt 1 ]; then
    launcher=(torchrun --standalone --nproc_per_node "${nproc}" -m stk.cli)
  fi
  echo "$(date -u +%FT%T) train ${dir} (log: ${dir}/log/train.log)" >&2
  ${cuda_cmd} "${dir}/log/train.log" "${launcher[@]}" train --config "${conf}" --exp-dir "${dir}" "$@"
  stk average "${dir}" --n 1 && touch "${dir}/.done"
}
