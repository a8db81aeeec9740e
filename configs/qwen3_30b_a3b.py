"""Qwen3-30B-A3B (MoE): the backbone that configs/qwen3_30b_a3b_instruct.py (Qwen3-30B-A3B-Instruct-2507) and
configs/qwen3_30b_a3b_thinking.py (Qwen3-30B-A3B-Thinking-2507: same backbone) share: its shape, memory arithmetic
and hardware table.

Not a config to run: pass one of the two variant files to `--config=`. What is edited here applies to both:
HARDWARE picks the default hardware (per run, append `:gpu_8xh100` to the variant's path or export
SSD_HARDWARE=gpu_8xh100; the `:arg` wins, then SSD_HARDWARE, then HARDWARE), SHAPES holds the mesh, engine batch
and gradient accumulation of each hardware.
"""

HARDWARE = "tpu_v5p_64"  # "tpu_v5p_64" | "gpu_8xh100" (shapes below)

# Qwen3-30B-A3B: 30.5e9 params (3.3e9 active), 48 layers, d 2048, 32 q / 4 kv heads x 128, 128 experts (top 8) of
# FFN 768, vocab 151,936 (untied). ~29e9 params are experts (sharded over expert x fsdp), ~1.5e9 attention and
# embeddings (sharded over fsdp, replicated over expert).
# Train state, f32 master weights (see param_dtype): params 4 + Adam mu/nu 8 + grads 4 + accumulator 4 (only with
# grad_accum > 1) = 16-20 B/param = 488-610 GB, + 4 for the base model that sampling loaded when one process runs the
# pipeline (with several, the pipeline drops that copy while it trains).
# Saved activations with full remat: the f32 residual stream, 48 x 65,536 x 2048 x 4 B = 26 GB per 65,536-token row.
# MoE layer: tokens are all-gathered over the expert axis and each local-expert pass materialises every (token,
# expert) assignment of its 8,192 tokens: 8 assignments x 2048 x 4 B = 64 KiB per token in f32 for the output alone.
# KV cache (bf16): 2 x 48 x 4 x 128 x 2 B = 96 KiB/token, in a paged pool of kv_cache_fraction 0.85 of the HBM the
# weights leave; a sequence holds pages for the tokens it has (sampling/engine.py). `python -m
# ssd_jax.bench.kv_capacity` replays the engine's scheduler on answers of mean 13k tokens (cap 65,536):
# 8 x H100 440 GB -> 306 sequences at once (dense 69,632-token slots: 64); a v5p host 219 GB ->
# 147 (32). engine_batch (slots) is set above those means: the pool, not the slots, decides.
SHAPES = {
    # TPU v5p-64 = 64 TensorCores = 32 chips (one JAX device each, megacore), 8 hosts x 4 chips, 95 GB HBM each.
    # Global mesh fsdp 8 x expert 4 (the paper used EP 8 on 8 GPUs; a host has 4 chips and sampling runs per host).
    # Sampling and evaluation per host, expert 4: experts 116 GB f32 / 4 + 6 GB replicated = 35 GB per chip; KV pages
    # split over expert (each expert shard is a data shard of the engine) and fill the rest. Training: 32 rows over
    # fsdp 8 x expert 4 = 1 row per chip, no accumulation: 16 B x 30.5e9 / 32 = 15 GB (+2 GB replicated attention)
    # state + 26 GB residuals + the MoE buffers of 4 gathered rows, which the experts take in passes of 8,192 tokens
    # (~1 GB each; layers.MOE_TOKENS_PER_PASS). The pipeline drops the host's sampling copy of the base model while it
    # trains (evaluation reloads it). The compiler's numbers (2026-12-02, libtpu 0.0.42, BUILD_NOTES §14), packed or
    # not: 74.15 GiB per chip of 95 (temporaries 61.9 GiB): `python -m ssd_jax.bench.memory --topology=v5p-64
    # --arch=qwen3-30b-a3b --config=configs/qwen3_30b_a3b_instruct.py:tpu_v5p_64` gives its verdict without a TPU.
    "tpu_v5p_64": {"mesh": {"data": 1, "fsdp": -1, "expert": 4, "tensor": 1}, "engine_batch": 160, "grad_accum": 1},
    # One node of 8 x H100 80 GB, one process: expert 8, the paper's EP 8. Sampling and evaluation fit: experts
    # 116 GB / 8 + 6 GB = 20 GB per GPU, KV pages fill the rest. SFT does NOT fit one node:
    # the f32 state is 732 GB of 640 GB (the paper trained on 8 x B200, 1.5 TB). Train on 4 nodes (sbatch --nodes=4;
    # fsdp -1 becomes 4) with --config.train.grad_accum_steps=1 (32 rows, 1 per GPU): 16 B x 30.5e9 / 32 = 15 GB state
    # + 26 GB residuals per 65,536-token row + one MoE pass (arithmetic: no GPU compiles without one).
    "gpu_8xh100": {"mesh": {"data": 1, "fsdp": -1, "expert": 8, "tensor": 1}, "engine_batch": 256, "grad_accum": 4},
}
