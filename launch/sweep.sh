#!/usr/bin/env bash
# A T_train x T_eval grid (the paper's Fig. 3) as one job per cell: each job is `python -m ssd_jax.sweep --cells=<cell>`
# (synthesize at that cell's settings, train, evaluate the SSD model at every eval.ssd.temperatures), the base
# model is its own job (`base`), all under one workdir, laid out as ssd_jax.sweep lays it out (<workdir>/<cell>).
# Cells come from the config's CELLS (configs/smollm2_grid.py) or from T_TRAINS for a config without them (the
# paper configs). Works with any launcher that takes ssd_jax.main's arguments (they run MODULE=ssd_jax.sweep):
#
#   launch/sweep.sh configs/smollm2_grid.py                                     # launch/local.sh, one after another
#   T_TRAINS="1.2 1.6 2.0" LAUNCHER="sbatch launch/slurm_gpu.sh" \
#       launch/sweep.sh configs/qwen3_4b_instruct.py:gpu_8xh100 --config.workdir=/shared/sweeps/q4b   # all queued
#   T_TRAINS="1.2 1.6" LAUNCHER=launch/tpu_pod.sh TPU_NAME=my-v5p-64 ZONE=us-east5-a \
#       launch/sweep.sh configs/qwen3_30b_a3b_instruct.py --config.workdir=/mnt/shared/sweeps/q30b
#
# Usage: launch/sweep.sh CONFIG[:hardware] [--config.* overrides, given to every cell]
# Environment: LAUNCHER (default launch/local.sh; split on spaces), T_TRAINS (one cell T<t> per temperature
# instead of the config's CELLS), DRY_RUN=1 prints the commands instead of running them. When the jobs are done
# (at once with the local launcher), the report: python -m ssd_jax.sweep --config=CONFIG [...] --report_only
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$#" -lt 1 ]; then
  sed -n '2,17p' "$0" >&2
  exit 2
fi
CONFIG=$1
shift
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
read -r -a launcher <<< "${LAUNCHER:-launch/local.sh}"
grid=(--config="$CONFIG")
if [ -n "${T_TRAINS:-}" ]; then
  grid+=(--t_train="$(echo "$T_TRAINS" | tr -s ' ' ',')")
fi

# The cell names, from the same code that runs them (the last line of --list_cells is {"cells": [...]}).
listing=$(JAX_PLATFORMS=cpu "$PYTHON" -m ssd_jax.sweep "${grid[@]}" "$@" --list_cells | tail -n 1)
read -r -a cells <<< "$("$PYTHON" -c 'import json, sys; print(" ".join(json.loads(sys.argv[1])["cells"]))' "$listing")"

for cell in "${cells[@]}"; do
  cmd=("${launcher[@]}" "${grid[@]}" --cells="$cell" "$@")
  if [ "${DRY_RUN:-0}" = 1 ]; then
    printf 'MODULE=ssd_jax.sweep '
    printf '%q ' "${cmd[@]}"
    echo
  else
    echo "sweep: cell $cell" >&2
    MODULE=ssd_jax.sweep "${cmd[@]}"
  fi
done
report=("$PYTHON" -m ssd_jax.sweep "${grid[@]}" "$@" --report_only)
if [ "${DRY_RUN:-0}" = 1 ] || [ "${launcher[0]}" != launch/local.sh ]; then
  echo "when every cell is done: $(printf '%q ' "${report[@]}")" >&2
else
  "${report[@]}"
fi
