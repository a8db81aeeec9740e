"""The one JSONL reader and the one atomic write (`ssd_jax.files`)."""

import os

import pytest

from ssd_jax.files import JsonlError, read_jsonl, write_atomic, write_json_atomic


def test_a_torn_last_line_is_dropped_from_a_log_and_corruption_in_a_committed_file(tmp_path):
  path = tmp_path / "log.jsonl"
  path.write_bytes(b'{"a": 1}\n\n{"a": 2}\n{"a": 3, "b"')  # a kill mid-append
  assert read_jsonl(str(path), torn="drop") == [{"a": 1}, {"a": 2}]
  with pytest.raises(JsonlError, match=r"log.jsonl:4: truncated last line"):
    read_jsonl(str(path), torn="error")


def test_an_invalid_complete_line_is_an_error_naming_the_line(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_bytes(b'{"a": 1}\n{"a": nope}\n')
  for torn in ("drop", "error"):
    with pytest.raises(JsonlError, match=r"bad.jsonl:2: invalid JSON"):
      read_jsonl(str(path), torn=torn)


def test_missing_files(tmp_path):
  assert read_jsonl(str(tmp_path / "absent.jsonl"), torn="drop", missing_ok=True) == []
  with pytest.raises(FileNotFoundError):
    read_jsonl(str(tmp_path / "absent.jsonl"), torn="drop")


def test_write_atomic_replaces_or_refuses_and_leaves_no_temp(tmp_path):
  path = str(tmp_path / "out.json")
  write_atomic(path, "one")
  write_atomic(path, b"two")
  assert open(path).read() == "two"
  with pytest.raises(FileExistsError):
    write_atomic(path, "three", overwrite=False)
  assert open(path).read() == "two"
  write_json_atomic(str(tmp_path / "s.json"), {"b": 1, "a": [1]})
  assert open(tmp_path / "s.json").read() == '{\n "a": [\n  1\n ],\n "b": 1\n}\n'
  assert sorted(os.listdir(tmp_path)) == ["out.json", "s.json"]
