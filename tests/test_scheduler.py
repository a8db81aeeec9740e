"""The host scheduler (`sampling.scheduler`) without a model: a small driver makes the engine's calls (`next_prefill`,
`prefilled`, `fill_slots`, `reserve`, `advance`) with a fake model whose answers have predetermined lengths, and
checks the page reference counts, copy on write, preemption by recompute and refusals at every step."""

from __future__ import annotations

import collections

import pytest

from ssd_jax.sampling.scheduler import PagePool, Scheduler, SchedulerConfig


def make(**kw) -> Scheduler:
  cfg = dict(shards=1, slots=4, pages=16, page_size=4, max_seq_len=64, prefill_chunk=64, prefill_rows=8, headroom=0)
  return Scheduler(SchedulerConfig(**{**cfg, **kw}))


def token(seq, i: int) -> int:
  """The fake model's i-th token of a sequence: a function of (request, sample, i) like the engine's streams."""
  return seq.request * 10000 + seq.sample * 1000 + i


def check_pages(sched: Scheduler, steps: int) -> None:
  """Every reference count equals the holders of the page on its shard (sequences and prompts being prefilled);
  each running sequence sits in its shard's slots, has the pages its next chunk writes and owns them alone."""
  for shard, pool in enumerate(sched.pools):
    held = collections.Counter()
    for seq in sched.sequences:
      held.update(seq.pages if seq.shard == shard else [])
    for prompt in sched.prefilling:
      held.update(prompt.pages if prompt.shard == shard else [])
    assert pool.refs == [held[p] for p in range(pool.num_pages)]
    assert pool.free_count == pool.refs.count(0)
  ps = sched.cfg.page_size
  for seq in sched.running():
    assert seq.slot // sched.cfg.slots == seq.shard
    assert len(seq.pages) >= sched.pages_for(min(seq.kv_len + steps, seq.prompt_len + seq.max_new - 1))
    assert all(sched.pools[seq.shard].refs[p] == 1 for p in seq.pages[seq.kv_len // ps:])


def drive(sched: Scheduler, lengths: dict, steps: int = 4) -> dict:
  """The engine's loop until the scheduler is idle; `lengths[(request, sample)]` is the answer length the fake model
  gives (capped by max_new). Checks each preemption's victim and place in line; returns what happened."""
  log = {"chunks": [], "fills": [], "preempted": []}
  for _ in range(10000):
    if not sched.busy:
      return log
    chunks = sched.next_prefill()
    for chunk in chunks:
      log["chunks"].append((chunk.request, chunk.shard, chunk.start, chunk.length, chunk.last, chunk.recompute))
      if chunk.recompute is not None and chunk.last:
        seq = chunk.recompute
        assert chunk.start + chunk.length == seq.prompt_len + len(seq.generated) - 1
      first = [token(s, 0) for s in chunk.samples] if chunk.last and chunk.recompute is None else None
      sched.prefilled(chunk, first)
    fills = sched.fill_slots(steps)
    assert all(f.copy is None for f in fills if f.seq.preemptions)  # a recomputed sequence owns its pages
    log["fills"] += fills
    before = {}
    for seq in sched.running():
      before.setdefault(seq.shard, []).append(seq)
    preempted = sched.reserve(steps)
    for shard in {v.shard for v, _ in preempted}:
      victims = [v for v, _ in preempted if v.shard == shard]
      latest = sorted(before[shard], key=lambda s: (s.request, s.sample))[::-1]
      assert victims == latest[:len(victims)]  # the latest-arrived running sequences give way first
    assert list(sched.waiting)[:len(preempted)] == [v for v, _ in preempted][::-1]  # first in line
    assert all(v.slot is None and not v.pages for v, _ in preempted)
    log["preempted"] += [v for v, _ in preempted]
    check_pages(sched, steps)
    running = sched.running()
    assert chunks or fills or running, f"stalled: {len(sched.waiting)} waiting, {sum(map(len, sched.ready))} ready"
    for seq in running:
      target = min(lengths.get((seq.request, seq.sample), seq.max_new), seq.max_new)
      have = len(seq.generated)
      new = [token(seq, i) for i in range(have, min(have + steps, target))]
      sched.advance(seq, new, done=have + len(new) >= target)
  raise AssertionError("the scheduler never went idle")


def assert_all_done(sched: Scheduler, lengths: dict) -> None:
  """Every sequence finished with exactly its answer, and every page is free again."""
  for seq in sched.sequences:
    target = min(lengths.get((seq.request, seq.sample), seq.max_new), seq.max_new)
    assert seq.finished and seq.generated == [token(seq, i) for i in range(target)]
  for pool in sched.pools:
    assert pool.free_count == pool.num_pages and pool.refs == [0] * pool.num_pages
  assert sched.in_use() == 0


def test_page_pool():
  """alloc hands out the lowest free ids first or None; a page is free again only when its count reaches 0; one
  release too many raises."""
  pool = PagePool(4)
  assert pool.alloc(2) == [0, 1] and pool.refs == [1, 1, 0, 0]
  assert pool.alloc(3) is None and pool.free_count == 2
  pool.retain([0], times=2)
  pool.release([0, 1])
  assert pool.refs == [2, 0, 0, 0] and pool.free_count == 3
  assert pool.alloc(1) == [1]
  pool.release([0])
  pool.release([0])
  assert pool.free_count == 3 and pool.alloc(3) == [0, 2, 3]
  pool.release([1])
  with pytest.raises(RuntimeError, match="page 1"):
    pool.release([1])


def test_shared_prompt_copy_on_write():
  """n samples share the prompt's pages (count n); each but the last to take a slot copies the partial last page
  into a page of its own, and the last keeps the original; a whole-page prompt is shared without copies."""
  sched = make()
  sched.add(0, 10, 4, 8)  # 2 full pages + 2 tokens
  [chunk] = sched.next_prefill()
  assert chunk.last and chunk.pages == [0, 1, 2]
  sched.prefilled(chunk, [7, 7, 7, 7])
  assert sched.pools[0].refs[:3] == [4, 4, 4]
  fills = sched.fill_slots(4)
  assert [f.copy for f in fills] == [(2, 3), (2, 4), (2, 5), None]
  assert [f.seq.pages for f in fills] == [[0, 1, 3], [0, 1, 4], [0, 1, 5], [0, 1, 2]]
  assert sched.pools[0].refs[:6] == [4, 4, 1, 1, 1, 1]
  check_pages(sched, 0)
  sched.reserve(4)
  check_pages(sched, 4)

  sched = make()
  sched.add(0, 8, 4, 8)  # 2 full pages
  [chunk] = sched.next_prefill()
  sched.prefilled(chunk, [7, 7, 7, 7])
  fills = sched.fill_slots(4)
  assert [f.copy for f in fills] == [None] * 4 and sched.pools[0].refs[:2] == [4, 4]
  sched.reserve(4)
  assert sorted(s.pages[-1] for s in sched.running()) == [2, 3, 4, 5]


@pytest.mark.parametrize("pages, slots", [(64, 8), (9, 3), (9, 8), (11, 8)])
def test_all_pages_return(pages, slots):
  """Mixed requests (n > 1, answers shorter than max_new, max_new 1, samples waiting for slots) finish with every
  page back in the pool, also when a small pool forces preemptions."""
  sched = make(pages=pages, slots=slots)
  lengths = {}
  for r, (prompt, n, max_new) in enumerate([(10, 3, 20), (4, 1, 25), (7, 2, 1), (16, 2, 12), (5, 4, 9)]):
    sched.add(r, prompt, n, max_new)
    lengths.update({(r, i): 1 + (5 * r + 3 * i) % max_new for i in range(n)})
  log = drive(sched, lengths)
  assert_all_done(sched, lengths)
  assert (sched.preemptions > 0) == (pages < 64)
  # Preempted from a slot (reserve) or, when nothing runs, sent back from the ready line (the stall breaker).
  assert len(log["preempted"]) <= sched.preemptions == sum(s.preemptions for s in sched.sequences)


def test_preemption_recomputes_latest():
  """A pool too small for all running sequences to grow preempts the latest (request, sample); it waits first in
  line, is re-prefilled as a recompute of prompt + all but its last token, and ends with exactly its answer."""
  sched = make(pages=10, slots=4)
  sched.add(0, 6, 1, 18)
  sched.add(1, 6, 2, 18)
  lengths = {(0, 0): 18, (1, 0): 16, (1, 1): 18}
  log = drive(sched, lengths)
  assert log["preempted"][0].request == 1 and log["preempted"][0].sample == 1
  assert sched.preemptions > 0 and sched.preemptions == sum(s.preemptions for s in sched.sequences)
  recomputed = [c for c in log["chunks"] if c[5] is not None]
  assert {id(c[5]) for c in recomputed} == {id(s) for s in sched.sequences if s.preemptions}
  assert all(c[2] == 0 and c[4] for c in recomputed)  # prefill_chunk 64: one chunk each
  assert_all_done(sched, lengths)


def test_refusal():
  """A request over the pool (pages * page_size per shard) or over max_seq_len is refused, naming its tokens and
  the pool; one that fits exactly is accepted and runs to the end."""
  sched = make(pages=8, max_seq_len=40)
  with pytest.raises(ValueError, match=r"= 33 tokens.*8 pages \(32 tokens\) per shard"):
    sched.check(0, 20, 13)
  with pytest.raises(ValueError, match=r"request 3:.*= 33 tokens"):
    sched.add(3, 20, 1, 13)
  assert not sched.waiting
  with pytest.raises(ValueError, match=r"= 25 tokens.*max_seq_len 24"):
    make(pages=8, max_seq_len=24).add(0, 20, 1, 5)
  sched.add(0, 20, 1, 12)
  drive(sched, {})
  assert_all_done(sched, {})


def test_exact_fit_with_shared_partial_page():
  """n = 2 samples of a prompt whose partial last page must be copied need a page more than one sample: 29 + 3 = 32
  tokens fill the 8-page pool, so one sample runs and two are refused up front (they could never both start)."""
  with pytest.raises(ValueError, match=r"= 32 tokens \(9 pages of 4\)"):
    make(pages=8).add(0, 29, 2, 3)
  sched = make(pages=8)
  sched.add(0, 29, 1, 3)
  drive(sched, {})
  assert_all_done(sched, {})
  sched = make(pages=8)
  sched.add(0, 28, 2, 4)  # a whole-page prompt: shared without a copy
  drive(sched, {})
  assert_all_done(sched, {})


def test_chunked_prefill():
  """A long prompt is prefilled in consecutive chunks of prefill_chunk tokens, `last` only on the final one; a
  chunk out of order raises; prefill_rows bounds the rows of one shard per iteration."""
  sched = make(prefill_chunk=8)
  sched.add(0, 20, 2, 4)
  seen = []
  while sched.prefilling or sched.waiting:
    [chunk] = sched.next_prefill()
    seen.append((chunk.start, chunk.length, chunk.last))
    sched.prefilled(chunk, [1, 2] if chunk.last else None)
    if chunk.start == 0:
      with pytest.raises(RuntimeError, match="prefill chunk at 0, expected 8"):
        sched.prefilled(chunk)
  assert seen == [(0, 8, False), (8, 8, False), (16, 4, True)]
  assert [s.generated for s in sched.ready[0]] == [[1], [2]]

  sched = make(shards=2, prefill_rows=2, slots=8)
  for r in range(7):
    sched.add(r, 5, 1, 4)
  chunks = sched.next_prefill()
  assert collections.Counter(c.shard for c in chunks) == {0: 2, 1: 2}
  drive(sched, {})
  assert_all_done(sched, {})


def test_shards():
  """With two shards requests alternate shards (while both have room); a sequence's pages and slot come from its own
  shard, also when it is preempted and recomputed (the reference counts of each pool match the sequences of that
  shard at every step)."""
  lengths = {(r, i): 3 + 4 * r + i for r in range(6) for i in range(2)}
  for pages, headroom in [(24, 0), (9, 1024)]:
    sched = make(shards=2, pages=pages, slots=6, headroom=headroom)
    for r in range(6):
      sched.add(r, 6 + r, 1 + r % 2, 14)
    sched.next_prefill()
    assert [p.shard for p in sched.prefilling] == [0, 1, 0, 1, 0, 1][:len(sched.prefilling)]
    drive(sched, lengths)
    assert_all_done(sched, lengths)
    assert (sched.preemptions > 0) == (pages == 9)


def test_recompute_does_not_stall():
  """Preempted sequences' recomputes must not leave the pool held by sequences that wait for a slot and cannot grow
  while nothing runs: three 6 + 18-token requests in a 7-page pool (default headroom) run to the end."""
  sched = make(pages=7, headroom=1024)
  for r in range(3):
    sched.add(r, 6, 1, 18)
  drive(sched, {})
  assert_all_done(sched, {})
