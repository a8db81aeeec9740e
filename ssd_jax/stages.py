"""The pipeline's stages as functions over one `Run`: synthesize -> train -> evaluate -> analyze.

`main.py` is the CLI (flags, config checks); this module holds what each stage does and the settings it builds
from the config. Every settings dataclass comes from its config subtree through a builder here that refuses a key
it does not read (`settings.check_fields` / `from_mapping`), so a field set in a config file reaches its stage or
the run stops before any work. The stages share one `Run`: the config, the mesh, and the models, loaded once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from typing import Any

from ml_collections import config_dict

from ssd_jax.files import read_jsonl
from ssd_jax.settings import check_fields

log = logging.getLogger("ssd_jax")

SUBSETS = ("all", "first_half", "second_half")
# config.train keys that are not TrainConfig fields: the data pipeline's (DataConfig) and the stage's own.
_TRAIN_DATA_KEYS = {"seq_len": "seq_len", "packing": "packing", "too_long": "too_long", "data_seed": "seed"}
_TRAIN_STAGE_KEYS = ("export",)


def subset(items: list, which: str) -> list:
  """The first or second half (by position) or all of `items` (disjoint halves for synthesis vs evaluation)."""
  half = len(items) // 2
  return {"all": items, "first_half": items[:half], "second_half": items[half:]}[which]


# -- settings from the config ------------------------------------------------------------------------------------

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
  # The sweep and (SSD) the checkpoints to score are not decoding settings; anything else must be one.
  decoding = {k: v for k, v in ev[model].to_dict().items()
              if k != "temperatures" and not (model == "ssd" and k == "checkpoints")}
  operator = SamplingConfig.from_config({**decoding, "max_new_tokens": ev.max_new_tokens}, f"eval.{model}")
  return EvalSampling(sampling=operator, n=ev.n, seed=ev.seed, prompt_style=ev.prompt_style,
                      system_message=ev.system_message or None,
                      chat_template_kwargs=ev.chat_template_kwargs.to_dict())


def train_settings(config: config_dict.ConfigDict, backend: str | None = None, sinks: bool = False):
  """`config.train` as (TrainConfig, DataConfig); "auto" attention resolved for `backend` (default: jax's, which
  initializes it: the config checks, which run before jax.distributed, pass one) and the model (`sinks`: its
  attention has sink logits, as GPT-OSS)."""
  from ssd_jax.train.optim import TrainConfig
  from ssd_jax.train.pipeline import DataConfig

  t = config.train.to_dict()
  known = [f.name for f in dataclasses.fields(TrainConfig)] + list(_TRAIN_DATA_KEYS) + list(_TRAIN_STAGE_KEYS)
  check_fields(t, known, "train", "TrainConfig / DataConfig")
  fields = {k: v for k, v in t.items() if k in TrainConfig.__dataclass_fields__}
  if t["attention"] == "auto":
    if backend is None:
      import jax
      backend = jax.default_backend()
    from ssd_jax.models.fused_attention import auto_attention
    fields["attention"], _ = auto_attention(backend, t["packing"], sinks)
  data = DataConfig(**{field: t[key] for key, field in _TRAIN_DATA_KEYS.items()})
  return TrainConfig(**fields), data


def sandbox_config(config: config_dict.ConfigDict):
  """The evaluation sandbox: the configured level, the workdir and benchmark data hidden from programs."""
  from ssd_jax.eval.sandbox import SandboxConfig

  ev = config.eval
  protected = tuple(p for p in (config.workdir, ev.path) if p)
  return SandboxConfig(isolation=ev.isolation, allow_weak_isolation=ev.allow_weak_isolation,
                       protected_paths=protected, workers=ev.workers or os.cpu_count() or 1,
                       wall_timeout_s=ev.timeout_s + 4)


def eval_settings(config: config_dict.ConfigDict):
  from ssd_jax.eval.evaluate import EvalSettings

  ev = config.eval
  return EvalSettings(mode=ev.mode, timeout_s=ev.timeout_s, ks=tuple(ev.ks))


def check_sandbox(config: config_dict.ConfigDict) -> None:
  """Proves the evaluation sandbox and its environment before any work (hours of synthesis and training would
  otherwise end in a refusal): raises `SandboxError`, naming what is missing and the fix."""
  from ssd_jax.eval.evaluate import check_environment
  from ssd_jax.eval.sandbox import Sandbox

  with Sandbox(sandbox_config(config)) as sandbox:
    # lcb and synthetic problems are LiveCodeBench-style (stdin and call-based); HumanEval and the code suite are
    # function completions judged by their assert scripts.
    function_mode = config.eval.benchmark in ("humaneval", "codesuite")
    check_environment(sandbox, config.eval.mode, ["humaneval" if function_mode else "stdin"])


# -- the run -------------------------------------------------------------------------------------------------------

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


@dataclasses.dataclass
class Run:
  """What the stages of one run share: the config, the meshes, the models (loaded once) and the results."""

  config: config_dict.ConfigDict
  paths: Paths
  sharding: Any  # transformer.Sharding over the global mesh (training)
  local_sharding: Any  # this process's devices (sampling, evaluation)
  base: Any = None  # the frozen base model (LoadedModel), loaded on first use
  tuned_params: Any = None  # the SSD model's params, once trained in this process
  results: dict[str, Any] = dataclasses.field(default_factory=dict)


def start_run(config: config_dict.ConfigDict) -> Run:
  """The meshes and the workdir (with the resolved config written into it, by process 0)."""
  import jax

  from ssd_jax.coordination import is_coordinator
  from ssd_jax.models.sharding import ShardingRules, make_mesh
  from ssd_jax.models.transformer import Sharding

  sharding = Sharding(make_mesh(dict(config.mesh)), ShardingRules())
  # Sampling runs per process (each its own prompts) on this process's devices; training uses the global mesh.
  local = sharding if jax.process_count() == 1 else Sharding(
      make_mesh(dict(config.mesh), devices=jax.local_devices()), ShardingRules())
  run = Run(config, Paths(os.path.abspath(config.workdir)), sharding, local)
  os.makedirs(run.paths.workdir, exist_ok=True)
  if is_coordinator():
    with open(os.path.join(run.paths.workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=1, sort_keys=True))
  return run


def load_base(run: Run, mesh):
  """The base model on `mesh`: the checkpoint, or a random-init model (config.model.checkpoint == "random")."""
  from ssd_jax.models.gguf import smollm2_gguf_path
  from ssd_jax.models.loader import load_model, random_model

  model = run.config.model
  dtypes = dict(param_dtype=model.param_dtype, compute_dtype=model.compute_dtype)
  if model.checkpoint == "random":
    return random_model(run.paths.base, model.arch.to_dict(), prompt_texts(run.config),
                        tokenizer_vocab_size=model.tokenizer_vocab_size, seed=run.config.seed, mesh=mesh, **dtypes)
  return load_model(model.checkpoint or smollm2_gguf_path(), tokenizer_path=model.tokenizer or None, mesh=mesh,
                    **dtypes)


def base_model(run: Run):
  """The frozen base model (loaded once, on the sampling mesh)."""
  if run.base is None:
    t0 = time.time()
    run.base = load_base(run, run.local_sharding.mesh)
    log.info("base model %s (%s, %d layers) loaded in %.1fs", run.base.source, run.base.cfg.model_type,
             run.base.cfg.num_layers, time.time() - t0)
  return run.base


def tuned_model(run: Run):
  """(cfg, params) of the SSD model: the trainer's params in place, else its HF export."""
  base = base_model(run)
  if run.tuned_params is None:
    from ssd_jax.models import hf

    if not os.path.exists(os.path.join(run.paths.export, "config.json")):
      raise FileNotFoundError(f"{run.paths.export}: no exported SSD model; run --stage=train (with "
                              "config.train.export=True) before evaluating 'ssd' in a separate process")
    _, run.tuned_params = hf.load_hf(run.paths.export, mesh=run.local_sharding.mesh,
                                     rules=run.local_sharding.rules, param_dtype=run.config.model.param_dtype,
                                     compute_dtype=run.config.model.compute_dtype)
  return base.cfg, run.tuned_params


# -- data ------------------------------------------------------------------------------------------------------------

def prompt_records(config: config_dict.ConfigDict):
  """The synthesis prompts and their loaders' reports."""
  from ssd_jax.data.sources import SourceSpec, load_source

  data = config.data
  # Synthetic problems are generated, not read: the limit is how many to make (then halved by `subset`, as the
  # evaluation side does); for files it caps the prompts after `subset`.
  generated = data.kind == "synthetic"
  spec = SourceSpec(data.kind, path=data.path or None, require_passed=data.require_passed, dedup=data.dedup,
                    hub_id=data.hub_id or None, hub_config=data.hub_config or None,
                    limit=(data.limit or None) if generated else None, seed=data.seed)
  records, report = load_source(spec, on_bad_row=data.on_bad_row)
  records = subset(records, data.subset)
  return (records[:data.limit] if data.limit and not generated else records), [report]


def eval_problems(config: config_dict.ConfigDict):
  """The evaluation problems, read by the same loaders as the prompt sources of their format."""
  from ssd_jax.data import lcb, problems as problem_files, synthetic

  ev = config.eval
  if ev.benchmark == "humaneval":
    problems = problem_files.load_humaneval_problems(ev.path or None)
  elif ev.benchmark == "synthetic":
    problems = synthetic.synthetic_problems(ev.limit or synthetic.DEFAULT_COUNT, seed=config.data.seed)
  elif ev.benchmark == "codesuite":  # the held-out families (synthesis prompts come from the others)
    from ssd_jax.data.codesuite import by_variant, codesuite_problems
    problems = by_variant(codesuite_problems("eval", seed=config.data.seed))
  else:
    problems = lcb.load_lcb(ev.path, version=ev.version or None, start_date=ev.start_date or None,
                            end_date=ev.end_date or None)
  problems = subset(problems, ev.subset)
  return problems[:ev.limit] if ev.limit and ev.benchmark != "synthetic" else problems


def prompt_texts(config: config_dict.ConfigDict) -> list[str]:
  """Text a trained-on-the-fly tokenizer learns from: the prompts and the evaluation problems."""
  records, _ = prompt_records(config)
  return [r.question + "\n" + r.starter_code for r in records] + [p.question + p.prompt
                                                                    for p in eval_problems(config)]


# -- the stages ------------------------------------------------------------------------------------------------------

def synthesize(run: Run) -> dict:
  """Samples the frozen base model once per prompt at T_train -> workdir/samples (resumable shards)."""
  from ssd_jax.data.synthesis import synthesize as synthesize_samples

  scfg = synthesis_config(run.config)
  records, reports = prompt_records(run.config)
  model = base_model(run)
  bar = _progress(total=len(records), desc="synthesize", unit="prompt", compiling=True)
  t0 = time.time()
  manifest = synthesize_samples(model, records, run.paths.samples, scfg, sharding=run.local_sharding,
                                source_reports=reports, progress=lambda done, total: _advance(bar, done, total))
  bar.close()
  counts = manifest.get("counts", {})
  if manifest.get("finished") and not counts.get("prompts"):
    reasons = [r.get("reason") for src in manifest.get("sources", []) for r in src.get("bad_row_list", [])[:3]]
    raise RuntimeError(f"synthesis: every one of {counts.get('prompts_in')} prompts was rejected, e.g. {reasons}; "
                       f"see {os.path.join(run.paths.samples, 'manifest.json')}")
  log.info("synthesize: %s prompts -> %s samples (%s kept, %s tokens) in %s [%.0fs]", counts.get("prompts"),
           counts.get("samples"), counts.get("kept"), counts.get("tokens"), run.paths.samples, time.time() - t0)
  run.results["synthesize"] = {"dir": run.paths.samples, "counts": counts}
  return manifest


def train(run: Run) -> dict:
  """SFT of the base model on the kept samples (`train.run_sft`) -> workdir/train, workdir/export."""
  import jax

  from ssd_jax.train.trainer import run_sft

  base = base_model(run)
  tc, dc = train_settings(run.config, sinks=base.cfg.attention_sinks)
  if run.config.train.attention == "auto":
    from ssd_jax.models.fused_attention import auto_attention
    log.info("train.attention auto -> %s: %s", *auto_attention(jax.default_backend(), run.config.train.packing,
                                                                base.cfg.attention_sinks))
  t0 = time.time()
  several = jax.process_count() > 1
  if several:
    # Sampling used per-process meshes; training needs the params on the global one. The sampling copy (the whole
    # model over one host's chips: 35 GiB per v5p chip for Qwen3-30B-A3B) would sit beside the train state, so it
    # is dropped here (evaluation reloads it), and the global copy is donated to the state.
    run.base, base = None, dataclasses.replace(base, params=None)
    params = load_base(run, run.sharding.mesh).params
  else:
    params = base.params  # also the base model that evaluation scores: the state copies it
  bar = _progress(total=tc.total_steps, desc="train", unit="step", compiling=True)
  try:
    trainer, stats = run_sft(
        base.cfg, params, run.paths.samples, base.tokenizer, dc, tc, run.paths.train,
        export_dir=run.paths.export if run.config.train.export else None,
        tokenizer_dir=base.source if _is_hf_dir(base.source) else None, mesh=run.sharding.mesh,
        on_step=lambda step, metrics: _train_progress(bar, step, metrics), donate_params=several,
        **dict(synthesis_config(run.config).chat_template_kwargs))  # targets rendered as the prompts were
  finally:
    bar.close()
  run.tuned_params = trainer.state.params
  if several:  # sampling meshes are per process: gather the trained params onto this one's
    from jax.experimental import multihost_utils

    from ssd_jax.models.transformer import param_shardings
    host = multihost_utils.process_allgather(run.tuned_params, tiled=True)
    run.tuned_params = jax.device_put(host, param_shardings(base.cfg, run.local_sharding.mesh,
                                                            run.local_sharding.rules))
  curve = _read_metrics(os.path.join(run.paths.train, "metrics.jsonl"))
  export = run.paths.export if run.config.train.export else None
  log.info("train: %d steps (loss %s -> %s) -> %s, export %s [%.0fs]", int(trainer.state.step),
           curve[0]["loss"] if curve else None, curve[-1]["loss"] if curve else None, run.paths.train,
           export or "off", time.time() - t0)
  run.results["train"] = {"dir": run.paths.train, "steps": int(trainer.state.step), "export": export,
                          "data": stats.summary()}
  return run.results["train"]


def ssd_checkpoint_steps(config: config_dict.ConfigDict) -> tuple[int, ...]:
  """The training steps scored besides the final SSD model (`eval.ssd.checkpoints`), each as model `ssd@<step>`."""
  return tuple(sorted({int(s) for s in config.eval.ssd.checkpoints} - {int(config.train.total_steps)}))


def _eval_models(run: Run):
  """(name, sampling settings, temperatures, a function giving (cfg, params)) for each model to score."""
  from ssd_jax.train.trainer import restore_params

  config = run.config
  for name in config.eval.models:
    if name == "ssd":
      for step in ssd_checkpoint_steps(config):
        yield (f"ssd@{step}", eval_sampling(config, "ssd"), config.eval.ssd.temperatures,
               lambda step=step: (base_model(run).cfg, restore_params(
                   run.paths.train, step, base_model(run).cfg, run.local_sharding.mesh, run.local_sharding.rules)))
    yield (name, eval_sampling(config, name), config.eval[name].temperatures,
           (lambda: (base_model(run).cfg, base_model(run).params)) if name == "base" else lambda: tuned_model(run))


def evaluate(run: Run) -> dict:
  """Samples and sandbox-judges the base and/or SSD model at each T_eval -> workdir/eval/<model>.

  `eval.ssd.checkpoints` adds the SSD model at earlier training steps as models `ssd@<step>` (the paper scores
  every saved checkpoint and keeps the best, ssd_paper.md §2.3); the report shows the checkpoint x T_eval table.
  """
  from ssd_jax import coordination
  from ssd_jax.eval.evaluate import evaluate_sweep
  from ssd_jax.eval.sandbox import Sandbox
  from ssd_jax.sampling.engine import Engine

  config = run.config
  problems = eval_problems(config)
  sandbox = Sandbox(sandbox_config(config))
  settings = eval_settings(config)
  base = base_model(run)
  out = {}
  try:
    # The paper decodes base models with their recommended settings (Table 4) and SSD models with Table 3's.
    for name, sampling, temperatures, weights in _eval_models(run):
      cfg, params = weights()
      engine = Engine(params, cfg, base.tokenizer.stop_ids, synthesis_config(config).engine, run.local_sharding)
      t0 = time.time()
      bars, compiled = {}, []

      def progress(phase: str, done: int, total: int, name=name) -> None:
        unit = "sample" if phase == "sample" else "program"
        if phase == "judge" and "sample" in bars:  # sampling of this temperature is over
          bars.pop("sample").close()
        bar = bars.get(phase)
        if bar is None or bar.total != total or done < bar.n:
          if bar is not None:
            bar.close()
          first = phase == "sample" and not compiled  # the engine compiles on its first call
          compiled.extend([True] if first else [])
          bar = bars[phase] = _progress(total=total, desc=f"evaluate {name}: {phase}", unit=unit, compiling=first)
        _advance(bar, done, total)

      out[name] = evaluate_sweep(engine, base.tokenizer, problems, sandbox, tuple(temperatures),
                                 sampling=sampling, settings=settings, out_dir=os.path.join(run.paths.eval, name),
                                 tag=name, log=log.info, process_index=coordination.process_index(),
                                 process_count=coordination.process_count(), progress=progress)
      for bar in bars.values():
        bar.close()
      log.info("evaluate %s: best pass@1 %.4f at T %g over %d problems -> %s [%.0fs]", name,
               out[name]["best"].get("pass@1", 0.0), out[name]["best"]["temperature"], len(problems),
               os.path.join(run.paths.eval, name), time.time() - t0)
  finally:
    sandbox.close()
  run.results["evaluate"] = out
  return out


def diagnostic_sequences(run: Run) -> tuple[list[list[int]], list[int]]:
  """The kept SSD samples as (token ids, prompt length): the responses the Fig. 6 diagnostics score."""
  import random

  from ssd_jax.data.synthesis import read_samples
  from ssd_jax.train.pipeline import tokenize_conversation

  tok = base_model(run).tokenizer
  rows = list(read_samples(run.paths.samples))
  random.Random(run.config.seed).shuffle(rows)  # max_positions then spreads over many prompts
  template_kwargs = dict(synthesis_config(run.config).chat_template_kwargs)  # rendered as the prompts were
  sequences, prompt_lens = [], []
  for row in rows:
    ids, mask, _ = tokenize_conversation(tok, row["messages"], **template_kwargs)
    first = int(mask.argmax()) if mask.any() else len(ids)
    if first < len(ids):
      sequences.append(ids.tolist())
      prompt_lens.append(first)
  return sequences, prompt_lens


def analyze(run: Run) -> dict:
  """The Fig. 6 diagnostics (base vs SSD) and the report -> workdir/report.md, summary.json."""
  from ssd_jax.analysis.report import write_report
  from ssd_jax.coordination import is_coordinator

  a = run.config.analysis
  ready = os.path.exists(os.path.join(run.paths.samples, "manifest.json")) and (
      run.tuned_params is not None or os.path.exists(os.path.join(run.paths.export, "config.json")))
  if a.diagnostics and ready and is_coordinator():
    from ssd_jax.analysis.diagnostics import run_diagnostics

    t0 = time.time()
    base = base_model(run)
    sequences, prompt_lens = diagnostic_sequences(run)
    ssd_decoding = eval_sampling(run.config, "ssd").sampling
    table = run_diagnostics({"base": (base.cfg, base.params), "ssd": tuned_model(run)}, sequences, prompt_lens,
                            os.path.join(run.paths.workdir, "analysis"), temperatures=tuple(a.temperatures),
                            top_k=ssd_decoding.top_k, top_p=ssd_decoding.top_p, max_positions=a.max_positions)
    log.info("analyze: Fig. 6 diagnostics over %d positions -> %s [%.0fs]",
             table["models"]["base"]["positions"], os.path.dirname(table["json"]), time.time() - t0)
  summary = write_report(run.paths.workdir, run.config)
  log.info("analyze: report -> %s", os.path.join(run.paths.workdir, "report.md"))
  run.results["analyze"] = {"report": os.path.join(run.paths.workdir, "report.md")}
  return summary


STAGES = {"synthesize": synthesize, "train": train, "evaluate": evaluate, "analyze": analyze}


# -- helpers -----------------------------------------------------------------------------------------------------------

def _train_progress(bar, step: int, metrics: dict | None) -> None:
  if metrics is None and step == bar.n:  # before the first step of this call: it compiles the train step
    bar.set_postfix_str(f"compiling the train step (step {step + 1} includes it)")
    return
  bar.n = step
  if metrics:
    bar.set_postfix(loss=f"{metrics['loss']:.4f}", tok_s=f"{metrics.get('tokens_per_s', 0):.0f}", refresh=False)
  elif "compiling" in (bar.postfix or ""):
    bar.set_postfix_str("", refresh=False)
  bar.refresh()


def _advance(bar, done: int, total: int) -> None:
  """Moves a bar to `done`; the first move also clears its "compiling" note."""
  if "compiling" in (bar.postfix or ""):
    bar.set_postfix_str("", refresh=False)
  bar.total = total
  bar.update(done - bar.n)


def _is_hf_dir(path: str | None) -> bool:
  return bool(path) and os.path.isfile(os.path.join(path, "tokenizer.json"))


def _read_metrics(path: str) -> list[dict]:
  return read_jsonl(path, torn="drop", missing_ok=True)


def _progress(compiling: bool = False, **kwargs):
  """A tqdm bar on stderr; `compiling` says the first update waits for jit compilation (minutes on a large model)."""
  from tqdm import tqdm
  bar = tqdm(file=sys.stderr, dynamic_ncols=True, **kwargs)
  if compiling:
    bar.set_postfix_str("compiling (the first update includes jit compilation)")
  return bar
