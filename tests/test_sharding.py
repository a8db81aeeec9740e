"""The forward, prefill and decode on an 8-device fake CPU mesh equal the single-device results."""

import logging

import jax
import numpy as np
import pytest

import paged_run
import tiny_hf
from ssd_jax.models import hf, sharding, transformer
from ssd_jax.models.sharding import ShardingRules, make_mesh

MESHES = [
    {"data": 8},
    {"fsdp": 8},
    {"data": 2, "tensor": 4},
    {"fsdp": 2, "expert": 4},
    {"data": 2, "expert": 2, "tensor": 2},
    {"expert": 8},
]


@pytest.fixture(scope="module")
def moe_checkpoint(tmp_path_factory):
  model = tiny_hf.make_model("qwen3_moe", seed=7, num_key_value_heads=4)
  return tiny_hf.save(model, str(tmp_path_factory.mktemp("moe")), sharded=True)


@pytest.fixture(scope="module")
def reference(moe_checkpoint):
  cfg, params = hf.load_hf(moe_checkpoint, param_dtype="float32")
  tokens = np.random.RandomState(0).randint(3, cfg.vocab_size, (8, 12)).astype(np.int32)
  segments = np.ones_like(tokens)
  segments[:, :3] = 0  # left padding on every row
  segments[1, :7] = 0
  full = jax.jit(transformer.forward, static_argnames="cfg")(params, tokens, segments, cfg=cfg)
  lengths = [9, 4, 9, 9, 9, 9, 9, 9]  # right-padded rows for the paged prefill, then one decode step each
  cached = paged_run.run(cfg, params, tokens, lengths, 1)
  return tokens, segments, np.asarray(full), lengths, cached


def test_eight_fake_devices():
  assert jax.device_count() == 8


@pytest.mark.parametrize("shape", MESHES, ids=lambda s: "x".join(f"{k}{v}" for k, v in s.items()))
def test_sharded_forward_and_decode_match_single_device(moe_checkpoint, reference, shape):
  tokens, segments, full_ref, lengths, cached_ref = reference
  mesh = make_mesh(shape)
  rules = ShardingRules()
  cfg, params = hf.load_hf(moe_checkpoint, param_dtype="float32", mesh=mesh, rules=rules)
  # The rules really shard: experts over "expert", heads over "tensor", embed over "fsdp".
  moe_gate = params.layers[0].mlp.gate
  assert moe_gate.sharding.is_equivalent_to(rules.sharding(mesh, ("experts", "embed", "moe_mlp"), moe_gate.shape), 3)
  if shape.get("expert", 1) > 1:
    assert moe_gate.sharding.spec[0] == "expert"
  if shape.get("tensor", 1) > 1:
    assert params.layers[0].attn.q.sharding.spec[1] == "tensor"
  sh = transformer.Sharding(mesh, rules)
  full = jax.jit(transformer.forward, static_argnames=("cfg", "sharding"))(
      params, tokens, segments, cfg=cfg, sharding=sh)
  np.testing.assert_allclose(np.asarray(full), full_ref, atol=1e-4)
  # The paged cache: pages and slots split over the batch axes, KV heads over tensor; same logits as one device.
  cached = paged_run.run(cfg, params, tokens, lengths, 1, sharding=sh)
  np.testing.assert_allclose(cached, cached_ref, atol=1e-4)


def test_indivisible_dims_are_replicated():
  mesh = make_mesh({"data": 2, "tensor": 4})
  rules = ShardingRules()
  assert rules.spec(("embed", "kv_heads", "head_dim"), (32, 3, 16), mesh) == jax.sharding.PartitionSpec(
      None, None, None)
  assert rules.spec(("batch", None), (6, 5), mesh) == jax.sharding.PartitionSpec("data", None)
  assert rules.spec(("batch", None), (1, 5), mesh) == jax.sharding.PartitionSpec(None, None)


def test_replication_is_logged_once(caplog, monkeypatch):
  monkeypatch.setattr(sharding, "_reported", set())  # other tests may have warned about the same arrays
  mesh = make_mesh({"data": 2, "tensor": 4})
  rules = ShardingRules()
  with caplog.at_level(logging.WARNING, logger="ssd_jax.models.sharding"):
    # 6 KV heads do not divide tensor=4: replicated, logged once however often the spec is asked for.
    for _ in range(2):
      assert rules.spec(("embed", "kv_heads", "head_dim"), (32, 6, 16), mesh)[1] is None
    rules.sharding(mesh, ("embed", "kv_heads", "head_dim"), (32, 6, 16))
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    msg = record.getMessage()
    assert "'kv_heads'" in msg and "(32, 6, 16)" in msg and "tensor=4" in msg
    assert "replicated over tensor" in msg and "one of 2, 3, 6" in msg
    # Batch 6 over data=2 x expert=4 keeps data and loses expert; a dividing shape and size-1 axes log nothing.
    caplog.clear()
    assert rules.spec(("batch", None), (6, 5), make_mesh({"data": 2, "expert": 4})) == jax.sharding.PartitionSpec(
        "data", None)
    [record] = caplog.records
    assert "'batch'" in record.getMessage() and "replicated over expert instead (kept data)" in record.getMessage()
    caplog.clear()
    assert rules.spec(("embed", "kv_heads", "head_dim"), (32, 8, 16), mesh)[1] == "tensor"
    assert rules.spec(("embed", "kv_heads", "head_dim"), (32, 6, 16), make_mesh({"data": 8})) == (
        jax.sharding.PartitionSpec(None, None, None))
    assert not caplog.records


def test_make_mesh_shapes():
  assert dict(make_mesh().shape) == {"data": 1, "fsdp": 8, "expert": 1, "tensor": 1}
  assert dict(make_mesh({"tensor": 2, "data": -1}).shape) == {"data": 4, "fsdp": 1, "expert": 1, "tensor": 2}
  with pytest.raises(ValueError, match="unknown mesh axes"):
    make_mesh({"model": 8})
  with pytest.raises(ValueError, match="devices"):
    make_mesh({"data": 3, "fsdp": 1})


@pytest.mark.parametrize("shape", [None, {"fsdp": 2, "expert": 4}], ids=["one_device", "fsdp2xexpert4"])
def test_moe_in_passes_equals_one_pass(moe_checkpoint, reference, monkeypatch, shape):
  """Long rows run the experts over the tokens in checkpointed passes (layers.MOE_TOKENS_PER_PASS); at 5 tokens per
  pass (the last one padded) the logits and every gradient equal the single pass's."""
  from ssd_jax.models import layers

  tokens, segments = reference[:2]
  mesh = make_mesh(shape) if shape else None
  rules = ShardingRules() if shape else None
  cfg, params = hf.load_hf(moe_checkpoint, param_dtype="float32", mesh=mesh, rules=rules)
  sh = transformer.Sharding(mesh, rules)
  weights = np.random.RandomState(1).normal(size=(*tokens.shape, cfg.vocab_size)).astype(np.float32)

  def run():
    def loss(p):
      logits = transformer.forward(p, tokens, segments, cfg, sharding=sh)
      return (logits * weights).sum(), logits
    return jax.jit(jax.grad(loss, has_aux=True))(params)

  def loops() -> int:
    text = jax.jit(lambda p: transformer.forward(p, tokens, segments, cfg, sharding=sh)).lower(params).as_text()
    return text.count("stablehlo.while")

  grads, logits, one_pass_loops = *run(), loops()
  monkeypatch.setattr(layers, "MOE_TOKENS_PER_PASS", 5)
  passes_grads, passes_logits = run()
  assert loops() > one_pass_loops  # the passes really ran
  np.testing.assert_allclose(np.asarray(passes_logits), np.asarray(logits), atol=1e-5)
  for g, ref in zip(jax.tree.leaves(passes_grads), jax.tree.leaves(grads)):
    np.testing.assert_allclose(np.asarray(g), np.asarray(ref), atol=1e-4, rtol=1e-5)


def test_mesh_splits_physical_axes_when_the_sizes_need_it(monkeypatch, caplog):
  """On a TPU slice jax.make_mesh refuses axis sizes that are not products of whole physical axes (GPT-OSS's
  fsdp 8 x expert 2 x tensor 2 on v5p-64's 2 x 4 x 4 chips; found compiling for that slice). make_mesh then splits
  physical axes and says so; CPU devices have no torus, so the refusal is simulated here."""
  def refuse(*args, **kwargs):
    raise NotImplementedError("Failed to find assignment for logical_axis_index 2 of size 2. More text")

  monkeypatch.setattr(jax, "make_mesh", refuse)
  monkeypatch.setattr(sharding, "_reported", set())
  with caplog.at_level(logging.WARNING, logger="ssd_jax.models.sharding"):
    mesh = make_mesh({"fsdp": 2, "expert": 2, "tensor": 2})
  assert dict(mesh.shape) == {"data": 1, "fsdp": 2, "expert": 2, "tensor": 2}
  assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in jax.devices())
  assert "splitting physical axes" in caplog.text and "logical_axis_index 2" in caplog.text
