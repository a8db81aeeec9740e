"""Code extraction from model output (code_eval.md §4).

`extract_code` is LiveCodeBench's rule, reproduced exactly for parity: every line that *contains* three backticks
is a fence, and the code is the text strictly between the last two fences ("" when there are fewer than two). It
is the only extractor for headline numbers. `extract_first_python_block` exists to measure how often that rule
grades the wrong block (an "Example usage" block after the solution, an inline fence in prose).
"""

from __future__ import annotations

import dataclasses

__all__ = ["Extraction", "extract_code", "extract_first_python_block"]

_FENCE = "```"
_PYTHON_TAGS = ("", "python", "python3", "py")


@dataclasses.dataclass(frozen=True)
class Extraction:
  """Extracted code plus what the extractor saw.

  Attributes:
    code: The extracted program; "" means no code (the sample is NO_CODE).
    fence_count: Lines containing three backticks.
    unclosed: An odd fence count: a block was opened but never closed (usually a truncated generation).
    last_of_several: More than one fenced block was present and the chosen one is the last.
  """

  code: str
  fence_count: int
  unclosed: bool
  last_of_several: bool

  def to_json(self) -> dict[str, object]:
    return {"fence_count": self.fence_count, "unclosed": self.unclosed, "last_of_several": self.last_of_several,
            "code_chars": len(self.code)}


def _fence_lines(lines: list[str]) -> list[int]:
  return [i for i, line in enumerate(lines) if _FENCE in line]


def extract_code(text: str) -> Extraction:
  """LCB's extraction: the lines strictly between the last two fence lines."""
  lines = text.split("\n")
  fences = _fence_lines(lines)
  code = "\n".join(lines[fences[-2] + 1:fences[-1]]) if len(fences) >= 2 else ""
  return Extraction(code, len(fences), len(fences) % 2 == 1, len(fences) >= 4)


def extract_first_python_block(text: str) -> Extraction:
  """Analysis only: the first block opened by a line starting with ```python / ```py / bare ```.

  An opening fence with no closing fence yields "" (a truncated block is not graded by this extractor either).
  """
  lines = text.split("\n")
  fences = _fence_lines(lines)
  for position, index in enumerate(fences):
    stripped = lines[index].strip()
    if stripped.startswith(_FENCE) and stripped[len(_FENCE):].strip().lower() in _PYTHON_TAGS:
      if position + 1 >= len(fences):
        break
      code = "\n".join(lines[index + 1:fences[position + 1]])
      return Extraction(code, len(fences), len(fences) % 2 == 1, False)
  return Extraction("", len(fences), len(fences) % 2 == 1, False)
