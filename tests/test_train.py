"""SFT trainer: chunked loss, packing invariance, gradient accumulation, learning, exact resume, meshes, export."""

import json
import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny_sft
from ssd_jax.models import hf
from ssd_jax.models.config import ModelConfig
from ssd_jax.models.sharding import ShardingRules, make_mesh
from ssd_jax.models.transformer import Params, Sharding, hidden_states, logits_from_hidden, param_shardings
from ssd_jax.train import pipeline as pl
from ssd_jax.train.loss import chunked_nll
from ssd_jax.train.optim import TrainConfig, lr_schedule
from ssd_jax.train.trainer import Trainer, restore_params, run_sft, saved_steps, to_microbatches
from tensorboardX.proto.event_pb2 import Event
from tensorboardX.record_writer import masked_crc32c

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


def reference_nll(params: Params, h: jax.Array, targets: jax.Array, weights: jax.Array, cfg: ModelConfig
                  ) -> tuple[jax.Array, jax.Array]:
  """`chunked_nll` from full [B, S, V] logits."""
  logits = logits_from_hidden(params, h, cfg)
  nll = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]
  return jnp.sum(nll * weights), jnp.sum(weights)


def loss_and_grads(params: Params, batch: dict[str, np.ndarray], cfg: ModelConfig, tc: TrainConfig
                   ) -> tuple[jax.Array, Params]:
  """The train step's token-weighted loss and its gradient on a batch [m, b, S], without an optimizer."""
  m = batch["inputs"].shape[0]
  total = jnp.maximum(jnp.sum(batch["weights"]), 1.0)
  sharding = Sharding()

  def loss_fn(p):
    out = 0.0
    for i in range(m):
      mb = {k: jnp.asarray(v[i]) for k, v in batch.items()}
      h, _ = hidden_states(p, mb["inputs"], mb["segment_ids"], cfg, positions=mb["positions"], sharding=sharding,
                           remat=tc.remat, attention=tc.attention)
      nll, _ = chunked_nll(p, h, mb["targets"], mb["weights"], cfg, sharding, tc.loss_chunk_size)
      out = out + nll / total
    return out

  return jax.jit(jax.value_and_grad(loss_fn))(params)


def read_scalars(path: str) -> dict[int, dict[str, float]]:
  """{step: {tag: value}} of the scalar summaries in one event file, with both CRCs of every TFRecord checked.

  tensorboardX writes event files but ships no reader; this is the TFRecord framing (length, masked CRC-32C of
  the length, payload, masked CRC-32C of the payload) around its own `Event` proto.
  """
  out: dict[int, dict[str, float]] = {}
  with open(path, "rb") as f:
    data = f.read()
  pos = 0
  while pos < len(data):
    header = data[pos:pos + 8]
    (n,) = struct.unpack("<Q", header)
    payload = data[pos + 12:pos + 12 + n]
    assert struct.unpack("<I", data[pos + 8:pos + 12])[0] == masked_crc32c(header), f"length CRC at byte {pos}"
    assert struct.unpack("<I", data[pos + 12 + n:pos + 16 + n])[0] == masked_crc32c(payload), f"CRC at byte {pos}"
    pos += 16 + n
    event = Event.FromString(payload)
    for value in event.summary.value:
      out.setdefault(event.step, {})[value.tag] = value.simple_value
  return out


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
  # optax's warmup is (init - peak) * frac + peak in float32: exact to a float32 ulp of the peak, not of itself.
  np.testing.assert_allclose([lr(0), lr(249), lr(250), lr(2500), lr(5000)], [5e-6 / 250, 5e-6, 5e-6, 1e-6, 1e-6],
                             rtol=1e-6, atol=2 * np.spacing(np.float32(5e-6)))
  assert 1e-6 < float(lr(1375)) < 5e-6
  with pytest.raises(ValueError):
    TrainConfig(global_batch_size=6, grad_accum_steps=4)
  with pytest.raises(ValueError):
    TrainConfig(learning_rate=0.0)


def _iterator(examples, seed=0):
  return iter(pl.make_dataset(examples, pl.DataConfig(seq_len=SEQ, seed=seed, packing_bins=2), batch_size=2))


def _train_cfg(**kw):
  base = dict(learning_rate=1e-2, min_learning_rate=1e-3, warmup_steps=2, total_steps=12, global_batch_size=2,
              loss_chunk_size=64, save_interval_steps=4, max_to_keep=2)
  return TrainConfig(**{**base, **kw})


def _lr_formula(tc: TrainConfig, step: jax.Array) -> jax.Array:
  """The schedule as written out before it used optax's: linear warmup from peak / warmup, then cosine."""
  peak, low, warm, total = tc.learning_rate, tc.min_learning_rate, tc.warmup_steps, tc.total_steps
  step = jnp.asarray(step, jnp.float32)
  warmup = peak * (step + 1.0) / max(warm, 1)
  frac = jnp.clip((step - warm) / max(total - warm, 1), 0.0, 1.0)
  cosine = low + 0.5 * (peak - low) * (1.0 + jnp.cos(jnp.pi * frac))
  return jnp.where(step < warm, warmup, cosine)


@pytest.mark.parametrize("tc", [
    TrainConfig(), TrainConfig.thinking(), _train_cfg(), TrainConfig(warmup_steps=0, total_steps=100),
    TrainConfig(warmup_steps=1, total_steps=10), TrainConfig(warmup_steps=12, total_steps=12),
    TrainConfig(warmup_steps=20, total_steps=12), TrainConfig(learning_rate=1e-3, min_learning_rate=1e-3)],
    ids=["instruct", "thinking", "tiny", "no_warmup", "warmup_1", "warmup_all", "warmup_past_end", "flat"])
def test_lr_schedule_matches_the_formula(tc: TrainConfig):
  warm, total = tc.warmup_steps, tc.total_steps
  steps = sorted({0, 1, max(warm - 1, 0), warm, warm + 1, (warm + total) // 2, total - 1, total, total + 1,
                  2 * total, *range(0, total + 2, max(total // 97, 1))})
  lr = lr_schedule(tc)
  # optax rounds in another order (warmup (init - peak) * frac + peak, cosine peak * ((1 - alpha) * c + alpha)):
  # measured at most 2 float32 ulps of the peak apart on these configs; 4 leaves room for other cos kernels.
  atol = 4 * np.spacing(np.float32(tc.learning_rate))
  # The train step passes its int32 step counter; plain ints work as well.
  got = jax.jit(jax.vmap(lr))(jnp.asarray(steps, jnp.int32))
  np.testing.assert_allclose(got, _lr_formula(tc, jnp.asarray(steps)), rtol=0, atol=atol)
  np.testing.assert_allclose([float(lr(s)) for s in (0, warm, total)],
                             [float(_lr_formula(tc, jnp.asarray(s))) for s in (0, warm, total)], rtol=0, atol=atol)
  # Step 0, the warmup's last step and the cosine's end (one step after the peak when warmup fills the run).
  np.testing.assert_allclose([lr(0), lr(max(warm - 1, 0)), lr(max(total, warm + 1))],
                             [tc.learning_rate / max(warm, 1), tc.learning_rate, tc.min_learning_rate], rtol=0,
                             atol=atol)


def test_training_drives_the_loss_down(cfg, params, examples, tmp_path):
  shards = tiny_sft.write_shards(str(tmp_path / "shards"), 4, extra_rows=('{"id": "broken", "messages": []}',))
  trainer, stats = run_sft(cfg, params, shards, tiny_sft.tokenizer(), pl.DataConfig(seq_len=SEQ, packing_bins=2),
                           _train_cfg(), str(tmp_path), export_dir=str(tmp_path / "hf"))
  assert stats.examples == 4 and [i for i, _ in stats.bad] == ["broken"]
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in records] == list(range(1, 13))
  assert records[-1]["loss"] < 0.7 * records[0]["loss"], (records[0]["loss"], records[-1]["loss"])
  assert {"loss", "lr", "grad_norm", "tokens_per_s", "padding_fraction", "target_tokens"} <= set(records[0])
  (event_file,) = (tmp_path / "tensorboard").iterdir()
  assert event_file.name.endswith(f".{os.getpid()}")
  # Every scalar of every record, as the float32 a summary holds.
  assert read_scalars(str(event_file)) == {r["step"]: {k: float(np.float32(v)) for k, v in r.items() if k != "step"}
                                           for r in records}
  back_cfg, back = hf.load_hf(str(tmp_path / "hf"), param_dtype="float32", compute_dtype="float32")
  assert back_cfg.hidden_size == cfg.hidden_size
  assert _max_diff(back, jax.device_get(trainer.state.params)) == 0.0
  # The checkpoints the evaluation of eval.ssd.checkpoints reads: saved every 4 steps, the last 2 kept.
  assert saved_steps(str(tmp_path)) == [8, 12]
  mesh = make_mesh(devices=jax.devices()[:1])
  assert _max_diff(restore_params(str(tmp_path), 12, cfg, mesh), jax.device_get(trainer.state.params)) == 0.0
  assert _max_diff(restore_params(str(tmp_path), 8, cfg, mesh), jax.device_get(trainer.state.params)) > 0.0
  with pytest.raises(FileNotFoundError, match=r"no checkpoint at step 4 \(kept: \[8, 12\]\)"):
    restore_params(str(tmp_path), 4, cfg, mesh)


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


def test_donated_params_become_the_state(cfg, params):
  """With several processes the pipeline donates the global copy of the base params to the trainer: the caller's
  arrays are consumed and the state holds the same values; without donation the caller's stay usable."""
  mesh = make_mesh({"data": 2, "fsdp": 4})
  tc = _train_cfg(global_batch_size=8)
  kept = Trainer(cfg, tc, params, mesh=mesh)
  # A copy: placing a one-device array on a replicated sharding may reuse its buffer, which donation deletes.
  source = jax.device_put(jax.tree.map(jnp.copy, params), param_shardings(cfg, mesh, ShardingRules()))
  donated = Trainer(cfg, tc, source, mesh=mesh, donate_params=True)
  assert all(x.is_deleted() for x in jax.tree.leaves(source))
  assert not any(x.is_deleted() for x in jax.tree.leaves(params))
  for a, b in zip(jax.tree.leaves(kept.state), jax.tree.leaves(donated.state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


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
