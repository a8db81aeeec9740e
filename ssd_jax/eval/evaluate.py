"""Evaluation runs: sample n completions per problem at each T_eval, judge them in the sandbox, score pass@k.

Outputs, per run tag (e.g. "base_T0.7") in `out_dir`:
- `<tag>.samples.jsonl`: one line per problem {"problem_id", "completions": [n texts], "finish_reasons", "seed",
  "random_stream"}; a complete file drawn with the same seed and stream scheme is reused on a rerun (answer i of
  problem p comes from the stream (seed, p, i) whatever else is sampled, so a partial file is simply regenerated);
- `<tag>.results.jsonl`: one line per (problem, sample) {problem_id, sample_index, verdict, tests_passed,
  tests_total, wall_s, isolation, details}, appended batch by batch and fsync'ed; a rerun judges only what is
  missing (a torn last line from a kill is dropped; a verdict whose `details.completion_sha256` is not the
  current text's is judged again). A SANDBOX_ERROR (the sandbox could not run the program) is no
  verdict on the sample: it is judged again, up to `EvalSettings.sandbox_attempts` times in a run and again on
  every resume, and scoring refuses while any is left (`passk.UnjudgedSamplesError`);
- `<tag>.summary.json`: pass@k overall / per difficulty / per platform, verdict counts, the no-code fraction, the
  execution mode, timeout and isolation level, the sampling settings and the exact problem-id list.

HumanEval is scored the usual way for chat models: the last fenced block of the answer is the completion that
follows the prompt (a full `def` re-defines the stub); an answer without a fence is used as raw text.

A harmony model's (GPT-OSS) completions are stored with their channel markers; the answer that is graded is the
final channel (`models.harmony.graded_text`; none: NO_CODE), never the reasoning.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

from ssd_jax.data.problems import Problem
from ssd_jax.data.prompts import render_prompts
from ssd_jax.data.sources import prompt_record
from ssd_jax.eval.extract import extract_code
from ssd_jax.models import harmony
from ssd_jax.eval.judge import SampleResult, completion_digest, judge_many
from ssd_jax.eval.passk import score
from ssd_jax.eval.sandbox import SandboxError
from ssd_jax.files import read_jsonl, write_atomic, write_json_atomic
from ssd_jax.sampling.sampler import SamplingConfig

__all__ = ["EvalSampling", "EvalSettings", "evaluate_sweep", "humaneval_completion", "judge_samples",
           "sample_completions", "score_samples", "summarize"]


# Date windows scored beside the whole selection (inclusive, midnight ends, as LCB filters).
REPORT_WINDOWS = {"2025-02-01..2025-05-01": (datetime.datetime(2025, 2, 1), datetime.datetime(2025, 5, 1))}


@dataclasses.dataclass(frozen=True)
class EvalSampling:
  """How completions are drawn for evaluation: n per problem (LCB's harness: 10) with `sampling` (the operator;
  the T_eval sweep replaces its temperature), prompts rendered like synthesis's."""

  sampling: SamplingConfig = SamplingConfig(temperature=0.7, top_k=20, top_p=0.8, max_new_tokens=4096)
  n: int = 10
  seed: int = 0
  prompt_style: str = "lcb"
  system_message: str | None = None
  chat_template_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def summary_json(self) -> dict[str, Any]:
    """The summaries' `sampling` record: the operator's fields at the top level, beside n, seed and the prompt."""
    out = dataclasses.asdict(self)
    out.update(out.pop("sampling"))
    out["chat_template_kwargs"] = dict(self.chat_template_kwargs)
    return out


@dataclasses.dataclass(frozen=True)
class EvalSettings:
  """How completions are judged and scored."""

  mode: str = "lcb_compat"  # LCB's own grading; "real_io" (a real stdin per test) or "plain" (programs.py)
  timeout_s: float = 6.0  # per test, LCB's default
  ks: tuple[int, ...] = (1, 5)
  judge_batch: int = 64  # samples judged between appends to the results file (the resume granularity)
  sandbox_attempts: int = 3  # runs of a sample whose run ended in SANDBOX_ERROR, per evaluation run


def humaneval_completion(text: str) -> str:
  """The text appended to a HumanEval prompt: the last fenced block, or the raw answer when it has no fence."""
  extraction = extract_code(text)
  return extraction.code if extraction.fence_count >= 2 else text


def _result_from_json(row: Mapping[str, Any]) -> SampleResult:
  return SampleResult(row["problem_id"], int(row["sample_index"]), row["verdict"], int(row["tests_passed"]),
                      int(row["tests_total"]), float(row["wall_s"]), row["isolation"], row.get("details", {}))


def read_results(path: str) -> dict[tuple[str, int], SampleResult]:
  """A results file's verdicts by (problem id, sample index); a sample judged again keeps its latest line."""
  rows = read_jsonl(path, torn="drop", missing_ok=True)  # appended batch by batch: a kill may tear the last line
  return {(r.problem_id, r.sample_index): r for r in map(_result_from_json, rows)}


def _append_results(path: str, results: Sequence[SampleResult]) -> None:
  with open(path, "a") as f:
    f.writelines(json.dumps(r.to_json()) + "\n" for r in results)
    f.flush()
    os.fsync(f.fileno())


def check_environment(sandbox, mode: str, problem_modes: Iterable[str]) -> None:
  """`lcb_compat` promises LiveCodeBench's verdicts on stdin and call-based problems, which need LCB's environment:
  numpy importable by programs (LCB's grading process imports it). Raises `SandboxError` with the fix when the
  sandbox lacks it."""
  if mode != "lcb_compat" or all(m == "humaneval" for m in problem_modes):
    return
  environment = getattr(sandbox, "environment", {})
  if not environment.get("numpy"):
    raise SandboxError(
        f"mode 'lcb_compat' gives LiveCodeBench's verdicts only in its environment, where programs can import "
        f"numpy; the sandbox's Python ({environment.get('python', 'unknown version')}) cannot. Install it: "
        "`apt-get install python3-numpy` (or pick --config.eval.mode=real_io or plain, whose numbers are not LCB's)")


def judge_samples(problems: Sequence[Problem], samples: Mapping[str, Sequence[str]], sandbox, *,
                  settings: EvalSettings = EvalSettings(), results_path: str | None = None,
                  progress: Callable[[int, int], None] | None = None) -> list[SampleResult]:
  """Judges every sample of every problem, resuming from (and appending to) `results_path`; in problem order.

  Samples with a verdict in the file are not run again; those without one, or whose last run was a SANDBOX_ERROR,
  are, and a SANDBOX_ERROR is retried up to `settings.sandbox_attempts` runs in all. Every run is appended to the
  file, so the SANDBOX_ERRORs left at the end are on record and are judged again by the next resume.
  """
  by_id = {p.id: p for p in problems}
  missing = sorted(set(by_id) - set(samples))
  if missing:
    raise ValueError(f"no samples for problems {missing[:10]} ({len(missing)} in all)")
  check_environment(sandbox, settings.mode, [p.mode for p in problems])
  judged = {(p.id, i): humaneval_completion(text) if p.mode == "humaneval" else text
            for p in problems for i, text in enumerate(samples[p.id])}
  done: dict[tuple[str, int], SampleResult] = {}
  if results_path:
    os.makedirs(os.path.dirname(results_path) or ".", exist_ok=True)
    done = {key: r for key, r in read_results(results_path).items()
            if key in judged and r.verdict != "SANDBOX_ERROR"
            and r.details.get("completion_sha256") == completion_digest(judged[key])}
    # Rewrite without a torn tail, superseded runs or verdicts on other texts, so appends start on a line boundary
    # (atomically: a kill during the rewrite must not lose the verdicts already paid for).
    write_atomic(results_path, "".join(json.dumps(r.to_json()) + "\n" for r in done.values()))
  todo = [(by_id[pid], text, index) for (pid, index), text in judged.items() if (pid, index) not in done]
  total = sum(len(samples[p.id]) for p in problems)
  for _ in range(settings.sandbox_attempts):
    retry = []
    for start in range(0, len(todo), settings.judge_batch):
      batch = todo[start:start + settings.judge_batch]
      results = judge_many(batch, sandbox, mode=settings.mode, timeout_s=settings.timeout_s)
      for item, r in zip(batch, results):
        done[(r.problem_id, r.sample_index)] = r
        if r.verdict == "SANDBOX_ERROR":
          retry.append(item)
      if results_path:
        _append_results(results_path, results)
      if progress is not None:
        progress(len(done), total)
    todo = retry
    if not todo:
      break
  return [done[(p.id, i)] for p in problems for i in range(len(samples[p.id]))]


def summarize(results: Sequence[SampleResult], problems: Sequence[Problem], *, settings: EvalSettings, isolation: str,
              tag: str, extra: Mapping[str, Any] | None = None,
              environment: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """pass@k (overall, per difficulty and platform) plus what produced the numbers."""
  summary = score(results, problems, settings.ks)
  # "LiveCodeBench v6" is also read as the 2025-02..2025-05 window (code_eval.md §2.4): always report it too.
  dated = [p for p in problems if p.contest_date is not None]
  if dated:
    summary["windows"] = {}
    for name, (start, end) in REPORT_WINDOWS.items():
      inside = [p for p in dated if start <= p.contest_date <= end]
      ids = {p.id for p in inside}
      if inside:
        window = score([r for r in results if r.problem_id in ids], inside, settings.ks)
        summary["windows"][name] = {"n_problems": window["n_problems"], "overall": window["overall"],
                                    "by_difficulty": window["by_difficulty"], "problem_ids": sorted(ids)}
  no_code = sum(r.verdict == "NO_CODE" for r in results)
  summary.update({
      "tag": tag, "mode": settings.mode, "timeout_s": settings.timeout_s, "isolation": isolation,
      "environment": environment,
      "no_code_fraction": no_code / max(len(results), 1), "problem_ids": [p.id for p in problems],
      "judge_wall_s": sum(r.wall_s for r in results), **dict(extra or {})})
  return summary


def score_samples(problems: Sequence[Problem], samples: Mapping[str, Sequence[str]], sandbox, *,
                  settings: EvalSettings = EvalSettings(), out_dir: str | None = None, tag: str = "eval",
                  extra: Mapping[str, Any] | None = None,
                  progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
  """Judges every sample (`judge_samples`) and returns (and writes, with `out_dir`) the summary.

  Args:
    samples: problem id -> model answers (raw text; HumanEval answers go through `humaneval_completion`).
    sandbox: a `Sandbox` (anything with `run_many` and `isolation`).
    extra: merged into the summary (e.g. the sampling settings).
  """
  results_path = os.path.join(out_dir, f"{tag}.results.jsonl") if out_dir else None
  results = judge_samples(problems, samples, sandbox, settings=settings, results_path=results_path,
                          progress=progress)
  summary = summarize(results, problems, settings=settings, isolation=sandbox.isolation, tag=tag, extra=extra,
                      environment=getattr(sandbox, "environment", None))
  if out_dir:
    write_json_atomic(os.path.join(out_dir, f"{tag}.summary.json"), summary)
  return summary


def sample_completions(engine, tokenizer, problems: Sequence[Problem], sampling: EvalSampling, *,
                       max_prompt_tokens: int | None = None, progress: Callable[[int, int], None] | None = None
                       ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
  """n answers per problem from `engine` -> ({problem id: texts}, {problem id: finish reasons}).

  Prompts are rendered exactly as for synthesis (`data.prompts`), through the model's chat template. A prompt
  that does not fit is an error here (an evaluation never drops problems silently). Answer i of problem p draws
  from the random stream (sampling.seed, stream_id_of(p.id), i), so it does not depend on which other problems
  are in `problems`, on their order, or on the process that samples p.
  """
  from ssd_jax.sampling.engine import Request, stream_id_of

  rendered = render_prompts([prompt_record(p) for p in problems], tokenizer, style=sampling.prompt_style,
                            system_message=sampling.system_message, max_prompt_tokens=max_prompt_tokens,
                            chat_template_kwargs=sampling.chat_template_kwargs)
  if len(rendered) != len(problems):
    dropped = sorted({p.id for p in problems} - {r.record.id for r in rendered})
    raise ValueError(f"prompts too long for the context: {dropped[:10]} ({len(dropped)} in all)")
  requests = [Request(r.ids, n=sampling.n, sampling=sampling.sampling, stream_id=stream_id_of(r.record.id))
              for r in rendered]
  out = engine.generate(requests, seed=sampling.seed, progress=progress)
  stop = set(int(s) for s in tokenizer.stop_ids)
  texts, reasons = {}, {}
  for problem, row in zip(problems, out):
    texts[problem.id] = [harmony.decode_completion(tokenizer, c.tokens[:-1] if c.tokens and c.tokens[-1] in stop
                                                   else c.tokens) for c in row]
    reasons[problem.id] = [c.finish_reason for c in row]
  return texts, reasons


def _load_samples(path: str, problems: Sequence[Problem], sampling: EvalSampling, random_stream: str
                  ) -> dict[str, list[str]] | None:
  """The answers of a complete samples file drawn with this seed and random-stream scheme, else None (resample)."""
  rows = {row["problem_id"]: row for row in read_jsonl(path, torn="drop", missing_ok=True)}
  if all(p.id in rows and len(rows[p.id]["completions"]) == sampling.n and rows[p.id].get("seed") == sampling.seed
         and rows[p.id].get("random_stream") == random_stream for p in problems):
    return {p.id: list(rows[p.id]["completions"]) for p in problems}
  return None


def evaluate_sweep(engine, tokenizer, problems: Sequence[Problem], sandbox, temperatures: Sequence[float], *,
                   sampling: EvalSampling = EvalSampling(), settings: EvalSettings = EvalSettings(),
                   out_dir: str, tag: str = "eval", max_prompt_tokens: int | None = None,
                   log: Callable[[str], None] = print,
                   process_index: int = 0, process_count: int = 1,
                   progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
  """Samples and scores the problems at every T_eval; returns {"runs": {T: summary}, "best": {...}}.

  Each temperature is its own tag (`<tag>_T<T>`), so a killed sweep resumes at the first unfinished one. With
  several processes, process i samples and judges problems[i::process_count] into its own `.p<i>of<n>` files;
  after a barrier, process 0 scores them all and writes the summary (the others return it too, read back). The
  barrier (`coordination.barrier`) waits as long as the slowest process's judging takes, up to its timeout.
  `progress(phase, done, total)` reports sampling ("sample") and judging ("judge").
  """
  from ssd_jax.coordination import barrier
  from ssd_jax.sampling.engine import RANDOM_STREAM

  os.makedirs(out_dir, exist_ok=True)
  share = list(problems[process_index::process_count])
  part = "" if process_count == 1 else f".p{process_index}of{process_count}"
  runs = {}
  for temperature in temperatures:
    run_tag = f"{tag}_T{temperature:g}"
    run_sampling = dataclasses.replace(sampling, sampling=dataclasses.replace(sampling.sampling,
                                                                              temperature=float(temperature)))
    samples_path = os.path.join(out_dir, f"{run_tag}{part}.samples.jsonl")
    texts = _load_samples(samples_path, share, run_sampling, RANDOM_STREAM)
    if texts is None:
      texts, reasons = sample_completions(
          engine, tokenizer, share, run_sampling, max_prompt_tokens=max_prompt_tokens,
          progress=(lambda done, total: progress("sample", done, total)) if progress else None)
      write_atomic(samples_path, "".join(
          json.dumps({"problem_id": p.id, "completions": texts[p.id], "finish_reasons": reasons[p.id],
                      "seed": run_sampling.seed, "random_stream": RANDOM_STREAM}) + "\n" for p in share))
    # A harmony model's (GPT-OSS) answer is its final channel; the samples file keeps the whole completion.
    answers = {pid: [harmony.graded_text(tokenizer, text) for text in row] for pid, row in texts.items()}
    results = judge_samples(share, answers, sandbox, settings=settings,
                            results_path=os.path.join(out_dir, f"{run_tag}{part}.results.jsonl"),
                            progress=(lambda done, total: progress("judge", done, total)) if progress else None)
    summary_path = os.path.join(out_dir, f"{run_tag}.summary.json")
    extra = {"sampling": run_sampling.summary_json(), "process_count": process_count}
    if process_count > 1:
      barrier(f"ssd_jax.eval.{run_tag}.judged")
      if process_index == 0:
        results = [r for i in range(process_count)
                   for r in read_results(os.path.join(out_dir, f"{run_tag}.p{i}of{process_count}.results.jsonl")
                                         ).values()]
        order = {p.id: k for k, p in enumerate(problems)}
        results.sort(key=lambda r: (order[r.problem_id], r.sample_index))
    if process_index == 0:
      summary = summarize(results, problems, settings=settings, isolation=sandbox.isolation, tag=run_tag,
                          extra=extra, environment=getattr(sandbox, "environment", None))
      write_json_atomic(summary_path, summary)
    if process_count > 1:
      barrier(f"ssd_jax.eval.{run_tag}.summarized")
      with open(summary_path) as f:
        summary = json.load(f)
    runs[f"{temperature:g}"] = summary
    overall = ", ".join(f"{k} {v:.4f}" for k, v in summary["overall"].items())
    log(f"{run_tag}: {overall} ({summary['n_problems']} problems x {run_sampling.n}; results in "
        f"{os.path.join(out_dir, run_tag)}.*)")
  best_t = max(runs, key=lambda t: runs[t]["overall"].get("pass@1", 0.0))
  return {"runs": runs, "best": {"temperature": float(best_t), **runs[best_t]["overall"]}}
