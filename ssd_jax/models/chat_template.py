"""Chat templates rendered exactly as transformers' `apply_chat_template` renders them.

The model was fine-tuned on that exact text, so any difference in whitespace or special tokens shifts its
distribution; templates ship with checkpoints and are untrusted code, so they run in jinja2's sandbox.
"""

from __future__ import annotations

import datetime
import functools
import json
from typing import Any, Mapping, Sequence

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.sandbox

CHATML_SYMBOLS = ("<|im_start|>", "<|im_end|>")
# ChatML without a default system prompt; with `train_sentencepiece`'s default symbols both markers are single tokens.
CHATML_TEMPLATE = (
  "{% for message in messages %}"
  "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
  "{% endfor %}"
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class _GenerationTag(jinja2.ext.Extension):
  """`{% generation %}...{% endgeneration %}`: transformers tracks assistant spans with it; we only render the body.

  Templates that use it (for assistant-token masks) fail to parse without an extension that knows the tag.
  """

  tags = {"generation"}

  def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.CallBlock:
    lineno = next(parser.stream).lineno
    body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
    return jinja2.nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

  def _render_body(self, caller: Any) -> str:
    return caller()


def _raise_exception(message: str) -> None:
  raise jinja2.exceptions.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
  # Jinja's built-in tojson HTML-escapes `<>&'`, which would corrupt tool schemas and code in prompts.
  return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
  return datetime.datetime.now().strftime(fmt)


@functools.lru_cache(maxsize=32)
def _compile_template(template: str) -> jinja2.Template:
  """Compiles in a sandbox: chat templates ship with checkpoints and are untrusted code."""
  env = jinja2.sandbox.ImmutableSandboxedEnvironment(
    trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols])
  env.filters["tojson"] = _tojson
  env.globals["raise_exception"] = _raise_exception
  env.globals["strftime_now"] = _strftime_now
  return env.from_string(template)


def template_literals(template: str) -> str:
  """The template's literal text and string constants, NUL-joined so a search cannot match across two of them."""
  ast = _compile_template(template).environment.parse(template)
  literals = {node.data for node in ast.find_all(jinja2.nodes.TemplateData)}
  literals |= {node.value for node in ast.find_all(jinja2.nodes.Const) if isinstance(node.value, str)}
  return "\0".join(sorted(literals))


def _normalize_message(message: Mapping[str, Any]) -> dict[str, Any]:
  """Drops None-valued keys and aliases reasoning fields, as transformers does before rendering."""
  if not isinstance(message, Mapping):
    raise TypeError(f"chat messages must be dicts, got {message!r}")
  out = {key: value for key, value in message.items() if value is not None}
  reasoning = next((out[key] for key in _REASONING_FIELDS if key in out), None)
  if reasoning is not None:
    out = {"thinking": reasoning, **out, "reasoning_content": reasoning}
  return out


def render_chat_template(template: str, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = False,
                         tools: Sequence[Mapping[str, Any]] | None = None,
                         documents: Sequence[Mapping[str, Any]] | None = None, **variables: Any) -> str:
  """Renders one conversation with `template`; `variables` are the special tokens plus any template kwargs."""
  if not messages:
    raise ValueError("cannot apply a chat template to an empty conversation")
  for name, items in (("tools", tools), ("documents", documents)):
    if items is not None and not all(isinstance(item, Mapping) for item in items):
      raise TypeError(f"{name} must be a list of dicts (JSON schemas for tools)")
  return _compile_template(template).render(
    messages=[_normalize_message(m) for m in messages], tools=tools, documents=documents,
    add_generation_prompt=add_generation_prompt, **variables)
