"""LiveCodeBench-style prompts, rendered through the model's own chat template.

Two wordings are supported, both verbatim from LiveCodeBench (code_eval.md §3) and each with a stdin variant and a
starter-code (function) variant chosen by whether the problem has starter code:

- `"ssd"` (default): the wording of the released SSD generator's `self_distillation_prompt_{stdin,function}.j2`
  templates, which is LCB's CodeQwen-style user turn (ssd_paper.md §1.3, code_eval.md §3.3):
  "You will be given a question ... You will NOT return anything except for the program." + `Question: ...` +
  the format sentence and a python fence.
- `"lcb"`: LCB's generic template (`### Question:` / `### Format:` / `### Answer:`, code_eval.md §3.2), usually
  paired with `LCB_SYSTEM_MESSAGE`.

Plain JSONL records (`meta["raw_prompt"]`) are used verbatim. The paper samples through the official chat template
(ssd_paper.md §8.2), so the user turn, with an optional system turn, is always rendered by
`Tokenizer.apply_chat_template(..., add_generation_prompt=True)`; kwargs such as `enable_thinking` reach the
template. A prompt that leaves no room for `max_new_tokens` in the model context is a bad row.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from ssd_jax.data.sources import PromptRecord, SourceReport
from ssd_jax.models.tokenizer import Tokenizer

__all__ = ["LCB_SYSTEM_MESSAGE", "PROMPT_STYLES", "RenderedPrompt", "build_messages", "render_prompts",
           "user_prompt"]

PROMPT_STYLES = ("ssd", "lcb")

LCB_SYSTEM_MESSAGE = ("You are an expert Python programmer. You will be given a question (problem specification) and "
                      "will generate a correct Python program that matches the specification and passes all tests.")

_SSD_PREAMBLE = ("You will be given a question (problem specification) and will generate a correct Python program "
                 "that matches the specification and passes all tests. You will NOT return anything except for the "
                 "program.")
FORMAT_WITH_STARTER_CODE = ("You will use the following starter code to write the solution to the problem and enclose "
                            "your code within delimiters.")
FORMAT_WITHOUT_STARTER_CODE = ("Read the inputs from stdin solve the problem and write the answer to stdout (do not "
                               "directly test on the sample inputs). Enclose your code within delimiters as follows. "
                               "Ensure that when the python program runs, it reads the inputs, runs the algorithm and "
                               "writes output to STDOUT.")


def _format_block(record: PromptRecord) -> tuple[str, str]:
  """(format sentence, fenced code block) for the record's variant."""
  if record.starter_code:
    return FORMAT_WITH_STARTER_CODE, f"```python\n{record.starter_code}\n```"
  return FORMAT_WITHOUT_STARTER_CODE, "```python\n# YOUR CODE HERE\n```"


def user_prompt(record: PromptRecord, style: str = "ssd") -> str:
  """The user-turn text for `record` (verbatim for raw JSONL prompts)."""
  if record.meta.get("raw_prompt"):
    return record.question
  sentence, block = _format_block(record)
  if style == "ssd":
    return f"{_SSD_PREAMBLE}\n\nQuestion: {record.question}\n\n{sentence}\n{block}\n\n"
  if style == "lcb":
    return (f"### Question:\n{record.question}\n\n### Format: {sentence}\n{block}\n\n"
            "### Answer: (use the provided format with backticks)\n\n")
  raise ValueError(f"unknown prompt style {style!r}; expected one of {PROMPT_STYLES}")


def build_messages(record: PromptRecord, style: str = "ssd", system_message: str | None = None
                   ) -> list[dict[str, str]]:
  """[system?, user]: the chat that is rendered for sampling and stored (plus the sample) as the SFT example."""
  messages = [{"role": "system", "content": system_message}] if system_message else []
  return messages + [{"role": "user", "content": user_prompt(record, style)}]


@dataclasses.dataclass(frozen=True)
class RenderedPrompt:
  """A record with its chat messages and the token ids the engine prefills ([prompt_len])."""

  record: PromptRecord
  messages: list[dict[str, str]]
  ids: list[int]


def render_prompts(records: Sequence[PromptRecord], tokenizer: Tokenizer, *, style: str = "ssd",
                   system_message: str | None = None, max_prompt_tokens: int | None = None,
                   chat_template_kwargs: Mapping[str, Any] | None = None, report: SourceReport | None = None
                   ) -> list[RenderedPrompt]:
  """Tokenizes every record's chat; over-long prompts are bad rows in `report` (or raise, per its on_bad_row).

  Args:
    max_prompt_tokens: The longest prompt that still leaves room for the samples (context - max_new_tokens).
    report: Receives the too-long rows (path "<render>", line = index in `records`); a fresh one when None.
  """
  if style not in PROMPT_STYLES:
    raise ValueError(f"unknown prompt style {style!r}; expected one of {PROMPT_STYLES}")
  report = report if report is not None else SourceReport("render", "<render>")
  kwargs = dict(chat_template_kwargs or {})
  out = []
  for index, record in enumerate(records):
    report.rows += 1
    messages = build_messages(record, style, system_message)
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, **kwargs)
    if max_prompt_tokens is not None and len(ids) > max_prompt_tokens:
      report.bad("<render>", index, record.id,
                 f"prompt too long: {len(ids)} tokens > {max_prompt_tokens} (context minus max_new_tokens)")
      continue
    out.append(RenderedPrompt(record, messages, list(ids)))
  report.records += len(out)
  return out
