#!/usr/bin/env bash
# The SFT measurements of issue 17 on one lent GPU, in one go (about 8 minutes on an H200, compilation included):
# the Qwen3-4B shape (random init), remat full, through `python -m ssd_jax.bench.device --skip decode`:
#   unpacked 8 x 2,048 through cuDNN (the 40.5% MFU of BUILD_NOTES §5, remeasured as this run's peer),
#   packed 8 x 8,192 (8 documents a row) and 1 x 65,536 (16 documents) through Pallas GPU attention,
#   and packed 8 x 8,192 again with --precision bf16_params_f32_master.
# Each run prints its JSON line last; copies land in ${OUT:-.}/device_sft_<name>.json. A run that fails or passes
# its time limit is recorded (its log kept) and the next one starts. SMOKE=1 runs the same steps at toy sizes (CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-.}
PY=${PY:-python}
LIMIT=${LIMIT:-170}
if [ -n "${SMOKE:-}" ]; then
  size=toy; short=32; long=64; peers=(--matmul-n 128 --copy-mb 4); attn=xla; unpacked=xla
else
  size=qwen3-4b; short=8192; long=65536; peers=(); attn=pallas_gpu; unpacked=cudnn
fi
runs=(
  "unpacked_8x$((short / 4)) --train-batch 8 --seq $((short / 4)) --segments 1 --attention $unpacked"
  "packed_8x${short} --train-batch 8 --seq $short --segments 8 --attention $attn"
  "packed_1x${long} --train-batch 1 --seq $long --segments 16 --attention $attn"
  "packed_8x${short}_bf16_master --train-batch 8 --seq $short --segments 8 --attention $attn --precision bf16_params_f32_master"
)
failed=0
for run in "${runs[@]}"; do
  read -r name args <<<"$run"
  # shellcheck disable=SC2086
  rc=0
  timeout "$LIMIT" $PY -m ssd_jax.bench.device --size "$size" --skip decode --train-steps 3 "${peers[@]}" $args \
    > "$OUT/device_sft_$name.log" 2>&1 || rc=$?
  tail -n 1 "$OUT/device_sft_$name.log" | tee "$OUT/device_sft_$name.json"
  [ "$rc" = 0 ] || { echo "device_sft $name: exit $rc (log: $OUT/device_sft_$name.log)"; failed=$((failed + 1)); }
done
echo "{\"runs\": ${#runs[@]}, \"failed\": $failed, \"out\": \"$OUT\"}"
