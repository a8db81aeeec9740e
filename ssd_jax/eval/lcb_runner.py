"""`lcb_compat`: LiveCodeBench's grading process, reproduced inside the sandbox, and LCB's results read back.

LCB (`lcb_runner/evaluation/testing_util.py` and `compute_code_generation_metrics.py`, commit 28fef95) grades one
sample in one forked process (`run_test`): it installs a SIGALRM handler that prints a line and raises
`TimeoutException`, applies its "reliability guard" (`quit`, `help`, `os.kill`, `os.fork`, `os.getcwd`,
`subprocess.Popen`, `shutil.rmtree` ... set to None; `resource`, `psutil`, `joblib`, `tkinter`, `ipdb` made
unimportable), then

- stdin problems: rewrites the program (the final `__main__` guard unwrapped, imports hoisted after its prelude,
  the rest into `wrapped_function`), execs it as module `tmp_sol` (instantiating `tmp_sol.Solution()` whenever the
  rewritten text contains "class Solution"), and calls `wrapped_function` once per test under `alarm(timeout)`
  with `sys.stdout` swapped for a StringIO and, in this order, the *real* `sys.stdin`'s `read`, `readlines` and
  `readline` patched, `sys.stdin` replaced by a mock (`read()` is always the whole input, `readlines()` a split on
  "\\n", `readline()` a StringIO's, `buffer.read()` the bytes, `buffer.readline()` always the first line, not
  iterable) and `builtins.open` by `mock_open` (the prelude's `from io import *` shadows it with `io.open`, so
  `open(0)` reads the process's empty fd 0). `SystemExit` from the program is swallowed; the StringIO's text is
  the output. An `Exception` ends grading with -3 (its repr names `timeoutexception`) or -4;
- call-based problems: execs `prelude + code` the same way and calls the method per test, comparing
  `prediction == expected` in process (a top-level tuple becomes a list first); False stops grading.

Anything that ends the process (`os._exit`, `SystemExit` out of a method, `KeyboardInterrupt`, a crash, the parent's
backstop of `(timeout + 1) * tests + 5` s) leaves no result, and LCB's `evaluate_generations_by_problem` records
`[-2]` with error code -5 (its `check_correctness` fails on the empty metadata list).

`LCB_RUNNER` does the same steps, with the same mechanisms (unittest.mock, StringIO, the same patch order, the
same guard), but never sees an expected value: it reports each test's captured output (stdin) or encoded return
value (call-based) as a frame, the parent compares (`judge.py`, LCB's comparator and `==`), and stops the run at
the first failing test as LCB would (`Program.on_frame`). A final `done` frame stands for "run_test returned".
numpy is imported before the program, as in LCB's grading process. The main thread's stack is capped at 8 MiB, the
Linux default LCB's process inherits: deep C recursion that crashes there crashes here.
"""

from __future__ import annotations

import json
import math
from typing import Callable

from ssd_jax.data.problems import Problem
from ssd_jax.eval.programs import CHANNEL, ENCODER, LCB_PRELUDE, STARTUP_SLACK_S, lcb_wrap_stdin
from ssd_jax.eval.sandbox import Program

__all__ = ["LCB_RUNNER", "LCB_STACK_BYTES", "lcb_program", "lcb_wall_timeout"]

LCB_STACK_BYTES = 8 << 20

LCB_RUNNER = CHANNEL + ENCODER + r'''

import faulthandler
from io import StringIO
from unittest.mock import mock_open, patch

try:
  import numpy  # noqa: F401  LCB's grading process has it loaded before any solution runs
except ImportError:
  pass


class TimeoutException(Exception):  # the name matters: LCB tells -3 from -4 by "timeoutexception" in repr(e)
  pass


def timeout_handler(signum, frame):
  print("timeout occured: alarm went off")
  raise TimeoutException


class _Capturing(list):
  def __enter__(self):
    self._stdout = sys.stdout
    sys.stdout = self._stringio = StringIO()
    self._stringio.close = lambda *args: 1
    return self

  def __exit__(self, *args):
    self.append(self._stringio.getvalue())
    del self._stringio
    sys.stdout = self._stdout


class _MockBuffer:
  def __init__(self, inputs):
    self.inputs = inputs.encode("utf-8")

  def read(self, *args):
    return self.inputs

  def readline(self, *args):
    return self.inputs.split(b"\n")[0] + b"\n"


class _MockStdin:
  def __init__(self, inputs):
    self.inputs = inputs
    self._stringio = StringIO(inputs)
    self.buffer = _MockBuffer(inputs)

  def read(self, *args):
    return self.inputs

  def readline(self, *args):
    return self._stringio.readline(*args)

  def readlines(self, *args):
    return self.inputs.split("\n")

  def __getattr__(self, name):
    return getattr(self._stringio, name)


def _call_with_mocked_stdin(method, inputs):
  lines = iter(inputs.split("\n"))

  # Decorators apply bottom-up: read/readlines/readline are patched on the real sys.stdin, then it is replaced.
  @patch("builtins.open", mock_open(read_data=inputs))
  @patch("sys.stdin", _MockStdin(inputs))
  @patch("sys.stdin.readline", lambda *args: next(lines))
  @patch("sys.stdin.readlines", lambda *args: inputs.split("\n"))
  @patch("sys.stdin.read", lambda *args: inputs)
  def inner(target):
    try:
      return target()
    except SystemExit:
      pass

  return inner(method)


def _guard():
  import builtins
  import shutil
  import subprocess
  faulthandler.disable()
  builtins.quit = None
  os.environ["OMP_NUM_THREADS"] = "1"
  for name in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork", "forkpty",
               "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown", "chmod", "chown",
               "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir"):
    setattr(os, name, None)
  shutil.rmtree = shutil.move = shutil.chown = None
  subprocess.Popen = None
  builtins.help = None
  for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
    sys.modules[name] = None


def _compile(code, seconds):
  signal.alarm(seconds)
  try:
    module = types.ModuleType("tmp_sol", "")
    exec(code, module.__dict__)
    compiled = module.Solution() if "class Solution" in code else module
    assert compiled is not None
  finally:
    signal.alarm(0)
  return compiled


def _error(i, e):
  code = -3 if "timeoutexception" in repr(e).lower() else -4
  return ('{"i": %d, "ok": false, "code": %d, "memory": %s, "error": %s}'
          % (i, code, "true" if isinstance(e, MemoryError) else "false", encode_basestring_ascii(repr(e)[:500])))


def _grade_stdio(code, inputs, seconds, emit):
  method = getattr(_compile(code, seconds), "wrapped_function")
  for i, text in enumerate(inputs):
    signal.alarm(seconds)
    faulthandler.enable()
    signal.alarm(seconds)
    with _Capturing() as captured:
      try:
        _call_with_mocked_stdin(method, text)
        signal.alarm(0)
      except Exception as e:
        signal.alarm(0)
        emit(_error(i, e))
        return
      finally:
        signal.alarm(0)
        faulthandler.disable()
    emit('{"i": %d, "ok": true, "stdout": %s}' % (i, encode_basestring_ascii(captured[0])))


def _grade_call(code, fn_name, inputs, seconds, emit, encode):
  method = getattr(_compile(code, seconds), fn_name)
  args = [[json.loads(line) for line in text.split("\n")] for text in inputs]
  for i, arguments in enumerate(args):
    signal.alarm(seconds)
    faulthandler.enable()
    try:
      prediction = method(*arguments)
      signal.alarm(0)
      if isinstance(prediction, tuple):
        prediction = list(prediction)
      emit('{"i": %d, "ok": true, "value": %s}' % (i, encode(prediction)))
    except Exception as e:
      signal.alarm(0)
      emit(_error(i, e))
      return
    finally:
      signal.alarm(0)
      faulthandler.disable()


def _main():
  emit, encode = _channel(), _encoder()
  with open(sys.argv[1], encoding="utf-8") as f:
    code = f.read()
  with open(sys.argv[2], encoding="utf-8") as f:
    spec = json.load(f)
  del sys.argv[1:]
  soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
  stack = spec["stack_bytes"] if hard == resource.RLIM_INFINITY else min(spec["stack_bytes"], hard)
  resource.setrlimit(resource.RLIMIT_STACK, (stack, hard))
  seconds = spec["timeout"]
  signal.signal(signal.SIGALRM, timeout_handler)
  _guard()
  signal.alarm(seconds)
  try:
    if spec["fn_name"] is None:
      _grade_stdio(code, spec["inputs"], seconds, emit)
    else:
      _grade_call(code, spec["fn_name"], spec["inputs"], seconds, emit, encode)
  except Exception as e:  # run_test's own handler: whatever failed before or around the tests is [-4]
    emit('{"i": 0, "ok": false, "code": -4, "memory": false, "setup": true, "error": %s}'
         % encode_basestring_ascii(repr(e)[:500]))
  finally:
    signal.alarm(0)
  emit('{"i": -1, "ok": true, "done": true}')


_main()
'''


def lcb_wall_timeout(n_tests: int, timeout: int) -> float:
  """LCB's per-sample backstop, `(timeout + 1) * tests + 5` s, plus the interpreter start it does not pay."""
  return (timeout + 1) * n_tests + 5 + STARTUP_SLACK_S


def lcb_program(problem: Problem, completion_code: str, *, timeout_s: float,
                on_frame: Callable[[bytes], bool] | None = None) -> Program:
  """The whole LCB grading of one sample: every test of `problem`, in one run; expected outputs stay outside.

  `timeout_s` is LCB's per-test `timeout`, an integer number of seconds for `signal.alarm` (rounded up here).
  `on_frame` sees each result frame as it arrives and may end the run (the first failing test decides).
  """
  if problem.mode not in ("stdin", "call"):
    raise ValueError(f"{problem.id}: lcb_compat grades stdin and call-based problems, not {problem.mode!r}")
  if problem.mode == "call":
    if not (problem.fn_name or "").isidentifier():
      raise ValueError(f"{problem.id}: fn_name {problem.fn_name!r} is not an identifier")
    code = LCB_PRELUDE + "\n\n" + completion_code
  else:
    code = lcb_wrap_stdin(completion_code)
  timeout = max(1, math.ceil(timeout_s))
  spec = {"fn_name": problem.fn_name if problem.mode == "call" else None, "timeout": timeout,
          "inputs": [t.input for t in problem.tests], "stack_bytes": LCB_STACK_BYTES}
  files = {"runner.py": LCB_RUNNER.encode(), "solution.py": code.encode("utf-8", "surrogatepass"),
           "tests.json": json.dumps(spec).encode()}
  return Program(files=files, argv=("/sandbox/runner.py", "/sandbox/solution.py", "/sandbox/tests.json"),
                 wall_timeout_s=lcb_wall_timeout(len(problem.tests), timeout), on_frame=on_frame)
