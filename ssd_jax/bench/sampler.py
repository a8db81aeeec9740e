"""Sampler cost against a full-vocabulary sort and against one reduction pass over the logits.

  python -m ssd_jax.bench.sampler [--batch 256] [--vocab 151936] [--wide-vocab 201088]

Times (jit, warm, median, block_until_ready) for SSD's setting (T = 0.7, top-k 20, top-p 0.8 on every row):
  (a) `ssd_jax.sampling.sample`;
  (b) the same operator with a per-row sort of the whole vocabulary (what most JAX anchors do);
  (c) the floor: one reduction pass, max(logits, axis=-1); nothing that reads every logit can beat it.
Then the rows that draw over the whole vocabulary, on GPT-OSS's vocabulary (201,088) at the paper's settings,
each against the floor measured on the same logits: no truncation at T 1.0 and 1.2 (GPT-OSS's base decode and
SSD sampling), and top-p 0.95 without top-k at T 1.0 and 1.6. An extra line (not in the targets): a plain
`lax.top_k(logits, k_max)`. The last line is one JSON object with the times in ms, the ratios (each
whole-vocabulary ratio is the worse of its two temperatures) and the targets.
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
TARGET_NO_TRUNCATION_RATIO = 1.5
TARGET_TOP_P_ONLY_RATIO = 5.0
NO_TRUNCATION_TEMPERATURES = (1.0, 1.2)
TOP_P_ONLY = (0.95, (1.0, 1.6))  # top-p, temperatures


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
  return _paired_ms(fn, None, runs)[0]


def _paired_ms(fn: Callable[[], jax.Array], floor: Callable[[], jax.Array] | None, runs: int) -> tuple[float, float]:
  """Median ms of `fn` and of `floor`, their runs interleaved so that a change in the machine's load between
  them does not skew their ratio (the CPU this runs on is shared)."""
  calls = [fn] if floor is None else [fn, floor]
  for call in calls:
    jax.block_until_ready(call())  # compile and warm up
  times: list[list[float]] = [[] for _ in calls]
  for _ in range(runs):
    for call, spent in zip(calls, times):
      start = time.perf_counter()
      jax.block_until_ready(call())
      spent.append((time.perf_counter() - start) * 1e3)
  medians = [statistics.median(t) for t in times]
  return medians[0], medians[-1]


def _logits(batch: int, vocab: int) -> jax.Array:
  return jax.jit(lambda k: 2.0 * jax.random.normal(k, (batch, vocab), jnp.float32))(jax.random.key(0))


def _whole_vocab_rows(batch: int, vocab: int, k_max: int, runs: int) -> dict:
  """The rows that draw over the whole vocabulary: ms per temperature and the worse ratio to the floor."""
  logits = _logits(batch, vocab)
  ours = jax.jit(lambda k, x, p: sample(k, x, p.temperature, p.top_k, p.top_p, k_max=k_max))
  floor_fn = jax.jit(lambda x: jnp.max(x, axis=-1))
  key = jax.random.key(1)
  top_p, top_p_temperatures = TOP_P_ONLY
  cases = {"no_truncation": [(t, SamplingParams.full(batch, temperature=t)) for t in NO_TRUNCATION_TEMPERATURES],
           "top_p_only": [(t, SamplingParams.full(batch, temperature=t, top_p=top_p)) for t in top_p_temperatures]}
  print(f"whole-vocabulary rows: logits [{batch}, {vocab}]; each against the floor timed between its own runs")
  result: dict = {"wide_vocab": vocab}
  floors = []
  for name, rows in cases.items():
    times, ratios = {}, {}
    for t, p in rows:
      times[t], floor = _paired_ms(lambda: ours(key, logits, p), lambda: floor_fn(logits), runs)
      ratios[t] = times[t] / floor
      floors.append(floor)
      label = "no truncation" if name == "no_truncation" else f"top-p {top_p}, no top-k"
      print(f"    {label:22s} T {t:<4g} {times[t]:10.2f} ms   floor {floor:8.2f} ms   -> {ratios[t]:.2f}x the floor")
    result[f"{name}_ms"] = {str(t): round(ms, 3) for t, ms in times.items()}
    result[f"{name}_ratio_to_floor"] = round(max(ratios.values()), 3)
  result["wide_floor_ms"] = round(statistics.median(floors), 3)
  return result


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--vocab", type=int, default=151_936)
  parser.add_argument("--wide-vocab", type=int, default=201_088, help="vocabulary of the whole-vocabulary rows")
  parser.add_argument("--temperature", type=float, default=0.7)
  parser.add_argument("--top-k", type=int, default=20)
  parser.add_argument("--top-p", type=float, default=0.8)
  parser.add_argument("--k-max", type=int, default=64)
  parser.add_argument("--runs", type=int, default=15, help="timed runs of the fast variants (median)")
  parser.add_argument("--sort-runs", type=int, default=3, help="timed runs of the full sort (it is slow on CPU)")
  parser.add_argument("--no-extras", action="store_true", help="skip the informational lax.top_k line")
  args = parser.parse_args(argv)

  b, v = args.batch, args.vocab
  logits = _logits(b, v)
  params = SamplingParams.full(b, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
  key = jax.random.key(1)

  ours = jax.jit(lambda k, x, p: sample(k, x, p.temperature, p.top_k, p.top_p, k_max=args.k_max))
  sort = jax.jit(full_sort_sample)
  floor = jax.jit(lambda x: jnp.max(x, axis=-1))
  t_ours, t_floor = _paired_ms(lambda: ours(key, logits, params), lambda: floor(logits), args.runs)
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
  del logits  # the whole-vocabulary rows allocate their own, wider, logits
  result.update(_whole_vocab_rows(b, args.wide_vocab, args.k_max, args.runs))
  result.update(target_no_truncation_ratio=TARGET_NO_TRUNCATION_RATIO, target_top_p_only_ratio=TARGET_TOP_P_ONLY_RATIO,
                no_truncation_met=result["no_truncation_ratio_to_floor"] <= TARGET_NO_TRUNCATION_RATIO,
                top_p_only_met=result["top_p_only_ratio_to_floor"] <= TARGET_TOP_P_ONLY_RATIO)
  print(f"    worst no truncation {result['no_truncation_ratio_to_floor']:.2f}x (target <= "
        f"{TARGET_NO_TRUNCATION_RATIO:g}x); worst top-p only {result['top_p_only_ratio_to_floor']:.2f}x (target <= "
        f"{TARGET_TOP_P_ONLY_RATIO:g}x)")
  if not args.no_extras:
    logits = _logits(b, v)
    top_k = jax.jit(lambda x: lax.top_k(x, args.k_max))
    t_topk = _time_ms(lambda: top_k(logits), args.runs)
    print(f"    info: plain lax.top_k(logits, {args.k_max})  {t_topk:10.2f} ms ({t_topk / t_floor:.2f}x floor)")
    result.update(lax_top_k_ms=round(t_topk, 3))
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  main()
