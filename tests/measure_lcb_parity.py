"""Measures LiveCodeBench's own verdicts on the parity cases (run by hand, never in CI; LCB's code is not ours).

  python tests/measure_lcb_parity.py /path/to/LiveCodeBench [--out tests/data/lcb_parity_verdicts.json]

Imports `lcb_runner/evaluation/compute_code_generation_metrics.py` from the given checkout (it needs numpy and
tqdm) and calls its per-problem entry point, `evaluate_generations_by_problem` (check_correctness in a fresh
process, with LCB's exception handling around it), once per case of `lcb_parity_cases.CASES`, with the cases'
`TIMEOUT_S`. Writes the per-test result lists and error codes with the commit, Python and numpy versions.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import subprocess
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lcb_parity_cases import CASES, TIMEOUT_S  # noqa: E402


def _load_lcb(checkout: str) -> types.ModuleType:
  evaluation = os.path.join(checkout, "lcb_runner", "evaluation")
  # Register the packages without running lcb_runner/evaluation/__init__.py (it imports unrelated metrics).
  for name, path in (("lcb_runner", os.path.join(checkout, "lcb_runner")), ("lcb_runner.evaluation", evaluation)):
    package = types.ModuleType(name)
    package.__path__ = [path]
    sys.modules[name] = package
  spec = importlib.util.spec_from_file_location(
      "lcb_runner.evaluation.compute_code_generation_metrics",
      os.path.join(evaluation, "compute_code_generation_metrics.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("checkout", help="a LiveCodeBench git checkout")
  parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                                                    "lcb_parity_verdicts.json"))
  args = parser.parse_args()
  lcb = _load_lcb(args.checkout)
  verdicts = {}
  for case in CASES:
    sample = {"input_output": json.dumps({"inputs": case["inputs"], "outputs": case["outputs"],
                                          "fn_name": case.get("fn_name")})}
    results, metadata = lcb.evaluate_generations_by_problem(([case["code"]], sample, False, TIMEOUT_S))
    verdicts[case["name"]] = {"results": [r if isinstance(r, bool) else int(r) for r in results[0]],
                              "error_code": metadata[0].get("error_code")}
  commit = subprocess.run(["git", "-C", args.checkout, "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
  import numpy  # LCB's testing_util imported it already
  out = {"lcb_commit": commit, "timeout": TIMEOUT_S, "python": platform.python_version(), "numpy": numpy.__version__,
         "measured": datetime.date.today().isoformat(), "cases": len(verdicts), "verdicts": verdicts}
  with open(args.out, "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
  print(json.dumps({k: v for k, v in out.items() if k != "verdicts"}))


if __name__ == "__main__":
  main()
