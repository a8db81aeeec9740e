"""The small-scale Fig. 3: a T_train x T_eval grid of SSD on SmolLM2-135M-Instruct and the code suite.

Cells (CELLS below) are SSD runs that differ in their synthesis: T_train 0.6, 1.0 and 1.6 with the paper's Llama-row
truncation (top-k 20, top-p 0.8; Table 3), and T_train 1.0 without truncation. Every cell is scored at each T_eval
of eval.ssd.temperatures; the base model is scored once at the same T_eval. The paper also scores every saved
checkpoint x T_eval and keeps the best (ssd_paper.md §2.3): `--config.eval.ssd.checkpoints='(8,)'` adds step 8,
doubling the SSD evaluation.
The report checks the paper's three claims with paired intervals (`ssd_jax/sweep.py`).

  taskset -c 0 python -m ssd_jax.sweep --config=configs/smollm2_grid.py --worker=0 --workers=2 &
  taskset -c 1 python -m ssd_jax.sweep --config=configs/smollm2_grid.py --worker=1 --workers=2 &
  wait; python -m ssd_jax.sweep --config=configs/smollm2_grid.py --report_only

Measured: 2 h 6 min of a 2-core CPU (two workers, one per core). The result (BUILD_NOTES §15, docs/smollm2_grid/):
SSD's best cell (T_train 1.0) +1.9 points over the base model's best T_eval, 95% paired interval [-1.9, +5.6];
SSD flattens the T_eval curve (base 0.2% at T_eval 1.5, T_train 0.6 11.8%).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import smollm2_codesuite  # noqa: E402  (the embedded default: model, suite, SFT recipe)

TRUNCATED = {"sample.top_k": 20, "sample.top_p": 0.8}
CELLS = {
    "T0.6": {"sample.temperature": 0.6, **TRUNCATED},
    "T1.0": {"sample.temperature": 1.0, **TRUNCATED},
    "T1.6": {"sample.temperature": 1.6, **TRUNCATED},
    "T1.0-notrunc": {"sample.temperature": 1.0, "sample.top_k": 0, "sample.top_p": 1.0},
}


def get_config():
  config = smollm2_codesuite.get_config()
  config.workdir = "/tmp/ssd_jax/smollm2_grid"
  config.data.limit = 78  # 3 variants of each of the 26 training families: 16 steps x 2 packed rows ~ 1.2 epochs
  config.train.total_steps = 16
  config.train.save_interval_steps = 8
  config.eval.limit = 108  # >= 100 held-out problems: 4 variants of each of the 27 evaluation families
  config.eval.n = 4
  config.eval.ks = (1, 4)
  temperatures = (0.3, 0.7, 1.1, 1.5)
  config.eval.base.temperatures = temperatures
  config.eval.ssd.temperatures = temperatures
  config.analysis.diagnostics = False
  return config
