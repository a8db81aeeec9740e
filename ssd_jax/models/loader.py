"""One entry point for every checkpoint kind: HF directory, GGUF file or an ssd_jax orbax directory.

The tokenizer is loaded from the same source and checked against the model's vocabulary, so a
mismatched pair fails at load time with both names in the message instead of producing garbage ids.
"""

from __future__ import annotations

import dataclasses
import os

from jax.sharding import Mesh

from ssd_jax.models import checkpoint, gguf, hf
from ssd_jax.models.config import ModelConfig
from ssd_jax.models.sharding import ShardingRules
from ssd_jax.models.tokenizer import Tokenizer, load_tokenizer
from ssd_jax.models.transformer import Params


@dataclasses.dataclass
class LoadedModel:
  cfg: ModelConfig
  params: Params
  tokenizer: Tokenizer
  source: str


def checkpoint_kind(path: str) -> str:
  """'gguf', 'hf' or 'orbax'; raises naming the path when it is none of them."""
  if os.path.isfile(path) and path.endswith(".gguf"):
    return "gguf"
  if os.path.isdir(path) and os.path.exists(os.path.join(path, "config.json")):
    return "hf"
  if os.path.isdir(path) and os.path.exists(os.path.join(path, checkpoint.CONFIG_FILE)):
    return "orbax"
  raise FileNotFoundError(f"{path}: not a checkpoint; expected a .gguf file, an HF directory with config.json, "
                          f"or an ssd_jax directory with {checkpoint.CONFIG_FILE}")


def load_model(path: str, *, tokenizer_path: str | None = None, mesh: Mesh | None = None,
               rules: ShardingRules | None = None, param_dtype: str = "bfloat16",
               compute_dtype: str | None = None) -> LoadedModel:
  """Loads params onto the mesh and the tokenizer (from `tokenizer_path`, else from the checkpoint)."""
  kind = checkpoint_kind(path)
  rules = rules or (ShardingRules() if mesh is not None else None)
  dtypes = dict(param_dtype=param_dtype, compute_dtype=compute_dtype or param_dtype)
  if kind == "gguf":
    reader = gguf.open_gguf(path)  # parsed once for both the weights and the embedded tokenizer
    tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path else Tokenizer.from_gguf(path, reader=reader)
    cfg, params = gguf.load_gguf(path, mesh=mesh, rules=rules, reader=reader, **dtypes)
  else:
    tokenizer = load_tokenizer(tokenizer_path or path)
  if kind == "hf":
    cfg, params = hf.load_hf(path, mesh=mesh, rules=rules, **dtypes)
  elif kind == "orbax":
    cfg, params = checkpoint.restore_params(path, mesh=mesh, rules=rules, **dtypes)
  tokenizer.check_fits(cfg.vocab_size, path)
  return LoadedModel(cfg, params, tokenizer, path)
