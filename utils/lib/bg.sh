# shellcheck shell=bash
# bg_run CMD [ARG ...] / bg_wait -- run a recipe stage's independent jobs (training runs, decodes)
# side by side, at most ${jobs:-1} at a time.
#
#   . utils/lib/bg.sh
#   for v in a b c; do bg_run stk_train conf/x.yaml exp/${v}; done
#   bg_wait     # waits for all of them; fails (listing which) if any failed
#
# With jobs=1 (the default) `bg_run` runs CMD in the foreground. With jobs=N > 1 each job gets
# OMP_NUM_THREADS/N threads (at least 1), so N one-thread jobs share the cores instead of
# N multi-thread jobs fighting over them. Through the Slurm backend of cmd.sh the N jobs are
# N concurrent submissions. Jobs must not depend on each other: call bg_wait before a job that
# needs their outputs (e.g. at the end of a stage).
_bg_pids=()
_bg_names=()

bg_run() {
  local n=${jobs:-1}
  if [ "${n}" -le 1 ]; then
    "$@"
    return
  fi
  while [ "$(jobs -rp | wc -l)" -ge "${n}" ]; do wait -n || true; done
  local t=$(( ${OMP_NUM_THREADS:-1} / n ))
  [ "${t}" -ge 1 ] || t=1
  ( export OMP_NUM_THREADS=${t} STK_NUM_THREADS=${t}; "$@" ) &
  _bg_pids+=($!)
  _bg_names+=("$*")
}

bg_wait() {
  local i failed=()
  for i in "${!_bg_pids[@]}"; do
    wait "${_bg_pids[$i]}" || failed+=("${_bg_names[$i]}")
  done
  _bg_pids=() _bg_names=()
  if [ ${#failed[@]} -gt 0 ]; then
    printf 'bg_wait: %d job(s) failed:\n' ${#failed[@]} >&2
    printf '  %s\n' "${failed[@]}" >&2
    return 1
  fi
}
