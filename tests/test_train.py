"""SFT trainer: chunked loss, packing invariance, gradient accumulation, learning, exact resume, meshes, export."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny_sft
from ssd_jax.models import hf
from ssd_jax.models.sharding import make_mesh
from ssd_jax.models.transformer import hidden_states
from ssd_jax.train import pipeline as pl
from ssd_jax.train.loss import chunked_nll, reference_nll
from ssd_jax.train.metrics import read_events
from ssd_jax.train.optim import TrainConfig, lr_schedule
from ssd_jax.train.trainer import Trainer, loss_and_grads, run_sft, to_microbatches

SEQ = 256


@pytest.fixture(scope="module")
def cfg():
  return tiny_sft.model_config()


@pytest.fixture(scope="module")
def params(cfg):
  return tiny_sft.random_params(cfg)


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("shards"))
  tiny_sft.write_shards(d, 12)
  examples, _ = pl.load_examples(d, tiny_sft.tokenizer(), pl.DataConfig(seq_len=SEQ))
  return examples


def _stack(batches):
  return {k: np.concatenate([b[k] for b in batches]) for k in pl.BATCH_KEYS}


def _max_diff(a, b):
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_chunked_nll_matches_full_logits(cfg, params):
  key = jax.random.key(1)
  tokens = jax.random.randint(key, (2, 37), 0, cfg.vocab_size)
  seg = jnp.ones((2, 37), jnp.int32)
  h, _ = jax.jit(hidden_states, static_argnums=3)(params, tokens, seg, cfg)
  targets = jnp.roll(tokens, -1, axis=1)
  weights = jax.random.bernoulli(key, 0.6, (2, 37)).astype(jnp.float32)
  ref_fn = jax.jit(lambda p: reference_nll(p, h, targets, weights, cfg)[0])
  ref = ref_fn(params)
  for chunk in (5, 16, 37, 512):
    got, total = jax.jit(lambda p, c=chunk: chunked_nll(p, h, targets, weights, cfg, chunk_size=c))(params)
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    assert total == weights.sum()
  g_ref = jax.jit(jax.grad(ref_fn))(params)
  g = jax.jit(jax.grad(lambda p: chunked_nll(p, h, targets, weights, cfg, chunk_size=16)[0]))(params)
  assert _max_diff(g, g_ref) < 1e-5


def test_packed_and_unpacked_give_the_same_loss(cfg, params, examples):
  tc = TrainConfig(loss_chunk_size=64)
  n = 8
  unpacked = _stack(list(pl.make_dataset(examples[:n], pl.DataConfig(seq_len=SEQ, packing=False, shuffle=False,
                                                                      num_epochs=1), batch_size=1)))
  packed = _stack(list(pl.make_dataset(examples[:n], pl.DataConfig(seq_len=SEQ, shuffle=False, num_epochs=1,
                                                                    packing_bins=4), batch_size=1)))
  rows = packed["inputs"].shape[0]
  assert rows < n == unpacked["inputs"].shape[0]
  # All-padding rows bring the packed batch to the same shape (one compilation); they carry no weight.
  packed = {k: np.concatenate([v, np.zeros((n - rows, SEQ), v.dtype)]) for k, v in packed.items()}
  assert packed["weights"].sum() == unpacked["weights"].sum() == sum(e["weights"].sum() for e in examples[:n])
  loss_u, grads_u = loss_and_grads(params, to_microbatches(unpacked, 1), cfg, tc)
  loss_p, grads_p = loss_and_grads(params, to_microbatches(packed, 1), cfg, tc)
  assert abs(float(loss_u) - float(loss_p)) <= 1e-5
  assert _max_diff(grads_u, grads_p) <= 1e-5


def test_gradient_accumulation_equals_one_big_batch(cfg, params, examples):
  batch = next(iter(pl.make_dataset(examples, pl.DataConfig(seq_len=SEQ, packing=False, seed=3), batch_size=4)))
  results = []
  for m in (1, 4):  # The jitted train step scans over the microbatches; the update must not change.
    trainer = Trainer(cfg, TrainConfig(global_batch_size=4, grad_accum_steps=m, learning_rate=1e-3, warmup_steps=0,
                                       total_steps=10, loss_chunk_size=64), params)
    state, metrics = trainer.step_fn(trainer.state, trainer.device_batch(batch))
    results.append((state.params, float(metrics["loss"]), float(metrics["grad_norm"])))
  assert abs(results[0][1] - results[1][1]) <= 1e-5
  assert abs(results[0][2] - results[1][2]) <= 1e-5 and _max_diff(results[0][0], results[1][0]) <= 1e-5


def test_schedule_and_defaults():
  tc = TrainConfig()
  assert (tc.learning_rate, tc.min_learning_rate, tc.warmup_steps, tc.total_steps, tc.global_batch_size) == (
      5e-6, 1e-6, 250, 2500, 32)
  assert (tc.b1, tc.b2, tc.weight_decay) == (0.9, 0.95, 0.1)
  think = TrainConfig.thinking()
  assert (think.warmup_steps, think.total_steps) == (50, 300)
  lr = lr_schedule(tc)
  np.testing.assert_allclose([lr(0), lr(249), lr(250), lr(2500), lr(5000)], [5e-6 / 250, 5e-6, 5e-6, 1e-6, 1e-6],
                             rtol=1e-5)
  assert 1e-6 < float(lr(1375)) < 5e-6
  with pytest.raises(ValueError):
    TrainConfig(global_batch_size=6, grad_accum_steps=4)


def _iterator(examples, seed=0):
  return iter(pl.make_dataset(examples, pl.DataConfig(seq_len=SEQ, seed=seed, packing_bins=2), batch_size=2))


def _train_cfg(**kw):
  base = dict(learning_rate=1e-2, min_learning_rate=1e-3, warmup_steps=2, total_steps=12, global_batch_size=2,
              loss_chunk_size=64, save_interval_steps=4, max_to_keep=2)
  return TrainConfig(**{**base, **kw})


def test_training_drives_the_loss_down(cfg, params, examples, tmp_path):
  shards = tiny_sft.write_shards(str(tmp_path / "shards"), 4, extra_rows=('{"id": "broken", "messages": []}',))
  trainer, stats = run_sft(cfg, params, shards, tiny_sft.tokenizer(), pl.DataConfig(seq_len=SEQ, packing_bins=2),
                           _train_cfg(), str(tmp_path), export_dir=str(tmp_path / "hf"))
  assert stats.examples == 4 and [i for i, _ in stats.bad] == ["broken"]
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in records] == list(range(1, 13))
  assert records[-1]["loss"] < 0.7 * records[0]["loss"], (records[0]["loss"], records[-1]["loss"])
  assert {"loss", "lr", "grad_norm", "tokens_per_s", "padding_fraction", "target_tokens"} <= set(records[0])
  events = read_events(str(next((tmp_path / "tensorboard").iterdir())))
  assert [s for s, _ in events] == list(range(1, 13))
  assert events[-1][1]["loss"] == pytest.approx(records[-1]["loss"], rel=1e-6)
  back_cfg, back = hf.load_hf(str(tmp_path / "hf"), param_dtype="float32", compute_dtype="float32")
  assert back_cfg.hidden_size == cfg.hidden_size
  assert _max_diff(back, jax.device_get(trainer.state.params)) == 0.0


def test_resume_is_bitwise_identical(cfg, params, examples, tmp_path):
  tc = _train_cfg(async_checkpointing=True)
  full = Trainer(cfg, tc, params, str(tmp_path / "full"))
  full_it = _iterator(examples)
  full.fit(full_it)
  full.close()

  first = Trainer(cfg, tc, params, str(tmp_path / "split"))
  first.fit(_iterator(examples), num_steps=6)  # Stops between checkpoints: the last one is forced at step 6.
  first.close()
  second = Trainer(cfg, tc, params, str(tmp_path / "split"))
  second_it = _iterator(examples)
  second.fit(second_it)
  second.close()
  assert int(second.state.step) == 12
  for a, b in zip(jax.tree.leaves(full.state), jax.tree.leaves(second.state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_array_equal(next(full_it)["inputs"], next(second_it)["inputs"])  # Data order included.
  assert sorted(int(s) for s in os.listdir(tmp_path / "split" / "checkpoints") if s.isdigit()) == [8, 12]


def test_fsdp_data_mesh_matches_one_device(cfg, params, examples):
  assert jax.device_count() == 8
  tc = _train_cfg(global_batch_size=8, grad_accum_steps=2, learning_rate=1e-3)
  it = iter(pl.make_dataset(examples, pl.DataConfig(seq_len=SEQ, seed=5), batch_size=8))
  batches = [next(it) for _ in range(2)]
  results = {}
  for name, mesh in (("one", None), ("mesh", make_mesh({"data": 2, "fsdp": 4}))):
    trainer = Trainer(cfg, tc, params, mesh=mesh)
    losses = []
    for b in batches:
      trainer.state, metrics = trainer.step_fn(trainer.state, trainer.device_batch(b))
      losses.append(float(metrics["loss"]))
    results[name] = (losses, jax.device_get(trainer.state.params))
  embed = trainer.state.params.embed
  assert embed.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp") and len(embed.sharding.device_set) == 8
  np.testing.assert_allclose(results["one"][0], results["mesh"][0], atol=1e-5)
  assert _max_diff(results["one"][1], results["mesh"][1]) <= 1e-5


def test_moe_balance_loss_enters_the_objective(examples):
  """Qwen3-MoE: the router gets gradient from router_aux_loss_coef * balance loss; the reported loss stays the NLL."""
  batch = next(iter(pl.make_dataset(examples, pl.DataConfig(seq_len=SEQ, packing=False, seed=3), batch_size=2)))
  moe = dict(model_type="qwen3_moe", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16)
  results = []
  for coef in (0.0, 0.5):
    cfg = tiny_sft.model_config(router_aux_loss_coef=coef, **moe)
    trainer = Trainer(cfg, TrainConfig(global_batch_size=2, learning_rate=1e-2, warmup_steps=0, total_steps=10,
                                       loss_chunk_size=64), tiny_sft.random_params(cfg))
    state, metrics = trainer.step_fn(trainer.state, trainer.device_batch(batch))
    results.append((state.params, float(metrics["loss"]), float(metrics["balance_loss"])))
  (p0, loss0, bal0), (p1, loss1, bal1) = results
  assert loss0 == pytest.approx(loss1, abs=1e-6) and bal0 == pytest.approx(bal1, abs=1e-6)
  assert bal0 > 0.0
  router_change = float(jnp.max(jnp.abs(p0.layers[0].mlp.router - p1.layers[0].mlp.router)))
  assert router_change > 1e-6
