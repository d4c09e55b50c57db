# utils/log.sh -- a `log` function for recipe scripts (source it).
#
# Usage:
#   . utils/log.sh
#   log "Stage 1: data preparation"
# prints to stderr, e.g.
#   2026-11-23T10:15:02 run.sh:42 Stage 1: data preparation
# (ISO date and time, the calling file's name and line, the message).
# Safe under `set -euo pipefail`; always returns 0.

log() {
  local src=${BASH_SOURCE[1]:-$0}
  printf '%s %s:%s %s\n' "$(date '+%Y-%m-%dT%H:%M:%S')" "${src##*/}" "${BASH_LINENO[0]}" "$*" >&2
}
