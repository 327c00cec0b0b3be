#!/usr/bin/env bash
# Creates the TPU VM or pod slice: directly, or through a queued resource that waits for capacity; on-demand,
# spot, preemptible or reserved. Waits until it is ready unless --no-wait.
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<USAGE
Usage: tpu/create.sh [flags] [--no-wait]

Creates TPU VM '$TPU_NAME' (a pod slice when the type spans several hosts, e.g. v4-32) and waits until it is
ready. With --queued the request waits in Cloud TPU's queue until capacity is free.

$TPU_COMMON_USAGE
  --no-wait              return once the request is made
USAGE
}

wait=1
while (($#)); do
  case "$1" in
    --no-wait) wait=0 ;;
    -h | --help) usage; exit 0 ;;
    *) tpu_parse_flag "$1" || tpu_die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
tpu_finish_flags
tpu_location

capacity=()
case "$TPU_CAPACITY" in
  spot) capacity=(--spot) ;;
  preemptible) capacity=(--preemptible) ;;
  reserved) capacity=(--reserved) ;;
esac

if [[ "$TPU_QUEUED" == 1 ]]; then
  # The queued resource and its node share the name, so every other script addresses the node by TPU_NAME.
  timeout=()
  [[ -z "$TPU_QUEUE_TIMEOUT" ]] || timeout=(--valid-until-duration="$TPU_QUEUE_TIMEOUT")
  tpu_run gcloud compute tpus queued-resources create "$TPU_NAME" --node-id="$TPU_NAME" "${TPU_LOC[@]}" \
    --accelerator-type="$TPU_TYPE" --runtime-version="$TPU_VERSION" "${capacity[@]}" "${timeout[@]}"
else
  tpu_run gcloud compute tpus tpu-vm create "$TPU_NAME" "${TPU_LOC[@]}" \
    --accelerator-type="$TPU_TYPE" --version="$TPU_VERSION" "${capacity[@]}"
fi

if [[ "$wait" == 1 ]]; then
  tpu_wait_ready
fi
