"""SFT data pipeline: assistant-only loss mask, bad rows, too-long policy, packing, order and iterator state."""

import json

import numpy as np
import pytest

import tiny_sft
from ssd_jax.models.tokenizer import Tokenizer
from ssd_jax.train import pipeline as pl


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
  return tiny_sft.tokenizer()


def test_mask_covers_exactly_the_assistant_turn(tok):
  end = tok.token_to_id("<|im_end|>")
  for i in range(6):
    messages = tiny_sft.conversation(i)
    ids, mask, retokenized = pl.tokenize_conversation(tok, messages)
    answer = messages[-1]["content"]
    # ChatML: the answer's own tokens plus <|im_end|>; the newline the template writes after it is not a target.
    assert mask.sum() == len(tok.encode(answer)) + 1
    assert ids[mask][-1] == end and not retokenized
    assert tok.decode(ids[mask]) == answer  # Thinking traces stay in the targets.
    assert tok.decode(ids[~mask], skip_special_tokens=False).endswith("<|im_start|>assistant\n\n")
    last = np.flatnonzero(mask)[-1]
    assert last == len(ids) - 2 and tok.decode([ids[-1]]) == "\n"
    prompt = tok.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True)
    assert list(ids[:len(prompt)]) == prompt and not mask[:len(prompt)].any() and mask[len(prompt):last + 1].all()


def test_system_prompt_and_multi_turn_mask_only_the_last_answer(tok):
  messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"},
              {"role": "assistant", "content": "old answer"}, {"role": "user", "content": "again"},
              {"role": "assistant", "content": "new answer"}]
  ids, mask, _ = pl.tokenize_conversation(tok, messages)
  assert tok.decode(ids[mask]) == "new answer"


def test_template_without_trailing_newline(tok):
  template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
  ids, mask, _ = pl.tokenize_conversation(tok, tiny_sft.conversation(1), chat_template=template)
  assert mask[-1] and ids[-1] == tok.token_to_id("<|im_end|>")


def test_bad_rows_are_reported_with_ids(tok, tmp_path):
  extra = (
      json.dumps({"id": "no-answer", "messages": [{"role": "user", "content": "x"}], "kept": True}),
      json.dumps({"id": "dropped-by-filter", "messages": tiny_sft.conversation(0), "kept": False}),
      json.dumps({"id": "no-messages", "kept": True}),
      "{not json",
      json.dumps({"id": "bad-content", "messages": [{"role": "user", "content": "x"},
                                                     {"role": "assistant", "content": None}]}),
  )
  paths = tiny_sft.write_shards(str(tmp_path), 6, shards=2, extra_rows=extra)
  examples, stats = pl.load_examples(str(tmp_path), tok, pl.DataConfig(seq_len=512))
  assert len(examples) == stats.examples == 6 and stats.rows == 11 and stats.not_kept == 1
  bad = dict(stats.bad)
  assert set(bad) == {"no-answer", "no-messages", "bad-content", "shard-001.jsonl:7"}, bad
  assert "assistant" in bad["no-answer"] and "JSON" in bad["shard-001.jsonl:7"]
  assert stats.summary()["bad"] == 4
  assert pl.shard_paths(str(tmp_path / "*.jsonl")) == paths == pl.shard_paths(paths)
  with pytest.raises(FileNotFoundError):
    pl.shard_paths(str(tmp_path / "none-*.jsonl"))


def test_too_long_truncate_and_drop(tok, tmp_path):
  tiny_sft.write_shards(str(tmp_path), 10)
  full, _ = pl.load_examples(str(tmp_path), tok, pl.DataConfig(seq_len=10_000))
  lengths = sorted(len(e["inputs"]) for e in full)
  limit = lengths[4]
  n_long = sum(n > limit for n in lengths)
  assert 0 < n_long < 10
  examples, stats = pl.load_examples(str(tmp_path), tok, pl.DataConfig(seq_len=limit, too_long="drop"))
  assert stats.dropped_too_long == n_long and stats.truncated == 0 and len(examples) == 10 - n_long
  examples, stats = pl.load_examples(str(tmp_path), tok, pl.DataConfig(seq_len=limit, too_long="truncate"))
  assert stats.truncated == n_long and len(examples) + stats.dropped_too_long == 10
  assert all(len(e["inputs"]) <= limit for e in examples)
  assert stats.tokens == sum(len(e["inputs"]) for e in examples)
  assert stats.target_tokens == sum(int(e["weights"].sum()) for e in examples)
  with pytest.raises(ValueError):
    pl.DataConfig(too_long="wrap")


def _collect(it, n):
  return [next(it) for _ in range(n)]


def test_packing_keeps_every_target_and_segments(tok, tmp_path):
  tiny_sft.write_shards(str(tmp_path), 12)
  cfg = pl.DataConfig(seq_len=128, num_epochs=1, shuffle=False, packing_bins=4)
  examples, stats = pl.load_examples(str(tmp_path), tok, cfg)
  batches = list(pl.make_dataset(examples, cfg, batch_size=1))
  rows = [{k: v[0] for k, v in b.items()} for b in batches]
  assert sum(r["weights"].sum() for r in rows) == stats.target_tokens
  assert sum((r["segment_ids"] > 0).sum() for r in rows) == stats.tokens
  assert len(rows) < len(examples)  # Several examples share a row.
  # Each segment is one example, intact: positions restart at 0 and the pairs match an example's.
  pairs = {(tuple(e["inputs"]), tuple(e["targets"]), tuple(e["weights"])) for e in examples}
  for r in rows:
    for s in set(r["segment_ids"]) - {0}:
      sel = r["segment_ids"] == s
      assert list(r["positions"][sel]) == list(range(sel.sum()))
      assert (tuple(r["inputs"][sel]), tuple(r["targets"][sel]), tuple(r["weights"][sel])) in pairs
    assert r["weights"][r["segment_ids"] == 0].sum() == 0


def test_unpacked_rows(tok, tmp_path):
  tiny_sft.write_shards(str(tmp_path), 4)
  cfg = pl.DataConfig(seq_len=128, packing=False, num_epochs=1, shuffle=False)
  examples, _ = pl.load_examples(str(tmp_path), tok, cfg)
  batch = next(iter(pl.make_dataset(examples, cfg, batch_size=4)))
  assert {k: v.shape for k, v in batch.items()} == {k: (4, 128) for k in pl.BATCH_KEYS}
  for row, e in enumerate(examples):
    n = len(e["inputs"])
    assert (batch["segment_ids"][row] == (np.arange(128) < n)).all()
    np.testing.assert_array_equal(batch["targets"][row, :n], e["targets"])


def test_order_is_seeded_and_state_restores(tok, tmp_path):
  tiny_sft.write_shards(str(tmp_path), 16)
  cfg = pl.DataConfig(seq_len=96, seed=7, packing_bins=2)
  examples, _ = pl.load_examples(str(tmp_path), tok, cfg)
  it = iter(pl.make_dataset(examples, cfg, batch_size=2))
  _collect(it, 3)
  state = it.get_state()
  expected = _collect(it, 6)  # Crosses epoch boundaries (16 examples, ~2-4 per row).
  again = iter(pl.make_dataset(examples, cfg, batch_size=2))
  again.set_state(state)
  for a, b in zip(expected, _collect(again, 6)):
    for k in pl.BATCH_KEYS:
      np.testing.assert_array_equal(a[k], b[k])
  other = next(iter(pl.make_dataset(examples, pl.DataConfig(seq_len=96, seed=8, packing_bins=2), batch_size=2)))
  first = next(iter(pl.make_dataset(examples, cfg, batch_size=2)))
  assert not np.array_equal(other["inputs"], first["inputs"])


def test_processes_read_disjoint_examples(tok, tmp_path):
  tiny_sft.write_shards(str(tmp_path), 8)
  cfg = pl.DataConfig(seq_len=512, packing=False, num_epochs=1, seed=1)
  examples, _ = pl.load_examples(str(tmp_path), tok, cfg)
  seen = []
  for pi in range(2):
    for b in pl.make_dataset(examples, cfg, batch_size=1, process_index=pi, process_count=2):
      seen.append(tuple(b["inputs"][0][b["segment_ids"][0] > 0]))
  assert sorted(seen) == sorted(tuple(e["inputs"]) for e in examples)
