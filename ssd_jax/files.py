"""The project's own files: one JSONL reader and one atomic write.

Two kinds of JSONL are written here, and a line that a kill cut short means different things in each:
- append logs (judged results, metrics): records are appended one by one, so a final line without its newline
  is a write the kill interrupted; it is dropped (`torn="drop"`) and its work is done again on resume;
- committed files (synthesis shards): written whole and then renamed into place, so any torn or invalid line
  is corruption (`torn="error"`).
A complete line that is not JSON is an error in both. Datasets from elsewhere are read by the loaders in
`data/sources.py`, `data/problems.py` and `data/lcb.py`, which report bad rows instead.
"""

from __future__ import annotations

import json
import os
from typing import Any, Literal


class JsonlError(ValueError):
  """A JSONL file of ours that cannot be read as written: the message names the file and line."""


def read_jsonl(path: str, *, torn: Literal["drop", "error"], missing_ok: bool = False) -> list[Any]:
  """The records of a JSONL file, in order (blank lines skipped). See the module docstring for `torn`."""
  if missing_ok and not os.path.exists(path):
    return []
  rows = []
  with open(path, "rb") as f:
    for line_no, raw in enumerate(f, start=1):
      if not raw.endswith(b"\n"):
        if torn == "drop":
          break
        raise JsonlError(f"{path}:{line_no}: truncated last line; the file is corrupt")
      if not raw.strip():
        continue
      try:
        rows.append(json.loads(raw))
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise JsonlError(f"{path}:{line_no}: invalid JSON ({e})") from e
  return rows


def fsync_dir(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def write_atomic(path: str, data: bytes | str, *, overwrite: bool = True) -> None:
  """Writes `data` to `path` so that a reader sees the old file or the whole new one, never part of it: a temp file
  beside it, fsync, then a rename (or, with overwrite=False, a link that fails with FileExistsError when `path`
  exists), then fsync of the directory."""
  if isinstance(data, str):
    data = data.encode("utf-8")
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  try:
    if overwrite:
      os.replace(tmp, path)
    else:
      try:
        os.link(tmp, path)  # atomic and never overwrites
      except FileExistsError:
        raise
      except OSError:  # filesystems without hard links
        if os.path.exists(path):
          raise FileExistsError(path) from None
        os.rename(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
  fsync_dir(os.path.dirname(os.path.abspath(path)))


def write_json_atomic(path: str, obj: Any) -> None:
  """`obj` as indented, key-sorted JSON, written atomically."""
  write_atomic(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")
