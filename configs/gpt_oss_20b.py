"""GPT-OSS-20B at high reasoning effort + SSD with the paper's recipe (ssd_paper.md Table 3, Table 4, §3, §4; the
revised version's sixth model: LiveCodeBench v6 pass@1 69.1 -> 74.4).

Edit the three paths below (checkpoint, rStar-Coder seed, LiveCodeBench), then run:
  python -m ssd_jax.main --config=configs/gpt_oss_20b.py --config.workdir=/ckpt/runs/gpt_oss_20b
The checkpoint is openai/gpt-oss-20b as released (MXFP4 experts, dequantized on load onto each expert shard).
Hardware (mesh, engine batch, gradient accumulation): edit HARDWARE, or per run append `:gpu_8xh100` to the config
path (`--config=configs/gpt_oss_20b.py:gpu_8xh100`), or export SSD_HARDWARE=gpu_8xh100. The `:arg` wins, then
SSD_HARDWARE, then HARDWARE. On a pod or cluster use launch/tpu_pod.sh or launch/slurm_gpu.sh (see their headers).
Sweep T_eval: set SWEEP = True (the grids below, paper's value first), or pass e.g.
  --config.eval.ssd.temperatures='(0.8,1.0,1.2)' --config.eval.base.temperatures='(0.8,1.0,1.2)'
Sweep T_train: one workdir per value, `--config.sample.temperature=1.0` (launch/sweep.sh does the loop).

Reasoning effort: the harmony template writes "Reasoning: <effort>" into its system message; REASONING_EFFORT reaches
it through chat_template_kwargs for synthesis (and so for the SFT targets, rendered as the prompts were) and for both
evaluations, or per run `--config.sample.chat_template_kwargs.reasoning_effort=medium` (and eval's). The sampled
reasoning (analysis channel) and answer (final channel) are the SFT target, rendered by the checkpoint's template as
a final assistant turn, i.e. exactly the sampled tokens; evaluation grades the final channel (models/harmony.py).
The template also writes "Current date: <today>" into the system message, as transformers renders it, so prompts
rendered on different days differ in that line.

Schedule: the paper does not state GPT-OSS-20B's iterations and warmup (ssd_paper.md §3); as a reasoning model it
gets the thinking models' 50 warmup / 300 steps (inferred).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # noqa: E402  (configs/default.py: every field, and paper_config)

HARDWARE = "tpu_v5p_64"  # "tpu_v5p_64" | "gpu_8xh100" (shapes below; SFT needs the TPU slice, see there)
SWEEP = False  # True: evaluate base and SSD over the T_eval grids below instead of the paper's single T
REASONING_EFFORT = "high"  # the paper's setting: "low" | "medium" | "high"

# Table 4 (base: T 1.0, no truncation) and Table 3 (SSD eval: T 1.0, top-k 20, top-p 0.95); the grids span Fig. 2's
# range around the paper's T, which comes first so an interrupted sweep has the headline point already.
BASE_T, BASE_T_GRID = 1.0, (1.0, 0.6, 0.8, 1.2, 1.4)
SSD_T, SSD_T_GRID = 1.0, (1.0, 0.6, 0.8, 1.2, 1.4)

# GPT-OSS-20B: 20.91e9 params (3.6e9 active per token without the embedding table), 24 layers alternating
# sliding-window (128) and full attention, d 2880, 64 q / 8 kv heads x 64 with one sink logit per head, 32 experts
# (top 4) of FFN 2880 with biases, vocab 201,088 (untied). 19.12e9 params are experts (sharded over expert x fsdp x
# tensor), 1.80e9 attention, router and embeddings (fsdp x tensor, replicated over expert).
# Train state, f32 master weights (see param_dtype): params 4 + Adam mu/nu 8 + grads 4 + accumulator 4 (only with
# grad_accum > 1) = 16-20 B/param = 335-418 GB, + 4 for the base model that sampling loaded when one process runs the
# pipeline (with several, the pipeline drops that copy while it trains).
# Saved activations with full remat: the f32 residual stream, 24 x 65,536 x 2880 x 4 B = 18 GB per 65,536-token row.
# MoE layer: tokens are all-gathered over the expert axis and the local-expert pass materialises every (token,
# expert) assignment: 4 assignments x 2880 x 4 B = 45 KiB per token in f32 for the output alone.
# Attention: splash on TPU computes the sinks and the sliding window (memory linear in S); jax's GPU kernels (cuDNN,
# Pallas) have no sink logits, so on GPUs train.attention "auto" falls back to XLA's dense attention, whose f32
# scores are 64 x 65,536^2 x 4 B = 1.1 TB per 65,536-token row and layer: the paper's SFT length runs on the TPU slice.
# KV cache (bf16): 2 x 24 x 8 x 64 x 2 B = 48 KiB/token (the sliding layers keep every token's keys too), in a paged
# pool of kv_cache_fraction 0.85 of the HBM the weights leave. `python -m ssd_jax.bench.kv_capacity` replays the
# engine's scheduler on answers of mean 13k tokens (cap 65,536): 8 x H100 473 GB -> 753 sequences at once (the 1,024
# slots bind; dense 69,632-token slots: 138); a v5p host 252 GB -> 359 (73). engine_batch (slots) is set near those
# means: high-effort answers run longer than the stand-in's, so the pool, not the slots, decides.
SHAPES = {
    # TPU v5p-64 = 64 TensorCores = 32 chips (one JAX device each, megacore), 8 hosts x 4 chips, 95 GB HBM each.
    # Global mesh fsdp 8 x expert 2 x tensor 2. Sampling and evaluation per host as expert 2 x tensor 2: experts
    # 76 GB f32 / 4 + 7 GB / 2 (tensor) = 23 GB per chip, KV pages (split over expert, heads over tensor) fill the
    # rest. Training: 32 rows / (2 microbatches x fsdp 8 x expert 2) = 1 row per chip-pair per microbatch:
    # 20 B x 19.12e9 / 32 + 20 B x 1.80e9 / 16 = 14 GB state + 18 GB residuals + the MoE buffers of one pass of
    # 8,192 gathered tokens (layers.MOE_TOKENS_PER_PASS; ~1 GB) = ~33 GB, by arithmetic (not compiled here).
    "tpu_v5p_64": {"mesh": {"data": 1, "fsdp": -1, "expert": 2, "tensor": 2}, "engine_batch": 384, "grad_accum": 2},
    # One node of 8 x H100 80 GB, one process: expert 8, the paper's EP 8. Sampling and evaluation fit: experts
    # 76 GB / 8 + 7 GB = 17 GB per GPU, KV pages fill the rest. SFT does NOT fit here: the state alone is 20 B x
    # 19.12e9 / 8 + 20 B x 1.80e9 = 84 GB per GPU, and at 65,536 tokens the XLA attention (no sink-capable GPU
    # kernel, above) would not fit on any number of nodes; run the train stage on the TPU slice.
    "gpu_8xh100": {"mesh": {"data": 1, "fsdp": -1, "expert": 8, "tensor": 1}, "engine_batch": 768, "grad_accum": 4},
}


def get_config(hardware: str = ""):
  config = default.paper_config(
      checkpoint="/ckpt/gpt-oss-20b",  # EDIT: a local HF directory of the model (openai/gpt-oss-20b)
      data_path="/data/rStar-Coder/seed_sft",  # EDIT: rStar-Coder seed_sft parquet files
      lcb_path="/data/livecodebench/code_generation_lite",  # EDIT: LiveCodeBench shards test.jsonl ... test6.jsonl
      sample={"temperature": 1.2, "top_k": 0, "top_p": 1.0},  # Table 3 (T_train): no truncation at all
      base_eval={"temperatures": BASE_T_GRID if SWEEP else (BASE_T,), "top_k": 0, "top_p": 1.0},  # Table 4
      ssd_eval={"temperatures": SSD_T_GRID if SWEEP else (SSD_T,), "top_k": 20, "top_p": 0.95},  # Table 3
      thinking=True,  # 50 warmup / 300 steps (not stated for GPT-OSS; see the module docstring)
      shape=default.hardware_shape(SHAPES, hardware, HARDWARE))
  effort = {"reasoning_effort": REASONING_EFFORT}
  config.sample.chat_template_kwargs = effort
  config.eval.chat_template_kwargs = effort
  return config
