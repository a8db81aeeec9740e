"""Qwen3-30B-A3B-Instruct-2507 (MoE) + SSD with the paper's recipe (ssd_paper.md Table 3, Table 4, §3, §4).

Edit the three paths below (checkpoint, rStar-Coder seed, LiveCodeBench), then run:
  python -m ssd_jax.main --config=configs/qwen3_30b_a3b_instruct.py --config.workdir=/ckpt/runs/q30b_instruct
Hardware (mesh, engine batch, gradient accumulation, with their memory arithmetic): configs/qwen3_30b_a3b.py, shared
with the thinking variant. Edit HARDWARE there (both variants) or below (this one only), or per run append
`:gpu_8xh100` to the config path (`--config=configs/qwen3_30b_a3b_instruct.py:gpu_8xh100`), or export
SSD_HARDWARE=gpu_8xh100. The `:arg` wins, then SSD_HARDWARE, then HARDWARE. On a pod or cluster use
launch/tpu_pod.sh or launch/slurm_gpu.sh (see their headers).
Sweep T_eval: set SWEEP = True (the Fig. 2 grid below, paper's value first), or pass e.g.
  --config.eval.ssd.temperatures='(0.7,0.9,1.1)' --config.eval.base.temperatures='(0.5,0.7,0.9)'
Sweep T_train: one workdir per value, `--config.sample.temperature=2.0` (launch/sweep.sh does the loop); the
paper's grid for this model is T_train {0.5, 0.7, 1.0, 1.5, 2.0} x T_eval 0.6..1.5 without truncation
(--config.sample.top_k=0 --config.sample.top_p=1.0), and top-k 5 / 10 groups (§2.3; best: T_train 2.0, top-k 10,
T_eval 1.1). Those sweep runs used fewer steps than 2,500 (count not stated).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # noqa: E402  (configs/default.py: every field, and paper_config)
import qwen3_30b_a3b  # noqa: E402  (configs/qwen3_30b_a3b.py: the backbone's memory arithmetic, SHAPES, HARDWARE)

HARDWARE = qwen3_30b_a3b.HARDWARE  # the backbone's; or "tpu_v5p_64" | "gpu_8xh100" for this variant only
SHAPES = qwen3_30b_a3b.SHAPES  # mesh, engine batch, grad accum per hardware (configs/qwen3_30b_a3b.py, shared)
SWEEP = False  # True: evaluate base and SSD over the T_eval grids below instead of the paper's single T

# Table 4 (base) and Table 3 (SSD eval); the grids are Fig. 2's ticks (0.5..1.3) with the paper's T first, so an
# interrupted sweep has the headline point already.
BASE_T, BASE_T_GRID = 0.7, (0.7, 0.5, 0.9, 1.1, 1.3)
SSD_T, SSD_T_GRID = 0.9, (0.9, 0.5, 0.7, 1.1, 1.3)


def get_config(hardware: str = ""):
  return default.paper_config(
      checkpoint="/ckpt/Qwen3-30B-A3B-Instruct-2507",  # EDIT: a local HF directory of the model
      data_path="/data/rStar-Coder/seed_sft",  # EDIT: rStar-Coder seed_sft parquet files
      lcb_path="/data/livecodebench/code_generation_lite",  # EDIT: LiveCodeBench shards test.jsonl ... test6.jsonl
      sample={"temperature": 1.6, "top_k": 20, "top_p": 0.8},  # Table 3 (T_train)
      base_eval={"temperatures": BASE_T_GRID if SWEEP else (BASE_T,), "top_k": 20, "top_p": 0.8},  # Table 4
      ssd_eval={"temperatures": SSD_T_GRID if SWEEP else (SSD_T,), "top_k": 20, "top_p": 0.8},  # Table 3
      thinking=False,  # §3: 250 warmup / 2,500 steps
      shape=default.hardware_shape(SHAPES, hardware, HARDWARE))
