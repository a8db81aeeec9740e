"""`lcb_compat` gives LiveCodeBench's own verdict: per-test result lists measured with LCB's harness.

`lcb_parity_cases.CASES` holds the programs and problems; `data/lcb_parity_verdicts.json` what LCB's
`evaluate_generations_by_problem` returned for each at the recorded commit (`tests/measure_lcb_parity.py`). Each
case is judged here through the real sandbox in `lcb_compat` with the same per-test timeout, and its LCB result list
and error code must be the same; a case marked `deviation` asserts the documented difference instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lcb_parity_cases import CASES, TIMEOUT_S
from test_eval_lcb import lcb_row
from ssd_jax.eval.judge import judge_many
from ssd_jax.data.problems import Problem, TestCase
from ssd_jax.eval.sandbox import Sandbox, SandboxConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(ROOT, "tests", "data", "lcb_parity_verdicts.json")) as _f:
  MEASURED = json.load(_f)


def _problem(case: dict) -> Problem:
  call = case.get("fn_name") is not None
  tests = tuple(TestCase(i, o, "functional" if call else "stdin") for i, o in zip(case["inputs"], case["outputs"]))
  return Problem(id=case["name"], title=case["name"], platform="leetcode" if call else "atcoder", difficulty="easy",
                 contest_date=None, starter_code="", fn_name=case.get("fn_name"), mode="call" if call else "stdin",
                 tests=tests, n_public=len(tests))


@pytest.fixture(scope="module")
def judged():
  with Sandbox(SandboxConfig(workers=2, base_uid=61800)) as sandbox:
    results = judge_many([(_problem(c), f"```python\n{c['code']}\n```", 0) for c in CASES], sandbox,
                         mode="lcb_compat", timeout_s=TIMEOUT_S)
  return {c["name"]: r for c, r in zip(CASES, results)}


def test_the_measurement_covers_every_case():
  assert MEASURED["lcb_commit"] == "28fef95" and MEASURED["timeout"] == TIMEOUT_S
  assert sorted(MEASURED["verdicts"]) == sorted(c["name"] for c in CASES) and len(CASES) >= 60


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_lcb_compat_gives_lcb_results(judged, case):
  result, lcb = judged[case["name"]], MEASURED["verdicts"][case["name"]]
  if "deviation" in case:
    assert lcb["results"] == [True] * len(case["inputs"]) and result.verdict == "WA", result
    return
  assert result.passed == all(r is True for r in lcb["results"])
  got = (result.details["lcb_results"], result.details["lcb_error_code"])
  assert got == (lcb["results"], lcb["error_code"]), (result.verdict, result.details)


def _cli(tmp_path, row, code: str, *args: str) -> tuple[int, dict, str]:
  (tmp_path / "row.json").write_text(json.dumps(row))
  (tmp_path / "prog.py").write_text(code)
  proc = subprocess.run([sys.executable, "-m", "ssd_jax.eval.run", "--problem", str(tmp_path / "row.json"),
                         "--code", str(tmp_path / "prog.py"), *args], capture_output=True, text=True, cwd=ROOT,
                        timeout=120)
  return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_eval_run_judges_a_program_against_a_row(tmp_path):
  stdin = lcb_row("abc1", "2025-03-01T00:00:00", public=[{"input": "3 4\n", "output": "7\n", "testtype": "stdin"}],
                  private=[{"input": "1 1\n", "output": "2\n", "testtype": "stdin"}], blob=True)
  rc, out, _ = _cli(tmp_path, stdin, "a, b = map(int, input().split())\nprint(a + b)\n")
  assert rc == 0 and out["verdict"] == "AC" and out["tests_total"] == 2 and out["lcb_results"] == [True, True]
  assert out["mode"] == "lcb_compat" and out["isolation"] == "bwrap"
  rc, out, _ = _cli(tmp_path, stdin, "import sys\nfor line in sys.stdin:\n    print(sum(map(int, line.split())))\n")
  assert rc == 0 and (out["verdict"], out["lcb_results"], out["lcb_error_code"]) == ("RE", [-4], -4)
  rc, out, _ = _cli(tmp_path, stdin, "import sys\nfor line in sys.stdin:\n    print(sum(map(int, line.split())))\n",
                    "--mode", "real_io")
  assert rc == 0 and out["verdict"] == "AC"  # the author's intent, with a real stdin
  call = lcb_row("lc1", "2025-03-01T00:00:00", platform="leetcode", func_name="f",
                 public=[{"input": "2\n3", "output": "5", "testtype": "functional"}],
                 private=[{"input": "1\n1", "output": "2", "testtype": "functional"}])
  rc, out, _ = _cli(tmp_path, call, "class Solution:\n    def f(self, a, b):\n        return a * b\n", "--timeout", "2")
  assert rc == 0 and (out["verdict"], out["lcb_results"], out["failed_test"]) == ("WA", [False], 0)


def test_eval_run_names_the_field_of_a_malformed_row(tmp_path):
  row = lcb_row("abc2", "2025-03-01T00:00:00", metadata="{not json")
  proc_rc, out, err = _cli(tmp_path, row, "print(1)\n")
  assert proc_rc == 2 and "'metadata'" in out["error"] and "row.json" in err
  del row["metadata"]
  proc_rc, out, _ = _cli(tmp_path, row, "print(1)\n")
  assert proc_rc == 2 and "'metadata'" in out["error"]
