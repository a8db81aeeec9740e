"""Output comparison, done in the parent process only (the child never sees the expected output).

`lcb_stdout_equal` is LiveCodeBench's stdin-mode comparator (code_eval.md §6.1), reproduced exactly for parity:
strip the whole text, split on "\\n", strip each line; the line counts must match; a line passes on exact string
equality, or when every whitespace-separated token of both lines parses as `decimal.Decimal` and the token lists
are equal. There is no float tolerance and no case folding, as in LCB.
"""

from __future__ import annotations

import decimal


def _decimal_tokens(line: str) -> list[decimal.Decimal] | None:
  try:
    return [decimal.Decimal(token) for token in line.split()]
  except (decimal.InvalidOperation, ValueError):
    return None


def lcb_stdout_equal(prediction: str, expected: str) -> bool:
  """True iff `prediction` matches `expected` under LCB's stdin comparator."""
  predicted_lines = [line.strip() for line in prediction.strip().split("\n")]
  expected_lines = [line.strip() for line in expected.strip().split("\n")]
  if len(predicted_lines) != len(expected_lines):
    return False
  for got, want in zip(predicted_lines, expected_lines):
    if got == want:
      continue
    got_numbers, want_numbers = _decimal_tokens(got), _decimal_tokens(want)
    if got_numbers is None or want_numbers is None or got_numbers != want_numbers:
      return False
  return True
