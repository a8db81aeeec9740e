"""Qwen3-4B: the backbone that configs/qwen3_4b_instruct.py (Qwen3-4B-Instruct-2507) and configs/qwen3_4b_thinking.py
(Qwen3-4B-Thinking-2507: same backbone) share: its shape, memory arithmetic and hardware table.

Not a config to run: pass one of the two variant files to `--config=`. What is edited here applies to both:
HARDWARE picks the default hardware (per run, append `:gpu_8xh100` to the variant's path or export
SSD_HARDWARE=gpu_8xh100; the `:arg` wins, then SSD_HARDWARE, then HARDWARE), SHAPES holds the mesh, engine batch
and gradient accumulation of each hardware.
"""

HARDWARE = "tpu_v5p_64"  # "tpu_v5p_64" | "gpu_8xh100" (shapes below)

# Qwen3-4B: 4.02e9 params, 36 layers, d 2560, 32 q / 8 kv heads x 128, FFN 9728, vocab 151,936 (tied).
# Train state, f32 master weights (see param_dtype): params 4 + Adam mu/nu 8 + grads 4 + accumulator 4 = 20 B/param
# = 80 GB, + 4 for the base model that sampling loaded when one process runs the pipeline (with several, the
# pipeline drops that copy while it trains).
# Saved activations with full remat: the f32 residual stream, 36 x 65,536 x 2560 x 4 B = 24 GB per 65,536-token row,
# on every chip of its tensor group.
# KV cache (bf16): 2 x 36 x 8 x 128 x 2 B = 144 KiB/token, in a paged pool of kv_cache_fraction 0.85 of the HBM the
# weights leave; a sequence holds pages for the tokens it has (sampling/engine.py). `python -m
# ssd_jax.bench.kv_capacity` replays the engine's scheduler on answers of mean 13k tokens (cap 65,536):
# 8 x H100 530 GB -> 239 sequences at once (dense 69,632-token slots: 51); a v5p host 309 GB ->
# 139 (30). engine_batch (slots) is set above those means: the pool, not the slots, decides.
SHAPES = {
    # TPU v5p-64 = 64 TensorCores = 32 chips (one JAX device each, megacore), 8 hosts x 4 chips, 95 GB HBM each.
    # Global mesh fsdp 8 x tensor 4. Sampling and evaluation run per host on its 4 chips as tensor 4 (no weight
    # all-gathers per decode step): weights 16 GB f32 / 4 = 4 GB per chip, the rest holds KV
    # pages. Training: 32 rows / (4 microbatches x fsdp 8) = 1 row per chip per microbatch. The compiler's numbers
    # for this step at 65,536, packed or not (`python -m ssd_jax.bench.memory --topology=v5p-64 --arch=qwen3-4b
    # --config=configs/qwen3_4b_instruct.py:tpu_v5p_64`, libtpu 0.0.42, BUILD_NOTES §14): train state 1.4 GiB per
    # chip, temporaries 33.0 GiB, total 34.4 GiB of 95 GiB (2026-12-02, layers under lax.scan; an upper bound: the
    # scheduler spends spare HBM). With several processes the pipeline holds no other copy of the base model.
    "tpu_v5p_64": {"mesh": {"data": 1, "fsdp": -1, "expert": 1, "tensor": 4}, "engine_batch": 160, "grad_accum": 4},
    # One node of 8 x H100 80 GB, one process. Tensor 8 (8 kv heads, one per GPU) for decode: weights 2 GB per GPU,
    # the rest holds KV pages. Training: tensor 8 leaves no batch axis, so 32
    # microbatches of 1 row: 96 GB / 8 = 12 GB state + 24 GB residuals (arithmetic: no GPU compiles without one; on
    # the node, `python -m ssd_jax.bench.memory --config=...:gpu_8xh100` gives the compiler's numbers). fsdp -1 = 1
    # here, N on N nodes (SLURM; then pass --config.train.grad_accum_steps=32/N, since each process splits its 32/N
    # rows into microbatches).
    "gpu_8xh100": {"mesh": {"data": 1, "fsdp": -1, "expert": 1, "tensor": 8}, "engine_batch": 256, "grad_accum": 32},
}
