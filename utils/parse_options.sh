# utils/parse_options.sh -- command-line options for recipe scripts (source it).
#
# Usage, inside a script:
#
#   nj=4                 # Begin configuration section
#   feat_type=fbank
#   use_gpu=false
#   help_message="Usage: $0 [options] <data-dir> <exp-dir>
#     --nj N            number of parallel jobs (default: $nj)
#     --feat-type T     fbank|mfcc (default: $feat_type)"
#   # End configuration section
#   . utils/parse_options.sh
#   [ $# -eq 2 ] || { printf '%s\n' "$help_message" >&2; exit 1; }
#
# Rules:
#   --foo-bar VALUE, --foo-bar=VALUE   set foo_bar=VALUE; foo_bar must already be set
#                                      (possibly to ""), otherwise it is an error naming it
#   --flag true|false                  a variable whose default is true/false only takes
#                                      true or false
#   --config FILE                      read "key=value" lines (key as foo_bar or foo-bar;
#                                      '#' comments, blank lines, quoted values allowed);
#                                      the file is parsed, not executed, and applies where
#                                      it appears among the options
#   --help, -h                         print $help_message and exit 0
#   --                                 end of options
# Parsing stops at the first argument that is not an option; what is left
# (the positional arguments) stays in "$@".
#
# Works under `set -euo pipefail`. Errors print to stderr and exit 1.

# Internal names start with __po_ so they cannot shadow the caller's variables.
__po_die() {
  printf '%s: %s\n' "$(basename -- "$0")" "$*" >&2
  exit 1
}

# __po_set ORIGIN NAME VALUE: assign VALUE to the existing variable NAME.
__po_set() {
  local __po_origin=$1 __po_name=$2 __po_value=$3
  if ! [[ $__po_name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
    __po_die "invalid option $__po_origin"
  fi
  if [ -z "${!__po_name+set}" ]; then
    __po_die "unknown option $__po_origin (this script has no variable '$__po_name')"
  fi
  case "${!__po_name}" in
    true | false)
      case "$__po_value" in
        true | false) ;;
        *) __po_die "option $__po_origin is boolean: expected true or false, got '$__po_value'" ;;
      esac
      ;;
  esac
  printf -v "$__po_name" '%s' "$__po_value"
}

# __po_read_config FILE: apply key=value lines of FILE.
__po_read_config() {
  local __po_file=$1 __po_line __po_key __po_val __po_n=0
  [ -f "$__po_file" ] || __po_die "--config: no such file: $__po_file"
  while IFS= read -r __po_line || [ -n "$__po_line" ]; do
    __po_n=$((__po_n + 1))
    # Strip leading/trailing blanks; skip blank lines and comments.
    __po_line="${__po_line#"${__po_line%%[![:space:]]*}"}"
    __po_line="${__po_line%"${__po_line##*[![:space:]]}"}"
    case "$__po_line" in "" | "#"*) continue ;; esac
    __po_line=${__po_line#--}
    if [[ $__po_line != *=* ]]; then
      __po_die "$__po_file:$__po_n: expected key=value, got '$__po_line'"
    fi
    __po_key=${__po_line%%=*}
    __po_val=${__po_line#*=}
    # One level of matching quotes is removed: key="a b" -> a b
    if [[ $__po_val =~ ^\"(.*)\"$ || $__po_val =~ ^\'(.*)\'$ ]]; then
      __po_val=${BASH_REMATCH[1]}
    fi
    __po_set "'$__po_key' in $__po_file:$__po_n" "${__po_key//-/_}" "$__po_val"
  done <"$__po_file"
}

# __po_parse ARGS...: sets __po_nshift to the number of arguments consumed.
__po_parse() {
  local __po_opt __po_name __po_value
  __po_nshift=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --help | -h)
        if [ -n "${help_message:-}" ]; then
          printf '%s\n' "$help_message"
        else
          printf 'Usage: %s [options] ...  (this script sets no help_message)\n' "$(basename -- "$0")"
        fi
        exit 0
        ;;
      --)
        __po_nshift=$((__po_nshift + 1))
        return 0
        ;;
      --?*=*)
        __po_opt=${1%%=*}
        __po_value=${1#*=}
        shift
        __po_nshift=$((__po_nshift + 1))
        ;;
      --?*)
        __po_opt=$1
        [ $# -ge 2 ] || __po_die "option $__po_opt needs a value"
        __po_value=$2
        shift 2
        __po_nshift=$((__po_nshift + 2))
        ;;
      *)
        return 0 # first positional argument
        ;;
    esac
    if [ "$__po_opt" = --config ]; then
      __po_read_config "$__po_value"
    else
      __po_name=${__po_opt#--}
      __po_set "$__po_opt" "${__po_name//-/_}" "$__po_value"
    fi
  done
}

__po_parse "$@"
shift "$__po_nshift"
unset __po_nshift
unset -f __po_die __po_set __po_read_config __po_parse
