# shellcheck shell=bash
# Defaults for the tpu/ scripts, sourced by tpu/lib.sh. Edit them here, export them (TPU_ZONE=... in the
# environment wins over this file), or pass the scripts' flags (--zone=..., which win over both).

# The slice.
: "${TPU_NAME:=flyp}"                 # TPU VM / node name (a queued resource gets the same name)
: "${TPU_ZONE:=us-central2-b}"
: "${TPU_PROJECT:=}"                  # empty: the project gcloud is configured with
: "${TPU_TYPE:=v4-8}"                 # accelerator type: v4-8 is one host, v4-32 four hosts, v5litepod-16 ...
: "${TPU_VERSION:=}"                  # TPU software version; empty: chosen from TPU_TYPE (tpu_default_version)
: "${TPU_CAPACITY:=on-demand}"        # on-demand | spot | preemptible | reserved
: "${TPU_QUEUED:=0}"                  # 1: ask through a queued resource (waits in line for capacity)
: "${TPU_QUEUE_TIMEOUT:=}"            # queued resources only: give up after this long, e.g. 6h

# The project on the workers (paths relative to the workers' home directory).
: "${FLYP_REPO:=}"                    # empty: ship the local checkout; else a git URL cloned on every worker
: "${FLYP_REF:=HEAD}"                 # with FLYP_REPO: branch, tag or commit
: "${FLYP_PYTHON:=3.11}"              # jax >= 0.7 needs Python >= 3.11; the TPU images ship 3.10
: "${FLYP_REMOTE_DIR:=flyp_jax}"
: "${FLYP_VENV:=flyp_venv}"
: "${FLYP_LOG_DIR:=flyp_logs}"

# Files copied from gs:// into the project folder on every worker by setup.sh (space-separated), e.g. the
# checkpoint a config names by a relative path: gs://BUCKET/checkpoints/ViT-B-16.pt
: "${FLYP_FETCH:=}"

# The run.
: "${FLYP_DATA_DIR:=}"                # TFDS data_dir on the workers, e.g. gs://BUCKET/tfds
