"""Tiny random HF checkpoints written by transformers itself, for parity and import tests."""

from __future__ import annotations

import json
import os

import numpy as np
import torch
import transformers
from safetensors.numpy import load_file, save_file

COMMON = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, max_position_embeddings=512, rms_norm_eps=1e-6,
              bos_token_id=1, eos_token_id=2, pad_token_id=0)

FAMILIES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, dict(
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64})),
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM, dict(
        tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
    "qwen3_moe": (transformers.Qwen3MoeConfig, transformers.Qwen3MoeForCausalLM, dict(
        moe_intermediate_size=16, num_local_experts=8, num_experts_per_tok=2, norm_topk_prob=True,
        num_hidden_layers=3, mlp_only_layers=[1], rope_parameters={"rope_type": "default", "rope_theta": 1e6})),
    # Both layer types (sliding first), a window the test sequences outrun, 4 experts (MXFP4 needs D and F
    # multiples of 32), a SwiGLU clamp small enough to bite at this init, and the released model's YaRN.
    "gpt_oss": (transformers.GptOssConfig, transformers.GptOssForCausalLM, dict(
        intermediate_size=64, num_local_experts=4, num_experts_per_tok=2, sliding_window=4, swiglu_limit=0.1,
        max_position_embeddings=131072,
        rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0, "beta_fast": 32.0,
                         "beta_slow": 1.0, "truncate": False, "original_max_position_embeddings": 4096})),
}


def make_model(family: str, seed: int = 0, **overrides) -> torch.nn.Module:
  config_cls, model_cls, extra = FAMILIES[family]
  torch.manual_seed(seed)
  model = model_cls(config_cls(**{**COMMON, **extra, **overrides}))
  with torch.no_grad():  # larger than the default init so that errors are visible in the logits
    for p in model.parameters():
      p.normal_(0.0, 0.15)
  return model.eval()


def to_v4_config(path: str) -> None:
  """Rewrites config.json the way transformers 4.x wrote it (rope_theta/rope_scaling, num_experts)."""
  cfg_path = os.path.join(path, "config.json")
  with open(cfg_path) as f:
    cfg = json.load(f)
  rope = cfg.pop("rope_parameters")
  cfg["rope_theta"] = rope.pop("rope_theta")
  cfg["rope_scaling"] = None if rope.get("rope_type") == "default" else rope
  if "num_local_experts" in cfg:
    cfg["num_experts"] = cfg.pop("num_local_experts")
  cfg["transformers_version"] = "4.51.0"
  with open(cfg_path, "w") as f:
    json.dump(cfg, f, indent=2)


def save(model: torch.nn.Module, path: str, *, sharded: bool = False, v4: bool = False) -> str:
  model.save_pretrained(path, max_shard_size="16KB" if sharded else "2GB")
  if v4:
    to_v4_config(path)
  return path


MXFP4_MODULES_NOT_CONVERTED = ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens",
                               "lm_head"]


def to_mxfp4(path: str, seed: int = 0) -> dict[str, np.ndarray]:
  """Rewrites a saved GPT-OSS's expert weights as MXFP4, as the released checkpoints store them; returns them.

  Each `*.experts.gate_up_proj` / `down_proj` [E, in, out] becomes `_blocks` uint8 [E, out, in / 32, 16] (random
  nibbles, every code) and `_scales` uint8 [E, out, in / 32] (exponents 2^-5 .. 2^0, so logits stay moderate), and
  config.json gets the released `quantization_config`.
  """
  file = os.path.join(path, "model.safetensors")
  tensors = load_file(file)
  rng = np.random.default_rng(seed)
  quantized = {}
  for name in [n for n in tensors if n.endswith(("experts.gate_up_proj", "experts.down_proj"))]:
    experts, rows_in, rows_out = tensors.pop(name).shape
    quantized[name + "_blocks"] = rng.integers(0, 256, (experts, rows_out, rows_in // 32, 16), dtype=np.uint8)
    quantized[name + "_scales"] = rng.integers(122, 128, (experts, rows_out, rows_in // 32), dtype=np.uint8)
  save_file({**tensors, **quantized}, file, metadata={"format": "pt"})
  cfg_path = os.path.join(path, "config.json")
  with open(cfg_path) as f:
    cfg = json.load(f)
  cfg["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": MXFP4_MODULES_NOT_CONVERTED}
  with open(cfg_path, "w") as f:
    json.dump(cfg, f, indent=2)
  return quantized
