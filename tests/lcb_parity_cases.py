"""Parity cases for `lcb_compat`: programs and problems whose verdict LiveCodeBench's own harness was measured on.

Each case is a `code_generation_lite`-style problem (stdin tests, or call-based with `fn_name`) and one program.
The verdicts LCB gave (its per-test result list: True, -1 global failure, -2 WA, -3 TLE, -4 RE) are facts recorded
in `data/lcb_parity_verdicts.json` by `tests/measure_lcb_parity.py` against LCB's harness at a named commit, with
`TIMEOUT_S` per test; `tests/test_lcb_parity.py` asserts that `lcb_compat` gives the same.
"""

from __future__ import annotations

TIMEOUT_S = 2  # per test, LCB's `timeout` (an int: signal.alarm)

ADD = {"inputs": ["3 4\n", "10 20\n"], "outputs": ["7\n", "30\n"]}
LINES = {"inputs": ["3\n1\n2\n3\n", "2\n5\n5\n"], "outputs": ["6\n", "10\n"]}
COUNT = {"inputs": ["a\nb\nc\n"], "outputs": ["3\n"]}
HALF = {"inputs": ["1\n"], "outputs": ["0.5\n"]}
WORDS = {"inputs": ["2\n"], "outputs": ["Yes\n1 2\n"]}
DIV = {"inputs": ["1 4\n", "3 4\n"], "outputs": ["-3\n", "4\n"]}

CALL_ADD = {"inputs": ["3\n4", "10\n20"], "outputs": ["7", "30"], "fn_name": "add"}
CALL_PAIR = {"inputs": ["1\n2"], "outputs": ["[1, 2]"], "fn_name": "pair"}
CALL_NESTED = {"inputs": ["1\n2"], "outputs": ["[[1, 2]]"], "fn_name": "pair"}
CALL_BOOL = {"inputs": ["1"], "outputs": ["true"], "fn_name": "odd"}
CALL_FLOAT = {"inputs": ["0.1\n0.2"], "outputs": ["0.3"], "fn_name": "add"}
CALL_DICT = {"inputs": ["\"a\""], "outputs": ["{\"a\": 1}"], "fn_name": "count"}
CALL_STR = {"inputs": ["\"ab\""], "outputs": ["\"ba\""], "fn_name": "rev"}
CALL_DEEP = {"inputs": ["3000"], "outputs": ["3000"], "fn_name": "depth"}

_READ_ADD = "a, b = map(int, input().split())\n"
_SOLUTION_ADD = "class Solution:\n    def add(self, a: int, b: int) -> int:\n        return a + b\n"


def _case(name: str, problem: dict, code: str, deviation: str | None = None) -> dict:
  case = {"name": name, "code": code, **problem}
  if deviation:
    case["deviation"] = deviation
  return case


CASES = [
    # Reading stdin: what LCB's mocked sys.stdin gives.
    _case("input_split", ADD, _READ_ADD + "print(a + b)\n"),
    _case("stdin_readline", ADD, "import sys\na, b = map(int, sys.stdin.readline().split())\nprint(a + b)\n"),
    _case("stdin_read_split", ADD, "import sys\na, b = map(int, sys.stdin.read().split())\nprint(a + b)\n"),
    _case("for_line_in_stdin", ADD, "import sys\nfor line in sys.stdin:\n    a, b = map(int, line.split())\n"
          "    print(a + b)\n"),
    _case("readlines_count", COUNT, "import sys\nprint(len(sys.stdin.readlines()))\n"),
    _case("readlines_ints", LINES, "import sys\nls = sys.stdin.readlines()\nprint(sum(int(x) for x in ls[1:]))\n"),
    _case("read_after_input", LINES, "import sys\nn = int(input())\nprint(sum(map(int, sys.stdin.read().split())))\n"),
    _case("read_twice", ADD, "import sys\nsys.stdin.read()\na, b = map(int, sys.stdin.read().split())\nprint(a + b)\n"),
    _case("buffer_readline", ADD, "import sys\na, b = map(int, sys.stdin.buffer.readline().split())\nprint(a + b)\n"),
    _case("buffer_readline_twice", LINES, "import sys\nn = int(sys.stdin.buffer.readline())\n"
          "print(sum(int(sys.stdin.buffer.readline()) for _ in range(n)))\n"),
    _case("buffer_read", ADD, "import sys\na, b = map(int, sys.stdin.buffer.read().split())\nprint(a + b)\n"),
    _case("buffer_readlines", ADD, "import sys\nls = sys.stdin.buffer.readlines()\na, b = map(int, ls[0].split())\n"
          "print(a + b)\n"),
    _case("open0_read", ADD, "a, b = map(int, open(0).read().split())\nprint(a + b)\n"),
    _case("open0_readline", ADD, "a, b = map(int, open(0).readline().split())\nprint(a + b)\n"),
    _case("from_sys_import_stdin", ADD, "from sys import stdin\na, b = map(int, stdin.readline().split())\n"
          "print(a + b)\n"),
    _case("input_alias_readline", ADD, "import sys\ninput = sys.stdin.readline\na, b = map(int, input().split())\n"
          "print(a + b)\n"),
    _case("eof_loop", LINES, "total = 0\nfirst = True\nwhile True:\n    try:\n        line = input()\n"
          "    except EOFError:\n        break\n    if first:\n        first = False\n        continue\n"
          "    total += int(line)\nprint(total)\n"),
    _case("input_past_end", ADD, "a, b = map(int, input().split())\nextra = input()\nprint(a + b)\n"),
    _case("buffer_read_decode", ADD, "import sys\ndata = sys.stdin.buffer.read().decode()\n"
          "a, b = map(int, data.split())\nprint(a + b)\n"),
    # Writing stdout: what LCB's captured sys.stdout sees.
    _case("stdout_write", ADD, "import sys\n" + _READ_ADD + "sys.stdout.write(str(a + b) + '\\n')\n"),
    _case("from_sys_import_stdout", ADD, "from sys import stdout\n" + _READ_ADD + "stdout.write(str(a + b) + '\\n')\n"),
    _case("stdout_buffer_write", ADD, "import sys\n" + _READ_ADD + "sys.stdout.buffer.write(f'{a + b}\\n'.encode())\n"),
    _case("os_write_fd1", ADD, "import os\n" + _READ_ADD + "os.write(1, f'{a + b}\\n'.encode())\n"),
    _case("thread_prints_after_return", ADD, "import threading, time\n" + _READ_ADD + "def late():\n"
          "    time.sleep(0.3)\n    print(a + b)\nthreading.Thread(target=late).start()\n"),
    _case("thread_joined", ADD, "import threading\n" + _READ_ADD + "t = threading.Thread(target=lambda: print(a + b))\n"
          "t.start()\nt.join()\n"),
    _case("print_end_empty", ADD, _READ_ADD + "print(a + b, end='')\n"),
    _case("print_flush", ADD, _READ_ADD + "print(a + b, flush=True)\n"),
    # Exits and the reliability guard.
    _case("quit_after_print", ADD, _READ_ADD + "print(a + b)\nquit()\n"),
    _case("exit_after_print", ADD, _READ_ADD + "print(a + b)\nexit()\n"),
    _case("sys_exit_after_print", ADD, "import sys\n" + _READ_ADD + "print(a + b)\nsys.exit(0)\n"),
    _case("os_exit_after_print", ADD, "import os\n" + _READ_ADD + "print(a + b)\nos._exit(0)\n"),
    _case("os_fork", ADD, "import os\n" + _READ_ADD + "os.fork()\nprint(a + b)\n"),
    _case("import_resource", ADD, "import resource\n" + _READ_ADD + "print(a + b)\n"),
    _case("os_getcwd", ADD, "import os\n" + _READ_ADD + "os.getcwd()\nprint(a + b)\n"),
    _case("help_call", ADD, _READ_ADD + "help\nprint(a + b)\n"),
    # The rewrite into wrapped_function and the `class Solution` check.
    _case("class_solution_in_stdin", ADD, "class Solution:\n    def f(self):\n        return 1\n" + _READ_ADD
          + "print(a + b)\n"),
    _case("class_solution_in_comment", ADD, "# class Solution would be LeetCode\n" + _READ_ADD + "print(a + b)\n"),
    _case("class_solution_in_string", ADD, "note = 'class Solution'\n" + _READ_ADD + "print(a + b)\n"),
    _case("main_guard", ADD, "def main():\n    a, b = map(int, input().split())\n    print(a + b)\n"
          "if __name__ == \"__main__\":\n    main()\n"),
    _case("main_guard_not_last", ADD, "def main():\n    a, b = map(int, input().split())\n    print(a + b)\n"
          "if __name__ == '__main__':\n    main()\nx = 1\n"),
    _case("global_of_top_level_name", ADD, "total = 0\ndef add(x):\n    global total\n    total += x\n"
          "for v in map(int, input().split()):\n    add(v)\nprint(total)\n"),
    _case("nested_function_closure", ADD, "def solve():\n    a, b = map(int, input().split())\n    return a + b\n"
          "print(solve())\n"),
    _case("syntax_error", ADD, "print(\n"),
    _case("empty_program", ADD, ""),
    # Environment.
    _case("numpy_stdin", ADD, "import numpy as np\n" + _READ_ADD + "print(int(np.int64(a) + b))\n"),
    _case("recursion_deep_python", ADD, "import sys\nsys.setrecursionlimit(10**6)\ndef f(n):\n"
          "    return 0 if n == 0 else 1 + f(n - 1)\n" + _READ_ADD + "print(f(20000) - 20000 + a + b)\n"),
    # Time and failures.
    _case("busy_loop", ADD, "while True:\n    pass\n"),
    _case("sleep_past_timeout", ADD, "import time\ntime.sleep(5)\nprint(7)\n"),
    _case("timeout_swallowed", ADD, "import time\n" + _READ_ADD + "try:\n    while True:\n        time.sleep(0.01)\n"
          "except Exception:\n    pass\nprint(a + b)\n"),
    _case("value_error", ADD, "raise ValueError('no')\n"),
    _case("second_test_fails", DIV, "a, b = map(int, input().split())\nprint(a - b if a == 1 else b // (a - 3))\n"),
    _case("keyboard_interrupt", ADD, _READ_ADD + "print(a + b)\nraise KeyboardInterrupt\n"),
    # The comparator.
    _case("wrong_answer", ADD, _READ_ADD + "print(a - b)\n"),
    _case("trailing_spaces", ADD, _READ_ADD + "print(a + b, '  ')\n"),
    _case("extra_blank_lines", ADD, _READ_ADD + "print()\nprint(a + b)\nprint()\nprint()\n"),
    _case("extra_line", ADD, _READ_ADD + "print(a + b)\nprint(0)\n"),
    _case("decimal_equal", HALF, "input()\nprint('0.500')\n"),
    _case("decimal_close_not_equal", HALF, "input()\nprint('0.5000001')\n"),
    _case("decimal_exponent", HALF, "input()\nprint('5e-1')\n"),
    _case("case_differs", WORDS, "input()\nprint('yes')\nprint(1, 2)\n"),
    _case("inner_spacing", WORDS, "input()\nprint('Yes')\nprint('1    2')\n"),
    _case("tokens_joined", WORDS, "input()\nprint('Yes')\nprint('12')\n"),
    # Call-based (LeetCode).
    _case("call_correct", CALL_ADD, _SOLUTION_ADD),
    _case("call_wrong", CALL_ADD, "class Solution:\n    def add(self, a, b):\n        return a - b\n"),
    _case("call_module_function", CALL_ADD, "def add(a, b):\n    return a + b\n"),
    _case("call_missing_method", CALL_ADD, "class Solution:\n    def plus(self, a, b):\n        return a + b\n"),
    _case("call_solution_in_comment_module_function", CALL_ADD, "# class Solution\ndef add(a, b):\n    return a + b\n"),
    _case("call_tuple_for_list", CALL_PAIR, "class Solution:\n    def pair(self, a, b):\n        return (a, b)\n"),
    _case("call_nested_tuple", CALL_NESTED, "class Solution:\n    def pair(self, a, b):\n        return [(a, b)]\n"),
    _case("call_int_for_bool", CALL_BOOL, "class Solution:\n    def odd(self, n):\n        return n % 2\n"),
    _case("call_float_sum", CALL_FLOAT, "class Solution:\n    def add(self, a, b):\n        return a + b\n"),
    _case("call_float_for_int", CALL_ADD, "class Solution:\n    def add(self, a, b):\n        return float(a + b)\n"),
    _case("call_dict", CALL_DICT, "class Solution:\n    def count(self, s):\n        return {c: s.count(c) for c in s}\n"),
    _case("call_string", CALL_STR, "class Solution:\n    def rev(self, s: str) -> str:\n        return s[::-1]\n"),
    _case("call_none", CALL_ADD, "class Solution:\n    def add(self, a, b):\n        pass\n"),
    _case("call_exception", CALL_ADD, "class Solution:\n    def add(self, a, b):\n        return a / 0\n"),
    _case("call_busy_loop", CALL_ADD, "class Solution:\n    def add(self, a, b):\n        while True:\n"
          "            pass\n"),
    _case("call_sys_exit", CALL_ADD, "import sys\nclass Solution:\n    def add(self, a, b):\n        sys.exit(0)\n"),
    _case("call_os_exit", CALL_ADD, "import os\nclass Solution:\n    def add(self, a, b):\n        os._exit(0)\n"),
    _case("call_quit", CALL_ADD, "class Solution:\n    def add(self, a, b):\n        quit()\n"),
    _case("call_prints", CALL_ADD, "class Solution:\n    def add(self, a, b):\n        print('debug', a, b)\n"
          "        return a + b\n"),
    _case("call_typing_names", CALL_ADD, "class Solution:\n    def add(self, a: int, b: int) -> Optional[int]:\n"
          "        xs: List[int] = [a, b]\n        return sum(xs)\n"),
    _case("call_numpy_int", CALL_ADD, "import numpy as np\nclass Solution:\n    def add(self, a, b):\n"
          "        return np.int64(a) + np.int64(b)\n"),
    _case("call_numpy_bool", CALL_BOOL, "import numpy as np\nclass Solution:\n    def odd(self, n):\n"
          "        return np.bool_(n % 2 == 1)\n"),
    _case("call_state_across_tests", CALL_ADD, "class Solution:\n    calls = 0\n    def add(self, a, b):\n"
          "        Solution.calls += 1\n        return a + b if Solution.calls == 1 else 0\n"),
    _case("call_recursion_memo", CALL_DEEP, "class Solution:\n    def depth(self, n):\n        memo = {}\n"
          "        def go(k):\n            if k == 0:\n                return 0\n            if k not in memo:\n"
          "                memo[k] = 1 + go(k - 1)\n            return memo[k]\n        return go(n)\n"),
    _case("call_syntax_error", CALL_ADD, "class Solution:\n    def add(self, a, b)\n        return a + b\n"),
    _case("call_fake_equality", CALL_ADD, "class Always:\n    def __eq__(self, other):\n        return True\n"
          "class Solution:\n    def add(self, a, b):\n        return Always()\n",
          deviation="LCB compares in the grading process, so an object whose __eq__ is always True passes; "
                    "lcb_compat compares in the parent against a JSON encoding, where such an object is opaque "
                    "and equals nothing (WA). Deliberate: the sandbox never trusts the child's __eq__."),
]
