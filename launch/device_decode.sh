#!/usr/bin/env bash
# The decode measurements of issue 14 on one lent accelerator, in one go (a few minutes on an H200, compilation
# included): the paged engine configured for the paper's 65,536 new tokens, Qwen3-4B shape at batch 256 and
# Qwen3-30B-A3B shape (random bf16 init), each printing its JSON line last; copies land in
# ${OUT:-.}/device_decode_<size>.json. SMOKE=1 runs the same steps at toy sizes (CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-.}
PY=${PY:-python}
if [ -n "${SMOKE:-}" ]; then
  runs=("toy 8" "toy-moe 8")
  common=(--skip train --max-new-configured 512 --prompt-tokens 16 --new-tokens 8 --chunk-steps 4 --matmul-n 128
          --copy-mb 4)
else
  runs=("qwen3-4b 256" "qwen3-30b-a3b 128")
  common=(--skip train --max-new-configured 65536 --prompt-tokens 1024 --new-tokens 512 --chunk-steps 64)
fi
for run in "${runs[@]}"; do
  read -r size batch <<<"$run"
  $PY -m ssd_jax.bench.device --size "$size" --decode-batch "$batch" "${common[@]}" | tee "$OUT/device_decode_$size.log"
  tail -n 1 "$OUT/device_decode_$size.log" > "$OUT/device_decode_$size.json"
done
