"""SFT precision options (`TrainConfig.precision`): where the float32 copy of the weights lives."""

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny_sft
from ssd_jax.train import pipeline as pl
from ssd_jax.train.optim import MasterState, TrainConfig, make_optimizer, train_params
from ssd_jax.train.trainer import Trainer

SEQ = 128


def _tree(seed: int, scale: float = 0.05):
  rng = np.random.default_rng(seed)
  return {"w": jnp.asarray(rng.normal(0, scale, (64, 32)), jnp.float32),
          "norm": jnp.asarray(1 + rng.normal(0, 0.01, (32,)), jnp.float32)}


def _config(precision: str, **kw) -> TrainConfig:
  return TrainConfig(**{"learning_rate": 5e-6, "min_learning_rate": 5e-6, "warmup_steps": 0, "total_steps": 100,
                        "precision": precision, **kw})


def test_f32_master_takes_float32_adamws_steps_and_params_are_its_rounding():
  params32 = _tree(0)
  ref_tx, tx = make_optimizer(_config("params")), make_optimizer(_config("bf16_params_f32_master"))
  ref_state, state = ref_tx.init(params32), tx.init(params32)
  params = train_params(params32, _config("bf16_params_f32_master"))
  ref = params32
  for t in range(5):
    grads = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _tree(100 + t, 1.0))  # grads of bf16 params are bf16
    updates, ref_state = ref_tx.update(jax.tree.map(lambda g: g.astype(jnp.float32), grads), ref_state, ref)
    ref = jax.tree.map(lambda p, u: p + u, ref, updates)
    updates, state = tx.update(grads, state, params)
    params = jax.tree.map(lambda p, u: jnp.asarray(p + u).astype(p.dtype), params, updates)  # optax.apply_updates
  assert isinstance(state, MasterState)
  for name in ref:
    np.testing.assert_array_equal(np.asarray(state.master[name]), np.asarray(ref[name]))
    assert params[name].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(params[name]), np.asarray(state.master[name].astype(jnp.bfloat16)))


def test_bf16_params_lose_updates_below_half_an_ulp_the_master_keeps_them():
  """At the paper's lr 5e-6 an AdamW step moves a weight of size ~0.05 by ~5e-6, under half its bf16 ulp."""
  params32 = _tree(1)
  grads = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _tree(2, 1.0))
  moved = {}
  for precision in ("bf16_params", "bf16_params_f32_master"):
    tx = make_optimizer(_config(precision))
    params = train_params(params32, _config(precision))
    state = tx.init(params32)
    start = params
    for _ in range(3):
      updates, state = tx.update(grads, state, params)
      params = jax.tree.map(lambda p, u: jnp.asarray(p + u).astype(p.dtype), params, updates)
    moved[precision] = float(jnp.mean(params["w"] != start["w"]))
    if precision == "bf16_params_f32_master":
      assert float(jnp.mean(state.master["w"] != params32["w"])) > 0.99  # every step reached the master
  assert moved["bf16_params"] < 0.05, moved
  assert moved["bf16_params"] <= moved["bf16_params_f32_master"], moved


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  cfg = tiny_sft.model_config()
  d = str(tmp_path_factory.mktemp("shards"))
  tiny_sft.write_shards(d, 8)
  examples, _ = pl.load_examples(d, tiny_sft.tokenizer(), pl.DataConfig(seq_len=SEQ))
  batches = list(itertools.islice(iter(pl.make_dataset(examples, pl.DataConfig(seq_len=SEQ, seed=0), batch_size=2)), 3))
  return cfg, tiny_sft.random_params(cfg), batches


@pytest.mark.parametrize("precision", ["bf16_params", "bf16_params_f32_master"])
def test_trainer_state_dtypes_steps_and_exact_resume(setup, precision, tmp_path):
  cfg, params, batches = setup
  tc = TrainConfig(global_batch_size=2, grad_accum_steps=2, learning_rate=1e-2, warmup_steps=0, total_steps=3,
                   loss_chunk_size=64, save_interval_steps=2, async_checkpointing=False, precision=precision)
  trainer = Trainer(cfg, tc, params, str(tmp_path), tensorboard=False)
  assert {x.dtype for x in jax.tree.leaves(trainer.state.params)} == {jnp.dtype(jnp.bfloat16)}
  float_state = [x for x in jax.tree.leaves(trainer.state.opt_state) if x.ndim]
  assert float_state and {x.dtype for x in float_state} == {jnp.dtype(jnp.float32)}  # moments (and master)
  if precision == "bf16_params_f32_master":
    for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(trainer.state.opt_state.master)):
      np.testing.assert_array_equal(np.asarray(p), np.asarray(m))  # the master is the loaded float32, unrounded
  losses = []
  for batch in batches:
    trainer.state, metrics = trainer.step_fn(trainer.state, trainer.device_batch(batch))
    losses.append(float(metrics["loss"]))
    trainer.save(None, force=True)
  trainer.close()
  assert all(np.isfinite(losses)) and losses[-1] < losses[0]
  final = jax.device_get(trainer.state)
  resumed = Trainer(cfg, tc, params, str(tmp_path), tensorboard=False)
  assert resumed.restore() == 3
  for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(jax.device_get(resumed.state))):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  resumed.close()


def test_unknown_precision_is_refused_by_name():
  with pytest.raises(ValueError, match="precision 'bf16'.*params"):
    TrainConfig(precision="bf16")


@pytest.mark.slow
def test_precision_bench_smollm2(capsys, monkeypatch):
  """`python -m ssd_jax.bench.precision` on the real model, 2 short steps: every precision trained the same rows."""
  from ssd_jax.bench import precision

  monkeypatch.setattr("sys.argv", ["precision", "--steps", "2", "--batch", "2", "--seq", "256"])
  precision.main()
  result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  runs = result["precisions"]
  assert set(runs) == {"params", "bf16_params", "bf16_params_f32_master"} and result["rows"] == 260
  assert runs["params"]["param_dtype"] == "float32" and runs["params"]["update_norm_ratio"] == 1.0
  assert runs["bf16_params"]["param_dtype"] == runs["bf16_params_f32_master"]["param_dtype"] == "bfloat16"
  # Step 1's loss is of the loaded weights: float32 and their bf16 rounding agree closely, not exactly.
  first = [r["losses"][0] for r in runs.values()]
  assert first[1] == first[2] != first[0] and abs(first[0] - first[1]) < 0.05
