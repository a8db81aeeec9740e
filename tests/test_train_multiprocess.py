"""The SFT trainer in two real jax.distributed processes on localhost (2 fake CPU devices each, data2 x fsdp2 mesh).

One uninterrupted two-process run, and one stopped at a step between checkpoints and restarted, are checked
against each other (bitwise) and against a single-process run over the same global batches; process 0 alone
writes the metrics and the export.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import tiny_sft
import train_helper
from ssd_jax.models import hf
from ssd_jax.train import pipeline as pl
from ssd_jax.train.trainer import Trainer

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_helper.py")
STOP = 3  # Between the checkpoints at 2 and 4: the stop forces one at 3.


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _two_processes(workdir, shards, num_steps, export_dir=None) -> list[int]:
  """Runs the helper as processes 0 and 1 of one job; returns their pids."""
  port = _free_port()
  extra = [str(export_dir)] if export_dir else []
  # Launches after the first load the compiled train step from a persistent cache: ~10 s less each.
  cache = {"JAX_COMPILATION_CACHE_DIR": os.path.join(os.path.dirname(str(shards)), "jax_cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
  procs = []
  for i in range(2):
    env = {**os.environ, **cache, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu",
           "SSD_COORDINATOR": f"127.0.0.1:{port}", "SSD_NUM_PROCESSES": "2", "SSD_PROCESS_ID": str(i)}
    procs.append(subprocess.Popen([sys.executable, HELPER, str(workdir), str(shards), str(num_steps), *extra],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
  try:
    outputs = [p.communicate(timeout=240)[0].decode(errors="replace") for p in procs]
  finally:
    for p in procs:  # A process left waiting on its peer after a failure must not outlive the test.
      if p.poll() is None:
        p.kill()
        p.wait()
  assert [p.returncode for p in procs] == [0, 0], "\n\n".join(o[-4000:] for o in outputs)
  return [p.pid for p in procs]


def _single_process_params(shards):
  """The same schedule on one device, fed the global batches the two processes assemble."""
  cfg = tiny_sft.model_config()
  data, tc = train_helper.DATA, train_helper.TRAIN
  examples, _ = pl.load_examples(str(shards), tiny_sft.tokenizer(), data)
  local = tc.global_batch_size // 2
  iters = [iter(pl.make_dataset(examples, data, local, process_index=i, process_count=2)) for i in range(2)]
  trainer = Trainer(cfg, tc, tiny_sft.random_params(cfg))
  rows = local // tc.grad_accum_steps
  for _ in range(tc.total_steps):
    parts = [next(it) for it in iters]
    # Microbatch j of the global batch is rows j*rows:(j+1)*rows of process 0, then the same of process 1.
    batch = {k: np.concatenate([p[k][j * rows:(j + 1) * rows] for j in range(tc.grad_accum_steps) for p in parts])
             for k in pl.BATCH_KEYS}
    trainer.state, _ = trainer.step_fn(trainer.state, trainer.device_batch(batch))
  return jax.device_get(trainer.state.params)


def _records(workdir):
  return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


@pytest.mark.slow
def test_two_processes_match_one_and_resume_exactly(tmp_path):
  shards = tmp_path / "shards"
  tiny_sft.write_shards(str(shards), train_helper.NUM_EXAMPLES)
  total = train_helper.TRAIN.total_steps

  full_pids = _two_processes(tmp_path / "full", shards, total, tmp_path / "full_hf")
  stop_pids = _two_processes(tmp_path / "split", shards, STOP)
  data_state = tmp_path / "split" / "checkpoints" / str(STOP) / "data"
  states = [json.loads((data_state / f"process_{i}-of-2.json").read_text()) for i in range(2)]
  assert states[0] != states[1]  # Each process checkpoints the position of its own slice.
  split_pids = _two_processes(tmp_path / "split", shards, total, tmp_path / "split_hf")

  _, full = hf.load_hf(str(tmp_path / "full_hf"), param_dtype="float32", compute_dtype="float32")
  _, split = hf.load_hf(str(tmp_path / "split_hf"), param_dtype="float32", compute_dtype="float32")
  for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(split)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  reference = _single_process_params(shards)
  for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(reference)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-5)

  # Process 0 alone writes: one record per step, and one event file per launch, named by process 0's pid.
  full_records, split_records = _records(tmp_path / "full"), _records(tmp_path / "split")
  assert [r["step"] for r in full_records] == [r["step"] for r in split_records] == list(range(1, total + 1))
  for a, b in zip(full_records, split_records):  # The resumed run logged the same losses from step STOP + 1 on.
    assert {k: v for k, v in a.items() if k != "tokens_per_s"} == {k: v for k, v in b.items() if k != "tokens_per_s"}
  writers = {name.rsplit(".", 1)[1] for name in os.listdir(tmp_path / "split" / "tensorboard")}
  assert writers == {str(stop_pids[0]), str(split_pids[0])}
  assert [name.rsplit(".", 1)[1] for name in os.listdir(tmp_path / "full" / "tensorboard")] == [str(full_pids[0])]
  assert sorted(os.listdir(tmp_path)) == ["full", "full_hf", "jax_cache", "shards", "split", "split_hf"]  # no temp
