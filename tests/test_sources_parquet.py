"""Prompt sources from parquet files (the hub's rStar-Coder layout) and by hub id (snapshot_download, offline)."""

import json
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ssd_jax.data.sources import BadRowError, SourceError, SourceSpec, load_source

# The rStar-Coder seed_sft columns the loader reads, plus one it must not (the reference solution, large on the hub).
ROWS = [
  {"question_id": "a1", "question": "Sum two  numbers.\nInput: a b", "starter_code": "", "is_passed": True},
  {"question_id": "a1", "question": "Sum two numbers.\n\tInput:   a b  ", "starter_code": "", "is_passed": True},
  {"question_id": "b2", "question": "Reverse a string.", "starter_code": "", "is_passed": False},
  {"question_id": "b2", "question": "Reverse a string.", "starter_code": "", "is_passed": True},
  {"question_id": "c3", "question": "Count vowels.", "starter_code": "", "is_passed": False},
  {"question_id": "d4", "question": "Two sum.", "starter_code": "class Solution:\n    def twoSum(self):\n",
   "is_passed": True},
  {"question_id": "e5", "question": None, "starter_code": "", "is_passed": True},  # missing question
  {"question_id": "f6", "question": "   \n", "starter_code": "", "is_passed": True},  # empty prompt
  {"question_id": "g7", "question": "No verdict.", "starter_code": "", "is_passed": None},  # missing is_passed
  {"question_id": "d4", "question": "Two sum, a different statement.", "starter_code": "", "is_passed": True},
]
RSTAR_SCHEMA = pa.schema([("question_id", pa.string()), ("question", pa.string()), ("starter_code", pa.string()),
                          ("is_passed", pa.bool_()), ("response", pa.string())])


def _write_parquet(path, rows, schema=RSTAR_SCHEMA, row_group_size=3):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  full = [{**{"response": "print(1)\n" * 50}, **r} for r in rows]
  cols = {name: [r.get(name) for r in full] for name in schema.names}
  pq.write_table(pa.table(cols, schema=schema), str(path), row_group_size=row_group_size)
  return str(path)


def _write_jsonl(path, rows):
  with open(path, "w") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")
  return str(path)


def _summary(records, report):
  return ([(r.id, r.question, r.starter_code, r.meta) for r in records], report.rows, report.records,
          report.filtered, [(b.id, b.reason) for b in report.bad_rows])


def test_parquet_gives_the_same_records_as_jsonl(tmp_path, monkeypatch):
  path = _write_parquet(tmp_path / "seed_sft.parquet", ROWS)
  read_columns = []
  original = pq.ParquetFile.iter_batches

  def spy(self, *args, **kwargs):
    read_columns.append(kwargs.get("columns"))
    return original(self, *args, **kwargs)

  monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
  records, report = load_source(SourceSpec("rstar_seed", path))
  assert read_columns == [["question_id", "question", "starter_code", "is_passed"]]  # never the solutions
  assert [r.id for r in records] == ["a1", "b2", "d4", "d4#2"]
  assert report.filtered == {"not_passed": 2, "duplicate": 1}
  assert {(b.line, b.id) for b in report.bad_rows} == {(6, "e5"), (7, "f6"), (8, "g7")}  # 0-based row indices
  expected = _summary(*load_source(SourceSpec("rstar_seed", _write_jsonl(tmp_path / "seed_sft.jsonl", ROWS))))
  assert _summary(records, report) == expected


def test_parquet_filters_off_and_directories(tmp_path):
  d = tmp_path / "seed_sft"
  _write_parquet(d / "part-1.parquet", ROWS[5:])
  _write_parquet(d / "part-0.parquet", ROWS[:5])
  records, report = load_source(SourceSpec("rstar_seed", str(d)))  # files in name order, dedup across them
  assert [r.id for r in records] == ["a1", "b2", "d4", "d4#2"] and report.rows == len(ROWS)
  records, report = load_source(SourceSpec("rstar_seed", str(d), require_passed=False, dedup=False))
  assert [r.id for r in records] == ["a1", "a1#2", "b2", "b2#2", "c3", "d4", "g7", "d4#2"]
  assert report.filtered == {} and [b.id for b in report.bad_rows] == ["e5", "f6"]


def test_parquet_missing_column_is_a_bad_row_per_row(tmp_path):
  schema = pa.schema([("question_id", pa.string()), ("starter_code", pa.string()), ("is_passed", pa.bool_()),
                      ("response", pa.string())])
  path = _write_parquet(tmp_path / "no_question.parquet", ROWS[:3], schema=schema)
  records, report = load_source(SourceSpec("rstar_seed", path))
  assert records == [] and report.rows == 3
  assert [(b.line, b.id, b.reason) for b in report.bad_rows] == [
      (0, "a1", "missing field 'question'"), (1, "a1", "missing field 'question'"),
      (2, "b2", "missing field 'question'")]
  with pytest.raises(BadRowError, match=r"no_question.parquet:0: row 'a1': missing field 'question'"):
    load_source(SourceSpec("rstar_seed", path), on_bad_row="error")


def test_parquet_plain_prompts(tmp_path):
  schema = pa.schema([("id", pa.string()), ("prompt", pa.string())])
  rows = [{"id": "p0", "prompt": "Print 1."}, {"id": "p1", "prompt": None}, {"id": "p2", "prompt": "Print 2."}]
  path = str(tmp_path / "prompts.parquet")
  pq.write_table(pa.table({k: [r[k] for r in rows] for k in ("id", "prompt")}, schema=schema), path)
  records, report = load_source(SourceSpec("jsonl", path))
  assert [r.id for r in records] == ["p0", "p2"] and [b.id for b in report.bad_rows] == ["p1"]


def test_parquet_without_pyarrow_says_which_extra(tmp_path, monkeypatch):
  path = _write_parquet(tmp_path / "seed_sft.parquet", ROWS)
  monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # makes `import pyarrow.parquet` raise ImportError
  with pytest.raises(SourceError, match=r"pip install 'ssd_jax\[parquet\]'"):
    load_source(SourceSpec("rstar_seed", path))


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
  """A local snapshot of an rStar-Coder-like repo; snapshot_download returns it and records its arguments."""
  import huggingface_hub
  from huggingface_hub import constants

  snapshot = tmp_path / "snapshot"
  _write_parquet(snapshot / "seed_sft" / "data-00000-of-00002.parquet", ROWS[:5])
  _write_parquet(snapshot / "seed_sft" / "data-00001-of-00002.parquet", ROWS[5:])
  _write_parquet(snapshot / "seed_testcase" / "data-00000-of-00001.parquet", ROWS)  # another config
  (snapshot / "README.md").write_text("not data")
  calls = []

  def snapshot_download(repo_id, **kwargs):
    calls.append({"repo_id": repo_id, **kwargs})
    return str(snapshot)

  monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
  monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
  monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
  return snapshot, calls


def test_hub_id_is_fetched_and_read_like_local_files(fake_hub):
  snapshot, calls = fake_hub
  spec = SourceSpec("rstar_seed", hub_id="microsoft/rStar-Coder", hub_config="seed_sft", revision="abc123")
  records, report = load_source(spec)
  assert calls == [{"repo_id": "microsoft/rStar-Coder", "repo_type": "dataset", "revision": "abc123",
                    "allow_patterns": ["seed_sft/*"], "local_files_only": False}]
  local = load_source(SourceSpec("rstar_seed", str(snapshot / "seed_sft")))
  assert _summary(records, report) == _summary(*local)
  assert report.path == "hf://datasets/microsoft/rStar-Coder@abc123" and report.rows == len(ROWS)


def test_hub_data_files_pattern_selects_files(fake_hub):
  _, calls = fake_hub
  spec = SourceSpec("rstar_seed", hub_id="microsoft/rStar-Coder", data_files="seed_sft/data-00000-*.parquet")
  records, report = load_source(spec)
  assert calls[0]["allow_patterns"] == ["seed_sft/data-00000-*.parquet"] and calls[0]["revision"] is None
  assert [r.id for r in records] == ["a1", "b2"] and report.rows == 5
  with pytest.raises(SourceError, match="no .* files match"):
    load_source(SourceSpec("rstar_seed", hub_id="microsoft/rStar-Coder", hub_config="synthetic_sft"))


def test_hub_id_offline_names_the_id_and_the_local_path_way(monkeypatch):
  import huggingface_hub  # noqa: F401  the `hub` extra: CI has it through transformers, so missing it fails here
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  spec = SourceSpec("rstar_seed", hub_id="ssd-jax-tests/no-such-dataset", hub_config="seed_sft")
  with pytest.raises(SourceError) as info:
    load_source(spec)
  message = str(info.value)
  assert "'ssd-jax-tests/no-such-dataset'" in message and "HF_HUB_OFFLINE is set" in message
  assert "--include 'seed_sft/*'" in message and "pass the local path" in message


def test_hub_spec_validation():
  with pytest.raises(ValueError, match="not both"):
    SourceSpec("rstar_seed", path="x.parquet", hub_id="microsoft/rStar-Coder")
  with pytest.raises(ValueError, match="need a hub_id"):
    SourceSpec("rstar_seed", path="x.parquet", revision="main")
