# shellcheck shell=bash disable=SC2034
# (SC2034: the variables set here are used by the scripts that source this file.)
# Shared by the tpu/ scripts: configuration, common flags, quoting, and the one place commands are run,
# so that --dry-run prints exactly what would otherwise be executed.

set -euo pipefail

TPU_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(dirname "$TPU_DIR")"
# shellcheck source=config.sh
. "$TPU_DIR/config.sh"
: "${TPU_DRY_RUN:=0}"
# --dry-run anywhere in the arguments, also after the `--` that hands the rest to main.py (tpu/README.md shows
# flags appended at the end of a command): a dry run asked for in any position must never act. lib.sh is
# sourced without arguments, so "$@" here are the calling script's.
for _tpu_arg in "$@"; do
  case "$_tpu_arg" in --dry-run | --dry_run) TPU_DRY_RUN=1 ;; esac
done
unset _tpu_arg

tpu_die() {
  echo "error: $*" >&2
  exit 2
}

tpu_info() {
  echo "# $*" >&2
}

# Shell-quotes each argument (single quotes where needed) and joins them with spaces: the printed line can be
# pasted into a shell, and Python's shlex.split reads it back into the same arguments.
tpu_quote() {
  local out="" arg
  for arg in "$@"; do
    if [[ "$arg" =~ ^(--[A-Za-z0-9._-]+=)(.*)$ ]]; then
      # --flag='value': the flag stays readable in a printed command.
      out+="${BASH_REMATCH[1]}$(tpu_quote_word "${BASH_REMATCH[2]}") "
    else
      out+="$(tpu_quote_word "$arg") "
    fi
  done
  printf '%s' "${out% }"
}

tpu_quote_word() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Runs a command, or with --dry-run prints it on stdout (one line, quoted) and runs nothing.
tpu_run() {
  if [[ "$TPU_DRY_RUN" == 1 ]]; then
    tpu_quote "$@"
    echo
  else
    echo "+ $(tpu_quote "$@")" >&2
    "$@"
  fi
}

# The flags every script takes. Returns 1 for an argument that is not one of them.
tpu_parse_flag() {
  case "$1" in
    --name=*) TPU_NAME="${1#*=}" ;;
    --zone=*) TPU_ZONE="${1#*=}" ;;
    --project=*) TPU_PROJECT="${1#*=}" ;;
    --type=* | --accelerator-type=*) TPU_TYPE="${1#*=}" ;;
    --version=*) TPU_VERSION="${1#*=}" ;;
    --spot) TPU_CAPACITY=spot ;;
    --preemptible) TPU_CAPACITY=preemptible ;;
    --reserved) TPU_CAPACITY=reserved ;;
    --on-demand) TPU_CAPACITY=on-demand ;;
    --queued) TPU_QUEUED=1 ;;
    --queue-timeout=*) TPU_QUEUE_TIMEOUT="${1#*=}" ;;
    --dry-run | --dry_run) TPU_DRY_RUN=1 ;;
    *) return 1 ;;
  esac
}

TPU_COMMON_USAGE="Common flags (defaults in tpu/config.sh, or the TPU_* environment variables):
  --name=NAME            TPU VM name (TPU_NAME, now: $TPU_NAME)
  --zone=ZONE            (TPU_ZONE, now: $TPU_ZONE)
  --project=PROJECT      (TPU_PROJECT; default: gcloud's configured project)
  --type=TYPE            accelerator type, e.g. v4-8, v4-32, v5litepod-16, v6e-8 (TPU_TYPE, now: $TPU_TYPE)
  --version=VERSION      TPU software version (TPU_VERSION; default: chosen from the type)
  --spot | --preemptible | --reserved | --on-demand
                         capacity (TPU_CAPACITY, now: $TPU_CAPACITY); spot and preemptible VMs can be preempted
  --queued               request through a queued resource (TPU_QUEUED=1)
  --queue-timeout=DUR    queued only: give up waiting after DUR, e.g. 6h (TPU_QUEUE_TIMEOUT)
  --dry-run              print the commands (gcloud and others) instead of running them; needs no gcloud;
                         anywhere among the arguments, also after --"

# After parsing: check the configuration and make it visible to the scripts this one calls.
tpu_finish_flags() {
  case "$TPU_CAPACITY" in
    on-demand | spot | preemptible | reserved) ;;
    *) tpu_die "capacity must be on-demand, spot, preemptible or reserved, not '$TPU_CAPACITY'" ;;
  esac
  [[ "$TPU_QUEUED" == 0 || "$TPU_QUEUED" == 1 ]] || tpu_die "TPU_QUEUED must be 0 or 1, not '$TPU_QUEUED'"
  if [[ "$TPU_QUEUED" == 1 && "$TPU_CAPACITY" == preemptible ]]; then
    tpu_die "queued resources take --spot (or --reserved), not --preemptible"
  fi
  if [[ "$TPU_QUEUED" == 0 && -n "$TPU_QUEUE_TIMEOUT" ]]; then
    tpu_die "--queue-timeout only applies with --queued"
  fi
  [[ -n "$TPU_NAME" && -n "$TPU_ZONE" && -n "$TPU_TYPE" ]] || tpu_die "name, zone and type must not be empty"
  [[ -n "$TPU_VERSION" ]] || TPU_VERSION="$(tpu_default_version "$TPU_TYPE")"
  export TPU_NAME TPU_ZONE TPU_PROJECT TPU_TYPE TPU_VERSION TPU_CAPACITY TPU_QUEUED TPU_QUEUE_TIMEOUT TPU_DRY_RUN
  export FLYP_REPO FLYP_REF FLYP_PYTHON FLYP_REMOTE_DIR FLYP_VENV FLYP_LOG_DIR FLYP_DATA_DIR FLYP_FETCH
  if [[ "$TPU_DRY_RUN" == 0 ]] && ! command -v gcloud >/dev/null; then
    tpu_die "gcloud not found: install the Google Cloud CLI (or use --dry-run to see the commands)"
  fi
}

# The TPU software version for JAX on an accelerator type (Cloud TPU's "TPU software versions" table).
tpu_default_version() {
  case "$1" in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    *) tpu_die "no default TPU software version for type '$1': pass --version=" ;;
  esac
}

# --zone and, when set, --project: the location flags of every gcloud TPU command.
tpu_location() {
  TPU_LOC=(--zone="$TPU_ZONE")
  [[ -z "$TPU_PROJECT" ]] || TPU_LOC+=(--project="$TPU_PROJECT")
}

# Runs a shell command line on the TPU VM's workers ("all" or a worker index) over gcloud ssh.
tpu_ssh() {
  local worker="$1" command="$2"
  tpu_location
  tpu_run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${TPU_LOC[@]}" --worker="$worker" --command="$command"
}

# Sets TPU_STATE to the slice's state: READY / ACTIVE (usable), a transitional state, PREEMPTED / TERMINATED /
# SUSPENDED / FAILED, or empty when it does not exist. With --dry-run the query is printed and the state is
# TPU_ASSUME_STATE (default PREEMPTED, so that a dry run shows the whole recovery).
tpu_state() {
  tpu_location
  local cmd
  if [[ "$TPU_QUEUED" == 1 ]]; then
    cmd=(gcloud compute tpus queued-resources describe "$TPU_NAME" "${TPU_LOC[@]}" --format="value(state.state)")
  else
    cmd=(gcloud compute tpus tpu-vm describe "$TPU_NAME" "${TPU_LOC[@]}" --format="value(state)")
  fi
  if [[ "$TPU_DRY_RUN" == 1 ]]; then
    tpu_run "${cmd[@]}"
    TPU_STATE="${TPU_ASSUME_STATE-PREEMPTED}"
  else
    # describe fails for a missing resource: that is the empty state here.
    TPU_STATE="$("${cmd[@]}" 2>/dev/null)" || TPU_STATE=""
  fi
}

# Waits until the slice is usable (a queued resource ACTIVE, a TPU VM READY); fails on a dead end.
tpu_wait_ready() {
  local waited=0 interval="${TPU_POLL_SECONDS:-30}"
  if [[ "$TPU_DRY_RUN" == 1 ]]; then
    tpu_info "dry run: would repeat this every ${interval}s until the slice is READY (ACTIVE when queued):"
    TPU_ASSUME_STATE=READY tpu_state
    return 0
  fi
  while true; do
    tpu_state
    case "$TPU_STATE" in
      READY | ACTIVE) tpu_info "$TPU_NAME is $TPU_STATE"; return 0 ;;
      FAILED | SUSPENDED | PREEMPTED | TERMINATED | "")
        tpu_die "$TPU_NAME is ${TPU_STATE:-missing}; run tpu/resume.sh (or tpu/delete.sh and tpu/create.sh)" ;;
    esac
    tpu_info "$TPU_NAME is $TPU_STATE after ${waited}s; waiting"
    sleep "$interval"
    waited=$((waited + interval))
  done
}

# A name for a run's log and pid files on the workers: the workdir's last path component.
tpu_run_name() {
  local name="${1%/}"
  name="${name##*/}"
  [[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || tpu_die "cannot name a run after the workdir '$1'; pass --run=NAME"
  echo "$name"
}

# Paths on the workers, as words for their shell: home-relative, the home directory left for them to expand.
tpu_remote_path() {
  # shellcheck disable=SC2016  # $HOME is for the workers' shell to expand
  printf '"$HOME"/%s' "$(tpu_quote "$1")"
}
