"""Training hyperparameters (paper defaults) and the optax optimizer they describe.

Defaults follow SSD §3 / App. C.1 (instruct runs): AdamW b1 0.9, b2 0.95, weight decay 0.1, peak lr 5e-6,
cosine to 1e-6 after 250 linear warmup steps, 2,500 steps, global batch 32. `TrainConfig.thinking()` gives
the thinking-model schedule (50 warmup / 300 steps). Gradient clipping, loss chunking and remat are not in
the paper; the defaults here are the common choices (clip at 1.0).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

PRECISIONS = ("params", "bf16_params", "bf16_params_f32_master")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything the trainer needs besides the model and the data.

  Attributes:
    learning_rate, min_learning_rate: Peak and final lr of the cosine schedule.
    warmup_steps: Linear warmup from lr/warmup_steps at step 0 to the peak at step warmup_steps - 1.
    total_steps: Optimizer steps; the cosine reaches min_learning_rate here.
    global_batch_size: Rows (of DataConfig.seq_len tokens) per optimizer step, over all processes.
    grad_accum_steps: Microbatches per step; the global batch splits evenly into them.
    weight_decay: Decoupled weight decay, applied to matrices only (not to norm scales or biases).
    max_grad_norm: Global-norm clipping threshold; <= 0 disables clipping.
    remat: "none" | "full" | "dots", passed to `hidden_states`.
    attention: `ssd_jax.models.fused_attention.attention`'s implementation: "xla" (any backend and rows, memory
      quadratic in S) | "cudnn" (GPU, unpacked rows only) | "splash" (TPU) | "pallas_gpu" (GPU); the last two take
      packed and unpacked rows with memory linear in S. `fused_attention.auto_attention` picks per backend.
    loss_chunk_size: Sequence positions per cross-entropy chunk.
    precision: Where the weights' float32 copy lives (PRECISIONS; bytes per param of train state in brackets):
      "params": the train state's params keep the loaded dtype (model.param_dtype, float32 by default) and AdamW's
        moments follow it [12 with float32]; "bf16_params": bf16 params, float32 moments, each update rounded to
        bf16 as it is applied, so steps under half a bf16 ulp (~2^-9 of the weight) are lost [10];
        "bf16_params_f32_master": bf16 params for the forward and backward passes and a float32 master copy
        inside the optimizer state, which the update goes to and the params are rounded from [14]. The bf16
        options halve the weights every step reads and gathers; BUILD_NOTES §14 has their measured loss curves.
    save_interval_steps, max_to_keep, async_checkpointing: orbax CheckpointManager options (max_to_keep 0: keep all).
    log_every: Steps between metric records.
  """

  learning_rate: float = 5e-6
  min_learning_rate: float = 1e-6
  warmup_steps: int = 250
  total_steps: int = 2500
  global_batch_size: int = 32
  grad_accum_steps: int = 1
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.1
  max_grad_norm: float = 1.0
  remat: str = "none"
  attention: str = "xla"
  loss_chunk_size: int = 512
  precision: str = "params"
  save_interval_steps: int = 250
  max_to_keep: int = 3
  async_checkpointing: bool = True
  log_every: int = 1

  def __post_init__(self):
    if self.global_batch_size % self.grad_accum_steps:
      raise ValueError(f"global_batch_size {self.global_batch_size} does not split into "
                       f"{self.grad_accum_steps} microbatches")
    if self.total_steps < 1 or self.warmup_steps < 0:
      raise ValueError(f"need total_steps >= 1 and warmup_steps >= 0, got {self.total_steps}, {self.warmup_steps}")
    if self.precision not in PRECISIONS:
      raise ValueError(f"precision {self.precision!r}: expected one of {PRECISIONS}")
    if self.learning_rate <= 0:  # The cosine's floor is a fraction of the peak.
      raise ValueError(f"need learning_rate > 0, got {self.learning_rate}")

  @classmethod
  def thinking(cls, **overrides) -> "TrainConfig":
    """The paper's schedule for thinking models: 50 warmup / 300 steps, checkpoints every 50."""
    return cls(**{"warmup_steps": 50, "total_steps": 300, "save_interval_steps": 50, **overrides})

  def replace(self, **kwargs) -> "TrainConfig":
    return dataclasses.replace(self, **kwargs)


def lr_schedule(tc: TrainConfig) -> optax.Schedule:
  """Linear warmup (never 0, so step 0 already learns) then cosine from the peak to the minimum lr.

  Warmup steps 0 ... warmup_steps - 1 take peak * (step + 1) / warmup_steps, so its last step is the peak; the
  cosine starts again at the peak on step warmup_steps and reaches the minimum on step total_steps.
  """
  peak, low, warm, total = tc.learning_rate, tc.min_learning_rate, tc.warmup_steps, tc.total_steps
  # With warmup_steps 1 (one step at the peak) or 0 (no warmup) optax makes transition_steps <= 0 a constant.
  warmup = optax.linear_schedule(peak / max(warm, 1), peak, transition_steps=warm - 1)
  cosine = optax.cosine_decay_schedule(peak, decay_steps=max(total - warm, 1), alpha=low / peak)
  return optax.join_schedules([warmup, cosine], boundaries=[warm])


def _decay_mask(params):
  return jax.tree.map(lambda x: x.ndim >= 2, params)


def make_optimizer(tc: TrainConfig) -> optax.GradientTransformation:
  """Clip by global norm, then AdamW with the schedule, in float32 or the params' dtype as `tc.precision` says."""
  tx = optax.adamw(lr_schedule(tc), b1=tc.b1, b2=tc.b2, eps=tc.eps, weight_decay=tc.weight_decay,
                   mask=_decay_mask)
  if tc.max_grad_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(tc.max_grad_norm), tx)
  if tc.precision == "bf16_params":
    return _in_float32(tx)
  if tc.precision == "bf16_params_f32_master":
    return _with_f32_master(tx)
  return tx


def train_params(params: Any, tc: TrainConfig) -> Any:
  """The params as the train state holds them: bf16 floating leaves for the bf16 precisions, else unchanged."""
  if tc.precision == "params":
    return params
  return jax.tree.map(lambda p: p.astype(jnp.bfloat16) if jnp.issubdtype(p.dtype, jnp.floating) else p, params)


def _f32(tree: Any) -> Any:
  return jax.tree.map(lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _in_float32(tx: optax.GradientTransformation) -> optax.GradientTransformation:
  """`tx` on float32 views of gradients and params: its state (Adam's moments) and updates are float32."""

  def update(updates, state, params=None):
    return tx.update(_f32(updates), state, None if params is None else _f32(params))

  return optax.GradientTransformation(lambda params: tx.init(_f32(params)), update)


class MasterState(NamedTuple):
  master: Any  # float32 copy of the params: the updates accumulate here
  inner: Any  # the wrapped transformation's state


def _with_f32_master(tx: optax.GradientTransformation) -> optax.GradientTransformation:
  """`tx` applied to a float32 master copy kept in the optimizer state; the params become round(master).

  The returned updates are round(master') - params in float32, which `optax.apply_updates` adds to the bf16
  params exactly (both are bf16 values), so the params always equal the rounded master.
  """

  def init(params):
    master = _f32(params)
    return MasterState(master=master, inner=tx.init(master))

  def update(updates, state, params):
    steps, inner = tx.update(_f32(updates), state.inner, state.master)
    master = optax.apply_updates(state.master, steps)
    rounded = jax.tree.map(lambda m, p: m.astype(p.dtype).astype(jnp.float32) - p.astype(jnp.float32), master,
                           params)
    return rounded, MasterState(master=master, inner=inner)

  return optax.GradientTransformation(init, update)
