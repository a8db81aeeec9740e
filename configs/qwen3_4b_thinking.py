"""Qwen3-4B-Thinking-2507 + SSD with the paper's recipe (ssd_paper.md Table 3, Table 4, §3, §4).

Edit the three paths below (checkpoint, rStar-Coder seed, LiveCodeBench), then run:
  python -m ssd_jax.main --config=configs/qwen3_4b_thinking.py --config.workdir=/ckpt/runs/q4b_thinking
Hardware (mesh, engine batch, gradient accumulation, with their memory arithmetic): configs/qwen3_4b.py, shared with
the instruct variant. Edit HARDWARE there (both variants) or below (this one only), or per run append `:gpu_8xh100`
to the config path (`--config=configs/qwen3_4b_thinking.py:gpu_8xh100`), or export SSD_HARDWARE=gpu_8xh100. The
`:arg` wins, then SSD_HARDWARE, then HARDWARE. On a pod or cluster use launch/tpu_pod.sh or launch/slurm_gpu.sh (see
their headers).
Sweep T_eval: set SWEEP = True (the Fig. 2 grid below, paper's value first), or pass e.g.
  --config.eval.ssd.temperatures='(0.5,0.7,0.9)' --config.eval.base.temperatures='(0.5,0.6,0.7)'
Sweep T_train: one workdir per value, `--config.sample.temperature=1.2` (launch/sweep.sh does the loop); the
paper's 4B-Thinking grid is T_train 0.6..1.8 x T_eval 0.5..1.6 (Fig. 11).

Thinking: the 2507 Thinking chat template opens `<think>` in the generation prompt by itself, so sampling and
evaluation need no template switch (the config has no chat_template_kwargs field). The prompt is the same task
presentation as for instruct models, with no chain-of-thought instruction (App. C.1). The sampled reasoning trace
is part of the assistant turn and stays in the SFT targets (ssd_paper.md §1.4: targets are raw outputs).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # noqa: E402  (configs/default.py: every field, and paper_config)
import qwen3_4b  # noqa: E402  (configs/qwen3_4b.py: the backbone's memory arithmetic, SHAPES, HARDWARE)

HARDWARE = qwen3_4b.HARDWARE  # the backbone's; or "tpu_v5p_64" | "gpu_8xh100" for this variant only
SHAPES = qwen3_4b.SHAPES  # mesh, engine batch, grad accum per hardware (configs/qwen3_4b.py, shared)
SWEEP = False  # True: evaluate base and SSD over the T_eval grids below instead of the paper's single T

# Table 4 (base) and Table 3 (SSD eval); the grids are Fig. 2's ticks (0.5..1.3) with the paper's T first, so an
# interrupted sweep has the headline point already.
BASE_T, BASE_T_GRID = 0.6, (0.6, 0.5, 0.7, 0.9, 1.1, 1.3)
SSD_T, SSD_T_GRID = 0.7, (0.7, 0.5, 0.6, 0.9, 1.1, 1.3)


def get_config(hardware: str = ""):
  return default.paper_config(
      checkpoint="/ckpt/Qwen3-4B-Thinking-2507",  # EDIT: a local HF directory of the model
      data_path="/data/rStar-Coder/seed_sft",  # EDIT: rStar-Coder seed_sft parquet files
      lcb_path="/data/livecodebench/code_generation_lite",  # EDIT: LiveCodeBench shards test.jsonl ... test6.jsonl
      sample={"temperature": 1.1, "top_k": 20, "top_p": 0.95},  # Table 3 (T_train)
      base_eval={"temperatures": BASE_T_GRID if SWEEP else (BASE_T,), "top_k": 20, "top_p": 0.95},  # Table 4
      ssd_eval={"temperatures": SSD_T_GRID if SWEEP else (SSD_T,), "top_k": 20, "top_p": 0.95},  # Table 3
      thinking=True,  # §3: 50 warmup / 300 steps
      shape=default.hardware_shape(SHAPES, hardware, HARDWARE))
