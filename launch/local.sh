#!/usr/bin/env bash
# Runs ssd_jax on this machine, all local devices on one mesh. Arguments pass through to ssd_jax.main:
#   launch/local.sh --config=configs/tiny.py --stage=synthesize --config.sample.temperature=1.2
# CPU_DEVICES=8 splits the host CPU into 8 fake devices (to try a mesh layout without accelerators).
# MODULE=ssd_jax.sweep runs the grid runner instead (launch/sweep.sh sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
if [ -n "${CPU_DEVICES:-}" ]; then
  export JAX_PLATFORMS=cpu XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${CPU_DEVICES}"
fi
exec "$PYTHON" -m "${MODULE:-ssd_jax.main}" "$@"
