"""The SSD pipeline: `python -m ssd_jax.main --config=configs/<x>.py [--stage=all] [--config.a.b=value ...]`.

Stages, all in one workdir (`config.workdir`):
  synthesize  sample the frozen base model on the prompts      -> samples/ (JSONL shards + manifest.json)
  train       SFT on the kept samples                          -> train/ (orbax checkpoints, metrics), export/ (HF)
  evaluate    sample + sandbox-judge base and/or SSD at T_eval  -> eval/<model>/<model>_T<T>.{samples,results}.jsonl
  analyze     the report                                       -> report.md, summary.json, *.png
  all         the four in order, in one process on one mesh: the params loaded for synthesis are the trainer's
              starting params, and the SSD model is evaluated from the trainer's params in place.
Every stage skips what is complete and resumes what is not (synthesis shards, trainer checkpoints, judged
samples). The last line printed is one JSON object with where everything went and the headline numbers.

This module is the CLI (flags, config checks before any work); the stages are functions in `ssd_jax/stages.py`.
Every config field, with its default and the paper's value, is listed in `configs/default.py`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from typing import Any, Callable

from absl import app, flags
from ml_collections import config_dict, config_flags

from ssd_jax import stages

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                              "smollm2_codesuite.py")
STAGES = (*stages.STAGES, "all")
EVAL_MODELS = ("base", "ssd")


log = logging.getLogger("ssd_jax")


class ConfigValueError(ValueError):
  """A config value that has the right type but is not allowed."""


def check_config(config: config_dict.ConfigDict) -> None:
  """Value checks ml_collections cannot do (it already refuses unknown keys and wrong types); before any work."""
  def need(ok: bool, key: str, expected: str) -> None:
    if not ok:
      raise ConfigValueError(f"config.{key} = {_get(config, key)!r}: expected {expected}")

  need(bool(config.workdir), "workdir", "a directory path")
  need(not os.path.exists(config.workdir) or os.path.isdir(config.workdir), "workdir",
       "a directory (this path is a file; choose another --config.workdir)")
  checkpoint = config.model.checkpoint
  need(checkpoint in ("", "random") or os.path.exists(checkpoint), "model.checkpoint",
       "an existing HF directory, .gguf file or orbax directory (this path does not exist), or 'random'")
  need(config.data.subset in stages.SUBSETS, "data.subset", f"one of {stages.SUBSETS}")
  need(config.eval.subset in stages.SUBSETS, "eval.subset", f"one of {stages.SUBSETS}")
  models = tuple(config.eval.models)
  need(bool(models) and all(m in EVAL_MODELS for m in models), "eval.models", f"a non-empty subset of {EVAL_MODELS}")
  for name in EVAL_MODELS:
    need(len(config.eval[name].temperatures) > 0 and all(t >= 0 for t in config.eval[name].temperatures),
         f"eval.{name}.temperatures", "a non-empty tuple of temperatures >= 0")
  need(config.eval.benchmark in ("humaneval", "lcb", "synthetic", "codesuite"), "eval.benchmark",
       "'humaneval', 'lcb', 'synthetic' or 'codesuite'")
  need(config.eval.benchmark != "lcb" or bool(config.eval.path), "eval.path",
       "a directory of LiveCodeBench code_generation_lite shards when eval.benchmark is 'lcb'")
  need(config.eval.isolation in ("auto", "bwrap", "unshare"), "eval.isolation", "'auto', 'bwrap' or 'unshare'")
  need(config.eval.mode in ("lcb_compat", "real_io", "plain"), "eval.mode", "'lcb_compat', 'real_io' or 'plain'")
  try:  # the settings the stages will build, built now: a bad or unknown field is refused before any work
    stages.synthesis_config(config)
    stages.train_settings(config, backend="cpu")  # no jax call before jax.distributed.initialize
    for name in EVAL_MODELS:
      stages.eval_sampling(config, name)
  except ValueError as e:
    raise ConfigValueError(str(e)) from e
  need(not config.analysis.diagnostics or config.eval.ssd.min_p == 0, "eval.ssd.min_p",
       "0 while config.analysis.diagnostics is on (the Fig. 6 diagnostics apply top-k and top-p only)")
  _check_checkpoints(config, need)
  need(config.distributed.barrier_timeout_s > 0, "distributed.barrier_timeout_s", "a number of seconds > 0")
  need(config.train.global_batch_size >= 1, "train.global_batch_size", "an integer >= 1")
  need(config.train.attention in ("auto", "xla", "cudnn", "splash", "pallas_gpu"), "train.attention",
       "'auto', 'xla', 'cudnn', 'splash' or 'pallas_gpu'")
  need(config.train.attention != "cudnn" or not config.train.packing, "train.attention",
       "'xla' or 'auto' when config.train.packing is on (the fused attention takes one sequence per row)")
  if config.model.checkpoint == "random":
    need(config.model.tokenizer in ("", "train_sentencepiece"), "model.tokenizer",
         "'' or 'train_sentencepiece' for a random-init model")


def _check_checkpoints(config: config_dict.ConfigDict, need: Callable[[bool, str, str], None]) -> None:
  """`eval.ssd.checkpoints` must name steps the trainer saves and keeps."""
  t = config.train
  steps = tuple(config.eval.ssd.checkpoints)
  need(all(isinstance(s, int) and 0 < s <= t.total_steps for s in steps), "eval.ssd.checkpoints",
       f"training steps in 1..train.total_steps ({t.total_steps})")
  saved = sorted({*range(t.save_interval_steps, t.total_steps + 1, t.save_interval_steps), t.total_steps})
  kept = saved[-t.max_to_keep:] if t.max_to_keep else saved
  need(all(s in saved for s in steps), "eval.ssd.checkpoints",
       f"steps the trainer saves (multiples of train.save_interval_steps = {t.save_interval_steps}, or the last)")
  missing = sorted(set(steps) - set(kept))
  need(not missing, "eval.ssd.checkpoints",
       f"steps the trainer keeps: with train.max_to_keep = {t.max_to_keep} only {kept} survive; set "
       f"--config.train.max_to_keep={len(saved) - saved.index(missing[0]) if missing else 0} (or 0 to keep all)")


def _get(config: config_dict.ConfigDict, dotted: str) -> Any:
  value = config
  for part in dotted.split("."):
    value = value[part]
  return value


def maybe_initialize_distributed(config: config_dict.ConfigDict) -> None:
  """`jax.distributed.initialize` on several hosts; a no-op on one."""
  import jax

  dist = config.distributed
  if dist.coordinator_address:
    jax.distributed.initialize(dist.coordinator_address, dist.num_processes, dist.process_id)
  elif dist.auto and any(os.environ.get(v) for v in ("TPU_WORKER_HOSTNAMES", "SLURM_JOB_ID", "JAX_COORDINATOR_ADDRESS",
                                                      "COORDINATOR_ADDRESS")):
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    slurm_tasks = int(os.environ.get("SLURM_NTASKS", "1"))
    if "," in hosts or slurm_tasks > 1 or os.environ.get("JAX_COORDINATOR_ADDRESS"):
      jax.distributed.initialize()


def run(config: config_dict.ConfigDict, stage: str) -> dict:
  """Runs `stage` (or all stages) of `config`; returns the result object that main prints."""
  check_config(config)
  if stage in ("evaluate", "all"):
    stages.check_sandbox(config)
  maybe_initialize_distributed(config)
  from ssd_jax import coordination
  coordination.set_barrier_timeout(config.distributed.barrier_timeout_s)
  run_state = stages.start_run(config)
  names = tuple(stages.STAGES) if stage == "all" else (stage,)
  t0 = time.time()
  summary, stage_wall_s = None, {}
  for name in names:
    t_stage = time.time()
    result = stages.STAGES[name](run_state)
    stage_wall_s[name] = round(time.time() - t_stage, 1)
    if name == "analyze":
      summary = result
  # Leave together: at exit jax.distributed waits only 5 min (shutdown_timeout_seconds) for the other processes,
  # then aborts them all, and process 0 works alone at the end (the Fig. 6 diagnostics, the report).
  coordination.barrier("ssd_jax.main.done")
  out = {"workdir": run_state.paths.workdir, "stage": stage, "wall_s": round(time.time() - t0, 1),
         "stage_wall_s": stage_wall_s,
         **{k: v for k, v in run_state.results.items() if k != "evaluate"}}
  if summary is not None:
    out["summary"] = {k: summary[k] for k in ("headline", "report") if k in summary}
  if "evaluate" in run_state.results:
    out["evaluate"] = {name: r["best"] for name, r in run_state.results["evaluate"].items()}
  return out


def main(config_flag, stage_flag, argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)
  for chatty in ("absl", "jax", "matplotlib"):  # orbax logs every checkpoint step through absl at INFO
    logging.getLogger(chatty).setLevel(logging.WARNING)
  from ssd_jax.eval.sandbox import SandboxError
  from ssd_jax.models.config import ConfigError

  config = config_flag.value
  try:
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():  # log lines are printed above the progress bars instead of through them
      result = run(config, stage_flag.value)
  except ConfigValueError as e:
    print(f"config error: {e}", file=sys.stderr)
    print(json.dumps({"error": str(e)}))
    sys.exit(2)
  except SandboxError as e:
    print(f"error: {e}", file=sys.stderr)
    print(json.dumps({"error": str(e)}))
    sys.exit(1)
  except ConfigError as e:  # a checkpoint that cannot be read (truncated, unsupported); the message names it
    print(f"error: {e}", file=sys.stderr)
    print(json.dumps({"error": str(e)}))
    sys.exit(2)
  print(json.dumps(result, default=str))


def unknown_override_keys(argv: list[str]) -> list[str]:
  """`--config.a.b=...` flags naming a key the config file does not define (ml_collections only raises a bare
  KeyError from inside flag parsing, so this check runs first, to name the key and the fields it could be)."""
  import difflib
  import importlib.util

  path, config_arg = DEFAULT_CONFIG, ""
  for arg in argv:
    if arg.startswith("--config="):
      path, _, config_arg = arg.split("=", 1)[1].partition(":")  # config_flags' `file.py:arg`
  if not os.path.isfile(path):
    return []  # config_flags reports a missing file itself
  spec = importlib.util.spec_from_file_location("ssd_jax_config_file", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(config_arg) if config_arg else module.get_config()
  unknown = []
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    key = arg[len("--config."):].split("=", 1)[0]
    node = config
    for depth, part in enumerate(key.split(".")):
      if not isinstance(node, config_dict.ConfigDict) or part not in node:
        siblings = list(node.keys()) if isinstance(node, config_dict.ConfigDict) else []
        near = difflib.get_close_matches(part, siblings, n=3)
        parent = ".".join(["config", *key.split(".")[:depth]])
        unknown.append(f"config.{key}: {parent} has no field {part!r}"
                       + (f" (did you mean {', '.join(near)}?)" if near else f"; its fields: {', '.join(siblings)}"))
        break
      node = node[part]
  return unknown


def cli() -> None:
  # Unknown keys first: config_flags applies the overrides to its default config as the flag is defined, where an
  # unknown key is a traceback, with or without --config=.
  unknown = unknown_override_keys(sys.argv[1:])
  if unknown:
    for line in unknown:
      print(f"config error: unknown key {line}", file=sys.stderr)
    print(json.dumps({"error": "unknown config keys", "keys": unknown}))
    sys.exit(2)
  config_flag = config_flags.DEFINE_config_file(
      "config", DEFAULT_CONFIG, "Experiment config file (configs/*.py); override any field with --config.a.b=value. "
      "Every field, its default and the paper's value: configs/default.py.")
  stage_flag = flags.DEFINE_enum("stage", "all", STAGES, "Which stage to run.")
  app.run(functools.partial(main, config_flag, stage_flag))


if __name__ == "__main__":
  cli()
