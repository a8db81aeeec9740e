"""GPT-OSS against transformers 5.24: the released config's shape and YaRN, MXFP4 dequantization, the forward and
its gradients, prefill + decode over the paged cache, the MXFP4 checkpoint and the model on 8 fake devices, and the
bf16 export reloaded by transformers.

The tiny model (tests/tiny_hf.py) has both layer types, a window of 4 that the 17-token rows outrun, non-zero
sinks, 4 experts and a SwiGLU clamp that bites; test_models.py and test_checkpoints.py run their per-family checks
on it too."""

import dataclasses
import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from transformers.integrations.mxfp4 import convert_moe_packed_tensors
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

import paged_run
import tiny_hf
from ssd_jax.models import hf, layers, mxfp4, transformer
from ssd_jax.models.config import ConfigError, ModelConfig
from ssd_jax.models.sharding import ShardingRules, make_mesh
from ssd_jax.sampling.engine import Engine, EngineConfig, Request
from ssd_jax.sampling.sampler import SamplingConfig

_forward = jax.jit(transformer.forward, static_argnames=("cfg", "sharding"))

# openai/gpt-oss-20b's config.json layout: transformers 4.x spelling (rope_theta + rope_scaling), MXFP4 experts.
RELEASED_CONFIG = {
    "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "attention_bias": True, "attention_dropout": 0.0,
    "eos_token_id": 200002, "pad_token_id": 199999, "experts_per_token": 4, "num_experts_per_tok": 4,
    "head_dim": 64, "hidden_act": "silu", "hidden_size": 2880, "initial_context_length": 4096,
    "intermediate_size": 2880, "layer_types": ["sliding_attention", "full_attention"] * 12,
    "max_position_embeddings": 131072, "num_attention_heads": 64, "num_hidden_layers": 24, "num_key_value_heads": 8,
    "num_local_experts": 32, "rms_norm_eps": 1e-05, "router_aux_loss_coef": 0.9, "sliding_window": 128,
    "swiglu_limit": 7.0, "tie_word_embeddings": False, "vocab_size": 201088, "rope_theta": 150000,
    "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0, "original_max_position_embeddings": 4096,
                     "rope_type": "yarn", "truncate": False},
    "quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": tiny_hf.MXFP4_MODULES_NOT_CONVERTED},
}


def _tokens(cfg, b=2, s=17, seed=0):
  return np.random.RandomState(seed).randint(3, cfg.vocab_size, (b, s)).astype(np.int32)


def _torch_logits(model, tokens):
  with torch.no_grad():
    return model(torch.tensor(tokens, dtype=torch.long)).logits.float().numpy()


def test_released_config_parses_to_the_20b_model():
  cfg = ModelConfig.from_hf_dict(RELEASED_CONFIG)
  assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (24, 2880, 64, 8, 64)
  assert (cfg.num_experts, cfg.num_experts_per_tok, cfg.moe_intermediate_size) == (32, 4, 2880)
  assert [cfg.window(i) for i in range(4)] == [128, 0, 128, 0]
  assert cfg.attention_sinks and cfg.attention_bias and cfg.moe_bias and cfg.norm_topk_prob
  assert (cfg.swiglu_limit, cfg.swiglu_alpha) == (7.0, 1.702)
  assert (cfg.rope_theta, cfg.rope_scaling.rope_type, cfg.rope_scaling.factor, cfg.rope_scaling.truncate) == (
      150000.0, "yarn", 32.0, False)
  specs = jax.tree.leaves(transformer.param_specs(cfg), is_leaf=lambda x: isinstance(x, transformer.ParamSpec))
  total = sum(math.prod(s.shape) for s in specs)
  expert = sum(math.prod(s.shape) for s in specs if s.logical[0] == "experts")
  # 21B total, 3.6B active per token without the embedding table (the model card's numbers).
  assert 20.9e9 < total < 21.0e9
  active = total - expert + expert * cfg.num_experts_per_tok / cfg.num_experts - cfg.vocab_size * cfg.hidden_size
  assert 3.55e9 < active < 3.65e9
  # Our own export writes it back as the same architecture.
  assert ModelConfig.from_hf_dict(cfg.to_hf_dict()) == cfg


def test_config_errors_name_the_problem():
  with pytest.raises(ConfigError, match="quant_method 'gptq' is not supported"):
    ModelConfig.from_hf_dict({**RELEASED_CONFIG, "quantization_config": {"quant_method": "gptq"}})
  with pytest.raises(ConfigError, match="layer_types has 2 entries; expected one per layer"):
    ModelConfig.from_hf_dict({**RELEASED_CONFIG, "layer_types": ["full_attention"] * 2})
  with pytest.raises(ConfigError, match=r"unknown layer_types \['chunked_attention'\]"):
    ModelConfig.from_hf_dict({**RELEASED_CONFIG, "layer_types": ["chunked_attention"] * 24})


def test_yarn_frequencies_equal_transformers_for_the_released_config():
  cfg = ModelConfig.from_hf_dict(RELEASED_CONFIG)
  hf_cfg = transformers.GptOssConfig(**{k: v for k, v in RELEASED_CONFIG.items() if k != "quantization_config"})
  inv_freq, scale = ROPE_INIT_FUNCTIONS["yarn"](hf_cfg, "cpu")
  ours, our_scale = layers.rope_frequencies(cfg)
  np.testing.assert_allclose(ours, inv_freq.numpy(), rtol=1e-6)
  assert our_scale == pytest.approx(scale, rel=1e-12)
  # truncate: false matters at this width: the rounded correction range would give other frequencies.
  truncated, _ = layers.rope_frequencies(cfg.replace(rope_scaling=dataclasses.replace(cfg.rope_scaling, truncate=True)))
  assert np.abs(truncated - ours).max() > 1e-4 * np.abs(ours).max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_mxfp4_dequantizes_exactly_as_transformers(dtype):
  rng = np.random.default_rng(0)
  blocks = rng.integers(0, 256, (3, 40, 4, 16), dtype=np.uint8)  # every nibble code, both positions
  scales = rng.integers(0, 255, (3, 40, 4), dtype=np.uint8)  # every finite E8M0 exponent (255 is NaN in the spec)
  want = convert_moe_packed_tensors(torch.tensor(blocks), torch.tensor(scales), dtype=dtype).float().numpy()
  with np.errstate(over="ignore"):  # the largest exponents overflow to inf, as in transformers
    ours = mxfp4.dequantize(blocks, scales)
  assert ours.shape == want.shape == mxfp4.dequantized_shape(blocks.shape, scales.shape, "w") == (3, 128, 40)
  if dtype == torch.bfloat16:
    ours = np.asarray(jnp.asarray(ours, jnp.bfloat16).astype(jnp.float32))
  np.testing.assert_array_equal(ours, want)
  with pytest.raises(ValueError, match=r"w: MXFP4 blocks \(3, 40, 4, 16\) and scales \(3, 40, 3\) do not match"):
    mxfp4.dequantized_shape(blocks.shape, (3, 40, 3), "w")


@pytest.fixture(scope="module")
def mxfp4_checkpoint(tmp_path_factory):
  """A tiny GPT-OSS saved with MXFP4 experts, and transformers' own load of it (dequantized in float32)."""
  path = tiny_hf.save(tiny_hf.make_model("gpt_oss", seed=5), str(tmp_path_factory.mktemp("mxfp4")))
  tiny_hf.to_mxfp4(path, seed=6)
  model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
  return path, model


@pytest.mark.parametrize("shape", [None, {"expert": 4, "tensor": 2}, {"data": 2, "expert": 2, "tensor": 2}],
                         ids=["one_device", "expert4xtensor2", "data2xexpert2xtensor2"])
def test_mxfp4_checkpoint_matches_transformers(mxfp4_checkpoint, shape):
  """Each expert shard is read and dequantized on its own sharding, and the model equals transformers' load."""
  path, model = mxfp4_checkpoint
  mesh = make_mesh(shape) if shape else None
  rules = ShardingRules() if shape else None
  cfg, params = hf.load_hf(path, param_dtype="float32", mesh=mesh, rules=rules)
  state = model.state_dict()
  for name, ours in hf.hf_tensors(params, cfg):
    np.testing.assert_array_equal(ours, state[name].numpy(), err_msg=name)
  if shape:
    gate = params.layers[0].mlp.gate
    assert gate.sharding.spec[0] == "expert" and gate.sharding.spec[2] == "tensor"
  tokens = _tokens(cfg, seed=7)
  sharding = transformer.Sharding(mesh, rules) if shape else transformer.NO_SHARDING
  ours = np.asarray(_forward(params, tokens, np.ones_like(tokens), cfg=cfg, sharding=sharding))
  assert np.abs(ours - _torch_logits(model, tokens)).max() <= 1e-4


def test_mxfp4_blocks_without_scales_are_named(mxfp4_checkpoint, tmp_path):
  path = shutil.copytree(mxfp4_checkpoint[0], tmp_path / "broken")
  tensors = tiny_hf.load_file(str(path / "model.safetensors"))
  del tensors["model.layers.1.mlp.experts.down_proj_scales"]
  tiny_hf.save_file(tensors, str(path / "model.safetensors"))
  with pytest.raises(hf.CheckpointError, match=r"missing tensor 'model.layers.1.mlp.experts.down_proj' "):
    hf.load_hf(str(path), param_dtype="float32")


def test_bf16_export_of_an_mxfp4_checkpoint_reloads_in_transformers(mxfp4_checkpoint, tmp_path):
  """Loaded in bf16 (the dequantized experts exactly), exported unquantized in bf16, reloaded by transformers in
  float32: the same logits as ours on those bf16 weights."""
  path, _ = mxfp4_checkpoint
  cfg, params = hf.load_hf(path, param_dtype="bfloat16")
  out = hf.export_hf(params, cfg, str(tmp_path / "export"), dtype="bfloat16")
  with open(os.path.join(out, "config.json")) as f:
    assert "quantization_config" not in json.load(f)
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
  tokens = _tokens(cfg, seed=8)
  cfg32 = cfg.replace(param_dtype="float32", compute_dtype="float32")
  ours = np.asarray(_forward(jax.tree.map(lambda x: x.astype(jnp.float32), params), tokens, np.ones_like(tokens),
                             cfg=cfg32))
  assert np.abs(ours - _torch_logits(reloaded, tokens)).max() <= 1e-4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """The tiny GPT-OSS, our load of it, and transformers' logits over 8 rows of 20 tokens (5 windows' worth)."""
  model = tiny_hf.make_model("gpt_oss", seed=11)
  cfg, params = hf.load_hf(tiny_hf.save(model, str(tmp_path_factory.mktemp("tiny"))), param_dtype="float32")
  tokens = _tokens(cfg, b=8, s=20, seed=12)
  return model, cfg, params, tokens, _torch_logits(model, tokens)


@pytest.mark.parametrize("shape", [
    None, {"data": 2, "expert": 2, "tensor": 2},
    pytest.param({"fsdp": 2, "expert": 4}, marks=pytest.mark.slow),  # ~55 s: the paged path compiles per chunk
], ids=["one_device", "data2xexpert2xtensor2", "fsdp2xexpert4"])
def test_forward_and_paged_prefill_decode_match_transformers(tiny, shape):
  """Full forward, and chunked prefill + decode over the paged cache (pages of 4, chunks of 3, past the window of 4
  in both), on one device and on 8 fake devices, against transformers' logits."""
  model, cfg, params, tokens, ref = tiny
  mesh = make_mesh(shape) if shape else None
  rules = ShardingRules() if shape else None
  sharding = transformer.Sharding(mesh, rules) if shape else transformer.NO_SHARDING
  if shape:
    params = jax.device_put(params, transformer.param_shardings(cfg, mesh, rules))
  full = np.asarray(_forward(params, tokens, np.ones_like(tokens), cfg=cfg, sharding=sharding))
  assert np.abs(full - ref).max() <= 1e-4
  lengths = np.array([11, 7, 13, 9, 5, 12, 8, 14])
  steps = 5
  got = paged_run.run(cfg, params, tokens, lengths, steps, chunk=3, page=4, pps=8, sharding=sharding)
  want = np.stack([ref[b, lengths[b] - 1:lengths[b] + steps] for b in range(len(lengths))])
  assert np.abs(got - want).max() <= 1e-4


@pytest.mark.slow  # ~80 s: the engine compiles its prefill and decode shapes (the paged path runs unmarked above)
def test_engine_greedy_decoding_equals_transformers(tiny):
  """The decode engine (continuous batching over pages of 4, prefill chunks of 8) greedily continues three prompts
  past the window exactly as transformers' own forward, step by step."""
  model, cfg, params, _, _ = tiny
  rng = np.random.RandomState(13)
  prompts = [rng.randint(3, cfg.vocab_size, n).tolist() for n in (5, 11, 3)]
  ecfg = EngineConfig(batch_size=4, max_seq_len=64, chunk_steps=4, page_size=4, prefill_chunk=8)
  out = Engine(params, cfg, stop_ids=[], engine_cfg=ecfg).generate(
      [Request(p, sampling=SamplingConfig(max_new_tokens=10, temperature=0.0)) for p in prompts])
  for prompt, (completion,) in zip(prompts, out):
    seq = list(prompt)
    for _ in range(10):
      seq.append(int(_torch_logits(model, np.asarray([seq]))[0, -1].argmax()))
    assert completion.tokens == seq[len(prompt):]


def test_training_gradients_match_torch(tmp_path):
  """The mean next-token NLL's gradient with respect to every param (sinks, router and expert biases included)
  equals torch's backward through transformers' model."""
  model = tiny_hf.make_model("gpt_oss", seed=9)
  model.train()  # no dropout in this model; train mode only for autograd parity
  cfg, params = hf.load_hf(tiny_hf.save(model, str(tmp_path / "m")), param_dtype="float32")
  tokens = _tokens(cfg, seed=10)
  ids = torch.tensor(tokens, dtype=torch.long)
  model.zero_grad()
  model(ids, labels=ids).loss.backward()

  def loss(p):
    logits = transformer.forward(p, tokens, jnp.ones_like(tokens), cfg)
    logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    return -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1).mean()

  grads = jax.jit(jax.grad(loss))(params)
  torch_grads = {name: p.grad.numpy() for name, p in model.named_parameters()}
  for name, g in hf.hf_tensors(grads, cfg):
    np.testing.assert_allclose(g, torch_grads[name], atol=2e-5, rtol=1e-4, err_msg=name)
