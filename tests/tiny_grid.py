"""A two-cell grid on configs/tiny.py for tests/test_sweep.py: T_train 1.0 with and without truncation."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs"))
import tiny  # noqa: E402

CELLS = {
    "T1.0": {"sample.temperature": 1.0, "sample.top_k": 20, "sample.top_p": 0.8},
    "T1.0-notrunc": {"sample.temperature": 1.0, "sample.top_k": 0, "sample.top_p": 1.0},
}


def get_config():
  config = tiny.get_config()
  config.workdir = "/tmp/ssd_jax/tiny_grid"
  config.eval.ssd.checkpoints = (2,)
  # Smaller than tiny.py's run: three cells in a CI test (8 prompts, 8 problems, 16 new tokens).
  config.data.limit = 16
  config.eval.limit = 16
  config.sample.max_new_tokens = 16
  config.eval.max_new_tokens = 16
  return config
