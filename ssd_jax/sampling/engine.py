"""The decode engine: continuous batching over a paged KV cache, prefill chunks between jitted decode chunks.

Sampling is offline bulk generation (thousands of prompts, answers from a few tokens to 65,536), so the engine is
built for throughput at long lengths:

- the KV cache is a pool of fixed-size pages (`models/paged.py`) sized from a memory budget, never from
  max_new_tokens; a sequence holds pages for the tokens it has, taken as it grows and returned when it finishes, so
  as many sequences run as the memory actually used allows (`scheduler.py` decides, on the host);
- n samples of a prompt share one prefill and the prompt's pages (each copies the partly filled last page);
- prompts longer than `prefill_chunk` are prefilled in chunks between decode chunks;
- decoding runs up to `chunk_steps` tokens per jitted call (a while_loop that exits once every slot is done, or,
  while requests wait for a slot, once enough slots are free to refill); a step's attention reads the tokens the
  sequences hold, so its cost follows the tokens in the cache, not the maximum;
- a decode chunk with idle slots costs nearly what a full one does, so free slots are filled first: prompts are
  prefilled, several calls if need be, until the slots are taken or nothing is left to start;
- on CPU the decode steps attend over each slot's tokens copied out of its pages into a contiguous row
  (`paged.SlotRows`, attention "rows"), not over gathered pages, and whole prompts are prefilled packed back to
  back into rows instead of one per row padded to a power-of-two width;
- when pages run out, the newest sequence is preempted and later recomputed; since each sample draws from its own
  stream fold_in(seed, stream id, sample index, step), its tokens are the ones it would have drawn anyway, and no
  token ever depends on its slot, its batch, the pool size or the order of the requests;
- sampling parameters are per-row traced arrays: a new temperature never recompiles.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ssd_jax.models import paged, transformer
from ssd_jax.models.config import ModelConfig
from ssd_jax.sampling.sampler import SamplingConfig, SamplingParams, sample, sequence_keys, step_keys
from ssd_jax.sampling.scheduler import PrefillChunk, Scheduler, SchedulerConfig, Seq, SlotFill

FINISH_STOP, FINISH_LENGTH = "stop", "length"
STREAM_ID_LIMIT = 2 ** 64  # stream ids are 64-bit: 10^5 prompt ids would collide in 32 bits (birthday bound)
# How a sample's keys derive from its identity; outputs that record it (synthesis plans) refuse to mix schemes.
RANDOM_STREAM = "fold_in(key(seed), stream_id >> 32, stream_id & 0xffffffff, sample_index, step)"
_BLOCK_PAGES = 8  # page-table width is a multiple of this (the kernels' pages per compute block)
_CPU_POOL_BYTES = 2 << 30  # without device memory statistics (CPU): at most this much KV pool by default
_ROWS_BYTES = 4 << 30  # "auto" attends over slot rows on CPU while they take at most this much (else over pages)
_REFILL_FRACTION = 8  # while requests wait, a decode chunk ends once batch / this many slots (at least 1) are free


def stream_id_of(name: str) -> int:
  """The 64-bit stream id of a string identity (a prompt or problem id): the first 8 bytes of its sha256."""
  return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")


def _prompt_stream_id(prompt: Sequence[int]) -> int:
  """The default stream id of a request: a hash of its prompt token ids (so never its position in a call)."""
  return int.from_bytes(hashlib.sha256(np.asarray(prompt, "<i8").tobytes()).digest()[:8], "big")


@dataclasses.dataclass(frozen=True)
class EngineConfig:
  """Shapes and memory of the engine (the samples never depend on them).

  The KV pool: `kv_pages` pages if set, else `kv_cache_bytes`, else `kv_cache_fraction` of the accelerators' free
  memory (on CPU, which reports none: room for `batch_size` sequences of `max_seq_len`, at most 2 GiB).
  """

  batch_size: int = 32  # decode slots, over all data shards
  max_seq_len: int = 8192  # prompt + generated tokens of one sequence, at most
  page_size: int = 16
  kv_pages: int = 0
  kv_cache_bytes: int = 0
  kv_cache_fraction: float = 0.85
  kv_dtype: str = "auto"  # "auto" (the compute dtype) or "int8" (a scale per token and head)
  chunk_steps: int = 32  # decode steps per jitted call
  prefill_chunk: int = 512  # prompt tokens per prefill row per iteration
  prefill_rows: int = 8  # prefill rows per data shard per iteration
  k_max: int = 64  # top-k candidates the sampler considers (larger top_k takes the exact sort-free path)
  # Decode attention: "reference" (pure JAX over pages), "pallas_gpu" / "pallas_tpu" (jax's decode kernels over
  # pages), "rows" (one device, float pages: over each slot's tokens copied into a contiguous row, paged.SlotRows);
  # "auto" picks by the default backend: the Pallas kernel on GPU / TPU, "rows" on CPU when one device holds the
  # pool, the pages are float and the rows take at most 4 GiB, else "reference".
  decode_attention: str = "auto"
  return_logprobs: bool = False


@dataclasses.dataclass(frozen=True)
class Request:
  """One prompt, sampled `n` times with its own `SamplingConfig` (operator and max_new_tokens).

  `stream_id` names the request's random stream (an int in [0, 2**64), e.g. `stream_id_of(problem id)`): sample i
  draws from (seed, stream_id, i) only. None means a hash of the prompt tokens, so two requests with the same
  prompt and no stream id draw the same samples; give them distinct ids (or one request with a larger n) to
  draw independent ones.
  """

  prompt: Sequence[int]
  n: int = 1
  sampling: SamplingConfig = SamplingConfig()
  stream_id: int | None = None


@dataclasses.dataclass
class Completion:
  request_index: int
  sample_index: int
  tokens: list[int]  # generated ids, including the stop token when finish_reason == "stop"
  finish_reason: str  # "stop" | "length"
  logprobs: list[float] | None = None  # log p(token) under the model's raw (T=1, untruncated) distribution
  text: str | None = None

  @property
  def num_tokens(self) -> int:
    return len(self.tokens)


@struct.dataclass
class SlotState:
  """What the decode loop carries, one row per slot."""

  last_token: jax.Array  # [B] int32, the latest sampled token (its keys and values are not cached yet)
  num_generated: jax.Array  # [B] int32
  max_new: jax.Array  # [B] int32
  done: jax.Array  # [B] bool; free slots are done
  key: jax.Array  # [B] typed PRNG keys: each sequence's base key (seed, stream id, sample index); steps fold in
  params: SamplingParams
  kv_len: jax.Array  # [B] int32, tokens cached


DECODE_IMPLS = (*paged.PAGE_IMPLS, "rows")


def decode_attention_impl(ecfg: EngineConfig) -> str:
  """The configured decode attention, "auto" resolved by the default backend (the engine falls back from "rows" to
  "reference" where rows do not apply: `Engine.decode_impl`)."""
  if ecfg.decode_attention != "auto":
    return ecfg.decode_attention
  return {"gpu": "pallas_gpu", "tpu": "pallas_tpu"}.get(jax.default_backend(), "rows")


def _pow2(n: int, cap: int) -> int:
  return min(cap, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


def _draw(logits, keys, steps, params: SamplingParams, ecfg: EngineConfig, sharding):
  """Each row's token from its own stream at its step; logprobs only when asked (an extra pass over V)."""
  token = sample(step_keys(keys, steps), logits, params.temperature, params.top_k, params.top_p, params.min_p,
                 k_max=ecfg.k_max, sharding=sharding)
  if not ecfg.return_logprobs:
    return token, jnp.zeros(token.shape, jnp.float32)
  return token, jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), token[:, None], axis=1)[:, 0]


@functools.partial(jax.jit, static_argnames=("cfg", "sharding", "fresh", "impl"), donate_argnames=("cache",))
def _prefill(params, tokens, start, length, table, cache, *, cfg, sharding, fresh, impl):
  return transformer.extend(params, tokens, start, length, table, cache, cfg, sharding, attention=impl, fresh=fresh)


@functools.partial(jax.jit, static_argnames=("cfg",), donate_argnames=("cache",))
def _prefill_packed(params, tokens, segments, positions, page_ids, offsets, last, cache, *, cfg):
  return transformer.prefill_packed(params, tokens, segments, positions, page_ids, offsets, last, cache, cfg)


@functools.partial(jax.jit, static_argnames=("ecfg", "sharding"))
def _first_tokens(logits, rows, streams, sample_index, params: SamplingParams, seed, *, ecfg, sharding):
  """The first token of each (prompt row, sample): step 0 of the sample's stream."""
  keys = sequence_keys(seed, streams, sample_index)
  return _draw(logits[rows], keys, jnp.zeros_like(sample_index), params, ecfg, sharding)


def _place(state: SlotState, sharding: transformer.Sharding) -> SlotState:
  """Slot rows split like the batch, so that every call sees the state placed the same way (one compilation)."""
  return jax.tree.map(lambda x: sharding.constrain(x, ("batch",)), state)


@functools.partial(jax.jit, static_argnames=("sharding",), donate_argnames=("state",))
def _insert(state: SlotState, slots, last_token, num_generated, max_new, streams, sample_index, params, kv_len, seed,
            *, sharding) -> SlotState:
  """Starts sequences in `slots` (out-of-range entries are padding and dropped)."""
  new = SlotState(last_token=last_token, num_generated=num_generated, max_new=max_new,
                  done=jnp.zeros(slots.shape, bool), key=sequence_keys(seed, streams, sample_index), params=params,
                  kv_len=kv_len)
  return _place(jax.tree.map(lambda big, small: big.at[slots].set(small, mode="drop"), state, new), sharding)


@functools.partial(jax.jit, static_argnames=("sharding",), donate_argnames=("state",))
def _vacate(state: SlotState, slots, *, sharding) -> SlotState:
  return _place(state.replace(done=state.done.at[slots].set(True, mode="drop")), sharding)


@functools.partial(jax.jit, donate_argnames=("cache",))
def _copy(cache, src, dst):
  return paged.copy_pages(cache, src, dst)


@functools.partial(jax.jit, donate_argnames=("cache",))
def _stage(cache, slots, table):
  return paged.stage_rows(cache, slots, table)


@functools.partial(jax.jit, static_argnames=("cfg", "ecfg", "sharding", "impl"), donate_argnames=("state", "cache"))
def _decode(params, state: SlotState, table, cache, stop_ids, refill_at, *, cfg: ModelConfig, ecfg: EngineConfig,
            sharding: transformer.Sharding, impl: str):
  """Up to `chunk_steps` decode steps; stops early once `refill_at` (a traced count) slots are done. Returns (state,
  cache, tokens [B, chunk_steps] (-1 where a row did not step), logprobs, steps run)."""
  b, n = state.done.shape[0], ecfg.chunk_steps

  def cond(carry):
    i, s, *_ = carry
    return (i < n) & (jnp.sum(s.done.astype(jnp.int32)) < refill_at)

  def body(carry):
    i, s, cache, out, out_lp = carry
    active = ~s.done
    # A done row writes nothing and attends to nothing (start 0, length 0), so it never lengthens the step.
    logits, cache = transformer.extend(params, s.last_token[:, None], jnp.where(active, s.kv_len, 0),
                                       active.astype(jnp.int32), table, cache, cfg, sharding, attention=impl)
    token, logprob = _draw(logits, s.key, s.num_generated, s.params, ecfg, sharding)
    num = s.num_generated + active.astype(jnp.int32)
    done = s.done | (active & (jnp.isin(token, stop_ids) | (num >= s.max_new)))
    out = out.at[:, i].set(jnp.where(active, token, -1))
    out_lp = out_lp.at[:, i].set(logprob)
    s = s.replace(last_token=jnp.where(active, token, s.last_token), num_generated=num, done=done,
                  kv_len=s.kv_len + active.astype(jnp.int32))
    return i + 1, s, cache, out, out_lp

  init = (jnp.zeros((), jnp.int32), state, cache, jnp.full((b, n), -1, jnp.int32), jnp.zeros((b, n), jnp.float32))
  steps, state, cache, out, out_lp = jax.lax.while_loop(cond, body, init)
  return _place(state, sharding), cache, out, out_lp, steps


@functools.partial(jax.jit, static_argnums=(0, 1))
def _empty_slots(batch: int, sharding: transformer.Sharding) -> SlotState:
  """Free slots; built under jit so that every field is its own buffer (the state is donated)."""
  zeros = jnp.zeros((batch,), jnp.int32)
  return _place(SlotState(last_token=zeros, num_generated=zeros, max_new=zeros, done=jnp.ones((batch,), bool),
                          key=jax.random.split(jax.random.key(0), batch), params=SamplingParams.full(batch),
                          kv_len=zeros), sharding)


class Engine:
  """Generates completions for many requests on one mesh. Not thread-safe; one `generate` at a time."""

  def __init__(self, params: transformer.Params, cfg: ModelConfig, stop_ids: Sequence[int],
               engine_cfg: EngineConfig = EngineConfig(), sharding: transformer.Sharding = transformer.NO_SHARDING,
               decode_text: Callable[[list[int]], str] | None = None):
    self.params = params
    self.cfg = cfg
    self.ecfg = engine_cfg
    self.sharding = sharding
    self.stop_ids = jnp.asarray(np.asarray(sorted(set(int(s) for s in stop_ids)) or [-1], np.int32))
    self.decode_text = decode_text
    self.shards = paged.num_shards(sharding.mesh, sharding.rules)
    if engine_cfg.batch_size % self.shards:
      raise ValueError(f"batch_size {engine_cfg.batch_size} must split over the {self.shards} data shards")
    self.kv_dtype = jnp.dtype(cfg.cdtype).name if engine_cfg.kv_dtype == "auto" else engine_cfg.kv_dtype
    self.pages_per_shard = self._pool_pages() // self.shards
    self.table_width = -(-(-(-engine_cfg.max_seq_len // engine_cfg.page_size)) // _BLOCK_PAGES) * _BLOCK_PAGES
    self.decode_impl = self._decode_impl()
    # Prefill chunks are not decode slots: with rows, they attend over the pages (the rows are staged at fill).
    self.prefill_impl = "reference" if self.decode_impl == "rows" else self.decode_impl
    # One CPU device: whole prompts are packed into prefill rows (padding each to a power-of-two width wastes ~40%
    # of a prefill at mixed prompt lengths, and on CPU a FLOP is time). Accelerators keep one prompt per row.
    mesh = sharding.mesh
    self.pack_prefill = jax.default_backend() == "cpu" and (mesh is None or mesh.size == 1)
    self._cache: paged.PagedCache | None = None
    # decode_tokens / (decode_steps * batch_size) is how busy the slots were.
    self.stats = {"prefill_calls": 0, "prefill_rows": 0, "decode_chunks": 0, "decode_steps": 0, "decode_tokens": 0,
                  "preemptions": 0, "peak_pages": 0, "pool_pages": self.pages_per_shard * self.shards}

  def _decode_impl(self) -> str:
    """The decode attention this engine runs: "auto" falls back from "rows" to "reference" where rows do not apply
    (a pool split over devices, int8 pages, rows over 4 GiB); "rows" asked for where they do not apply is refused."""
    impl = decode_attention_impl(self.ecfg)
    if impl not in DECODE_IMPLS:
      raise ValueError(f"unknown decode_attention {impl!r}; expected 'auto' or one of {DECODE_IMPLS}")
    if impl != "rows":
      return impl
    mesh = self.sharding.mesh
    nbytes = paged.rows_bytes(self.cfg, self.ecfg.batch_size, self.table_width * self.ecfg.page_size, self.kv_dtype)
    windowed = self.cfg.attention_sinks or any(self.cfg.window(i) for i in range(self.cfg.num_layers))
    why = ("the KV pool is split over devices" if mesh is not None and mesh.size > 1 else
           "int8 pages" if self.kv_dtype == "int8" else
           "attention sinks or sliding windows (the paged reference has them)" if windowed else
           f"rows of {nbytes / 2 ** 30:.1f} GiB (batch_size x max_seq_len) over 4 GiB" if nbytes > _ROWS_BYTES else "")
    if not why:
      return "rows"
    if self.ecfg.decode_attention == "rows":
      raise ValueError(f"decode_attention 'rows' does not apply: {why}; use 'reference' or 'auto'")
    return "reference"

  # -- memory ------------------------------------------------------------------------------------

  def _pool_pages(self) -> int:
    """Pages in the pool over all shards (a multiple of the shard count)."""
    ecfg = self.ecfg
    per_page = paged.page_bytes(self.cfg, ecfg.page_size, self.kv_dtype)
    if ecfg.kv_pages:
      pages = ecfg.kv_pages
    elif ecfg.kv_cache_bytes:
      pages = ecfg.kv_cache_bytes // per_page
    else:
      devices = self.sharding.mesh.devices.flat if self.sharding.mesh is not None else jax.local_devices()[:1]
      stats = [d.memory_stats() for d in devices]
      if all(s and "bytes_limit" in s for s in stats):
        free = sum(s["bytes_limit"] - s.get("bytes_in_use", 0) for s in stats)
        pages = int(free * ecfg.kv_cache_fraction) // per_page
      else:
        dense = ecfg.batch_size * -(-ecfg.max_seq_len // ecfg.page_size)
        pages = min(dense, _CPU_POOL_BYTES // per_page)
    return max(pages // self.shards, 1) * self.shards

  def _pool(self) -> paged.PagedCache:
    if self._cache is None:
      self._cache = paged.init_cache(self.cfg, self.pages_per_shard * self.shards, self.ecfg.page_size,
                                     dtype=self.kv_dtype, mesh=self.sharding.mesh, rules=self.sharding.rules)
      if self.decode_impl == "rows":
        self._cache = paged.init_rows(self._cache, self.cfg, self.ecfg.batch_size,
                                      self.table_width * self.ecfg.page_size)
    return self._cache

  # -- host loop -----------------------------------------------------------------------------------

  def check_fits(self, requests: Sequence[Request]) -> None:
    """Refuses, before any work, a request that is malformed or whose samples could never fit the pool."""
    sched = self._scheduler()
    for i, r in enumerate(requests):
      if not len(r.prompt):
        raise ValueError(f"request {i}: empty prompt")
      if r.n < 1:
        raise ValueError(f"request {i}: n must be >= 1, got {r.n}")
      if r.stream_id is not None and not 0 <= r.stream_id < STREAM_ID_LIMIT:
        raise ValueError(f"request {i}: stream_id must be in [0, 2**64), got {r.stream_id}")
      sched.check(i, len(r.prompt), r.sampling.max_new_tokens, r.n)

  def _scheduler(self) -> Scheduler:
    e = self.ecfg
    return Scheduler(SchedulerConfig(shards=self.shards, slots=e.batch_size // self.shards, pages=self.pages_per_shard,
                                     page_size=e.page_size, max_seq_len=e.max_seq_len, prefill_chunk=e.prefill_chunk,
                                     prefill_rows=e.prefill_rows))

  def generate(self, requests: Sequence[Request], seed: int = 0, progress: Callable[[int, int], None] | None = None
               ) -> list[list[Completion]]:
    """Returns, for each request, its n completions (in sample order).

    Sample i of request r is a function of (seed, r's stream id, i) and the request itself, whatever else is in
    the call and in whichever order (see `Request.stream_id`). `seed` is in [0, 2**32).
    """
    self.check_fits(requests)
    if not 0 <= seed < 2 ** 32:
      raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    t0 = time.time()
    sched = self._scheduler()
    for i, r in enumerate(requests):
      sched.add(i, len(r.prompt), r.n, r.sampling.max_new_tokens)
    streams = [_prompt_stream_id(r.prompt) if r.stream_id is None else r.stream_id for r in requests]
    run = _Run(self, requests, streams, jnp.asarray(seed, jnp.uint32), sched)
    total = sum(r.n for r in requests)
    finished = 0
    while sched.busy:
      progressed = False
      while True:  # idle slots cost nearly what busy ones do: fill them before decoding
        chunks = sched.next_prefill()
        progressed |= run.prefill(chunks)
        progressed |= run.fill(sched.fill_slots(self.ecfg.chunk_steps))
        if not chunks or not sched.free_slots():
          break
      run.vacate(sched.reserve(self.ecfg.chunk_steps))
      self.stats["peak_pages"] = max(self.stats["peak_pages"], sched.in_use())
      if sched.running():
        run.decode(sched)
      elif not progressed:
        raise RuntimeError(f"engine stalled: {len(sched.waiting)} waiting, {sum(map(len, sched.ready))} ready, "
                           f"pages free per shard {[p.free_count for p in sched.pools]}")
      done = sum(s.finished for s in sched.sequences)
      if progress is not None and done != finished:
        progress(done, total)
      finished = done
    if sched.in_use():
      raise RuntimeError(f"{sched.in_use()} pages still held after generate")
    self.stats["preemptions"] += sched.preemptions
    self.stats["wall_s"] = time.time() - t0
    return run.completions()


class _Run:
  """One `generate` call's device state and the host bookkeeping around it."""

  def __init__(self, engine: Engine, requests: Sequence[Request], streams: list[int], seed, sched: Scheduler):
    self.e, self.requests, self.streams, self.seed, self.sched = engine, requests, streams, seed, sched
    state = _empty_slots(engine.ecfg.batch_size, engine.sharding)
    # Committed like the outputs of the calls that follow (an uncommitted first state would compile twice).
    mesh = engine.sharding.mesh
    self.state = state if mesh is not None and mesh.size > 1 else jax.device_put(
        state, mesh.devices.flat[0] if mesh is not None else jax.local_devices()[0])
    self.table = np.zeros((engine.ecfg.batch_size, engine.table_width), np.int32)
    self.logprobs: dict[tuple[int, int], list[float]] = {}
    self.stop_set = set(np.asarray(engine.stop_ids).tolist())

  def _halves(self, request: int) -> tuple[int, int]:
    sid = self.streams[request]
    return sid >> 32, sid & 0xFFFFFFFF

  def _row(self, pages: Sequence[int]) -> list[int]:
    return list(pages) + [0] * (self.e.table_width - len(pages))

  def _params(self, requests: Sequence[int], width: int) -> SamplingParams:
    rows = [self.requests[i] for i in requests] + [self.requests[requests[0]]] * (width - len(requests))
    return SamplingParams.of([r.sampling for r in rows])

  def _tokens_of(self, chunk: PrefillChunk) -> list[int]:
    seq = chunk.recompute
    tokens = list(self.requests[chunk.request].prompt)
    if seq is not None:
      tokens += seq.generated[:-1]
    return tokens[chunk.start:chunk.start + chunk.length]

  def prefill(self, chunks: list[PrefillChunk]) -> bool:
    """Runs prefill chunks in one call, all of them one per row (rows grouped by shard), or, for whole prompts on
    one CPU device, as many as fill a power of two of packed rows (the rest wait for the next call); draws the first
    tokens of finished prompts."""
    if not chunks:
      return False
    e = self.e
    if e.pack_prefill and all(c.start == 0 for c in chunks):
      chunks, logits, row_of = self._prefill_packed(chunks)
    else:
      logits, row_of = self._prefill_rows(chunks)
    e.stats["prefill_calls"] += 1
    e.stats["prefill_rows"] += len(chunks)
    finals = [c for c in chunks if c.last and c.recompute is None]
    if finals:
      pairs = [(c, seq) for c in finals for seq in c.samples]
      w = _pow2(len(pairs), 1 << 30)
      rows = np.zeros(w, np.int32)
      halves = np.zeros((w, 2), np.uint32)
      index = np.zeros(w, np.int32)
      for k, (c, seq) in enumerate(pairs):
        rows[k], halves[k], index[k] = row_of[id(c)], self._halves(c.request), seq.sample
      tok, lp = jax.device_get(_first_tokens(logits, jnp.asarray(rows), jnp.asarray(halves), jnp.asarray(index),
                                             self._params([c.request for c, _ in pairs], w), self.seed,
                                             ecfg=e.ecfg, sharding=e.sharding))
      k = 0
      for c in finals:
        n = len(c.samples)
        for seq, logprob in zip(c.samples, lp[k:k + n]):
          self.logprobs[(seq.request, seq.sample)] = [float(logprob)]
        self.sched.prefilled(c, tok[k:k + n].tolist())
        k += n
    for c in chunks:
      if c not in finals:
        self.sched.prefilled(c)
    return True

  def _prefill_rows(self, chunks: list[PrefillChunk]) -> tuple[jax.Array, dict[int, int]]:
    """One chunk per row, rows of a power-of-two width -> (logits [rows, V], chunk id -> its logits row)."""
    e = self.e
    by_shard = [[c for c in chunks if c.shard == s] for s in range(e.shards)]
    rows_per = _pow2(max(map(len, by_shard)), e.ecfg.prefill_rows)
    width = max(16, _pow2(max(c.length for c in chunks), e.ecfg.prefill_chunk))
    n_rows = rows_per * e.shards
    # The table covers the pages the chunks reach (in power-of-two blocks), not the longest sequence there could be.
    reach = -(-max(c.start + c.length for c in chunks) // e.ecfg.page_size)
    pages = min(e.table_width, _BLOCK_PAGES * _pow2(-(-reach // _BLOCK_PAGES), 1 << 30))
    tokens = np.zeros((n_rows, width), np.int32)
    start, length = np.zeros(n_rows, np.int32), np.zeros(n_rows, np.int32)
    table = np.zeros((n_rows, pages), np.int32)
    row_of = {}
    for s, group in enumerate(by_shard):
      for j, c in enumerate(group):
        r = s * rows_per + j
        row_of[id(c)] = r
        toks = self._tokens_of(c)
        tokens[r, :len(toks)] = toks
        start[r], length[r], table[r] = c.start, c.length, self._row(c.pages)[:pages]
    fresh = all(c.start == 0 for c in chunks)
    logits, e._cache = _prefill(e.params, jnp.asarray(tokens), jnp.asarray(start), jnp.asarray(length),
                                jnp.asarray(table), e._pool(), cfg=e.cfg, sharding=e.sharding, fresh=fresh,
                                impl=e.prefill_impl)
    return logits, row_of

  def _prefill_packed(self, chunks: list[PrefillChunk]
                      ) -> tuple[list[PrefillChunk], jax.Array, dict[int, int]]:
    """Whole prompts packed back to back (longest first, each into the first row with room) into a power of two of
    rows of a power-of-two width: the prompts of the rows past it wait for the next call -> (chunks run, logits
    [prefill_rows, V], chunk id -> its logits row)."""
    e = self.e
    width = max(16, _pow2(max(c.length for c in chunks), e.ecfg.prefill_chunk))
    rows: list[list[PrefillChunk]] = []
    used: list[int] = []
    for c in sorted(chunks, key=lambda c: -c.length):
      r = next((r for r, u in enumerate(used) if u + c.length <= width), len(rows))
      if r == len(rows):
        rows.append([])
        used.append(0)
      rows[r].append(c)
      used[r] += c.length
    rows = rows[:1 << (len(rows).bit_length() - 1)]
    page = e.ecfg.page_size
    tokens, segments, positions, offsets = (np.zeros((len(rows), width), np.int32) for _ in range(4))
    page_ids = np.full((len(rows), width), e.pages_per_shard, np.int32)  # padding: out of range, written nowhere
    last = np.zeros(e.ecfg.prefill_rows, np.int32)
    run, row_of = [], {}
    for r, group in enumerate(rows):
      at = 0
      for j, c in enumerate(group):
        row_of[id(c)] = len(run)
        span, pos = slice(at, at + c.length), np.arange(c.length)
        tokens[r, span], segments[r, span], positions[r, span] = self._tokens_of(c), j + 1, pos
        page_ids[r, span], offsets[r, span] = np.asarray(c.pages, np.int32)[pos // page], pos % page
        last[len(run)] = r * width + at + c.length - 1
        run.append(c)
        at += c.length
    logits, e._cache = _prefill_packed(e.params, *map(jnp.asarray, (tokens, segments, positions, page_ids, offsets,
                                                                    last)), e._pool(), cfg=e.cfg)
    return run, logits, row_of

  def fill(self, fills: list[SlotFill]) -> bool:
    """Starts sequences in their slots, after copying any partly filled prompt page they now own."""
    if not fills:
      return False
    e = self.e
    w = _pow2(len(fills), e.ecfg.batch_size)
    copies = [(f.seq.shard, f.copy) for f in fills if f.copy is not None]
    if copies:
      cw = _pow2(len(copies), e.ecfg.batch_size)
      src, dst = np.zeros(cw, np.int32), np.full(cw, e.pages_per_shard * e.shards, np.int32)
      for k, (shard, (a, b)) in enumerate(copies):
        base = shard * e.pages_per_shard  # global ids: the pool's page axis is split shard by shard
        src[k], dst[k] = base + a, base + b
      e._cache = _copy(e._pool(), jnp.asarray(src), jnp.asarray(dst))
    slots = np.full(w, e.ecfg.batch_size, np.int32)
    last, num, max_new, kv_len, index = (np.zeros(w, np.int32) for _ in range(5))
    halves = np.zeros((w, 2), np.uint32)
    for k, f in enumerate(fills):
      seq = f.seq
      slots[k], last[k], num[k] = f.slot, seq.generated[-1], len(seq.generated)
      max_new[k], kv_len[k], index[k] = seq.max_new, seq.kv_len, seq.sample
      halves[k] = self._halves(seq.request)
      self.table[f.slot] = self._row(seq.pages)
    self.state = _insert(self.state, jnp.asarray(slots), jnp.asarray(last), jnp.asarray(num), jnp.asarray(max_new),
                         jnp.asarray(halves), jnp.asarray(index), self._params([f.seq.request for f in fills], w),
                         jnp.asarray(kv_len), self.seed, sharding=e.sharding)
    if e.decode_impl == "rows":  # the sequences' cached tokens into their slots' rows
      tables = self.table[np.minimum(slots, e.ecfg.batch_size - 1)]
      e._cache = _stage(e._pool(), jnp.asarray(slots), jnp.asarray(tables))
    return True

  def vacate(self, preempted: list[tuple[Seq, int]]) -> None:
    if preempted:
      slots = np.full(_pow2(len(preempted), self.e.ecfg.batch_size), self.e.ecfg.batch_size, np.int32)
      slots[:len(preempted)] = [slot for _, slot in preempted]
      self.state = _vacate(self.state, jnp.asarray(slots), sharding=self.e.sharding)

  def decode(self, sched: Scheduler) -> None:
    """One decode chunk. While sequences wait for a slot it ends once batch / 8 more slots are free (or as many as
    wait), so that they start without the chunk running on with idle slots; else it runs until all are done."""
    e = self.e
    running = sched.running()
    for seq in running:
      self.table[seq.slot] = self._row(seq.pages)
    batch = e.ecfg.batch_size
    waiting = sched.pending()
    refill_at = batch if not waiting else batch - len(running) + min(waiting, max(1, batch // _REFILL_FRACTION))
    self.state, e._cache, out, out_lp, steps = _decode(e.params, self.state, jnp.asarray(self.table), e._pool(),
                                                       e.stop_ids, jnp.asarray(refill_at, jnp.int32), cfg=e.cfg,
                                                       ecfg=e.ecfg, sharding=e.sharding, impl=e.decode_impl)
    e.stats["decode_chunks"] += 1
    e.stats["decode_steps"] += int(steps)
    out, out_lp, done = jax.device_get((out, out_lp, self.state.done))
    for seq in running:
      row = out[seq.slot]
      k = int((row >= 0).sum())
      e.stats["decode_tokens"] += k
      if e.ecfg.return_logprobs:
        self.logprobs[(seq.request, seq.sample)] += out_lp[seq.slot, :k].tolist()
      sched.advance(seq, row[:k].tolist(), bool(done[seq.slot]))

  def completions(self) -> list[list[Completion]]:
    out: list[list[Completion | None]] = [[None] * r.n for r in self.requests]
    for seq in self.sched.sequences:
      toks = seq.generated
      stop = bool(toks) and toks[-1] in self.stop_set
      c = Completion(seq.request, seq.sample, toks, FINISH_STOP if stop else FINISH_LENGTH,
                     self.logprobs.get((seq.request, seq.sample)) if self.e.ecfg.return_logprobs else None)
      if self.e.decode_text is not None:
        c.text = self.e.decode_text(toks[:-1] if stop else toks)
      out[seq.request][seq.sample] = c
    return [[c for c in row] for row in out]


def generate(params, cfg: ModelConfig, requests: Sequence[Request], stop_ids: Sequence[int], *, seed: int = 0,
             engine_cfg: EngineConfig = EngineConfig(), sharding: transformer.Sharding = transformer.NO_SHARDING,
             decode_text: Callable[[list[int]], str] | None = None) -> list[list[Completion]]:
  """One-shot convenience wrapper around `Engine`."""
  return Engine(params, cfg, stop_ids, engine_cfg, sharding, decode_text).generate(requests, seed=seed)
