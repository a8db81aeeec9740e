"""LCB-parity golden tests for extraction, program building, judging and pass@k (code_eval.md §12).

Programs run in the real sandbox (`ssd_jax.eval.sandbox.Sandbox`, bubblewrap as root, as CI runs), so the judge
sees exactly the outcomes a real evaluation gets: frames parsed by the sandbox, output and memory limits,
signals, and infrastructure failures (SANDBOX_ERROR).
"""

from __future__ import annotations

import decimal
import json
import math
import subprocess
import sys

import pytest

from ssd_jax.eval import isolation
from ssd_jax.eval.compare import lcb_stdout_equal
from ssd_jax.eval.extract import extract_code, extract_first_python_block
from ssd_jax.eval.judge import SampleResult, judge_many, judge_sample
from ssd_jax.data.problems import Problem, TestCase, load_humaneval_problems
from ssd_jax.eval.passk import pass_at_k, score
from ssd_jax.eval.programs import FrameError, Opaque, decode_frame, detect_stdin_idioms, lcb_wrap_stdin
from ssd_jax.eval.sandbox import Sandbox, SandboxConfig

# Distinct from the other test modules' slot uids, so that their sandboxes do not serialize with this one.
BASE_UID = 61900
STDOUT_CAP = 1 << 20  # small, so that the output-limit test floods it in milliseconds


@pytest.fixture(scope="module")
def sandbox():
  with Sandbox(SandboxConfig(workers=2, base_uid=BASE_UID, stdout_cap=STDOUT_CAP)) as box:
    yield box


def stdin_problem(*tests: tuple[str, str], pid: str = "abc000_a") -> Problem:
  return Problem(id=pid, title="t", platform="atcoder", difficulty="easy", contest_date=None, starter_code="",
                 fn_name=None, mode="stdin", tests=tuple(TestCase(i, o, "stdin") for i, o in tests),
                 n_public=len(tests))


def call_problem(fn_name: str, *tests: tuple[str, str], pid: str = "3000") -> Problem:
  return Problem(id=pid, title="t", platform="leetcode", difficulty="medium", contest_date=None, starter_code="",
                 fn_name=fn_name, mode="call", tests=tuple(TestCase(i, o, "functional") for i, o in tests),
                 n_public=len(tests))


def fenced(code: str) -> str:
  return f"Here is my solution.\n```python\n{code}\n```\n"


# --- §12.1 comparator ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("got,want,ok", [
    ("1.0", "1", True), ("0.50", "0.5", True), ("-0", "0", True), ("1e3", "1000", True),
    ("3 \n\n", "3", True), ("\n\n3\n", "3\n\n", True), ("1\r\n2\r\n", "1\n2", True),
    ("1\n\n2", "1\n2", False), ("Yes", "yes", False), ("1.00000001", "1", False), ("a  b", "a b", False),
    ("0.3333333333", "0.33333333333", False)])
def test_lcb_comparator(got, want, ok):
  assert lcb_stdout_equal(got, want) is ok


# --- §12.7 extraction ---------------------------------------------------------------------------------------------

def test_extraction_takes_last_block_and_flags_it():
  text = "```python\nprint(1)\n```\nExample usage:\n```python\nprint(2)\n```"
  e = extract_code(text)
  assert (e.code, e.fence_count, e.last_of_several, e.unclosed) == ("print(2)", 4, True, False)
  assert extract_first_python_block(text).code == "print(1)"


def test_extraction_one_fence_is_no_code_and_unclosed():
  e = extract_code("```python\nprint(1)\n")
  assert (e.code, e.fence_count, e.unclosed) == ("", 1, True)
  assert extract_first_python_block("```python\nprint(1)\n").code == ""


def test_extraction_fence_inside_a_line_counts():
  text = "use ``` fences\nprint(3)\nok ```\n"
  assert extract_code(text).code == "print(3)"
  # an inline fence in prose shifts LCB's pairing; the analysis extractor does not take it as a block
  text = "Wrap code in ``` like this.\n```python\nprint(4)\n```"
  assert extract_code(text).code == "print(4)" and extract_code(text).unclosed
  assert extract_first_python_block(text).code == "print(4)"


def test_judge_no_code(sandbox):
  result = judge_sample(stdin_problem(("", "1")), "```python\nprint(1)\n", sandbox)
  assert result.verdict == "NO_CODE" and result.details["extraction"]["unclosed"]
  assert result.wall_s == 0 and result.isolation == ""


# --- stdin mode: prelude, wrapping, exits (§12.3-12.6, A16) -------------------------------------------------------

PRELUDE_USER = """
q = deque(map(int, input().split()))
h: List[int] = []
for x in q:
    heappush(h, -x)
print(-heappop(h), gcd(12, 18), sqrt(16))
"""


def test_prelude_names_without_imports(sandbox):
  problem = stdin_problem(("3 9 4\n", "9 6 4.0\n"))
  assert judge_sample(problem, fenced(PRELUDE_USER), sandbox).verdict == "AC"
  plain = judge_sample(problem, fenced(PRELUDE_USER), sandbox, mode="plain")
  assert plain.verdict == "RE" and "NameError" in plain.details["stderr_tail"]


def test_main_guard_as_last_statement_runs_and_elsewhere_is_dead(sandbox):
  last = "def main():\n    print(int(input()) * 2)\n\nif __name__ == \"__main__\":\n    main()"
  problem = stdin_problem(("21\n", "42\n"))
  assert judge_sample(problem, fenced(last), sandbox).verdict == "AC"
  not_last = "def main():\n    print(int(input()) * 2)\nif __name__ == '__main__':\n    main()\nx = 1"
  result = judge_sample(problem, fenced(not_last), sandbox)
  assert result.verdict == "WA" and "main_guard_not_last" in result.details["stdin_idioms"]  # LCB parity
  assert judge_sample(problem, fenced(not_last), sandbox, mode="plain").verdict == "AC"


def test_wrap_hoists_imports_into_module_scope():
  wrapped = lcb_wrap_stdin("import sys\nfrom math import *\nx = 1\nprint(x)")
  tail = wrapped.split("sys.setrecursionlimit(50000)\n", 1)[1]
  assert tail.strip().splitlines() == ["import sys", "from math import *", "def wrapped_function():", "    x = 1",
                                       "    print(x)"]
  assert lcb_wrap_stdin("def broken(:\n") == "def broken(:\n"


def test_recursion_depth_and_big_int_printing(sandbox):
  big = str(decimal.Decimal(7 ** 11840))  # the test process keeps the default 4300-digit str limit
  assert len(big) > 10 ** 4
  code = "def depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\nprint(depth(10**4))\nprint(7**11840)"
  assert judge_sample(stdin_problem(("", f"10000\n{big}\n")), fenced(code), sandbox).verdict == "AC"
  assert judge_sample(stdin_problem(("", "")), fenced(code), sandbox, mode="plain").verdict == "RE"  # limit 1000


def test_sys_exit_after_printing_is_judged_by_output(sandbox):
  problem = stdin_problem(("2\n", "4\n"))
  for exit_call in ("sys.exit(0)", "sys.exit(1)", "exit()"):
    code = f"import sys\nprint(int(input()) ** 2)\n{exit_call}"
    assert judge_sample(problem, fenced(code), sandbox).verdict == "AC", exit_call
  assert judge_sample(problem, fenced("import sys\nprint(4)\nsys.exit(1)"), sandbox, mode="plain").verdict == "RE"
  unflushed = fenced("import os, sys\nsys.stdout.write('4\\n')\nos._exit(0)")
  early = judge_sample(problem, unflushed, sandbox, mode="real_io")
  assert early.verdict == "WA"  # A16b: unflushed output is lost, exit status 0 is no evidence
  early = judge_sample(problem, unflushed, sandbox)  # LCB: the grading process ends, no result: [-2], code -5
  assert early.verdict == "RE" and early.details["lcb_results"] == [-2] and early.details["lcb_error_code"] == -5


def test_stdin_stops_at_first_failure_and_reports_errors(sandbox):
  problem = stdin_problem(("1\n", "1\n"), ("2\n", "2\n"), ("3\n", "99\n"), ("4\n", "4\n"))
  result = judge_sample(problem, fenced("print(input())"), sandbox)
  assert (result.verdict, result.tests_passed, result.tests_total) == ("WA", 2, 4)
  assert result.details["failed_test"] == 2 and result.details["lcb_code"] == -2
  crash = judge_sample(problem, fenced("print(1)\nraise ValueError('boom')"), sandbox)
  assert crash.verdict == "RE" and crash.details["lcb_code"] == -4 and "boom" in crash.details["error"]
  assert crash.details["lcb_results"] == [-4]
  slow = judge_sample(problem, fenced("while True:\n    pass"), sandbox, timeout_s=0.3)
  assert slow.verdict == "TLE" and slow.details["lcb_code"] == -3


def test_judge_many_advances_stdin_samples_in_lock_step(sandbox, monkeypatch):
  problem = stdin_problem(("1\n", "1\n"), ("2\n", "2\n"), ("3\n", "3\n"))
  samples = [(problem, fenced("print(input())"), 0), (problem, fenced("print(1)"), 1),
             (problem, "no code", 2), (problem, fenced("print(input())"), 3)]
  batches = []
  run_many = sandbox.run_many
  monkeypatch.setattr(sandbox, "run_many", lambda programs: batches.append(len(programs)) or run_many(programs))
  results = judge_many(samples, sandbox, mode="plain")
  assert [r.verdict for r in results] == ["AC", "WA", "NO_CODE", "AC"]
  assert [r.sample_index for r in results] == [0, 1, 2, 3]
  assert batches == [3, 3, 2]  # sample 1 fails its second test


def test_stdin_idiom_detector():
  code = ("import sys, os\nfor line in sys.stdin:\n    pass\nx = sys.stdin.buffer.readline()\n"
          "s = sys.stdin.readline()[:-1]\ntry:\n    input()\nexcept EOFError:\n    pass\nos.read(0, 10)\n"
          "def f():\n    global x\n    x = 2\nif __name__ == '__main__':\n    f()\nprint(x)\n")
  assert set(detect_stdin_idioms(code)) >= {"for_line_in_stdin", "stdin_buffer_readline", "readline_strip_last_char",
                                            "eof_error_handling", "os_read_fd0", "global_of_top_level_name",
                                            "main_guard_not_last", "top_level_loop"}
  assert detect_stdin_idioms("print(sum(map(int, input().split())))") == ()
  assert detect_stdin_idioms("def (") == ("syntax_error",)


# --- §12.2 call-based ---------------------------------------------------------------------------------------------

def test_call_based_semantics(sandbox):
  pair = call_problem("f", ("1\n2", "[1, 2]"))
  cases = {
      "class Solution:\n    def f(self, a: int, b: int) -> List[int]:\n        return (a, b)": "AC",  # tuple == list
      "def f(a, b):\n    return [a, b]": "AC",  # module-level function
      "def f(a, b):\n    return [b, a]": "WA",
  }
  for code, verdict in cases.items():
    assert judge_sample(pair, fenced(code), sandbox).verdict == verdict, code
  nested = call_problem("f", ("1\n2", "[[1, 2]]"))
  assert judge_sample(nested, fenced("def f(a, b):\n    return ([a, b],)"), sandbox).verdict == "AC"
  assert judge_sample(nested, fenced("def f(a, b):\n    return [(a, b)]"), sandbox).verdict == "WA"  # nested tuple
  truthy = call_problem("g", ("3", "1"), ("0", "0"))
  assert judge_sample(truthy, fenced("def g(x):\n    return x > 2"), sandbox).verdict == "AC"  # True == 1
  floats = call_problem("h", ("0.1\n0.2", "0.30000000000000004"))
  assert judge_sample(floats, fenced("def h(a, b):\n    return a + b"), sandbox).verdict == "AC"
  exact = call_problem("h", ("0.1\n0.2", "0.3"))
  assert judge_sample(exact, fenced("def h(a, b):\n    return a + b"), sandbox).verdict == "WA"  # no tolerance
  keys = call_problem("k", ("1", '{"1": 2}'))
  assert judge_sample(keys, fenced("def k(x):\n    return {x: 2}"), sandbox).verdict == "WA"
  assert judge_sample(keys, fenced("def k(x):\n    return {str(x): 2}"), sandbox).verdict == "AC"


def test_call_based_values_round_trip_exactly(sandbox):
  big = str(decimal.Decimal(3 ** 20000))  # 9543 digits: over the parent's default str limit, under LCB's 50000
  problem = call_problem("v", ("0", f"[null, true, 1.5, -0.0, \"\\u00e9\\ud800\", {big}]"))
  code = "def v(x):\n    return [None, True, 1.5, 0.0, '\\u00e9\\ud800', 3 ** 20000]"
  assert judge_sample(problem, fenced(code), sandbox).verdict == "AC"
  opaque = judge_sample(call_problem("v", ("0", "[1, 2]")), fenced("def v(x):\n    return {1, 2}"), sandbox)
  assert opaque.verdict == "WA" and "Opaque('set')" in opaque.details["got"]
  deep = judge_sample(call_problem("v", ("0", "[]")), fenced("def v(x):\n    for _ in range(600):\n        x = [x]\n"
                                                               "    return x"), sandbox)
  assert deep.verdict == "WA" and "Opaque('list')" in deep.details["got"]
  huge = judge_sample(call_problem("v", ("0", "1")), fenced("def v(x):\n    return 3 ** 110000"), sandbox)
  assert huge.verdict == "WA" and "Opaque('int')" in huge.details["got"]  # over LCB's 50000-digit limit
  nan = judge_sample(call_problem("v", ("0", "NaN")), fenced("def v(x):\n    return float('nan')"), sandbox)
  assert nan.verdict == "WA"  # nan != nan, as with LCB's ==


def test_call_based_stops_at_first_failure_and_missing_frames_never_pass(sandbox):
  problem = call_problem("f", ("1", "1"), ("2", "2"), ("3", "3"))
  ident = "def f(x):\n    if x == {bad}:\n        {action}\n    return x"
  outcomes = {"return -1": "WA", "raise KeyError(x)": "RE", "import sys; sys.exit(0)": "RE",
              "import os; os._exit(0)": "RE", "x = [0] * 10 ** 12": "MLE", "while True: pass": "TLE"}
  for action, verdict in outcomes.items():
    result = judge_sample(problem, fenced(ident.format(bad=2, action=action)), sandbox, timeout_s=0.5)
    # An exit ends LCB's grading process: no result list survives, LCB records [-2] (code -5), no test passed.
    passed = 0 if "exit" in action else 1
    assert (result.verdict, result.tests_passed) == (verdict, passed), action
  assert judge_sample(problem, fenced("def f(x)\n  return x"), sandbox).details["stage"] == "setup"
  missing = judge_sample(problem, fenced("class Solution:\n    def other(self, x):\n        return x"), sandbox)
  assert missing.verdict == "RE" and "AttributeError" in missing.details["error"]


def test_call_based_harness_attacks_never_pass(sandbox):
  problem = call_problem("f", ("1", "1"), ("2", "4"))
  attacks = [
      "class A(int):\n    def __eq__(self, o): return True\ndef f(x):\n    return A(0)",  # A17 (int subclass)
      "class B:\n    def __eq__(self, o): return True\ndef f(x):\n    return B()",  # A17
      "import json\njson.dumps = lambda *a, **k: '1'\ndef f(x):\n    return -x",  # A18
      "import builtins, sys\nbuiltins.repr = lambda o: '1'\nsys.modules['json'] = None\ndef f(x):\n    return -x",
      "import os\ndef f(x):\n    os.write(3, b'\\x00\\x00\\x00\\x02{}')\n    return -x",  # garbage on fd 3
      ("import os\ndef f(x):\n    for fd in range(3, 128):\n        try: os.write(fd, b'\\x00\\x00\\x00\\x01{')\n"
       "        except OSError: pass\n    return -x"),  # scribbles on whatever fd it finds
      "print('\\x00\\x00\\x00\\x19{\"i\": 0, \"ok\": true, \"value\": 1}')\ndef f(x):\n    return -x",
  ]
  for code in attacks:
    result = judge_sample(problem, fenced(code), sandbox)
    assert result.verdict in ("WA", "RE") and result.tests_passed == 0, (code, result)


def test_decode_frame():
  frame = decode_frame(b'{"i": 0, "ok": true, "value": {"__tuple__": [1, {"__dict__": [[{"__tuple__": [2]}, 3]]},'
                       b' -0.0, {"__opaque__": "set"}, NaN]}}')
  value = frame["value"]
  assert value[:3] == (1, {(2,): 3}, 0) and isinstance(value[3], Opaque) and math.isnan(value[4])
  assert value[3] != value[3]
  deep = b"[" * 100000 + b"]" * 100000
  huge = b"9" * 60000  # over LCB's 50000-digit limit: bounded work on a forged frame
  for bad in (b"{", b'{"i": "0", "ok": true}', b'{"i": 0, "ok": true, "value": {"x": 1}}', b"\xff",
              b'{"i": 0, "ok": true, "value": ' + deep + b"}", b'{"i": 0, "ok": true, "value": ' + huge + b"}"):
    with pytest.raises(FrameError):
      decode_frame(bad)


# --- HumanEval (§13, A16d) ----------------------------------------------------------------------------------------

def test_humaneval_positive_evidence(sandbox):
  problems = load_humaneval_problems()
  assert len(problems) == 164
  first = problems[0]
  results = judge_many([(first, first.canonical_solution, 0), (first, "    exit(0)\n", 1),
                        (first, "    import os; os._exit(0)\n", 2), (first, "    return False\n", 3),
                        (first, "", 4), (first, "    while True: pass\n", 5)], sandbox, timeout_s=0.5)
  assert [r.verdict for r in results] == ["AC", "RE", "RE", "WA", "NO_CODE", "TLE"]
  assert results[0].tests_passed == results[0].tests_total == 1


# --- outcomes only the sandbox produces: output limit, memory limit by signal, infrastructure failure -------------

def test_output_limit_is_ole_at_the_flooding_test(sandbox):
  problem = stdin_problem(("1\n", "1\n"), ("9\n", "9\n"))
  flood = f"n = int(input())\nprint(n if n < 5 else 'x' * {2 * STDOUT_CAP})"
  for mode in ("real_io", "plain"):
    result = judge_sample(problem, fenced(flood), sandbox, mode=mode)
    assert (result.verdict, result.tests_passed, result.details["failed_test"]) == ("OLE", 1, 1), (mode, result)
    assert result.details["outcome"] == "output_limit" and result.details["lcb_code"] == -2  # a WA for LCB
  # lcb_compat captures print() in a StringIO, as LCB does; a write to the real fd 1 still meets the limit, and the
  # grading process, killed, leaves LCB's [-2] with code -5.
  raw = f"import os\nn = int(input())\nif n < 5:\n    print(n)\nelse:\n    os.write(1, b'x' * {2 * STDOUT_CAP})"
  result = judge_sample(problem, fenced(raw), sandbox)
  assert (result.verdict, result.tests_passed, result.details["outcome"]) == ("OLE", 0, "output_limit"), result
  assert result.details["lcb_results"] == [-2] and result.details["lcb_error_code"] == -5


# Fills the address space up to the limit, then crashes in C code (as an extension that does not check a failed
# allocation would): killed by SIGSEGV at a peak RSS near the limit.
EXHAUST_THEN_CRASH = """import ctypes
chunks = []
try:
    while True:
        chunks.append(b"x" * (16 << 20))
except MemoryError:
    pass
ctypes.string_at(0)
"""

# The sandbox reports a peak RSS only above its parent's own peak (ru_maxrss survives the launcher's vfork and exec),
# and this process's peak depends on what the suite ran before: the judging runs in a fresh interpreter.
JUDGE_FRESH = """
import json, sys
from ssd_jax.eval.judge import judge_sample
from ssd_jax.data.problems import Problem, TestCase
from ssd_jax.eval.sandbox import Sandbox, SandboxConfig

spec = json.loads(sys.argv[1])
problem = Problem(id="abc000_a", title="t", platform="atcoder", difficulty="easy", contest_date=None, starter_code="",
                  fn_name=None, mode="stdin", tests=tuple(TestCase(i, o, "stdin") for i, o in spec["tests"]),
                  n_public=len(spec["tests"]))
with Sandbox(SandboxConfig(workers=1, base_uid=spec["base_uid"], memory_bytes=spec["memory_bytes"])) as sandbox:
  for mode in spec["modes"]:
    print(json.dumps(judge_sample(problem, spec["completion"], sandbox, mode=mode).to_json()))
"""


def test_memory_limit_by_signal_is_mle_and_a_small_crash_is_re(sandbox):
  modes = ["lcb_compat", "real_io", "plain"]
  spec = {"tests": [["", "1"]], "completion": fenced(EXHAUST_THEN_CRASH), "modes": modes, "base_uid": BASE_UID + 2,
          "memory_bytes": 512 << 20}
  # Through sh, which forks the interpreter rather than exec'ing it: a process spawned straight from this one
  # (vfork + exec) starts at this process's peak RSS, which after the engine tests is above the limit.
  argv = ["/bin/sh", "-c", '"$@"; exit $?', "sh", sys.executable, "-c", JUDGE_FRESH, json.dumps(spec)]
  proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = [json.loads(line) for line in proc.stdout.splitlines()]
  assert [r["verdict"] for r in results] == ["MLE"] * len(modes), results
  for r in results:
    assert (r["details"]["outcome"], r["details"]["signal"], r["tests_passed"]) == ("signaled", 11, 0), r
  assert results[0]["details"]["lcb_results"] == [-2] and results[0]["details"]["lcb_error_code"] == -5
  # The same signal far below the memory limit is a runtime error.
  crash = fenced("import ctypes\nctypes.string_at(0)")
  for mode in modes:
    result = judge_sample(stdin_problem(("", "1")), crash, sandbox, mode=mode)
    assert (result.verdict, result.details["signal"]) == ("RE", 11), (mode, result)


def test_a_sandbox_that_cannot_start_the_program_is_sandbox_error_in_every_mode(sandbox, monkeypatch):
  # Only the sandbox can say that it did not start a program: one that mimics bwrap's complaint is an RE.
  mimic = fenced("import sys\nsys.stderr.write(\"bwrap: Unknown option --x\\n\")\nsys.exit(1)")
  assert judge_sample(stdin_problem(("", "1")), mimic, sandbox, mode="plain").verdict == "RE"
  # bwrap giving up before it starts the program (as on a host that forbids namespaces): here, an option it rejects.
  bwrap_argv = isolation.bwrap_argv
  monkeypatch.setattr(isolation, "bwrap_argv",
                      lambda *args, **kwargs: bwrap_argv(*args, **kwargs) + ["--ssd-jax-no-such-option"])
  humaneval = load_humaneval_problems()[0]
  samples = [(stdin_problem(("1\n", "1\n")), fenced("print(input())"), 0),
             (call_problem("f", ("1", "1")), fenced("def f(x):\n    return x"), 1),
             (humaneval, humaneval.canonical_solution, 2)]
  for mode in ("lcb_compat", "real_io", "plain"):
    for result in judge_many(samples, sandbox, mode=mode):
      assert (result.verdict, result.tests_passed, result.details["failed_test"]) == ("SANDBOX_ERROR", 0, 0), result
      assert result.details["outcome"] == "sandbox_error" and result.details["lcb_code"] is None
      assert "did not start the program" in result.details["sandbox_error"], result
      assert "--ssd-jax-no-such-option" in result.details["sandbox_error"], result


def test_a_bwrap_setup_failure_after_its_child_started_is_sandbox_error(sandbox, monkeypatch):
  # bwrap reports its child's pid before the child builds the mounts: a bind whose source is missing fails after
  # that record, with exit status 1 as a program's. The start record written inside the finished sandbox tells the
  # two apart (before it, this was judged RE and never retried).
  bwrap_argv = isolation.bwrap_argv

  def missing_bind(*args, **kwargs):
    argv = bwrap_argv(*args, **kwargs)
    return argv[:-2] + ["--ro-bind", "/ssd-jax-no-such-source", "/x"] + argv[-2:]

  monkeypatch.setattr(isolation, "bwrap_argv", missing_bind)
  for mode in ("lcb_compat", "real_io", "plain"):
    result = judge_sample(stdin_problem(("1\n", "1\n")), fenced("print(input())"), sandbox, mode=mode)
    assert (result.verdict, result.details["outcome"]) == ("SANDBOX_ERROR", "sandbox_error"), result
    assert "Can't find source path /ssd-jax-no-such-source" in result.details["sandbox_error"], result


# --- §12.9 pass@k -------------------------------------------------------------------------------------------------

def test_pass_at_k_values():
  assert pass_at_k(10, 0, 1) == 0 and pass_at_k(10, 0, 5) == 0
  assert pass_at_k(10, 10, 5) == 1 and pass_at_k(10, 6, 5) == 1
  assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252) and round(pass_at_k(10, 3, 5), 4) == 0.9167
  for c in range(11):
    assert pass_at_k(10, c, 1) == pytest.approx(c / 10)
    assert pass_at_k(10, c, 5) == pytest.approx(1 - math.comb(10 - c, 5) / math.comb(10, 5))
  with pytest.raises(ValueError):
    pass_at_k(4, 1, 5)


def _result(pid: str, index: int, verdict: str) -> SampleResult:
  return SampleResult(pid, index, verdict, 0, 1, 0.0, "test", {})


def test_score_macro_average_and_groups():
  problems = [stdin_problem(pid="a"), call_problem("f", pid="b"),
              Problem(id="c", title="", platform="atcoder", difficulty="hard", contest_date=None, starter_code="",
                      fn_name=None, mode="stdin")]
  verdicts = {"a": ["AC"] * 3 + ["WA"] * 7, "b": ["AC"] * 10, "c": ["TLE"] * 4 + ["NO_CODE"] * 6}
  results = [_result(pid, i, v) for pid, vs in verdicts.items() for i, v in enumerate(vs)]
  report = score(results, problems, ks=(1, 5, 20))
  assert report["ks"] == [1, 5] and report["ks_omitted"] == [20]
  assert report["overall"]["pass@1"] == pytest.approx((0.3 + 1 + 0) / 3)
  assert report["overall"]["pass@5"] == pytest.approx((1 - 21 / 252 + 1 + 0) / 3)
  assert report["by_difficulty"]["easy"]["pass@1"] == pytest.approx(0.3)
  assert report["by_difficulty"]["medium"]["n_problems"] == 1
  assert report["by_platform"]["atcoder"]["pass@1"] == pytest.approx(0.15)
  assert report["per_problem"]["a"] == {"n": 10, "c": 3, "pass@1": pytest.approx(0.3),
                                        "pass@5": pytest.approx(1 - 21 / 252)}
  assert report["verdicts"] == {"AC": 13, "NO_CODE": 6, "TLE": 4, "WA": 7}
  with pytest.raises(ValueError, match="without any judged sample"):
    score(results[:10], problems)
  with pytest.raises(ValueError, match="judged twice"):
    score(results + results[:1], problems)
