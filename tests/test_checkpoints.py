"""HF export round trip, orbax save/restore across meshes, and clear errors on bad checkpoints."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

import tiny_hf
from ssd_jax.models import checkpoint, hf, transformer
from ssd_jax.models.sharding import ShardingRules, make_mesh

_forward = jax.jit(transformer.forward, static_argnames=("cfg",))


def _tokens(cfg, seed=0):
  return np.random.RandomState(seed).randint(3, cfg.vocab_size, (2, 11)).astype(np.int32)


@pytest.mark.parametrize("family", list(tiny_hf.FAMILIES))
def test_export_then_transformers_reload_gives_same_logits(tmp_path, family):
  src = tiny_hf.save(tiny_hf.make_model(family, seed=3), str(tmp_path / "src"))
  (tmp_path / "src" / "tokenizer_config.json").write_text('{"model_max_length": 512}')
  cfg, params = hf.load_hf(src, param_dtype="float32")
  out = hf.export_hf(params, cfg, str(tmp_path / "export"), tokenizer_dir=src, max_shard_bytes=20_000)
  files = os.listdir(out)
  assert "config.json" in files and "tokenizer_config.json" in files
  assert "model.safetensors.index.json" in files  # small shards force the sharded layout
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
  tokens = _tokens(cfg)
  with torch.no_grad():
    ref = reloaded(torch.tensor(tokens, dtype=torch.long)).logits.numpy()
  ours = np.asarray(_forward(params, tokens, np.ones_like(tokens), cfg=cfg))
  assert np.abs(ours - ref).max() <= 1e-4
  # And our own loader reads our export back to identical params.
  cfg2, params2 = hf.load_hf(out, param_dtype="float32")
  assert cfg2 == cfg
  jax.tree.map(np.testing.assert_array_equal, params, params2)


def test_export_refuses_to_overwrite_and_leaves_nothing_half_written(tmp_path, monkeypatch):
  src = tiny_hf.save(tiny_hf.make_model("qwen3"), str(tmp_path / "src"))
  cfg, params = hf.load_hf(src, param_dtype="float32")
  target = tmp_path / "out"
  target.mkdir()
  (target / "precious.txt").write_text("keep me")
  with pytest.raises(FileExistsError, match="not empty"):
    hf.export_hf(params, cfg, str(target))
  assert (target / "precious.txt").read_text() == "keep me"

  calls = {"n": 0}
  real_save = hf.save_file

  def failing_save(*args, **kwargs):
    calls["n"] += 1
    if calls["n"] == 2:
      raise OSError("disk full")
    return real_save(*args, **kwargs)

  monkeypatch.setattr(hf, "save_file", failing_save)
  with pytest.raises(OSError, match="disk full"):
    hf.export_hf(params, cfg, str(tmp_path / "fresh"), max_shard_bytes=10_000)
  assert not (tmp_path / "fresh").exists()
  assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_orbax_round_trip_onto_another_mesh(tmp_path):
  src = tiny_hf.save(tiny_hf.make_model("qwen3_moe", num_key_value_heads=4), str(tmp_path / "src"))
  rules = ShardingRules()
  mesh_a = make_mesh({"fsdp": 2, "expert": 4})
  cfg, params = hf.load_hf(src, param_dtype="float32", mesh=mesh_a, rules=rules)
  checkpoint.save_params(str(tmp_path / "ckpt"), params, cfg)
  with pytest.raises(FileExistsError):
    checkpoint.save_params(str(tmp_path / "ckpt"), params, cfg)
  mesh_b = make_mesh({"data": 2, "tensor": 4})
  cfg_b, restored = checkpoint.restore_params(str(tmp_path / "ckpt"), mesh=mesh_b, rules=rules)
  assert cfg_b == cfg
  q = restored.layers[0].attn.q
  assert q.sharding.mesh.shape == mesh_b.shape and q.sharding.spec[1] == "tensor"
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, restored)
  cfg_1, single = checkpoint.restore_params(str(tmp_path / "ckpt"), param_dtype="bfloat16")
  assert single.embed.dtype == jnp.bfloat16 and cfg_1.param_dtype == "bfloat16"


@pytest.fixture()
def llama_dir(tmp_path):
  return tiny_hf.save(tiny_hf.make_model("llama"), str(tmp_path / "llama"))


def test_missing_tensor_is_named(llama_dir):
  path = os.path.join(llama_dir, "model.safetensors")
  tensors = load_file(path)
  del tensors["model.layers.1.self_attn.k_proj.weight"]
  save_file(tensors, path)
  with pytest.raises(hf.CheckpointError,
                     match=r"missing tensor 'model.layers.1.self_attn.k_proj.weight' .*expected shape \(32, 32\)"):
    hf.load_hf(llama_dir, param_dtype="float32")


def test_wrong_shape_is_named(llama_dir):
  path = os.path.join(llama_dir, "model.safetensors")
  tensors = load_file(path)
  tensors["model.layers.0.mlp.down_proj.weight"] = np.zeros((32, 40), np.float32)
  save_file(tensors, path)
  with pytest.raises(hf.CheckpointError, match=r"'model.layers.0.mlp.down_proj.weight' in model.safetensors has "
                     r"shape \(32, 40\), expected \(32, 48\)"):
    hf.load_hf(llama_dir, param_dtype="float32")


def test_truncated_safetensors_is_named(llama_dir):
  path = os.path.join(llama_dir, "model.safetensors")
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(size - 1000)
  with pytest.raises(hf.CheckpointError, match=r"model.safetensors: (truncated|unreadable)"):
    hf.load_hf(llama_dir, param_dtype="float32")


def test_missing_shard_and_config_are_named(tmp_path):
  path = tiny_hf.save(tiny_hf.make_model("qwen3"), str(tmp_path / "q"), sharded=True)
  index = json.load(open(os.path.join(path, "model.safetensors.index.json")))
  victim = sorted(set(index["weight_map"].values()))[1]
  os.remove(os.path.join(path, victim))
  with pytest.raises(hf.CheckpointError, match=f"{victim}: listed in the safetensors index but missing"):
    hf.load_hf(path)
  os.remove(os.path.join(path, "config.json"))
  with pytest.raises(ValueError, match="config.json: not found"):
    hf.load_hf(path)
