"""Checks a converted checkpoint against transformers: same random token batch, float32 on CPU.

  python -m ssd_jax.tools.parity --hf-dir DIR     # an HF directory (config.json + safetensors)
  python -m ssd_jax.tools.parity --gguf FILE      # a GGUF file (transformers dequantizes it too)

Needs no tokenizer files. The last line printed is one JSON object with max_abs_logit_diff,
top1_agreement and the verdict. Exit codes: 0 within --tolerance, 1 over it, 2 when the check could not run
(torch/transformers missing: `pip install -e '.[test]'`, or an unreadable checkpoint); the JSON says which.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


class CannotRun(RuntimeError):
  """The comparison could not run (a missing reference library or an unreadable checkpoint)."""


def compare(hf_dir: str | None, gguf_file: str | None, batch: int, seq_len: int, seed: int) -> dict:
  """Loads both implementations and returns the comparison as a dict."""
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  import jax
  import numpy as np
  try:
    import torch
    import transformers
  except ImportError as e:
    raise CannotRun(f"the parity check compares against transformers on CPU torch ({e.name} is not installed): "
                    "install the test extras, `pip install -e '.[test]'`") from None

  from ssd_jax.models import gguf, hf, transformer

  jax.config.update("jax_default_matmul_precision", "highest")
  t0 = time.time()
  if hf_dir:
    cfg, params = hf.load_hf(hf_dir, param_dtype="float32")
    ref = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    source = hf_dir
  else:
    cfg, params = gguf.load_gguf(gguf_file, param_dtype="float32")
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(os.path.abspath(gguf_file)), gguf_file=os.path.basename(gguf_file), dtype=torch.float32)
    source = gguf_file
  load_s = time.time() - t0
  tokens = np.random.RandomState(seed).randint(0, cfg.vocab_size, (batch, seq_len)).astype(np.int32)
  ours = np.asarray(jax.jit(transformer.forward, static_argnames="cfg")(params, tokens, np.ones_like(tokens),
                                                                         cfg=cfg))
  with torch.no_grad():
    theirs = ref.eval()(torch.from_numpy(tokens).long()).logits.float().numpy()
  diff = np.abs(ours - theirs)
  return {
      "source": source,
      "model_type": cfg.model_type,
      "num_layers": cfg.num_layers,
      "vocab_size": cfg.vocab_size,
      "batch": batch,
      "seq_len": seq_len,
      "max_abs_logit_diff": float(diff.max()),
      "mean_abs_logit_diff": float(diff.mean()),
      "top1_agreement": float((ours.argmax(-1) == theirs.argmax(-1)).mean()),
      "load_s": round(load_s, 2),
  }


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m ssd_jax.tools.parity", description=__doc__.split("\n")[0])
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--hf-dir", help="HF checkpoint directory to check")
  source.add_argument("--gguf", help="GGUF file to check")
  parser.add_argument("--batch", type=int, default=2, help="rows in the random token batch")
  parser.add_argument("--seq-len", type=int, default=64, help="tokens per row")
  parser.add_argument("--seed", type=int, default=0, help="seed of the random tokens")
  parser.add_argument("--tolerance", type=float, default=1e-3, help="largest acceptable max |logit difference|")
  args = parser.parse_args(argv)
  from ssd_jax.models.config import ConfigError
  try:
    result = compare(args.hf_dir, args.gguf, args.batch, args.seq_len, args.seed)
  except (CannotRun, ConfigError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    print(json.dumps({"ok": None, "error": str(e)}))
    return 2
  result["tolerance"] = args.tolerance
  result["ok"] = result["max_abs_logit_diff"] <= args.tolerance
  print(f"{result['source']}: {result['model_type']}, {result['num_layers']} layers, vocab {result['vocab_size']}")
  print(f"max |logit diff| {result['max_abs_logit_diff']:.3g} (tolerance {args.tolerance:g}), "
        f"top-1 agreement {result['top1_agreement']:.2%} over {args.batch}x{args.seq_len} random tokens")
  print("PASS" if result["ok"] else "FAIL")
  print(json.dumps(result))
  return 0 if result["ok"] else 1


if __name__ == "__main__":
  sys.exit(main())
