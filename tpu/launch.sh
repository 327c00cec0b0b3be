#!/usr/bin/env bash
# Starts `python main.py --config=... --workdir=gs://...` on every worker of the slice, detached from the ssh
# session, logging to ~/flyp_logs/RUN.log on each worker. Launching the same run again resumes it from the
# last checkpoint in the workdir; that is how a run continues after a preemption (tpu/resume.sh).
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<USAGE
Usage: tpu/launch.sh --config=FILE[:PRESET] --workdir=gs://BUCKET/PATH [--data_dir=gs://BUCKET/tfds]
                     [--run=NAME] [--env=NAME=VALUE ...] [flags] [-- MORE main.py ARGUMENTS]

Runs main.py on all workers of '$TPU_NAME' (a pod slice runs one process per host; they find each other
through JAX's multi-host start-up). The workdir must be a gs:// path that every worker reads and writes:
checkpoints there outlive a preempted slice, and the same command resumes from them.

  --config=SPEC          config file relative to the repository, with an optional preset
  --workdir=gs://...     checkpoints, metrics and results
  --data_dir=gs://...    TFDS data directory (FLYP_DATA_DIR; sets --config.data.data_dir)
  --run=NAME             names the log and pid files on the workers (default: the workdir's last component)
  --env=NAME=VALUE       environment variable for the run (repeatable)
  --allow-local-workdir  accept a workdir that is not gs:// (one host only; lost with the VM)
  -- ARGS                passed to main.py, e.g. -- --config.batch_size=1024 --config.steps=20000

$TPU_COMMON_USAGE
USAGE
}

config="" workdir="" run="" local_ok=0 validate_only=0
envs=() extra=()
while (($#)); do
  case "$1" in
    --config=*) config="${1#*=}" ;;
    --workdir=*) workdir="${1#*=}" ;;
    --data_dir=* | --data-dir=*) FLYP_DATA_DIR="${1#*=}" ;;
    --run=*) run="${1#*=}" ;;
    --env=*)
      [[ "${1#*=}" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || tpu_die "--env takes NAME=VALUE, not '${1#*=}'"
      envs+=("${1#*=}") ;;
    --allow-local-workdir) local_ok=1 ;;
    --validate-only) validate_only=1 ;;
    --)
      shift
      # --dry-run there is this script's (lib.sh has seen it), not an argument for main.py.
      for arg in "$@"; do
        case "$arg" in --dry-run | --dry_run) ;; *) extra+=("$arg") ;; esac
      done
      break ;;
    -h | --help) usage; exit 0 ;;
    *) tpu_parse_flag "$1" || tpu_die "unknown argument '$1' (see --help; main.py arguments go after --)" ;;
  esac
  shift
done
tpu_finish_flags

[[ -n "$config" ]] || tpu_die "--config is required, e.g. --config=configs/flyp.py:imagenet_b16"
[[ -n "$workdir" ]] || tpu_die "--workdir is required, e.g. --workdir=gs://BUCKET/runs/flyp_in"
if [[ "$workdir" != gs://* && "$local_ok" == 0 ]]; then
  # Each host would write its own local copy, and a preempted VM takes its checkpoints with it.
  tpu_die "--workdir must be a gs:// path shared by all workers (got '$workdir'); --allow-local-workdir to override"
fi
if [[ -z "$FLYP_REPO" && ! -f "$REPO_ROOT/${config%%:*}" ]]; then
  tpu_die "config file '${config%%:*}' not found in $REPO_ROOT"
fi
[[ -n "$run" ]] || run="$(tpu_run_name "$workdir")"
[[ "$run" =~ ^[A-Za-z0-9_.-]+$ ]] || tpu_die "--run must be letters, digits, '.', '_' or '-', not '$run'"
if [[ "$validate_only" == 1 ]]; then
  exit 0  # tpu/resume.sh checks the arguments before it touches the slice
fi

# --distributed: every worker is one process of the same JAX job (jax.distributed finds the others).
args=(main.py --config="$config" --workdir="$workdir" --distributed)
[[ -z "$FLYP_DATA_DIR" ]] || args+=(--config.data.data_dir="$FLYP_DATA_DIR")
args+=("${extra[@]}")

# JAX's persistent compilation cache in the workdir's bucket: a run relaunched after a preemption (on a new slice
# whose disks are empty) reads its compiled programs instead of compiling them again. --env=JAX_COMPILATION_CACHE_DIR=
# chooses another place (an empty value turns it off).
if ! printf '%s\n' ${envs[@]+"${envs[@]}"} | grep -q '^JAX_COMPILATION_CACHE_DIR='; then
  envs+=("JAX_COMPILATION_CACHE_DIR=${workdir%/}/jax_compilation_cache")
fi

dir="$(tpu_remote_path "$FLYP_REMOTE_DIR")"
logs="$(tpu_remote_path "$FLYP_LOG_DIR")"
python="$(tpu_remote_path "$FLYP_VENV")/bin/python"
log="$logs/$run.log"
pid="$logs/$run.pid"
# setsid + nohup: the run outlives the ssh session; its pid is kept for tpu/stop.sh (SIGTERM checkpoints).
command="set -e; mkdir -p $logs"
command+="; if [ -f $pid ] && kill -0 \"\$(cat $pid)\" 2>/dev/null; then echo \"$run is already running on \$(hostname)\" >&2; exit 1; fi"
command+="; cd $dir; echo \"=== \$(date -u +%FT%TZ) launch on \$(hostname)\" >> $log"
command+="; setsid nohup env ${envs[*]+$(tpu_quote "${envs[@]}") }$python $(tpu_quote "${args[@]}") >> $log 2>&1 < /dev/null &"
command+=" echo \$! > $pid; echo \"started $run on \$(hostname), pid \$!, log ~/$FLYP_LOG_DIR/$run.log\""
tpu_ssh all "$command"
tpu_info "follow it with: tpu/logs.sh --run=$run   (stop it with tpu/stop.sh --run=$run)"
