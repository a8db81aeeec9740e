"""Shared fixtures for the SFT tests: a tiny ChatML SentencePiece tokenizer, a tiny Qwen3 config, JSONL shards."""

from __future__ import annotations

import functools
import json
import os

from ssd_jax.models.config import ModelConfig
from ssd_jax.models.tokenizer import CHATML_TEMPLATE, Tokenizer, train_sentencepiece

WORDS = ("def add(a, b):\n    return a + b\n", "print('hello world')\n", "for i in range(10):\n\tx += i\n",
         "class Foo:\n    pass\n", "Write a function that adds two numbers.", "Sort the list in place.",
         "<think>\nfirst reason, then answer\n</think>\n\n", "import os\nos.path.join('a', 'b')\n")


@functools.lru_cache(maxsize=None)
def tokenizer() -> Tokenizer:
  return Tokenizer.from_sentencepiece(train_sentencepiece(list(WORDS) * 20, 360), chat_template=CHATML_TEMPLATE)


def model_config(**overrides) -> ModelConfig:
  base = dict(model_type="qwen3", vocab_size=384, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
              head_dim=8, intermediate_size=64, qk_norm=True, param_dtype="float32", compute_dtype="float32",
              tie_word_embeddings=True, eos_token_ids=(2,))
  return ModelConfig(**{**base, **overrides})


def conversation(i: int) -> list[dict[str, str]]:
  """A deterministic conversation whose length varies with i."""
  user = WORDS[i % 4 + 4] + f" case {i}"
  answer = "".join(WORDS[(i + j) % 4] for j in range(1 + i % 3))
  if i % 5 == 0:
    answer = WORDS[6] + answer
  return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def write_shards(directory: str, n: int, shards: int = 2, extra_rows: tuple[str, ...] = ()) -> list[str]:
  """n kept rows split over `shards` JSONL files; `extra_rows` (raw lines) go at the end of the last file."""
  os.makedirs(directory, exist_ok=True)
  paths = []
  for s in range(shards):
    path = os.path.join(directory, f"shard-{s:03d}.jsonl")
    with open(path, "w") as f:
      for i in range(s, n, shards):
        f.write(json.dumps({"id": f"ex{i}", "messages": conversation(i), "finish_reason": "stop",
                            "num_tokens": 0, "kept": True}) + "\n")
      if s == shards - 1:
        for line in extra_rows:
          f.write(line + "\n")
    paths.append(path)
  return paths


def random_params(cfg: ModelConfig, seed: int = 0):
  """Same distribution as `init_params` (std 0.02 matrices, unit norms), drawn with numpy: no threefry compile."""
  import jax.numpy as jnp
  import numpy as np

  from ssd_jax.models.transformer import map_specs

  rng = np.random.default_rng(seed)

  def leaf(spec):
    if spec.init == "ones":
      return jnp.ones(spec.shape, cfg.dtype)
    if spec.init == "zeros":
      return jnp.zeros(spec.shape, cfg.dtype)
    return jnp.asarray(0.02 * rng.standard_normal(spec.shape), cfg.dtype)

  return map_specs(leaf, cfg)
