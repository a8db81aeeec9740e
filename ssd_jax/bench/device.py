"""Accelerator benchmark: decode tokens/s and SFT MFU of a Qwen3-4B-shaped model beside the chip's roofline.

  python -m ssd_jax.bench.device [--size qwen3-4b|qwen3-30b-a3b|toy|toy-moe] [--decode-batch 64]
                                 [--prompt-tokens 256] [--new-tokens 256] [--max-new-configured 65536]
                                 [--train-batch 8] [--seq 2048] [--segments 1] [--train-steps 4]
                                 [--attention xla|cudnn|splash|pallas_gpu]
                                 [--remat full] [--peak-tflops X] [--hbm-gbps Y] [--skip decode|train]

One prepared script for a lent GPU/TPU machine (and a CPU smoke run at --size toy). A random-init model
with Qwen3-4B's shapes (36 layers, d 2560, 32/8 heads of 128, MLP 9728, vocab 151,936, tied embeddings, QK-norm):

- decode: the paged engine (fused temperature / top-k / top-p sampling in the jitted step) on bf16 weights,
  configured for --max-new-configured new tokens per sequence, every row generating exactly --new-tokens tokens
  (no stop tokens); tokens/s over wall time after a warm-up call with the same shapes. Roofline: each decode step
  must read every weight once (for MoE: the experts the batch's tokens route to, in expectation) and the K/V of
  every filled position of every row, so tokens/s <= HBM bandwidth * tokens / bytes read.
- train: the SFT step (--precision: float32 master weights and AdamW state by default; bf16 matmuls, remat,
  chunked cross-entropy) on a [train-batch, seq] batch of random tokens, each row one document or --segments
  packed ones (through --attention); MFU = model FLOPs/s / peak, model FLOPs per token = 6 * (non-embedding matmul
  params + the LM head) + 12 * layers * seq * heads * head_dim (PaLM's convention: full attention over the row
  whatever its documents, remat recomputation not counted); `mfu_causal` counts that attention at half, as a
  causal row does it.

Peaks come from a table of published dense bf16 FLOP/s and HBM bandwidth keyed by device kind (override with
--peak-tflops / --hbm-gbps). The same run also measures its peers on the chip: an 8192^3 bf16 matmul and a
device-to-device copy, so each result is printed against both the datasheet and what this chip reached.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from ssd_jax.models.config import ModelConfig
from ssd_jax.models.sharding import ShardingRules, make_mesh
from ssd_jax.models.transformer import ParamSpec, Sharding, init_params, param_specs
from ssd_jax.train.optim import PRECISIONS

# Dense bf16 FLOP/s and HBM bytes/s from the vendors' datasheets (SXM parts for NVIDIA).
DATASHEET = {
    "H200": (989e12, 4.8e12),
    "H100": (989e12, 3.35e12),
    "A100": (312e12, 2.039e12),
    "TPU v6": (918e12, 1.64e12),
    "TPU v5p": (459e12, 2.765e12),
    "TPU v5": (197e12, 0.819e12),  # v5e ("TPU v5 lite")
    "TPU v4": (275e12, 1.2e12),
}

SIZES = {
    "qwen3-4b": dict(vocab_size=151936, hidden_size=2560, num_layers=36, num_heads=32, num_kv_heads=8, head_dim=128,
                     intermediate_size=9728),
    "qwen3-30b-a3b": dict(model_type="qwen3_moe", vocab_size=151936, hidden_size=2048, num_layers=48, num_heads=32,
                          num_kv_heads=4, head_dim=128, intermediate_size=6144, num_experts=128,
                          num_experts_per_tok=8, moe_intermediate_size=768, norm_topk_prob=True,
                          tie_word_embeddings=False),
    "toy": dict(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                intermediate_size=128),
    "toy-moe": dict(model_type="qwen3_moe", vocab_size=512, hidden_size=64, num_layers=2, num_heads=4,
                    num_kv_heads=2, head_dim=16, intermediate_size=128, num_experts=8, num_experts_per_tok=2,
                    moe_intermediate_size=32, norm_topk_prob=True, tie_word_embeddings=False),
}


def model_config(size: str, param_dtype: str) -> ModelConfig:
  fields = {"model_type": "qwen3", "tie_word_embeddings": True, **SIZES[size]}
  return ModelConfig(rms_norm_eps=1e-6, rope_theta=1e6, max_position_embeddings=131072, qk_norm=True,
                     param_dtype=param_dtype, compute_dtype="bfloat16", **fields)


def datasheet_peaks(device: jax.Device) -> tuple[float | None, float | None]:
  kind = device.device_kind
  for name, peaks in DATASHEET.items():
    if name in kind:
      return peaks
  return None, None


def param_counts(cfg: ModelConfig) -> tuple[int, int]:
  """(all parameters, matmul parameters per token incl. the LM head, excl. the embedding lookup)."""
  shapes = [spec.shape for spec in jax.tree.leaves(param_specs(cfg), is_leaf=lambda x: isinstance(x, ParamSpec))]
  total = int(sum(np.prod(s) for s in shapes))
  matrices = int(sum(np.prod(s) for s in shapes if len(s) >= 2))
  # The embedding is a lookup, not a matmul; a tied LM head reuses it as one (an untied head is a matrix already).
  embed = cfg.vocab_size * cfg.hidden_size
  return total, matrices - (0 if cfg.tie_word_embeddings else embed)


def measure_matmul_tflops(n: int) -> float:
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.bfloat16)
  f = jax.jit(lambda x, y: x @ y)
  f(a, b).block_until_ready()
  reps = 10
  t0 = time.perf_counter()
  for _ in range(reps):
    out = f(a, b)
  out.block_until_ready()
  return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e12


def measure_copy_gbps(nbytes: int) -> float:
  x = jnp.zeros((nbytes // 2,), jnp.bfloat16)
  f = jax.jit(lambda v: v + jnp.asarray(1, v.dtype))  # one read and one write of every element
  f(x).block_until_ready()
  reps = 10
  t0 = time.perf_counter()
  for _ in range(reps):
    y = f(x)
  y.block_until_ready()
  return 2 * x.size * 2 * reps / (time.perf_counter() - t0) / 1e9


def _time_call(fn, *args, reps: int = 10) -> float:
  jax.block_until_ready(fn(*args))
  t0 = time.perf_counter()
  for _ in range(reps):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / reps


def decode_breakdown(params, cfg: ModelConfig, sharding: Sharding, batch: int, filled: int, page: int) -> dict:
  """Milliseconds of one model step (each paged-attention implementation this backend runs) and of one sampling
  call, with `filled` cached tokens per row."""
  from ssd_jax.models import paged, transformer
  from ssd_jax.sampling.sampler import sample

  pps = -(-(filled + 1) // page)
  shards = paged.num_shards(sharding.mesh, sharding.rules)
  cache = paged.init_cache(cfg, batch * pps, page, dtype="bfloat16", mesh=sharding.mesh, rules=sharding.rules)
  per_shard = batch // shards
  table = jnp.asarray([[(r % per_shard) * pps + j for j in range(pps)] for r in range(batch)], jnp.int32)
  tokens = jnp.zeros((batch, 1), jnp.int32)
  start, one = jnp.full((batch,), filled, jnp.int32), jnp.ones((batch,), jnp.int32)
  out = {}
  impls = ["reference"] + {"gpu": ["pallas_gpu"], "tpu": ["pallas_tpu"]}.get(jax.default_backend(), [])
  for impl in impls:
    step = jax.jit(lambda p, t, c, impl=impl: transformer.extend(p, t, start, one, table, c, cfg, sharding,
                                                                 attention=impl)[0])
    out[f"model_step_ms_{impl}"] = 1e3 * _time_call(step, params, tokens, cache)
  logits = jax.random.normal(jax.random.key(1), (batch, cfg.vocab_size), jnp.float32) * 4
  draw = jax.jit(lambda key, x: sample(key, x, 0.7, 20, 0.8))
  out["sample_ms"] = 1e3 * _time_call(draw, jax.random.key(2), logits)
  return out


def decode_weight_bytes(cfg: ModelConfig, batch: int) -> float:
  """Weight bytes (bf16) one decode step reads: everything but the experts no token of the batch routes to (each
  of the batch's tokens picks k of E experts; the expected number of distinct experts hit per layer is
  E * (1 - (1 - k/E)^batch))."""
  total, _ = param_counts(cfg)
  if not cfg.num_experts:
    return 2.0 * total
  e, k = cfg.num_experts, cfg.num_experts_per_tok
  per_expert = 3 * cfg.hidden_size * cfg.moe_intermediate_size
  moe_layers = sum(cfg.is_moe_layer(i) for i in range(cfg.num_layers))
  expert_params = moe_layers * e * per_expert
  hit = e * (1 - (1 - k / e) ** batch)
  return 2.0 * (total - expert_params + moe_layers * hit * per_expert)


def bench_decode(args: argparse.Namespace, hbm_bytes_s: float | None) -> dict:
  from ssd_jax.sampling.engine import Engine, EngineConfig, Request, decode_attention_impl
  from ssd_jax.sampling.sampler import SamplingConfig

  cfg = model_config(args.size, "bfloat16")
  mesh = make_mesh({"tensor": -1})
  sharding = Sharding(mesh, ShardingRules())
  params = init_params(cfg, jax.random.key(0), mesh, sharding.rules)
  rng = np.random.default_rng(0)
  prompts = [rng.integers(0, cfg.vocab_size, args.prompt_tokens).tolist() for _ in range(args.decode_batch)]
  sampling = SamplingConfig(temperature=0.7, top_k=20, top_p=0.8, max_new_tokens=args.new_tokens)
  requests = [Request(p, sampling=sampling) for p in prompts]
  # The engine is configured for --max-new-configured new tokens per sequence (the paper's 65,536): page tables and
  # admission; the pool comes from free memory and the answers stop at --new-tokens.
  ecfg = EngineConfig(batch_size=args.decode_batch, max_seq_len=args.prompt_tokens + args.max_new_configured,
                      chunk_steps=args.chunk_steps, decode_attention=args.decode_attention,
                      page_size=args.page_size, prefill_chunk=max(args.prompt_tokens, 16))
  engine = Engine(params, cfg, stop_ids=[], engine_cfg=ecfg, sharding=sharding)
  t0 = time.perf_counter()
  engine.generate(requests, seed=1)
  warmup_s = time.perf_counter() - t0
  steps_before = engine.stats["decode_steps"]
  t0 = time.perf_counter()
  out = engine.generate(requests, seed=2)
  wall = time.perf_counter() - t0
  tokens = sum(c.num_tokens for row in out for c in row)
  steps = engine.stats["decode_steps"] - steps_before
  breakdown = {}
  if not args.no_breakdown:
    breakdown = decode_breakdown(params, cfg, sharding, args.decode_batch, args.prompt_tokens + args.new_tokens // 2,
                                 args.page_size)
  total, _ = param_counts(cfg)
  weight_bytes = decode_weight_bytes(cfg, args.decode_batch)
  kv_bytes_per_position = cfg.num_layers * 2 * cfg.num_kv_heads * cfg.head_dim * 2
  # Step t (0-based) attends over prompt + t + 1 positions in each row.
  positions_read = args.decode_batch * sum(args.prompt_tokens + t + 1 for t in range(args.new_tokens))
  bytes_read = args.new_tokens * weight_bytes + positions_read * kv_bytes_per_position
  result = {"tokens": tokens, "wall_s": wall, "warmup_s": warmup_s, "tokens_per_s": tokens / wall,
            "decode_steps": steps, "ms_per_step": 1e3 * wall / max(steps, 1), "params": total,
            "weight_gb_read_per_step": weight_bytes / 1e9, "bytes_read_per_token": bytes_read / tokens,
            "attention_impl": decode_attention_impl(ecfg), "max_new_configured": args.max_new_configured,
            "pool_pages": engine.stats["pool_pages"], "peak_pages": engine.stats["peak_pages"], **breakdown}
  if hbm_bytes_s:
    result["roofline_tokens_per_s"] = tokens * hbm_bytes_s / bytes_read
    result["fraction_of_roofline"] = result["tokens_per_s"] / result["roofline_tokens_per_s"]
  return result


def packed_segments(seq: int, n: int) -> tuple[np.ndarray, np.ndarray]:
  """One row of n packed documents of near-equal length: (segment ids 1..n [seq], positions inside each [seq])."""
  if not 1 <= n <= seq:
    raise ValueError(f"--segments must be in 1..--seq ({seq}), got {n}")
  starts = np.linspace(0, seq, n + 1).astype(np.int64)[:-1]
  segment_ids = np.searchsorted(starts, np.arange(seq), side="right").astype(np.int32)
  return segment_ids, (np.arange(seq) - starts[segment_ids - 1]).astype(np.int32)


def bench_train(args: argparse.Namespace, peak_flops: float | None) -> dict:
  from ssd_jax.train.optim import TrainConfig
  from ssd_jax.train.trainer import Trainer

  cfg = model_config(args.size, "float32")
  mesh = make_mesh({"fsdp": -1})
  params = init_params(cfg, jax.random.key(0), mesh, ShardingRules())
  tc = TrainConfig(global_batch_size=args.train_batch, learning_rate=1e-5, warmup_steps=0, total_steps=100,
                   remat=args.remat, loss_chunk_size=min(args.seq, 512), attention=args.attention,
                   precision=args.precision)
  trainer = Trainer(cfg, tc, params, mesh=mesh)
  del params
  rng = np.random.default_rng(0)
  ids = rng.integers(0, cfg.vocab_size, (args.train_batch, args.seq + 1)).astype(np.int32)
  ones = np.ones((args.train_batch, args.seq), np.int32)
  segment_ids, positions = packed_segments(args.seq, args.segments)
  batch = trainer.device_batch({"inputs": ids[:, :-1], "targets": ids[:, 1:], "weights": ones.astype(np.float32),
                                "segment_ids": np.broadcast_to(segment_ids, ones.shape),
                                "positions": np.broadcast_to(positions, ones.shape)})
  step_fn = trainer.step_fn
  t0 = time.perf_counter()
  trainer.state, metrics = step_fn(trainer.state, batch)
  first_loss = float(jax.block_until_ready(metrics)["loss"])
  warmup_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(args.train_steps):
    trainer.state, metrics = step_fn(trainer.state, batch)
  last_loss = float(jax.block_until_ready(metrics)["loss"])
  step_s = (time.perf_counter() - t0) / args.train_steps
  total, matmul = param_counts(cfg)
  # PaLM's count (App. B): 6N per token plus 12 L S H Dh of attention, as if every query saw the whole row; a
  # causal row (packed documents see less still) does half of that attention, reported beside it.
  attention_flops = 12 * cfg.num_layers * args.seq * cfg.num_heads * cfg.head_dim
  flops_per_token = 6 * matmul + attention_flops
  flops_per_token_causal = 6 * matmul + attention_flops // 2
  tokens_per_s = args.train_batch * args.seq / step_s
  result = {"step_s": step_s, "warmup_s": warmup_s, "tokens_per_s": tokens_per_s, "params": total,
            "matmul_params": matmul, "flops_per_token": flops_per_token,
            "flops_per_token_causal": flops_per_token_causal,
            "model_tflops_per_s": tokens_per_s * flops_per_token / 1e12, "loss_first": first_loss,
            "attention": args.attention, "precision": args.precision, "remat": args.remat, "seq": args.seq,
            "segments": args.segments, "batch": args.train_batch, "loss_last": last_loss}
  if peak_flops:
    result["mfu"] = tokens_per_s * flops_per_token / peak_flops
    result["mfu_causal"] = tokens_per_s * flops_per_token_causal / peak_flops
  return result


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(prog="python -m ssd_jax.bench.device", description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="qwen3-4b", choices=sorted(SIZES))
  parser.add_argument("--decode-batch", type=int, default=64)
  parser.add_argument("--prompt-tokens", type=int, default=256)
  parser.add_argument("--new-tokens", type=int, default=256)
  parser.add_argument("--chunk-steps", type=int, default=64)
  parser.add_argument("--max-new-configured", type=int, default=65536,
                      help="new tokens per sequence the engine is configured for (the answers stop at --new-tokens)")
  parser.add_argument("--page-size", type=int, default=16)
  parser.add_argument("--decode-attention", default="auto", choices=("auto", "reference", "pallas_gpu", "pallas_tpu"))
  parser.add_argument("--no-breakdown", action="store_true", help="skip timing the model step and sampler alone")
  parser.add_argument("--train-batch", type=int, default=8)
  parser.add_argument("--seq", type=int, default=2048)
  parser.add_argument("--train-steps", type=int, default=4, help="timed steps after one warm-up step")
  parser.add_argument("--remat", default="full", choices=("none", "full", "dots"))
  parser.add_argument("--segments", type=int, default=1,
                      help="documents packed per training row (1: unpacked rows; cudnn needs 1)")
  parser.add_argument("--attention", default="xla", choices=("xla", "cudnn", "splash", "pallas_gpu"),
                      help="training attention (ssd_jax.models.fused_attention)")
  parser.add_argument("--precision", default="params", choices=PRECISIONS,
                      help="TrainConfig.precision (params: float32 params and AdamW state)")
  parser.add_argument("--peak-tflops", type=float, default=None, help="override the datasheet bf16 peak")
  parser.add_argument("--hbm-gbps", type=float, default=None, help="override the datasheet HBM bandwidth")
  parser.add_argument("--matmul-n", type=int, default=8192, help="size of the measured peer matmul")
  parser.add_argument("--copy-mb", type=int, default=4096, help="size of the measured peer copy")
  parser.add_argument("--skip", action="append", default=[], choices=("decode", "train"))
  args = parser.parse_args(argv)

  device = jax.devices()[0]
  peak_flops, hbm = datasheet_peaks(device)
  peak_flops = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops
  hbm = args.hbm_gbps * 1e9 if args.hbm_gbps else hbm
  result: dict = {"bench": "device", "size": args.size, "device_kind": device.device_kind,
                  "device_count": jax.device_count(), "platform": device.platform, "jax": jax.__version__,
                  "datasheet_peak_tflops": peak_flops and peak_flops / 1e12, "datasheet_hbm_gbps": hbm and hbm / 1e9}
  n_chips = jax.device_count()
  print(f"{device.device_kind} x{n_chips} ({device.platform}), jax {jax.__version__}, size {args.size}", flush=True)
  result["measured_matmul_tflops"] = measure_matmul_tflops(args.matmul_n)
  result["measured_copy_gbps"] = measure_copy_gbps(args.copy_mb << 20)
  print(f"peers on this chip: {args.matmul_n}^3 bf16 matmul {result['measured_matmul_tflops']:.1f} TFLOP/s; "
        f"copy {result['measured_copy_gbps']:.0f} GB/s (datasheet {peak_flops and peak_flops / 1e12} TFLOP/s, "
        f"{hbm and hbm / 1e9} GB/s)", flush=True)

  if "decode" not in args.skip:
    d = bench_decode(args, hbm * n_chips if hbm else None)
    d["measured_copy_roofline_tokens_per_s"] = result["measured_copy_gbps"] * 1e9 * n_chips / d["bytes_read_per_token"]
    d["fraction_of_measured_copy_roofline"] = d["tokens_per_s"] / d["measured_copy_roofline_tokens_per_s"]
    result["decode"] = d
    roof = f", roofline {d['roofline_tokens_per_s']:.0f} ({100 * d['fraction_of_roofline']:.1f}%)" if hbm else ""
    print(f"decode bf16 batch {args.decode_batch}, prompt {args.prompt_tokens}, {args.new_tokens} new: "
          f"{d['tokens_per_s']:.0f} tokens/s, {d['ms_per_step']:.2f} ms/step{roof}; "
          f"{100 * d['fraction_of_measured_copy_roofline']:.1f}% of the measured-copy roofline "
          f"(warm-up {d['warmup_s']:.0f} s, attention {d['attention_impl']})", flush=True)
    if "sample_ms" in d:
      steps = ", ".join(f"{k[len('model_step_ms_'):]} {v:.2f} ms" for k, v in d.items() if k.startswith("model_step"))
      print(f"  one step alone at mid-generation fill: model {steps}; sampling {d['sample_ms']:.2f} ms", flush=True)
  if "train" not in args.skip:
    t = bench_train(args, peak_flops * n_chips if peak_flops else None)
    t["fraction_of_measured_matmul"] = t["model_tflops_per_s"] / (result["measured_matmul_tflops"] * n_chips)
    result["train"] = t
    mfu = f", MFU {100 * t['mfu']:.1f}%" if peak_flops else ""
    print(f"train f32 master / bf16 compute, batch {args.train_batch} x {args.seq}, remat {args.remat}, "
          f"attention {args.attention}, {args.segments} document(s) per row: "
          f"{t['tokens_per_s']:.0f} tokens/s, {t['model_tflops_per_s']:.1f} model TFLOP/s{mfu}; "
          f"{100 * t['fraction_of_measured_matmul']:.1f}% of the measured matmul "
          f"(loss {t['loss_first']:.3f} -> {t['loss_last']:.3f}, warm-up {t['warmup_s']:.0f} s)", flush=True)
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  main()
