"""A smoke run of the whole pipeline in well under 2 minutes on CPU: a random tiny Qwen3-style model, a
SentencePiece tokenizer trained on the fly, and synthetic LiveCodeBench-style problems (stdin and call-based).

Nothing is downloaded. The model is untrained, so pass@1 is 0: this config checks plumbing (CI runs it), not SSD.
Run: python -m ssd_jax.main --config=configs/tiny.py
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # noqa: E402  (configs/default.py: every field, paper defaults)


def get_config():
  config = default.get_config()
  config.workdir = "/tmp/ssd_jax/tiny"

  config.model.checkpoint = "random"
  config.model.tokenizer = "train_sentencepiece"
  config.model.tokenizer_vocab_size = 320
  config.model.param_dtype = "float32"
  config.model.compute_dtype = "float32"
  config.model.arch = dict(model_type="qwen3", vocab_size=384, hidden_size=64, num_layers=2, num_heads=4,
                           num_kv_heads=2, head_dim=16, intermediate_size=128, qk_norm=True,
                           tie_word_embeddings=True, max_position_embeddings=4096, rope_theta=10000.0)

  config.data.kind = "synthetic"
  config.data.limit = 32
  config.data.subset = "first_half"

  config.sample.max_new_tokens = 32
  config.sample.shard_size = 8
  config.sample.engine.batch_size = 16
  config.sample.engine.max_seq_len = 2048  # byte-level prompts are ~600 tokens
  config.sample.engine.chunk_steps = 16
  config.sample.degeneracy.min_lines = 1  # keep one-line samples: an untrained model rarely writes two lines

  config.train.warmup_steps = 1
  config.train.total_steps = 4
  config.train.learning_rate = 1e-3
  config.train.global_batch_size = 4
  config.train.seq_len = 1024
  config.train.packing = True
  config.train.remat = "none"
  config.train.save_interval_steps = 2
  config.train.async_checkpointing = False

  config.eval.benchmark = "synthetic"
  config.eval.limit = 32
  config.eval.subset = "second_half"
  config.eval.n = 2
  config.eval.ks = (1, 2)
  config.eval.max_new_tokens = 32
  config.eval.timeout_s = 2.0
  config.eval.base.temperatures = (0.7, 1.0)
  config.eval.ssd.temperatures = (0.7, 1.0)
  return config
