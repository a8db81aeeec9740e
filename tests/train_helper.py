"""`run_sft` on the tiny SFT model and data of `tiny_sft`, as an entry point for multi-process tests.

`python tests/train_helper.py WORKDIR SHARDS_DIR NUM_STEPS [EXPORT_DIR]` trains (resuming from WORKDIR) until step
NUM_STEPS of the `TRAIN` schedule, then exports to EXPORT_DIR if given. With SSD_COORDINATOR / SSD_NUM_PROCESSES /
SSD_PROCESS_ID set it first joins a jax.distributed job; the mesh is `MESH_SHAPE` over all processes' devices, so
the caller sets XLA_FLAGS to give each process its share of fake CPU devices.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

import tiny_sft  # noqa: E402
from ssd_jax.models.sharding import make_mesh  # noqa: E402
from ssd_jax.train.optim import TrainConfig  # noqa: E402
from ssd_jax.train.pipeline import DataConfig  # noqa: E402
from ssd_jax.train.trainer import run_sft  # noqa: E402

NUM_EXAMPLES = 16
MESH_SHAPE = {"data": 2, "fsdp": 2}
DATA = DataConfig(seq_len=256, packing_bins=2, seed=1)
# Two microbatches of 4 rows: one row per device and microbatch on a 4-device mesh.
TRAIN = TrainConfig(learning_rate=1e-2, min_learning_rate=1e-3, warmup_steps=2, total_steps=6, global_batch_size=8,
                    grad_accum_steps=2, loss_chunk_size=64, save_interval_steps=2, max_to_keep=5)


def main(argv: list[str]) -> None:
  if os.environ.get("SSD_COORDINATOR"):  # one of several real processes (jax.distributed on localhost)
    jax.distributed.initialize(os.environ["SSD_COORDINATOR"], num_processes=int(os.environ["SSD_NUM_PROCESSES"]),
                               process_id=int(os.environ["SSD_PROCESS_ID"]))
  # The same matmul precision as the test process (conftest), so the single-process reference is comparable.
  jax.config.update("jax_default_matmul_precision", "highest")
  workdir, shards, num_steps = argv[1], argv[2], int(argv[3])
  export_dir = argv[4] if len(argv) > 4 else None
  cfg = tiny_sft.model_config()
  run_sft(cfg, tiny_sft.random_params(cfg), shards, tiny_sft.tokenizer(), DATA, TRAIN, workdir,
          export_dir=export_dir, mesh=make_mesh(MESH_SHAPE), num_steps=num_steps)


if __name__ == "__main__":
  main(sys.argv)
