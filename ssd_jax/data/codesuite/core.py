"""The machinery of the code suite: a family's variant -> a HumanEval-style `Problem` with held-back tests.

A family is a function `(random.Random) -> Variant`: it picks the variant's constants (which character, which
threshold, which direction, which name) and describes its inputs (a random draw plus fixed edge cases). The
reference body is the one source of truth: it is executed here, in this process, on every input, so the docstring
example and the held-back asserts are right by construction; the suite's tests then run every reference through the
real sandbox and check that mutated references fail.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import itertools
import random
import re
import textwrap
from typing import Any, Callable

from ssd_jax.data.problems import Problem

__all__ = ["Args", "BODY_MARKER", "COMPARISONS", "HELD_BACK_TESTS", "Variant", "WORDS", "build_problem", "indent_body",
           "int_list", "reference_function", "render_call", "sentence", "text", "word_list"]

Args = tuple[Any, ...]

# The line after the docstring. HumanEval's prompts end at the docstring; SmolLM2-135M then mostly repeats the stub
# with no body (one eval problem per family, T 0.7: 16 of 27 repeated, 2 passed), while with this line it mostly
# writes the body (4 of 27 repeated, 7 passed). A comment, so `prompt + completion` compiles either way, with a body
# or with a full `def`.
BODY_MARKER = "    # Write your code here\n"
HELD_BACK_TESTS = 8  # asserts per problem, at least (all edge cases, then random draws)
_MAX_DRAWS = 400  # draws tried before a family is declared unable to produce distinct tests
_TYPING_NAMES = ("Dict", "List", "Optional", "Tuple")


@dataclasses.dataclass(frozen=True)
class Variant:
  """One problem of a family before rendering.

  Attributes:
    name: The entry point.
    signature: The parameter list as written in the `def`, e.g. "nums: List[int], k: int".
    returns: The return annotation, e.g. "int".
    summary: The docstring's task sentences (the example is added by `build_problem`).
    body: The reference body, unindented Python (lines are indented by `build_problem`).
    draw: One random argument tuple; its values must be literals (repr round-trips).
    edges: Argument tuples always among the held-back tests (boundaries a wrong solution would miss).
    example: The docstring example's arguments; None picks one from the draws.
  """

  name: str
  signature: str
  returns: str
  summary: str
  body: str
  draw: Callable[[random.Random], Args]
  edges: tuple[Args, ...] = ()
  example: Args | None = None


# Short lowercase words of 3 to 6 letters (ties in length are common, on purpose: they test "the first of them").
WORDS = ("ant", "bee", "cat", "dog", "elk", "fox", "owl", "yak", "apple", "bread", "cloud", "dance", "eagle", "grape",
         "house", "lemon", "music", "river", "stone", "tiger", "jam", "kite", "moon", "nest", "pear", "rose", "sun",
         "tree", "wolf", "zebra", "banana", "garden", "orange", "pencil", "rabbit", "window", "sky", "ice", "map",
         "hat")


# Comparison operators and how a docstring says them.
COMPARISONS = {">": "greater than", "<": "less than", ">=": "at least", "<=": "at most", "==": "equal to"}


def word_list(rng: random.Random, low: int, high: int, pool: tuple[str, ...] = WORDS) -> list[str]:
  """Between `low` and `high` words from `pool` (repeats allowed)."""
  return [rng.choice(pool) for _ in range(rng.randint(low, high))]


def sentence(rng: random.Random, low: int, high: int, pool: tuple[str, ...] = WORDS) -> str:
  """Between `low` and `high` words joined by single spaces."""
  return " ".join(word_list(rng, low, high, pool))


def text(rng: random.Random, alphabet: str, low: int, high: int) -> str:
  """A string of `low` to `high` characters from `alphabet`."""
  return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))


def int_list(rng: random.Random, lo: int, hi: int, low: int, high: int) -> list[int]:
  """Between `low` and `high` integers, each in [lo, hi]."""
  return [rng.randint(lo, hi) for _ in range(rng.randint(low, high))]


def indent_body(body: str) -> str:
  """The reference body as HumanEval's `canonical_solution`: four-space indented, newline-terminated."""
  return textwrap.indent(textwrap.dedent(body).strip("\n"), "    ") + "\n"


def render_call(name: str, args: Args) -> str:
  """`name(arg1, arg2)` with every argument as a Python literal."""
  return f"{name}({', '.join(repr(a) for a in args)})"


def reference_function(prompt: str, canonical_solution: str, entry_point: str) -> Callable[..., Any]:
  """The reference as a callable: `prompt + canonical_solution` executed in a fresh namespace (our own code, never
  a model's; model code only ever runs in the sandbox)."""
  namespace: dict[str, Any] = {}
  exec(compile(prompt + canonical_solution, f"<codesuite {entry_point}>", "exec"), namespace)  # noqa: S102
  return namespace[entry_point]


def _imports(variant: Variant) -> str:
  used = [n for n in _TYPING_NAMES if re.search(rf"\b{n}\[", variant.signature + " " + variant.returns)]
  return f"from typing import {', '.join(used)}\n\n\n" if used else ""


def _literal(value: Any, where: str) -> Any:
  """`value` if it survives a repr round trip (the asserts are written as literals), else a clear error."""
  if isinstance(value, float) or eval(repr(value), {}) != value:  # noqa: S307  (our own values)
    raise ValueError(f"{where}: {value!r} is not an exact Python literal (floats and objects cannot be asserted)")
  return value


def _prompt(variant: Variant, example: Args, expected: Any) -> str:
  """HumanEval's stub (imports, signature, docstring with one example) plus `BODY_MARKER`."""
  summary = textwrap.fill(variant.summary, width=100, initial_indent="    ", subsequent_indent="    ")
  return (f"{_imports(variant)}def {variant.name}({variant.signature}) -> {variant.returns}:\n"
          f'    """{summary.lstrip()}\n'
          f"    >>> {render_call(variant.name, example)}\n"
          f"    {expected!r}\n"
          f'    """\n'
          f"{BODY_MARKER}")


def _example(variant: Variant, rng: random.Random, run: Callable[[Args], Any]) -> Args:
  """The docstring's example: the family's own, else the longest (up to 60 characters) of 12 draws whose result is
  truthy (an example returning 0, "" or [] explains little; a longer one shows more). Never an edge case: those
  stay held back."""
  if variant.example is not None:
    return variant.example
  edges = {repr(args) for args in variant.edges}
  draws = [args for args in (variant.draw(rng) for _ in range(12)) if repr(args) not in edges]
  shown = [args for args in draws if run(args) and len(repr(args)) <= 60] or draws[:1]
  return max(shown, key=lambda args: len(repr(args)))


def build_problem(problem_id: str, family: str, variant: Variant, rng: random.Random) -> Problem:
  """Renders `variant` as a HumanEval problem: one docstring example, at least `HELD_BACK_TESTS` held-back asserts.

  The tests are all the edge cases, then distinct draws (none equal to the example), until there are `HELD_BACK_TESTS`
  of them with at least two different expected results, so that a constant function cannot pass. While draws are
  plentiful, a draw whose result three tests already expect is passed over, so results are varied.

  Raises:
    ValueError: The family cannot produce such tests, or a value is not an exact literal.
  """
  body = indent_body(variant.body)
  reference = reference_function(_prompt(variant, (), None), body, variant.name)

  def run(args: Args) -> Any:
    return _literal(reference(*copy.deepcopy(args)), f"{problem_id} {render_call(variant.name, args)}")

  example = _example(variant, rng, run)
  prompt = _prompt(variant, example, run(example))
  seen, tests = {repr(example)}, []
  draws = (variant.draw(rng) for _ in range(_MAX_DRAWS))
  for n, args in enumerate(itertools.chain(variant.edges, draws)):
    outputs = collections.Counter(repr(out) for _, out in tests)
    is_edge = n < len(variant.edges)
    if not is_edge and len(tests) >= HELD_BACK_TESTS and len(outputs) > 1:
      break
    if repr(_literal(args, f"{problem_id} arguments")) in seen:
      continue
    out = run(args)
    if not is_edge and len(tests) >= HELD_BACK_TESTS and outputs[repr(out)]:
      continue  # enough tests, all expecting one result: only a different one is worth adding
    if not is_edge and outputs[repr(out)] >= 3 and n < _MAX_DRAWS // 2:
      continue
    seen.add(repr(args))
    tests.append((args, out))
  if len(tests) < HELD_BACK_TESTS or len({repr(out) for _, out in tests}) < 2:
    raise ValueError(f"{problem_id}: no {HELD_BACK_TESTS} distinct test inputs with two different results in "
                     f"{_MAX_DRAWS} draws; widen the family's inputs")
  asserts = "".join(f"    assert candidate({', '.join(map(repr, args))}) == {out!r}\n" for args, out in tests)
  test = f"\n\nMETADATA = {{'family': {family!r}}}\n\n\ndef check(candidate):\n{asserts}"
  return Problem(id=problem_id, title=family, platform="codesuite", difficulty="", contest_date=None,
                 starter_code=prompt, fn_name=variant.name, mode="humaneval", prompt=prompt, test=test,
                 entry_point=variant.name, canonical_solution=body)
