"""Sampler cost against a full-vocabulary sort and against one reduction pass over the logits.

  python -m ssd_jax.bench.sampler [--batch 256] [--vocab 151936]

Times (jit, warm, median, block_until_ready) for SSD's setting (T = 0.7, top-k 20, top-p 0.8 on every row):
  (a) `ssd_jax.sampling.sample`;
  (b) the same operator with a per-row sort of the whole vocabulary (what most JAX anchors do);
  (c) the floor: one reduction pass, max(logits, axis=-1); nothing that reads every logit can beat it.
Extra lines (not in the targets): a plain `lax.top_k(logits, k_max)` and `sample` with top-k off (the exact
sort-free path; with these random logits the nucleus is wide, so it bisects over the whole vocabulary).
The last line is one JSON object with the times in ms, the ratios and the targets.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from ssd_jax.sampling import SamplingParams, sample

TARGET_SPEEDUP_VS_FULL_SORT = 10.0
TARGET_RATIO_TO_FLOOR = 3.0


def full_sort_sample(key: jax.Array, logits: jax.Array, params: SamplingParams) -> jax.Array:
  """The operator with a full per-row sort: sort, top-k mask, softmax, cumsum top-p, inverse-CDF draw.

  logits [B, V] -> int32 [B]. Ties at the top-p boundary follow the sort order, as in vLLM.
  """
  b, v = logits.shape
  z = logits / params.temperature[:, None]
  neg, order = lax.sort((-z, jnp.broadcast_to(jnp.arange(v, dtype=jnp.int32), (b, v))), num_keys=1)
  zs = -neg  # descending
  kth = jnp.take_along_axis(zs, jnp.clip(params.top_k - 1, 0, v - 1)[:, None], axis=1)
  zs = jnp.where((params.top_k[:, None] > 0) & (zs < kth), -jnp.inf, zs)
  probs = jax.nn.softmax(zs, axis=-1)
  cum = jnp.cumsum(probs, axis=-1)
  keep = (cum - probs < params.top_p[:, None]) | (jnp.arange(v) == 0)
  cum = jnp.cumsum(jnp.where(keep, probs, 0.0), axis=-1)
  u = jax.random.uniform(key, (b, 1)) * cum[:, -1:]
  pick = jnp.minimum(jnp.sum(cum <= u, axis=-1), v - 1)
  return jnp.take_along_axis(order, pick[:, None], axis=1)[:, 0]


def _time_ms(fn: Callable[[], jax.Array], runs: int) -> float:
  jax.block_until_ready(fn())  # compile and warm up
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append((time.perf_counter() - start) * 1e3)
  return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--vocab", type=int, default=151_936)
  parser.add_argument("--temperature", type=float, default=0.7)
  parser.add_argument("--top-k", type=int, default=20)
  parser.add_argument("--top-p", type=float, default=0.8)
  parser.add_argument("--k-max", type=int, default=64)
  parser.add_argument("--runs", type=int, default=15, help="timed runs of the fast variants (median)")
  parser.add_argument("--sort-runs", type=int, default=3, help="timed runs of the full sort (it is slow on CPU)")
  parser.add_argument("--no-extras", action="store_true", help="skip the informational top_k / sort-free lines")
  args = parser.parse_args(argv)

  b, v = args.batch, args.vocab
  logits = jax.jit(lambda k: 2.0 * jax.random.normal(k, (b, v), jnp.float32))(jax.random.key(0))
  params = SamplingParams.full(b, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
  key = jax.random.key(1)

  ours = jax.jit(lambda k, x, p: sample(k, x, p.temperature, p.top_k, p.top_p, k_max=args.k_max))
  sort = jax.jit(full_sort_sample)
  floor = jax.jit(lambda x: jnp.max(x, axis=-1))
  t_floor = _time_ms(lambda: floor(logits), args.runs)
  t_ours = _time_ms(lambda: ours(key, logits, params), args.runs)
  t_sort = _time_ms(lambda: sort(key, logits, params), args.sort_runs)
  speedup, ratio = t_sort / t_ours, t_ours / t_floor

  device = jax.devices()[0]
  print(f"device: {device.platform} ({device.device_kind}) x{jax.device_count()}; logits [{b}, {v}] float32")
  print(f"operator: T={args.temperature}, top-k {args.top_k}, top-p {args.top_p} on every row; k_max {args.k_max}")
  print(f"(a) ssd_jax sample          {t_ours:10.2f} ms")
  print(f"(b) full-vocab sort sampler {t_sort:10.2f} ms   -> speedup {speedup:.1f}x "
        f"(target >= {TARGET_SPEEDUP_VS_FULL_SORT:g}x)")
  print(f"(c) floor: max over logits  {t_floor:10.2f} ms   -> ours / floor {ratio:.2f}x "
        f"(target <= {TARGET_RATIO_TO_FLOOR:g}x)")
  result = {
      "batch": b, "vocab": v, "platform": device.platform,
      "sample_ms": round(t_ours, 3), "full_sort_ms": round(t_sort, 3), "floor_ms": round(t_floor, 3),
      "speedup_vs_full_sort": round(speedup, 2), "ratio_to_floor": round(ratio, 3),
      "target_speedup_vs_full_sort": TARGET_SPEEDUP_VS_FULL_SORT, "target_ratio_to_floor": TARGET_RATIO_TO_FLOOR,
      "speedup_met": speedup >= TARGET_SPEEDUP_VS_FULL_SORT, "floor_met": ratio <= TARGET_RATIO_TO_FLOOR,
  }
  if not args.no_extras:
    top_k = jax.jit(lambda x: lax.top_k(x, args.k_max))
    open_k = params.replace(top_k=jnp.zeros_like(params.top_k))
    t_topk = _time_ms(lambda: top_k(logits), args.runs)
    t_open = _time_ms(lambda: ours(key, logits, open_k), args.sort_runs)
    print(f"    info: plain lax.top_k(logits, {args.k_max})  {t_topk:10.2f} ms ({t_topk / t_floor:.2f}x floor)")
    print(f"    info: sample, top-k off (sort-free path)  {t_open:10.2f} ms ({t_open / t_floor:.2f}x floor)")
    result.update(lax_top_k_ms=round(t_topk, 3), sort_free_ms=round(t_open, 3))
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  main()
