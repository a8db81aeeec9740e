"""KV capacity: how many sequences run at once, paged vs dense preallocation, for the paper's models and hardware.

  python -m ssd_jax.bench.kv_capacity [--lengths SAMPLES_DIR_OR_JSONL] [--requests 800] [--seed 0]

No model runs (CPU only). For each model (Qwen3-4B, Qwen3-30B-A3B, Llama-3.1-8B, GPT-OSS-20B) on each sampling
process of the paper configs' hardware (one 8 x H100-80GB node; one host of a TPU v5p-64 slice, 4 chips x 95 GB),
the KV pool is what the engine would give it: `kv_cache_fraction` 0.85 of the HBM the weights leave (weights as the
pipeline loads them, float32; KV in bfloat16).

- dense: every slot preallocates prompt + max_tokens (69,632 tokens: 65,536 new + 4,096 of prompt), so the number
  of concurrent sequences is the pool over that;
- paged: the engine's own `Scheduler` and `PagePool` are replayed on a stream of requests whose prompt and answer
  lengths come from the distribution (prefill in chunks, slots filled, pages reserved chunk by chunk, the newest
  latest-arrived sequence preempted and recomputed when a pool runs dry, pages returned at the end; the tokens
  recompute chunks prefill again, prompts included, are `recomputed_fraction` of the tokens generated: prefill
  work, far cheaper per token than decode); concurrency is the mean number of running sequences in the steady
  state: the decode chunks during which requests are still waiting, after
  the first tenth of the stream has finished (ramp-up and drain excluded).

The default distribution has a 65,536-token cap and a mean answer of at least 12,000 tokens: answer lengths are
lognormal (the usual shape of LLM output lengths: a heavy right tail), median 8,000 and sigma 1.0, clipped to
[16, 65,536]; prompts lognormal, median 600, sigma 0.5. The paper reports no length statistics (its released
trainer only notes that 99% of instruct samples are under 8k tokens, ssd_paper.md §3), so this is a conservative
stand-in for its long answers, not a measurement. `--lengths` replays measured lengths instead: a synthesis
samples directory (`samples-*.jsonl` rows with `prompt_tokens` and `num_tokens`) or a JSONL file of such rows.
Target: paged holds >= 4x the concurrent sequences of dense. The last line is one JSON object with
`min_paged_over_dense`.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics

import numpy as np

from ssd_jax.files import read_jsonl
from ssd_jax.models import paged
from ssd_jax.models.config import ModelConfig
from ssd_jax.sampling.scheduler import Scheduler, SchedulerConfig

MAX_NEW = 65536
MAX_SEQ = 69632  # the paper configs' engine max_seq_len: 65,536 new tokens + prompts up to 4,096
GB = 1e9

MODELS = {
    "qwen3-4b": dict(model_type="qwen3", vocab_size=151936, hidden_size=2560, num_layers=36, num_heads=32,
                     num_kv_heads=8, head_dim=128, intermediate_size=9728, tie_word_embeddings=True),
    "qwen3-30b-a3b": dict(model_type="qwen3_moe", vocab_size=151936, hidden_size=2048, num_layers=48, num_heads=32,
                          num_kv_heads=4, head_dim=128, intermediate_size=6144, num_experts=128,
                          num_experts_per_tok=8, moe_intermediate_size=768),
    "llama3.1-8b": dict(model_type="llama", vocab_size=128256, hidden_size=4096, num_layers=32, num_heads=32,
                        num_kv_heads=8, head_dim=128, intermediate_size=14336),
    "gpt-oss-20b": dict(model_type="gpt_oss", vocab_size=201088, hidden_size=2880, num_layers=24, num_heads=64,
                        num_kv_heads=8, head_dim=64, intermediate_size=2880, num_experts=32, num_experts_per_tok=4,
                        moe_intermediate_size=2880, norm_topk_prob=True, moe_bias=True, attention_sinks=True,
                        sliding_window=128, layer_types=("sliding_attention", "full_attention") * 12),
}
PARAMS = {"qwen3-4b": 4.02e9, "qwen3-30b-a3b": 30.53e9, "llama3.1-8b": 8.03e9, "gpt-oss-20b": 20.91e9}
# One sampling process: its chips and HBM (the configs sample per process on that process's devices).
HARDWARE = {"gpu_8xh100": (8, 80 * GB), "tpu_v5p_64_host": (4, 95 * GB)}


def default_lengths(n: int, seed: int) -> list[tuple[int, int]]:
  """(prompt tokens, answer tokens) pairs from the stand-in distribution of the module docstring."""
  rng = np.random.default_rng(seed)
  prompts = np.clip(rng.lognormal(np.log(600), 0.5, n), 32, 4096).astype(int)
  answers = np.clip(rng.lognormal(np.log(8000), 1.0, n), 16, MAX_NEW).astype(int)
  return list(zip(prompts.tolist(), answers.tolist()))


def measured_lengths(path: str) -> list[tuple[int, int]]:
  files = sorted(glob.glob(os.path.join(path, "samples-*.jsonl"))) if os.path.isdir(path) else [path]
  out = []
  for name in files:
    for row in read_jsonl(name, torn="error"):
      out.append((int(row["prompt_tokens"]), max(1, min(int(row["num_tokens"]), MAX_NEW))))
  if not out:
    raise ValueError(f"{path}: no rows with prompt_tokens and num_tokens")
  return out


def replay(lengths: list[tuple[int, int]], pages: int, page_size: int, slots: int, chunk_steps: int,
           prefill_chunk: int) -> dict:
  """The engine's scheduler on a stream of these lengths; -> concurrency in the steady state (mean running
  sequences over the decode chunks where requests are still waiting and a tenth of the stream has finished, so
  that the pool or the slots, not the end of the stream, bound it) and preemptions."""
  sched = Scheduler(SchedulerConfig(shards=1, slots=slots, pages=pages, page_size=page_size, max_seq_len=MAX_SEQ,
                                    prefill_chunk=prefill_chunk, prefill_rows=8))
  target = {}
  for i, (prompt, answer) in enumerate(lengths):
    sched.add(i, prompt, 1, MAX_NEW)
    target[i] = answer
  steady, finished, recomputed = [], 0, 0
  while sched.busy:
    for chunk in sched.next_prefill():
      if chunk.recompute is not None:  # a preempted sequence's prompt and tokens, prefilled again
        recomputed += chunk.length
      sched.prefilled(chunk, [0] * len(chunk.samples) if chunk.last and chunk.recompute is None else None)
    sched.fill_slots(chunk_steps)
    sched.reserve(chunk_steps)
    running = sched.running()
    if sched.waiting and finished >= len(lengths) // 10:
      steady.append(len(running))
    for seq in running:
      step = max(0, min(chunk_steps, target[seq.request] - len(seq.generated)))
      sched.advance(seq, [0] * step, done=len(seq.generated) + step >= target[seq.request])
      finished += seq.finished
  if not steady:
    raise ValueError(f"{len(lengths)} requests never kept the queue busy: pass more with --requests")
  generated = sum(answer for _, answer in lengths)
  return {"concurrency": statistics.fmean(steady), "max_concurrency": max(steady), "preemptions": sched.preemptions,
          "recomputed_fraction": recomputed / generated, "steady_chunks": len(steady)}


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(prog="python -m ssd_jax.bench.kv_capacity", description=__doc__.split("\n")[0])
  parser.add_argument("--lengths", help="synthesis samples dir or JSONL of {prompt_tokens, num_tokens} rows")
  parser.add_argument("--requests", type=int, default=3000)
  parser.add_argument("--slots", type=int, default=1024, help="decode slots (so that the pool, not slots, binds)")
  parser.add_argument("--page-size", type=int, default=16)
  parser.add_argument("--chunk-steps", type=int, default=64, help="decode steps per chunk (the paper configs')")
  parser.add_argument("--prefill-chunk", type=int, default=2048)
  parser.add_argument("--kv-cache-fraction", type=float, default=0.85)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  lengths = measured_lengths(args.lengths) if args.lengths else default_lengths(args.requests, args.seed)
  answers = [a for _, a in lengths]
  source = args.lengths or "lognormal stand-in (median 8,000, sigma 1.0, cap 65,536)"
  print(f"{len(lengths)} requests from {source}: answer mean {statistics.fmean(answers):.0f}, median "
        f"{statistics.median(answers):.0f}, max {max(answers)} tokens; prompt mean "
        f"{statistics.fmean(p for p, _ in lengths):.0f}", flush=True)
  rows = []
  for model, fields in MODELS.items():
    cfg = ModelConfig(**fields, param_dtype="float32", compute_dtype="bfloat16")
    kv_per_token = paged.page_bytes(cfg, 1, "bfloat16")
    for hardware, (chips, hbm) in HARDWARE.items():
      free = chips * hbm - 4 * PARAMS[model]  # the pipeline samples with its float32 params
      pool = args.kv_cache_fraction * free
      dense = int(pool // (MAX_SEQ * kv_per_token))
      pages = int(pool // (args.page_size * kv_per_token))
      result = replay(lengths, pages, args.page_size, args.slots, args.chunk_steps, args.prefill_chunk)
      ratio = result["concurrency"] / max(dense, 1e-9)
      rows.append({"model": model, "hardware": hardware, "pool_gb": pool / GB, "kv_kib_per_token": kv_per_token / 1024,
                   "dense_concurrency": dense, "paged_concurrency": result["concurrency"],
                   "paged_max_concurrency": result["max_concurrency"], "preemptions": result["preemptions"],
                   "recomputed_fraction": result["recomputed_fraction"], "paged_over_dense": ratio})
      print(f"{model:14s} {hardware:16s} pool {pool / GB:6.1f} GB ({kv_per_token / 1024:.0f} KiB/token): dense "
            f"{dense:4d} sequences, paged {result['concurrency']:7.1f} (peak {result['max_concurrency']}, "
            f"{result['preemptions']} preemptions recomputing {100 * result['recomputed_fraction']:.1f}% of the "
            f"generated tokens) = {ratio:.1f}x", flush=True)
  min_ratio = min(r["paged_over_dense"] for r in rows)
  print(f"min paged/dense {min_ratio:.1f}x (target >= 4x)")
  out = {"bench": "kv_capacity", "requests": len(lengths), "lengths": source,
         "answer_mean": statistics.fmean(answers), "answer_median": statistics.median(answers),
         "rows": rows, "min_paged_over_dense": min_ratio, "target": 4.0, "target_met": min_ratio >= 4.0}
  print(json.dumps(out))
  return out


if __name__ == "__main__":
  main()
