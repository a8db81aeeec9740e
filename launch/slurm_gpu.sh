#!/usr/bin/env bash
#SBATCH --job-name=ssd_jax
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --exclusive
#SBATCH --time=48:00:00
#SBATCH --output=slurm-%x-%j.out
# Runs ssd_jax on SLURM GPU nodes: one process per node owning its 8 GPUs, all joined by jax.distributed through a
# coordinator on the first node. Submit from the repository root (a shared filesystem, with .venv already built:
#   python3 -m venv .venv && .venv/bin/pip install -e '.[parquet]' 'jax[cuda12]==0.10.2'; bwrap for the sandbox):
#
#   sbatch launch/slurm_gpu.sh --config=configs/qwen3_4b_instruct.py:gpu_8xh100 --config.workdir=/shared/runs/q4b
#   sbatch --nodes=4 launch/slurm_gpu.sh --config=configs/qwen3_30b_a3b_instruct.py:gpu_8xh100 \
#       --config.train.grad_accum_steps=1 --config.workdir=/shared/runs/q30b
#
# Arguments pass through to ssd_jax.main after `--config=...` (which must come first); the distributed flags are
# appended here. The workdir must be on a filesystem every node sees. Environment: PYTHON (default .venv/bin/python),
# MODULE (default ssd_jax.main; launch/sweep.sh sets ssd_jax.sweep), PORT (coordinator port; default derived from
# the job id), XLA_PYTHON_CLIENT_MEM_FRACTION (default 0.95: the configs' memory arithmetic assumes ~76 of 80 GB per
# GPU, while JAX's own default preallocates 75%).
# Evaluation runs model code under bubblewrap as root; a SLURM job usually runs as you, so it refuses unless you
# accept the weaker "bwrap-nouid" level by adding --config.eval.allow_weak_isolation=True (or evaluate as root).
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"  # sbatch runs a spooled copy of this file, so $0 is not the repo

: "${SLURM_JOB_ID:?run me with sbatch (or inside an salloc allocation)}"
PYTHON=${PYTHON:-.venv/bin/python}
COORD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
PORT=${PORT:-$((20000 + SLURM_JOB_ID % 20000))}
NTASKS=${SLURM_NTASKS:-${SLURM_NNODES:-1}}
MODULE=${MODULE:-ssd_jax.main}
export PYTHON COORD PORT MODULE
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.95}

echo "ssd_jax: $NTASKS process(es) on $SLURM_JOB_NODELIST, coordinator $COORD:$PORT" >&2
# SLURM_PROCID differs per task, so it is expanded by each task's own shell (single quotes), not here.
# shellcheck disable=SC2016
srun --ntasks="$NTASKS" --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c '
  exec "$PYTHON" -m "$MODULE" "$@" \
    --config.distributed.coordinator_address="$COORD:$PORT" \
    --config.distributed.num_processes="$SLURM_NTASKS" \
    --config.distributed.process_id="$SLURM_PROCID"' ssd_jax "$@"
