"""A tiny GPT-OSS-style tokenizer directory: a byte-level BPE with the harmony special tokens, GPT-OSS's chat template,
and its three stop tokens, written the way transformers saves one.

The template (tests/data/gpt_oss_chat_template.jinja) is llama.cpp's copy of the gpt-oss chat template, taken from
the `llama-cpp-python` 0.3.36 sdist on PyPI (vendor/llama.cpp/models/templates/openai-gpt-oss-120b.jinja, sha256
below); the hub's openai/gpt-oss-20b chat_template.jinja cannot be downloaded here, so parity is with that copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import tokenizers
import transformers
from tokenizers import decoders, models, pre_tokenizers, trainers

TEMPLATE = os.path.join(os.path.dirname(__file__), "data", "gpt_oss_chat_template.jinja")
TEMPLATE_SHA256 = "a4c9919cbbd4acdd51ccffe22da049264b1b73e59055fa58811a99efbd7c8146"
# o200k_harmony's special tokens that the format uses (their ids there: 199998, 199999, 200002, 200003, 200005-8,
# 200012).
SPECIAL = ["<|startoftext|>", "<|endoftext|>", "<|return|>", "<|constrain|>", "<|channel|>", "<|start|>", "<|end|>",
           "<|message|>", "<|call|>"]
STOPS = ["<|return|>", "<|endoftext|>", "<|call|>"]  # generation_config.json's eos_token_id, in its order
_CORPUS = ["You are ChatGPT, a large language model trained by OpenAI. Knowledge cutoff: 2024-06 Current date: "
           "Reasoning: high medium low # Valid channels: analysis, commentary, final. Channel must be included for "
           "every message. # Instructions system developer user assistant",
           "def solve():\n    n = int(input())\n    print(sorted(map(int, input().split()))[n // 2])\n",
           "We need the median. Sort and take the middle element; ties are fine. Edge case: n = 1."]


def template_text() -> str:
  with open(TEMPLATE, encoding="utf-8") as f:
    text = f.read()
  digest = hashlib.sha256(text.encode()).hexdigest()
  assert digest == TEMPLATE_SHA256, f"{TEMPLATE}: sha256 {digest}, expected the llama-cpp-python 0.3.36 copy"
  return text


def make_tokenizer_dir(path: str) -> str:
  """Writes tokenizer.json, tokenizer_config.json (eos <|return|>), chat_template.jinja and generation_config.json
  (the three stop ids) into `path`; returns it."""
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                special_tokens=SPECIAL, show_progress=False)
  tok.train_from_iterator(_CORPUS, trainer)
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>",
                                              eos_token="<|return|>", pad_token="<|endoftext|>")
  fast.save_pretrained(path)
  shutil.copy(TEMPLATE, os.path.join(path, "chat_template.jinja"))
  template_text()
  with open(os.path.join(path, "generation_config.json"), "w") as f:
    json.dump({"bos_token_id": tok.token_to_id("<|startoftext|>"),
               "eos_token_id": [tok.token_to_id(t) for t in STOPS],
               "pad_token_id": tok.token_to_id("<|endoftext|>")}, f)
  return path
