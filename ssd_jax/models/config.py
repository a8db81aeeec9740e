"""Model hyperparameters for the Llama-3.x, Qwen3, Qwen3-MoE and GPT-OSS families, parsed from HF `config.json`.

`ModelConfig` is frozen and hashable: it is passed to jitted functions as a static argument, so everything
in it is a Python scalar, string or tuple. Both config styles that hub checkpoints carry are accepted:
transformers 4.x (`rope_theta`, `rope_scaling`, `num_experts`) and 5.x (`rope_parameters`, `num_local_experts`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import jax.numpy as jnp

SUPPORTED_MODEL_TYPES = ("llama", "qwen3", "qwen3_moe", "gpt_oss")
LAYER_TYPES = ("full_attention", "sliding_attention")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "yarn")


# transformers' GptOssConfig defaults, for a config.json that leaves them out.
_GPT_OSS_ROPE = {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
                 "original_max_position_embeddings": 4096}


class ConfigError(ValueError):
  """A checkpoint's config.json (or GGUF metadata) describes something we cannot load."""


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """RoPE frequency scaling, as in HF `rope_parameters` / `rope_scaling` (minus `rope_theta`)."""

  rope_type: str = "default"
  factor: float = 1.0
  # llama3
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int | None = None
  # yarn
  beta_fast: float = 32.0
  beta_slow: float = 1.0
  attention_factor: float | None = None
  mscale: float | None = None
  mscale_all_dim: float | None = None
  truncate: bool = True


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of one decoder-only model; the same object drives init, forward, import and export."""

  model_type: str
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  intermediate_size: int
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  rope_scaling: RopeScaling = RopeScaling()
  max_position_embeddings: int = 32768
  tie_word_embeddings: bool = False
  qk_norm: bool = False
  attention_bias: bool = False
  # Mixture of experts (qwen3_moe); num_experts == 0 means a dense model.
  num_experts: int = 0
  num_experts_per_tok: int = 0
  moe_intermediate_size: int = 0
  norm_topk_prob: bool = False
  decoder_sparse_step: int = 1
  mlp_only_layers: tuple[int, ...] = ()
  router_aux_loss_coef: float = 0.0
  # GPT-OSS: a bias on the router and on every expert projection, and the clamped SwiGLU
  # (up + 1) * gate * sigmoid(swiglu_alpha * gate) with gate <= swiglu_limit and |up| <= swiglu_limit
  # (swiglu_limit 0: the plain silu(gate) * up).
  moe_bias: bool = False
  swiglu_limit: float = 0.0
  swiglu_alpha: float = 1.0
  # GPT-OSS attention: layer_types[i] is "sliding_attention" (keys within the last sliding_window positions, the
  # query's own included) or "full_attention" (empty: every layer full); attention_sinks adds one learned logit
  # per query head to each softmax's denominator (a column that takes probability mass and is then dropped).
  sliding_window: int = 0
  layer_types: tuple[str, ...] = ()
  attention_sinks: bool = False
  # Special tokens as the checkpoint declares them (eos may be several ids).
  bos_token_id: int | None = None
  eos_token_ids: tuple[int, ...] = ()
  pad_token_id: int | None = None
  # Numerics: params are stored in param_dtype, matmuls run in compute_dtype; norms, softmax and
  # logits are always float32.
  param_dtype: str = "bfloat16"
  compute_dtype: str = "bfloat16"

  def __post_init__(self):
    if self.model_type not in SUPPORTED_MODEL_TYPES:
      raise ConfigError(f"unknown model_type {self.model_type!r}; expected one of {SUPPORTED_MODEL_TYPES}")
    if self.num_heads % self.num_kv_heads:
      raise ConfigError(
          f"num_attention_heads ({self.num_heads}) must be a multiple of num_key_value_heads ({self.num_kv_heads})")
    if self.rope_scaling.rope_type not in SUPPORTED_ROPE_TYPES:
      raise ConfigError(
          f"unsupported rope type {self.rope_scaling.rope_type!r}; expected one of {SUPPORTED_ROPE_TYPES}")
    if self.num_experts and not 0 < self.num_experts_per_tok <= self.num_experts:
      raise ConfigError(f"num_experts_per_tok={self.num_experts_per_tok} must be in [1, {self.num_experts}]")
    if self.layer_types and len(self.layer_types) != self.num_layers:
      raise ConfigError(f"layer_types has {len(self.layer_types)} entries; expected one per layer ({self.num_layers})")
    bad = sorted(set(self.layer_types) - set(LAYER_TYPES))
    if bad:
      raise ConfigError(f"unknown layer_types {bad}; expected entries from {LAYER_TYPES}")
    if self.model_type == "gpt_oss" and not (self.num_experts and self.moe_bias and self.attention_sinks and
                                             self.norm_topk_prob and not self.mlp_only_layers
                                             and self.decoder_sparse_step == 1):
      raise ConfigError("gpt_oss is sparse in every layer with biased experts, top-k-renormalised routing and "
                        "attention sinks: it needs num_experts > 0, moe_bias, attention_sinks, norm_topk_prob, no "
                        "mlp_only_layers and decoder_sparse_step 1")
    if "sliding_attention" in self.layer_types and self.sliding_window <= 0:
      raise ConfigError(f"sliding_attention layers need sliding_window > 0, got {self.sliding_window}")

  @property
  def is_moe(self) -> bool:
    return self.num_experts > 0

  def is_moe_layer(self, layer: int) -> bool:
    """Qwen3-MoE's rule: sparse unless listed in mlp_only_layers, every decoder_sparse_step-th layer."""
    return (self.is_moe and layer not in self.mlp_only_layers and (layer + 1) % self.decoder_sparse_step == 0)

  def window(self, layer: int) -> int:
    """Layer `layer`'s sliding window in positions (a query sees keys q - window < k <= q); 0 = full attention."""
    sliding = self.layer_types and self.layer_types[layer] == "sliding_attention"
    return self.sliding_window if sliding else 0

  @property
  def dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  @property
  def cdtype(self) -> jnp.dtype:
    return jnp.dtype(self.compute_dtype)

  def replace(self, **kwargs) -> "ModelConfig":
    return dataclasses.replace(self, **kwargs)

  # -- our own serialization (orbax checkpoints, workdirs) ----------------------------------------------

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
    d = dict(d)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ConfigError(f"unknown ModelConfig fields {unknown}")
    d["rope_scaling"] = RopeScaling(**d.get("rope_scaling", {}))
    for key in ("eos_token_ids", "mlp_only_layers", "layer_types"):
      d[key] = tuple(d.get(key, ()))
    return cls(**d)

  # -- HF config.json -------------------------------------------------------------------------------

  @classmethod
  def from_hf_dict(cls, hf: Mapping[str, Any], *, source: str = "config.json", **overrides) -> "ModelConfig":
    """Parses a transformers 4.x or 5.x config dict. `overrides` set dtypes and the like."""
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
      raise ConfigError(f"{source}: unknown model_type {model_type!r}; expected one of {SUPPORTED_MODEL_TYPES}")

    def need(key: str, *alternatives: str):
      for k in (key, *alternatives):
        if hf.get(k) is not None:
          return hf[k]
      raise ConfigError(f"{source}: missing required field {key!r} for model_type {model_type!r}")

    hidden = int(need("hidden_size"))
    heads = int(need("num_attention_heads"))
    kv_heads = int(hf.get("num_key_value_heads") or heads)
    head_dim = int(hf.get("head_dim") or hidden // heads)
    if hf.get("hidden_act", "silu") != "silu":
      raise ConfigError(f"{source}: hidden_act {hf.get('hidden_act')!r} is not supported; expected 'silu'")
    if hf.get("mlp_bias"):
      raise ConfigError(f"{source}: mlp_bias=true is not supported for {model_type!r}")
    if model_type != "llama" and hf.get("use_sliding_window"):
      raise ConfigError(f"{source}: use_sliding_window=true is not supported")

    quant = hf.get("quantization_config") or {}
    if quant and quant.get("quant_method") != "mxfp4":
      raise ConfigError(f"{source}: quantization_config.quant_method {quant.get('quant_method')!r} is not supported; "
                        "expected 'mxfp4' (GPT-OSS experts, dequantized on load) or an unquantized checkpoint")
    gpt_oss = model_type == "gpt_oss"

    # 5.x puts theta inside rope_parameters; 4.x has rope_theta at the top and rope_scaling beside it.
    rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or (_GPT_OSS_ROPE if gpt_oss else {}))
    default_theta = 150000.0 if gpt_oss else 10000.0  # transformers' GptOssConfig.default_theta
    rope_theta = float(rope.pop("rope_theta", None) or hf.get("rope_theta") or default_theta)
    rope_type = rope.pop("rope_type", None) or rope.pop("type", None) or "default"
    known = {f.name for f in dataclasses.fields(RopeScaling)}
    unknown = sorted(set(rope) - known)
    if unknown:
      raise ConfigError(f"{source}: unknown rope parameters {unknown} for rope_type {rope_type!r}")
    rope_scaling = RopeScaling(rope_type=rope_type, **{k: v for k, v in rope.items() if v is not None})

    eos = hf.get("eos_token_id")
    eos_ids = tuple(eos) if isinstance(eos, (list, tuple)) else (() if eos is None else (eos,))
    moe_family = model_type in ("qwen3_moe", "gpt_oss")
    num_experts = int(hf.get("num_experts") or hf.get("num_local_experts") or 0) if moe_family else 0
    fields = dict(
        model_type=model_type,
        vocab_size=int(need("vocab_size")),
        hidden_size=hidden,
        num_layers=int(need("num_hidden_layers")),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=int(hf.get("intermediate_size") or 0),
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        rope_theta=rope_theta,
        rope_scaling=rope_scaling,
        max_position_embeddings=int(hf.get("max_position_embeddings") or 32768),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        qk_norm=model_type in ("qwen3", "qwen3_moe"),
        attention_bias=bool(hf.get("attention_bias", False)),
        num_experts=num_experts,
        num_experts_per_tok=int(hf.get("num_experts_per_tok") or 0) if num_experts else 0,
        moe_intermediate_size=int(hf.get("moe_intermediate_size") or 0) if num_experts else 0,
        norm_topk_prob=bool(hf.get("norm_topk_prob", False)),
        decoder_sparse_step=int(hf.get("decoder_sparse_step") or 1),
        mlp_only_layers=tuple(int(i) for i in hf.get("mlp_only_layers") or ()),
        router_aux_loss_coef=float(hf.get("router_aux_loss_coef") or 0.0),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_ids=tuple(int(i) for i in eos_ids),
        pad_token_id=hf.get("pad_token_id"),
    )
    if gpt_oss:
      fields.update(_gpt_oss_fields(hf, fields, source))
    if num_experts and not fields["moe_intermediate_size"]:
      raise ConfigError(f"{source}: {model_type} needs moe_intermediate_size")
    fields.update(overrides)
    return cls(**fields)

  @classmethod
  def from_hf_dir(cls, path: str, **overrides) -> "ModelConfig":
    config_path = os.path.join(path, "config.json")
    if not os.path.exists(config_path):
      raise ConfigError(f"{config_path}: not found; an HF checkpoint directory needs a config.json")
    try:
      with open(config_path) as f:
        hf = json.load(f)
    except json.JSONDecodeError as e:
      raise ConfigError(f"{config_path}: not valid JSON ({e})") from e
    return cls.from_hf_dict(hf, source=config_path, **overrides)

  def to_hf_dict(self) -> dict[str, Any]:
    """A config.json that transformers (4.x and 5.x) loads as the same architecture."""
    arch = {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM",
            "gpt_oss": "GptOssForCausalLM"}
    rope_fields = {
        "default": (),
        "linear": ("factor",),
        "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
        "yarn": ("factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "attention_factor",
                 "mscale", "mscale_all_dim", "truncate"),
    }[self.rope_scaling.rope_type]
    rope = {"rope_type": self.rope_scaling.rope_type}
    rope.update({k: getattr(self.rope_scaling, k) for k in rope_fields if getattr(self.rope_scaling, k) is not None})
    out: dict[str, Any] = {
        "architectures": [arch[self.model_type]],
        "model_type": self.model_type,
        "vocab_size": self.vocab_size,
        "hidden_size": self.hidden_size,
        "intermediate_size": self.intermediate_size,
        "num_hidden_layers": self.num_layers,
        "num_attention_heads": self.num_heads,
        "num_key_value_heads": self.num_kv_heads,
        "head_dim": self.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": self.rms_norm_eps,
        "max_position_embeddings": self.max_position_embeddings,
        "tie_word_embeddings": self.tie_word_embeddings,
        "attention_bias": self.attention_bias,
        # Both spellings, so that 4.x and 5.x readers agree.
        "rope_theta": self.rope_theta,
        "rope_scaling": None if rope["rope_type"] == "default" else dict(rope),
        "rope_parameters": {**rope, "rope_theta": self.rope_theta},
        "bos_token_id": self.bos_token_id,
        "eos_token_id": (list(self.eos_token_ids) if len(self.eos_token_ids) > 1 else
                         (self.eos_token_ids[0] if self.eos_token_ids else None)),
        "pad_token_id": self.pad_token_id,
        "torch_dtype": self.param_dtype,
        "dtype": self.param_dtype,
    }
    if self.model_type == "llama":
      out["mlp_bias"] = False
    if self.model_type == "gpt_oss":
      out.update(num_local_experts=self.num_experts, num_experts_per_tok=self.num_experts_per_tok,
                 router_aux_loss_coef=self.router_aux_loss_coef, swiglu_limit=self.swiglu_limit,
                 swiglu_alpha=self.swiglu_alpha, sliding_window=self.sliding_window, layer_types=list(self.layer_types))
    elif self.is_moe:
      out.update(
          num_experts=self.num_experts,
          num_local_experts=self.num_experts,
          num_experts_per_tok=self.num_experts_per_tok,
          moe_intermediate_size=self.moe_intermediate_size,
          norm_topk_prob=self.norm_topk_prob,
          decoder_sparse_step=self.decoder_sparse_step,
          mlp_only_layers=list(self.mlp_only_layers),
          router_aux_loss_coef=self.router_aux_loss_coef,
      )
    return out


def _gpt_oss_fields(hf: Mapping[str, Any], fields: Mapping[str, Any], source: str) -> dict[str, Any]:
  """The GPT-OSS fields of `ModelConfig.from_hf_dict`, with transformers' GptOssConfig defaults.

  Every layer is sparse with experts of width intermediate_size. Routing takes a softmax over the top-k router
  logits, which equals the renormalised top-k of the full softmax (norm_topk_prob), so Qwen3-MoE's routing serves.
  """
  layers = fields["num_layers"]
  layer_types = tuple(hf.get("layer_types") or
                      ("sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers)))
  window = hf.get("sliding_window", 128)
  if "sliding_attention" in layer_types and not window:
    raise ConfigError(f"{source}: layer_types has sliding_attention layers but sliding_window is {window!r}")
  if not fields["num_experts"]:
    raise ConfigError(f"{source}: gpt_oss needs num_local_experts")
  return dict(
      moe_intermediate_size=fields["intermediate_size"],
      norm_topk_prob=True,
      moe_bias=True,
      swiglu_limit=float(hf.get("swiglu_limit", 7.0)),
      swiglu_alpha=float(hf.get("swiglu_alpha", 1.702)),
      attention_bias=bool(hf.get("attention_bias", True)),
      rms_norm_eps=float(hf.get("rms_norm_eps", 1e-5)),
      max_position_embeddings=int(hf.get("max_position_embeddings") or 131072),
      sliding_window=int(window or 0),
      layer_types=layer_types,
      attention_sinks=True,
  )
