#!/usr/bin/env bash
# Brings a run back after a preemption: recreates the slice if it is gone, preempted or suspended (spot and
# preemptible capacity), reinstalls the project, and launches the same run, which resumes from the last
# checkpoint in its gs:// workdir. --watch keeps doing that until the run has written its results.
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<USAGE
Usage: tpu/resume.sh [flags] [--watch[=SECONDS]] [--max-relaunches=N] LAUNCH ARGUMENTS

LAUNCH ARGUMENTS are tpu/launch.sh's (--config=... --workdir=gs://... [-- main.py arguments]); pass the
same flags you created the slice with (--type, --spot, --queued, ...), since a lost slice is recreated with them.

  READY / ACTIVE                          launch (a run that is still going is left alone)
  missing                                 create, set up, launch
  being created, started or repaired      wait, set up, launch
  PREEMPTED, TERMINATED, SUSPENDED, ...   delete, create, set up, launch

  --watch[=SECONDS]      repeat every SECONDS (default 300) until WORKDIR/results.json exists, relaunching
                         whenever the slice is lost or the run is not running on worker 0
  --fetch=gs://...       files for setup.sh to copy onto a recreated slice (as tpu/setup.sh --fetch)
  --max-relaunches=N     with --watch: give up after N relaunches (default 20), e.g. a run that keeps failing

$TPU_COMMON_USAGE
  With --dry-run the slice's state is taken to be \$TPU_ASSUME_STATE (default PREEMPTED).
USAGE
}

watch=0 max_relaunches=20 workdir="" run=""
launch_args=()
while (($#)); do
  case "$1" in
    --watch) watch=300 ;;
    --watch=*) watch="${1#*=}" ;;
    --max-relaunches=*) max_relaunches="${1#*=}" ;;
    --fetch=*) FLYP_FETCH="${FLYP_FETCH:+$FLYP_FETCH }${1#*=}" ;;  # for setup.sh
    -h | --help) usage; exit 0 ;;
    --) launch_args+=("$@"); break ;;
    *)
      if ! tpu_parse_flag "$1"; then
        launch_args+=("$1")
        case "$1" in
          --workdir=*) workdir="${1#*=}" ;;
          --run=*) run="${1#*=}" ;;
        esac
      fi
      ;;
  esac
  shift
done
tpu_finish_flags
[[ "$watch" =~ ^[0-9]+$ && "$max_relaunches" =~ ^[0-9]+$ ]] || tpu_die "--watch and --max-relaunches take numbers"
# A typo in the run's arguments should fail here, not after the slice has been recreated.
"$TPU_DIR/launch.sh" --validate-only "${launch_args[@]}"
[[ -n "$run" ]] || run="$(tpu_run_name "$workdir")"

# Makes the slice usable and installed again, whatever state it is in.
recover() {
  tpu_state
  case "$TPU_STATE" in
    READY | ACTIVE)
      tpu_info "$TPU_NAME is $TPU_STATE" ;;
    "")
      tpu_info "$TPU_NAME does not exist: creating it"
      "$TPU_DIR/create.sh"
      "$TPU_DIR/setup.sh" ;;
    CREATING | STARTING | RESTARTING | REPAIRING | PROVISIONING | WAITING_FOR_RESOURCES | ACCEPTED)
      tpu_info "$TPU_NAME is $TPU_STATE: waiting for it"
      tpu_wait_ready
      "$TPU_DIR/setup.sh" ;;
    *)
      tpu_info "$TPU_NAME is $TPU_STATE: deleting and recreating it"
      "$TPU_DIR/delete.sh"
      "$TPU_DIR/create.sh"
      "$TPU_DIR/setup.sh" ;;
  esac
}

if [[ "$watch" == 0 ]]; then
  recover
  "$TPU_DIR/launch.sh" "${launch_args[@]}"
  exit 0
fi

# The training loop writes results.json into the workdir last, after the final checkpoint and evaluation.
finished() {
  if [[ "$TPU_DRY_RUN" == 1 ]]; then
    tpu_run gcloud storage ls "${workdir%/}/results.json"
    return 1
  fi
  gcloud storage ls "${workdir%/}/results.json" >/dev/null 2>&1
}

pid="$(tpu_remote_path "$FLYP_LOG_DIR")/$run.pid"
relaunches=0
while true; do
  if finished; then
    tpu_info "$run finished: ${workdir%/}/results.json exists"
    exit 0
  fi
  recover
  # Exit status 0 when the run's process is alive on worker 0.
  if ! tpu_ssh 0 "[ -f $pid ] && kill -0 \"\$(cat $pid)\" 2>/dev/null"; then
    ((relaunches < max_relaunches)) || tpu_die "$run relaunched $relaunches times; giving up (see tpu/logs.sh --run=$run)"
    relaunches=$((relaunches + 1))
    tpu_info "launching $run (relaunch $relaunches of at most $max_relaunches)"
    "$TPU_DIR/launch.sh" "${launch_args[@]}" || tpu_info "launch failed; trying again in ${watch}s"
  fi
  if [[ "$TPU_DRY_RUN" == 1 ]]; then
    tpu_info "dry run: would check again every ${watch}s"
    exit 0
  fi
  sleep "$watch"
done
