"""The SFT train step and loop: sharded state, gradient accumulation, orbax checkpoints with data state, metrics.

Numerics: `TrainConfig.precision` says where the float32 copy of the weights lives: by default the params keep
their loaded dtype (float32) and optimizer state follows it; the bf16 options train bf16 params with float32
optimizer state (and a float32 master there). Microbatch gradients accumulate in float32. `cfg.compute_dtype` is the
matmul dtype inside the model (bf16 on accelerators). The loss is the
token-weighted mean over the whole global batch: every microbatch contributes sum(weight * nll) / T, with T the
target tokens of all microbatches together, so accumulating m microbatches equals one step on the big batch.
MoE models add `router_aux_loss_coef * balance_loss` (mean over microbatches).

One jitted `train_step(state, batch) -> (state, metrics)` donates the state. Params are placed by the model's
logical sharding rules, optimizer state inherits their shardings, and the batch [m, B/m, S] is split over the
batch mesh axes. Exact resume: a checkpoint holds the train state and the grain iterator state (per process),
so a run stopped at step k and resumed is bitwise identical to one that never stopped (CPU; deterministic XLA).
On several processes (jax.distributed) each reads its own slice of the data and checkpoints its own iterator
state next to the shared train state; process 0 alone writes metrics, and all gather for the HF export that
process 0 writes.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any, Callable, Iterator, Mapping

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ssd_jax.models import hf
from ssd_jax.models.config import ModelConfig
from ssd_jax.models.sharding import ShardingRules, make_mesh
from ssd_jax.models.tokenizer import Tokenizer
from ssd_jax.models.transformer import Params, Sharding, abstract_params, hidden_states, param_shardings
from ssd_jax.train.loss import chunked_nll
from ssd_jax.train.metrics import MetricsLogger
from ssd_jax.train.optim import TrainConfig, lr_schedule, make_optimizer, train_params
from ssd_jax.train.pipeline import BATCH_KEYS, DataConfig, DataStats, build_iterator

log = logging.getLogger(__name__)


@struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar
  params: Params
  opt_state: Any


def init_state(params: Params, cfg: ModelConfig, tc: TrainConfig, mesh: Mesh, rules: ShardingRules, *,
               donate: bool = False) -> TrainState:
  """Places params on their shardings and builds the optimizer state next to them, in a fresh copy (`donate`: the
  caller's params are consumed, their memory going to the state, when nothing else needs them)."""
  params = jax.device_put(params, param_shardings(cfg, mesh, rules))
  return _init_fn(cfg, tc, mesh, rules, donate)(params)


@functools.lru_cache(maxsize=16)
def _init_fn(cfg: ModelConfig, tc: TrainConfig, mesh: Mesh, rules: ShardingRules, donate: bool = False) -> Callable:
  tx = make_optimizer(tc)
  shardings = param_shardings(cfg, mesh, rules)

  def make(p):
    # Every param-shaped leaf of the optimizer state (Adam's mu and nu) is placed as its param: left to the
    # compiler, zeros that depend on no input come out replicated, a full f32 copy of both moments on every device.
    opt_state = optax.tree_map_params(tx, jax.lax.with_sharding_constraint, tx.init(p), shardings,
                                      transform_non_params=lambda x: x)
    # tx.init saw the loaded params: a float32 master starts from them, not from their bf16 rounding.
    params = train_params(jax.tree.map(jnp.copy, p), tc)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state)

  return jax.jit(make, in_shardings=(shardings,), donate_argnums=0 if donate else ())


def state_shardings(state: TrainState) -> TrainState:
  return jax.tree.map(lambda x: x.sharding, state)


def batch_sharding(mesh: Mesh, rules: ShardingRules, shape: tuple[int, ...]) -> NamedSharding:
  """[m, B/m, S]: rows over the batch mesh axes, microbatch and sequence axes unsplit."""
  spec = rules.spec(("batch", None), shape[1:], mesh)
  return NamedSharding(mesh, P(None, *spec))


def make_train_step(cfg: ModelConfig, tc: TrainConfig, sharding: Sharding, shardings: TrainState,
                    batch_shd: NamedSharding) -> Callable:
  """The jitted step. batch: {BATCH_KEYS: [m, B/m, S]} (inputs/targets/segment_ids/positions int32, weights f32).

  Cached on its (hashable) arguments: trainers with the same model, config and placement share one jitted
  function and so one compilation.
  """
  leaves, treedef = jax.tree.flatten(shardings)
  return _cached_train_step(cfg, tc, sharding, treedef, tuple(leaves), batch_shd)


@functools.lru_cache(maxsize=16)
def _cached_train_step(cfg: ModelConfig, tc: TrainConfig, sharding: Sharding, treedef, leaves: tuple,
                       batch_shd: NamedSharding) -> Callable:
  shardings = jax.tree.unflatten(treedef, leaves)
  tx = make_optimizer(tc)
  schedule = lr_schedule(tc)
  coef = float(cfg.router_aux_loss_coef) if cfg.is_moe else 0.0

  def step_fn(state: TrainState, batch: Mapping[str, jax.Array]):
    m = batch["inputs"].shape[0]
    total = jnp.maximum(jnp.sum(batch["weights"]), 1.0)

    def loss_fn(params, mb):
      h, balance = hidden_states(params, mb["inputs"], mb["segment_ids"], cfg, positions=mb["positions"],
                                 sharding=sharding, remat=tc.remat, attention=tc.attention)
      nll, _ = chunked_nll(params, h, mb["targets"], mb["weights"], cfg, sharding, tc.loss_chunk_size)
      return nll / total + coef * balance / m, (nll, balance)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def micro(carry, mb):
      grads, nll_sum, bal_sum = carry
      (_, (nll, bal)), g = grad_fn(state.params, mb)
      return (jax.tree.map(jnp.add, grads, g), nll_sum + nll, bal_sum + bal), None

    if m == 1:  # No accumulator: saves a zero-fill and an add over every param.
      (_, (nll_sum, bal_sum)), grads = grad_fn(state.params, jax.tree.map(lambda x: x[0], batch))
    else:
      zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.promote_types(p.dtype, jnp.float32)), state.params)
      init = (zeros, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
      (grads, nll_sum, bal_sum), _ = jax.lax.scan(micro, init, batch)
      if tc.precision == "params":  # the optimizer state keeps the params' dtype
        grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, state.params)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    real = jnp.sum((batch["segment_ids"] > 0).astype(jnp.float32))
    metrics = {"loss": nll_sum / total, "balance_loss": bal_sum / m, "grad_norm": grad_norm,
               "lr": schedule(state.step), "target_tokens": jnp.sum(batch["weights"]), "tokens": real,
               "padding_fraction": 1.0 - real / batch["segment_ids"].size}
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return jax.jit(step_fn, in_shardings=(shardings, batch_shd), out_shardings=(shardings, None), donate_argnums=0)


def to_microbatches(batch: Mapping[str, np.ndarray], m: int) -> dict[str, np.ndarray]:
  """{k: [B, S]} -> {k: [m, B/m, S]}; microbatch i takes rows i*B/m ... (i+1)*B/m - 1."""
  out = {}
  for k in BATCH_KEYS:
    x = np.asarray(batch[k])
    out[k] = x.reshape(m, x.shape[0] // m, *x.shape[1:])
  return out


class Trainer:
  """Owns the mesh, the sharded train state, the checkpoint manager and the metric sinks of one SFT run.

  Usage:
    trainer = Trainer(cfg, TrainConfig(...), params, workdir, mesh=make_mesh({"data": 2, "fsdp": 4}))
    state = trainer.fit(data_iterator)       # resumes from the latest checkpoint in workdir if there is one
    trainer.export(out_dir, tokenizer_dir)   # HF safetensors directory
  """

  def __init__(self, cfg: ModelConfig, tc: TrainConfig, params: Params, workdir: str | None = None, *,
               mesh: Mesh | None = None, rules: ShardingRules | None = None, tensorboard: bool = True,
               donate_params: bool = False):
    self.cfg, self.tc = cfg, tc
    self.mesh = mesh if mesh is not None else make_mesh(devices=jax.devices()[:1])
    self.rules = rules or ShardingRules()
    self.sharding = Sharding(self.mesh, self.rules)
    self.state = init_state(params, cfg, tc, self.mesh, self.rules, donate=donate_params)
    # Each process feeds its own rows and splits them into the same m microbatches (`device_batch`).
    self.local_batch, rest = divmod(tc.global_batch_size, jax.process_count())
    if rest or self.local_batch % tc.grad_accum_steps:
      raise ValueError(f"global_batch_size {tc.global_batch_size} must split into {jax.process_count()} processes "
                       f"x {tc.grad_accum_steps} microbatches")
    self.workdir = workdir
    self.manager = None
    self.metrics = None
    if workdir is not None:
      options = ocp.CheckpointManagerOptions(save_interval_steps=tc.save_interval_steps,
                                             max_to_keep=tc.max_to_keep or None,  # 0: keep every checkpoint
                                             enable_async_checkpointing=tc.async_checkpointing)
      self.manager = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"), options=options)
      if jax.process_index() == 0:
        self.metrics = MetricsLogger(workdir, tensorboard=tensorboard)
    self._step_fn = None

  @property
  def step_fn(self) -> Callable:
    if self._step_fn is None:
      m = self.tc.grad_accum_steps
      shape = (m, self.tc.global_batch_size // m, 1)
      self._batch_shd = batch_sharding(self.mesh, self.rules, shape)
      self._step_fn = make_train_step(self.cfg, self.tc, self.sharding, state_shardings(self.state),
                                      self._batch_shd)
    return self._step_fn

  def device_batch(self, batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    """This process's rows [B_local, S] -> global arrays [m, B/m, S] on the batch sharding."""
    self.step_fn  # noqa: B018 (builds the batch sharding)
    local = to_microbatches(batch, self.tc.grad_accum_steps)
    return {k: jax.make_array_from_process_local_data(self._batch_shd, v) for k, v in local.items()}

  def restore(self, data_iter: grain.DatasetIterator | None = None) -> int:
    """Loads the latest checkpoint (state and, if given, the iterator position); returns its step or 0."""
    if self.manager is None or self.manager.latest_step() is None:
      return 0
    step = self.manager.latest_step()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, self.state)
    items = {"state": ocp.args.StandardRestore(abstract)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    self.state = restored["state"]
    return step

  def save(self, data_iter: grain.DatasetIterator | None, force: bool = False) -> bool:
    if self.manager is None:
      return False
    items = {"state": ocp.args.StandardSave(self.state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    return self.manager.save(int(self.state.step), args=ocp.args.Composite(**items), force=force)

  def fit(self, data_iter: Iterator[Mapping[str, np.ndarray]], num_steps: int | None = None,
          resume: bool = True, on_step: Callable[[int, dict | None], None] | None = None) -> TrainState:
    """Trains until step `num_steps` (default tc.total_steps), saving on the interval and at the end.

    `data_iter` yields this process's batches {BATCH_KEYS: [global_batch / process_count, S]}; a grain
    iterator's position is checkpointed with the state. `on_step(step, metrics or None)` runs after every step
    (metrics on logging steps only), e.g. for a progress bar.
    """
    num_steps = self.tc.total_steps if num_steps is None else num_steps
    ckpt_iter = data_iter if isinstance(data_iter, grain.DatasetIterator) else None
    step = self.restore(ckpt_iter) if resume else 0
    if on_step is not None:
      on_step(step, None)
    step_fn = self.step_fn
    t_last = time.perf_counter()
    # Global non-padding tokens of the steps since the last record, read only when logging (no per-step sync);
    # processes pack differently, so this process's count times process_count would be off.
    tokens_since: list[jax.Array] = []
    while step < num_steps:
      batch = next(data_iter)
      self.state, metrics = step_fn(self.state, self.device_batch(batch))
      step += 1
      tokens_since.append(metrics["tokens"])
      values = None
      if step % self.tc.log_every == 0 or step == num_steps:
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
        now = time.perf_counter()
        values["tokens_per_s"] = float(sum(jax.device_get(tokens_since))) / max(now - t_last, 1e-9)
        t_last, tokens_since = now, []
        if self.metrics is not None:
          self.metrics.write(step, values)
        log.info("step %d: %s", step, " ".join(f"{k}={v:.4g}" for k, v in values.items()))
      if on_step is not None:
        on_step(step, values)
      self.save(ckpt_iter, force=step == num_steps)
    if self.manager is not None:
      self.manager.wait_until_finished()
    return self.state

  def export(self, out_dir: str, tokenizer_dir: str | None = None, dtype: str | None = None,
             overwrite: bool = False) -> str:
    """The current params as an HF checkpoint directory (transformers loads it unchanged)."""
    return hf.export_hf(self.state.params, self.cfg, out_dir, tokenizer_dir=tokenizer_dir, dtype=dtype,
                        overwrite=overwrite)

  def close(self) -> None:
    if self.manager is not None:
      self.manager.wait_until_finished()
      self.manager.close()
    if self.metrics is not None:
      self.metrics.close()


def saved_steps(workdir: str) -> list[int]:
  """The steps whose checkpoints `run_sft(workdir=...)` kept (orbax's max_to_keep drops older ones)."""
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not os.path.isdir(directory):
    return []
  with ocp.CheckpointManager(directory) as manager:
    return sorted(manager.all_steps())


def restore_params(workdir: str, step: int, cfg: ModelConfig, mesh: Mesh, rules: ShardingRules | None = None
                   ) -> Params:
  """The model params saved at `step` by `run_sft(workdir=...)`, placed on their shardings on `mesh`.

  Only the params are read (orbax's partial restore), not the optimizer state beside them.
  """
  kept = saved_steps(workdir)
  if step not in kept:
    raise FileNotFoundError(f"{workdir}: no checkpoint at step {step} (kept: {kept or 'none'}); checkpoints are "
                            "saved every train.save_interval_steps and the last train.max_to_keep are kept")
  target = {"params": abstract_params(cfg, mesh, rules or ShardingRules())}
  with ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints")) as manager:
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                                     partial_restore=True)))
  return restored["state"]["params"]


def run_sft(cfg: ModelConfig, params: Params, shards: str | list[str], tokenizer: Tokenizer, data_cfg: DataConfig,
            tc: TrainConfig, workdir: str, *, export_dir: str | None = None, tokenizer_dir: str | None = None,
            mesh: Mesh | None = None, rules: ShardingRules | None = None, num_steps: int | None = None,
            on_step: Callable[[int, dict | None], None] | None = None, donate_params: bool = False,
            **template_kwargs: Any) -> tuple[Trainer, DataStats]:
  """The SFT stage (the pipeline's and the tests'): shards -> batches -> train (resuming from workdir) -> HF export.

  `num_steps` stops (with a checkpoint) before tc.total_steps without changing the schedule; a later call
  resumes. Bad rows are logged with their ids (and counted in the returned stats); they never stop the run. The
  export is written when `export_dir` is given, unless it exists already and this call trained no step (a rerun of
  a finished stage). `on_step` as in `Trainer.fit`; `donate_params`: `params` become the train state's (deleted
  here) rather than copied.
  """
  data_iter, stats = build_iterator(shards, tokenizer, data_cfg, tc.global_batch_size // jax.process_count(),
                                    **template_kwargs)
  log.info("data: %s", stats.summary())
  for row_id, reason in stats.bad:
    log.warning("bad row %s: %s", row_id, reason)
  trainer = Trainer(cfg, tc, params, workdir, mesh=mesh, rules=rules, donate_params=donate_params)
  first_step = []

  def step_hook(step: int, metrics: dict | None) -> None:
    if not first_step:
      first_step.append(step)  # fit reports the restored step first
    if on_step is not None:
      on_step(step, metrics)

  try:
    trainer.fit(data_iter, num_steps=num_steps, on_step=step_hook)
    exported = export_dir is not None and os.path.exists(os.path.join(export_dir, "config.json"))
    if export_dir is not None and (not exported or int(trainer.state.step) != first_step[0]):
      trainer.export(export_dir, tokenizer_dir=tokenizer_dir, overwrite=True)
  finally:
    trainer.close()
  return trainer, stats
