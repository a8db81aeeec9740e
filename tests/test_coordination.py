"""Barriers with timeouts (`ssd_jax.coordination`): a no-op on one process; two real jax.distributed processes on
localhost that meet minutes apart pass (longer than the ~30 s a gloo collective waits), a late process past an
explicit timeout is an error naming the barrier, and a two-process evaluation whose judging ends minutes apart
writes its summary."""

import importlib.machinery
import importlib.util
import json
import os
import socket
import subprocess
import sys

import pytest

from ssd_jax import coordination

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPER = os.path.join(ROOT, "tests", "coordination_helper.py")
LATE_S = 90  # minutes apart: the old device-collective barrier gave up after ~30 s on CPU
BARRIER_LATE_S = 45  # the bare barrier only needs to outlast those 30 s (CI time)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _two_processes(args0: list[str], args1: list[str], timeout: float) -> list[tuple[int, dict, str]]:
  """Runs the helper as processes 0 and 1 of one job; per process (exit status, its JSON line, stderr)."""
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, HELPER, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env={**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu", "SSD_COORDINATOR": f"127.0.0.1:{port}",
           "SSD_NUM_PROCESSES": "2", "SSD_PROCESS_ID": str(i)}) for i, args in enumerate((args0, args1))]
  out = []
  for p in procs:
    stdout, stderr = p.communicate(timeout=timeout)
    lines = stdout.strip().splitlines()
    out.append((p.returncode, json.loads(lines[-1]) if lines else {}, stderr))
  return out


def test_barrier_is_a_noop_on_one_process():
  for _ in range(3):
    coordination.barrier("test.alone", timeout_s=0.001)
  # One process returns before a barrier is even counted, whatever the timeout.
  assert coordination._entered["test.alone"] == 0  # pylint: disable=protected-access
  assert coordination.is_coordinator() and coordination.process_count() == 1


def test_default_timeout_is_the_configs_and_must_be_positive():
  loader = importlib.machinery.SourceFileLoader("coordination_default_config", os.path.join(ROOT, "configs",
                                                                                            "default.py"))
  module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
  loader.exec_module(module)
  assert coordination.barrier_timeout_s() == module.get_config().distributed.barrier_timeout_s == 6 * 3600.0
  with pytest.raises(ValueError, match="> 0"):
    coordination.set_barrier_timeout(0)


@pytest.mark.parametrize("names, expected", [
    ("1\n", [1]),
    ("/job:jax_worker/replica:0/task:2\n/job:jax_worker/replica:0/task:3\n", [2, 3]),
    ("", []),
])
def test_missing_processes_read_from_the_service_message(names, expected):
  message = ("DEADLINE_EXCEEDED: Barrier timed out. Id: x::0.\n# of tasks that reached the barrier: 1/2.\n"
             f"The first task at the barrier: 0. Some timed out task names:\n{names}\n\nRPC: /xla.coordination")
  assert coordination._missing_processes(message) == expected  # pylint: disable=protected-access


def test_late_process_past_an_explicit_timeout_is_an_error_naming_the_barrier():
  (rc0, out0, err0), (rc1, out1, _) = _two_processes(["barrier", "0", "3"], ["barrier", "10", "3"], timeout=120)
  assert rc0 == 3, err0[-3000:]
  assert out0["waited_s"] >= 3  # the timeout fired, and not before its 3 s
  for words in ("'test.meet'", "after 3 s", "process 1 had not reached it", "--config.distributed.barrier_timeout_s"):
    assert words in out0["error"]
  assert rc1 == 3 and "this one came after the others had given up" in out1["error"]  # not waiting for no one


@pytest.mark.slow
def test_processes_meeting_far_apart_both_pass():
  # Process 0, which hosts the coordination service, is the late one; the evaluation test below has process 1 late.
  (rc0, out0, err0), (rc1, out1, err1) = _two_processes(["barrier", str(BARRIER_LATE_S), "0"], ["barrier", "0", "0"],
                                                        timeout=BARRIER_LATE_S + 120)
  assert rc0 == 0, err0[-3000:]
  assert rc1 == 0, err1[-3000:]
  assert out1["waited_s"] >= BARRIER_LATE_S - 5  # process 1 waited at the barrier for the late process 0


@pytest.mark.slow
def test_evaluation_whose_judging_ends_minutes_apart_writes_its_summary(tmp_path):
  sys.path.insert(0, os.path.join(ROOT, "tests"))
  from synth_helper import tokenizer_bytes  # pylint: disable=import-outside-toplevel

  tokenizer = tmp_path / "tokenizer.model"
  tokenizer.write_bytes(tokenizer_bytes())
  out_dir = str(tmp_path / "eval")
  (rc0, out0, err0), (rc1, out1, err1) = _two_processes(
      ["evaluate", out_dir, str(tokenizer), "0"], ["evaluate", out_dir, str(tokenizer), str(LATE_S)],
      timeout=LATE_S + 300)
  assert rc0 == 0, err0[-3000:]
  assert rc1 == 0, err1[-3000:]
  assert out0["wall_s"] >= LATE_S  # process 0 waited for process 1's judging
  ids = [f"synth_{i:04d}" for i in range(4)]
  for t in ("0.7", "1"):
    with open(os.path.join(out_dir, f"tiny_T{t}.summary.json")) as f:
      summary = json.load(f)
    assert summary["problem_ids"] == ids and summary["n_problems"] == 4 and summary["process_count"] == 2
    assert sum(summary["verdicts"].values()) == 4
    assert out0["runs"][t] == out1["runs"][t] == 4
