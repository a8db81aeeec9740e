"""Llama-3.1-8B-Instruct + SSD with the paper's recipe (ssd_paper.md Table 3, Table 4, §3, §4).

Edit the three paths below (checkpoint, rStar-Coder seed, LiveCodeBench), then run:
  python -m ssd_jax.main --config=configs/llama3_1_8b_instruct.py --config.workdir=/ckpt/runs/llama8b_instruct
Hardware (mesh, engine batch, gradient accumulation): edit HARDWARE, or per run append `:gpu_8xh100` to the config
path (`--config=configs/llama3_1_8b_instruct.py:gpu_8xh100`), or export SSD_HARDWARE=gpu_8xh100. The `:arg` wins, then
SSD_HARDWARE, then HARDWARE. On a pod or cluster use launch/tpu_pod.sh or launch/slurm_gpu.sh (see their headers).
Sweep T_eval: set SWEEP = True (the Fig. 2 grid below, paper's value first), or pass e.g.
  --config.eval.ssd.temperatures='(0.5,0.7,0.9)' --config.eval.base.temperatures='(0.7,0.9,1.1)'
Sweep T_train: one workdir per value, `--config.sample.temperature=1.2` (launch/sweep.sh does the loop).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # noqa: E402  (configs/default.py: every field, and paper_config)

HARDWARE = "tpu_v5p_64"  # "tpu_v5p_64" | "gpu_8xh100" (shapes below)
SWEEP = False  # True: evaluate base and SSD over the T_eval grids below instead of the paper's single T

# Table 4 (base) and Table 3 (SSD eval); the grids are Fig. 2's ticks (0.5..1.3) with the paper's T first, so an
# interrupted sweep has the headline point already.
BASE_T, BASE_T_GRID = 0.9, (0.9, 0.5, 0.7, 1.1, 1.3)
SSD_T, SSD_T_GRID = 0.7, (0.7, 0.5, 0.9, 1.1, 1.3)

# Llama-3.1-8B: 8.03e9 params, 32 layers, d 4096, 32 q / 8 kv heads x 128, FFN 14,336, vocab 128,256 (untied).
# Train state, f32 master weights (see param_dtype): params 4 + Adam mu/nu 8 + grads 4 + accumulator 4 = 20 B/param
# = 161 GB, + 4 for the base model that sampling loaded when one process runs the pipeline (with several, the
# pipeline drops that copy while it trains).
# Saved activations with full remat: the f32 residual stream, 32 x 65,536 x 4096 x 4 B = 34 GB per 65,536-token row,
# on every chip of its tensor group.
# KV cache (bf16): 2 x 32 x 8 x 128 x 2 B = 128 KiB/token, in a paged pool of kv_cache_fraction 0.85 of the HBM the
# weights leave; a sequence holds pages for the tokens it has (sampling/engine.py). `python -m
# ssd_jax.bench.kv_capacity` replays the engine's scheduler on answers of mean 13k tokens (cap 65,536):
# 8 x H100 517 GB -> 262 sequences at once (dense 69,632-token slots: 56); a v5p host 296 GB ->
# 149 (32). engine_batch (slots) is set above those means: the pool, not the slots, decides.
SHAPES = {
    # TPU v5p-64 = 64 TensorCores = 32 chips (one JAX device each, megacore), 8 hosts x 4 chips, 95 GB HBM each.
    # Global mesh fsdp 8 x tensor 4. Sampling and evaluation run per host on its 4 chips as tensor 4 (no weight
    # all-gathers per decode step): weights 32 GB f32 / 4 = 8 GB per chip, the rest holds KV
    # pages. Training: 32 rows / (4 microbatches x fsdp 8) = 1 row
    # per chip per microbatch: 161 GB / 32 + 32 GB / 4 = 13 GB state + 34 GB residuals + one layer's recompute.
    "tpu_v5p_64": {"mesh": {"data": 1, "fsdp": -1, "expert": 1, "tensor": 4}, "engine_batch": 160, "grad_accum": 4},
    # One node of 8 x H100 80 GB, one process. Tensor 8 (8 kv heads, one per GPU) for decode: weights 4 GB per GPU,
    # the rest holds KV pages. Training: tensor 8 leaves no batch axis, so 32
    # microbatches of 1 row: 193 GB / 8 = 24 GB state + 34 GB residuals (tight: ~60 of 76 GB usable). fsdp -1 = 1
    # here, N on N nodes (SLURM; then pass --config.train.grad_accum_steps=32/N: each process splits its 32/N rows).
    "gpu_8xh100": {"mesh": {"data": 1, "fsdp": -1, "expert": 1, "tensor": 8}, "engine_batch": 256, "grad_accum": 32},
}


def get_config(hardware: str = ""):
  return default.paper_config(
      checkpoint="/ckpt/Llama-3.1-8B-Instruct",  # EDIT: a local HF directory of the model
      data_path="/data/rStar-Coder/seed_sft",  # EDIT: rStar-Coder seed_sft parquet files
      lcb_path="/data/livecodebench/code_generation_lite",  # EDIT: LiveCodeBench shards test.jsonl ... test6.jsonl
      sample={"temperature": 0.8, "top_k": 20, "top_p": 0.8},  # Table 3 (T_train)
      base_eval={"temperatures": BASE_T_GRID if SWEEP else (BASE_T,), "top_k": 0, "top_p": 0.8},  # Table 4 (no top-k)
      ssd_eval={"temperatures": SSD_T_GRID if SWEEP else (SSD_T,), "top_k": 20, "top_p": 0.8},  # Table 3
      thinking=False,  # §3: 250 warmup / 2,500 steps
      shape=default.hardware_shape(SHAPES, hardware, HARDWARE))
