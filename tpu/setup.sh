#!/usr/bin/env bash
# Installs the project on every worker of the slice: the local checkout (committed files plus uncommitted
# changes to them) or, with --repo, a git clone; then a Python virtual environment with the package and
# jax[tpu] at the versions of requirements.lock, and a check that every worker sees its TPU devices.
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<USAGE
Usage: tpu/setup.sh [flags] [--repo=URL [--ref=REF]] [--fetch=gs://... ...] [--no-check]

Ships this checkout (default) or clones --repo on every worker of '$TPU_NAME' into ~/$FLYP_REMOTE_DIR, installs
it with jax[tpu] into ~/$FLYP_VENV (Python $FLYP_PYTHON, through uv: jax needs Python >= 3.11, the TPU images
have 3.10) and checks that every worker sees its TPU devices. Run it again after changing the code.

$TPU_COMMON_USAGE
  --repo=URL             clone this git repository on the workers instead (FLYP_REPO)
  --ref=REF              with --repo: the branch, tag or commit (FLYP_REF, now: $FLYP_REF)
  --fetch=gs://BUCKET/F  copy F into ~/$FLYP_REMOTE_DIR on every worker, e.g. the checkpoint a config names
                         (repeatable; FLYP_FETCH)
  --no-check             skip the device check (it needs the TPU free: not while a run is going)
USAGE
}

check=1
while (($#)); do
  case "$1" in
    --repo=*) FLYP_REPO="${1#*=}" ;;
    --ref=*) FLYP_REF="${1#*=}" ;;
    --fetch=*) FLYP_FETCH="${FLYP_FETCH:+$FLYP_FETCH }${1#*=}" ;;
    --no-check) check=0 ;;
    -h | --help) usage; exit 0 ;;
    *) tpu_parse_flag "$1" || tpu_die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
tpu_finish_flags
tpu_location

# Space-separated gs:// paths (names with spaces are not supported).
read -r -a files <<<"$FLYP_FETCH"
for file in "${files[@]}"; do
  [[ "$file" == gs://* ]] || tpu_die "--fetch takes gs:// paths, not '$file'"
done

dir="$(tpu_remote_path "$FLYP_REMOTE_DIR")"
venv="$(tpu_remote_path "$FLYP_VENV")"

if [[ -z "$FLYP_REPO" ]]; then
  # The tree to ship: committed files with their uncommitted changes (untracked files are not shipped). Built in
  # a temporary index, so the checkout's own index is neither changed nor locked.
  git -C "$REPO_ROOT" rev-parse --verify -q HEAD >/dev/null || tpu_die "$REPO_ROOT is not a git checkout; use --repo=URL"
  index_dir="$(mktemp -d)"
  export GIT_INDEX_FILE="$index_dir/index"
  git -C "$REPO_ROOT" read-tree HEAD
  git -C "$REPO_ROOT" add -u
  tree="$(git -C "$REPO_ROOT" write-tree)"
  unset GIT_INDEX_FILE
  rm -rf "$index_dir"
  archive="${TMPDIR:-/tmp}/flyp_jax-$TPU_NAME.tar.gz"
  tpu_run git -C "$REPO_ROOT" archive --format=tar.gz --output="$archive" "$tree"
  tpu_run gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME:flyp_jax.tar.gz" "${TPU_LOC[@]}" --worker=all
  fetch="rm -rf $dir && mkdir -p $dir && tar -xzf flyp_jax.tar.gz -C $dir && rm flyp_jax.tar.gz"
else
  repo="$(tpu_quote "$FLYP_REPO")"
  ref="$(tpu_quote "$FLYP_REF")"
  fetch="if [ ! -d $dir/.git ]; then rm -rf $dir && git clone -q $repo $dir; fi"
  fetch+=" && git -C $dir fetch -q $repo $ref && git -C $dir checkout -q --detach FETCH_HEAD"
fi

# Checkpoints and other large files stay out of the repository; the TPU images come with gcloud.
for file in "${files[@]}"; do
  fetch+=" && gcloud storage cp $(tpu_quote "$file") $dir/"
done

# uv brings its own Python when the image's is too old; installed per user, no root needed.
install="python3 -m pip install -q --user -U uv"
install+=" && { [ -x $venv/bin/python ] || \"\$HOME\"/.local/bin/uv venv -q --python $(tpu_quote "$FLYP_PYTHON") $venv; }"
install+=" && \"\$HOME\"/.local/bin/uv pip install -q --python $venv/bin/python -c $dir/requirements.lock -e $dir'[tpu]'"

steps="set -e; $fetch; $install"
if [[ "$check" == 1 ]]; then
  # Every worker must run this at once: on a pod slice, initialisation waits for all hosts.
  steps+="; $venv/bin/python -c 'import jax; jax.distributed.initialize(); print(f\"worker {jax.process_index()}/{jax.process_count()}: {jax.local_device_count()} of {jax.device_count()} devices\")'"
fi
tpu_ssh all "$steps"
if [[ "$TPU_DRY_RUN" == 0 && -z "$FLYP_REPO" ]]; then
  rm -f "$archive"
fi
