"""Tokenizers for ssd_jax: HF `tokenizer.json` directories, GGUF byte-level BPE, and SentencePiece models.

One small `Tokenizer` class fronts two backends (the Rust `tokenizers` library and `sentencepiece`), because SSD
needs the same handful of operations whatever the checkpoint ships: encode prompts, decode samples, know which ids
end a turn, and render chat templates byte-for-byte the way transformers does (the model was fine-tuned on that
exact text, so any difference in whitespace or special tokens shifts its distribution).

Special-token ids and stop ids come only from the checkpoint's own files, never from name guessing: the eos the
files declare (tokenizer_config / generation_config / config.json / GGUF metadata), plus the token the chat template
writes right after an assistant message, when that token is a special token.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import pathlib
import re
from typing import Any, Iterable, Mapping, Sequence

import sentencepiece as spm
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, processors

from ssd_jax.models import harmony
from ssd_jax.models.chat_template import CHATML_SYMBOLS, CHATML_TEMPLATE, render_chat_template, template_literals

__all__ = ["CHATML_SYMBOLS", "CHATML_TEMPLATE", "Tokenizer", "TokenizerError", "load_tokenizer", "render_chat_template",
           "train_sentencepiece"]

_log = logging.getLogger(__name__)

# The named special tokens transformers passes to chat templates (`special_tokens_map`), in its order.
_NAMED_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_SOURCES_EXPECTED = "a HF tokenizer directory (with tokenizer.json), a .gguf file or a SentencePiece .model file"

# GGUF `tokenizer.ggml.pre` values whose merges were learned with a split regex other than GPT-2's. Everything else
# uses GPT-2's (ByteLevel use_regex=True), as transformers' GGUF converter does.
_LLAMA3_SPLIT = (
  r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = _LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")  # Qwen2 splits digits one by one.
_LLAMA3_PRE = frozenset({"llama3", "llama-v3", "llama-bpe"})
_GGUF_SPLITS = {
  **{name: _LLAMA3_SPLIT for name in (*_LLAMA3_PRE, "smaug-bpe", "falcon3", "dbrx")},
  **{name: _QWEN2_SPLIT for name in ("qwen2", "deepseek-r1-qwen", "megrez")},
}
_GGUF_CONTROL = 3  # llama.cpp token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
_GGUF_USER_DEFINED = 4
_SP_USER_DEFINED = 4  # sentencepiece ModelProto.SentencePiece.Type.USER_DEFINED


class TokenizerError(ValueError):
  """A tokenizer file is missing, unreadable, or describes something we cannot load."""


def _end_of_turn_id(template: str, variables: Mapping[str, str], special: Mapping[str, int]) -> int | None:
  """The special token the template writes right after an assistant message's content, if any.

  This is the token a chat model emits to end its turn (`<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`), read off the
  checkpoint's own template rather than guessed from a list of names.
  """
  answer = "ssdprobeanswer"
  probe = [{"role": "user", "content": "ssdprobequestion"}, {"role": "assistant", "content": answer}]
  try:
    text = render_chat_template(template, probe, **variables)
  except Exception:  # Any template may reject the probe (role checks, missing kwargs): then it names no stop token.
    return None
  tail = text.rpartition(answer)[2].lstrip() if answer in text else ""
  for token in sorted(special, key=len, reverse=True):
    if token and tail.startswith(token):
      return special[token]
  return None


class _HFBackend:
  """A `tokenizers.Tokenizer` (from tokenizer.json or built from GGUF metadata)."""

  def __init__(self, tok: tokenizers.Tokenizer):
    self.tok = tok
    self.vocab_size = max(tok.get_vocab(with_added_tokens=True).values(), default=-1) + 1
    self.special = {t.content: i for i, t in tok.get_added_tokens_decoder().items() if t.special}

  def encode(self, text: str, add_special_tokens: bool) -> list[int]:
    return self.tok.encode(text, add_special_tokens=add_special_tokens).ids

  def encode_batch(self, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
    return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=add_special_tokens)]

  def decode(self, ids: list[int], skip_special_tokens: bool) -> str:
    return self.tok.decode(ids, skip_special_tokens=skip_special_tokens)

  def token_to_id(self, token: str) -> int | None:
    return self.tok.token_to_id(token)

  def id_to_token(self, token_id: int) -> str | None:
    return self.tok.id_to_token(token_id)


class _SPBackend:
  """A SentencePiece model; special pieces written in the text are matched whole, as transformers does."""

  def __init__(self, sp: spm.SentencePieceProcessor, special_ids: Iterable[int]):
    self.sp = sp
    self.vocab_size = sp.get_piece_size()
    self.special = {sp.id_to_piece(i): i for i in sorted(set(special_ids))}
    alternatives = "|".join(map(re.escape, sorted(self.special, key=len, reverse=True)))
    self._split = re.compile(f"({alternatives})") if self.special else None

  def encode(self, text: str, add_special_tokens: bool) -> list[int]:
    ids = [self.sp.bos_id()] if add_special_tokens and self.sp.bos_id() >= 0 else []
    if self._split is None:
      return ids + self.sp.encode(text)
    for k, part in enumerate(self._split.split(text)):
      if k % 2:
        ids.append(self.special[part])
      elif part:
        ids.extend(self.sp.encode(part))
    return ids

  def encode_batch(self, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
    return [self.encode(text, add_special_tokens) for text in texts]

  def decode(self, ids: list[int], skip_special_tokens: bool) -> str:
    special_ids = set(self.special.values())
    pieces, run = [], []
    for token_id in ids:
      if token_id in special_ids:
        pieces.append(self.sp.decode(run))
        run = []
        if not skip_special_tokens:
          pieces.append(self.sp.id_to_piece(token_id))
      else:
        run.append(token_id)
    pieces.append(self.sp.decode(run))
    return "".join(pieces)

  def token_to_id(self, token: str) -> int | None:
    token_id = self.sp.piece_to_id(token)
    return token_id if self.sp.id_to_piece(token_id) == token else None

  def id_to_token(self, token_id: int) -> str | None:
    return self.sp.id_to_piece(token_id) if 0 <= token_id < self.vocab_size else None


class Tokenizer:
  """Encode/decode, special and stop ids, and chat templates for one checkpoint's tokenizer.

  Build it with `from_hf_dir`, `from_gguf`, `from_sentencepiece` or `load_tokenizer`; the constructor takes an
  already-resolved backend and ids.

  Attributes:
    source: The file the vocabulary came from (named in errors).
    vocab_size: One past the largest id the tokenizer can produce (added tokens included).
    bos_id, eos_id, unk_id: Declared ids (bos/unk may be None).
    pad_id: The declared pad id, else eos: padding positions are masked anyway, and every tokenizer has an eos.
    stop_ids: eos first, then other declared eos ids and the chat template's end-of-turn token.
    special_ids: Ids that `decode(..., skip_special_tokens=True)` drops.
    special_tokens: Named special tokens (`bos_token`, ...) as chat templates see them.
    chat_template: The template text, a dict of named templates, or None.
    chat_format: "harmony" when the default template writes OpenAI's harmony markers as special tokens (GPT-OSS:
      completions keep them, see `models.harmony`), else "plain".
  """

  def __init__(self, backend: _HFBackend | _SPBackend, *, source: str, special_tokens: Mapping[str, str],
               eos_id: int, bos_id: int | None = None, pad_id: int | None = None, unk_id: int | None = None,
               extra_stop_ids: Iterable[int] = (), chat_template: str | Mapping[str, str] | None = None):
    self._backend = backend
    self.source = source
    self.vocab_size: int = backend.vocab_size
    self.special_tokens = dict(special_tokens)
    self.special_ids = frozenset(backend.special.values())
    self.chat_template = dict(chat_template) if isinstance(chat_template, Mapping) else chat_template
    self.bos_id, self.eos_id, self.unk_id = bos_id, eos_id, unk_id
    self.pad_id: int = eos_id if pad_id is None else pad_id
    stops = [eos_id, *extra_stop_ids]
    default_template = self._select_template(None, None, required=False)
    if default_template is not None:
      end_of_turn = _end_of_turn_id(default_template, self.special_tokens, backend.special)
      if end_of_turn is not None:
        stops.append(end_of_turn)
    literals = template_literals(default_template) if default_template is not None else ""
    self.chat_format = harmony.chat_format(default_template, literals, list(backend.special))
    self.stop_ids: tuple[int, ...] = tuple(i for i in dict.fromkeys(stops) if 0 <= i < backend.vocab_size)

  def __repr__(self) -> str:
    return (f"Tokenizer(source={self.source!r}, vocab_size={self.vocab_size}, bos_id={self.bos_id}, "
            f"eos_id={self.eos_id}, stop_ids={self.stop_ids})")

  @classmethod
  def from_hf_dir(cls, path: str | os.PathLike[str]) -> Tokenizer:
    """Loads `tokenizer.json` plus the special tokens, stop ids and chat template the directory's files declare."""
    path = os.fspath(path)
    tok_file = os.path.join(path, "tokenizer.json")
    if not os.path.isdir(path):
      raise TokenizerError(f"{path}: not a directory; expected a HF tokenizer directory containing tokenizer.json")
    if not os.path.isfile(tok_file):
      raise TokenizerError(f"{path}: no tokenizer.json in this directory (found: {sorted(os.listdir(path))})")
    try:
      tok = tokenizers.Tokenizer.from_file(tok_file)
    except Exception as e:  # tokenizers raises a bare Exception for malformed JSON or unknown components.
      raise TokenizerError(f"{tok_file}: not a valid HF tokenizers JSON file ({e})") from e
    config_file = os.path.join(path, "tokenizer_config.json")
    config = _read_json(config_file) or {}
    _add_declared_tokens(tok, config, config_file)

    special_tokens: dict[str, str] = {}
    ids: dict[str, int] = {}
    for name in _NAMED_TOKENS:
      content = _token_content(config.get(name))
      if content is None:
        continue
      token_id = tok.token_to_id(content)
      if token_id is None:
        _log.warning("%s: %s %r is not in the vocabulary of %s; ignoring it", config_file, name, content, tok_file)
        continue
      if not any(t.content == content and t.special for t in tok.get_added_tokens_decoder().values()):
        tok.add_special_tokens([tokenizers.AddedToken(content, special=True, normalized=False)])
      special_tokens[name], ids[name] = content, token_id

    declared_eos = []
    for name in ("generation_config.json", "config.json"):
      declared_eos += _as_ids((_read_json(os.path.join(path, name)) or {}).get("eos_token_id"))
    eos_id = ids.get("eos_token", declared_eos[0] if declared_eos else None)
    if eos_id is None:
      raise TokenizerError(f"{path}: no eos token declared in tokenizer_config.json, generation_config.json or "
                           "config.json; generation needs one to stop")
    return cls(_HFBackend(tok), source=tok_file, special_tokens=special_tokens, eos_id=eos_id,
               bos_id=ids.get("bos_token"), pad_id=ids.get("pad_token"), unk_id=ids.get("unk_token"),
               extra_stop_ids=declared_eos, chat_template=_read_chat_templates(path, config))

  @classmethod
  def from_gguf(cls, path: str | os.PathLike[str], *, reader: Any = None) -> Tokenizer:
    """Builds the byte-level BPE (`tokenizer.ggml.model == "gpt2"`) a GGUF file embeds in its metadata.

    Parsing a GGUF's metadata with `gguf.GGUFReader` takes seconds (one numpy view per vocabulary string), so a
    caller that already opened the file for its weights can pass that `gguf.GGUFReader` as `reader`.
    """
    path = os.fspath(path)
    meta = _read_gguf_tokenizer_metadata(path, reader)
    kind = meta.get("tokenizer.ggml.model")
    tokens = meta.get("tokenizer.ggml.tokens")
    if kind is None or not tokens:
      raise TokenizerError(f"{path}: GGUF file has no tokenizer metadata (tokenizer.ggml.model / "
                           "tokenizer.ggml.tokens); expected an embedded byte-level BPE tokenizer")
    if kind != "gpt2":
      raise TokenizerError(f"{path}: GGUF tokenizer model {kind!r} is not supported; only byte-level BPE ('gpt2') "
                           "is. Load the checkpoint's HF tokenizer directory with Tokenizer.from_hf_dir instead")
    merges = meta.get("tokenizer.ggml.merges")
    if not merges:
      raise TokenizerError(f"{path}: GGUF byte-level BPE tokenizer has no tokenizer.ggml.merges")
    types = list(meta.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    pre = meta.get("tokenizer.ggml.pre", "default")
    tok = _byte_level_bpe(tokens, merges, types, pre)

    def token_id(key: str) -> int | None:
      value = meta.get(f"tokenizer.ggml.{key}")
      return int(value) if value is not None and 0 <= int(value) < len(tokens) else None

    keys = {"bos_token": "bos_token_id", "eos_token": "eos_token_id", "unk_token": "unknown_token_id",
            "pad_token": "padding_token_id"}
    ids = {name: token_id(key) for name, key in keys.items()}
    if ids["eos_token"] is None:
      raise TokenizerError(f"{path}: GGUF tokenizer declares no tokenizer.ggml.eos_token_id")
    # llama.cpp adds BOS by default for Llama-3 vocabularies; the file's flag, when present, decides.
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", pre in _LLAMA3_PRE)) and ids["bos_token"] is not None
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    bos = [(tokens[ids["bos_token"]], ids["bos_token"])] if add_bos else []
    eos = [(tokens[ids["eos_token"]], ids["eos_token"])] if add_eos else []
    if bos or eos:
      tok.post_processor = processors.TemplateProcessing(
        single=[t for t, _ in bos] + ["$A"] + [t for t, _ in eos], special_tokens=list(dict(bos + eos).items()))
    # llama.cpp stores the default template under `tokenizer.chat_template`, named ones under `...chat_template.NAME`.
    templates = {key.removeprefix("tokenizer.chat_template").removeprefix(".") or "default": value
                 for key, value in meta.items()
                 if key == "tokenizer.chat_template" or key.startswith("tokenizer.chat_template.")}
    return cls(_HFBackend(tok), source=path,
               special_tokens={name: tokens[i] for name, i in ids.items() if i is not None},
               eos_id=ids["eos_token"], bos_id=ids["bos_token"], pad_id=ids["pad_token"], unk_id=ids["unk_token"],
               extra_stop_ids=[i for key in ("eot_token_id", "eom_token_id") if (i := token_id(key)) is not None],
               chat_template=templates.get("default") if list(templates) == ["default"] else templates or None)

  @classmethod
  def from_sentencepiece(cls, model_path_or_bytes: str | os.PathLike[str] | bytes,
                         chat_template: str | None = None) -> Tokenizer:
    """Loads a SentencePiece `.model` (a path, or the serialized proto as bytes).

    SentencePiece has no notion of chat markers, so `chat_template` decides them: user-defined pieces the template
    writes literally (e.g. `<|im_start|>`, `<|im_end|>` for `CHATML_TEMPLATE`) become special tokens, skipped by
    `decode`, and the one that ends an assistant turn becomes a stop id.
    """
    if isinstance(model_path_or_bytes, bytes):
      source, proto = "<in-memory SentencePiece model>", model_path_or_bytes
    else:
      source = os.fspath(model_path_or_bytes)
      try:
        proto = pathlib.Path(source).read_bytes()
      except OSError as e:
        raise TokenizerError(f"{source}: cannot read SentencePiece model ({e.strerror})") from e
    sp = spm.SentencePieceProcessor()
    try:
      sp.load_from_serialized_proto(proto)
    except (RuntimeError, OSError) as e:
      raise TokenizerError(f"{source}: not a valid SentencePiece model proto ({e})") from e
    if sp.eos_id() < 0:
      raise TokenizerError(f"{source}: SentencePiece model has no eos piece (eos_id=-1); generation needs one")
    special = {i for i in range(sp.get_piece_size()) if sp.is_control(i) or sp.is_unknown(i)}
    if chat_template is not None:
      literals = template_literals(chat_template)
      special |= {i for i in _sp_user_defined_ids(proto) if (p := sp.id_to_piece(i)).strip() and p in literals}
    named = {"bos_token": sp.bos_id(), "eos_token": sp.eos_id(), "unk_token": sp.unk_id(), "pad_token": sp.pad_id()}
    named = {name: i for name, i in named.items() if i >= 0}
    return cls(_SPBackend(sp, special), source=source,
               special_tokens={name: sp.id_to_piece(i) for name, i in named.items()}, eos_id=named["eos_token"],
               bos_id=named.get("bos_token"), pad_id=named.get("pad_token"), unk_id=named.get("unk_token"),
               chat_template=chat_template)

  def token_to_id(self, token: str) -> int | None:
    return self._backend.token_to_id(token)

  def id_to_token(self, token_id: int) -> str | None:
    return self._backend.id_to_token(int(token_id))

  def check_fits(self, model_vocab_size: int, source: str) -> None:
    """Raises when the tokenizer can emit ids the model has no embedding row for.

    A model vocab larger than the tokenizer's is normal (embeddings padded to a multiple of 64/128).
    """
    if self.vocab_size > model_vocab_size:
      raise TokenizerError(
        f"tokenizer {self.source} has {self.vocab_size} ids (0..{self.vocab_size - 1}) but the model from {source} "
        f"has vocab size {model_vocab_size}; the tokenizer does not belong to this model")

  def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
    """Special tokens written in `text` become their ids; `add_special_tokens` adds what the tokenizer adds (bos)."""
    return self._backend.encode(text, add_special_tokens)

  def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = False) -> list[list[int]]:
    return self._backend.encode_batch(list(texts), add_special_tokens)

  def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
    """Decodes without transformers' `clean_up_tokenization_spaces`, which is lossy on code.

    Ids past the tokenizer's vocabulary (the padding rows of a model's embedding, which an untrained or badly
    tuned model can sample) decode to nothing instead of failing the whole batch.
    """
    size = self.vocab_size
    return self._backend.decode([int(i) for i in ids if 0 <= int(i) < size], skip_special_tokens)

  def _select_template(self, chat_template: str | None, tools: Any, required: bool = True) -> str | None:
    """Resolves a template by name or text, with transformers' rules for checkpoints that ship several."""
    templates = self.chat_template
    if isinstance(templates, dict):
      if chat_template is not None:
        return templates.get(chat_template, chat_template)
      if tools is not None and "tool_use" in templates:
        return templates["tool_use"]
      if "default" in templates:
        return templates["default"]
      if required:
        raise TokenizerError(f"{self.source}: several chat templates ({sorted(templates)}) and none is named "
                             "'default'; pass chat_template=<name>")
      return None
    if chat_template is not None:
      return chat_template
    if templates is None and required:
      raise TokenizerError(f"{self.source}: the tokenizer has no chat template; pass chat_template=")
    return templates

  def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False,
                          tokenize: bool = False, *, chat_template: str | None = None,
                          tools: Sequence[Mapping[str, Any]] | None = None,
                          documents: Sequence[Mapping[str, Any]] | None = None,
                          **template_kwargs: Any) -> str | list[int]:
    """Renders `messages` exactly as transformers' `apply_chat_template` does; ids if `tokenize`.

    `template_kwargs` (e.g. `enable_thinking=False`) reach the template and override the named special tokens.
    """
    template = self._select_template(chat_template, tools)
    text = render_chat_template(template, messages, add_generation_prompt=add_generation_prompt, tools=tools,
                                documents=documents, **{**self.special_tokens, **template_kwargs})
    return self.encode(text, add_special_tokens=False) if tokenize else text


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
  """Picks the loader from what `path` is: HF directory (or its tokenizer.json), `.gguf`, or SentencePiece `.model`."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise TokenizerError(f"{path}: no such file or directory; expected {_SOURCES_EXPECTED}")
  if os.path.isdir(path):
    if os.path.isfile(os.path.join(path, "tokenizer.json")):
      return Tokenizer.from_hf_dir(path)
    raise TokenizerError(f"{path}: directory has no tokenizer.json; expected {_SOURCES_EXPECTED}")
  if os.path.basename(path) == "tokenizer.json":
    return Tokenizer.from_hf_dir(os.path.dirname(path) or ".")
  if path.endswith(".gguf") or _has_gguf_magic(path):
    return Tokenizer.from_gguf(path)
  if path.endswith(".model"):
    # A SentencePiece model carries no chat markup; ChatML is the one `train_sentencepiece` reserves pieces for.
    return Tokenizer.from_sentencepiece(path, chat_template=CHATML_TEMPLATE)
  raise TokenizerError(f"{path}: unrecognized tokenizer file; expected {_SOURCES_EXPECTED}")


def train_sentencepiece(texts: Iterable[str] | str, vocab_size: int, *, model_type: str = "bpe",
                        user_defined_symbols: Sequence[str] = CHATML_SYMBOLS) -> bytes:
  """Trains a small SentencePiece model in memory that round-trips source code exactly; returns the model proto.

  The trainer sees one line per sentence, so "\\n" and "\\t" are always user-defined symbols (otherwise they never
  enter the vocabulary); identity normalization, no whitespace collapsing, no dummy prefix and byte fallback make
  `decode(encode(x)) == x` for any text. Runs of spaces may form one piece, which keeps indentation cheap.
  Ids: unk 0, bos 1, eos 2, pad 3, then the user-defined symbols in order.
  """
  symbols = list(dict.fromkeys(("\n", "\t", *user_defined_symbols)))
  if any("," in s or not s for s in symbols):
    raise ValueError(f"user_defined_symbols must be non-empty and comma-free (sentencepiece splits on ','): {symbols}")
  texts = [texts] if isinstance(texts, str) else texts

  def sentences() -> Iterable[str]:
    for text in texts:
      yield from (line for line in text.split("\n") if line)

  buf = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
      sentence_iterator=sentences(), model_writer=buf, vocab_size=vocab_size, model_type=model_type,
      user_defined_symbols=symbols, remove_extra_whitespaces=False, normalization_rule_name="identity",
      add_dummy_prefix=False, byte_fallback=True, character_coverage=1.0, split_by_whitespace=True,
      allow_whitespace_only_pieces=True, split_digits=True, unk_id=0, bos_id=1, eos_id=2, pad_id=3,
      minloglevel=2)
  except RuntimeError as e:
    raise TokenizerError(f"SentencePiece training ({model_type}, vocab_size={vocab_size}) failed: {e}") from e
  return buf.getvalue()


def _read_json(path: str) -> Any:
  """The parsed file, or None when it does not exist; a malformed file is an error naming it."""
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise TokenizerError(f"{path}: cannot read JSON ({e})") from e


def _token_content(value: Any) -> str | None:
  """A special token given as a string or as a serialized AddedToken dict (`{"content": ...}`)."""
  if isinstance(value, Mapping):
    value = value.get("content")
  return value if isinstance(value, str) and value else None


def _as_ids(value: Any) -> list[int]:
  """`eos_token_id` as config files write it: an int, a list of ints, or absent."""
  return [int(v) for v in (value if isinstance(value, (list, tuple)) else [] if value is None else [value])]


def _add_declared_tokens(tok: tokenizers.Tokenizer, config: Mapping[str, Any], config_file: str) -> None:
  """Adds `added_tokens_decoder` entries of tokenizer_config.json that tokenizer.json lacks, checking their ids."""
  declared = config.get("added_tokens_decoder") or {}
  present = {t.content for t in tok.get_added_tokens_decoder().values()}
  for key, entry in sorted(declared.items(), key=lambda kv: int(kv[0])):
    content = _token_content(entry)
    if content is None or content in present:
      continue
    flags = {k: bool(entry.get(k, False)) for k in ("single_word", "lstrip", "rstrip")}
    special = bool(entry.get("special", False))
    added = tokenizers.AddedToken(content, special=special, normalized=bool(entry.get("normalized", not special)),
                                  **flags)
    (tok.add_special_tokens if special else tok.add_tokens)([added])
    if tok.token_to_id(content) != int(key):
      raise TokenizerError(f"{config_file}: added token {content!r} is declared with id {key} but tokenizer.json "
                           f"gives it id {tok.token_to_id(content)}")


def _read_chat_templates(path: str, config: Mapping[str, Any]) -> str | dict[str, str] | None:
  """chat_template.jinja (+ additional_chat_templates/*.jinja) take priority over tokenizer_config.json's entry."""
  templates = {}
  jinja_file = os.path.join(path, "chat_template.jinja")
  extra_dir = os.path.join(path, "additional_chat_templates")
  if os.path.isfile(jinja_file):
    templates["default"] = pathlib.Path(jinja_file).read_text(encoding="utf-8")
  if os.path.isdir(extra_dir):
    for name in sorted(os.listdir(extra_dir)):
      if name.endswith(".jinja"):
        templates[name.removesuffix(".jinja")] = pathlib.Path(extra_dir, name).read_text(encoding="utf-8")
  if not templates:
    entry = config.get("chat_template")
    if isinstance(entry, str):
      return entry
    if isinstance(entry, list):  # Legacy multi-template format: [{"name": ..., "template": ...}].
      templates = {t["name"]: t["template"] for t in entry}
  if list(templates) == ["default"]:
    return templates["default"]
  return templates or None


def _has_gguf_magic(path: str) -> bool:
  with open(path, "rb") as f:
    return f.read(4) == b"GGUF"


def _read_gguf_tokenizer_metadata(path: str, reader: Any = None) -> dict[str, Any]:
  """The `tokenizer.*` key/values of a GGUF file (or of its already-open `gguf.GGUFReader`), as Python values."""
  if reader is None:
    import gguf  # Deferred: only GGUF users pay for importing it.

    if not os.path.isfile(path):
      raise TokenizerError(f"{path}: no such file; expected a GGUF model file")
    try:
      reader = gguf.GGUFReader(path)
    except (ValueError, OSError) as e:
      raise TokenizerError(f"{path}: cannot read as GGUF ({e})") from e
  return {key: field.contents() for key, field in reader.fields.items() if key.startswith("tokenizer.")}


@functools.lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2's byte -> printable-character table, the alphabet byte-level BPE vocabularies are spelled in."""
  printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
  table, extra = {b: chr(b) for b in printable}, 0
  for b in range(256):
    if b not in table:
      table[b] = chr(256 + extra)
      extra += 1
  return table


def _byte_level_bpe(tokens: Sequence[str], merges: Sequence[str], types: Sequence[int],
                    pre: str) -> tokenizers.Tokenizer:
  """The `tokenizers` equivalent of a GGUF byte-level BPE vocabulary (as transformers' GGUF converter builds it).

  Tokens not spelled in the byte alphabet are respelled into it; control tokens (type 3) become special added
  tokens and user-defined ones (type 4) plain added tokens, so both are matched whole in text.
  """
  spelling = _bytes_to_unicode()
  alphabet = set(spelling.values())
  vocab = {t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i
           for i, t in enumerate(tokens)}
  tok = tokenizers.Tokenizer(models.BPE(
    vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges], dropout=None, continuing_subword_prefix="",
    end_of_word_suffix="", fuse_unk=False, ignore_merges=pre in _LLAMA3_PRE))
  split = _GGUF_SPLITS.get(pre)
  if split is None:
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  else:
    tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(tokenizers.Regex(split), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tok.decoder = decoders.ByteLevel()
  # A control token outside the byte alphabet is a converter mislabel; adding it would grow the vocabulary.
  control = [t for t, k in zip(tokens, types) if k == _GGUF_CONTROL and set(t) <= alphabet]
  user = [t for t, k in zip(tokens, types) if k == _GGUF_USER_DEFINED and t in vocab]
  tok.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False) for t in control])
  tok.add_tokens([tokenizers.AddedToken(t, special=False, normalized=False) for t in user])
  return tok


def _sp_user_defined_ids(proto: bytes) -> list[int]:
  """Ids of USER_DEFINED pieces; the processor API cannot tell them from normal pieces, the model proto can."""
  from sentencepiece import sentencepiece_model_pb2  # Needs protobuf (an orbax-checkpoint dependency).

  model = sentencepiece_model_pb2.ModelProto()
  model.ParseFromString(proto)
  return [i for i, piece in enumerate(model.pieces) if piece.type == _SP_USER_DEFINED]
