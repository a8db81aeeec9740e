"""Parity of the pure-JAX families with transformers, and cache / padding / packing invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import paged_run
import tiny_hf
from ssd_jax.models import hf, transformer
from ssd_jax.models.config import ModelConfig

FAMILIES = list(tiny_hf.FAMILIES)


def _tokens(b, s, vocab, seed=0):
  return np.random.RandomState(seed).randint(3, vocab, (b, s)).astype(np.int32)


def _torch_logits(model, tokens, attention_mask=None):
  with torch.no_grad():
    kwargs = {} if attention_mask is None else {"attention_mask": torch.tensor(attention_mask)}
    return model(torch.tensor(tokens, dtype=torch.long), **kwargs).logits.float().numpy()


_forward = jax.jit(transformer.forward, static_argnames=("cfg",))


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tmp_path_factory):
  model = tiny_hf.make_model(request.param)
  path = tiny_hf.save(model, str(tmp_path_factory.mktemp(request.param)))
  cfg, params = hf.load_hf(path, param_dtype="float32")
  return request.param, model, cfg, params


@pytest.mark.parametrize("family_name", FAMILIES)
@pytest.mark.parametrize("v4", [False, True], ids=["cfg5x", "cfg4x"])
@pytest.mark.parametrize("sharded", [False, True], ids=["single", "shards"])
def test_logits_match_transformers(tmp_path, family_name, v4, sharded):
  model = tiny_hf.make_model(family_name, seed=1)
  path = tiny_hf.save(model, str(tmp_path / "ckpt"), sharded=sharded, v4=v4)
  cfg, params = hf.load_hf(path, param_dtype="float32")
  assert cfg.model_type == family_name
  tokens = _tokens(2, 17, cfg.vocab_size)
  ours = np.asarray(_forward(params, tokens, jnp.ones_like(tokens), cfg=cfg))
  ref = _torch_logits(model, tokens)
  assert np.abs(ours - ref).max() <= 1e-4


@pytest.mark.parametrize("norm_topk_prob", [False, True])
@pytest.mark.parametrize("sparse", ["step2", "all"])
def test_moe_variants_match_transformers(tmp_path, norm_topk_prob, sparse):
  extra = dict(decoder_sparse_step=2, mlp_only_layers=[]) if sparse == "step2" else dict(mlp_only_layers=[])
  model = tiny_hf.make_model("qwen3_moe", seed=2, norm_topk_prob=norm_topk_prob, **extra)
  cfg, params = hf.load_hf(tiny_hf.save(model, str(tmp_path / "m")), param_dtype="float32")
  moe_layers = [cfg.is_moe_layer(i) for i in range(cfg.num_layers)]
  assert moe_layers == ([False, True, False] if sparse == "step2" else [True] * 3)
  tokens = _tokens(2, 9, cfg.vocab_size, seed=3)
  ours = np.asarray(_forward(params, tokens, jnp.ones_like(tokens), cfg=cfg))
  assert np.abs(ours - _torch_logits(model, tokens)).max() <= 1e-4


@pytest.mark.parametrize("rope", [
    {"rope_type": "linear", "factor": 4.0},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 32},
])
def test_rope_scaling_matches_transformers(tmp_path, rope):
  model = tiny_hf.make_model("llama", seed=4, rope_parameters={**rope, "rope_theta": 10000.0})
  cfg, params = hf.load_hf(tiny_hf.save(model, str(tmp_path / "m")), param_dtype="float32")
  assert cfg.rope_scaling.rope_type == rope["rope_type"]
  tokens = _tokens(1, 80, cfg.vocab_size, seed=5)  # past original_max_position_embeddings
  ours = np.asarray(_forward(params, tokens, jnp.ones_like(tokens), cfg=cfg))
  assert np.abs(ours - _torch_logits(model, tokens)).max() <= 1e-4


def test_prefill_then_decode_equals_forward(family):
  _, _, cfg, params = family
  tokens = _tokens(3, 14, cfg.vocab_size, seed=6)
  full = np.asarray(_forward(params, tokens, jnp.ones_like(tokens), cfg=cfg))
  got = paged_run.run(cfg, params, tokens, [6, 6, 6], 7)
  np.testing.assert_allclose(got, full[:, 5:13], atol=1e-4)


def test_rows_of_different_lengths_equal_each_row_alone(family):
  name, model, cfg, params = family
  lengths = [9, 5, 2]
  rows = [_tokens(1, n + 1, cfg.vocab_size, seed=10 + i)[0] for i, n in enumerate(lengths)]
  tokens = np.zeros((3, 10), np.int32)
  for i, row in enumerate(rows):
    tokens[i, :len(row)] = row
  # One prefill over right-padded rows, then one decode step each at its own position.
  got = paged_run.run(cfg, params, tokens, lengths, 1)
  for i, row in enumerate(rows):
    alone = _torch_logits(model, row[None])[0]
    np.testing.assert_allclose(got[i, 0], alone[-2], atol=1e-4)
    np.testing.assert_allclose(got[i, 1], alone[-1], atol=1e-4)


def test_packed_segments_never_attend_across(family):
  _, model, cfg, params = family
  a = _tokens(1, 7, cfg.vocab_size, seed=30)[0]
  b = _tokens(1, 5, cfg.vocab_size, seed=31)[0]
  packed = np.concatenate([a, b, np.zeros(4, np.int32)])[None]
  segments = np.array([[1] * 7 + [2] * 5 + [0] * 4], np.int32)
  out = np.asarray(_forward(params, packed, segments, cfg=cfg))[0]
  np.testing.assert_allclose(out[:7], _torch_logits(model, a[None])[0], atol=1e-4)
  np.testing.assert_allclose(out[7:12], _torch_logits(model, b[None])[0], atol=1e-4)


def test_bf16_params_and_compute_close_to_float32(family):
  _, _, cfg, params = family
  tokens = _tokens(2, 10, cfg.vocab_size, seed=40)
  ref = np.asarray(_forward(params, tokens, jnp.ones_like(tokens), cfg=cfg))
  cfg16 = cfg.replace(param_dtype="bfloat16", compute_dtype="bfloat16")
  params16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  out = _forward(params16, tokens, jnp.ones_like(tokens), cfg=cfg16)
  assert out.dtype == jnp.float32
  out = np.asarray(out)
  assert np.isfinite(out).all()
  assert (out.argmax(-1) == ref.argmax(-1)).mean() > 0.8
  assert np.abs(out - ref).max() < 0.1 * np.abs(ref).max()


def test_unknown_model_type_is_rejected(tmp_path):
  (tmp_path / "config.json").write_text('{"model_type": "gpt_neox", "hidden_size": 8}')
  with pytest.raises(ValueError, match=r"config.json: unknown model_type 'gpt_neox'"):
    ModelConfig.from_hf_dir(str(tmp_path))


def test_length_based_causal_attention_matches_the_segment_mask():
  """The fused-attention path's contract (checked here through XLA's implementation of the same call): on
  right-padded rows it equals the segment-masked attention at every real position."""
  from ssd_jax.models import layers

  rng = np.random.default_rng(0)
  b, s, h, kv, dh = 3, 16, 4, 2, 8
  q = jnp.asarray(rng.standard_normal((b, s, h, dh)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((b, kv, s, dh)), jnp.float32)
  v = jnp.asarray(rng.standard_normal((b, kv, s, dh)), jnp.float32)
  lengths = np.array([16, 9, 1], np.int32)
  segment_ids = (np.arange(s)[None, :] < lengths[:, None]).astype(np.int32)
  want = np.asarray(layers.attention(q, k, v, layers.segment_mask(jnp.asarray(segment_ids))))
  got = np.asarray(layers.causal_attention_by_length(q, k, v, jnp.asarray(lengths), implementation="xla"))
  for row, n in enumerate(lengths):
    np.testing.assert_allclose(got[row, :n], want[row, :n], atol=1e-5)
