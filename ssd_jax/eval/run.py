"""Run one Python program in the sandbox and print its verdict: alone, or against a LiveCodeBench problem.

  python -m ssd_jax.eval.run --code FILE [--stdin FILE] [--expect FILE] [--timeout S]
                             [--isolation auto|bwrap|unshare] [--allow-weak-isolation]
  python -m ssd_jax.eval.run --problem ROW.json --code FILE [--mode lcb_compat|real_io|plain] [--timeout S] ...

Alone: the last line is one JSON object with `verdict` (OK when the program exits 0 and no --expect is given;
AC/WA against --expect with LiveCodeBench's stdin comparator; otherwise TLE, RE, MLE, OLE or SANDBOX_ERROR),
capped `stdout`, `stderr_tail`, `isolation`, `wall_s` and `returncode`.

With --problem: FILE is judged against every test of the `code_generation_lite` row in ROW.json (one JSON object:
stdin or call-based, private tests in either encoding) exactly as an evaluation judges a sample, by default in
`lcb_compat` (LiveCodeBench's own grading) with LCB's 6 s per test; the JSON holds `verdict` (AC / WA / TLE / RE /
MLE / OLE / SANDBOX_ERROR), `tests_passed`, `tests_total`, `failed_test`, `lcb_results` (LCB's per-test list),
`lcb_error_code`, `mode`, `isolation` and `wall_s`.

Exit status: 0 when the sandbox ran the program (whatever the verdict), 1 when it refused to (no bubblewrap, or a
weaker level without --allow-weak-isolation: the JSON's `error` says what is missing and how to fix it), 2 on bad
arguments or a malformed row (the message names the field).
"""

from __future__ import annotations

import argparse
import json
import sys

from ssd_jax.data.lcb import problem_from_row
from ssd_jax.data.problems import ProblemError
from ssd_jax.eval.compare import lcb_stdout_equal
from ssd_jax.eval.judge import judge_sample
from ssd_jax.eval.programs import EXEC_MODES
from ssd_jax.eval.sandbox import (Program, Sandbox, SandboxConfig, SandboxError, add_isolation_flags,
                                  failure_verdict)

_SHOWN_CHARS = 4096


def _read(path: str, what: str) -> bytes:
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    _fail(f"cannot read {what} file {path!r}: {e.strerror}")


def _problem(path: str):
  """The row in `path` as a Problem; exit 2 naming the field when it is malformed."""
  try:
    row = json.loads(_read(path, "--problem").decode("utf-8"))
    return problem_from_row(row, path)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    message = f"{path}: expected one JSON object (a code_generation_lite row): {e}"
  except ProblemError as e:
    message = str(e)
  _fail(message)


def _fail(message: str) -> None:
  """Bad input: one line on stderr, the JSON last line, exit 2."""
  print(f"error: {message}", file=sys.stderr)
  print(json.dumps({"error": message}))
  raise SystemExit(2)


class _Parser(argparse.ArgumentParser):
  """argparse whose usage errors also end with the JSON line."""

  def error(self, message: str) -> None:  # type: ignore[override]
    self.print_usage(sys.stderr)
    _fail(message)


def _judge(problem, code: bytes, sandbox: Sandbox, mode: str, timeout_s: float) -> dict:
  # The program is used as is: fenced, so that extraction takes exactly its text.
  result = judge_sample(problem, "```python\n" + code.decode("utf-8", "replace") + "\n```", sandbox, mode=mode,
                        timeout_s=timeout_s)
  details = result.details
  print(f"problem {problem.id} ({problem.mode}, {result.tests_total} tests), mode {mode}, isolation "
        f"{result.isolation}: {result.verdict}, {result.tests_passed}/{result.tests_total} passed")
  return {"verdict": result.verdict, "problem_id": problem.id, "tests_passed": result.tests_passed,
          "tests_total": result.tests_total, "failed_test": details.get("failed_test"),
          "lcb_results": details.get("lcb_results"), "lcb_error_code": details.get("lcb_error_code"),
          "error": details.get("error"), "mode": mode, "isolation": result.isolation,
          "wall_s": round(result.wall_s, 4)}


def _run_alone(code: bytes, stdin: bytes, expect: str | None, sandbox: Sandbox) -> dict:
  result = sandbox.run(Program(files={"main.py": code}, argv=("/sandbox/main.py",), stdin=stdin))
  stdout = result.stdout.decode("utf-8", "replace")
  verdict = failure_verdict(result)
  if verdict is None:
    verdict = "OK" if expect is None else ("AC" if lcb_stdout_equal(stdout, expect) else "WA")
  print(f"isolation: {result.isolation}; outcome: {result.outcome}, returncode {result.returncode}, "
        f"signal {result.signal}; wall {result.wall_s:.3f}s")
  if result.error:
    print(f"sandbox error: {result.error}")
  print(f"stdout: {len(result.stdout)} bytes{' (truncated)' if result.stdout_truncated else ''}; "
        f"stderr tail: {len(result.stderr)} bytes")
  print(f"verdict: {verdict}")
  return {"verdict": verdict, "stdout": stdout[:_SHOWN_CHARS],
          "stderr_tail": result.stderr.decode("utf-8", "replace")[-_SHOWN_CHARS:], "isolation": result.isolation,
          "wall_s": round(result.wall_s, 4), "returncode": result.returncode}


def main(argv: list[str] | None = None) -> int:
  parser = _Parser(prog="python -m ssd_jax.eval.run", description=__doc__.split("\n")[0])
  parser.add_argument("--code", required=True, help="Python source file to run")
  parser.add_argument("--problem", help="a code_generation_lite row (one JSON object) to judge the program against")
  parser.add_argument("--mode", choices=EXEC_MODES, default="lcb_compat", help="with --problem: how tests run")
  parser.add_argument("--stdin", help="without --problem: file given to the program as stdin")
  parser.add_argument("--expect", help="without --problem: expected stdout, compared with LCB's stdin comparator")
  parser.add_argument("--timeout", type=float, help="seconds: per test with --problem (default 6, LCB's), "
                                                    "else the wall-clock limit (default 10)")
  add_isolation_flags(parser)
  args = parser.parse_args(argv)
  if args.problem and (args.stdin or args.expect):
    parser.error("--stdin and --expect are for a program alone; --problem brings its own tests")
  timeout = args.timeout if args.timeout is not None else (6.0 if args.problem else 10.0)
  if timeout <= 0:
    parser.error("--timeout must be positive")
  code = _read(args.code, "--code")
  problem = _problem(args.problem) if args.problem else None
  stdin = _read(args.stdin, "--stdin") if args.stdin else b""
  expect = _read(args.expect, "--expect").decode("utf-8", "replace") if args.expect else None

  try:
    sandbox = Sandbox(SandboxConfig(isolation=args.isolation, allow_weak_isolation=args.allow_weak_isolation,
                                    wall_timeout_s=timeout, workers=1))
  except SandboxError as e:  # refused before the program ran: nothing of it executed
    print(f"error: {e}", file=sys.stderr)
    print(json.dumps({"verdict": "SANDBOX_ERROR", "error": str(e), "stdout": "", "stderr_tail": "",
                      "isolation": None, "wall_s": 0.0, "returncode": None}))
    return 1
  with sandbox:
    out = (_judge(problem, code, sandbox, args.mode, timeout) if problem is not None
           else _run_alone(code, stdin, expect, sandbox))
  print(json.dumps(out))
  return 0


if __name__ == "__main__":
  sys.exit(main())
