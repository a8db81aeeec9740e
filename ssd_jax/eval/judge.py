"""Parent-side judging of one model sample against one problem (code_eval.md §5, §7.1, §10.1).

The child only ever receives the code and the test inputs; every comparison happens here, with the expected value
on the right. A pass needs positive evidence: a matching stdout for every stdin test, one well-formed frame with
an equal value per call-based test, or HumanEval's completion frame. An exit status of 0 alone never passes.

Stdin problems run one process per test and stop at the first failing test. In `lcb_compat` a `SystemExit`
escaping the solution is swallowed by the runner (as LCB does), so `sys.exit(0)` after printing is judged by the
output. Call-based problems run in one process; the per-test frames are checked in order and the first failure
decides. Verdicts: AC WA TLE RE MLE OLE NO_CODE SANDBOX_ERROR; LCB's per-test codes (True pass, -2 WA, -3 TLE,
-4 RE, -1 global timeout) are kept in `details` for parity accounting.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Iterator, Mapping, Protocol, Sequence

from ssd_jax.eval.compare import lcb_stdout_equal
from ssd_jax.eval.extract import extract_code
from ssd_jax.data.problems import Problem, loads_json
from ssd_jax.eval.lcb_runner import lcb_program
from ssd_jax.eval.programs import (EXEC_MODES, FrameError, call_program, decode_frame, detect_stdin_idioms,
                                   humaneval_program, stdin_programs)
from ssd_jax.eval.sandbox import Program, RunResult, failure_verdict

__all__ = ["LCB_CODES", "SampleResult", "VERDICTS", "completion_digest", "judge_many", "judge_sample"]

VERDICTS = ("AC", "WA", "TLE", "RE", "MLE", "OLE", "NO_CODE", "SANDBOX_ERROR")
# LCB's code for the failing test under each verdict (OLE is a WA there; MLE a runtime error).
LCB_CODES: Mapping[str, Any] = {"AC": True, "WA": -2, "OLE": -2, "TLE": -3, "RE": -4, "MLE": -4,
                                "SANDBOX_ERROR": None}
_TAIL = 2000


class _Runner(Protocol):
  def run_many(self, programs: Sequence[Program]) -> list[RunResult]:
    ...


@dataclasses.dataclass(frozen=True)
class SampleResult:
  """The verdict for one (problem, sample).

  Attributes:
    tests_passed: Tests passed before the first failure (all of them for AC).
    tests_total: Tests of the problem (1 for HumanEval).
    wall_s: Sum of the sandbox runs' wall times.
    isolation: The sandbox isolation level that produced the verdict ("" when nothing ran, e.g. NO_CODE).
    details: JSON-serialisable diagnostics: exec mode, extraction, stdin idioms, the failing test, LCB codes,
      the error and a stderr tail.
  """

  problem_id: str
  sample_index: int
  verdict: str
  tests_passed: int
  tests_total: int
  wall_s: float
  isolation: str
  details: Mapping[str, Any]

  @property
  def passed(self) -> bool:
    return self.verdict == "AC"

  def to_json(self) -> dict[str, Any]:
    return {"problem_id": self.problem_id, "sample_index": self.sample_index, "verdict": self.verdict,
            "tests_passed": self.tests_passed, "tests_total": self.tests_total, "wall_s": round(self.wall_s, 4),
            "isolation": self.isolation, "details": dict(self.details)}


def completion_digest(completion: str) -> str:
  """The SHA-256 of the text a verdict was given for (recorded in `SampleResult.details`)."""
  return hashlib.sha256(completion.encode("utf-8", "surrogatepass")).hexdigest()


def _tail(data: bytes) -> str:
  return data[-_TAIL:].decode("utf-8", "replace")


class _Job:
  """One sample's progress: hands out the next program to run and folds each run result into a verdict."""

  def __init__(self, problem: Problem, completion: str, sample_index: int, exec_mode: str, timeout_s: float):
    self.problem, self.sample_index = problem, sample_index
    self.total = 1 if problem.mode == "humaneval" else len(problem.tests)
    self.passed = 0
    self.wall_s = 0.0
    self.isolation = ""
    self.result: SampleResult | None = None
    # The verdict holds for exactly this text: a resumed evaluation whose samples changed judges them again.
    self.details: dict[str, Any] = {"exec_mode": exec_mode, "problem_mode": problem.mode,
                                    "completion_sha256": completion_digest(completion)}
    self._programs: Iterator[Program] | None = None
    if self.total == 0:
      raise ValueError(f"{problem.id}: a problem without tests would pass vacuously")
    if problem.mode == "humaneval":
      code = completion  # a HumanEval completion continues the prompt: nothing to extract
    else:
      extraction = extract_code(completion)
      self.details["extraction"] = extraction.to_json()
      code = extraction.code
    if not code.strip():
      # LCB runs the empty program: compiling it (or finding no method) fails before any test, [-4].
      self.details.update(lcb_results=[-4], lcb_error_code=-4)
      self._finish("NO_CODE", failed_test=0, lcb_code=-4)
      return
    if exec_mode == "lcb_compat" and problem.mode != "humaneval":
      if problem.mode == "stdin":
        self.details["stdin_idioms"] = list(detect_stdin_idioms(code))
      self._programs = iter([lcb_program(problem, code, timeout_s=timeout_s, on_frame=self._lcb_stops)])
    elif problem.mode == "stdin":
      self.details["stdin_idioms"] = list(detect_stdin_idioms(code))
      self._programs = stdin_programs(code, [t.input for t in problem.tests], mode=exec_mode, timeout_s=timeout_s)
    elif problem.mode == "call":
      self._programs = iter([call_program(code, problem.fn_name or "", [t.input for t in problem.tests],
                                          mode=exec_mode, timeout_s=timeout_s)])
    else:
      self._programs = iter([humaneval_program(problem, completion, timeout_s=timeout_s)])

  def next_program(self) -> Program:
    assert self.result is None and self._programs is not None
    return next(self._programs)

  def _finish(self, verdict: str, *, failed_test: int | None = None, lcb_code: Any = None, **info: Any) -> None:
    if verdict != "AC":
      self.details["failed_test"] = failed_test
    self.details["lcb_code"] = LCB_CODES.get(verdict) if lcb_code is None else lcb_code
    self.details.update({k: v for k, v in info.items() if v is not None})
    self.result = SampleResult(self.problem.id, self.sample_index, verdict, self.passed, self.total, self.wall_s,
                               self.isolation, self.details)

  def feed(self, run: RunResult) -> None:
    self.wall_s += run.wall_s
    self.isolation = run.isolation
    if self.details["exec_mode"] == "lcb_compat" and self.problem.mode != "humaneval":
      self._feed_lcb(run)
    elif self.problem.mode == "stdin":
      self._feed_stdin(run)
    elif self.problem.mode == "call":
      self._feed_call(run)
    else:
      self._feed_humaneval(run)

  def _run_info(self, run: RunResult) -> dict[str, Any]:
    return {"outcome": run.outcome, "returncode": run.returncode, "signal": run.signal,
            "stderr_tail": _tail(run.stderr) or None, "sandbox_error": run.error}

  def _feed_stdin(self, run: RunResult) -> None:
    index = self.passed
    verdict = "OLE" if run.stdout_truncated else failure_verdict(run)
    if verdict is not None:
      self._finish(verdict, failed_test=index, **self._run_info(run))
    elif not lcb_stdout_equal(run.stdout.decode("utf-8", "replace"), self.problem.tests[index].output):
      self._finish("WA", failed_test=index, stdout_head=run.stdout[:_TAIL].decode("utf-8", "replace"),
                   **self._run_info(run))
    else:
      self.passed += 1
      if self.passed == self.total:
        self._finish("AC")

  def _frames(self, run: RunResult, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """The frames up to the first protocol violation, and that violation (None if the channel was clean)."""
    frames: list[dict[str, Any]] = []
    for position, payload in enumerate(run.frames):
      if position >= limit:
        return frames, f"more than {limit} result frames"
      try:
        frame = decode_frame(payload)
      except FrameError as e:
        return frames, f"frame {position}: {e}"
      if frame["i"] != position:
        return frames, f"frame {position} carries index {frame['i']}"
      frames.append(frame)
    return frames, run.frames_error

  def _missing_frame(self, run: RunResult, index: int, problem: str | None, what: str) -> None:
    """No usable evidence for test `index`: a corrupted channel or a dead child is never a pass."""
    info = self._run_info(run)
    if problem is not None:
      self._finish("RE", failed_test=index, error=f"result channel violated: {problem}", **info)
      return
    verdict = failure_verdict(run) or "RE"
    lcb_code = -1 if run.outcome == "timeout" else None  # LCB's per-sample backstop marks every test -1
    self._finish(verdict, failed_test=index, lcb_code=lcb_code, error=f"no result frame for {what}", **info)

  def _failed_frame(self, frame: Mapping[str, Any], index: int, run: RunResult) -> None:
    if frame.get("timeout") is True:
      verdict = "TLE"
    elif frame.get("memory") is True:
      verdict = "MLE"
    else:
      verdict = "WA" if frame.get("assertion") is True else "RE"
    self._finish(verdict, failed_test=index, error=frame.get("error"), stage=frame.get("stage"),
                 **self._run_info(run))

  def _feed_call(self, run: RunResult) -> None:
    frames, problem = self._frames(run, self.total)
    for index in range(self.total):
      if index >= len(frames):
        self._missing_frame(run, index, problem, f"test {index}")
        return
      frame = frames[index]
      if not frame["ok"]:
        self._failed_frame(frame, index, run)
        return
      if "value" not in frame:
        self._missing_frame(run, index, f"frame {index} is ok but has no value", f"test {index}")
        return
      prediction = frame["value"]
      if isinstance(prediction, tuple):  # LCB converts a top-level tuple only
        prediction = list(prediction)
      if not prediction == loads_json(self.problem.tests[index].output):
        self._finish("WA", failed_test=index, got=repr(prediction)[:_TAIL])
        return
      self.passed += 1
    self._finish("AC")

  def _test_passes(self, index: int, frame: Mapping[str, Any]) -> bool:
    """LCB's comparison of test `index`'s result frame: its comparator on the captured stdout, or `==`."""
    expected = self.problem.tests[index].output
    if self.problem.mode == "stdin":
      return isinstance(frame.get("stdout"), str) and lcb_stdout_equal(frame["stdout"], expected)
    return "value" in frame and bool(frame["value"] == loads_json(expected))

  def _lcb_stops(self, payload: bytes) -> bool:
    """`Program.on_frame` of an lcb_compat run: stop at the end of grading or at the first failed test."""
    try:
      frame = decode_frame(payload)
      return (frame.get("done") is True or not frame["ok"] or not 0 <= frame["i"] < self.total
              or not self._test_passes(frame["i"], frame))
    except (FrameError, RecursionError, TypeError, ValueError):
      return True

  def _feed_lcb(self, run: RunResult) -> None:
    """LCB's result list from an lcb_compat run (see `lcb_runner`): True per passed test, then the failing
    test's -2 / False / -3 / -4, or [-4] when grading failed before the tests; [-2] with error code -5 when the
    process ended without finishing (LCB's `check_correctness` then fails on its empty metadata)."""
    info = self._run_info(run)
    if run.outcome == "sandbox_error":
      self._finish("SANDBOX_ERROR", failed_test=0, lcb_code=None, **info)
      return
    results: list[Any] = []
    error: dict[str, Any] | None = None
    done = False
    for position, payload in enumerate(run.frames):
      try:
        frame = decode_frame(payload)
      except FrameError as e:
        error = {"code": -5, "protocol": f"frame {position}: {e}"}
        break
      if frame.get("done") is True:
        done = True
        break
      if frame.get("setup"):
        results, error = [-4], {"code": -4, "frame": frame}
        break
      if frame["i"] != position or position >= self.total:
        error = {"code": -5, "protocol": f"frame {position} carries index {frame['i']}"}
        break
      if not frame["ok"]:
        results.append(frame.get("code"))
        error = {"code": frame.get("code"), "frame": frame}
        break
      if not self._test_passes(position, frame):
        results.append(-2 if self.problem.mode == "stdin" else False)
        error = {"code": -2, "frame": frame}
        break
      results.append(True)
    if error is None and not (done and len(results) == self.total):
      error = {"code": -5}  # ended without finishing: killed, crashed, exited, or a protocol violation
    if error is None:
      self.passed = self.total
      self.details.update(lcb_results=results, lcb_error_code=None)
      self._finish("AC", lcb_code=True)
      return
    code = error["code"]
    if code == -5:
      results = [-2]
      verdict = failure_verdict(run) or "RE"
    else:
      verdict = {-2: "WA", -3: "TLE", -4: "RE"}.get(code, "RE")
      if code == -4 and error["frame"].get("memory") is True:
        verdict = "MLE"
    self.passed = sum(r is True for r in results)
    self.details.update(lcb_results=results, lcb_error_code=code)
    frame = error.get("frame", {})
    self._finish(verdict, failed_test=len(results) - 1 if code != -5 else self.passed, lcb_code=code,
                 error=frame.get("error") or error.get("protocol"),
                 stage=("setup" if frame.get("setup") else "test") if code in (-3, -4) else None,
                 got=repr(frame.get("value"))[:_TAIL] if code == -2 and self.problem.mode == "call" else None,
                 stdout_head=frame.get("stdout", "")[:_TAIL] if code == -2 and self.problem.mode == "stdin" else None,
                 **info)

  def _feed_humaneval(self, run: RunResult) -> None:
    frames, problem = self._frames(run, 1)
    if not frames:
      self._missing_frame(run, 0, problem, "check() (no completion evidence)")
    elif frames[0]["ok"]:
      self.passed = 1
      self._finish("AC")
    else:
      self._failed_frame(frames[0], 0, run)


def judge_many(samples: Sequence[tuple[Problem, str, int]], sandbox: _Runner, *, mode: str = "lcb_compat",
               timeout_s: float = 6.0) -> list[SampleResult]:
  """Judges many (problem, completion text, sample index) triples, in input order, through `sandbox.run_many`.

  Stdin samples advance in lock step for throughput: the first test of every sample runs as one batch, then the
  next test of the samples still passing, and so on; call-based and HumanEval samples need a single run.
  """
  if mode not in EXEC_MODES:
    raise ValueError(f"unknown execution mode {mode!r}; expected one of {EXEC_MODES}")
  jobs = [_Job(problem, completion, index, mode, timeout_s) for problem, completion, index in samples]
  while True:
    pending = [job for job in jobs if job.result is None]
    if not pending:
      break
    runs = sandbox.run_many([job.next_program() for job in pending])
    if len(runs) != len(pending):
      raise RuntimeError(f"sandbox.run_many returned {len(runs)} results for {len(pending)} programs")
    for job, run in zip(pending, runs):
      job.feed(run)
  return [job.result for job in jobs if job.result is not None]


def judge_sample(problem: Problem, completion_text: str, sandbox: _Runner, *, mode: str = "lcb_compat",
                 sample_index: int = 0, timeout_s: float = 6.0) -> SampleResult:
  """Extracts the code (HumanEval: the completion as is), runs it on the problem's tests and judges it."""
  return judge_many([(problem, completion_text, sample_index)], sandbox, mode=mode, timeout_s=timeout_s)[0]
