"""Fused training attention: jax's Pallas splash (TPU) and flash (GPU) kernels, run in interpret mode on CPU, equal
the segment-masked XLA attention on packed rows (forward and gradients, GQA, on one device and on a mesh), and a
packed training step through them equals the unpacked one."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny_sft
from ssd_jax.models import fused_attention, layers
from ssd_jax.models.sharding import ShardingRules, make_mesh
from ssd_jax.models.transformer import Sharding, hidden_states
from ssd_jax.train import pipeline as pl
from ssd_jax.train.loss import chunked_nll
from ssd_jax.train.optim import TrainConfig
from ssd_jax.train.trainer import Trainer

KERNELS = ("splash", "pallas_gpu")
# Tiles small enough that segments cross tile boundaries at S = 256 (splash's minimum tile is 128 tokens).
BLOCK = {"splash": 128, "pallas_gpu": 64}


def _segments(rows: list[list[int]], s: int) -> np.ndarray:
  """Segment lengths per row -> [B, s] ids 1, 2, ... with padding (0) after the last segment."""
  out = np.zeros((len(rows), s), np.int32)
  for r, lengths in enumerate(rows):
    at = 0
    for i, n in enumerate(lengths, 1):
      out[r, at:at + n] = i
      at += n
  return out


# Row 0: a segment crossing the first tile boundary, one of length 1, padding at the end. Row 1: a length-1 segment
# first, segments crossing both tile sizes. Row 2: one document and padding (an unpacked row). Row 3: no padding.
# 250 tokens: the kernels pad the rows to whole tiles (256) themselves.
SEGMENTS = _segments([[130, 1, 90], [1, 70, 129, 30], [200], [64, 186]], 250)


def _qkv(b: int, s: int, h: int, kv: int, dh: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  q = jnp.asarray(rng.standard_normal((b, s, h, dh)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((b, kv, s, dh)), jnp.float32)
  v = jnp.asarray(rng.standard_normal((b, kv, s, dh)), jnp.float32)
  return q, k, v


def _reference(q, k, v, segment_ids):
  """The segment-masked XLA attention, padding queries zeroed (what every implementation returns there)."""
  out = layers.attention(q, k, v, layers.segment_mask(segment_ids))
  return jnp.where((segment_ids > 0)[:, :, None, None], out, 0.0)


def _value_and_grads(fn, q, k, v, cotangent):
  """fn's output and the gradients of <fn(q, k, v), cotangent> with respect to q, k and v."""
  out, vjp = jax.vjp(fn, q, k, v)
  return out, vjp(cotangent)


@pytest.mark.parametrize("impl", KERNELS)
def test_kernel_equals_the_segment_masked_attention(impl):
  q, k, v = _qkv(4, 250, 4, 2, 16)
  seg = jnp.asarray(SEGMENTS)
  cot = jnp.asarray(np.random.default_rng(1).standard_normal(q.shape), jnp.float32)
  fused = jax.jit(lambda q, k, v: fused_attention.attention(q, k, v, seg, impl=impl, block=BLOCK[impl],
                                                            interpret=True))
  out, grads = _value_and_grads(fused, q, k, v, cot)
  want, want_grads = _value_and_grads(jax.jit(lambda q, k, v: _reference(q, k, v, seg)), q, k, v, cot)
  assert np.isfinite(np.asarray(out)).all()
  assert np.all(np.asarray(out)[SEGMENTS == 0] == 0)
  np.testing.assert_allclose(out, want, atol=1e-5, rtol=0)
  for name, g, w in zip("qkv", grads, want_grads):
    assert np.isfinite(np.asarray(g)).all(), name
    np.testing.assert_allclose(g, w, atol=1e-4, rtol=0, err_msg=f"d{name}")
  # Padding queries pass no gradient back: their cotangents change nothing.
  cot_pad = jnp.where((seg == 0)[:, :, None, None], 100.0, cot)
  _, grads_pad = _value_and_grads(fused, q, k, v, cot_pad)
  for g, g_pad in zip(grads, grads_pad):
    np.testing.assert_array_equal(g, g_pad)


def test_splash_with_sinks_and_a_sliding_window_equals_xla():
  """GPT-OSS layers: splash's local mask and sink logits (in interpret mode) equal the XLA attention, forward and
  gradients (the sinks' included), with a window shorter than the segments that cross tiles."""
  q, k, v = _qkv(2, 250, 4, 2, 16, seed=5)
  seg = jnp.asarray(SEGMENTS[:2])
  sinks = jnp.asarray(np.random.default_rng(6).standard_normal(4), jnp.float32)
  cot = jnp.asarray(np.random.default_rng(7).standard_normal(q.shape), jnp.float32)
  window = 100

  def fused(q, k, v, sinks):
    return fused_attention.attention(q, k, v, seg, impl="splash", block=128, window=window, sinks=sinks,
                                     interpret=True)

  def reference(q, k, v, sinks):
    out = layers.attention(q, k, v, layers.segment_mask(seg, window), sinks)
    return jnp.where((seg > 0)[:, :, None, None], out, 0.0)

  out, vjp = jax.vjp(jax.jit(fused), q, k, v, sinks)
  want, want_vjp = jax.vjp(jax.jit(reference), q, k, v, sinks)
  np.testing.assert_allclose(out, want, atol=1e-5, rtol=0)
  for name, g, w in zip(("q", "k", "v", "sinks"), vjp(cot), want_vjp(cot)):
    np.testing.assert_allclose(g, w, atol=1e-4, rtol=0, err_msg=f"d{name}")
  # The window and the sinks both matter here: without either, the reference differs.
  assert np.abs(np.asarray(reference(q, k, v, None)) - np.asarray(want)).max() > 1e-2
  full = jnp.where((seg > 0)[:, :, None, None], layers.attention(q, k, v, layers.segment_mask(seg), sinks), 0.0)
  assert np.abs(np.asarray(full) - np.asarray(want)).max() > 1e-2


@pytest.mark.slow  # ~25 s of interpret-mode kernels on 8 fake devices
@pytest.mark.parametrize("impl,kv_heads", [("splash", 2), ("pallas_gpu", 2), ("pallas_gpu", 1)])
def test_sharded_over_batch_and_heads_equals_one_device(impl, kv_heads, caplog):
  """On a data 2 x fsdp 2 x tensor 2 mesh the kernel runs per device under shard_map (rows over data x fsdp, heads
  over tensor); with one KV head the heads cannot split evenly, so every device runs all heads of its rows."""
  mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  q, k, v = _qkv(4, 250, 4, kv_heads, 16, seed=3)
  seg = jnp.asarray(SEGMENTS)
  cot = jnp.asarray(np.random.default_rng(4).standard_normal(q.shape), jnp.float32)

  def fn(mesh):
    return jax.jit(lambda q, k, v: fused_attention.attention(q, k, v, seg, impl=impl, mesh=mesh, rules=ShardingRules(),
                                                             block=BLOCK[impl], interpret=True))

  with caplog.at_level(logging.WARNING, logger="ssd_jax.models.fused_attention"):
    out, grads = _value_and_grads(fn(mesh), q, k, v, cot)
  want, want_grads = _value_and_grads(fn(None), q, k, v, cot)
  np.testing.assert_allclose(out, want, atol=1e-5, rtol=0)
  for g, w in zip(grads, want_grads):
    np.testing.assert_allclose(g, w, atol=1e-4, rtol=0)
  replicated = [r for r in caplog.records if "computes all heads" in r.getMessage()]
  assert len(replicated) == (kv_heads == 1)


@pytest.mark.slow  # ~30 s of interpret-mode splash on 8 fake devices
def test_splash_sinks_shard_with_the_heads():
  """GPT-OSS layers on a data 2 x fsdp 2 x tensor 2 mesh: each device's sink logits are its query heads' (split over
  tensor with them), forward and gradients equal to one device."""
  mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  q, k, v = _qkv(4, 250, 4, 2, 16, seed=8)
  seg = jnp.asarray(SEGMENTS)
  sinks = jnp.asarray(np.random.default_rng(9).standard_normal(4), jnp.float32)
  cot = jnp.asarray(np.random.default_rng(10).standard_normal(q.shape), jnp.float32)

  def fn(mesh):
    return jax.jit(lambda q, k, v, sinks: fused_attention.attention(
        q, k, v, seg, impl="splash", window=100, sinks=sinks, mesh=mesh, rules=ShardingRules(), block=128,
        interpret=True))

  out, vjp = jax.vjp(fn(mesh), q, k, v, sinks)
  want, want_vjp = jax.vjp(fn(None), q, k, v, sinks)
  np.testing.assert_allclose(out, want, atol=1e-5, rtol=0)
  for g, w in zip(vjp(cot), want_vjp(cot)):
    np.testing.assert_allclose(g, w, atol=1e-4, rtol=0)


def _loss_and_grads(params, batch, cfg, impl: str):
  """The train step's token-weighted loss and gradients on one microbatch [B, S], Pallas kernels interpreted."""
  total = jnp.maximum(jnp.sum(batch["weights"]), 1.0)

  def loss_fn(p):
    h, _ = hidden_states(p, batch["inputs"], batch["segment_ids"], cfg, positions=batch["positions"],
                         attention=impl, interpret=True)
    nll, _ = chunked_nll(p, h, batch["targets"], batch["weights"], cfg, Sharding(), 64)
    return nll / total

  return jax.jit(jax.value_and_grad(loss_fn))(params)


@pytest.fixture(scope="module")
def model():
  cfg = tiny_sft.model_config()
  return cfg, tiny_sft.random_params(cfg)


@pytest.fixture(scope="module")
def packed_and_unpacked(tmp_path_factory):
  """The same 8 examples as 8 padded rows and as fewer packed rows (all-padding rows keep the shape)."""
  d = str(tmp_path_factory.mktemp("shards"))
  tiny_sft.write_shards(d, 8)
  seq = 256
  examples, _ = pl.load_examples(d, tiny_sft.tokenizer(), pl.DataConfig(seq_len=seq))

  def rows(packing: bool):
    ds = pl.make_dataset(examples, pl.DataConfig(seq_len=seq, packing=packing, shuffle=False, num_epochs=1,
                                                 packing_bins=4), batch_size=1)
    batches = list(ds)
    return {k: np.concatenate([b[k] for b in batches]) for k in pl.BATCH_KEYS}

  unpacked, packed = rows(False), rows(True)
  n, filled = unpacked["inputs"].shape[0], packed["inputs"].shape[0]
  assert filled < n == 8 and packed["segment_ids"].max() > 1
  packed = {k: np.concatenate([v, np.zeros((n - filled, seq), v.dtype)]) for k, v in packed.items()}
  return packed, unpacked


def _max_diff(a, b) -> float:
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def unpacked_through_xla(model, packed_and_unpacked):
  cfg, params = model
  return _loss_and_grads(params, packed_and_unpacked[1], cfg, "xla")


@pytest.mark.parametrize("impl", KERNELS)
def test_packed_training_step_equals_the_unpacked_one(impl, model, packed_and_unpacked, unpacked_through_xla):
  """Loss and gradients of the packed rows through the kernel equal those of the padded rows through it (and through
  XLA's masked attention). The kernels pick their default tiles here."""
  cfg, params = model
  packed, unpacked = packed_and_unpacked
  loss_p, grads_p = _loss_and_grads(params, packed, cfg, impl)
  loss_u, grads_u = _loss_and_grads(params, unpacked, cfg, impl)
  loss_x, grads_x = unpacked_through_xla
  assert abs(float(loss_p) - float(loss_u)) <= 1e-5
  assert _max_diff(grads_p, grads_u) <= 1e-5
  assert abs(float(loss_u) - float(loss_x)) <= 1e-5
  assert _max_diff(grads_u, grads_x) <= 1e-5


def test_auto_attention_per_backend_and_rows():
  choices = {(backend, packing): fused_attention.auto_attention(backend, packing)[0]
             for backend in ("cpu", "gpu", "tpu") for packing in (False, True)}
  assert choices == {("cpu", False): "xla", ("cpu", True): "xla", ("gpu", False): "cudnn",
                     ("gpu", True): "pallas_gpu", ("tpu", False): "splash", ("tpu", True): "splash"}
  assert "falls back to XLA" in fused_attention.auto_attention("cpu", True)[1]
  # A model with attention sinks (GPT-OSS): splash computes them; no GPU kernel does, so GPUs fall back to XLA.
  assert fused_attention.auto_attention("tpu", True, sinks=True)[0] == "splash"
  for packing in (False, True):
    impl, why = fused_attention.auto_attention("gpu", packing, sinks=True)
    assert impl == "xla" and "attention sinks" in why
  q, k, v = _qkv(1, 128, 2, 1, 8)
  for impl in ("cudnn", "pallas_gpu"):
    with pytest.raises(ValueError, match=f"attention '{impl}' has no attention sinks or sliding window"):
      fused_attention.attention(q, k, v, jnp.ones((1, 128), jnp.int32), impl=impl, sinks=jnp.zeros(2))


def test_bench_packs_equal_documents_per_row():
  """bench.device --segments: n documents per row, positions restarting in each."""
  from ssd_jax.bench.device import packed_segments

  segment_ids, positions = packed_segments(10, 3)
  np.testing.assert_array_equal(segment_ids, [1, 1, 1, 2, 2, 2, 3, 3, 3, 3])
  np.testing.assert_array_equal(positions, [0, 1, 2, 0, 1, 2, 0, 1, 2, 3])
  np.testing.assert_array_equal(packed_segments(4, 1)[1], np.arange(4))
  with pytest.raises(ValueError, match="--segments must be in 1..--seq"):
    packed_segments(4, 5)


def test_a_kernel_for_another_backend_is_refused_by_name():
  q, k, v = _qkv(1, 128, 2, 1, 8)
  seg = jnp.ones((1, 128), jnp.int32)
  for impl, backend in (("splash", "tpu"), ("pallas_gpu", "gpu"), ("cudnn", "gpu")):
    with pytest.raises(ValueError, match=f"attention '{impl}' runs on '{backend}' devices"):
      fused_attention.attention(q, k, v, seg, impl=impl)
  with pytest.raises(ValueError, match="unknown attention 'flash'"):
    fused_attention.attention(q, k, v, seg, impl="flash")
  cfg = tiny_sft.model_config()
  trainer = Trainer(cfg, TrainConfig(global_batch_size=1, attention="splash"), tiny_sft.random_params(cfg))
  batch = {key: np.ones((1, 128), np.float32 if key == "weights" else np.int32) for key in pl.BATCH_KEYS}
  with pytest.raises(ValueError, match="attention 'splash' runs on 'tpu' devices"):
    trainer.step_fn(trainer.state, trainer.device_batch(batch))
