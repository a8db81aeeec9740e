"""GPT-OSS's harmony chat format: the checkpoint's template renders as transformers renders it, a sampled completion
becomes an SFT target that is exactly the sampled tokens, the loss mask covers exactly those tokens, and evaluation
grades the final channel.

The tokenizer is tests/tiny_harmony.py's (a small byte-level BPE with the harmony special tokens and the gpt-oss
chat template from the llama-cpp-python 0.3.36 sdist; see there).
"""

import json

import numpy as np
import pytest
import transformers

import tiny_harmony
from ssd_jax.data import synthesis
from ssd_jax.data.prompts import RenderedPrompt
from ssd_jax.data.sources import PromptRecord
from ssd_jax.models import harmony
from ssd_jax.models.tokenizer import load_tokenizer
from ssd_jax.sampling.engine import Completion
from ssd_jax.train import pipeline as pl

THINKING = "We need the median. Sort and take the middle element; n = 1 is fine."
ANSWER = "```python\nn = int(input())\nprint(sorted(map(int, input().split()))[n // 2])\n```"
SYSTEM = {"role": "system", "content": "You are a careful Python programmer."}
USER = {"role": "user", "content": "Print the median of n numbers.\nInput: n, then the numbers."}
ASSISTANT = {"role": "assistant", "thinking": THINKING, "content": ANSWER}
# The harmony target of a final assistant turn, written out from the format (not rendered by the template).
TARGET = ("<|channel|>analysis<|message|>" + THINKING + "<|end|><|start|>assistant<|channel|>final<|message|>" + ANSWER
          + "<|return|>")
CONVERSATIONS = {
    "system_user_prompt": ([SYSTEM, USER], True),
    "user_prompt": ([USER], True),
    "final_turn_with_reasoning": ([SYSTEM, USER, ASSISTANT], False),
    "final_turn_without_reasoning": ([USER, {"role": "assistant", "content": ANSWER}], False),
    # An earlier assistant turn's reasoning is dropped; only the last turn's is rendered, in training.
    "multi_turn": ([SYSTEM, USER, ASSISTANT, {"role": "user", "content": "Now the mean."}], True),
}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
  return tiny_harmony.make_tokenizer_dir(str(tmp_path_factory.mktemp("harmony")))


@pytest.fixture(scope="module")
def ours(tokenizer_dir):
  return load_tokenizer(tokenizer_dir)


@pytest.fixture(scope="module")
def reference(tokenizer_dir):
  return transformers.AutoTokenizer.from_pretrained(tokenizer_dir)


def test_the_tokenizer_is_harmony_with_three_stop_tokens(ours):
  assert ours.chat_format == harmony.HARMONY
  assert [ours.decode([i], skip_special_tokens=False) for i in ours.stop_ids] == tiny_harmony.STOPS


@pytest.mark.parametrize("effort", [None, "high"], ids=["default_effort", "high_effort"])
@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_template_renders_as_transformers(ours, reference, name, effort):
  messages, generation_prompt = CONVERSATIONS[name]
  kwargs = {} if effort is None else {"reasoning_effort": effort}
  want = reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt, **kwargs)
  got = ours.apply_chat_template(messages, add_generation_prompt=generation_prompt, **kwargs)
  assert got == want
  assert f"Reasoning: {effort or 'medium'}\n" in got
  assert ours.encode(got) == reference.encode(want, add_special_tokens=False)
  if name == "final_turn_with_reasoning":
    assert got.endswith(TARGET)
  if name == "multi_turn":
    assert THINKING not in got and got.endswith("<|start|>assistant")


def test_sft_mask_covers_exactly_the_assistant_target(ours):
  """The mask is the final turn's tokens, reasoning channel through <|return|>, and nothing of the prompt."""
  ids, mask, retokenized = pl.tokenize_conversation(ours, [SYSTEM, USER, ASSISTANT], reasoning_effort="high")
  target = ours.encode(TARGET)
  prompt = ours.encode(ours.apply_chat_template([SYSTEM, USER], add_generation_prompt=True,
                                                reasoning_effort="high"))
  assert not retokenized
  assert int(mask.sum()) == len(target) and len(ids) == len(prompt) + len(target)
  assert ids[mask].tolist() == target and ids[~mask].tolist() == prompt
  assert mask[-len(target):].all()
  # Seven of the target's tokens are the harmony markers around the two messages.
  specials = {ours.encode(t)[0] for t in tiny_harmony.SPECIAL}
  assert sum(int(i) in specials for i in ids[mask]) == 7
  assert ids[mask][-1] == ours.stop_ids[0]  # <|return|>, the token sampling stops on


def _completion(tokens, finish_reason="stop"):
  return Completion(request_index=0, sample_index=0, tokens=list(tokens), finish_reason=finish_reason)


def test_a_sampled_completion_trains_on_exactly_the_sampled_tokens(ours, tmp_path):
  """Sampled ids -> stored row (synthesis) -> SFT example (pipeline): the example is the prompt followed by exactly
  the sampled tokens, stop token included, and the loss covers exactly those."""
  prompt_ids = ours.apply_chat_template([USER], add_generation_prompt=True, tokenize=True, reasoning_effort="high")
  sampled = ours.encode(TARGET)  # what the model generated, ending in the stop token <|return|>
  completion = _completion(sampled)
  completion.text = harmony.decode_completion(ours, sampled[:-1])  # as the engine decodes it (stop token excluded)
  assert completion.text == TARGET.removesuffix("<|return|>")
  record = PromptRecord(id="p0", question=USER["content"], starter_code="", source="jsonl", meta={})
  prompt = RenderedPrompt(record=record, messages=[USER], ids=prompt_ids)
  [row] = synthesis._sample_rows([prompt], [[completion]], synthesis.DegeneracyRule(), ours)
  assert row["kept"] and row["messages"][-1] == ASSISTANT
  path = tmp_path / "samples-00000.jsonl"
  path.write_text(json.dumps(row) + "\n")
  examples, stats = pl.load_examples(str(path), ours, pl.DataConfig(seq_len=4096), reasoning_effort="high")
  [example] = examples
  full = np.concatenate([example["inputs"], example["targets"][-1:]])
  np.testing.assert_array_equal(full, prompt_ids + sampled)
  assert stats.target_tokens == len(sampled) == int(example["weights"].sum())


@pytest.mark.parametrize("text,reason", [
    ("<|channel|>analysis<|message|>Still thinking about the", "no_final"),
    ("", "no_final"),
    ("<|channel|>analysis<|message|>a<|end|><|start|>assistant<|channel|>commentary to=functions.run "
     "<|constrain|>json<|message|>{}", "no_final"),
    ("<|channel|>analysis<|message|>a<|end|><|start|>assistant<|channel|>commentary<|message|>b<|end|>"
     "<|start|>assistant<|channel|>final<|message|>c", "harmony_layout"),
    ("<|channel|>analysis<|message|>a<|start|>assistant<|channel|>final<|message|>c", "harmony_layout"),
    ("<|channel|>analysis<|message|>a<|end|><|start|>assistant<|channel|>final<|message|>c<|end|>", "harmony_layout"),
])
def test_completions_that_are_no_final_turn_are_not_kept(ours, text, reason):
  assert harmony.assistant_message(ours, text) == (None, reason)


def test_a_final_answer_alone_has_no_thinking(ours):
  message, _ = harmony.assistant_message(ours, "<|channel|>final<|message|>" + ANSWER)
  assert message == {"role": "assistant", "content": ANSWER}


def test_evaluation_grades_the_final_channel_only(ours):
  text = TARGET.removesuffix("<|return|>").replace(THINKING, "```python\nprint('reasoning draft')\n```")
  assert harmony.graded_text(ours, text) == ANSWER
  assert harmony.graded_text(ours, "<|channel|>analysis<|message|>```python\nprint(1)\n```") == ""  # NO_CODE
  messages = harmony.parse_completion(text)
  assert [(m.channel, m.end) for m in messages] == [("analysis", "<|end|>"), ("final", "")]


def test_plain_tokenizers_are_unchanged():
  class Plain:
    chat_format = harmony.PLAIN

    def decode(self, ids, skip_special_tokens=True):
      return f"{list(ids)} {skip_special_tokens}"

  text = "<|channel|>final<|message|>x"
  assert harmony.decode_completion(Plain(), [1, 2]) == "[1, 2] True"
  assert harmony.graded_text(Plain(), text) == text
  assert harmony.assistant_message(Plain(), text) == ({"role": "assistant", "content": text}, None)
