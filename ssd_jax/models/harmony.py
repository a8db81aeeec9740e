"""OpenAI's harmony format (GPT-OSS): what a completion is made of, and the parts SFT and evaluation read.

A harmony model answers in messages, `<|start|>{header}<|message|>{content}{end}`, where the header names the role,
the channel (`<|channel|>analysis`: reasoning; `commentary`: tool calls and preambles; `final`: the answer) and
optionally a recipient, and `{end}` is `<|end|>` (more to come), `<|return|>` (done) or `<|call|>` (a tool call).
The generation prompt ends in `<|start|>assistant`, so a completion starts inside the first header:

  <|channel|>analysis<|message|>...reasoning...<|end|><|start|>assistant<|channel|>final<|message|>...answer...

Those markers are special tokens, so a harmony completion is decoded with them kept (`decode_completion`), stored
that way, and split here: SFT renders it back through the checkpoint's template as an assistant turn with `thinking`
(the analysis channel) and `content` (the final channel), which is exactly what the template writes for a final
assistant turn in training; evaluation grades the final channel alone (`graded_text`).

A tokenizer is harmony when its chat template writes these markers and they are special tokens of its vocabulary
(`chat_format`); every other tokenizer is "plain": completions are decoded without special tokens and used whole.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, Sequence

HARMONY, PLAIN = "harmony", "plain"
START, MESSAGE, CHANNEL = "<|start|>", "<|message|>", "<|channel|>"
ENDS = ("<|end|>", "<|return|>", "<|call|>")
_MARKERS = (START, MESSAGE, CHANNEL, *ENDS)


class _Tokenizer(Protocol):
  chat_format: str

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...


def chat_format(template: str | None, template_text: str, special_tokens: Sequence[str]) -> str:
  """HARMONY when `template` writes the harmony markers (in `template_text`, its literals) and every marker is a
  special token, else PLAIN."""
  if template is None or CHANNEL not in template_text or MESSAGE not in template_text:
    return PLAIN
  return HARMONY if all(marker in special_tokens for marker in _MARKERS) else PLAIN


@dataclasses.dataclass(frozen=True)
class Message:
  """One message of a completion: its channel ("" if the header never named one), full header, content, and the
  token that ended it ("" when the text stops inside it: the stop token is not part of a decoded completion)."""

  channel: str
  header: str
  content: str
  end: str


def parse_completion(text: str) -> list[Message]:
  """A harmony completion (decoded with special tokens, after the `<|start|>assistant` prompt) -> its messages."""
  messages = []
  for i, piece in enumerate(text.split(START)):
    if i == 0 and not piece:
      continue
    header, found, body = piece.partition(MESSAGE)
    if not found:
      header, body = piece, ""
    ends = [(body.find(e), e) for e in ENDS if e in body]
    at, end = min(ends) if ends else (len(body), "")
    channel = header.partition(CHANNEL)[2].split(" ")[0].split("<|")[0] if CHANNEL in header else ""
    messages.append(Message(channel, header, body[:at], end))
  return messages


def decode_completion(tokenizer: _Tokenizer, ids: Sequence[int]) -> str:
  """A generated completion (stop token excluded) as stored: with the harmony markers for a harmony tokenizer."""
  return tokenizer.decode(ids, skip_special_tokens=tokenizer.chat_format != HARMONY)


def graded_text(tokenizer: _Tokenizer, text: str) -> str:
  """The part of a stored completion that evaluation extracts code from: the final channel of a harmony completion
  ("" when it has none), the whole text otherwise."""
  if tokenizer.chat_format != HARMONY:
    return text
  return "".join(m.content for m in parse_completion(text) if m.channel == "final")


def assistant_message(tokenizer: _Tokenizer, text: str) -> tuple[dict[str, Any] | None, str | None]:
  """The SFT assistant turn of a stored completion, or (None, why) when a harmony completion is not one reasoning
  message and one final answer (the template renders no other final turn).

  Plain: {"role": "assistant", "content": text}. Harmony: {"role", "thinking": analysis, "content": final};
  the reasons are "no_final" (no final-channel message: the model ran out of tokens while reasoning) and
  "harmony_layout" (tool calls, preambles or several messages of a channel).
  """
  if tokenizer.chat_format != HARMONY:
    return {"role": "assistant", "content": text}, None
  messages = parse_completion(text)
  channels = [m.channel for m in messages]
  if "final" not in channels:
    return None, "no_final"
  # Exactly what the template writes back: analysis<|end|> (optional), then the final answer up to the stop token.
  ends = [m.end for m in messages]
  if (channels not in (["final"], ["analysis", "final"]) or ends[-1] or any(e != "<|end|>" for e in ends[:-1])
      or any(m.header != _header(i, m.channel) for i, m in enumerate(messages))):
    return None, "harmony_layout"
  message = {"role": "assistant", "content": messages[-1].content}
  if len(messages) == 2:
    message["thinking"] = messages[0].content
  return message, None


def _header(index: int, channel: str) -> str:
  """The header a plain assistant message has: the first continues the prompt's `<|start|>assistant`."""
  return ("" if index == 0 else "assistant") + CHANNEL + channel
