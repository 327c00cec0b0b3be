#!/usr/bin/env bash
# Deletes the TPU VM (with --queued: the queued resource and its node). The workdir and data in buckets stay.
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<USAGE
Usage: tpu/delete.sh [flags]

Deletes TPU VM '$TPU_NAME' without asking. Checkpoints and results in the gs:// workdir are kept.

$TPU_COMMON_USAGE
USAGE
}

while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    *) tpu_parse_flag "$1" || tpu_die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
tpu_finish_flags
tpu_location

if [[ "$TPU_QUEUED" == 1 ]]; then
  # --force also deletes the node the queued resource holds; without it an ACTIVE request cannot be deleted.
  tpu_run gcloud compute tpus queued-resources delete "$TPU_NAME" "${TPU_LOC[@]}" --force --quiet
else
  tpu_run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${TPU_LOC[@]}" --quiet
fi
