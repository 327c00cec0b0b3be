#!/usr/bin/env bash
# Shows a run's log from the workers (worker 0 by default: process 0 prints the progress and results).
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<USAGE
Usage: tpu/logs.sh [--run=NAME | --workdir=gs://...] [--worker=N|all] [--lines=N] [--no-follow] [flags]

Follows ~/$FLYP_LOG_DIR/NAME.log on a worker of '$TPU_NAME' (Ctrl-C stops following; the run goes on).
Without --run or --workdir, the most recently written log.

  --run=NAME             the run's name (as tpu/launch.sh printed it)
  --workdir=PATH         the run's workdir; its last component is the name
  --worker=N|all         which worker (default 0); all interleaves every worker's lines
  --lines=N              lines of history to show first (default 100)
  --no-follow            print and exit

$TPU_COMMON_USAGE
USAGE
}

run="" worker=0 lines=100 follow=1
while (($#)); do
  case "$1" in
    --run=*) run="${1#*=}" ;;
    --workdir=*) run="$(tpu_run_name "${1#*=}")" ;;
    --worker=*) worker="${1#*=}" ;;
    --lines=*) lines="${1#*=}" ;;
    --no-follow) follow=0 ;;
    -h | --help) usage; exit 0 ;;
    *) tpu_parse_flag "$1" || tpu_die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
tpu_finish_flags
[[ "$worker" == all || "$worker" =~ ^[0-9]+$ ]] || tpu_die "--worker must be a number or all, not '$worker'"
[[ "$lines" =~ ^[0-9]+$ ]] || tpu_die "--lines must be a number, not '$lines'"
[[ -z "$run" || "$run" =~ ^[A-Za-z0-9_.-]+$ ]] || tpu_die "bad run name '$run'"

logs="$(tpu_remote_path "$FLYP_LOG_DIR")"
if [[ -n "$run" ]]; then
  pick="log=$logs/$run.log"
else
  pick="log=\$(ls -t $logs/*.log 2>/dev/null | head -n 1)"
fi
tail_flags="-n $lines"
[[ "$follow" == 0 ]] || tail_flags+=" -F"
tpu_ssh "$worker" "$pick; if [ -z \"\$log\" ]; then echo \"no logs in ~/$FLYP_LOG_DIR on \$(hostname)\" >&2; exit 1; fi; echo \"== \$log on \$(hostname)\"; tail $tail_flags \"\$log\""
