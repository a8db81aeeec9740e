"""Prompt sources and prompt rendering: rStar-Coder seed filters, LiveCodeBench rows, HumanEval, plain JSONL, bad
rows, and the exact LiveCodeBench prompt texts through a chat template."""

import gzip
import json

import pytest

import synth_helper
from ssd_jax.data.prompts import LCB_SYSTEM_MESSAGE, build_messages, render_prompts, user_prompt
from ssd_jax.data.sources import (BadRowError, PromptRecord, SourceError, SourceReport, SourceSpec, check_unique_ids,
                                  load_source, normalize_statement)
from ssd_jax.models.tokenizer import CHATML_TEMPLATE, Tokenizer


def _write_jsonl(path, rows):
  with open(path, "wb") as f:
    for row in rows:
      f.write(row if isinstance(row, bytes) else (json.dumps(row) + "\n").encode())
  return str(path)


RSTAR_ROWS = [
  {"question_id": "a1", "question": "Sum two  numbers.\nInput: a b", "starter_code": "", "is_passed": True},
  {"question_id": "a1", "question": "Sum two numbers.\n\tInput:   a b  ", "starter_code": "", "is_passed": True},
  {"question_id": "b2", "question": "Reverse a string.", "starter_code": "", "is_passed": False},
  {"question_id": "b2", "question": "Reverse a string.", "starter_code": "", "is_passed": "True"},
  {"question_id": "c3", "question": "Count vowels.", "starter_code": "", "is_passed": False},
  {"question_id": "d4", "question": "Two sum.", "starter_code": "class Solution:\n    def twoSum(self):\n",
   "is_passed": True},
  {"question_id": "e5", "starter_code": "", "is_passed": True},  # missing question
  {"question_id": "f6", "question": "   \n", "starter_code": "", "is_passed": True},  # empty prompt
  b'{"question_id": "g7", "question": "bad \xff\xfe bytes", "is_passed": true}\n',  # invalid UTF-8
  b'{"question_id": "h8", "question": \n',  # invalid JSON
  {"question_id": "d4", "question": "Two sum, a different statement.", "starter_code": "", "is_passed": True},
]


@pytest.fixture
def rstar_file(tmp_path):
  return _write_jsonl(tmp_path / "seed_sft.jsonl", RSTAR_ROWS)


def test_rstar_filters_dedups_and_reports_bad_rows(rstar_file):
  records, report = load_source(SourceSpec("rstar_seed", rstar_file))
  assert [r.id for r in records] == ["a1", "b2", "d4", "d4#2"]
  assert records[0].question == RSTAR_ROWS[0]["question"]  # the first row of a duplicate group is kept verbatim
  assert records[2].starter_code.startswith("class Solution")
  assert all(r.source == "rstar_seed" for r in records)
  assert report.rows == 11 and report.records == 4
  assert report.filtered == {"not_passed": 2, "duplicate": 1}
  bad = {(b.line, b.id): b.reason for b in report.bad_rows}
  assert set(bad) == {(7, "e5"), (8, "f6"), (9, "g7"), (10, "h8")}
  assert "missing field 'question'" in bad[7, "e5"] and "empty prompt" in bad[8, "f6"]
  assert "invalid UTF-8" in bad[9, "g7"] and "invalid JSON" in bad[10, "h8"]
  assert report.to_json()["bad_rows"] == 4


def test_rstar_without_filters_counts_more(rstar_file):
  no_pass, r1 = load_source(SourceSpec("rstar_seed", rstar_file, require_passed=False))
  assert [r.id for r in no_pass] == ["a1", "b2", "c3", "d4", "d4#2"] and r1.filtered == {"duplicate": 2}
  raw, r2 = load_source(SourceSpec("rstar_seed", rstar_file, require_passed=False, dedup=False))
  assert len(raw) == 7 and r2.filtered == {}
  limited, r3 = load_source(SourceSpec("rstar_seed", rstar_file, limit=2))
  assert [r.id for r in limited] == ["a1", "b2"] and r3.filtered["over_limit"] == 2


def test_bad_row_error_mode_names_file_line_and_id(rstar_file):
  with pytest.raises(BadRowError, match=r"seed_sft\.jsonl:7: row 'e5': missing field 'question'"):
    load_source(SourceSpec("rstar_seed", rstar_file), on_bad_row="error")


def test_normalize_statement():
  assert normalize_statement(" a \t b\n\nc ") == "a b c"


def test_directory_of_shards_and_gzip(tmp_path):
  d = tmp_path / "seed_sft"
  d.mkdir()
  _write_jsonl(d / "data-00000.jsonl", RSTAR_ROWS[:2])
  with gzip.open(d / "data-00001.jsonl.gz", "wb") as f:
    f.write((json.dumps(RSTAR_ROWS[5]) + "\n").encode())
  (d / "README.md").write_text("ignored")
  records, _ = load_source(SourceSpec("rstar_seed", str(d)))
  assert [r.id for r in records] == ["a1", "d4"]


def test_a_hub_id_given_as_a_path_is_pointed_to_hub_id(tmp_path):
  with pytest.raises(SourceError, match=r"looks like a Hugging Face hub id: name it with SourceSpec\(hub_id=.*local"):
    load_source(SourceSpec("rstar_seed", "microsoft/rStar-Coder"))
  with pytest.raises(SourceError, match="no such file"):
    load_source(SourceSpec("jsonl", str(tmp_path / "missing.jsonl")))
  with pytest.raises(SourceError, match="no such file"):  # a relative file path is not mistaken for a hub id
    load_source(SourceSpec("jsonl", "data/missing.jsonl"))


LCB_ROWS = [
  {"question_title": "Even Pairs", "question_content": "Count pairs with an even sum.\n\nSample Input 1\n3\n1 2 3",
   "platform": "atcoder", "question_id": "abc392_a", "contest_id": "abc392", "contest_date": "2025-02-08T00:00:00",
   "starter_code": "", "difficulty": "easy", "public_test_cases": json.dumps([{"input": "3\n1 2 3\n", "output": "1\n",
   "testtype": "stdin"}]), "private_test_cases": "eJy=", "metadata": "{}"},
  {"question_title": "Two Sum", "question_content": "Return indices of two numbers adding up to target.",
   "platform": "leetcode", "question_id": "3705", "contest_id": "weekly-contest-430",
   "contest_date": "2025-01-18T18:35:00", "starter_code": "class Solution:\n    def twoSum(self, nums: List[int], "
   "target: int) -> List[int]:\n        ", "difficulty": "medium", "public_test_cases": "[]",
   "private_test_cases": "[]", "metadata": json.dumps({"func_name": "twoSum"})},
  {"question_title": "No Statement", "platform": "codeforces", "question_id": "2053_B", "starter_code": ""},
]


@pytest.fixture
def lcb_records(tmp_path):
  records, report = load_source(SourceSpec("livecodebench", _write_jsonl(tmp_path / "test6.jsonl", LCB_ROWS)))
  assert [b.id for b in report.bad_rows] == ["2053_B"]
  return records


def test_livecodebench_rows(lcb_records):
  leet, stdin = lcb_records  # LCB's order: by question_id
  assert (stdin.id, stdin.starter_code, stdin.source) == ("abc392_a", "", "livecodebench")
  assert stdin.meta == {"question_title": "Even Pairs", "platform": "atcoder", "contest_id": "abc392",
                        "contest_date": "2025-02-08T00:00:00", "difficulty": "easy"}
  assert leet.meta["func_name"] == "twoSum" and leet.starter_code.startswith("class Solution:")


def test_ssd_prompt_text_both_variants(lcb_records):
  leet, stdin = lcb_records
  preamble = ("You will be given a question (problem specification) and will generate a correct Python program that "
              "matches the specification and passes all tests. You will NOT return anything except for the program.")
  assert user_prompt(stdin, "ssd") == (
      f"{preamble}\n\nQuestion: {stdin.question}\n\nRead the inputs from stdin solve the problem and write the answer "
      "to stdout (do not directly test on the sample inputs). Enclose your code within delimiters as follows. Ensure "
      "that when the python program runs, it reads the inputs, runs the algorithm and writes output to STDOUT.\n"
      "```python\n# YOUR CODE HERE\n```\n\n")
  assert user_prompt(leet, "ssd") == (
      f"{preamble}\n\nQuestion: {leet.question}\n\nYou will use the following starter code to write the solution to "
      f"the problem and enclose your code within delimiters.\n```python\n{leet.starter_code}\n```\n\n")


def test_lcb_generic_prompt_text_both_variants(lcb_records):
  leet, stdin = lcb_records
  assert user_prompt(leet, "lcb") == (
      f"### Question:\n{leet.question}\n\n### Format: You will use the following starter code to write the solution "
      f"to the problem and enclose your code within delimiters.\n```python\n{leet.starter_code}\n```\n\n"
      "### Answer: (use the provided format with backticks)\n\n")
  assert user_prompt(stdin, "lcb").startswith(f"### Question:\n{stdin.question}\n\n### Format: Read the inputs from")
  assert user_prompt(stdin, "lcb").endswith(
      "STDOUT.\n```python\n# YOUR CODE HERE\n```\n\n### Answer: (use the provided format with backticks)\n\n")
  with pytest.raises(ValueError, match="unknown prompt style"):
    user_prompt(stdin, "chatgpt")


def test_humaneval_from_the_package_data_file():
  records, report = load_source(SourceSpec("humaneval"))
  assert len(records) == 164 and report.bad_rows == [] and report.path.endswith("HumanEval.jsonl.gz")
  first = records[0]
  assert first.id == "HumanEval/0" and first.meta == {"entry_point": "has_close_elements"}
  assert first.starter_code.startswith("from typing import List\n\n\ndef has_close_elements(")
  assert "has_close_elements" in first.question
  assert "You will use the following starter code" in user_prompt(first)


def test_plain_jsonl_prompts_are_verbatim(tmp_path):
  path = _write_jsonl(tmp_path / "p.jsonl", [
      {"id": "x", "prompt": "Write a haiku about code."}, {"id": "y", "prompt": ""}, {"id": "x", "prompt": "again"},
      {"prompt": "no id"}, {"id": 7, "prompt": ["not", "text"]}])
  records, report = load_source(SourceSpec("jsonl", path))
  assert [(r.id, r.question) for r in records] == [("x", "Write a haiku about code.")]
  assert user_prompt(records[0], "lcb") == "Write a haiku about code."
  assert [(b.line, b.id) for b in report.bad_rows] == [(2, "y"), (3, "x"), (4, None), (5, "7")]
  with pytest.raises(SourceError, match="appears twice"):
    check_unique_ids(records * 2)


@pytest.fixture(scope="module")
def tokenizer():
  return Tokenizer.from_sentencepiece(synth_helper.tokenizer_bytes(), chat_template=CHATML_TEMPLATE)


def test_render_through_chat_template_with_system_message(tokenizer, lcb_records):
  rendered = render_prompts(lcb_records, tokenizer, style="lcb", system_message=LCB_SYSTEM_MESSAGE)
  user = user_prompt(lcb_records[1], "lcb")
  expected = (f"<|im_start|>system\n{LCB_SYSTEM_MESSAGE}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
              "<|im_start|>assistant\n")
  assert rendered[1].ids == tokenizer.encode(expected)
  assert tokenizer.decode(rendered[1].ids, skip_special_tokens=False) == expected
  assert rendered[1].messages == [{"role": "system", "content": LCB_SYSTEM_MESSAGE}, {"role": "user", "content": user}]
  assert build_messages(lcb_records[0])[0]["role"] == "user"  # no system turn unless asked


def test_render_passes_template_kwargs():
  template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
              "<|im_start|>assistant\n{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>"
              "\n\n{% endif %}")
  tok = Tokenizer.from_sentencepiece(synth_helper.tokenizer_bytes(), chat_template=template)
  record = PromptRecord("x", "hi", "", "jsonl", {"raw_prompt": True})
  (thinking,) = render_prompts([record], tok)
  (plain,) = render_prompts([record], tok, chat_template_kwargs={"enable_thinking": False})
  assert tok.decode(plain.ids, skip_special_tokens=False).endswith("<think>\n\n</think>\n\n")
  assert not tok.decode(thinking.ids, skip_special_tokens=False).endswith("</think>\n\n")


def test_too_long_prompts_are_bad_rows(tokenizer, lcb_records):
  lengths = [len(p.ids) for p in render_prompts(lcb_records, tokenizer)]
  limit = (lengths[0] + lengths[1]) // 2
  report = SourceReport("render", "<render>")
  kept = render_prompts(lcb_records, tokenizer, max_prompt_tokens=limit, report=report)
  longer = 0 if lengths[0] > lengths[1] else 1
  assert [p.record.id for p in kept] == [lcb_records[1 - longer].id]
  assert [(b.line, b.id) for b in report.bad_rows] == [(longer, lcb_records[longer].id)]
  assert "prompt too long" in report.bad_rows[0].reason
  with pytest.raises(BadRowError, match="prompt too long"):
    render_prompts(lcb_records, tokenizer, max_prompt_tokens=limit, report=SourceReport("render", "<r>", "error"))


def test_problem_sources_use_the_evaluation_loaders(tmp_path):
  """One loader per format: a source's prompts are `prompt_record` of the problems evaluation loads."""
  from ssd_jax.data import lcb, problems, synthetic
  from ssd_jax.data.sources import prompt_record

  records, report = load_source(SourceSpec("synthetic", limit=6, seed=3))
  assert records == [prompt_record(p, "synthetic") for p in synthetic.synthetic_problems(6, seed=3)]
  assert (report.rows, report.records, report.bad_rows) == (6, 6, [])
  records, _ = load_source(SourceSpec("humaneval"))
  assert records == [prompt_record(p) for p in problems.load_humaneval_problems()]
  good = dict(LCB_ROWS[0], private_test_cases="[]")
  rows = [good, dict(good, question_id="abc393_a", public_test_cases="[{}]")]
  shard = _write_jsonl(tmp_path / "test.jsonl", rows)
  records, _ = load_source(SourceSpec("livecodebench", shard))
  # A row whose tests are broken is still a prompt (tests are not read for sampling); evaluation refuses it.
  assert [r.id for r in records] == ["abc392_a", "abc393_a"]
  assert [prompt_record(p) for p in lcb.select_lcb(shard).refs] == records
  with pytest.raises(problems.ProblemError, match=r"line 2 \(id 'abc393_a'\): field 'public_test_cases\[0\].input'"):
    lcb.load_lcb(shard)


def test_problem_sources_take_the_bad_row_policy(tmp_path):
  """The loaders' one validator: `skip` reports the row with its reason, `error` raises naming it."""
  good = {"task_id": "T/0", "prompt": "def f():\n", "entry_point": "f", "test": "assert True", "canonical_solution": ""}
  path = _write_jsonl(tmp_path / "he.jsonl", [good, dict(good, task_id="T/1", entry_point="not an id"), good])
  records, report = load_source(SourceSpec("humaneval", path))
  assert [r.id for r in records] == ["T/0"] and report.rows == 3
  assert [(b.line, b.id) for b in report.bad_rows] == [(2, "T/1"), (3, "T/0")]
  assert "entry_point" in report.bad_rows[0].reason and "unique" in report.bad_rows[1].reason
  with pytest.raises(BadRowError, match=r"he.jsonl:2: row 'T/1': field 'entry_point': expected a Python identifier"):
    load_source(SourceSpec("humaneval", path), on_bad_row="error")
  lcb_path = _write_jsonl(tmp_path / "test6.jsonl", LCB_ROWS)
  with pytest.raises(BadRowError, match=r"test6.jsonl:3: row '2053_B'"):
    load_source(SourceSpec("livecodebench", lcb_path), on_bad_row="error")


def test_the_code_suite_is_a_prompt_source_of_its_training_families():
  from ssd_jax.data.codesuite import TRAIN_FAMILIES
  from ssd_jax.data.sources import prompt_record

  records, report = load_source(SourceSpec("codesuite", limit=len(TRAIN_FAMILIES)))
  # A prefix holds one variant of every training family (what a config's data.limit keeps).
  assert sorted(r.id.split("/")[1] for r in records) == sorted(TRAIN_FAMILIES)
  assert all(r.id.endswith("/0") and r.source == "codesuite" for r in records)
  assert report.filtered == {"over_limit": 10 * len(TRAIN_FAMILIES) - len(TRAIN_FAMILIES)}
  assert "You will use the following starter code" in user_prompt(records[0])
  assert records[0] == prompt_record(
      next(p for p in __import__("ssd_jax.data.codesuite", fromlist=["x"]).codesuite_problems("train")
           if p.id == records[0].id), "codesuite")
