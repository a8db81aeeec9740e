"""Run one Python program in the sandbox and print its verdict.

  python -m ssd_jax.eval.run --code FILE [--stdin FILE] [--expect FILE] [--timeout S]
                             [--isolation auto|bwrap|unshare] [--allow-weak-isolation]

Human-readable lines first; the last line is one JSON object with `verdict` (OK when the program exits 0 and no
--expect is given; AC/WA against --expect with LiveCodeBench's stdin comparator; otherwise TLE, RE, MLE, OLE or
SANDBOX_ERROR), capped `stdout`, `stderr_tail`, `isolation`, `wall_s` and `returncode`. Exit status: 0 when the
sandbox ran the program (whatever the verdict), 1 when it refused to (no bubblewrap, or a weaker level without
--allow-weak-isolation: the JSON's `error` says what is missing and how to fix it), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys

from ssd_jax.eval.compare import lcb_stdout_equal
from ssd_jax.eval.sandbox import (Program, Sandbox, SandboxConfig, SandboxError, add_isolation_flags,
                                  failure_verdict)

_SHOWN_CHARS = 4096


def _read(path: str, what: str) -> bytes:
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    print(f"error: cannot read {what} file {path!r}: {e.strerror}", file=sys.stderr)
    raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m ssd_jax.eval.run", description=__doc__.split("\n")[0])
  parser.add_argument("--code", required=True, help="Python source file to run")
  parser.add_argument("--stdin", help="file given to the program as stdin")
  parser.add_argument("--expect", help="expected stdout; compared with LiveCodeBench's stdin comparator")
  parser.add_argument("--timeout", type=float, default=10.0, help="wall-clock limit in seconds")
  add_isolation_flags(parser)
  args = parser.parse_args(argv)
  if args.timeout <= 0:
    parser.error("--timeout must be positive")
  code = _read(args.code, "--code")
  stdin = _read(args.stdin, "--stdin") if args.stdin else b""
  expect = _read(args.expect, "--expect").decode("utf-8", "replace") if args.expect else None

  try:
    sandbox = Sandbox(SandboxConfig(isolation=args.isolation, allow_weak_isolation=args.allow_weak_isolation,
                                    wall_timeout_s=args.timeout, workers=1))
  except SandboxError as e:  # refused before the program ran: nothing of it executed
    print(f"error: {e}", file=sys.stderr)
    print(json.dumps({"verdict": "SANDBOX_ERROR", "error": str(e), "stdout": "", "stderr_tail": "",
                      "isolation": None, "wall_s": 0.0, "returncode": None}))
    return 1
  with sandbox:
    result = sandbox.run(Program(files={"main.py": code}, argv=("/sandbox/main.py",), stdin=stdin))
  stdout = result.stdout.decode("utf-8", "replace")
  verdict = failure_verdict(result)
  if verdict is None:
    verdict = "OK" if expect is None else ("AC" if lcb_stdout_equal(stdout, expect) else "WA")
  stderr_tail = result.stderr.decode("utf-8", "replace")[-_SHOWN_CHARS:]
  print(f"isolation: {result.isolation}; outcome: {result.outcome}, returncode {result.returncode}, "
        f"signal {result.signal}; wall {result.wall_s:.3f}s")
  if result.error:
    print(f"sandbox error: {result.error}")
  print(f"stdout: {len(result.stdout)} bytes{' (truncated)' if result.stdout_truncated else ''}; "
        f"stderr tail: {len(result.stderr)} bytes")
  print(f"verdict: {verdict}")
  print(json.dumps({"verdict": verdict, "stdout": stdout[:_SHOWN_CHARS], "stderr_tail": stderr_tail,
                    "isolation": result.isolation, "wall_s": round(result.wall_s, 4),
                    "returncode": result.returncode}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
