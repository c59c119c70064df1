#!/usr/bin/env bash
# Kaldi-style option parsing for rfspeech recipes.  Source it after declaring the defaults:
#
#   stage=0; stop_stage=100; n_gpus=1
#   . utils/parse_options.sh
#
# `--foo-bar VALUE` (or `--foo-bar=VALUE`) sets the shell variable `foo_bar`, which must already
# exist (and not start with _): an unknown option is an error.  A variable whose default is true/false only takes
# true/false.  `--help` prints the script's `usage` function's output (when defined; it runs then, so
# it shows the values of the options parsed before --help), else $help_message, and exits.  Positional arguments stay in "$@".
# (Kaldi reserves --config; rfspeech recipes use --conf.)
# An option error is one line, `error: <recipe>: ...`, exit status 2 (as the console scripts); <recipe> is
# $RF_RECIPE when the calling run.sh sets it (the script the user ran), else $0.

__rf_me="${RF_RECIPE:-$0}"

__rf_positional=()
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      if declare -F usage > /dev/null; then usage; else printf '%s\n' "${help_message:-no help available}"; fi
      exit 0
      ;;
    --)
      shift
      __rf_positional+=("$@")
      break
      ;;
    --*=*)
      __rf_opt="${1%%=*}"
      __rf_val="${1#*=}"
      shift
      ;;
    --*)
      __rf_opt="$1"
      if [ $# -lt 2 ]; then
        echo "error: $__rf_me: option $__rf_opt needs a value (see $__rf_me --help)" >&2
        exit 2
      fi
      __rf_val="$2"
      shift 2
      ;;
    *)
      __rf_positional+=("$1")
      shift
      continue
      ;;
  esac
  __rf_name="${__rf_opt#--}"
  __rf_name="${__rf_name//-/_}"
  # a name starting with _ is the scripts' own (utils/lib.sh), never an option
  if ! [[ "$__rf_name" =~ ^[A-Za-z][A-Za-z0-9_]*$ ]] || ! declare -p "$__rf_name" >/dev/null 2>&1; then
    echo "error: $__rf_me: invalid option $__rf_opt (see $__rf_me --help)" >&2
    exit 2
  fi
  __rf_old="${!__rf_name}"
  if { [ "$__rf_old" = true ] || [ "$__rf_old" = false ]; } && [ "$__rf_val" != true ] && [ "$__rf_val" != false ]; then
    echo "error: $__rf_me: option $__rf_opt takes true or false, got '$__rf_val'" >&2
    exit 2
  fi
  printf -v "$__rf_name" '%s' "$__rf_val"
done
set -- "${__rf_positional[@]+"${__rf_positional[@]}"}"
unset __rf_positional __rf_opt __rf_val __rf_name __rf_old __rf_me
