"""The recorded CPU experiment (BUILD_NOTES.md §9): SSD on SmolLM2-135M-Instruct, HumanEval halves, n = 10.

Same synthesis as the embedded default (configs/smollm2_humaneval.py: one sample per prompt of HumanEval's first
half at Table 3's Llama settings, T_train 0.8 / top-k 20 / top-p 0.8), then SFT for one epoch over the 82
samples instead of the default's 6 steps, and evaluation on the second half with n = 10 completions per problem
over a T_eval sweep for both models (pass@1, @5, @10). Base decodes with Table 4's Llama truncation (no top-k,
top-p 0.8), SSD with Table 3's (top-k 20, top-p 0.8).

On a 2-core CPU one (model, T_eval) at n = 10 costs ~80 min of one core, so the two models run as two processes, each pinned
to one core (XLA:CPU decodes this model faster per core single-threaded), then the report:

  python -m ssd_jax.main --config=configs/smollm2_ssd_experiment.py --stage=synthesize
  python -m ssd_jax.main --config=configs/smollm2_ssd_experiment.py --stage=train
  taskset -c 0 python -m ssd_jax.main --config=configs/smollm2_ssd_experiment.py --stage=evaluate \
      --config.eval.models='("base",)' &
  taskset -c 1 python -m ssd_jax.main --config=configs/smollm2_ssd_experiment.py --stage=evaluate \
      --config.eval.models='("ssd",)' &
  wait; python -m ssd_jax.main --config=configs/smollm2_ssd_experiment.py --stage=analyze

BUILD_NOTES.md §9 records the run: two T_eval points per model (each model's paper T_eval at n = 10, and 0.5 at
n = 5) out of the sweep below, with the exact commands.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import smollm2_humaneval  # noqa: E402  (the embedded default this experiment extends)


def get_config():
  config = smollm2_humaneval.get_config()
  config.workdir = "/tmp/ssd_jax/smollm2_ssd_experiment"

  # 82 samples (31k tokens) packed into 4 x 512-token rows are ~15 steps per epoch: one epoch, at a peak learning
  # rate 4x the paper's 5e-6 because this is one epoch where the paper's instruct runs make ~8 (2,500 x 32 samples).
  config.train.learning_rate = 2e-5
  config.train.min_learning_rate = 2e-6
  config.train.warmup_steps = 2
  config.train.total_steps = 16
  config.train.save_interval_steps = 8

  config.eval.n = 10
  config.eval.ks = (1, 5, 10)
  config.eval.workers = 1  # one core per model process
  # Sweep order = priority: each model's paper setting first, then the shared grid.
  config.eval.base.temperatures = (0.9, 0.5, 0.7)
  config.eval.ssd.temperatures = (0.7, 0.5, 0.9)
  return config
