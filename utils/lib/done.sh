# shellcheck shell=bash
# is_done STAGE MARKER KEY -- true (and logged) when the file MARKER records KEY, the settings
# STAGE last ran with; a stage that ran with other settings (or never) runs again. After the
# stage's work, record it with: echo "${KEY}" > MARKER
# Sourced by the real-corpus recipes (egs/covost2/*, egs/voxpopuli/maestro); needs utils/log.sh.
is_done() { [ -f "$2" ] && [ "$(cat "$2")" = "$3" ] && log "Stage $1: done already ($2)"; }
