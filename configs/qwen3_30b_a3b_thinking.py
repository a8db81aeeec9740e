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

import importlib.util
import os

from ml_collections import config_dict

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
# KV cache (bf16): 2 x 48 x 4 x 128 x 2 B = 96 KiB/token -> 6.8 GB per slot of max_cache_len 69,632.
SHAPES = {
    # TPU v5p-64 = 64 TensorCores = 32 chips (one JAX device each, megacore), 8 hosts x 4 chips, 95 GB HBM each.
    # Global mesh fsdp 8 x expert 4 (the paper used EP 8 on 8 GPUs; a host has 4 chips and sampling runs per host).
    # Sampling and evaluation per host, expert 4: experts 116 GB f32 / 4 + 6 GB replicated = 35 GB per chip; KV rows
    # are split over expert: (95 - 35 - ~10) GB / 6.8 GB = 7 slots per chip -> 24 per host. Training: 32 rows over
    # fsdp 8 x expert 4 = 1 row per chip, no accumulation: 16 B x 30.5e9 / 32 = 15 GB (+2 GB replicated attention)
    # state + the host's base copy 35 GB + 26 GB residuals = 78 GB before the MoE buffers of 4 gathered rows
    # (4 x 65,536 tokens x 64 KiB = 17 GB forward): 65,536 does not fit even with a fused attention; see seq_len below.
    "tpu_v5p_64": {"mesh": {"data": 1, "fsdp": -1, "expert": 4, "tensor": 1}, "engine_batch": 24, "grad_accum": 1},
    # One node of 8 x H100 80 GB, one process: expert 8, the paper's EP 8. Sampling and evaluation fit: experts
    # 116 GB / 8 + 6 GB = 20 GB per GPU, (76 - 20 - ~6) GB / 6.8 GB = 7 slots per GPU -> 48. SFT does NOT fit one node:
    # the f32 state is 732 GB of 640 GB (the paper trained on 8 x B200, 1.5 TB). Train on 4 nodes (sbatch --nodes=4;
    # fsdp -1 becomes 4) with --config.train.grad_accum_steps=1 (32 rows, 1 per GPU): 16 B x 30.5e9 / 32 = 15 GB state
    # + the node's base copy 20 GB + 26 GB residuals per 65,536-token row (or 3 GB at seq_len 8,192).
    "gpu_8xh100": {"mesh": {"data": 1, "fsdp": -1, "expert": 8, "tensor": 1}, "engine_batch": 48, "grad_accum": 4},
}


def _default() -> config_dict.ConfigDict:
  """configs/default.py, loaded by path: ml_collections loads config files by path, not as a package."""
  spec = importlib.util.spec_from_file_location(
      "ssd_jax_default_config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def get_config(hardware: str = "") -> config_dict.ConfigDict:
  hardware = hardware or os.environ.get("SSD_HARDWARE") or HARDWARE
  if hardware not in SHAPES:
    raise ValueError(f"unknown hardware {hardware!r}; expected one of {sorted(SHAPES)}")
  shape = SHAPES[hardware]
  config = _default()
  config.lock()  # a misspelt field below is an error, not a silently ignored new key

  # EDIT: a local HF directory (config.json, *.safetensors, tokenizer.json) of Qwen/Qwen3-30B-A3B-Thinking-2507.
  config.model.checkpoint = "/ckpt/Qwen3-30B-A3B-Thinking-2507"
  # f32 master weights: AdamW at lr 5e-6 moves a weight by ~1e-4 of its size, below bf16's 2^-8 resolution, so bf16
  # masters would round most updates away. Matmuls still run in bf16 (the checkpoint's precision).
  config.model.param_dtype = "float32"
  config.model.compute_dtype = "bfloat16"

  config.mesh.update(shape["mesh"])

  # EDIT: rStar-Coder `seed_sft` parquet files (huggingface-cli download microsoft/rStar-Coder --repo-type dataset
  # --include 'seed_sft/*'); is_passed + de-dup gives the paper's ~10.2k prompts (ssd_paper.md §1.2).
  config.data.kind = "rstar_seed"
  config.data.path = "/data/rStar-Coder/seed_sft"

  # SSD sampling, Table 3: T_train 1.2, top-k 20, top-p 0.95, one sample per prompt, 65,536 new tokens at most
  # (reasoning included: a trace cut at the limit is kept, as a raw output).
  config.sample.temperature = 1.2
  config.sample.top_k = 20
  config.sample.top_p = 0.95
  config.sample.n_per_prompt = 1
  config.sample.prompt_style = "ssd"  # the released generator's wording, no system message
  config.sample.engine.batch_size = shape["engine_batch"]  # decode slots per process (KV arithmetic above)
  config.sample.engine.max_cache_len = 69632  # 65,536 new tokens + prompts up to 4,096

  # SFT, §3 (thinking): cosine 5e-6 -> 1e-6, 50 warmup / 300 steps, checkpoint every 50, batch 32 x 65,536.
  config.train.learning_rate = 5e-6
  config.train.min_learning_rate = 1e-6
  config.train.warmup_steps = 50
  config.train.total_steps = 300
  config.train.save_interval_steps = 50
  config.train.global_batch_size = 32
  config.train.grad_accum_steps = shape["grad_accum"]
  config.train.remat = "full"
  # The paper's 65,536. The trainer's attention is dense today: one layer's backward holds ~2.5x the f32 S x S scores
  # of the heads on a chip, and this mesh keeps all 32 heads on each chip (measured with XLA on an H200: 20 / 81 GiB
  # at 8,192 / 16,384 tokens; 65,536 would need ~1.3 TB). At 8,192 a TPU chip holds ~17 GB state + 35 GB base copy
  # + 20 GB attention + ~3 GB residuals + ~6 GB MoE buffers = ~81 of 95 GB. Until a fused attention lands and the MoE
  # buffers above shrink, run with --config.train.seq_len=8192 (as third-party reproductions did: ssd_paper.md §3).
  config.train.seq_len = 65536

  # Evaluation, §4: LiveCodeBench v6 (2025-02-01 .. 2025-05-01), n = 10, pass@1 and pass@5.
  # EDIT: a local copy of livecodebench/code_generation_lite (test.jsonl ... test6.jsonl).
  config.eval.benchmark = "lcb"
  config.eval.path = "/data/livecodebench/code_generation_lite"
  config.eval.version = "release_v6"
  config.eval.start_date = "2025-02-01"
  config.eval.end_date = "2025-05-01"
  config.eval.n = 10
  config.eval.ks = (1, 5)
  config.eval.base.update({"temperatures": BASE_T_GRID if SWEEP else (BASE_T,), "top_k": 20, "top_p": 0.95})  # Table 4
  config.eval.ssd.update({"temperatures": SSD_T_GRID if SWEEP else (SSD_T,), "top_k": 20, "top_p": 0.95})  # Table 3
  return config
