"""One entry point for every checkpoint kind: HF directory, GGUF file or an ssd_jax orbax directory.

The tokenizer is loaded from the same source and checked against the model's vocabulary, so a
mismatched pair fails at load time with both names in the message instead of producing garbage ids.
"""

from __future__ import annotations

import dataclasses
import os

from jax.sharding import Mesh

from ssd_jax.coordination import barrier, is_coordinator
from ssd_jax.files import write_atomic
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



RANDOM_TOKENIZER_FILE = "tokenizer.model"


def random_model(out_dir: str, arch: dict, texts: list[str], *, tokenizer_vocab_size: int, seed: int = 0,
                 mesh: Mesh | None = None, rules: ShardingRules | None = None, param_dtype: str = "float32",
                 compute_dtype: str | None = None) -> LoadedModel:
  """A random-init model with a SentencePiece tokenizer trained on `texts`: smoke runs without any download.

  The tokenizer is trained once and kept in `out_dir` (process 0 writes it; every run and stage after that reads
  the same file). The params need no file: they are a pure function of (arch, seed), the same on every process
  and on any mesh (jax's partitionable threefry), so each stage re-creates them on its own mesh.
  """
  import jax

  from ssd_jax.models.tokenizer import CHATML_TEMPLATE, train_sentencepiece
  from ssd_jax.models.transformer import init_params

  tokenizer_path = os.path.join(out_dir, RANDOM_TOKENIZER_FILE)
  if not os.path.exists(tokenizer_path) and is_coordinator():
    os.makedirs(out_dir, exist_ok=True)
    proto = train_sentencepiece(texts, vocab_size=tokenizer_vocab_size)
    write_atomic(tokenizer_path, proto)
  barrier("ssd_jax.models.loader.random_model")  # the others read the tokenizer process 0 may have just written
  tokenizer = Tokenizer.from_sentencepiece(tokenizer_path, chat_template=CHATML_TEMPLATE)
  cfg = ModelConfig(**{**arch, "eos_token_ids": tuple(tokenizer.stop_ids), "param_dtype": param_dtype,
                       "compute_dtype": compute_dtype or param_dtype})
  tokenizer.check_fits(cfg.vocab_size, "config.model.arch")
  rules = rules or (ShardingRules() if mesh is not None else None)
  return LoadedModel(cfg, init_params(cfg, jax.random.key(seed), mesh, rules), tokenizer, f"random:{out_dir}")
