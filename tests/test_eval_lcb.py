"""LCB `code_generation_lite` loader on synthetic shards (code_eval.md §1, §2, §12.8) and the HumanEval loader."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import pickle
import zlib

import pytest

from ssd_jax.data.lcb import (ERRATA_IDS, build_manifest, decode_private_tests, iter_problems, load_lcb, load_problem,
                              select_lcb, shards_for_version)
from ssd_jax.data.problems import ProblemError, load_humaneval_problems


def encode_private(tests: list[dict]) -> str:
  """LCB's blob: base64(zlib(pickle(str of JSON)))."""
  return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()


def lcb_row(qid: str, date: str, *, platform: str = "atcoder", difficulty: str = "easy", func_name: str | None = None,
            public: list[dict] | None = None, private: list[dict] | None = None, blob: bool = False,
            **overrides) -> dict:
  kind = "functional" if func_name else "stdin"
  public = public if public is not None else [{"input": "1\n", "output": "1\n", "testtype": kind}]
  private = private if private is not None else [{"input": "2\n", "output": "2\n", "testtype": kind}]
  row = {"question_title": f"title {qid}", "question_content": f"statement {qid}", "platform": platform,
         "question_id": qid, "contest_id": "c1", "contest_date": date,
         "starter_code": "class Solution:\n    def f(self, x):\n        " if func_name else "",
         "difficulty": difficulty, "public_test_cases": json.dumps(public),
         "private_test_cases": encode_private(private) if blob else json.dumps(private),
         "metadata": json.dumps({"func_name": func_name} if func_name else {})}
  row.update(overrides)
  return row


def write_shard(path, rows: list[dict]) -> str:
  with open(path, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")
  return str(path)


@pytest.fixture
def shards(tmp_path):
  """test.jsonl (older problems) and test6.jsonl (2025), with both private encodings and both modes."""
  write_shard(tmp_path / "test.jsonl", [
      lcb_row("abc300_a", "2023-05-06T21:00:00", blob=True),
      lcb_row("2700", "2023-06-01T10:30:00", platform="leetcode", difficulty="medium", func_name="f",
              public=[{"input": "1\n[2, 3]", "output": "[1, 2]", "testtype": "functional"}],
              private=[{"input": "4\n[]", "output": "true", "testtype": "functional"}]),
  ])
  write_shard(tmp_path / "test6.jsonl", [
      lcb_row("abc400_b", "2025-02-01T00:00:00", difficulty="hard", blob=True),
      lcb_row("abc343_e", "2025-03-01T21:00:00", difficulty="hard"),
      lcb_row("3500", "2025-05-01T14:30:00", platform="leetcode", func_name="g",
              public=[{"input": "1", "output": "1", "testtype": "stdin"}], private=[]),
  ])
  return tmp_path


def test_private_tests_round_trip_both_encodings():
  tests = [{"input": "3\n1 2 3\n", "output": "6\n", "testtype": "stdin"}]
  assert decode_private_tests(json.dumps(tests)) == tests
  assert decode_private_tests(encode_private(tests)) == tests


def test_malicious_pickle_is_rejected_without_running(tmp_path):
  canary = tmp_path / "pwned"

  class Evil:
    def __reduce__(self):
      return os.system, (f"touch {canary}",)

  blob = base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()
  with pytest.raises(ValueError, match="refused global"):
    decode_private_tests(blob)
  assert not canary.exists()
  not_a_str = base64.b64encode(zlib.compress(pickle.dumps([{"input": "1"}]))).decode()
  with pytest.raises(ValueError, match="expected a str"):
    decode_private_tests(not_a_str)
  with pytest.raises(ValueError, match="neither JSON"):
    decode_private_tests("not json, not base64 !!!")


def test_select_and_load_both_shards(shards):
  selection = select_lcb(str(shards))
  assert [r.id for r in selection.refs] == ["2700", "3500", "abc300_a", "abc343_e", "abc400_b"]  # LCB sorts by id
  assert [os.path.basename(f) for f in selection.files] == ["test.jsonl", "test6.jsonl"]
  problems = {p.id: p for p in iter_problems(selection.refs)}
  call = problems["2700"]
  assert (call.mode, call.fn_name, call.n_public, call.platform, call.difficulty) == ("call", "f", 1, "leetcode",
                                                                                       "medium")
  assert [(t.input, t.output) for t in call.tests] == [("1\n[2, 3]", "[1, 2]"), ("4\n[]", "true")]  # public first
  assert call.starter_code.startswith("class Solution") and call.contest_date == dt.datetime(2023, 6, 1, 10, 30)
  assert problems["abc300_a"].mode == "stdin" and problems["abc300_a"].tests[1].input == "2\n"  # from the blob
  assert problems["3500"].mode == "call" and len(problems["3500"].tests) == 1  # func_name decides, not testtype
  assert problems["abc400_b"].question == "statement abc400_b" and problems["abc400_b"].contest_id == "c1"


def test_versions_pick_shards(shards):
  assert shards_for_version("release_v1") == ("test.jsonl",)
  assert shards_for_version("release_v3") == ("test.jsonl", "test2.jsonl", "test3.jsonl")
  assert shards_for_version("release_latest") == shards_for_version("release_v6")
  assert shards_for_version("v6") == ("test6.jsonl",)
  assert shards_for_version("v2_v4") == ("test2.jsonl", "test3.jsonl", "test4.jsonl")
  for bad in ("release_v7", "v0", "v4_v2", "latest"):
    with pytest.raises(ProblemError, match="unknown LCB version"):
      shards_for_version(bad)
  assert [r.id for r in select_lcb(str(shards), version="v6").refs] == ["3500", "abc343_e", "abc400_b"]
  assert len(select_lcb(str(shards), version="release_v1").refs) == 2
  with pytest.raises(ProblemError, match="test2.jsonl, test3.jsonl, test4.jsonl, test5.jsonl"):
    select_lcb(str(shards), version="release_v6")
  assert len(select_lcb(str(shards / "test6.jsonl")).refs) == 3
  with pytest.raises(ProblemError, match="pass the directory"):
    select_lcb(str(shards / "test6.jsonl"), version="v6")


def test_date_window_is_inclusive_at_midnight(shards):
  def ids(**window):
    return [r.id for r in select_lcb(str(shards), **window).refs]
  assert ids(start_date="2025-02-01", end_date="2025-05-01") == ["abc343_e", "abc400_b"]  # 3500 is at 14:30
  assert ids(start_date="2025-02-01", end_date="2025-05-02") == ["3500", "abc343_e", "abc400_b"]
  assert ids(start_date=dt.date(2025, 2, 2)) == ["3500", "abc343_e"]
  assert ids(end_date="2023-06-01") == ["abc300_a"]
  assert ids(platforms=["leetcode"]) == ["2700", "3500"]
  with pytest.raises(ProblemError, match="YYYY-MM-DD"):
    select_lcb(str(shards), start_date="Feb 2025")
  with pytest.raises(ProblemError, match="midnight"):
    select_lcb(str(shards), end_date=dt.datetime(2025, 5, 1, 12))


def test_manifest(shards):
  selection = select_lcb(str(shards), version="v6", start_date="2025-01-01")
  manifest = build_manifest(iter_problems(selection.refs), selection)
  assert manifest["n_problems"] == 3 and manifest["problem_ids"] == ["3500", "abc343_e", "abc400_b"]
  assert manifest["contest_date_min"] == "2025-02-01T00:00:00"
  assert manifest["contest_date_max"] == "2025-05-01T14:30:00"
  assert manifest["by_platform"] == {"atcoder": 2, "leetcode": 1}
  assert manifest["by_difficulty"] == {"easy": 1, "hard": 2} and manifest["by_mode"] == {"call": 1, "stdin": 2}
  assert manifest["tests_per_problem"] == {"3500": 1, "abc343_e": 2, "abc400_b": 2} and manifest["tests_total"] == 5
  assert manifest["errata_in_selection"] == ["abc343_e"] and "abc343_e" in ERRATA_IDS
  assert manifest["selection"]["version"] == "v6" and manifest["selection"]["start_date"] == "2025-01-01"
  json.dumps(manifest)


def test_sha256_verification(shards):
  digest = hashlib.sha256((shards / "test6.jsonl").read_bytes()).hexdigest()
  selection = select_lcb(str(shards), version="v6", verify_sha256=True, expected_sha256={"test6.jsonl": digest})
  assert selection.sha256 == {"test6.jsonl": digest}
  with pytest.raises(ProblemError, match="differs from the recorded"):
    select_lcb(str(shards), version="v6", verify_sha256=True)  # the real v6 digest
  with pytest.raises(ProblemError, match="no recorded SHA-256"):
    select_lcb(str(shards), version="v1", verify_sha256=True, expected_sha256={})


@pytest.mark.parametrize("override,field,expected", [
    ({"platform": "topcoder"}, "platform", "one of"),
    ({"difficulty": None}, "difficulty", "a string, got null"),
    ({"contest_date": "yesterday"}, "contest_date", "ISO-8601"),
    ({"metadata": "{not json"}, "metadata", "JSON text"),
    ({"metadata": json.dumps({"func_name": 3})}, "metadata", "identifier"),
    ({"question_content": "  "}, "question_content", "non-empty"),
    ({"public_test_cases": 5}, "public_test_cases", "a string"),
])
def test_malformed_light_fields_name_file_line_and_field(tmp_path, override, field, expected):
  row = lcb_row("abc1_a", "2024-01-01T00:00:00", **override)
  path = write_shard(tmp_path / "test.jsonl", [lcb_row("abc0_a", "2024-01-01T00:00:00"), row])
  with pytest.raises(ProblemError) as info:
    select_lcb(path)
  message = str(info.value)
  assert f"{path}: line 2 (id 'abc1_a')" in message and f"field {field!r}" in message and expected in message


def test_missing_field_and_bad_lines(tmp_path):
  row = lcb_row("abc1_a", "2024-01-01T00:00:00")
  del row["starter_code"]
  with pytest.raises(ProblemError, match=r"line 1 \(id 'abc1_a'\): field 'starter_code': .*missing field"):
    select_lcb(write_shard(tmp_path / "a.jsonl", [row]))
  bad = tmp_path / "b.jsonl"
  bad.write_text(json.dumps(lcb_row("abc0_a", "2024-01-01T00:00:00")) + "\n\n{oops\n")
  with pytest.raises(ProblemError, match=r"b.jsonl: line 3: expected a JSON object on the line"):
    select_lcb(str(bad))
  dup = write_shard(tmp_path / "c.jsonl", [lcb_row("x", "2024-01-01T00:00:00")] * 2)
  with pytest.raises(ProblemError, match=r"line 2: field 'question_id': 'x' repeats .*c.jsonl: line 1"):
    select_lcb(dup)


@pytest.mark.parametrize("override,field,expected", [
    ({"private_test_cases": "!!not a blob!!"}, "private_test_cases", "base64"),
    ({"public_test_cases": json.dumps([{"input": "1", "output": 1, "testtype": "stdin"}])},
     "public_test_cases[0].output", "a string, got 1"),
    ({"public_test_cases": json.dumps([{"input": "1", "output": "1", "testtype": "weird"}])},
     "public_test_cases[0].testtype", "one of"),
    ({"public_test_cases": "[]", "private_test_cases": "[]"}, "public_test_cases", "at least one test"),
    ({"metadata": json.dumps({"func_name": "f"}),
      "public_test_cases": json.dumps([{"input": "1\n[2]", "output": "1", "testtype": "functional"}]),
      "private_test_cases": encode_private([{"input": "[1,", "output": "1", "testtype": "functional"}])},
     "private_test_cases[0].input", "one JSON value per line"),
])
def test_malformed_tests_fail_at_load(tmp_path, override, field, expected):
  path = write_shard(tmp_path / "test.jsonl", [lcb_row("abc1_a", "2024-01-01T00:00:00", **override)])
  (ref,) = select_lcb(path).refs  # the light fields are fine; tests are decoded lazily
  with pytest.raises(ProblemError) as info:
    load_problem(ref)
  message = str(info.value)
  assert f"{path}: line 1 (id 'abc1_a')" in message and f"field {field!r}" in message and expected in message


def test_call_mode_accepts_huge_integers(tmp_path):
  huge = "9" * 5000  # over the default int_max_str_digits of the evaluating interpreter
  row = lcb_row("3001", "2024-01-01T00:00:00", platform="leetcode", func_name="f",
                public=[{"input": f"{huge}\n[1]", "output": huge, "testtype": "functional"}], private=[])
  (problem,) = load_lcb(write_shard(tmp_path / "test.jsonl", [row]))
  assert problem.tests[0].output == huge


def test_load_problem_detects_a_changed_file(shards):
  ref = select_lcb(str(shards), version="v1").refs[0]
  write_shard(shards / "test.jsonl", [lcb_row("other", "2023-05-06T21:00:00")] * 2)
  with pytest.raises(ProblemError, match="changed since select_lcb"):
    load_problem(ref)


def test_humaneval_problems():
  problems = load_humaneval_problems()
  assert len(problems) == 164 and len({p.id for p in problems}) == 164
  first = problems[0]
  assert first.id == "HumanEval/0" and first.mode == "humaneval" and first.entry_point == "has_close_elements"
  assert first.prompt.startswith("from typing import List") and "def check(candidate)" in first.test
  assert first.canonical_solution and first.tests == () and first.platform == "humaneval"
