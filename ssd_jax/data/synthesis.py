"""SSD data synthesis: sample the frozen model once per prompt and write SFT-ready JSONL shards, resumably.

Output layout (`out_dir`):
- `samples-00000.jsonl`, ...: one line per sample, `{"id", "messages": [system?, user, assistant], "finish_reason",
  "num_tokens", "prompt_tokens", "sample_index", "source", "kept", "filter_reason"}`. The assistant turn is the raw
  decoded sample (thinking traces included, nothing stripped): the format ml-ssd, TRL and Megatron-Bridge read. A
  harmony model's (GPT-OSS) turn is `{"thinking": analysis channel, "content": final channel}`, the messages TRL
  reads for it, which its template renders back to exactly the sampled tokens.
  Degenerate samples stay in the shards with `kept: false` and the reason, so nothing is lost; trainers read
  `kept` rows (`read_samples`).
- `plan.json`: what the shards were planned from (sampling config, random stream scheme, prompt digest); a rerun
  with a different plan is refused instead of silently mixing two runs.
- `manifest.json`: written last, by process 0: config, counts (prompts, bad rows with ids, samples, kept, filtered
  by reason, tokens), shard list, `finished: true`.

Resumption. Shard k is a fixed slice of the ordered prompt list. Every prompt samples from its own random stream,
named by its id (`stream_id_of(prompt id)`, under the run seed), so a sample's text depends only on its prompt, its
sample index and the run seed, never on the shard size, the other prompts or the process that samples it: a
resumed run samples exactly what an uninterrupted one would. A shard is committed by writing
`samples-k.jsonl.tmp`, fsync, then an atomic no-overwrite link to the final name; after `kill -9` a rerun validates
every committed shard, discards torn temp files and samples only the missing shards. A committed file is never
rewritten.

Multi-host. Shard k belongs to process `k % process_count`; every process samples its own shards on its own
(process-local) mesh and writes them to the shared `out_dir`. Shard indices are global, so names never collide and
the layout does not depend on the process count (a rerun on a different number of hosts resumes cleanly). After a
barrier, process 0 alone writes the manifest.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import json
import logging
import os
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax

from ssd_jax.coordination import barrier
from ssd_jax.data.prompts import PROMPT_STYLES, RenderedPrompt, render_prompts
from ssd_jax.data.sources import PromptRecord, SourceReport, check_unique_ids
from ssd_jax.files import JsonlError, read_jsonl, write_atomic
from ssd_jax.models import harmony
from ssd_jax.models.config import ModelConfig
from ssd_jax.models.loader import LoadedModel
from ssd_jax.models.transformer import NO_SHARDING, Sharding
from ssd_jax.sampling.engine import FINISH_LENGTH, RANDOM_STREAM, Engine, EngineConfig, Request, stream_id_of
from ssd_jax.sampling.sampler import SamplingConfig
from ssd_jax.settings import check_fields, from_mapping

__all__ = ["DegeneracyRule", "MANIFEST", "PLAN", "SynthesisConfig", "SynthesisError", "classify_sample",
           "max_prompt_tokens", "read_samples", "shard_name", "synthesize"]

log = logging.getLogger(__name__)

MANIFEST, PLAN = "manifest.json", "plan.json"
_SHARD_PREFIX, _SHARD_SUFFIX = "samples-", ".jsonl"


class SynthesisError(RuntimeError):
  """The output directory is inconsistent with this run (different plan, corrupt shard)."""


@dataclasses.dataclass(frozen=True)
class DegeneracyRule:
  """The paper's "minimal degeneracy filter" (empty responses, single-line stubs); the exact rule is not given
  (ssd_paper.md §1.4, §8.6), so it is configurable. TRL's rule is `min_lines=2, stub_max_chars=10`; ml-ssd's MLX
  port uses `stub_max_chars=80`.

  Attributes:
    min_lines: A sample with fewer non-blank lines is a stub ...
    stub_max_chars: ... when also shorter than this many stripped characters (None: regardless of length).
    require_code_block: Also drop samples without a ``` fence.
    drop_truncated: Also drop samples that hit max_new_tokens (the paper keeps raw outputs: off).
  """

  min_lines: int = 2
  stub_max_chars: int | None = None
  require_code_block: bool = False
  drop_truncated: bool = False


def classify_sample(text: str, finish_reason: str, rule: DegeneracyRule) -> str | None:
  """None if the sample is kept, else the filter reason: "empty", "truncated", "stub" or "no_code_block"."""
  stripped = text.strip()
  if not stripped:
    return "empty"
  if rule.drop_truncated and finish_reason == FINISH_LENGTH:
    return "truncated"
  lines = sum(1 for line in stripped.splitlines() if line.strip())
  if lines < rule.min_lines and (rule.stub_max_chars is None or len(stripped) < rule.stub_max_chars):
    return "stub"
  if rule.require_code_block and "```" not in stripped:
    return "no_code_block"
  return None


@dataclasses.dataclass(frozen=True)
class SynthesisConfig:
  """Sampling, prompting, filtering and output settings of one synthesis run.

  The paper's recipe is one sample per prompt (n_per_prompt=1) at T_train with top-k/top-p truncation
  (ssd_paper.md §1.1, §2.2). `engine` only shapes the computation (slots, cache, buckets), never the samples.
  """

  sampling: SamplingConfig = SamplingConfig(max_new_tokens=2048)
  n_per_prompt: int = 1
  seed: int = 0
  shard_size: int = 256  # prompts per output shard (the unit of resumption)
  prompt_style: str = "ssd"
  system_message: str | None = None
  chat_template_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # e.g. enable_thinking
  degeneracy: DegeneracyRule = DegeneracyRule()
  on_bad_row: str = "skip"
  engine: EngineConfig = EngineConfig()

  def __post_init__(self):
    if self.n_per_prompt < 1 or self.shard_size < 1:
      raise ValueError("n_per_prompt and shard_size must be >= 1")
    if not 0 <= self.seed < 2 ** 32:
      raise ValueError(f"seed must be in [0, 2**32) (the engine's seed), got {self.seed}")
    if self.prompt_style not in PROMPT_STYLES:
      raise ValueError(f"unknown prompt_style {self.prompt_style!r}; expected one of {PROMPT_STYLES}")
    if self.on_bad_row not in ("skip", "error"):
      raise ValueError(f"on_bad_row must be 'skip' or 'error', got {self.on_bad_row!r}")

  @classmethod
  def from_config(cls, sample: Mapping[str, Any], on_bad_row: str = "skip") -> SynthesisConfig:
    """From `config.sample`: the operator fields make the `SamplingConfig`, `degeneracy` and `engine` their
    settings; a key nothing reads is refused."""
    fields = dict(sample)
    operator_names = [f.name for f in dataclasses.fields(SamplingConfig)]
    check_fields(fields, operator_names + [f.name for f in dataclasses.fields(cls) if f.name != "sampling"],
                 "sample", cls.__name__)
    operator = {name: fields.pop(name) for name in operator_names if name in fields}
    return from_mapping(
        cls, fields, "sample", sampling=SamplingConfig.from_config(operator),
        degeneracy=from_mapping(DegeneracyRule, fields.get("degeneracy", {}), "sample.degeneracy"),
        engine=from_mapping(EngineConfig, fields.get("engine", {}), "sample.engine"),
        system_message=fields.get("system_message") or None,
        chat_template_kwargs=dict(fields.get("chat_template_kwargs", {})), on_bad_row=on_bad_row)

  def sampling_json(self) -> dict[str, Any]:
    """Everything that decides the samples' text or kept flags (the resumption contract); the operator's fields
    at the top level, as plans written before `SamplingConfig` have them."""
    out = dataclasses.asdict(self)
    del out["engine"], out["on_bad_row"]
    out.update(out.pop("sampling"))
    out["chat_template_kwargs"] = dict(self.chat_template_kwargs)
    return out

  def to_json(self) -> dict[str, Any]:
    out = self.sampling_json()
    out["on_bad_row"] = self.on_bad_row
    out["engine"] = dataclasses.asdict(self.engine)
    return out


def max_prompt_tokens(cfg: ModelConfig, ecfg: EngineConfig, max_new_tokens: int) -> int:
  """The longest prompt that leaves room for max_new_tokens in the model's context and the engine's sequences."""
  limit = min(ecfg.max_seq_len, cfg.max_position_embeddings) - max_new_tokens
  if limit <= 0:
    raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt (engine max_seq_len "
                     f"{ecfg.max_seq_len}, model context {cfg.max_position_embeddings})")
  return limit


def shard_name(index: int) -> str:
  return f"{_SHARD_PREFIX}{index:05d}{_SHARD_SUFFIX}"


def _prompt_digest(prompts: Sequence[RenderedPrompt]) -> str:
  h = hashlib.sha256()
  for p in prompts:
    h.update(json.dumps([p.record.id, p.ids]).encode())
  return h.hexdigest()


def _commit(path: str, data: bytes, overwrite: bool = False) -> None:
  """Writes `data` to `path` atomically; never over an existing file unless `overwrite`."""
  try:
    write_atomic(path, data, overwrite=overwrite)
  except FileExistsError as e:
    raise SynthesisError(f"{path} already exists; refusing to overwrite it") from e


def _read_shard(path: str) -> list[dict]:
  try:
    return read_jsonl(path, torn="error")  # committed whole: a torn or invalid line is corruption
  except JsonlError as e:
    raise SynthesisError(f"{e} (a committed shard)") from e


def _check_shard(path: str, shard: Sequence[RenderedPrompt], n: int) -> list[dict]:
  """A committed shard's rows, after checking they are exactly this plan's samples of `shard`."""
  rows = _read_shard(path)
  expected = [(p.record.id, s) for p in shard for s in range(n)]
  got = [(r.get("id"), r.get("sample_index")) for r in rows]
  if got != expected:
    raise SynthesisError(f"{path}: holds samples {got[:3]}... but this run plans {expected[:3]}...; the directory "
                         "belongs to a different run (use a fresh out_dir)")
  return rows


def _check_plan(out_dir: str, plan: dict[str, Any]) -> None:
  path = os.path.join(out_dir, PLAN)
  data = (json.dumps(plan, indent=1, sort_keys=True) + "\n").encode()
  if os.path.exists(path):
    with open(path, "rb") as f:
      old = json.load(f)
    if old != json.loads(data):
      diff = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
      raise SynthesisError(f"{path}: {out_dir} holds a run with a different plan (differs in {diff}); use a fresh "
                           "out_dir or the original settings")
    return
  _commit(path, data)


def _sample_rows(shard: Sequence[RenderedPrompt], results, rule: DegeneracyRule, tokenizer) -> list[dict]:
  """One row per completion. A harmony completion (GPT-OSS) becomes an assistant turn with `thinking` (its analysis
  channel) and `content` (its final answer), which the degeneracy rule judges; one that is not a single reasoning
  message and a final answer is not kept (`harmony.assistant_message`'s reason) and keeps its raw text."""
  rows = []
  for prompt, completions in zip(shard, results):
    for c in completions:
      text = c.text or ""
      message, reason = harmony.assistant_message(tokenizer, text)
      if message is None:
        message = {"role": "assistant", "content": text}
      else:
        reason = classify_sample(message["content"], c.finish_reason, rule)
      rows.append({"id": prompt.record.id, "messages": prompt.messages + [message],
                   "finish_reason": c.finish_reason, "num_tokens": c.num_tokens, "prompt_tokens": len(prompt.ids),
                   "sample_index": c.sample_index, "source": prompt.record.source, "kept": reason is None,
                   "filter_reason": reason})
  return rows


def _check_local(sharding: Sharding, process_index: int) -> None:
  if sharding.mesh is None:
    return
  foreign = {d.process_index for d in sharding.mesh.devices.flat} - {process_index}
  if foreign:
    raise ValueError(f"synthesis samples each process's share independently, so the mesh must hold this process's "
                     f"devices only; it also spans processes {sorted(foreign)}")


def synthesize(model: LoadedModel, records: Sequence[PromptRecord], out_dir: str, config: SynthesisConfig, *,
               sharding: Sharding = NO_SHARDING, source_reports: Sequence[SourceReport] = (),
               process_index: int | None = None, process_count: int | None = None,
               after_shard: Callable[[int, str], None] | None = None,
               progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
  """Samples every prompt `n_per_prompt` times into `out_dir`, skipping shards a previous run committed.

  Args:
    records: The prompts, in run order (ids unique); the same list on every process and on every rerun.
    sharding: A process-local mesh (multi-host: each process samples its own shards independently).
    source_reports: The loaders' reports; their counts and bad rows go into the manifest.
    process_index, process_count: Default to jax's; shard k is sampled by process k % process_count.
    after_shard: Called with (shard index, path) after each shard this process commits.
    progress: Called with (prompts done, prompts of this process) as each prompt's samples finish (resumed shards
      count as done), for a progress bar.

  Returns:
    The manifest on process 0 (or, while other processes' shards are missing, a summary with `finished: False`);
    on other processes, a summary of the shards they wrote.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  _check_local(sharding, process_index)
  check_unique_ids(records)
  tok = model.tokenizer
  render_report = SourceReport("render", "<render>", config.on_bad_row)
  limit = max_prompt_tokens(model.cfg, config.engine, config.sampling.max_new_tokens)
  prompts = render_prompts(records, tok, style=config.prompt_style, system_message=config.system_message,
                           max_prompt_tokens=limit, chat_template_kwargs=config.chat_template_kwargs,
                           report=render_report)
  shards = [prompts[i:i + config.shard_size] for i in range(0, len(prompts), config.shard_size)]
  os.makedirs(out_dir, exist_ok=True)
  if process_index == 0:
    _check_plan(out_dir, {"sampling": config.sampling_json(), "prompts": len(prompts), "shards": len(shards),
                          "prompt_digest": _prompt_digest(prompts), "stop_ids": list(tok.stop_ids),
                          "random_stream": f"{RANDOM_STREAM}; seed = run seed, stream_id = stream_id_of(prompt id)"})
  engine = None
  written, resumed, discarded = [], [], []
  mine = range(process_index, len(shards), process_count)
  total, done = sum(len(shards[k]) for k in mine), 0
  for k in mine:
    path = os.path.join(out_dir, shard_name(k))
    if os.path.exists(path):
      _check_shard(path, shards[k], config.n_per_prompt)
      resumed.append(k)
      done += len(shards[k])
      if progress is not None:
        progress(done, total)
      continue
    torn = glob.glob(glob.escape(path) + ".tmp*")  # left by a kill before its commit: never part of the output
    for tmp in torn:
      os.unlink(tmp)
    if torn:
      discarded.append(k)
    if engine is None:
      engine = Engine(model.params, model.cfg, tok.stop_ids, config.engine, sharding,
                      decode_text=functools.partial(harmony.decode_completion, tok))
    requests = [Request(p.ids, n=config.n_per_prompt, sampling=config.sampling, stream_id=stream_id_of(p.record.id))
                for p in shards[k]]
    # The engine counts finished samples; a prompt is done when its n are.
    on_samples = None if progress is None else (
        lambda samples, _, base=done: progress(base + samples // config.n_per_prompt, total))
    results = engine.generate(requests, seed=config.seed, progress=on_samples)
    done += len(shards[k])
    rows = _sample_rows(shards[k], results, config.degeneracy, tok)
    _commit(path, b"".join((json.dumps(r, ensure_ascii=False) + "\n").encode() for r in rows))
    written.append(k)
    log.info("shard %d/%d: %d prompts -> %s", k + 1, len(shards), len(shards[k]), path)
    if after_shard is not None:
      after_shard(k, path)
  if process_count > 1:  # the manifest needs every process's shards; a no-op unless jax.distributed runs
    barrier("ssd_jax.data.synthesis.done")
  summary = {"process_index": process_index, "written": written, "resumed": resumed, "discarded_temp": discarded}
  if process_index != 0:
    return summary
  # Without a jax barrier (processes launched independently on a shared filesystem), others may still be running:
  # the manifest waits for a rerun of process 0 once every shard is committed.
  missing = [k for k in range(len(shards)) if not os.path.exists(os.path.join(out_dir, shard_name(k)))]
  if missing:
    log.warning("%d shards (e.g. %s) are not committed yet; rerun process 0 after the others finish to write the "
                "manifest", len(missing), shard_name(missing[0]))
    return {**summary, "finished": False, "missing_shards": missing}
  manifest = _manifest(out_dir, shards, config, records, prompts, [*source_reports, render_report], model.source,
                       process_count)
  manifest["this_run"] = summary
  _commit(os.path.join(out_dir, MANIFEST), (json.dumps(manifest, indent=1) + "\n").encode(), overwrite=True)
  return manifest


def _manifest(out_dir: str, shards: Sequence[Sequence[RenderedPrompt]], config: SynthesisConfig,
              records: Sequence[PromptRecord], prompts: Sequence[RenderedPrompt], reports: Sequence[SourceReport],
              model_source: str, process_count: int) -> dict[str, Any]:
  """Counts over every committed shard (all processes, all runs into `out_dir`)."""
  counts = {"samples": 0, "kept": 0, "tokens": 0, "kept_tokens": 0, "filtered": {}, "finish_reasons": {}}
  shard_list = []
  for k, shard in enumerate(shards):
    path = os.path.join(out_dir, shard_name(k))
    rows = _check_shard(path, shard, config.n_per_prompt)
    kept = sum(r["kept"] for r in rows)
    for r in rows:
      counts["finish_reasons"][r["finish_reason"]] = counts["finish_reasons"].get(r["finish_reason"], 0) + 1
      if not r["kept"]:
        counts["filtered"][r["filter_reason"]] = counts["filtered"].get(r["filter_reason"], 0) + 1
    tokens = sum(r["num_tokens"] for r in rows)
    counts["samples"] += len(rows)
    counts["kept"] += kept
    counts["tokens"] += tokens
    counts["kept_tokens"] += sum(r["num_tokens"] for r in rows if r["kept"])
    shard_list.append({"file": shard_name(k), "shard": k, "prompts": len(shard), "samples": len(rows),
                       "kept": kept, "tokens": tokens, "process_index": k % process_count})
  bad = [b for r in reports for b in r.bad_rows]
  return {
      "finished": True,
      "model": model_source,
      "config": config.to_json(),
      "process_count": process_count,
      "counts": {"prompts_in": len(records), "prompts": len(prompts), "bad_rows": len(bad),
                 "bad_row_ids": [b.id for b in bad], **counts},
      "sources": [r.to_json() for r in reports],
      "shards": shard_list,
  }


def read_samples(out_dir: str, kept_only: bool = True) -> Iterator[dict]:
  """Rows of a finished run, shard by shard (what an SFT data pipeline reads); refuses unfinished runs."""
  path = os.path.join(out_dir, MANIFEST)
  if not os.path.exists(path):
    raise SynthesisError(f"{out_dir}: no {MANIFEST}; the synthesis run has not finished")
  with open(path, encoding="utf-8") as f:
    manifest = json.load(f)
  for shard in manifest["shards"]:
    for row in _read_shard(os.path.join(out_dir, shard["file"])):
      if row["kept"] or not kept_only:
        yield row
