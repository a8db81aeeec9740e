"""Continuous batching over a paged KV pool: which sequences hold which slots and pages (host side, no device work).

Per data shard there are `slots` decode slots and a pool of `pages` pages of `page_size` tokens. A request (one
prompt, n samples) lives on one shard. Its prompt is prefilled once, in chunks of at most `prefill_chunk` tokens
between decode steps, into pages its n samples then share (reference counts); each sample copies the last,
partly filled prompt page into a page of its own (copy on write) when it takes a slot. Before every decode chunk
each running sequence gets the pages its next `steps` tokens need; when a shard runs out, its latest-arrived running
sequence is preempted by recompute: it gives its pages and slot back and waits, first in line, with its tokens so
far, to be prefilled again (its random stream is keyed by request and sample, so it draws the same tokens anyway).
A request is refused up front when one of its samples could never fit: prompt + max_new tokens over a shard's pool
or over `max_seq_len`.

The engine drives it: `next_prefill` (chunks to run now), `prefilled` (a chunk ran; a finished prompt's samples get
their first tokens), `fill_slots` (ready samples into free slots), `reserve` (pages for the next chunk, preempting
if needed), `advance` (tokens a chunk produced); `free_slots` and `pending` tell it whether to prefill again before
decoding and when a decode chunk should stop to refill. `bench.kv_capacity` replays the same calls on length distributions.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Sequence

__all__ = ["PagePool", "PrefillChunk", "Scheduler", "SchedulerConfig", "Seq", "SlotFill"]


class PagePool:
  """One shard's pages: reference counts and a free stack that hands out the lowest ids first (deterministic)."""

  def __init__(self, num_pages: int):
    self.num_pages = num_pages
    self.refs = [0] * num_pages
    self._free = list(range(num_pages - 1, -1, -1))

  @property
  def free_count(self) -> int:
    return len(self._free)

  def alloc(self, n: int) -> list[int] | None:
    """n fresh pages (reference count 1), or None when fewer are free."""
    if n > len(self._free):
      return None
    pages = [self._free.pop() for _ in range(n)]
    for p in pages:
      self.refs[p] = 1
    return pages

  def retain(self, pages: Sequence[int], times: int = 1) -> None:
    for p in pages:
      self.refs[p] += times

  def release(self, pages: Sequence[int]) -> None:
    for p in pages:
      self.refs[p] -= 1
      if self.refs[p] == 0:
        self._free.append(p)
      elif self.refs[p] < 0:
        raise RuntimeError(f"page {p} released more often than taken")


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
  shards: int
  slots: int  # decode slots per shard
  pages: int  # pages per shard
  page_size: int
  max_seq_len: int  # prompt + generated tokens of one sequence, at most (the page table's width)
  prefill_chunk: int = 512  # prompt tokens per prefill row per iteration
  prefill_rows: int = 8  # prefill rows per shard per iteration
  # New work is admitted only while the shard keeps `headroom` free tokens per running sequence beyond it (at most
  # half of its pool): room for the running sequences to grow, so that admitting does not buy preemptions, which
  # recompute a whole sequence (vLLM keeps a fixed watermark instead; per sequence holds more on long answers).
  headroom: int = 1024


@dataclasses.dataclass(eq=False)
class Seq:
  """One sample of one request: its tokens, pages and slot."""

  request: int
  sample: int
  shard: int
  prompt_len: int
  max_new: int
  generated: list[int] = dataclasses.field(default_factory=list)
  pages: list[int] = dataclasses.field(default_factory=list)
  slot: int | None = None  # global slot index while running
  finished: bool = False
  preemptions: int = 0

  @property
  def kv_len(self) -> int:
    """Tokens whose keys and values are cached: all but the last sampled one."""
    return self.prompt_len + max(len(self.generated) - 1, 0)


@dataclasses.dataclass(eq=False)
class _Prompt:
  """A request's prompt, or a preempted sequence's tokens, being prefilled into its pages."""

  request: int
  shard: int
  length: int
  samples: list[Seq]  # the sequences that continue from it (n new samples, or the one preempted sequence)
  pages: list[int]
  done: int = 0  # tokens prefilled so far
  recompute: bool = False


@dataclasses.dataclass(frozen=True)
class PrefillChunk:
  """Prefill tokens [start, start + length) of a request's prompt, or of a preempted sequence's tokens."""

  prompt: _Prompt
  start: int
  length: int

  @property
  def request(self) -> int:
    return self.prompt.request

  @property
  def shard(self) -> int:
    return self.prompt.shard

  @property
  def pages(self) -> list[int]:
    return self.prompt.pages

  @property
  def last(self) -> bool:
    """The prompt is complete after this chunk (a new prompt's samples then draw their first tokens)."""
    return self.start + self.length == self.prompt.length

  @property
  def recompute(self) -> Seq | None:
    """The preempted sequence whose tokens (prompt and all but its last sampled token) this prefills."""
    return self.prompt.samples[0] if self.prompt.recompute else None

  @property
  def samples(self) -> list[Seq]:
    return self.prompt.samples


@dataclasses.dataclass(frozen=True)
class SlotFill:
  """`seq` takes `slot`; `copy` = (source page, own page) when its partial last prompt page is copied first."""

  seq: Seq
  slot: int
  copy: tuple[int, int] | None


class Scheduler:
  """See the module docstring. Sequences are identified by (request, sample)."""

  def __init__(self, cfg: SchedulerConfig):
    self.cfg = cfg
    self.pools = [PagePool(cfg.pages) for _ in range(cfg.shards)]
    self.slots: list[list[Seq | None]] = [[None] * cfg.slots for _ in range(cfg.shards)]
    self.waiting: collections.deque = collections.deque()  # (request, prompt_len, n, max_new) or a preempted Seq
    self.prefilling: list[_Prompt] = []
    self.ready: list[collections.deque[Seq]] = [collections.deque() for _ in range(cfg.shards)]
    self.sequences: list[Seq] = []
    self.preemptions = 0
    self._next_shard = 0

  # -- requests ----------------------------------------------------------------------------------

  def pages_for(self, tokens: int) -> int:
    return -(-tokens // self.cfg.page_size)

  def check(self, request: int, prompt_len: int, max_new: int, n: int = 1) -> None:
    """Refuses a request whose sequence could never fit, naming its size and the pool's. With n > 1 samples and a
    partly filled last prompt page, a sample also needs its own copy of that page while another holds it."""
    need = prompt_len + max_new
    pages = self.pages_for(need) + (n > 1 and prompt_len % self.cfg.page_size != 0)
    if need > self.cfg.max_seq_len or pages > self.cfg.pages:
      raise ValueError(
          f"request {request}: prompt of {prompt_len} tokens + max_new_tokens {max_new} = {need} tokens "
          f"({pages} pages of {self.cfg.page_size}) cannot fit: the KV pool holds {self.cfg.pages} "
          f"pages ({self.cfg.pages * self.cfg.page_size} tokens) per shard and a sequence at most max_seq_len "
          f"{self.cfg.max_seq_len} tokens; give the engine more KV memory or a longer max_seq_len, or shorten it")

  def add(self, request: int, prompt_len: int, n: int, max_new: int) -> None:
    self.check(request, prompt_len, max_new, n)
    self.waiting.append((request, prompt_len, n, max_new))

  @property
  def busy(self) -> bool:
    return bool(self.waiting or self.prefilling or any(self.ready) or self.running())

  def running(self) -> list[Seq]:
    return [s for shard in self.slots for s in shard if s is not None]

  def free_slots(self) -> int:
    """Slots no sequence holds, over all shards."""
    return sum(map(self._free_slots, range(self.cfg.shards)))

  def pending(self) -> int:
    """Sequences that wait for a slot: samples of waiting and prefilling prompts, preempted and ready ones."""
    waiting = sum(1 if isinstance(item, Seq) else item[2] for item in self.waiting)
    return waiting + sum(len(p.samples) for p in self.prefilling) + sum(map(len, self.ready))

  # -- prefill -----------------------------------------------------------------------------------

  def _free_slots(self, shard: int) -> int:
    return sum(s is None for s in self.slots[shard])

  def _promised(self, shard: int) -> int:
    """Slots already spoken for: ready samples and the samples of prompts being prefilled."""
    return len(self.ready[shard]) + sum(len(p.samples) for p in self.prefilling if p.shard == shard)

  def _start(self) -> None:
    """Moves waiting work into prefill while a shard has a slot for it and pages for its tokens."""
    while self.waiting:
      item = self.waiting[0]
      length = item.prompt_len + len(item.generated) - 1 if isinstance(item, Seq) else item[1]
      order = [(self._next_shard + i) % self.cfg.shards for i in range(self.cfg.shards)]
      if isinstance(item, Seq):
        order = [item.shard]  # its stream does not care, but the engine's slot bookkeeping is per shard
      for shard in order:
        if self._free_slots(shard) <= self._promised(shard):
          continue
        # A recompute keeps the same room: taking it away would preempt the earlier sequences it waits behind.
        growing = sum(s is not None for s in self.slots[shard]) + self._promised(shard)
        reserve = min(self.pages_for(self.cfg.headroom) * growing, self.cfg.pages // 2)
        if self.pools[shard].free_count - self.pages_for(length) < reserve:
          continue
        pages = self.pools[shard].alloc(self.pages_for(length))
        if pages is None:
          continue
        self.waiting.popleft()
        if isinstance(item, Seq):
          self.prefilling.append(_Prompt(item.request, shard, length, [item], pages, recompute=True))
        else:
          request, prompt_len, n, max_new = item
          samples = [Seq(request, i, shard, prompt_len, max_new) for i in range(n)]
          self.sequences += samples
          self.prefilling.append(_Prompt(request, shard, prompt_len, samples, pages))
        self._next_shard = (shard + 1) % self.cfg.shards
        break
      else:
        return

  def next_prefill(self) -> list[PrefillChunk]:
    """The prefill chunks to run now: up to `prefill_rows` per shard, `prefill_chunk` tokens each."""
    self._start()
    chunks, rows = [], collections.Counter()
    for p in self.prefilling:
      if rows[p.shard] >= self.cfg.prefill_rows:
        continue
      rows[p.shard] += 1
      chunks.append(PrefillChunk(p, p.done, min(self.cfg.prefill_chunk, p.length - p.done)))
    return chunks

  def prefilled(self, chunk: PrefillChunk, first_tokens: Sequence[int] | None = None) -> None:
    """`chunk` ran. When it completed a new prompt, `first_tokens` holds each sample's first token."""
    prompt = chunk.prompt
    if prompt.done != chunk.start:
      raise RuntimeError(f"request {prompt.request}: prefill chunk at {chunk.start}, expected {prompt.done}")
    prompt.done += chunk.length
    if prompt.done < prompt.length:
      return
    self.prefilling.remove(prompt)
    if prompt.recompute:
      seq = prompt.samples[0]
      seq.pages = prompt.pages
      self.ready[prompt.shard].appendleft(seq)
      return
    if first_tokens is None or len(first_tokens) != len(prompt.samples):
      raise ValueError(f"request {prompt.request}: expected {len(prompt.samples)} first tokens")
    self.pools[prompt.shard].retain(prompt.pages, len(prompt.samples) - 1)  # the prefill's reference is sample 0's
    for seq, token in zip(prompt.samples, first_tokens):
      seq.generated.append(int(token))
      seq.pages = list(prompt.pages)
      if seq.max_new <= 1:
        self._finish(seq)
      else:
        self.ready[prompt.shard].append(seq)

  # -- slots and pages ---------------------------------------------------------------------------

  def fill_slots(self, steps: int) -> list[SlotFill]:
    """Ready sequences into free slots, copying a shared, partly filled last prompt page first; a sequence enters
    only while its shard has the pages its first `steps` tokens need (else it would be preempted right away)."""
    fills = []
    for shard, ready in enumerate(self.ready):
      pool = self.pools[shard]
      while ready and self._free_slots(shard):
        seq = ready[0]
        copy = None
        shared_partial = seq.kv_len % self.cfg.page_size and pool.refs[seq.pages[-1]] > 1
        growth = self.pages_for(min(seq.kv_len + steps, seq.prompt_len + seq.max_new - 1)) - len(seq.pages)
        if pool.free_count < max(growth, 0) + bool(shared_partial):
          if not self._requeue_ready(shard):
            break
          continue
        if shared_partial:
          own = pool.alloc(1)
          if own is None:
            break
          copy = (seq.pages[-1], own[0])
          pool.release([seq.pages[-1]])
          seq.pages[-1] = own[0]
        ready.popleft()
        local = self.slots[shard].index(None)
        self.slots[shard][local] = seq
        seq.slot = shard * self.cfg.slots + local
        fills.append(SlotFill(seq, seq.slot, copy))
    return fills

  def _requeue_ready(self, shard: int) -> bool:
    """When nothing runs on `shard` and its first ready sequence cannot get its pages, the pool is held by ready
    sequences that cannot grow: the latest-arrived other one gives its pages back and waits to be recomputed, like
    a preempted sequence. Returns whether one did."""
    ready = self.ready[shard]
    if any(s is not None for s in self.slots[shard]) or len(ready) < 2:
      return False
    victim = max(list(ready)[1:], key=lambda s: (s.request, s.sample))
    ready.remove(victim)
    self.pools[shard].release(victim.pages)
    victim.pages = []
    victim.preemptions += 1
    self.preemptions += 1
    self.waiting.appendleft(victim)
    return True

  def reserve(self, steps: int) -> list[tuple[Seq, int]]:
    """Pages for every running sequence's next `steps` tokens; returns (sequence, slot it left) for each sequence
    preempted to make room."""
    preempted = []
    for shard in range(self.cfg.shards):
      pool = self.pools[shard]
      while True:
        # Arrival order: the latest-arrived request gives way first, so a long sequence, once recomputed, is not the
        # first victim again (ordering by admission would make it ping-pong).
        running = sorted((s for s in self.slots[shard] if s is not None), key=lambda s: (s.request, s.sample))
        short = False
        for seq in running:
          limit = min(seq.kv_len + steps, seq.prompt_len + seq.max_new - 1)
          need = self.pages_for(limit) - len(seq.pages)
          if need > 0:
            got = pool.alloc(need)
            if got is None:
              short = True
              break
            seq.pages += got
        if not short:
          break
        victim = running[-1]
        preempted.append((victim, victim.slot))
        self._preempt(victim)
    return preempted

  def _vacate(self, seq: Seq) -> None:
    shard, local = divmod(seq.slot, self.cfg.slots)
    self.slots[shard][local] = None
    seq.slot = None
    self.pools[seq.shard].release(seq.pages)
    seq.pages = []

  def _preempt(self, seq: Seq) -> None:
    self._vacate(seq)
    seq.preemptions += 1
    self.preemptions += 1
    self.waiting.appendleft(seq)

  def _finish(self, seq: Seq) -> None:
    if seq.slot is not None:
      self._vacate(seq)
    else:
      self.pools[seq.shard].release(seq.pages)
      seq.pages = []
    seq.finished = True

  def advance(self, seq: Seq, tokens: Sequence[int], done: bool) -> None:
    """A decode chunk gave `seq` these tokens; `done` when it stopped or reached max_new."""
    seq.generated += [int(t) for t in tokens]
    if done:
      self._finish(seq)

  def in_use(self) -> int:
    """Pages held right now, over all shards."""
    return sum(p.num_pages - p.free_count for p in self.pools)
