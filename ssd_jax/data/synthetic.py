"""Synthetic LiveCodeBench-style problems for offline smoke runs (configs/tiny.py) and tests.

Each problem is an `lcb.Problem` in one of the two LCB test modes (stdin programs, call-based `class Solution`
methods) with seeded tests and a known-correct reference solution, so a pipeline run can be checked end to end
without any downloaded data. They are deliberately easy; they measure plumbing, not models.
"""

from __future__ import annotations

import json
import random

from ssd_jax.data.problems import Problem, TestCase

__all__ = ["DEFAULT_COUNT", "reference_solution", "synthetic_problems"]

DEFAULT_COUNT = 64  # problems when a config asks for synthetic problems without a limit

DIFFICULTIES = ("easy", "medium", "hard")


def _sum_two(rng: random.Random) -> tuple[str, str, str]:
  a, b = rng.randint(-1000, 1000), rng.randint(-1000, 1000)
  return f"{a} {b}\n", f"{a + b}\n", "stdin"


def _max_of_list(rng: random.Random) -> tuple[str, str, str]:
  values = [rng.randint(-99, 99) for _ in range(rng.randint(1, 8))]
  return f"{len(values)}\n{' '.join(map(str, values))}\n", f"{max(values)}\n", "stdin"


def _sum_list(rng: random.Random) -> tuple[str, str, str]:
  values = [rng.randint(-50, 50) for _ in range(rng.randint(0, 6))]
  return json.dumps(values), json.dumps(sum(values)), "functional"


def _count_vowels(rng: random.Random) -> tuple[str, str, str]:
  word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 12)))
  return json.dumps(word), json.dumps(sum(c in "aeiou" for c in word)), "functional"


# name -> (statement, starter code, fn_name, test generator, reference solution)
_FAMILIES = {
    "sum_two": ("Read two integers a and b from one line of standard input and print a + b.", "", None, _sum_two,
                "a, b = map(int, input().split())\nprint(a + b)\n"),
    "max_of_list": ("The first line holds n; the second holds n integers. Print the largest of them.", "", None,
                    _max_of_list, "input()\nprint(max(map(int, input().split())))\n"),
    "sum_list": ("Given a list of integers nums, return their sum (0 for an empty list).",
                 "class Solution:\n    def sumList(self, nums: List[int]) -> int:\n        ", "sumList", _sum_list,
                 "class Solution:\n    def sumList(self, nums):\n        return sum(nums)\n"),
    "count_vowels": ("Given a lowercase string s, return how many of its characters are vowels (a, e, i, o, u).",
                     "class Solution:\n    def countVowels(self, s: str) -> int:\n        ", "countVowels",
                     _count_vowels,
                     "class Solution:\n    def countVowels(self, s):\n        return sum(c in 'aeiou' for c in s)\n"),
}


def synthetic_problems(n: int, *, seed: int = 0, tests_per_problem: int = 3, offset: int = 0) -> list[Problem]:
  """`n` problems `synth_<offset>` ... cycling through the families, with seeded tests (the first one public)."""
  out = []
  names = sorted(_FAMILIES)
  for i in range(offset, offset + n):
    name = names[i % len(names)]
    statement, starter, fn_name, make_test, _ = _FAMILIES[name]
    rng = random.Random(f"{seed}:{i}")
    tests = tuple(TestCase(*make_test(rng)) for _ in range(tests_per_problem))
    out.append(Problem(id=f"synth_{i:04d}", title=name, platform="leetcode" if fn_name else "atcoder",
                       difficulty=DIFFICULTIES[i % 3], contest_date=None, starter_code=starter, fn_name=fn_name,
                       mode="call" if fn_name else "stdin", tests=tests, n_public=1,
                       question=f"{statement}\n\nExample input:\n{tests[0].input}\nExample output:\n{tests[0].output}"))
  return out


def reference_solution(problem: Problem) -> str:
  """A correct program for a synthetic problem (what a perfect model would answer, inside a fence)."""
  return f"```python\n{_FAMILIES[problem.title][4]}```"
