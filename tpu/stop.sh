#!/usr/bin/env bash
# Stops a run on every worker with SIGTERM, as a preemption would: the training loop saves a checkpoint at the
# step it is in and exits, so launching the same run again continues from there.
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<USAGE
Usage: tpu/stop.sh (--run=NAME | --workdir=PATH) [flags]

Sends SIGTERM to the run on all workers of '$TPU_NAME'; it checkpoints and exits.

$TPU_COMMON_USAGE
USAGE
}

run=""
while (($#)); do
  case "$1" in
    --run=*) run="${1#*=}" ;;
    --workdir=*) run="$(tpu_run_name "${1#*=}")" ;;
    -h | --help) usage; exit 0 ;;
    *) tpu_parse_flag "$1" || tpu_die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
tpu_finish_flags
[[ "$run" =~ ^[A-Za-z0-9_.-]+$ ]] || tpu_die "--run=NAME (or --workdir) is required"

pid="$(tpu_remote_path "$FLYP_LOG_DIR")/$run.pid"
tpu_ssh all "if [ -f $pid ] && kill -TERM \"\$(cat $pid)\" 2>/dev/null; then echo \"stopping $run on \$(hostname)\"; else echo \"$run is not running on \$(hostname)\"; fi"
