"""One process of a two-process jax.distributed job on localhost, for tests/test_coordination.py.

`python tests/coordination_helper.py barrier SLEEP_S TIMEOUT_S` sleeps SLEEP_S, then meets the other process at
the barrier "test.meet" twice in a row (TIMEOUT_S 0: the default timeout). It prints one JSON line, {"process",
"waited_s"} or, when the barrier timed out, {"process", "waited_s", "error"} and exits 3.

`python tests/coordination_helper.py evaluate OUT_DIR TOKENIZER.model JUDGE_DELAY_S` runs `evaluate_sweep` of the
tiny random qwen3 (tests/synth_helper.py) on 4 synthetic problems at two temperatures in the real sandbox; this
process's first judging ends JUDGE_DELAY_S late. It prints {"process", "wall_s", "runs": {T: n_problems}}.

Both join the job from SSD_COORDINATOR / SSD_NUM_PROCESSES / SSD_PROCESS_ID.
"""

from __future__ import annotations

import json
import os
import sys
import time

from synth_helper import ENGINE, tiny_model  # also puts the repository root on sys.path

import jax  # noqa: E402

from ssd_jax import coordination  # noqa: E402


class LateJudging:
  """An `evaluate_sweep` progress callback under which this process's first judging ends `delay_s` late."""

  def __init__(self, delay_s: float):
    self.delay_s = delay_s

  def __call__(self, phase: str, done: int, total: int) -> None:
    if phase == "judge" and done == total:
      time.sleep(self.delay_s)
      self.delay_s = 0.0


def meet(sleep_s: float, timeout_s: float) -> int:
  """Sleeps, then two barriers of the same name; the exit status (3 on a timeout)."""
  time.sleep(sleep_s)
  t0 = time.time()
  try:
    for _ in range(2):
      coordination.barrier("test.meet", timeout_s or None)
  except coordination.BarrierTimeoutError as e:
    print(json.dumps({"process": coordination.process_index(), "waited_s": time.time() - t0, "error": str(e)}))
    return 3
  print(json.dumps({"process": coordination.process_index(), "waited_s": time.time() - t0}))
  return 0


def evaluate(out_dir: str, tokenizer_path: str, judge_delay_s: float) -> int:
  """A two-temperature evaluation of this process's share; the exit status."""
  from ssd_jax.eval.evaluate import EvalSampling, evaluate_sweep
  from ssd_jax.sampling.sampler import SamplingConfig
  from ssd_jax.eval.sandbox import Sandbox, SandboxConfig
  from ssd_jax.data.synthetic import synthetic_problems
  from ssd_jax.sampling.engine import Engine

  t0 = time.time()
  with open(tokenizer_path, "rb") as f:
    model = tiny_model(f.read())
  engine = Engine(model.params, model.cfg, model.tokenizer.stop_ids, ENGINE)
  sampling = EvalSampling(SamplingConfig(max_new_tokens=16), n=1, prompt_style="lcb")
  with Sandbox(SandboxConfig(workers=1)) as sandbox:
    result = evaluate_sweep(engine, model.tokenizer, synthetic_problems(4), sandbox, (0.7, 1.0), sampling=sampling,
                            out_dir=out_dir, tag="tiny", log=lambda s: None, process_index=coordination.process_index(),
                            process_count=coordination.process_count(), progress=LateJudging(judge_delay_s))
  print(json.dumps({"process": coordination.process_index(), "wall_s": time.time() - t0,
                    "runs": {t: run["n_problems"] for t, run in result["runs"].items()}}))
  return 0


def main(argv: list[str]) -> int:
  jax.distributed.initialize(os.environ["SSD_COORDINATOR"], num_processes=int(os.environ["SSD_NUM_PROCESSES"]),
                             process_id=int(os.environ["SSD_PROCESS_ID"]))
  # Start the backend now: it waits for every process's (gloo), which must not be part of the wait at a barrier.
  jax.devices()
  if argv[1] == "barrier":
    return meet(float(argv[2]), float(argv[3]))
  return evaluate(argv[2], argv[3], float(argv[4]))


if __name__ == "__main__":
  sys.exit(main(sys.argv))
