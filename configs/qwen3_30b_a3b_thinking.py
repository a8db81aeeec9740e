"""Qwen3-30B-A3B-Thinking-2507 (MoE) + SSD with the paper's recipe (ssd_paper.md Table 3, Table 4, §3, §4).

Edit the three paths below (checkpoint, rStar-Coder seed, LiveCodeBench), then run:
  python -m ssd_jax.main --config=configs/qwen3_30b_a3b_thinking.py --config.workdir=/ckpt/runs/q30b_thinking
Hardware (mesh, engine batch, gradient accumulation): edit HARDWARE, or per run append `:gpu_8xh100` to the config
path (`--config=configs/qwen3_30b_a3b_thinking.py:gpu_8xh100`), or export SSD_HARDWARE=gpu_8xh100. The `:arg` wins, then
SSD_HARDWARE, then HARDWARE. On a pod or cluster use launch/tpu_pod.sh or launch/slurm_gpu.sh (see their headers).
Sweep T_eval: set SWEEP = True (the Fig. 2 grid below, paper's value first), or pass e.g.
  --config.eval.ssd.temperatures='(0.5,0.7,0.9)' --config.eval.base.temperatures='(0.5,0.6,0.7)'
Sweep T_train: one workdir per value, `--config.sample.temperature=1.4` (launch/sweep.sh does the loop).

Thinking: the 2507 Thinking chat template opens `<think>` in the generation prompt by itself, so sampling and
evaluation need no template switch (the config has no chat_template_kwargs field). The prompt is the same task
presentation as for instruct models, with no chain-of-thought instruction (App. C.1). The sampled reasoning trace
is part of the assistant turn and stays in the SFT targets (ssd_paper.md §1.4: targets are raw outputs).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # noqa: E402  (configs/default.py: every field, and paper_config)

HARDWARE = "tpu_v5p_64"  # "tpu_v5p_64" | "gpu_8xh100" (shapes below)
SWEEP = False  # True: evaluate base and SSD over the T_eval grids below instead of the paper's single T

# Table 4 (base) and Table 3 (SSD eval); the grids are Fig. 2's ticks (0.5..1.3) with the paper's T first, so an
# interrupted sweep has the headline point already.
BASE_T, BASE_T_GRID = 0.6, (0.6, 0.5, 0.7, 0.9, 1.1, 1.3)
SSD_T, SSD_T_GRID = 0.7, (0.7, 0.5, 0.6, 0.9, 1.1, 1.3)

# Qwen3-30B-A3B (Thinking: same backbone): 30.5e9 params (3.3e9 active), 48 layers, d 2048, 32 q / 4 kv heads
# x 128, 128 experts (top 8) of FFN 768, vocab 151,936 (untied). ~29e9 params are experts (sharded over expert x
# fsdp), ~1.5e9 attention and embeddings (sharded over fsdp, replicated over expert).
# Train state, f32 master weights (see param_dtype): params 4 + Adam mu/nu 8 + grads 4 + accumulator 4 (only with
# grad_accum > 1) + the base model that sampling loaded, which the pipeline keeps 4 = 20-24 B/param = 610-732 GB
# (on a pod that last copy sits on each host's chips).
# Saved activations with full remat: the f32 residual stream, 48 x 65,536 x 2048 x 4 B = 26 GB per 65,536-token row.
# MoE layer: tokens are all-gathered over the expert axis and the local-expert pass materialises every (token,
# expert) assignment: 8 assignments x 2048 x 4 B = 64 KiB per token in f32 for the output alone.
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
    # state + the host's base copy 35 GB + 26 GB residuals = 78 GB before the MoE buffers of 4 gathered rows
    # (4 x 65,536 tokens x 64 KiB = 17 GB forward): 65,536 does not fit even with a fused attention; see seq_len below.
    "tpu_v5p_64": {"mesh": {"data": 1, "fsdp": -1, "expert": 4, "tensor": 1}, "engine_batch": 160, "grad_accum": 1},
    # One node of 8 x H100 80 GB, one process: expert 8, the paper's EP 8. Sampling and evaluation fit: experts
    # 116 GB / 8 + 6 GB = 20 GB per GPU, KV pages fill the rest. SFT does NOT fit one node:
    # the f32 state is 732 GB of 640 GB (the paper trained on 8 x B200, 1.5 TB). Train on 4 nodes (sbatch --nodes=4;
    # fsdp -1 becomes 4) with --config.train.grad_accum_steps=1 (32 rows, 1 per GPU): 16 B x 30.5e9 / 32 = 15 GB state
    # + the node's base copy 20 GB + 26 GB residuals per 65,536-token row (or 3 GB at seq_len 8,192).
    "gpu_8xh100": {"mesh": {"data": 1, "fsdp": -1, "expert": 8, "tensor": 1}, "engine_batch": 256, "grad_accum": 4},
}


def get_config(hardware: str = ""):
  return default.paper_config(
      checkpoint="/ckpt/Qwen3-30B-A3B-Thinking-2507",  # EDIT: a local HF directory of the model
      data_path="/data/rStar-Coder/seed_sft",  # EDIT: rStar-Coder seed_sft parquet files
      lcb_path="/data/livecodebench/code_generation_lite",  # EDIT: LiveCodeBench shards test.jsonl ... test6.jsonl
      sample={"temperature": 1.2, "top_k": 20, "top_p": 0.95},  # Table 3 (T_train)
      base_eval={"temperatures": BASE_T_GRID if SWEEP else (BASE_T,), "top_k": 20, "top_p": 0.95},  # Table 4
      ssd_eval={"temperatures": SSD_T_GRID if SWEEP else (SSD_T,), "top_k": 20, "top_p": 0.95},  # Table 3
      thinking=True,  # §3: 50 warmup / 300 steps
      shape=default.hardware_shape(SHAPES, hardware, HARDWARE))
