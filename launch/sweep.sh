#!/usr/bin/env bash
# Example sweep over T_train x T_eval: one run (one workdir) per T_train, each synthesizing at that temperature,
# training, and evaluating the SSD model at every T_eval. The base model does not depend on T_train, so only the
# first run evaluates it. Works with any launcher that takes ssd_jax.main's arguments:
#
#   launch/sweep.sh configs/qwen3_4b_instruct.py:gpu_8xh100                      # launch/local.sh, one after another
#   LAUNCHER="sbatch launch/slurm_gpu.sh" launch/sweep.sh configs/qwen3_4b_instruct.py:gpu_8xh100   # all queued
#   LAUNCHER=launch/tpu_pod.sh TPU_NAME=my-v5p-64 ZONE=us-east5-a WORKROOT=/mnt/shared/sweeps/q30b \
#       launch/sweep.sh configs/qwen3_30b_a3b_instruct.py --config.sample.top_k=10
#
# Usage: launch/sweep.sh CONFIG[:hardware] [more ssd_jax.main flags, given to every run]
# Environment: LAUNCHER (default launch/local.sh; split on spaces), WORKROOT (default /tmp/ssd_jax/sweep; one
# subdirectory T<T_train> per run), T_TRAINS (default "1.2 1.6 2.0"), T_EVALS (an ml_collections tuple, default
# "(0.7,0.9,1.1)"), DRY_RUN=1 prints the commands instead of running them.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$#" -lt 1 ]; then
  sed -n '2,15p' "$0" >&2
  exit 2
fi
CONFIG=$1
shift
read -r -a launcher <<< "${LAUNCHER:-launch/local.sh}"
WORKROOT=${WORKROOT:-/tmp/ssd_jax/sweep}
read -r -a t_trains <<< "${T_TRAINS:-1.2 1.6 2.0}"
T_EVALS=${T_EVALS:-(0.7,0.9,1.1)}

first=1
for t in "${t_trains[@]}"; do
  models='("ssd",)'
  if [ "$first" = 1 ]; then
    models='("base","ssd")'
  fi
  cmd=("${launcher[@]}" --config="$CONFIG" --config.workdir="$WORKROOT/T$t" --config.sample.temperature="$t"
       --config.eval.ssd.temperatures="$T_EVALS" --config.eval.models="$models" "$@")
  if [ "${DRY_RUN:-0}" = 1 ]; then
    printf '%q ' "${cmd[@]}"
    echo
  else
    echo "sweep: T_train $t -> $WORKROOT/T$t" >&2
    "${cmd[@]}"
  fi
  first=0
done
