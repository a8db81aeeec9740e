"""The code suite (`ssd_jax.data.codesuite`): every reference passes in the real sandbox, a mutated reference fails
there for every problem, the held-back tests catch every mutant that a wider input pool tells apart from the
reference, and the family split is fixed and disjoint.

Mutants are first-order AST edits of the reference (a flipped comparison, + for -, a constant off by one, max for
min, upper for lower, an emptied string, and/or swapped, a dropped `not`, two call arguments swapped), then the
reference returning None. The sandbox test runs, for each problem, the first mutant
(in source order) that changes a result on the held-back tests, so "a wrong solution fails" is shown by the same
judge that scores models, not only in this process.
"""

from __future__ import annotations

import ast
import copy
import doctest
import random
import re
import signal
import textwrap
from typing import Any, Callable, Iterator

import pytest

from ssd_jax.data.codesuite import (EVAL_FAMILIES, FAMILIES, HELD_BACK_TESTS, SPLITS, TRAIN_FAMILIES, Variant,
                                    codesuite_problems, family_variant, reference_function)
from ssd_jax.data.codesuite.core import BODY_MARKER, build_problem
from ssd_jax.eval.evaluate import prompt_record
from ssd_jax.eval.judge import judge_many
from ssd_jax.data.problems import Problem
from ssd_jax.eval.sandbox import Sandbox, SandboxConfig

BASE_UID = 62300  # distinct from the other test modules' slot uids, so their sandboxes do not serialize with this one
POOL_DRAWS = 300  # extra inputs per problem that decide whether a mutant is really different from the reference

_COMPARE_SWAPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
                  ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
_BINOP_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Add, ast.FloorDiv: ast.Mult, ast.Mod: ast.FloorDiv,
                ast.Pow: ast.Mult}
_CALL_SWAPS = {"max": "min", "min": "max", "all": "any", "any": "all", "abs": "int", "sorted": "list", "sum": "max"}
_METHOD_SWAPS = {"upper": "lower", "lower": "upper", "isupper": "islower", "isdigit": "isalpha",
                 "startswith": "endswith", "split": "splitlines", "extend": "append"}


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
  return codesuite_problems("all")


# --- mutation ------------------------------------------------------------------------------------------------------

def _edits(node: ast.AST) -> Iterator[Callable[[ast.AST], None]]:
  """The first-order edits of one node, each a function applying it to (a copy of) that node."""
  if isinstance(node, ast.Compare):
    for i, op in enumerate(node.ops):
      if type(op) in _COMPARE_SWAPS:
        yield lambda n, i=i: n.ops.__setitem__(i, _COMPARE_SWAPS[type(n.ops[i])]())
  elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _BINOP_SWAPS:
    yield lambda n: setattr(n, "op", _BINOP_SWAPS[type(n.op)]())
  elif isinstance(node, ast.BoolOp):
    yield lambda n: setattr(n, "op", ast.Or() if isinstance(n.op, ast.And) else ast.And())
  elif isinstance(node, ast.Constant):
    if isinstance(node.value, bool):
      yield lambda n: setattr(n, "value", not n.value)
    elif isinstance(node.value, int):
      yield lambda n: setattr(n, "value", n.value + 1)
      yield lambda n: setattr(n, "value", n.value - 1)
    elif isinstance(node.value, str):
      yield lambda n: setattr(n, "value", "" if n.value else "x")
  elif isinstance(node, ast.Call):
    if isinstance(node.func, ast.Name) and node.func.id in _CALL_SWAPS:
      yield lambda n: setattr(n.func, "id", _CALL_SWAPS[n.func.id])
    if isinstance(node.func, ast.Attribute) and node.func.attr in _METHOD_SWAPS:
      yield lambda n: setattr(n.func, "attr", _METHOD_SWAPS[n.func.attr])
    if len(node.args) >= 2:
      yield lambda n: n.args.__setitem__(slice(0, 2), n.args[1::-1])
  elif isinstance(node, ast.DictComp):
    yield lambda n: (setattr(n, "key", n.value), setattr(n, "value", n.key))
  elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
    yield lambda n: setattr(n, "operand", ast.UnaryOp(ast.Not(), n.operand))  # `not x` -> `not not x`


def mutants(problem: Problem) -> list[str]:
  """Every first-order mutant of the reference, as a completion (the mutated body, indented like the reference),
  then the reference returning None instead (never right: every problem's tests expect two different results)."""
  tree = ast.parse(problem.prompt + problem.canonical_solution)
  func = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == problem.entry_point)
  body = func.body[1:]  # after the docstring
  sites = [(path, edit) for path, node in _walk(body) for edit in _edits(node)]
  out = []
  for path, edit in sites:
    mutated = copy.deepcopy(body)
    edit(_follow(mutated, path))
    out.append(textwrap.indent(ast.unparse(ast.fix_missing_locations(ast.Module(mutated, []))), "    ") + "\n")
  return out + ["    return None\n"]


def _walk(nodes: list[ast.stmt]) -> Iterator[tuple[tuple[Any, ...], ast.AST]]:
  """(path, node) for every node under `nodes`, in source order; a path is the fields and indexes from the list."""
  def visit(node: ast.AST, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], ast.AST]]:
    yield path, node
    for field, value in ast.iter_fields(node):
      if isinstance(value, ast.AST):
        yield from visit(value, path + (field,))
      elif isinstance(value, list):
        for i, item in enumerate(value):
          if isinstance(item, ast.AST):
            yield from visit(item, path + (field, i))

  for i, node in enumerate(nodes):
    yield from visit(node, (i,))


def _follow(nodes: list[ast.stmt], path: tuple[Any, ...]) -> ast.AST:
  node: Any = nodes
  for step in path:
    node = node[step] if isinstance(step, int) else getattr(node, step)
  return node


# --- running references and mutants in this process (our own code) --------------------------------------------------

class _Timeout(Exception):
  pass


def _raise_timeout(signum, frame):
  raise _Timeout()


def held_back(problem: Problem) -> list[tuple[tuple[Any, ...], Any]]:
  """The (arguments, expected result) of every assert of the problem's `check`."""
  check = next(n for n in ast.parse(problem.test).body if isinstance(n, ast.FunctionDef) and n.name == "check")
  out = []
  for statement in check.body:
    assert isinstance(statement, ast.Assert), ast.unparse(statement)
    compare = statement.test
    assert isinstance(compare, ast.Compare) and isinstance(compare.ops[0], ast.Eq), ast.unparse(statement)
    call = compare.left
    assert isinstance(call, ast.Call) and call.func.id == "candidate", ast.unparse(statement)
    out.append((tuple(ast.literal_eval(a) for a in call.args), ast.literal_eval(compare.comparators[0])))
  return out


def differs(function: Callable[..., Any], cases: list[tuple[tuple[Any, ...], Any]]) -> bool:
  """Whether `function` gets any case wrong (a wrong value, an exception, or over a second for all of them)."""
  signal.signal(signal.SIGALRM, _raise_timeout)
  signal.setitimer(signal.ITIMER_REAL, 1.0)
  try:
    return any(function(*copy.deepcopy(args)) != want for args, want in cases)
  except Exception:  # noqa: BLE001  (a crash is a difference)
    return True
  finally:
    signal.setitimer(signal.ITIMER_REAL, 0)


def variant_of(problem: Problem) -> Variant:
  """The family variant (seed 0) that `problem` was built from."""
  family, k = problem.id.split("/")[1:]
  for attempt in range(50):
    variant, rng = family_variant(family, int(k), attempt=attempt)
    if build_problem(problem.id, family, variant, rng) == problem:
      return variant
  raise AssertionError(f"{problem.id}: not built from any draw of its family")


def first_killed_mutant(problem: Problem) -> str:
  """The first mutant that the held-back tests tell apart from the reference (in this process)."""
  cases = held_back(problem)
  for completion in mutants(problem):
    if differs(reference_function(problem.prompt, completion, problem.entry_point), cases):
      return completion
  raise AssertionError(f"{problem.id}: no mutant of the reference fails its held-back tests")


# --- the suite's shape -----------------------------------------------------------------------------------------------

def test_families_are_split_disjoint_and_complete():
  assert len(FAMILIES) >= 40
  assert not set(TRAIN_FAMILIES) & set(EVAL_FAMILIES)
  assert set(TRAIN_FAMILIES) | set(EVAL_FAMILIES) == set(FAMILIES)
  assert len(set(TRAIN_FAMILIES)) == len(TRAIN_FAMILIES) and len(set(EVAL_FAMILIES)) == len(EVAL_FAMILIES)
  assert min(len(TRAIN_FAMILIES), len(EVAL_FAMILIES)) >= 0.4 * len(FAMILIES)  # about half each
  train = {p.title for p in codesuite_problems("train", variants=1)}
  evaluation = {p.title for p in codesuite_problems("eval", variants=1)}
  assert train == set(TRAIN_FAMILIES) and evaluation == set(EVAL_FAMILIES)


def test_problems_are_humaneval_problems(problems):
  assert len(problems) >= 400 and len(problems) == 10 * len(FAMILIES)
  assert len({p.id for p in problems}) == len(problems)
  assert len({p.prompt for p in problems}) == len(problems)
  for p in problems:
    family, k = re.fullmatch(r"codesuite/(\w+)/(\d+)", p.id).groups()
    assert p.title == family and family in FAMILIES and 0 <= int(k) < 10
    assert (p.mode, p.platform, p.difficulty, p.contest_date, p.tests) == ("humaneval", "codesuite", "", None, ())
    assert p.starter_code == p.prompt and p.fn_name == p.entry_point
    assert re.search(rf"^def {p.entry_point}\(.*\) -> .+:\n    \"\"\"", p.prompt, re.M), p.prompt
    assert p.prompt.endswith('    """\n' + BODY_MARKER) and p.canonical_solution.startswith("    ")
    cases = held_back(p)
    assert len(cases) >= HELD_BACK_TESTS and len({repr(want) for _, want in cases}) >= 2, p.id
    assert prompt_record(p).starter_code == p.prompt


def test_docstring_example_agrees_with_reference_and_is_not_a_test(problems):
  for p in problems:
    reference = reference_function(p.prompt, p.canonical_solution, p.entry_point)
    examples = doctest.DocTestParser().get_examples(reference.__doc__)
    assert len(examples) == 1, p.id
    namespace = {p.entry_point: reference}
    assert repr(eval(examples[0].source, namespace)) == examples[0].want.strip(), p.id  # noqa: S307
    shown = ast.parse(examples[0].source.strip()).body[0].value
    assert tuple(ast.literal_eval(a) for a in shown.args) not in [args for args, _ in held_back(p)], p.id


def test_deterministic_for_a_seed_and_prefix_stable():
  three = codesuite_problems("eval", seed=3, variants=3)
  assert three == codesuite_problems("eval", seed=3, variants=3)
  assert [p.prompt for p in three] != [p.prompt for p in codesuite_problems("eval", seed=4, variants=3)]
  assert three == [p for p in codesuite_problems("eval", seed=3) if int(p.id.rsplit("/", 1)[1]) < 3]
  assert codesuite_problems("all", variants=2) == codesuite_problems("train", variants=2) + codesuite_problems(
      "eval", variants=2)
  assert set(SPLITS) == {"train", "eval", "all"}


def test_bad_arguments_name_what_was_expected():
  with pytest.raises(ValueError, match="split 'test'.*expected one of"):
    codesuite_problems("test")
  with pytest.raises(ValueError, match="variants=0.*positive integer"):
    codesuite_problems("eval", variants=0)
  with pytest.raises(ValueError, match="family 'nope'"):
    family_variant("nope", 0)


# --- the held-back tests are adequate -------------------------------------------------------------------------------

def test_held_back_tests_catch_every_mutant_a_wider_pool_catches(problems):
  """A mutant that differs from the reference on 300 more inputs of the family (so it is a wrong solution) must
  fail the held-back tests too; and every problem has at least one mutant they catch."""
  escaped = []
  for p in problems:
    variant = variant_of(p)
    reference = reference_function(p.prompt, p.canonical_solution, p.entry_point)
    rng = random.Random(f"pool:{p.id}")
    pool = [(args, reference(*copy.deepcopy(args))) for args in
            list(variant.edges) + [variant.draw(rng) for _ in range(POOL_DRAWS)]]
    cases, caught = held_back(p), 0
    assert {repr(args) for args in variant.edges} <= {repr(args) for args, _ in cases}, f"{p.id}: an edge case left out"
    for completion in mutants(p):
      mutant = reference_function(p.prompt, completion, p.entry_point)
      if differs(mutant, cases):
        caught += 1
      elif differs(mutant, pool):
        escaped.append(f"{p.id}:\n{completion}")
    assert caught, f"{p.id}: no mutant fails the held-back tests"
  assert not escaped, f"{len(escaped)} wrong mutants pass the held-back tests, e.g.\n" + "\n".join(escaped[:5])


# --- the check scripts, in this process and in the real sandbox -------------------------------------------------------

def run_check(problem: Problem, completion: str) -> str:
  """Runs HumanEval's program (prompt + completion + test + check(entry_point)) here: "pass" or the exception's name."""
  signal.signal(signal.SIGALRM, _raise_timeout)
  signal.setitimer(signal.ITIMER_REAL, 2.0)
  try:
    exec(compile(f"{problem.prompt}{completion}\n{problem.test}\ncheck({problem.entry_point})\n", problem.id, "exec"),
         {"__name__": "codesuite_check"})  # noqa: S102  (our own references and their mutants)
    return "pass"
  except Exception as e:  # noqa: BLE001
    return type(e).__name__
  finally:
    signal.setitimer(signal.ITIMER_REAL, 0)


def test_check_scripts_pass_references_and_fail_mutants(problems):
  """The test text itself (not only the values it was computed from): every reference passes its `check`, every
  problem's first caught mutant fails it (in this process; the sandbox tests below run them as the judge does)."""
  assert [p.id for p in problems if run_check(p, p.canonical_solution) != "pass"] == []
  assert [p.id for p in problems if run_check(p, first_killed_mutant(p)) == "pass"] == []


def judge_references_and_mutants(problems: list[Problem]) -> None:
  """Judged as HumanEval is judged (`judge_many`, bwrap, one batch): every reference AC, every mutant WA or RE."""
  killed = [first_killed_mutant(p) for p in problems]
  with Sandbox(SandboxConfig(workers=2, base_uid=BASE_UID)) as sandbox:
    results = judge_many([(p, p.canonical_solution, 0) for p in problems]
                         + [(p, mutant, 1) for p, mutant in zip(problems, killed)], sandbox)
  references, mutated = results[:len(problems)], results[len(problems):]
  assert [(r.problem_id, r.verdict) for r in references if r.verdict != "AC"] == []
  assert [(r.problem_id, r.verdict) for r in mutated if r.verdict not in ("WA", "RE")] == []


def test_one_problem_per_family_in_the_sandbox(problems, root):
  """A variant of every family (variant i % 10 of the i-th family), so every family's references and tests meet the
  real sandbox in the fast suite."""
  judge_references_and_mutants([p for i, p in enumerate(problems) if int(p.id.rsplit("/", 1)[1]) == i // 10 % 10])


@pytest.mark.slow
def test_every_problem_in_the_sandbox(problems, root):
  """All 530 references AC and all 530 mutants rejected (~30 s on an idle 2-core machine, minutes under load)."""
  judge_references_and_mutants(problems)
