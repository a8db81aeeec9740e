#!/usr/bin/env bash
# Runs ssd_jax on every worker of an EXISTING TPU VM pod slice (creates and deletes nothing). Each worker gets the
# code and the environment, then all run the same `python -m ssd_jax.main "$@"`; jax.distributed finds the pod by
# itself (config.distributed.auto), and the mesh spans every chip.
#
#   TPU_NAME=my-v5p-64 ZONE=us-east5-a launch/tpu_pod.sh \
#       --config=configs/qwen3_4b_instruct.py:tpu_v5p_64 --config.workdir=/mnt/shared/runs/q4b_instruct
#
# The workdir, checkpoint, data and LiveCodeBench paths must be the same files on every worker (an NFS/Filestore
# mount or gcsfuse), since all processes write one workdir. Arguments pass through unchanged (quoted for the remote
# shell), so `--config=...` must come before any `--config.x=...` override.
#
# Environment:
#   TPU_NAME, ZONE   the slice and its zone (required); PROJECT  gcloud project (default: gcloud's)
#   SYNC             git (default when REPO_URL is set): clone/fetch REPO_URL at REF on each worker;
#                    scp: copy this checkout's tracked and untracked-but-not-ignored files (default otherwise)
#   REPO_URL, REF    what SYNC=git checks out (REF default: this checkout's HEAD commit)
#   REMOTE_DIR       where the code lives on the workers (default: ssd_jax, under the remote home)
#   SETUP=0          skip the venv / pip / apt step (a rerun on a slice that is already set up)
#   EXTRAS           pip extras of ssd_jax to install (default: parquet, for rStar-Coder's parquet files)
#   PYTHON_BIN       interpreter for the venv (default python3.11, apt-installed if missing: ssd_jax needs >= 3.11,
#                    and Ubuntu 22.04 TPU VM images ship 3.10)
#   AS_ROOT=0        run the job as the login user instead of through sudo (default 1: the evaluation sandbox
#                    drops every program to its own uid, which needs root; as a plain user evaluation refuses
#                    unless you also pass --config.eval.allow_weak_isolation=True)
#   MODULE           what every worker runs (default ssd_jax.main; launch/sweep.sh sets ssd_jax.sweep)
#   DRY_RUN=1        print the commands instead of running them
set -euo pipefail
cd "$(dirname "$0")/.."

: "${TPU_NAME:?set TPU_NAME to the TPU VM slice name}"
: "${ZONE:?set ZONE to the slice zone}"
REMOTE_DIR=${REMOTE_DIR:-ssd_jax}
REPO_URL=${REPO_URL:-}
SYNC=${SYNC:-$([ -n "$REPO_URL" ] && echo git || echo scp)}
REF=${REF:-$(git rev-parse HEAD 2>/dev/null || echo main)}
SETUP=${SETUP:-1}
EXTRAS=${EXTRAS:-parquet}
PYTHON_BIN=${PYTHON_BIN:-python3.11}
JAX_VERSION=${JAX_VERSION:-0.10.2}  # pyproject.toml pins jax/jaxlib; jax[tpu] adds the matching libtpu
AS_ROOT=${AS_ROOT:-1}

gcloud_tpu=(gcloud compute tpus tpu-vm)
where=(--zone "$ZONE")
if [ -n "${PROJECT:-}" ]; then
  where+=(--project "$PROJECT")
fi

run() {
  if [ "${DRY_RUN:-0}" = 1 ]; then
    printf '%q ' "$@"
    echo
  else
    "$@"
  fi
}

# 1. The code, on every worker.
if [ "$SYNC" = git ]; then
  : "${REPO_URL:?SYNC=git needs REPO_URL}"
  dir=$(printf %q "$REMOTE_DIR")
  sync_cmd="set -e; [ -d $dir/.git ] || git clone -q $(printf %q "$REPO_URL") $dir;"
  sync_cmd+=" cd $dir && git fetch -q origin && git checkout -q $(printf %q "$REF")"
  run "${gcloud_tpu[@]}" ssh "$TPU_NAME" "${where[@]}" --worker=all --command "$sync_cmd"
else
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  tarball="$tmp/ssd_jax_src.tar.gz"
  # Tracked files plus new ones git does not ignore: no .venv, no workdirs, no caches.
  git ls-files -z --cached --others --exclude-standard | tar --ignore-failed-read -czf "$tarball" --null -T -
  run "${gcloud_tpu[@]}" scp "$tarball" "$TPU_NAME:ssd_jax_src.tar.gz" "${where[@]}" --worker=all
  run "${gcloud_tpu[@]}" ssh "$TPU_NAME" "${where[@]}" --worker=all \
      --command "set -e; mkdir -p $(printf %q "$REMOTE_DIR"); tar -xzf ssd_jax_src.tar.gz -C $(printf %q "$REMOTE_DIR")"
fi

# 2. The environment: a venv with ssd_jax and jax[tpu]; bubblewrap isolates the evaluation sandbox.
if [ "$SETUP" = 1 ]; then
  setup_cmd="set -e; cd $(printf %q "$REMOTE_DIR");"
  setup_cmd+=" need=''; command -v bwrap >/dev/null || need=bubblewrap;"
  setup_cmd+=" command -v $PYTHON_BIN >/dev/null || need=\"\$need $PYTHON_BIN $PYTHON_BIN-venv\";"
  setup_cmd+=" [ -z \"\$need\" ] || { sudo apt-get update -qq && sudo apt-get install -y -qq \$need; };"
  setup_cmd+=" [ -x .venv/bin/python ] || $PYTHON_BIN -m venv .venv;"
  setup_cmd+=" .venv/bin/pip install -q --upgrade pip;"
  setup_cmd+=" .venv/bin/pip install -q -e $(printf %q ".[${EXTRAS}]") $(printf %q "jax[tpu]==${JAX_VERSION}")"
  setup_cmd+=" -f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
  run "${gcloud_tpu[@]}" ssh "$TPU_NAME" "${where[@]}" --worker=all --command "$setup_cmd"
fi

# 3. The same command on every worker (output of all workers, interleaved).
args=""
if [ "$#" -gt 0 ]; then
  args=$(printf '%q ' "$@")
fi
run "${gcloud_tpu[@]}" ssh "$TPU_NAME" "${where[@]}" --worker=all \
    --command "cd $(printf %q "$REMOTE_DIR") && exec $([ "$AS_ROOT" = 1 ] && echo "sudo -E ").venv/bin/python -m ${MODULE:-ssd_jax.main} $args"
