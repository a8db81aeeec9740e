"""Prefill then decode through `transformer.extend` over a paged cache: the test harness of the model's cached path."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ssd_jax.models import paged, transformer

extend = jax.jit(transformer.extend, static_argnames=("cfg", "sharding", "attention", "fresh"))


def page_table(rows: int, pages_per_row: int, shards: int = 1) -> jax.Array:
  """Row r owns pages [j * pages_per_row, (j + 1) * pages_per_row) of its shard's pool, j its index there."""
  per_shard = rows // shards
  return jnp.asarray([[(r % per_shard) * pages_per_row + j for j in range(pages_per_row)] for r in range(rows)],
                     jnp.int32)


def run(cfg, params, tokens, lengths, steps, *, chunk=None, page=4, pps=16, sharding=transformer.NO_SHARDING,
        dtype="float32", attention="reference"):
  """Prefills row b's first lengths[b] tokens of `tokens` [B, S] (in chunks of `chunk`), then feeds the next `steps`
  tokens of each row one at a time -> logits [B, steps + 1, V]: after each row's prompt, then after each fed token.
  attention "rows": the decode steps attend over slot rows staged from the pages after the prefill (as the engine's
  CPU decode does)."""
  tokens = np.asarray(tokens)
  lengths = np.asarray(lengths, np.int32)
  b = tokens.shape[0]
  shards = paged.num_shards(sharding.mesh, sharding.rules)
  cache = paged.init_cache(cfg, 2 * b * pps, page, dtype=dtype, mesh=sharding.mesh, rules=sharding.rules)
  table = page_table(b, pps, shards)
  chunk = chunk or int(lengths.max())
  out = []
  last = None
  for s in range(0, int(lengths.max()), chunk):
    n = np.clip(lengths - s, 0, chunk).astype(np.int32)
    width = min(chunk, int(lengths.max()) - s)
    logits, cache = extend(params, jnp.asarray(tokens[:, s:s + width]), jnp.full((b,), s, jnp.int32),
                           jnp.asarray(n), table, cache, cfg=cfg, sharding=sharding, fresh=s == 0)
    last = logits if last is None else jnp.where((n > 0)[:, None], logits, last)
  out.append(last)
  if attention == "rows":
    cache = paged.stage_rows(paged.init_rows(cache, cfg, b, pps * page), jnp.arange(b, dtype=jnp.int32), table)
  for t in range(steps):
    rows = np.arange(b)
    feed = tokens[rows, lengths + t][:, None]
    logits, cache = extend(params, jnp.asarray(feed), jnp.asarray(lengths + t), jnp.ones((b,), jnp.int32), table,
                           cache, cfg=cfg, sharding=sharding, attention=attention)
    out.append(logits)
  return np.stack([np.asarray(x) for x in out], axis=1)
