"""The decode engine: prefill, then jitted multi-step decode chunks over a slot-based KV cache.

Sampling for SSD is offline bulk generation (thousands of prompts, outputs from a few tokens to tens of
thousands), so the engine is built for throughput:

- N samples of a prompt share one prefill: the prompt runs once and its cache rows are copied into N slots;
- decoding runs `chunk_steps` tokens per jitted call (a while_loop that exits early when every slot is done),
  with no host round trip per token;
- between chunks, finished slots are harvested and refilled with new sequences (continuous batching), so a
  long output never holds short ones hostage;
- prompts are right-padded to length buckets and prefill batches to size buckets, which bounds the number of
  compilations;
- sample i of a request draws step t from the key fold_in(sequence_keys(seed, stream_id, i), t), where the
  request's `stream_id` is its identity (a hash of its prompt or problem id, `stream_id_of`), never its position:
  a sequence's tokens depend only on (seed, stream id, sample index, its own tokens so far), not on its slot, on
  refills, on what else is in the call, or on the order, batch size or chunking of the calls;
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

from ssd_jax.models import transformer
from ssd_jax.models.config import ModelConfig
from ssd_jax.sampling.sampler import SamplingParams, sample, sequence_keys, step_keys

FINISH_STOP, FINISH_LENGTH = "stop", "length"
STREAM_ID_LIMIT = 2 ** 64  # stream ids are 64-bit: 10^5 prompt ids would collide in 32 bits (birthday bound)
# How a sample's keys derive from its identity; outputs that record it (synthesis plans) refuse to mix schemes.
RANDOM_STREAM = "fold_in(key(seed), stream_id >> 32, stream_id & 0xffffffff, sample_index, step)"


def stream_id_of(name: str) -> int:
  """The 64-bit stream id of a string identity (a prompt or problem id): the first 8 bytes of its sha256."""
  return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")


def _prompt_stream_id(prompt: Sequence[int]) -> int:
  """The default stream id of a request: a hash of its prompt token ids (so never its position in a call)."""
  return int.from_bytes(hashlib.sha256(np.asarray(prompt, "<i8").tobytes()).digest()[:8], "big")


@dataclasses.dataclass(frozen=True)
class EngineConfig:
  """Static shape decisions of the engine (each distinct value is a compilation)."""

  batch_size: int = 32  # decode slots
  max_cache_len: int = 8192  # prompt + generated tokens per slot, at most
  chunk_steps: int = 32  # decode steps per jitted call
  prompt_buckets: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
  k_max: int = 64  # top-k candidates the sampler considers (larger top_k takes the exact sort-free path)
  # Decode attention: "blockwise" reads only filled cache blocks (CPU, TPU), "dense" avoids a data-dependent loop
  # per layer (GPU); "auto" picks by the default backend.
  decode_attention: str = "auto"
  return_logprobs: bool = False


@dataclasses.dataclass(frozen=True)
class Request:
  """One prompt, sampled `n` times with its own parameters.

  `stream_id` names the request's random stream (an int in [0, 2**64), e.g. `stream_id_of(problem id)`): sample i
  draws from (seed, stream_id, i) only. None means a hash of the prompt tokens, so two requests with the same
  prompt and no stream id draw the same samples; give them distinct ids (or one request with a larger n) to
  draw independent ones.
  """

  prompt: Sequence[int]
  n: int = 1
  max_new_tokens: int = 256
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  min_p: float = 0.0
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
  """Everything the decode loop carries, one row per slot."""

  cache: transformer.KVCache
  last_token: jax.Array  # [B] int32, the latest sampled token (fed to the next step)
  num_generated: jax.Array  # [B] int32
  max_new: jax.Array  # [B] int32
  done: jax.Array  # [B] bool; free slots are done
  key: jax.Array  # [B] typed PRNG keys: each sequence's base key (seed, stream id, sample index); steps fold in
  params: SamplingParams
  out_tokens: jax.Array  # [B, N] int32
  out_logprobs: jax.Array  # [B, N] float32


def decode_attention_impl(ecfg: EngineConfig) -> str:
  if ecfg.decode_attention != "auto":
    return ecfg.decode_attention
  return "dense" if jax.default_backend() == "gpu" else "blockwise"


def _bucket(n: int, buckets: Sequence[int]) -> int:
  for b in buckets:
    if n <= b:
      return b
  raise ValueError(f"length {n} exceeds the largest bucket {buckets[-1]}")


def _pow2_at_least(n: int, cap: int) -> int:
  return min(cap, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


def _record(state: SlotState, rows_active: jax.Array, token: jax.Array, logprob: jax.Array,
            stop_ids: jax.Array) -> SlotState:
  """Writes `token` as the next output of every active row and updates done flags."""
  b = token.shape[0]
  pos = jnp.minimum(state.num_generated, state.out_tokens.shape[1] - 1)
  rows = jnp.arange(b)
  out_tokens = state.out_tokens.at[rows, pos].set(jnp.where(rows_active, token, state.out_tokens[rows, pos]))
  out_logprobs = state.out_logprobs.at[rows, pos].set(jnp.where(rows_active, logprob, state.out_logprobs[rows, pos]))
  num = state.num_generated + rows_active.astype(jnp.int32)
  done = state.done | (rows_active & (jnp.isin(token, stop_ids) | (num >= state.max_new)))
  return state.replace(last_token=jnp.where(rows_active, token, state.last_token), num_generated=num, done=done,
                       out_tokens=out_tokens, out_logprobs=out_logprobs)


def _draw(logits: jax.Array, state: SlotState, ecfg: "EngineConfig", sharding: transformer.Sharding):
  """Samples each row's next token from its own stream; logprobs only when asked (an extra pass over V)."""
  keys = step_keys(state.key, state.num_generated)
  p = state.params
  token = sample(keys, logits, p.temperature, p.top_k, p.top_p, p.min_p, k_max=ecfg.k_max, sharding=sharding)
  if not ecfg.return_logprobs:
    return token, jnp.zeros(token.shape, jnp.float32)
  logprob = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), token[:, None], axis=1)[:, 0]
  return token, logprob


@functools.partial(jax.jit, static_argnames=("cfg", "slot_len", "sharding"))
def _prefill(params, prompts, valid, *, cfg: ModelConfig, slot_len: int, sharding: transformer.Sharding):
  cache = transformer.init_cache(cfg, prompts.shape[0], slot_len, sharding=sharding)
  return transformer.prefill(params, prompts, valid, cache, cfg, sharding)


@functools.partial(jax.jit, static_argnames=("ecfg", "sharding"), donate_argnames=("state",))
def _insert(state: SlotState, logits, pcache: transformer.KVCache, src, slots, streams, sample_index, max_new,
            params: SamplingParams, seed, stop_ids, *, ecfg: EngineConfig, sharding: transformer.Sharding):
  """Copies prefilled rows `src` into `slots` (out-of-range slots are padding and dropped), derives each new
  sequence's base key from (seed, streams [W, 2] uint32 halves, sample_index [W]) and samples its first token
  from its prompt's logits."""
  p_len = pcache.max_len

  def put(big, small):  # big [B, K, T, Dh], small [Bp, K, P, Dh]
    return big.at[slots, :, :p_len].set(small[src], mode="drop")

  valid = jnp.zeros((slots.shape[0], state.cache.max_len), bool).at[:, :p_len].set(pcache.valid[src])
  cache = transformer.KVCache(
      k=tuple(put(b_, s_) for b_, s_ in zip(state.cache.k, pcache.k)),
      v=tuple(put(b_, s_) for b_, s_ in zip(state.cache.v, pcache.v)),
      valid=state.cache.valid.at[slots].set(valid, mode="drop"),
      length=state.cache.length.at[slots].set(pcache.length[src], mode="drop"),
      next_pos=state.cache.next_pos.at[slots].set(pcache.next_pos[src], mode="drop"))
  width = slots.shape[0]
  new = SlotState(cache=cache, last_token=jnp.zeros((width,), jnp.int32), num_generated=jnp.zeros((width,), jnp.int32),
                  max_new=max_new, done=jnp.zeros((width,), bool), key=sequence_keys(seed, streams, sample_index),
                  params=params, out_tokens=jnp.zeros((width, state.out_tokens.shape[1]), jnp.int32),
                  out_logprobs=jnp.zeros((width, state.out_tokens.shape[1]), jnp.float32))
  token, logprob = _draw(logits[src], new, ecfg, sharding)
  new = _record(new, jnp.ones((width,), bool), token, logprob, stop_ids)

  def scatter(big, small):
    return big.at[slots].set(small, mode="drop")

  merged = jax.tree.map(scatter, state.replace(cache=None), new.replace(cache=None))
  return merged.replace(cache=cache)


@functools.partial(jax.jit, static_argnames=("cfg", "ecfg", "sharding"), donate_argnames=("state",))
def _chunk(params, state: SlotState, steps, stop_ids, *, cfg: ModelConfig, ecfg: EngineConfig,
           sharding: transformer.Sharding):
  """Up to `steps` decode steps; stops early once every slot is done."""

  def cond(carry):
    i, s = carry
    return (i < steps) & ~jnp.all(s.done)

  def body(carry):
    i, s = carry
    active = ~s.done
    logits, cache = transformer.decode_step(params, s.last_token, s.cache, cfg, sharding,
                                            attention=decode_attention_impl(ecfg))
    # Finished rows keep their cache bookkeeping, so they never run past the end of their slot.
    cache = cache.replace(length=jnp.where(active, cache.length, s.cache.length),
                          next_pos=jnp.where(active, cache.next_pos, s.cache.next_pos),
                          valid=jnp.where(active[:, None], cache.valid, s.cache.valid))
    s = s.replace(cache=cache)
    token, logprob = _draw(logits, s, ecfg, sharding)
    return i + 1, _record(s, active, token, logprob, stop_ids)

  steps_run, state = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), state))
  return state, steps_run


@functools.partial(jax.jit, static_argnums=(0, 1))
def _empty_slots(batch: int, max_new: int) -> SlotState:
  """Free slots (done, no cache yet); built under jit so that every field is its own buffer (the state is donated)."""
  zeros = jnp.zeros((batch,), jnp.int32)
  return SlotState(cache=None, last_token=zeros, num_generated=zeros, max_new=zeros, done=jnp.ones((batch,), bool),
                   key=jax.random.split(jax.random.key(0), batch), params=SamplingParams.full(batch),
                   out_tokens=jnp.zeros((batch, max_new), jnp.int32),
                   out_logprobs=jnp.zeros((batch, max_new), jnp.float32))


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
    self.stats = {"prefill_calls": 0, "prefill_rows": 0, "decode_chunks": 0, "decode_steps": 0}

  # -- host loop -----------------------------------------------------------------------------------

  def _empty_state(self, max_new: int, cache_len: int) -> SlotState:
    cache = transformer.init_cache(self.cfg, self.ecfg.batch_size, cache_len, sharding=self.sharding)
    return _empty_slots(self.ecfg.batch_size, max_new).replace(cache=cache)

  def check_fits(self, requests: Sequence[Request]) -> None:
    for i, r in enumerate(requests):
      if not len(r.prompt):
        raise ValueError(f"request {i}: empty prompt")
      if r.max_new_tokens < 1 or r.n < 1:
        raise ValueError(f"request {i}: max_new_tokens and n must be >= 1, got {r.max_new_tokens} and {r.n}")
      if r.stream_id is not None and not 0 <= r.stream_id < STREAM_ID_LIMIT:
        raise ValueError(f"request {i}: stream_id must be in [0, 2**64), got {r.stream_id}")
      need = _bucket(len(r.prompt), self.ecfg.prompt_buckets) + r.max_new_tokens
      if need > self.ecfg.max_cache_len:
        raise ValueError(
            f"request {i}: prompt of {len(r.prompt)} tokens (bucket {need - r.max_new_tokens}) + max_new_tokens "
            f"{r.max_new_tokens} = {need} exceeds the KV cache ({self.ecfg.max_cache_len} slots per sequence); "
            f"raise EngineConfig.max_cache_len or shorten the prompt")

  def generate(self, requests: Sequence[Request], seed: int = 0, progress: Callable[[int, int], None] | None = None
               ) -> list[list[Completion]]:
    """Returns, for each request, its n completions (in sample order).

    Sample i of request r is a function of (seed, r's stream id, i) and the request itself, whatever else is in
    the call and in whichever order (see `Request.stream_id`). `seed` is in [0, 2**32).
    """
    self.check_fits(requests)
    if not 0 <= seed < 2 ** 32:
      raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    ecfg = self.ecfg
    b = ecfg.batch_size
    max_new = max(r.max_new_tokens for r in requests)
    sequences = [(ri, si) for ri, r in enumerate(requests) for si in range(r.n)]
    results: list[list[Completion | None]] = [[None] * r.n for r in requests]
    seed_arr = jnp.asarray(seed, jnp.uint32)
    streams = [_prompt_stream_id(r.prompt) if r.stream_id is None else r.stream_id for r in requests]
    stop_set = set(np.asarray(self.stop_ids).tolist())
    # The cache is sized for this call's longest sequence: decode attends over every slot of the cache.
    need = max(_bucket(len(r.prompt), ecfg.prompt_buckets) + r.max_new_tokens for r in requests)
    state = self._empty_state(max_new, min(ecfg.max_cache_len, -(-need // 128) * 128))
    slot_seq: list[int | None] = [None] * b
    pending = list(range(len(sequences)))[::-1]  # a stack: pop() takes the next sequence
    finished = 0
    t0 = time.time()
    while pending or any(s is not None for s in slot_seq):
      free = [i for i, s in enumerate(slot_seq) if s is None]
      if free and pending:
        take = [pending.pop() for _ in range(min(len(free), len(pending)))]
        state = self._fill(state, [sequences[t] for t in take], free[:len(take)], requests, streams, seed_arr)
        for slot, t in zip(free, take):
          slot_seq[slot] = t
      state, steps_run = _chunk(self.params, state, jnp.asarray(ecfg.chunk_steps, jnp.int32), self.stop_ids,
                                cfg=self.cfg, ecfg=ecfg, sharding=self.sharding)
      self.stats["decode_chunks"] += 1
      self.stats["decode_steps"] += int(steps_run)
      done, num = jax.device_get((state.done, state.num_generated))
      newly = [i for i, s in enumerate(slot_seq) if s is not None and done[i]]
      if newly:
        tokens, logprobs = jax.device_get((state.out_tokens, state.out_logprobs))
        for slot in newly:
          ri, si = sequences[slot_seq[slot]]
          n = int(num[slot])
          toks = tokens[slot, :n].tolist()
          stop = n > 0 and toks[-1] in stop_set
          completion = Completion(ri, si, toks, FINISH_STOP if stop else FINISH_LENGTH,
                                  logprobs[slot, :n].tolist() if ecfg.return_logprobs else None)
          if self.decode_text is not None:
            completion.text = self.decode_text(toks[:-1] if stop else toks)
          results[ri][si] = completion
          slot_seq[slot] = None
          finished += 1
        if progress is not None:
          progress(finished, len(sequences))
    self.stats["wall_s"] = time.time() - t0
    return [[c for c in row] for row in results]

  def _fill(self, state: SlotState, seqs: Sequence[tuple[int, int]], slots: Sequence[int],
            requests: Sequence[Request], streams: Sequence[int], seed_arr: jax.Array) -> SlotState:
    """Prefills the distinct prompts among `seqs` ((request, sample) pairs) once and inserts their sequences into
    `slots`; `streams` holds each request's stream id."""
    ecfg = self.ecfg
    prompt_rows: dict[int, int] = {}
    for ri, _ in seqs:
      prompt_rows.setdefault(ri, len(prompt_rows))
    uniq = list(prompt_rows)
    p_len = _bucket(max(len(requests[ri].prompt) for ri in uniq), ecfg.prompt_buckets)
    pb = _pow2_at_least(len(uniq), ecfg.batch_size)
    prompts = np.zeros((pb, p_len), np.int32)
    valid = np.zeros((pb, p_len), bool)
    for row, ri in enumerate(uniq):
      p = requests[ri].prompt
      prompts[row, :len(p)] = p
      valid[row, :len(p)] = True
    valid[len(uniq):, 0] = True  # padding rows get one token so their softmax stays well defined
    logits, pcache = _prefill(self.params, jnp.asarray(prompts), jnp.asarray(valid), cfg=self.cfg, slot_len=p_len,
                              sharding=self.sharding)
    self.stats["prefill_calls"] += 1
    self.stats["prefill_rows"] += len(uniq)
    width = ecfg.batch_size  # fixed insert width: one compilation per prefill shape
    src = np.zeros(width, np.int32)
    slot_idx = np.full(width, ecfg.batch_size, np.int32)  # out of range = dropped
    halves = np.zeros((width, 2), np.uint32)  # (hi, lo) of each sequence's 64-bit stream id
    sample_index = np.zeros(width, np.int32)
    max_new = np.ones(width, np.int32)
    temp, top_k, top_p, min_p = (np.ones(width, np.float32), np.zeros(width, np.int32), np.ones(width, np.float32),
                                 np.zeros(width, np.float32))
    for j, ((ri, si), slot) in enumerate(zip(seqs, slots)):
      r = requests[ri]
      src[j], slot_idx[j], sample_index[j], max_new[j] = prompt_rows[ri], slot, si, r.max_new_tokens
      halves[j] = streams[ri] >> 32, streams[ri] & 0xFFFFFFFF
      temp[j], top_k[j], top_p[j], min_p[j] = r.temperature, r.top_k, r.top_p, r.min_p
    params = SamplingParams(temperature=jnp.asarray(temp), top_k=jnp.asarray(top_k), top_p=jnp.asarray(top_p),
                            min_p=jnp.asarray(min_p))
    return _insert(state, logits, pcache, jnp.asarray(src), jnp.asarray(slot_idx), jnp.asarray(halves),
                   jnp.asarray(sample_index), jnp.asarray(max_new), params, seed_arr, self.stop_ids, ecfg=ecfg,
                   sharding=self.sharding)


def generate(params, cfg: ModelConfig, requests: Sequence[Request], stop_ids: Sequence[int], *, seed: int = 0,
             engine_cfg: EngineConfig = EngineConfig(), sharding: transformer.Sharding = transformer.NO_SHARDING,
             decode_text: Callable[[list[int]], str] | None = None) -> list[list[Completion]]:
  """One-shot convenience wrapper around `Engine`."""
  return Engine(params, cfg, stop_ids, engine_cfg, sharding, decode_text).generate(requests, seed=seed)


