"""LiveCodeBench `code_generation_lite`: the one loader of its shards, for evaluation and for prompts (code_eval.md §1, §2).

LCB shards are read straight from local JSONL files (`test.jsonl`, `test2.jsonl` .. `test6.jsonl`); the hub and
its loading script are never used. Rows are large (the private tests of `test6.jsonl` alone are ~134 MB), so
selection is two-phase: `select_lcb` parses each row once, validates the light fields and keeps a `ProblemRef`
(file, line, byte offset); `load_problem` re-reads one row and decodes its tests only when it is needed.

Parity rules reproduced from LCB: problems are sorted by the `question_id` string; the date window is inclusive at
both ends with the bounds at midnight (a problem later on the end date is out); `metadata.func_name` alone picks the
call-based mode (never `testtype`); tests are the public ones followed by the private ones, in file order.

Private tests are JSON text, or base64(zlib(pickle(str of JSON))). Unpickling downloaded bytes can run code, so the
unpickler refuses every global (a pickled `str` needs none) and the result must be a `str`.

A malformed row raises `ProblemError` naming the file, the line, the field and what was expected, because a silently
smaller benchmark is not comparable with anyone else's. A prompt source, which samples only the statements, passes
`on_bad_row` to record such rows and go on (`problems.OnBadRow`).
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import datetime as dt
import hashlib
import io
import json
import os
import pickle
import re
import zlib
from typing import Any, Iterable, Iterator, Mapping, Sequence

from ssd_jax.data.problems import (MISSING, OnBadRow, Problem, ProblemError, RowContext, TestCase, iter_lines,
                                   loads_json, parse_row)

__all__ = ["DIFFICULTIES", "ERRATA_IDS", "LcbSelection", "PLATFORMS", "ProblemRef", "SHARD_FILES", "SHARD_SHA256",
           "build_manifest", "decode_private_tests", "iter_problems", "load_lcb", "load_problem", "problem_from_row",
           "select_lcb", "shards_for_version"]

SHARD_FILES = ("test.jsonl", "test2.jsonl", "test3.jsonl", "test4.jsonl", "test5.jsonl", "test6.jsonl")
# As recorded by a third party (code_eval.md §1.1): a mismatch means a different data revision, not corruption.
SHARD_SHA256 = {
    "test.jsonl": "2bd02b38beb48e8c46b5b9987095d999ff38cd8efc255ea5d58974317c48f63f",
    "test2.jsonl": "095df7c5daf15f882c51a9deb84085cff1e073495a5dbcf95015a564d485f3a3",
    "test3.jsonl": "28ed26cc83363ce3f1fe2d5fad9f8393077beb1907b167a31bd3b32f80801b79",
    "test4.jsonl": "d711138ddaebfcf5f8ec6a4283ee677298c0f5c5d374a235af92aaf0584510da",
    "test5.jsonl": "7f77571c2a6df0c2a72a3277650309f67e01e0008e18117e624633df53f81214",
    "test6.jsonl": "bb4c364f71921c4495a6ad15abe1a927350b720009f4933e2e71f8af0f6fd1f5",
}
# The LCB ERRATA ids named in code_eval.md §2.3 (multiple valid outputs, interactive, erroneous tests). They are
# reported when selected, never dropped.
ERRATA_IDS = frozenset({"abc337_e", "abc343_e", "abc355_e", "arc185_c", "arc189_a"})
PLATFORMS = ("leetcode", "atcoder", "codeforces")
DIFFICULTIES = ("easy", "medium", "hard")
_TESTTYPES = ("stdin", "functional")
_ID_KEYS = ("question_id",)


@dataclasses.dataclass(frozen=True)
class ProblemRef:
  """A selected LCB row with its light fields, tests not decoded: `line` is 1-based, `offset` the line's byte offset."""

  id: str
  title: str
  platform: str
  difficulty: str
  contest_date: dt.datetime
  fn_name: str | None
  path: str
  line: int
  offset: int
  question: str = ""
  starter_code: str = ""
  contest_id: str = ""

  @property
  def mode(self) -> str:
    return "call" if self.fn_name else "stdin"


@dataclasses.dataclass(frozen=True)
class LcbSelection:
  """The outcome of `select_lcb`: the refs (sorted by id) and how they were chosen, for the manifest."""

  refs: tuple[ProblemRef, ...]
  files: tuple[str, ...]
  version: str | None
  start_date: dt.datetime | None
  end_date: dt.datetime | None
  platforms: tuple[str, ...] | None
  sha256: Mapping[str, str] | None  # file name -> verified digest, when verification was asked for

  def to_json(self) -> dict[str, Any]:
    return {"files": list(self.files), "version": self.version,
            "start_date": self.start_date.date().isoformat() if self.start_date else None,
            "end_date": self.end_date.date().isoformat() if self.end_date else None,
            "platforms": list(self.platforms) if self.platforms else None,
            "sha256": dict(self.sha256) if self.sha256 is not None else None}


def shards_for_version(version: str) -> tuple[str, ...]:
  """Shard file names of an LCB release tag: `release_vN` (cumulative), `release_latest`, `vN`, `vX_vY`."""
  last = len(SHARD_FILES)
  if version == "release_latest":
    return SHARD_FILES
  match = re.fullmatch(r"release_v(\d+)", version)
  if match and 1 <= int(match[1]) <= last:
    return SHARD_FILES[:int(match[1])]
  match = re.fullmatch(r"v(\d+)", version)
  if match and 1 <= int(match[1]) <= last:
    return (SHARD_FILES[int(match[1]) - 1],)
  match = re.fullmatch(r"v(\d+)_v(\d+)", version)
  if match and 1 <= int(match[1]) <= int(match[2]) <= last:
    return SHARD_FILES[int(match[1]) - 1:int(match[2])]
  raise ProblemError(f"unknown LCB version {version!r}; expected release_v1..release_v{last}, release_latest, "
                     f"v1..v{last} or vX_vY with X <= Y")


def _midnight(value: str | dt.date | None, name: str) -> dt.datetime | None:
  """LCB parses window bounds as YYYY-MM-DD, i.e. midnight (§2.2)."""
  if value is None:
    return None
  if isinstance(value, dt.datetime):
    if value.time() != dt.time():
      raise ProblemError(f"{name}={value!r}: window bounds are dates (midnight), as in LCB")
    return value
  if isinstance(value, dt.date):
    return dt.datetime(value.year, value.month, value.day)
  try:
    return dt.datetime.strptime(value, "%Y-%m-%d")
  except ValueError as e:
    raise ProblemError(f"{name}={value!r}: expected a YYYY-MM-DD date") from e


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def _shard_paths(source: str | Sequence[str], version: str | None) -> list[str]:
  if not isinstance(source, str):  # Resolved shard files (a hub snapshot).
    bad = [p for p in source if not p.endswith(".jsonl") or not os.path.isfile(p)]
    if bad or not source or version is not None:
      raise ProblemError(f"LCB shards {list(source)}: expected existing .jsonl files"
                         + (" (a version selects shards of a directory)" if version is not None else ""))
    return list(source)
  if os.path.isfile(source):
    if version is not None:
      raise ProblemError(f"{source}: a version selects shards of a directory; pass the directory, not one file")
    return [source]
  if not os.path.isdir(source):
    raise ProblemError(f"{source}: no such file or directory")
  if version is None:
    paths = [os.path.join(source, name) for name in SHARD_FILES if os.path.isfile(os.path.join(source, name))]
    if not paths:
      raise ProblemError(f"{source}: holds none of the LCB shards {', '.join(SHARD_FILES)}")
    return paths
  paths = [os.path.join(source, name) for name in shards_for_version(version)]
  missing = [os.path.basename(p) for p in paths if not os.path.isfile(p)]
  if missing:
    raise ProblemError(f"{source}: version {version!r} needs shard(s) {', '.join(missing)}, which are missing")
  return paths


def _fn_name(row: Mapping[str, Any], ctx: RowContext) -> str | None:
  text = ctx.text(row, "metadata")
  try:
    metadata = json.loads(text) if text.strip() else {}
  except json.JSONDecodeError as e:
    raise ctx.error("metadata", f"JSON text of an object ({e.msg})") from e
  if not isinstance(metadata, dict):
    raise ctx.error("metadata", "JSON text of an object", metadata)
  name = metadata.get("func_name")
  if name is not None and (not isinstance(name, str) or not name.isidentifier()):
    raise ctx.error("metadata", "func_name to be a Python identifier or absent", name)
  return name or None


def _ref(row: Mapping[str, Any], path: str, line: int, offset: int) -> ProblemRef:
  ctx = RowContext(path, line, row, _ID_KEYS)
  qid = ctx.text(row, "question_id", non_empty=True)
  date_text = ctx.text(row, "contest_date")
  try:
    date = dt.datetime.fromisoformat(date_text)
  except ValueError as e:
    raise ctx.error("contest_date", "an ISO-8601 datetime", date_text) from e
  for field in ("public_test_cases", "private_test_cases"):
    ctx.text(row, field)
  return ProblemRef(qid, ctx.text(row, "question_title"), ctx.choice(row, "platform", PLATFORMS),
                    ctx.choice(row, "difficulty", DIFFICULTIES), date, _fn_name(row, ctx), path, line, offset,
                    question=ctx.text(row, "question_content", non_empty=True),
                    starter_code=ctx.text(row, "starter_code"), contest_id=ctx.text(row, "contest_id"))


def select_lcb(source: str | Sequence[str], *, version: str | None = None, start_date: str | dt.date | None = None,
               end_date: str | dt.date | None = None, platforms: Sequence[str] | None = None,
               verify_sha256: bool = False, expected_sha256: Mapping[str, str] | None = None,
               on_bad_row: OnBadRow = None) -> LcbSelection:
  """Scans LCB shards and selects problems; tests are left undecoded.

  Args:
    source: A shard file, a directory holding `test.jsonl`, `test2.jsonl`, ..., or a list of shard files.
    version: Release tag choosing the directory's shards (`shards_for_version`); None: every shard present.
    start_date, end_date: Inclusive window on `contest_date`, bounds at midnight (LCB semantics).
    platforms: Keep only these platforms.
    verify_sha256: Check each shard against `expected_sha256` (default `SHARD_SHA256`, by file name); a file with
      no recorded digest, or a mismatch, raises.
    on_bad_row: None (a malformed row or repeated id raises), or called with the `ProblemError` of each such row,
      which is then left out (prompt sources; never evaluation).

  Raises:
    ProblemError: A malformed row or a duplicate id (without `on_bad_row`), a missing shard or a digest mismatch.
  """
  start, end = _midnight(start_date, "start_date"), _midnight(end_date, "end_date")
  if platforms is not None and any(p not in PLATFORMS for p in platforms):
    raise ProblemError(f"platforms={list(platforms)}: expected a subset of {list(PLATFORMS)}")
  paths = _shard_paths(source, version)
  digests = None
  if verify_sha256:
    table = expected_sha256 if expected_sha256 is not None else SHARD_SHA256
    digests = {}
    for path in paths:
      name, got = os.path.basename(path), _sha256(path)
      if name not in table:
        raise ProblemError(f"{path}: no recorded SHA-256 for {name!r} to verify against")
      if got != table[name]:
        raise ProblemError(f"{path}: SHA-256 {got} differs from the recorded {table[name]} (another data revision)")
      digests[name] = got
  refs: dict[str, ProblemRef] = {}
  for path in paths:
    for line_no, offset, raw in iter_lines(path):
      try:
        ref = _ref(parse_row(raw, path, line_no), path, line_no, offset)
        if ref.id in refs:
          first = refs[ref.id]
          reason = f"field 'question_id': {ref.id!r} repeats {first.path}: line {first.line}"
          raise ProblemError(f"{path}: line {line_no}: {reason}", path=path, line=line_no, id=ref.id, reason=reason)
      except ProblemError as e:
        if on_bad_row is None:
          raise
        on_bad_row(e)
        continue
      refs[ref.id] = ref
  selected = [r for r in refs.values()
              if (start is None or start <= r.contest_date) and (end is None or r.contest_date <= end)
              and (platforms is None or r.platform in platforms)]
  selected.sort(key=lambda r: r.id)
  return LcbSelection(tuple(selected), tuple(paths), version, start, end,
                      tuple(platforms) if platforms is not None else None, digests)


class _NoGlobalsUnpickler(pickle.Unpickler):
  """Refuses every global: a pickled `str` needs none, and any reference (os.system, ...) could run code."""

  def find_class(self, module: str, name: str) -> Any:
    raise pickle.UnpicklingError(f"refused global {module}.{name}: private tests must pickle a plain str")


def decode_private_tests(text: str) -> Any:
  """`private_test_cases` as decoded JSON: JSON text, else base64(zlib(pickle(str of JSON))) (§1.3).

  Raises:
    ValueError: Neither encoding decodes, the pickle references a global, or it does not hold a str.
  """
  try:
    return json.loads(text)
  except json.JSONDecodeError:
    pass
  try:
    blob = zlib.decompress(base64.b64decode(text.encode("utf-8")))
  except (binascii.Error, zlib.error, ValueError) as e:
    raise ValueError(f"neither JSON nor base64(zlib(pickle)): {e}") from e
  try:
    payload = _NoGlobalsUnpickler(io.BytesIO(blob)).load()
  except Exception as e:  # pickle raises a wide range of errors on hostile or damaged data
    raise ValueError(f"unpickling failed: {type(e).__name__}: {e}") from e
  if not isinstance(payload, str):
    raise ValueError(f"the pickle holds a {type(payload).__name__}, expected a str of JSON")
  try:
    return json.loads(payload)
  except json.JSONDecodeError as e:
    raise ValueError(f"the unpickled str is not JSON ({e.msg})") from e


def _tests(value: Any, field: str, ctx: RowContext, call_mode: bool) -> list[TestCase]:
  if not isinstance(value, list):
    raise ctx.error(field, "a JSON list of test objects", value)
  out = []
  for index, item in enumerate(value):
    where = f"{field}[{index}]"
    if not isinstance(item, dict):
      raise ctx.error(where, "an object with input/output/testtype", item)
    for key in ("input", "output", "testtype"):
      if not isinstance(item.get(key), str):
        raise ctx.error(f"{where}.{key}", "a string", item.get(key, MISSING))
    if item["testtype"] not in _TESTTYPES:
      raise ctx.error(f"{where}.testtype", f"one of {list(_TESTTYPES)}", item["testtype"])
    if call_mode:
      try:
        for line in item["input"].split("\n"):
          loads_json(line)
      except (ValueError, RecursionError) as e:
        raise ctx.error(f"{where}.input", f"one JSON value per line (call-based problem): {e}") from e
      try:
        loads_json(item["output"])
      except (ValueError, RecursionError) as e:
        raise ctx.error(f"{where}.output", f"one JSON value (call-based problem): {e}") from e
    out.append(TestCase(item["input"], item["output"], item["testtype"]))
  return out


def load_problem(ref: ProblemRef) -> Problem:
  """Re-reads `ref`'s row and decodes it fully (both test lists)."""
  with open(ref.path, "rb") as f:
    f.seek(max(ref.offset - 1, 0))
    raw = f.readline() if ref.offset == 0 else f.read(1) + f.readline()
  ctx = RowContext(ref.path, ref.line)
  changed = f"row {ref.id!r} at byte {ref.offset} (the file changed since select_lcb)"
  if ref.offset and not raw.startswith(b"\n"):
    raise ctx.error(None, changed)
  try:
    row = parse_row(raw.lstrip(b"\n"), ref.path, ref.line)
  except ProblemError as e:
    raise ctx.error(None, changed) from e
  ctx = RowContext(ref.path, ref.line, row, _ID_KEYS)
  if row.get("question_id") != ref.id:
    raise ctx.error("question_id", changed, row.get("question_id"))
  return _problem(row, ref, ctx)


def problem_from_row(row: Any, path: str, line: int = 1) -> Problem:
  """One parsed `code_generation_lite` row as a Problem; a malformed row raises `ProblemError` naming the field."""
  ctx = RowContext(path, line, row if isinstance(row, dict) else None, _ID_KEYS)
  if not isinstance(row, dict):
    raise ctx.error(None, "a JSON object (one code_generation_lite row)", row)
  return _problem(row, _ref(row, path, line, 0), ctx)


def _problem(row: Mapping[str, Any], ref: ProblemRef, ctx: RowContext) -> Problem:
  call_mode = ref.fn_name is not None
  try:
    public = json.loads(ctx.text(row, "public_test_cases"))
  except json.JSONDecodeError as e:
    raise ctx.error("public_test_cases", f"JSON text ({e.msg})") from e
  try:
    private = decode_private_tests(ctx.text(row, "private_test_cases"))
  except ValueError as e:
    raise ctx.error("private_test_cases", f"JSON text or base64(zlib(pickle(str))): {e}") from e
  tests = _tests(public, "public_test_cases", ctx, call_mode) + _tests(private, "private_test_cases", ctx, call_mode)
  if not tests:
    raise ctx.error("public_test_cases", "at least one test (public or private); an empty list passes vacuously")
  return Problem(id=ref.id, title=ref.title, platform=ref.platform, difficulty=ref.difficulty,
                 contest_date=ref.contest_date, starter_code=ref.starter_code, fn_name=ref.fn_name, mode=ref.mode,
                 tests=tuple(tests), n_public=len(public), question=ref.question, contest_id=ref.contest_id)


def iter_problems(refs: Iterable[ProblemRef]) -> Iterator[Problem]:
  """Decodes one problem at a time, so only one row's tests are in memory."""
  for ref in refs:
    yield load_problem(ref)


def load_lcb(source: str, **selection: Any) -> list[Problem]:
  """`select_lcb(source, **selection)`, fully decoded (fine for small selections; else use `iter_problems`)."""
  return list(iter_problems(select_lcb(source, **selection).refs))


def build_manifest(problems: Iterable[Problem], selection: LcbSelection | None = None) -> dict[str, Any]:
  """What was evaluated: ids, date range, counts per platform/difficulty/mode, tests per problem, ERRATA hits."""
  ids, dates, tests = [], [], {}
  counts: dict[str, collections.Counter] = {k: collections.Counter() for k in ("platform", "difficulty", "mode")}
  for problem in problems:
    ids.append(problem.id)
    if problem.contest_date is not None:
      dates.append(problem.contest_date)
    tests[problem.id] = len(problem.tests)
    for key, counter in counts.items():
      counter[getattr(problem, key)] += 1
  return {"selection": selection.to_json() if selection is not None else None,
          "n_problems": len(ids), "problem_ids": ids,
          "contest_date_min": min(dates).isoformat() if dates else None,
          "contest_date_max": max(dates).isoformat() if dates else None,
          "by_platform": dict(sorted(counts["platform"].items())),
          "by_difficulty": dict(sorted(counts["difficulty"].items())),
          "by_mode": dict(sorted(counts["mode"].items())),
          "tests_per_problem": tests, "tests_total": sum(tests.values()),
          "errata_in_selection": sorted(ERRATA_IDS.intersection(ids))}
