"""`import ssd_jax` picks XLA's memory-minimizing CPU scheduler: an SFT step's temporaries shrink, its result not."""

import json
import os
import subprocess
import sys

PROBE = r"""
import hashlib, json, sys
import ssd_jax  # sets XLA_FLAGS before jax starts its backend
import jax, numpy as np
sys.path.insert(0, "tests")
import tiny_sft
from ssd_jax.train.optim import TrainConfig
from ssd_jax.train.trainer import Trainer

cfg = tiny_sft.model_config(num_layers=6)
trainer = Trainer(cfg, TrainConfig(global_batch_size=2, remat="full", loss_chunk_size=128, warmup_steps=0),
                  tiny_sft.random_params(cfg))
S = 512
ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, S + 1)).astype(np.int32)
ones = np.ones((2, S), np.int32)
batch = trainer.device_batch({"inputs": ids[:, :-1], "targets": ids[:, 1:], "weights": ones.astype(np.float32),
                              "segment_ids": ones, "positions": np.broadcast_to(np.arange(S, dtype=np.int32), (2, S))})
temp = trainer.step_fn.lower(trainer.state, batch).compile().memory_analysis().temp_size_in_bytes
state, _ = trainer.step_fn(trainer.state, batch)
digest = hashlib.sha256(b"".join(np.asarray(x).tobytes() for x in jax.tree.leaves(jax.device_get(state)))).hexdigest()
print(json.dumps({"temp": temp, "digest": digest}))
"""


def _probe(xla_flags: str) -> dict:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {**os.environ, "XLA_FLAGS": xla_flags, "PYTHONPATH": root}
  out = subprocess.run([sys.executable, "-c", PROBE], cwd=root, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_memory_minimizing_cpu_scheduler_same_step_less_memory():
  ours = _probe("")
  concurrent = _probe("--xla_cpu_enable_concurrency_optimized_scheduler=true")  # a user's own value wins
  assert ours["digest"] == concurrent["digest"]
  assert ours["temp"] < 0.6 * concurrent["temp"], (ours, concurrent)
