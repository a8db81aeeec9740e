"""What the SFT precision options do to the loss curve: SmolLM2-135M-Instruct on CPU at the paper's learning rate.

  python -m ssd_jax.bench.precision [--steps 10] [--batch 2] [--seq 512] [--lr 5e-6]
                                    [--precisions params,bf16_params,bf16_params_f32_master]

SFT rows as the pipeline builds them (chat template, loss on the answer tokens, packed rows): the code suite's
training problems, each answered with its reference solution in a fenced block. Every precision
(`TrainConfig.precision`) trains from the same float32 weights on the same batches at a constant lr (no warmup):
"params" (float32 params and AdamW state, the reference), "bf16_params" (updates rounded to bf16 as they are
applied) and "bf16_params_f32_master" (a float32 master in the optimizer state). Per precision: the train loss at
every step and its largest difference from the float32 curve, and how much of float32's weight change survives:
|dW| / |dW_float32| and cos(dW, dW_float32), with dW = final - starting params of the train state (the bf16 ones
start from the rounded weights), over all params. Wall time per step
is reported but is not this bench's point (one CPU). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time

import numpy as np

from ssd_jax.train.optim import PRECISIONS


def write_rows(path: str) -> int:
  """Code-suite training problems answered by their references, as one SFT shard; returns the row count."""
  from ssd_jax.data.codesuite import codesuite_problems
  from ssd_jax.data.prompts import build_messages
  from ssd_jax.data.sources import prompt_record

  problems = codesuite_problems("train")
  with open(path, "w") as f:
    for problem in problems:
      answer = f"```python\n{problem.prompt}{problem.canonical_solution}```"
      messages = build_messages(prompt_record(problem)) + [{"role": "assistant", "content": answer}]
      f.write(json.dumps({"id": problem.id, "messages": messages}) + "\n")
  return len(problems)


def train_curve(cfg, params0, tokenizer, shard: str, precision: str, args: argparse.Namespace) -> dict:
  """Trains `args.steps` steps with one precision; the losses, final float32 weights and seconds per step."""
  import jax

  from ssd_jax.train.optim import TrainConfig
  from ssd_jax.train.pipeline import DataConfig, build_iterator
  from ssd_jax.train.trainer import Trainer

  tc = TrainConfig(global_batch_size=args.batch, learning_rate=args.lr, min_learning_rate=args.lr, warmup_steps=0,
                   total_steps=args.steps, remat="full", loss_chunk_size=min(512, args.seq), precision=precision)
  data, _ = build_iterator(shard, tokenizer, DataConfig(seq_len=args.seq, seed=0), args.batch)
  trainer = Trainer(cfg, tc, params0)
  start = _float32_leaves(trainer.state.params)  # the bf16 precisions start from the rounded weights
  step_fn = trainer.step_fn
  losses, times = [], []
  for _ in range(args.steps):
    batch = trainer.device_batch(next(data))
    t0 = time.perf_counter()
    trainer.state, metrics = step_fn(trainer.state, batch)
    losses.append(float(jax.block_until_ready(metrics)["loss"]))
    times.append(time.perf_counter() - t0)
  update = np.concatenate([(f - s).ravel() for f, s in zip(_float32_leaves(trainer.state.params), start)])
  dtype = str(jax.tree.leaves(trainer.state.params)[0].dtype)
  trainer.close()
  steady = times[1:] or times  # the first step compiles
  return {"losses": losses, "update": update, "param_dtype": dtype, "s_per_step": float(np.mean(steady))}


def _float32_leaves(params) -> list[np.ndarray]:
  import jax

  return [np.asarray(x, np.float32) for x in jax.tree.leaves(jax.device_get(params))]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--seq", type=int, default=512)
  parser.add_argument("--lr", type=float, default=5e-6, help="constant learning rate (the paper's peak)")
  parser.add_argument("--precisions", default=",".join(PRECISIONS))
  args = parser.parse_args()
  precisions = args.precisions.split(",")
  unknown = [p for p in precisions if p not in PRECISIONS]
  if args.seq < 256:  # the code suite's prompts are ~200 tokens: shorter rows hold no answer token to train on
    parser.error(f"--seq {args.seq}: expected >= 256 (rows must reach past the ~200-token prompts)")
  if unknown or "params" not in precisions:
    parser.error(f"--precisions {args.precisions!r}: expected names from {PRECISIONS}, 'params' (the reference) "
                 "among them")

  from ssd_jax.models.gguf import smollm2_gguf_path
  from ssd_jax.models.loader import load_model

  model = load_model(smollm2_gguf_path(), param_dtype="float32", compute_dtype="float32")
  cfg, params0, tokenizer = model.cfg, model.params, model.tokenizer
  results = {}
  with tempfile.TemporaryDirectory() as tmp:
    shard = os.path.join(tmp, "rows.jsonl")
    rows = write_rows(shard)
    for precision in ["params"] + [p for p in precisions if p != "params"]:
      results[precision] = train_curve(cfg, params0, tokenizer, shard, precision, args)
      print(f"{precision}: losses {' '.join(f'{x:.5f}' for x in results[precision]['losses'])} "
            f"({results[precision]['s_per_step']:.1f} s/step)", flush=True)

  reference = results["params"]["update"]
  out = {"model": "SmolLM2-135M-Instruct", "steps": args.steps, "batch": args.batch, "seq": args.seq, "lr": args.lr,
         "rows": rows, "update_norm_float32": float(np.linalg.norm(reference)), "precisions": {}}
  for name, r in results.items():
    d = r["update"]
    out["precisions"][name] = {
        "param_dtype": r["param_dtype"], "losses": [round(x, 6) for x in r["losses"]],
        "max_abs_loss_diff": float(max(abs(a - b) for a, b in zip(r["losses"], results["params"]["losses"]))),
        "update_norm_ratio": float(np.linalg.norm(d) / np.linalg.norm(reference)),
        "update_cosine": float(d @ reference / max(np.linalg.norm(d) * np.linalg.norm(reference), 1e-30)),
        "s_per_step": round(r["s_per_step"], 3)}
  out["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
