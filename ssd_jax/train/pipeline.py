"""SFT data pipeline: synthesis JSONL shards -> chat-rendered, loss-masked, packed, batched grain iterator.

Each kept row `{"id", "messages": [..., {"role": "assistant", "content": ...}], "kept": true, ...}` is rendered
with the tokenizer's chat template and tokenized once, up front (`load_examples`), so that bad rows, truncation
and drops are counted and reported before training starts. The loss mask covers the assistant turn only:

  prompt = template(messages[:-1], add_generation_prompt=True)     # what the model saw when it sampled
  full   = template(messages,      add_generation_prompt=False)    # the same, plus the sampled answer
  targets = tokens(full)[len(tokens(prompt)):]  up to and including the turn's end-of-turn token

The prompt must be a token prefix of the full rendering. When the joint encoding merges a piece across the
boundary but the prompt *text* is a prefix, the answer is encoded on its own after the prompt ids (that is how
the sampler produced it) and the row is counted in `retokenized`. Templates that write a newline after the
end-of-turn token (ChatML) leave it unmasked: the model stops at end-of-turn and never predicts that newline.
Thinking traces are part of the assistant content and stay in the targets.

Examples become next-token pairs before packing (inputs = ids[:-1], targets = ids[1:], weights = mask[1:]),
so a packed row never asks a segment to predict the next segment's first token. Rows are packed first-fit with
`grain.experimental.FirstFitPackIterDataset` (segment ids and per-segment positions), or padded one example per
row when `packing=False`. Order: a seeded per-epoch shuffle, then a `[process_index::process_count]` slice,
so processes read disjoint examples. The returned `grain.DatasetIterator` checkpoints with `get_state()` /
`set_state()` (orbax: `grain.checkpoint.CheckpointSave/Restore`).
"""

from __future__ import annotations

import dataclasses
import glob
import os
from typing import Any, Iterable, Mapping, Sequence

import grain
import jax
import numpy as np
from grain import experimental as grain_experimental

from ssd_jax.data.problems import ProblemError, iter_lines, parse_row
from ssd_jax.models.tokenizer import Tokenizer

BATCH_KEYS = ("inputs", "targets", "weights", "segment_ids", "positions")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """How examples become rows.

  Attributes:
    seq_len: Tokens per row (S). Next-token pairs of an example with L tokens take L - 1 slots.
    packing: Pack several examples per row (first-fit) instead of one padded example per row.
    too_long: "truncate" keeps the first seq_len pairs (an example left without targets is dropped), "drop"
      drops examples whose pairs exceed seq_len.
    seed: Shuffle seed; each epoch is reshuffled from it.
    shuffle: Shuffle examples (off: file order, for tests and debugging).
    num_epochs: Passes over the examples; None repeats forever.
    packing_bins: Rows filled at once by the first-fit packer; more bins, less padding.
  """

  seq_len: int = 8192
  packing: bool = True
  too_long: str = "truncate"
  seed: int = 0
  shuffle: bool = True
  num_epochs: int | None = None
  packing_bins: int = 8

  def __post_init__(self):
    if self.too_long not in ("truncate", "drop"):
      raise ValueError(f"too_long must be 'truncate' or 'drop', got {self.too_long!r}")
    if self.seq_len < 2:
      raise ValueError(f"seq_len must be >= 2, got {self.seq_len}")


@dataclasses.dataclass
class DataStats:
  """What `load_examples` did with each row; `bad` lists (row id, reason) for every rejected row."""

  rows: int = 0
  not_kept: int = 0
  examples: int = 0
  truncated: int = 0
  dropped_too_long: int = 0
  retokenized: int = 0
  tokens: int = 0
  target_tokens: int = 0
  bad: list[tuple[str, str]] = dataclasses.field(default_factory=list)

  def summary(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["bad"] = len(self.bad)
    return d


class BadRow(ValueError):
  """A row that cannot become a training example; the message says why."""


def _stop_ids(tokenizer: Tokenizer) -> frozenset[int]:
  return frozenset(tokenizer.stop_ids)


def tokenize_conversation(tokenizer: Tokenizer, messages: Sequence[Mapping[str, Any]],
                          **template_kwargs: Any) -> tuple[np.ndarray, np.ndarray, bool]:
  """Renders and tokenizes one conversation whose last message is the assistant's answer.

  Returns:
    ids [L] int32, mask [L] bool (True on the assistant tokens the model must predict, end-of-turn included,
    anything the template writes after it excluded), and whether the answer had to be encoded apart from
    the prompt because the joint encoding merged a piece across the boundary.

  Raises:
    BadRow: no final assistant message, the prompt is not a prefix of the full rendering, or the rendered
      answer has no end-of-turn token.
  """
  if not messages or messages[-1].get("role") != "assistant":
    raise BadRow("the last message is not an assistant turn")
  if not isinstance(messages[-1].get("content"), str):
    raise BadRow("the assistant content is not a string")
  prompt_text = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, **template_kwargs)
  full_text = tokenizer.apply_chat_template(messages, add_generation_prompt=False, **template_kwargs)
  prompt_ids = tokenizer.encode(prompt_text)
  full_ids = tokenizer.encode(full_text)
  p = len(prompt_ids)
  retokenized = False
  if full_ids[:p] != prompt_ids:
    if not full_text.startswith(prompt_text):
      raise BadRow("the rendered prompt (add_generation_prompt=True) is not a prefix of the rendered conversation")
    full_ids = prompt_ids + tokenizer.encode(full_text[len(prompt_text):])
    retokenized = True
  answer = full_ids[p:]
  stops = _stop_ids(tokenizer)
  ends = [i for i, t in enumerate(answer) if t in stops]
  if not ends:
    raise BadRow("the rendered assistant turn has no end-of-turn token")
  mask = np.zeros(len(full_ids), bool)
  mask[p:p + ends[-1] + 1] = True
  return np.asarray(full_ids, np.int32), mask, retokenized


def _make_example(ids: np.ndarray, mask: np.ndarray, cfg: DataConfig, stats: DataStats) -> dict | None:
  """ids/mask [L] -> next-token pairs [min(L - 1, S)], applying the too-long policy; None when dropped."""
  inputs, targets, weights = ids[:-1], ids[1:], mask[1:].astype(np.float32)
  if len(inputs) > cfg.seq_len:
    if cfg.too_long == "drop":
      stats.dropped_too_long += 1
      return None
    stats.truncated += 1
    inputs, targets, weights = inputs[:cfg.seq_len], targets[:cfg.seq_len], weights[:cfg.seq_len]
    if not weights.any():
      stats.dropped_too_long += 1
      return None
  stats.examples += 1
  stats.tokens += len(inputs)
  stats.target_tokens += int(weights.sum())
  return {"inputs": inputs, "targets": targets, "weights": weights}


def shard_paths(paths: str | Sequence[str]) -> list[str]:
  """A directory (its *.jsonl files), a glob, a file or a list of those -> sorted file list."""
  items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
  out: list[str] = []
  for item in items:
    item = os.fspath(item)
    if os.path.isdir(item):
      out.extend(sorted(glob.glob(os.path.join(item, "*.jsonl"))))
    elif any(c in item for c in "*?["):
      out.extend(sorted(glob.glob(item)))
    else:
      out.append(item)
  if not out:
    raise FileNotFoundError(f"no JSONL shards found in {paths!r}")
  return out


def _rows(paths: Sequence[str]) -> Iterable[tuple[str, Any]]:
  """(fallback id, parsed row, or the error of a line that is not a JSON object) for every non-empty line.

  SFT shards may come from elsewhere, so a bad line is reported and skipped (the dataset loaders' row reader),
  not fatal as in the project's own files (`files.read_jsonl`).
  """
  for path in paths:
    for n, _, raw in iter_lines(path):
      where = f"{os.path.basename(path)}:{n}"
      try:
        yield where, parse_row(raw, path, n)
      except ProblemError as e:
        yield where, BadRow(e.reason)


def load_examples(paths: str | Sequence[str], tokenizer: Tokenizer, cfg: DataConfig,
                  **template_kwargs: Any) -> tuple[list[dict[str, np.ndarray]], DataStats]:
  """Reads every shard and returns (examples in file order, stats). Rows with `kept` false are skipped.

  Each example is {"inputs", "targets": int32 [T], "weights": float32 [T]} with T <= cfg.seq_len.
  """
  stats = DataStats()
  examples = []
  for where, row in _rows(shard_paths(paths)):
    stats.rows += 1
    if isinstance(row, BadRow):
      stats.bad.append((where, str(row)))
      continue
    row_id = str(row.get("id", where))
    if not row.get("kept", True):
      stats.not_kept += 1
      continue
    messages = row.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
      stats.bad.append((row_id, "missing or malformed 'messages'"))
      continue
    try:
      ids, mask, retokenized = tokenize_conversation(tokenizer, messages, **template_kwargs)
    except BadRow as e:
      stats.bad.append((row_id, str(e)))
      continue
    except Exception as e:  # A template error on one row must not abort the whole load.
      stats.bad.append((row_id, f"chat template failed: {type(e).__name__}: {e}"))
      continue
    stats.retokenized += int(retokenized)
    example = _make_example(ids, mask, cfg, stats)
    if example is not None:
      examples.append(example)
  return examples, stats


def _pad_row(example: Mapping[str, np.ndarray], seq_len: int) -> dict[str, np.ndarray]:
  """One example -> one row [S] with segment id 1 on its tokens and 0 on the padding."""
  n = len(example["inputs"])
  out = {}
  for key in ("inputs", "targets", "weights"):
    row = np.zeros(seq_len, example[key].dtype)
    row[:n] = example[key]
    out[key] = row
  out["segment_ids"] = (np.arange(seq_len) < n).astype(np.int32)
  out["positions"] = np.where(np.arange(seq_len) < n, np.arange(seq_len), 0).astype(np.int32)
  return out


def _from_packed(row: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {"inputs": row["inputs"].astype(np.int32), "targets": row["targets"].astype(np.int32),
          "weights": row["weights"].astype(np.float32), "segment_ids": row["inputs_segment_ids"].astype(np.int32),
          "positions": row["inputs_positions"].astype(np.int32)}


def make_dataset(examples: Sequence[Mapping[str, np.ndarray]], cfg: DataConfig, batch_size: int,
                 process_index: int | None = None, process_count: int | None = None) -> grain.IterDataset:
  """Examples -> IterDataset of this process's batches {BATCH_KEYS: [batch_size, S]}.

  batch_size is per process (global batch / process_count). The order depends only on (examples, cfg,
  process_index, process_count), so a restored iterator state replays it exactly.
  """
  if not examples:
    raise ValueError("no examples to train on")
  pi = jax.process_index() if process_index is None else process_index
  pc = jax.process_count() if process_count is None else process_count
  ds = grain.MapDataset.source(list(examples))
  if cfg.shuffle:
    ds = ds.shuffle(seed=cfg.seed)  # Indices past the end reshuffle with a per-epoch seed.
  ds = ds.repeat(cfg.num_epochs)
  if pc > 1:
    ds = ds[pi::pc]
  it = ds.to_iter_dataset()
  if cfg.packing:
    s = cfg.seq_len
    it = grain_experimental.FirstFitPackIterDataset(
        it, length_struct={"inputs": s, "targets": s, "weights": s}, num_packing_bins=cfg.packing_bins,
        seed=cfg.seed, shuffle_bins=False).map(_from_packed)
  else:
    it = it.map(lambda ex: _pad_row(ex, cfg.seq_len))
  return it.batch(batch_size, drop_remainder=True)


def build_iterator(paths: str | Sequence[str], tokenizer: Tokenizer, cfg: DataConfig, batch_size: int,
                   **template_kwargs: Any) -> tuple[grain.DatasetIterator, DataStats]:
  """Shards -> (checkpointable iterator over this process's batches, load stats)."""
  examples, stats = load_examples(paths, tokenizer, cfg, **template_kwargs)
  return iter(make_dataset(examples, cfg, batch_size)), stats
