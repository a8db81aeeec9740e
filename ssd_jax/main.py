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
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from typing import Any

from absl import app, flags
from ml_collections import config_dict, config_flags

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                              "smollm2_humaneval.py")
STAGES = ("synthesize", "train", "evaluate", "analyze", "all")
EVAL_MODELS = ("base", "ssd")
SUBSETS = ("all", "first_half", "second_half")

_CONFIG = config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Experiment config file (configs/*.py).")
_STAGE = flags.DEFINE_enum("stage", "all", STAGES, "Which stage to run.")

log = logging.getLogger("ssd_jax")


class ConfigValueError(ValueError):
  """A config value that has the right type but is not allowed."""


def check_config(config: config_dict.ConfigDict) -> None:
  """Value checks ml_collections cannot do (it already refuses unknown keys and wrong types); before any work."""
  def need(ok: bool, key: str, expected: str) -> None:
    if not ok:
      raise ConfigValueError(f"config.{key} = {_get(config, key)!r}: expected {expected}")

  need(bool(config.workdir), "workdir", "a directory path")
  need(config.data.subset in SUBSETS, "data.subset", f"one of {SUBSETS}")
  need(config.eval.subset in SUBSETS, "eval.subset", f"one of {SUBSETS}")
  models = tuple(config.eval.models)
  need(bool(models) and all(m in EVAL_MODELS for m in models), "eval.models", f"a non-empty subset of {EVAL_MODELS}")
  for name in EVAL_MODELS:
    need(len(config.eval[name].temperatures) > 0 and all(t >= 0 for t in config.eval[name].temperatures),
         f"eval.{name}.temperatures", "a non-empty tuple of temperatures >= 0")
  need(config.eval.benchmark in ("humaneval", "lcb", "synthetic"), "eval.benchmark",
       "'humaneval', 'lcb' or 'synthetic'")
  need(config.eval.benchmark != "lcb" or bool(config.eval.path), "eval.path",
       "a directory of LiveCodeBench code_generation_lite shards when eval.benchmark is 'lcb'")
  need(config.eval.isolation in ("auto", "bwrap", "unshare"), "eval.isolation", "'auto', 'bwrap' or 'unshare'")
  need(config.eval.mode in ("lcb_compat", "real_io", "plain"), "eval.mode", "'lcb_compat', 'real_io' or 'plain'")
  try:  # the settings the stages will build, built now: a bad or unknown field is refused before any work
    synthesis_config(config)
    for name in EVAL_MODELS:
      eval_sampling(config, name)
  except ValueError as e:
    raise ConfigValueError(str(e)) from e
  need(not config.analysis.diagnostics or config.eval.ssd.min_p == 0, "eval.ssd.min_p",
       "0 while config.analysis.diagnostics is on (the Fig. 6 diagnostics apply top-k and top-p only)")
  need(config.distributed.barrier_timeout_s > 0, "distributed.barrier_timeout_s", "a number of seconds > 0")
  need(config.train.global_batch_size >= 1, "train.global_batch_size", "an integer >= 1")
  need(config.train.attention in ("auto", "xla", "cudnn"), "train.attention", "'auto', 'xla' or 'cudnn'")
  need(config.train.attention != "cudnn" or not config.train.packing, "train.attention",
       "'xla' or 'auto' when config.train.packing is on (the fused attention takes one sequence per row)")
  if config.model.checkpoint == "random":
    need(config.model.tokenizer in ("", "train_sentencepiece"), "model.tokenizer",
         "'' or 'train_sentencepiece' for a random-init model")


def _get(config: config_dict.ConfigDict, dotted: str) -> Any:
  value = config
  for part in dotted.split("."):
    value = value[part]
  return value


def subset(items: list, which: str) -> list:
  """The first or second half (by position) or all of `items` (disjoint halves for synthesis vs evaluation)."""
  half = len(items) // 2
  return {"all": items, "first_half": items[:half], "second_half": items[half:]}[which]


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


@dataclasses.dataclass(frozen=True)
class Paths:
  """Where each stage writes, under one workdir."""

  workdir: str

  @property
  def base(self) -> str:  # a random-init base model (configs/tiny.py)
    return os.path.join(self.workdir, "base")

  @property
  def samples(self) -> str:
    return os.path.join(self.workdir, "samples")

  @property
  def train(self) -> str:
    return os.path.join(self.workdir, "train")

  @property
  def export(self) -> str:
    return os.path.join(self.workdir, "export")

  @property
  def eval(self) -> str:
    return os.path.join(self.workdir, "eval")


class Pipeline:
  """One run: the config, the mesh, and the models, loaded once and shared by the stages."""

  def __init__(self, config: config_dict.ConfigDict):
    import jax

    from ssd_jax.coordination import is_coordinator
    from ssd_jax.models.sharding import ShardingRules, make_mesh
    from ssd_jax.models.transformer import Sharding

    self.config = config
    self.paths = Paths(os.path.abspath(config.workdir))
    self.mesh = make_mesh(dict(config.mesh))
    self.sharding = Sharding(self.mesh, ShardingRules())
    # Sampling runs per process (each its own prompts) on this process's devices; training uses the global mesh.
    self.local_sharding = self.sharding if jax.process_count() == 1 else Sharding(
        make_mesh(dict(config.mesh), devices=jax.local_devices()), ShardingRules())
    self._base = None
    self.tuned_params = None
    self.results: dict[str, Any] = {}
    os.makedirs(self.paths.workdir, exist_ok=True)
    if is_coordinator():
      with open(os.path.join(self.paths.workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=1, sort_keys=True))

  # -- models --------------------------------------------------------------------------------------------------

  def load_base(self, mesh):
    """The base model on `mesh`: the checkpoint, or a random-init model (config.model.checkpoint == "random")."""
    from ssd_jax.models.gguf import smollm2_gguf_path
    from ssd_jax.models.loader import load_model, random_model

    model = self.config.model
    dtypes = dict(param_dtype=model.param_dtype, compute_dtype=model.compute_dtype)
    if model.checkpoint == "random":
      return random_model(self.paths.base, model.arch.to_dict(), self.prompt_texts(),
                          tokenizer_vocab_size=model.tokenizer_vocab_size, seed=self.config.seed, mesh=mesh, **dtypes)
    return load_model(model.checkpoint or smollm2_gguf_path(), tokenizer_path=model.tokenizer or None, mesh=mesh,
                      **dtypes)

  def base(self):
    """The frozen base model (loaded once, on the sampling mesh)."""
    if self._base is None:
      t0 = time.time()
      self._base = self.load_base(self.local_sharding.mesh)
      log.info("base model %s (%s, %d layers) loaded in %.1fs", self._base.source, self._base.cfg.model_type,
               self._base.cfg.num_layers, time.time() - t0)
    return self._base

  # -- data ----------------------------------------------------------------------------------------------------

  def prompt_records(self):
    from ssd_jax.data.sources import SourceSpec, load_source
    from ssd_jax.eval.evaluate import prompt_record
    from ssd_jax.eval.synthetic import synthetic_problems

    data = self.config.data
    if data.kind == "synthetic":
      return [prompt_record(p) for p in subset(synthetic_problems(data.limit or 64, seed=data.seed), data.subset)], []
    spec = SourceSpec(data.kind, path=data.path or None, require_passed=data.require_passed, dedup=data.dedup,
                      hub_id=data.hub_id or None, hub_config=data.hub_config or None)
    records, report = load_source(spec, on_bad_row=data.on_bad_row)
    records = subset(records, data.subset)
    return (records[:data.limit] if data.limit else records), [report]

  def eval_problems(self):
    from ssd_jax.eval import lcb
    from ssd_jax.eval.synthetic import synthetic_problems

    ev = self.config.eval
    if ev.benchmark == "humaneval":
      problems = lcb.load_humaneval_problems(ev.path or None)
    elif ev.benchmark == "synthetic":
      problems = synthetic_problems(ev.limit or 64, seed=self.config.data.seed)
    else:
      problems = lcb.load_lcb(ev.path, version=ev.version or None, start_date=ev.start_date or None,
                              end_date=ev.end_date or None)
    problems = subset(problems, ev.subset)
    return problems[:ev.limit] if ev.limit and ev.benchmark != "synthetic" else problems

  def prompt_texts(self) -> list[str]:
    """Text a trained-on-the-fly tokenizer learns from: the prompts and the evaluation problems."""
    records, _ = self.prompt_records()
    problems = self.eval_problems()
    return [r.question + "\n" + r.starter_code for r in records] + [p.question + p.prompt for p in problems]

  # -- stages --------------------------------------------------------------------------------------------------

  def synthesize(self) -> dict:
    from ssd_jax.data.synthesis import synthesize

    scfg = synthesis_config(self.config)
    records, reports = self.prompt_records()
    model = self.base()
    bar = _progress(total=-(-len(records) // scfg.shard_size), desc="synthesize", unit="shard")
    t0 = time.time()
    manifest = synthesize(model, records, self.paths.samples, scfg, sharding=self.local_sharding,
                          source_reports=reports, after_shard=lambda k, path: bar.update(1))
    bar.close()
    counts = manifest.get("counts", {})
    if manifest.get("finished") and not counts.get("prompts"):
      reasons = [r.get("reason") for src in manifest.get("sources", []) for r in src.get("bad_row_list", [])[:3]]
      raise RuntimeError(f"synthesis: every one of {counts.get('prompts_in')} prompts was rejected, e.g. {reasons}; "
                         f"see {os.path.join(self.paths.samples, 'manifest.json')}")
    log.info("synthesize: %s prompts -> %s samples (%s kept, %s tokens) in %s [%.0fs]", counts.get("prompts"),
             counts.get("samples"), counts.get("kept"), counts.get("tokens"), self.paths.samples, time.time() - t0)
    self.results["synthesize"] = {"dir": self.paths.samples, "counts": counts}
    return manifest

  def train(self) -> dict:
    import jax

    from ssd_jax.train.optim import TrainConfig
    from ssd_jax.train.pipeline import DataConfig, build_iterator
    from ssd_jax.train.trainer import Trainer

    t = self.config.train
    fields = {k: v for k, v in t.to_dict().items() if k in TrainConfig.__dataclass_fields__}
    if t.attention == "auto":
      fields["attention"] = "cudnn" if jax.default_backend() == "gpu" and not t.packing else "xla"
    tc = TrainConfig(**fields)
    dc = DataConfig(seq_len=t.seq_len, packing=t.packing, too_long=t.too_long, seed=t.data_seed)
    base = self.base()
    tok = base.tokenizer
    t0 = time.time()
    data_iter, stats = build_iterator(self.paths.samples, tok, dc, tc.global_batch_size // jax.process_count())
    log.info("train data: %s", stats.summary())
    # Sampling used per-process meshes; with several processes training needs the params on the global one.
    params = base.params if jax.process_count() == 1 else self.load_base(self.mesh).params
    trainer = Trainer(base.cfg, tc, params, self.paths.train, mesh=self.mesh)
    bar = _progress(total=tc.total_steps, desc="train", unit="step")
    try:
      trainer.fit(data_iter, on_step=lambda step, metrics: _train_progress(bar, step, metrics))
      if t.export and not os.path.exists(os.path.join(self.paths.export, "config.json")):
        trainer.export(self.paths.export, tokenizer_dir=base.source if _is_hf_dir(base.source) else None)
    finally:
      bar.close()
      trainer.close()
    self.tuned_params = trainer.state.params
    if jax.process_count() > 1:  # sampling meshes are per process: gather the trained params onto this one's
      from jax.experimental import multihost_utils

      from ssd_jax.models.transformer import param_shardings
      host = multihost_utils.process_allgather(self.tuned_params, tiled=True)
      self.tuned_params = jax.device_put(host, param_shardings(base.cfg, self.local_sharding.mesh,
                                                               self.local_sharding.rules))
    curve = _read_metrics(os.path.join(self.paths.train, "metrics.jsonl"))
    log.info("train: %d steps (loss %s -> %s) -> %s, export %s [%.0fs]", int(trainer.state.step),
             curve[0]["loss"] if curve else None, curve[-1]["loss"] if curve else None, self.paths.train,
             self.paths.export if t.export else "off", time.time() - t0)
    self.results["train"] = {"dir": self.paths.train, "steps": int(trainer.state.step),
                             "export": self.paths.export if t.export else None, "data": stats.summary()}
    return self.results["train"]

  def tuned_model(self):
    """(cfg, params) of the SSD model: the trainer's params in place, else its HF export."""
    base = self.base()
    if self.tuned_params is None:
      from ssd_jax.models import hf

      if not os.path.exists(os.path.join(self.paths.export, "config.json")):
        raise FileNotFoundError(f"{self.paths.export}: no exported SSD model; run --stage=train (with "
                                "config.train.export=True) before evaluating 'ssd' in a separate process")
      _, self.tuned_params = hf.load_hf(self.paths.export, mesh=self.local_sharding.mesh,
                                        rules=self.local_sharding.rules, param_dtype=self.config.model.param_dtype,
                                        compute_dtype=self.config.model.compute_dtype)
    return base.cfg, self.tuned_params

  def evaluate(self) -> dict:
    from ssd_jax import coordination
    from ssd_jax.eval.evaluate import EvalSettings, evaluate_sweep
    from ssd_jax.eval.sandbox import Sandbox
    from ssd_jax.sampling.engine import Engine

    ev = self.config.eval
    problems = self.eval_problems()
    sandbox = Sandbox(sandbox_config(self.config))
    settings = EvalSettings(mode=ev.mode, timeout_s=ev.timeout_s, ks=tuple(ev.ks))
    base = self.base()
    out = {}
    try:
      for name in ev.models:
        # The paper decodes base models with their recommended settings (Table 4) and SSD models with Table 3's.
        sampling = eval_sampling(self.config, name)
        cfg, params = (base.cfg, base.params) if name == "base" else self.tuned_model()
        engine = Engine(params, cfg, base.tokenizer.stop_ids, synthesis_config(self.config).engine,
                        self.local_sharding)
        t0 = time.time()
        bars = {}

        def progress(phase: str, done: int, total: int, name=name) -> None:
          unit = "sample" if phase == "sample" else "program"
          if phase == "judge" and "sample" in bars:  # sampling of this temperature is over
            bars.pop("sample").close()
          bar = bars.get(phase)
          if bar is None or bar.total != total or done < bar.n:
            if bar is not None:
              bar.close()
            bar = bars[phase] = _progress(total=total, desc=f"evaluate {name}: {phase}", unit=unit)
          bar.update(done - bar.n)

        out[name] = evaluate_sweep(engine, base.tokenizer, problems, sandbox, tuple(ev[name].temperatures),
                                   sampling=sampling, settings=settings, out_dir=os.path.join(self.paths.eval, name),
                                   tag=name, log=log.info, process_index=coordination.process_index(),
                                   process_count=coordination.process_count(), progress=progress)
        for bar in bars.values():
          bar.close()
        log.info("evaluate %s: best pass@1 %.4f at T %g over %d problems -> %s [%.0fs]", name,
                 out[name]["best"].get("pass@1", 0.0), out[name]["best"]["temperature"], len(problems),
                 os.path.join(self.paths.eval, name), time.time() - t0)
    finally:
      sandbox.close()
    self.results["evaluate"] = out
    return out

  def diagnostic_sequences(self) -> tuple[list[list[int]], list[int]]:
    """The kept SSD samples as (token ids, prompt length): the responses the Fig. 6 diagnostics score."""
    import random

    from ssd_jax.data.synthesis import read_samples
    from ssd_jax.train.pipeline import tokenize_conversation

    tok = self.base().tokenizer
    rows = list(read_samples(self.paths.samples))
    random.Random(self.config.seed).shuffle(rows)  # max_positions then spreads over many prompts
    sequences, prompt_lens = [], []
    for row in rows:
      ids, mask, _ = tokenize_conversation(tok, row["messages"])
      first = int(mask.argmax()) if mask.any() else len(ids)
      if first < len(ids):
        sequences.append(ids.tolist())
        prompt_lens.append(first)
    return sequences, prompt_lens

  def analyze(self) -> dict:
    from ssd_jax.analysis.report import write_report
    from ssd_jax.coordination import is_coordinator

    a = self.config.analysis
    ready = os.path.exists(os.path.join(self.paths.samples, "manifest.json")) and (
        self.tuned_params is not None or os.path.exists(os.path.join(self.paths.export, "config.json")))
    if a.diagnostics and ready and is_coordinator():
      from ssd_jax.analysis.diagnostics import run_diagnostics

      t0 = time.time()
      base = self.base()
      sequences, prompt_lens = self.diagnostic_sequences()
      ssd_decoding = eval_sampling(self.config, "ssd").sampling
      table = run_diagnostics({"base": (base.cfg, base.params), "ssd": self.tuned_model()}, sequences, prompt_lens,
                              os.path.join(self.paths.workdir, "analysis"), temperatures=tuple(a.temperatures),
                              top_k=ssd_decoding.top_k, top_p=ssd_decoding.top_p,
                              max_positions=a.max_positions)
      log.info("analyze: Fig. 6 diagnostics over %d positions -> %s [%.0fs]",
               table["models"]["base"]["positions"], os.path.dirname(table["json"]), time.time() - t0)
    summary = write_report(self.paths.workdir, self.config)
    log.info("analyze: report -> %s", os.path.join(self.paths.workdir, "report.md"))
    self.results["analyze"] = {"report": os.path.join(self.paths.workdir, "report.md")}
    return summary


def synthesis_config(config: config_dict.ConfigDict):
  """`config.sample` (and data.on_bad_row) as the synthesis settings; a key nothing reads is refused."""
  from ssd_jax.data.synthesis import SynthesisConfig

  return SynthesisConfig.from_config(config.sample.to_dict(), on_bad_row=config.data.on_bad_row)


def eval_sampling(config: config_dict.ConfigDict, model: str):
  """How `model` ("base" or "ssd") is sampled for evaluation: its decoding subtree (the T_eval sweep aside) with
  eval.max_new_tokens as the SamplingConfig, and eval's n, seed and prompt settings."""
  from ssd_jax.eval.evaluate import EvalSampling
  from ssd_jax.sampling.sampler import SamplingConfig

  ev = config.eval
  decoding = {k: v for k, v in ev[model].to_dict().items() if k != "temperatures"}
  operator = SamplingConfig.from_config({**decoding, "max_new_tokens": ev.max_new_tokens}, f"eval.{model}")
  return EvalSampling(sampling=operator, n=ev.n, seed=ev.seed, prompt_style=ev.prompt_style,
                      system_message=ev.system_message or None,
                      chat_template_kwargs=ev.chat_template_kwargs.to_dict())


def sandbox_config(config: config_dict.ConfigDict):
  """The evaluation sandbox: the configured level, the workdir and benchmark data hidden from programs."""
  from ssd_jax.eval.sandbox import SandboxConfig

  ev = config.eval
  protected = tuple(p for p in (config.workdir, ev.path) if p)
  return SandboxConfig(isolation=ev.isolation, allow_weak_isolation=ev.allow_weak_isolation,
                       protected_paths=protected, workers=ev.workers or os.cpu_count() or 1,
                       wall_timeout_s=ev.timeout_s + 4)


def check_sandbox(config: config_dict.ConfigDict) -> None:
  """Proves the evaluation sandbox and its environment before any work (hours of synthesis and training would
  otherwise end in a refusal): raises `SandboxError`, naming what is missing and the fix."""
  from ssd_jax.eval.evaluate import check_environment
  from ssd_jax.eval.sandbox import Sandbox

  with Sandbox(sandbox_config(config)) as sandbox:
    # lcb and synthetic problems are LiveCodeBench-style (stdin and call-based); HumanEval is its own mode.
    check_environment(sandbox, config.eval.mode, ["humaneval" if config.eval.benchmark == "humaneval" else "stdin"])


def _train_progress(bar, step: int, metrics: dict | None) -> None:
  bar.n = step
  if metrics:
    bar.set_postfix(loss=f"{metrics['loss']:.4f}", tok_s=f"{metrics.get('tokens_per_s', 0):.0f}", refresh=False)
  bar.refresh()


def _is_hf_dir(path: str | None) -> bool:
  return bool(path) and os.path.isfile(os.path.join(path, "tokenizer.json"))


def _read_metrics(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _progress(**kwargs):
  from tqdm import tqdm
  return tqdm(file=sys.stderr, dynamic_ncols=True, **kwargs)


def run(config: config_dict.ConfigDict, stage: str) -> dict:
  """Runs `stage` (or all stages) of `config`; returns the result object that main prints."""
  check_config(config)
  if stage in ("evaluate", "all"):
    check_sandbox(config)
  maybe_initialize_distributed(config)
  from ssd_jax import coordination
  coordination.set_barrier_timeout(config.distributed.barrier_timeout_s)
  pipeline = Pipeline(config)
  stages = ("synthesize", "train", "evaluate", "analyze") if stage == "all" else (stage,)
  t0 = time.time()
  summary = None
  for name in stages:
    result = getattr(pipeline, name)()
    if name == "analyze":
      summary = result
  # Leave together: at exit jax.distributed waits only 5 min (shutdown_timeout_seconds) for the other processes,
  # then aborts them all, and process 0 works alone at the end (the Fig. 6 diagnostics, the report).
  coordination.barrier("ssd_jax.main.done")
  out = {"workdir": pipeline.paths.workdir, "stage": stage, "wall_s": round(time.time() - t0, 1),
         **{k: v for k, v in pipeline.results.items() if k != "evaluate"}}
  if summary is not None:
    out["summary"] = {k: summary[k] for k in ("headline", "report") if k in summary}
  if "evaluate" in pipeline.results:
    out["evaluate"] = {name: r["best"] for name, r in pipeline.results["evaluate"].items()}
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)
  for chatty in ("absl", "jax", "matplotlib"):  # orbax logs every checkpoint step through absl at INFO
    logging.getLogger(chatty).setLevel(logging.WARNING)
  from ssd_jax.eval.sandbox import SandboxError

  config = _CONFIG.value
  try:
    result = run(config, _STAGE.value)
  except ConfigValueError as e:
    print(f"config error: {e}", file=sys.stderr)
    print(json.dumps({"error": str(e)}))
    sys.exit(2)
  except SandboxError as e:
    print(f"error: {e}", file=sys.stderr)
    print(json.dumps({"error": str(e)}))
    sys.exit(1)
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


if __name__ == "__main__":
  _unknown = unknown_override_keys(sys.argv[1:])
  if _unknown:
    for line in _unknown:
      print(f"config error: unknown key {line}", file=sys.stderr)
    print(json.dumps({"error": "unknown config keys", "keys": _unknown}))
    sys.exit(2)
  app.run(main)
