"""Checks that this host can evaluate code: HumanEval's canonical solutions pass, broken twins fail, attacks fail.

  python -m ssd_jax.eval.selfcheck [--isolation auto|bwrap|unshare] [--allow-weak-isolation] [--workers N]
                                   [--timeout S]

Run it first on a new cluster. It judges, through the sandbox and the same judge as real evaluations:
- the 164 canonical HumanEval solutions (all must be AC);
- the same solutions with their bodies replaced by `pass` (none may be AC);
- a few attacks, each with the outcome a working sandbox gives: the program runs as a non-root uid in its own
  pid namespace (bwrap); a connection to a listener this process opens on 127.0.0.1 fails and the listener sees
  nothing; a canary secret in this process's environment is invisible; a file this process owns cannot be
  written; a bounded fork storm is stopped by RLIMIT_NPROC; `exit(0)` before HumanEval's asserts is no pass.
The last line is one JSON object; the exit status is 0 when every check holds.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time

from ssd_jax.eval.judge import judge_many
from ssd_jax.data.problems import load_humaneval_problems
from ssd_jax.eval.sandbox import Program, Sandbox, SandboxConfig, SandboxError, add_isolation_flags

_CANARY = "SSD_JAX_SELFCHECK_CANARY_7f3a9c"


def _script(code: str) -> Program:
  return Program(files={"main.py": code.encode()}, argv=("/sandbox/main.py",))


def _attacks(port: int, target: str) -> dict[str, tuple[Program, str]]:
  """name -> (program, the marker its stdout must NOT contain for the check to hold)."""
  return {
      "runs_unprivileged": (_script(
          "import os\nns = os.readlink('/proc/self/ns/pid')\n"
          "print('ROOT' if os.getuid() == 0 else 'uid', os.getuid(), ns)\n"), "ROOT"),
      "no_loopback_network": (_script(
          "import socket\ns = socket.socket()\ns.settimeout(2)\n"
          f"try:\n  s.connect(('127.0.0.1', {port}))\n  print('CONNECTED')\n"
          "except OSError as e:\n  print('refused', e)\n"),
          "CONNECTED"),
      "no_parent_secrets": (_script(
          "import os\nprint(dict(os.environ))\n"
          "for p in ('/proc/self/environ', '/proc/1/environ', f'/proc/{os.getppid()}/environ'):\n"
          "  try:\n    print(open(p, 'rb').read())\n  except OSError as e:\n    print(p, e)\n"), _CANARY),
      "no_writes_outside": (_script(
          f"try:\n  open({target!r}, 'w').write('x')\n  print('WROTE')\nexcept OSError as e:\n  print('denied', e)\n"),
          "WROTE"),
      "fork_storm_bounded": (_script(
          "import os, sys\nn = 0\ntry:\n  for _ in range(5000):\n    if os.fork() == 0:\n      import time\n"
          "      time.sleep(5)\n      os._exit(0)\n    n += 1\n  print('UNBOUNDED', n)\nexcept OSError as e:\n"
          "  print('stopped after', n, e)\n"), "UNBOUNDED"),
  }


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m ssd_jax.eval.selfcheck", description=__doc__.split("\n")[0])
  add_isolation_flags(parser)
  parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
  parser.add_argument("--timeout", type=float, default=6.0, help="per-test limit (LCB's default)")
  args = parser.parse_args(argv)

  os.environ["SSD_JAX_SELFCHECK_SECRET"] = _CANARY  # the children must never see it
  try:
    sandbox = Sandbox(SandboxConfig(isolation=args.isolation, allow_weak_isolation=args.allow_weak_isolation,
                                    workers=args.workers, wall_timeout_s=args.timeout + 4))
  except SandboxError as e:
    print(f"error: {e}", file=sys.stderr)
    print(json.dumps({"ok": False, "error": str(e)}))
    return 1
  print(f"sandbox isolation: {sandbox.isolation}, {args.workers} workers", flush=True)
  problems = load_humaneval_problems()
  t0 = time.time()
  canonical = judge_many([(p, p.canonical_solution, 0) for p in problems], sandbox, timeout_s=args.timeout)
  canonical_s = time.time() - t0
  broken = judge_many([(p, "    pass\n", 0) for p in problems], sandbox, timeout_s=args.timeout)
  canonical_pass = sum(r.passed for r in canonical)
  broken_pass = sum(r.passed for r in broken)
  print(f"HumanEval canonical solutions: {canonical_pass}/{len(problems)} AC ({canonical_s:.1f} s); "
        f"pass-bodied twins: {broken_pass} AC", flush=True)
  failing = [r.problem_id + ":" + r.verdict for r in canonical if not r.passed]
  if failing:
    print(f"  canonical failures: {failing[:10]}", flush=True)

  early_exit = judge_many([(problems[0], "    exit(0)\n", 0)], sandbox, timeout_s=args.timeout)[0]
  attacks = {"exit_before_asserts": {"ok": not early_exit.passed, "verdict": early_exit.verdict}}
  listener = socket.socket()
  listener.bind(("127.0.0.1", 0))
  listener.listen(8)
  listener.setblocking(False)
  with tempfile.TemporaryDirectory() as tmp:
    target = os.path.join(tmp, "evaluator_owned.txt")
    with open(target, "w") as f:
      f.write("original")
    programs = _attacks(listener.getsockname()[1], target)
    results = sandbox.run_many([program for program, _ in programs.values()])
    for (name, (_, marker)), result in zip(programs.items(), results):
      text = (result.stdout + result.stderr).decode("utf-8", "replace")
      attacks[name] = {"ok": marker not in text and _CANARY not in text and result.outcome != "sandbox_error",
                       "outcome": result.outcome, "stdout": result.stdout[:200].decode("utf-8", "replace")}
    with open(target) as f:
      attacks["no_writes_outside"]["ok"] &= f.read() == "original"
  try:
    listener.accept()
    attacks["no_loopback_network"]["ok"] = False  # the listener saw a connection
  except BlockingIOError:
    pass
  listener.close()
  for name, a in attacks.items():
    print(f"  {name}: {'ok' if a['ok'] else 'FAILED'} ({a.get('verdict') or a.get('outcome')})", flush=True)

  ok = canonical_pass == len(problems) and broken_pass == 0 and all(a["ok"] for a in attacks.values())
  result = {"ok": ok, "isolation": sandbox.isolation, "humaneval_canonical_pass": canonical_pass,
            "humaneval_broken_pass": broken_pass, "humaneval_problems": len(problems),
            "canonical_wall_s": round(canonical_s, 2), "canonical_failures": failing,
            "attacks": {name: a["ok"] for name, a in attacks.items()}}
  sandbox.close()
  print(json.dumps(result))
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
