"""Evaluation runs end to end through the real sandbox: scoring files, resume after a kill, the T_eval sweep,
and the selfcheck CLI."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from ssd_jax.eval import evaluate
from ssd_jax.data.problems import Problem, TestCase, load_humaneval_problems
from ssd_jax.eval.passk import UnjudgedSamplesError
from ssd_jax.eval.sandbox import Sandbox, SandboxConfig, SandboxError
from ssd_jax.sampling.engine import Completion
from ssd_jax.sampling.sampler import SamplingConfig


@pytest.fixture(scope="module")
def sandbox():
  box = Sandbox(SandboxConfig(workers=2, wall_timeout_s=8.0))
  yield box
  box.close()


@pytest.fixture(scope="module")
def problems():
  return load_humaneval_problems()[:4]


def _fenced(code: str) -> str:
  return f"Here is the solution:\n```python\n{code}\n```\nIt works."


def _answers(problems):
  """Per problem: [full function in a fence, bare body (no fence), a broken body, prose without code]."""
  out = {}
  for p in problems:
    out[p.id] = [_fenced(p.prompt + p.canonical_solution), p.canonical_solution, "    return None\n",
                 "I cannot solve this."]
  return out


def test_score_samples_counts_and_files(sandbox, problems, tmp_path):
  summary = evaluate.score_samples(problems, _answers(problems), sandbox,
                                   settings=evaluate.EvalSettings(ks=(1, 2, 8)), out_dir=str(tmp_path), tag="t")
  # Two of four answers pass for every problem: pass@1 = 0.5, pass@2 = 1 - C(2,2)/C(4,2) = 5/6; k=8 > n is omitted.
  assert summary["overall"]["pass@1"] == pytest.approx(0.5)
  assert summary["overall"]["pass@2"] == pytest.approx(5 / 6)
  assert summary["ks_omitted"] == [8]
  assert summary["problem_ids"] == [p.id for p in problems] and summary["isolation"] == sandbox.isolation
  rows = [json.loads(line) for line in open(tmp_path / "t.results.jsonl")]
  assert len(rows) == 16 and {(r["problem_id"], r["sample_index"]) for r in rows} == {
      (p.id, i) for p in problems for i in range(4)}
  assert json.load(open(tmp_path / "t.summary.json"))["overall"] == summary["overall"]


def test_resume_judges_only_what_is_missing(sandbox, problems, tmp_path):
  answers = _answers(problems)
  first = evaluate.score_samples(problems, answers, sandbox, out_dir=str(tmp_path), tag="r",
                                 settings=evaluate.EvalSettings(judge_batch=5))
  path = tmp_path / "r.results.jsonl"
  lines = path.read_bytes().splitlines(keepends=True)
  path.write_bytes(b"".join(lines[:7]) + lines[7][:20])  # a kill mid-write: 7 whole lines and a torn one
  judged = []
  real_run_many = sandbox.run_many

  def counting(programs):
    judged.append(len(programs))
    return real_run_many(programs)

  sandbox.run_many = counting
  try:
    again = evaluate.score_samples(problems, answers, sandbox, out_dir=str(tmp_path), tag="r")
  finally:
    del sandbox.run_many
  assert again["overall"] == first["overall"] and again["verdicts"] == first["verdicts"]
  rows = [json.loads(line) for line in open(path)]
  assert len(rows) == 16 and len({(r["problem_id"], r["sample_index"]) for r in rows}) == 16
  # Only the 9 samples without a whole line were judged again (one program each for HumanEval).
  assert sum(judged) == 9


def test_a_verdict_holds_only_for_the_text_it_was_given_for(sandbox, problems, tmp_path):
  answers = _answers(problems)
  first = evaluate.score_samples(problems, answers, sandbox, out_dir=str(tmp_path), tag="h")
  changed = {**answers, problems[0].id: ["    return None\n", *answers[problems[0].id][1:]]}  # sample 0: now wrong
  counting = _failing_sandbox(sandbox, lambda program: False)
  again = evaluate.score_samples(problems, changed, counting, out_dir=str(tmp_path), tag="h")
  assert counting.runs == 1  # only the sample whose text changed
  assert again["per_problem"][problems[0].id]["c"] == first["per_problem"][problems[0].id]["c"] - 1


def _failing_sandbox(sandbox, fail):
  """`sandbox` whose runs of the programs for which `fail(program)` holds end in an infrastructure error."""

  class Failing:
    isolation = sandbox.isolation
    environment = sandbox.environment
    runs = 0

    def run_many(self, programs):
      results = sandbox.run_many(programs)
      Failing.runs += len(programs)
      return [dataclasses.replace(r, outcome="sandbox_error", error="launch failed: EAGAIN", returncode=None,
                                  stdout=b"", stderr=b"", frames=()) if fail(p) else r
              for p, r in zip(programs, results)]

  return Failing()


def test_sandbox_errors_are_retried_never_scored_and_judged_again_on_resume(sandbox, problems, tmp_path):
  answers = _answers(problems)
  reference = evaluate.score_samples(problems, answers, sandbox, out_dir=str(tmp_path), tag="ref")
  # Every program of problems[1] fails to launch: each of its 4 samples is run sandbox_attempts=3 times, then
  # scoring refuses instead of counting them as failures or dropping them.
  target = problems[1]
  broken = _failing_sandbox(sandbox, lambda program: target.test.encode() in b"".join(program.files.values()))
  settings = evaluate.EvalSettings(sandbox_attempts=3)
  with pytest.raises(UnjudgedSamplesError, match="4 samples have no verdict.*EAGAIN"):
    evaluate.score_samples(problems, answers, broken, settings=settings, out_dir=str(tmp_path), tag="r")
  assert broken.runs == 16 + 2 * 4  # 16 samples (one program each), then two retries of the 4 that failed
  path = tmp_path / "r.results.jsonl"
  rows = [json.loads(line) for line in open(path)]
  errors = {(r["problem_id"], r["sample_index"]) for r in rows if r["verdict"] == "SANDBOX_ERROR"}
  assert errors == {(target.id, i) for i in range(4)}
  assert not os.path.exists(tmp_path / "r.summary.json")
  # A resume with a working sandbox judges exactly the SANDBOX_ERROR rows again and scores like the reference.
  working = _failing_sandbox(sandbox, lambda program: False)
  again = evaluate.score_samples(problems, answers, working, out_dir=str(tmp_path), tag="r")
  assert working.runs == 4
  assert again["overall"] == reference["overall"] and again["verdicts"] == reference["verdicts"]
  assert "SANDBOX_ERROR" not in again["verdicts"]
  assert len(evaluate.read_results(str(path))) == 16


def test_a_transient_sandbox_error_is_retried_within_the_run(sandbox, problems, tmp_path):
  seen = set()

  def first_time_only(program):
    key = b"".join(program.files.values())
    failed = key not in seen
    seen.add(key)
    return failed

  flaky = _failing_sandbox(sandbox, first_time_only)
  summary = evaluate.score_samples(problems, _answers(problems), flaky, out_dir=str(tmp_path), tag="t")
  reference = evaluate.score_samples(problems, _answers(problems), sandbox)
  assert summary["overall"] == reference["overall"] and "SANDBOX_ERROR" not in summary["verdicts"]
  rows = [json.loads(line) for line in open(tmp_path / "t.results.jsonl")]
  assert sum(r["verdict"] == "SANDBOX_ERROR" for r in rows) > 0  # the failed runs stay on record


class _ByteTokenizer:
  """Just enough tokenizer for prompts and answers: UTF-8 bytes, 0 is the stop token."""

  stop_ids = (0,)
  chat_format = "plain"

  def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=True, **kwargs):
    return list(b"".join(m["content"].encode() for m in messages)[-64:]) or [1]

  def decode(self, ids, skip_special_tokens=True):
    return bytes(ids).decode("utf-8", "replace")


class _ScriptedEngine:
  """Answers each prompt with its problem's canonical solution at T <= 0.5 and with a broken body above."""

  def __init__(self, problems):
    self.problems = problems
    self.calls = []

  def generate(self, requests, seed=0, progress=None):
    self.calls.append(requests[0].sampling.temperature)
    out = []
    for i, (request, problem) in enumerate(zip(requests, self.problems)):
      good = request.sampling.temperature <= 0.5
      text = _fenced(problem.prompt + problem.canonical_solution) if good else "```python\n    return 0\n```"
      out.append([Completion(i, s, list(text.encode()) + [0], "stop") for s in range(request.n)])
    return out


def test_sweep_picks_best_temperature_and_reuses_samples(sandbox, problems, tmp_path):
  engine = _ScriptedEngine(problems)
  sampling = evaluate.EvalSampling(SamplingConfig(max_new_tokens=64), n=2)
  result = evaluate.evaluate_sweep(engine, _ByteTokenizer(), problems, sandbox, [0.2, 1.0], sampling=sampling,
                                   out_dir=str(tmp_path), tag="base", log=lambda s: None)
  assert result["runs"]["0.2"]["overall"]["pass@1"] == 1.0
  assert result["runs"]["1"]["overall"]["pass@1"] == 0.0
  assert result["best"]["temperature"] == 0.2
  summary = json.load(open(tmp_path / "base_T0.2.summary.json"))
  assert summary["sampling"]["temperature"] == 0.2 and summary["sampling"]["n"] == 2
  again = evaluate.evaluate_sweep(engine, _ByteTokenizer(), problems, sandbox, [0.2, 1.0], sampling=sampling,
                                  out_dir=str(tmp_path), tag="base", log=lambda s: None)
  assert engine.calls == [0.2, 1.0]  # the rerun sampled nothing: the samples files were complete
  assert again["runs"]["0.2"]["overall"] == result["runs"]["0.2"]["overall"]


def test_selfcheck_cli():
  proc = subprocess.run([sys.executable, "-m", "ssd_jax.eval.selfcheck"], capture_output=True, text=True,
                        timeout=300, env={**os.environ, "PYTHONPATH": os.getcwd()})
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert result["humaneval_canonical_pass"] == 164 and result["humaneval_broken_pass"] == 0
  assert result["ok"] and all(result["attacks"].values())


def test_summary_also_scores_the_2025_02_to_05_window():
  import dataclasses
  import datetime

  from ssd_jax.eval.judge import SampleResult
  from ssd_jax.data.synthetic import synthetic_problems

  dates = [datetime.datetime(2025, 1, 31, 23), datetime.datetime(2025, 2, 1), datetime.datetime(2025, 5, 1),
           datetime.datetime(2025, 5, 1, 14, 30)]  # the window's end is midnight: the last one is outside
  problems = [dataclasses.replace(p, contest_date=d) for p, d in zip(synthetic_problems(4), dates)]
  results = [SampleResult(p.id, i, "AC" if (k + i) % 2 else "WA", 0, 1, 0.0, "bwrap", {})
             for k, p in enumerate(problems) for i in range(2)]
  summary = evaluate.summarize(results, problems, settings=evaluate.EvalSettings(ks=(1,)), isolation="bwrap",
                               tag="t")
  window = summary["windows"]["2025-02-01..2025-05-01"]
  assert window["problem_ids"] == [problems[1].id, problems[2].id] and window["n_problems"] == 2
  assert window["overall"]["pass@1"] == pytest.approx(0.5) and summary["overall"]["pass@1"] == pytest.approx(0.5)


def test_synthetic_problems_reference_solutions_pass_and_wrong_ones_fail(sandbox):
  from ssd_jax.eval.judge import judge_many
  from ssd_jax.data.synthetic import reference_solution, synthetic_problems

  problems = synthetic_problems(8, tests_per_problem=3)
  assert {p.mode for p in problems} == {"stdin", "call"} and len({p.id for p in problems}) == 8
  right = judge_many([(p, reference_solution(p), 0) for p in problems], sandbox)
  wrong = judge_many([(p, "```python\nprint(0)\n```", 1) for p in problems], sandbox)
  assert [r.verdict for r in right] == ["AC"] * 8
  assert not any(r.passed for r in wrong)


def test_lcb_compat_refuses_a_sandbox_without_lcbs_environment(sandbox, problems):
  class NoNumpy:
    isolation, environment = "bwrap", {"python": "3.11.2", "numpy": None}

  stdin = Problem(id="s", title="s", platform="atcoder", difficulty="easy", contest_date=None, starter_code="",
                  fn_name=None, mode="stdin", tests=(TestCase("1\n", "1\n", "stdin"),), n_public=1)
  with pytest.raises(SandboxError, match="apt-get install python3-numpy"):
    evaluate.judge_samples([stdin], {"s": ["print(1)"]}, NoNumpy())
  evaluate.check_environment(NoNumpy(), "real_io", ["stdin"])  # other modes promise nothing of LCB's
  evaluate.check_environment(NoNumpy(), "lcb_compat", [p.mode for p in problems])  # HumanEval needs no numpy
  assert sandbox.environment["numpy"]  # the real one has it (CI installs python3-numpy)
