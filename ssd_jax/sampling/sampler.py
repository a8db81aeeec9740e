"""Per-row temperature / min-p / top-k / top-p sampling: vLLM's operator, exactly, without a full-vocab sort.

The operator (ssd_paper.md §2.1, vLLM v1 order), per row with traced parameters:
  1. z = logits / T; T < 1e-5 decodes greedily (argmax).
  2. min-p (off at 0): drop tokens with softmax(z) < min_p * max softmax(z).
  3. top-k (off at 0 or >= V): drop z strictly below the k-th largest value (ties at the k-th survive).
  4. top-p (off at >= 1) inside the survivors, on their renormalised distribution: keep token i iff the
     mass of survivors strictly more likely than i is < top_p (the largest token is always kept).
  5. Sample from the renormalised kept set.

Every kept set is upward closed in z: kept = {i : z_i >= t} for one per-row threshold t.

`sample` decides each row's draw in one of two ways (per row, with traced parameters, inside one step):
  * Window (0 < top_k <= k_max, e.g. SSD's top_k = 20): the exact top-k_max candidates decide everything
    when the min-p/top-k survivors fit inside them: top-k is the k-th candidate, top-p a K x K "mass
    strictly above" sum, and the draw is Gumbel-max over the kept candidates with noise G(key, token id).
    Cost: about one pass over the logits (a two-stage block top-k, no sort).
  * Whole vocabulary (no truncation, top-p or min-p without top-k, top-k beyond the window, ties that
    spill out of it): rejection sampling from the survivors against the block maxima of that same max
    pass, and top-p by checking the stream's records (one exp pass each, usually one in all); see
    `full_vocab`. A top-k beyond the window still finds its k-th value by a 32-step bisection.
Greedy rows take the lowest id holding the maximum, from the block maxima.

`truncated_probs` returns the exact kept distribution: the window's thresholds where they decide, else
thresholds from bisections over the float32 bit pattern (count(z >= t) >= k; mass(z >= t) >= top_p *
survivor mass), without a sort. Tests compare it with a float64 NumPy transcription of the operator, and
`sample`'s draws with it.

A row's token depends only on its key, its logits and its parameters: not on its batch slot, the other
rows, or how the vocabulary is sharded. Vocab-sharded logits (logical axis "act_vocab", i.e. mesh axis
"tensor") are never gathered: under `jax.shard_map` each shard takes its local top-k_max (with global
ids) and the shards merge them with an exact `lax.top_k`; the block maxima are gathered ([B, V / 64]),
and the whole-vocabulary draw psums one value per proposal and one sum per checked record. Every shard
of a row ends with the same token.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import struct
from jax import lax
from jax.sharding import PartitionSpec as P

from ssd_jax.models.transformer import Sharding
from ssd_jax.sampling import full_vocab
from ssd_jax.sampling.full_vocab import BlockMaxima, VocabAxes
from ssd_jax.settings import SettingsError, from_mapping

GREEDY_BELOW = 1e-5  # temperatures below this decode greedily (vLLM's _SAMPLING_EPS)
_SEARCH_STEPS = 32  # bisection steps over the 2^32 float32 keys: exact to the last bit
_SIGN = 0x80000000
_NEG_INF = float("-inf")


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How one answer is drawn: the paper's operator (temperature, then top-k, then top-p; min-p before top-k, as
  in vLLM) and the answer's length cap. The one host-side sampling settings type: config files (`config.sample`,
  `config.eval.base` / `.ssd`), synthesis, evaluation and every `engine.Request` carry it; the engine turns the
  requests' configs into `SamplingParams` (traced per-row arrays) once per call."""

  temperature: float = 1.0  # < 1e-5 decodes greedily
  top_k: int = 0  # 0 = off
  top_p: float = 1.0  # 1.0 = off
  min_p: float = 0.0  # 0 = off
  max_new_tokens: int = 256

  def __post_init__(self):
    def need(ok: bool, name: str, expected: str) -> None:
      if not ok:
        raise ValueError(f"{name} = {getattr(self, name)!r}: expected {expected}")

    need(self.temperature >= 0, "temperature", "a temperature >= 0")
    need(self.top_k >= 0, "top_k", "an integer >= 0 (0 = off)")
    need(0 < self.top_p <= 1, "top_p", "a value in (0, 1]")
    need(0 <= self.min_p < 1, "min_p", "a value in [0, 1)")
    need(self.max_new_tokens >= 1, "max_new_tokens", "an integer >= 1")

  @classmethod
  def from_config(cls, fields: Mapping[str, Any], where: str = "sample") -> SamplingConfig:
    """From a config subtree; a key that is not a field, or a value out of range, is refused naming it."""
    try:
      return from_mapping(cls, fields, where)
    except SettingsError:
      raise
    except ValueError as e:
      raise ValueError(f"config.{where}.{e}") from None  # config.eval.ssd.top_p = 1.5: expected ...


@struct.dataclass
class SamplingParams:
  """Per-row sampling parameters, all traced arrays of shape [B] (new values never recompile)."""

  temperature: jax.Array  # float32; < 1e-5 means greedy
  top_k: jax.Array  # int32; 0 (or >= V) means off
  top_p: jax.Array  # float32; >= 1 means off
  min_p: jax.Array  # float32; 0 means off

  @classmethod
  def full(cls, batch: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           min_p: float = 0.0) -> SamplingParams:
    """The same parameters on every one of `batch` rows."""
    return cls(temperature=jnp.full((batch,), temperature, jnp.float32), top_k=jnp.full((batch,), top_k, jnp.int32),
               top_p=jnp.full((batch,), top_p, jnp.float32), min_p=jnp.full((batch,), min_p, jnp.float32))

  @classmethod
  def of(cls, configs: Sequence[SamplingConfig]) -> SamplingParams:
    """One row per config."""
    return cls(temperature=jnp.asarray([c.temperature for c in configs], jnp.float32),
               top_k=jnp.asarray([c.top_k for c in configs], jnp.int32),
               top_p=jnp.asarray([c.top_p for c in configs], jnp.float32),
               min_p=jnp.asarray([c.min_p for c in configs], jnp.float32))


def sequence_keys(seed: int | jax.Array, streams: jax.Array, sample_index: int | jax.Array = 0) -> jax.Array:
  """The base key of each sequence: fold_in(fold_in(fold_in(key(seed), hi), lo), sample_index) -> typed keys [B].

  A sequence is sample `sample_index` of the random stream whose 64-bit id has 32-bit halves (hi, lo), so its
  randomness is fixed by (seed, stream id, sample index) alone: not by its batch slot, its position in a call,
  or what else is sampled with it. 64 bits keep the ids of 10^5 prompts apart (32 bits would collide).

  Args:
    seed: An int, a traced int, or a typed key.
    streams: [B, 2] uint32 (hi, lo) halves of 64-bit stream ids, or [B] ids below 2**32 (hi = 0).
    sample_index: Broadcasts to [B].
  """
  base = seed if _is_typed_key(seed) else jax.random.key(seed)
  streams = jnp.asarray(streams, jnp.uint32)
  if streams.ndim == 1:
    streams = jnp.stack([jnp.zeros_like(streams), streams], axis=-1)
  samples = jnp.broadcast_to(jnp.asarray(sample_index, jnp.uint32), streams.shape[:1])
  fold = jax.random.fold_in
  return jax.vmap(lambda s, i: fold(fold(fold(base, s[0]), s[1]), i))(streams, samples)


def step_keys(keys: jax.Array, steps: int | jax.Array) -> jax.Array:
  """Typed keys [B] (from `sequence_keys`) -> the keys of decode step `steps` (broadcasts): fold_in(key, step)."""
  steps = jnp.broadcast_to(jnp.asarray(steps, jnp.uint32), keys.shape)
  return jax.vmap(jax.random.fold_in)(keys, steps)


def row_keys(seed: int | jax.Array, streams: jax.Array, steps: int | jax.Array,
             sample_index: int | jax.Array = 0) -> jax.Array:
  """The engine's per-row keys: sample `sample_index` of `streams` at decode step `steps` -> typed keys [B].

  step_keys(sequence_keys(seed, streams, sample_index), steps); arguments as there.
  """
  return step_keys(sequence_keys(seed, streams, sample_index), steps)


@functools.partial(jax.jit, static_argnames=("k_max",))
def truncated_probs(logits: jax.Array, temperature: jax.Array | float, top_k: jax.Array | int, top_p: jax.Array | float,
                    min_p: jax.Array | float | None = None, *, k_max: int = 64) -> jax.Array:
  """logits [B, V] -> [B, V] float32: the distribution `sample` draws from (one-hot at the argmax if greedy).

  Rows the window decides use `sample`'s own thresholds; the others get exact thresholds from bisections,
  and `sample` draws from the same kept set by rejection. Arguments as in `sample`; unsharded (it returns a
  [B, V] array). The bisections cost 32 passes each: this is for tests and analysis, not for decoding.
  """
  x = jnp.asarray(logits, jnp.float32)
  rows = _Rows.make(x.shape[0], temperature, top_k, top_p, min_p)
  plan = _plan(x, rows, k_max, VocabAxes(vocab=x.shape[1]))
  z = x * rows.inv_t[:, None]
  probs = jax.nn.softmax(jnp.where(z >= plan.thresh[:, None], z, _NEG_INF), axis=-1)
  greedy = jax.nn.one_hot(jnp.argmax(x, axis=-1), x.shape[1], dtype=jnp.float32)
  return jnp.where(rows.greedy[:, None], greedy, probs)


@functools.partial(jax.jit, static_argnames=("k_max", "sharding"))
def sample(key: jax.Array, logits: jax.Array, temperature: jax.Array | float, top_k: jax.Array | int,
           top_p: jax.Array | float, min_p: jax.Array | float | None = None, *, k_max: int = 64,
           sharding: Sharding | None = None) -> jax.Array:
  """One token per row: logits [B, V] -> int32 [B].

  Args:
    key: one key (row b then uses fold_in(key, b)) or [B] per-row keys from `row_keys`; typed or legacy
      uint32 keys.
    logits: [B, V] (cast to float32), optionally sharded over the vocab axis.
    temperature, top_k, top_p, min_p: [B] arrays or scalars (broadcast); traced, so new values reuse the
      compiled step. min_p None means off.
    k_max: static window size (candidates per row). Rows with 0 < top_k <= k_max whose survivors fit in
      the window never touch the full vocabulary again after one top-k pass.
    sharding: mesh + rules; when the rules shard "act_vocab" the logits stay sharded (see module doc).
  """
  x = jnp.asarray(logits, jnp.float32)
  b, v = x.shape
  rows = _Rows.make(b, temperature, top_k, top_p, min_p)
  keys = _row_key_array(key, b)
  split = _vocab_split(sharding, x.shape)
  if split is None:
    return _sample_local(x, rows, keys, k_max=k_max, axes=VocabAxes(vocab=v))
  mesh, row_spec, vocab_spec, vocab_axes = split
  axes = VocabAxes(vocab=v, shard_axes=vocab_axes, row_axes=_axis_tuple(row_spec),
                   shards=math.prod(mesh.shape[a] for a in vocab_axes))
  fn = jax.shard_map(functools.partial(_sample_local, k_max=k_max, axes=axes), mesh=mesh,
                     in_specs=(P(row_spec, vocab_spec), P(row_spec), P(row_spec)), out_specs=P(row_spec))
  return fn(x, rows, keys)


# -- per-row parameters and keys -----------------------------------------------------------------------------


@struct.dataclass
class _Rows:
  """Normalised per-row parameters, all [B]."""

  inv_t: jax.Array  # 1 / T (1 on greedy rows): z = x * inv_t everywhere, so candidates and passes agree bitwise
  greedy: jax.Array  # bool
  top_k: jax.Array  # int32
  top_p: jax.Array  # float32
  min_p: jax.Array  # float32 in [0, 1]

  @classmethod
  def make(cls, b: int, temperature, top_k, top_p, min_p) -> _Rows:
    t = jnp.broadcast_to(jnp.asarray(temperature, jnp.float32), (b,))
    greedy = t < GREEDY_BELOW
    min_p = jnp.zeros((b,), jnp.float32) if min_p is None else jnp.broadcast_to(jnp.asarray(min_p, jnp.float32), (b,))
    return cls(inv_t=1.0 / jnp.where(greedy, 1.0, t), greedy=greedy,
               top_k=jnp.broadcast_to(jnp.asarray(top_k, jnp.int32), (b,)),
               top_p=jnp.broadcast_to(jnp.asarray(top_p, jnp.float32), (b,)), min_p=jnp.clip(min_p, 0.0, 1.0))


def _is_typed_key(x) -> bool:
  return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _row_key_array(key: jax.Array, b: int) -> jax.Array:
  """A single key -> fold_in(key, row) per row; [B] keys pass through. Legacy uint32 keys are wrapped."""
  if not _is_typed_key(key):
    key = jax.random.wrap_key_data(jnp.asarray(key, jnp.uint32))
  if key.ndim == 0:
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(b, dtype=jnp.int32))
  if key.shape != (b,):
    raise ValueError(f"key must be one key or [B={b}] keys, got shape {key.shape}")
  return key


def _gumbel(keys: jax.Array, ids: jax.Array) -> jax.Array:
  """keys [B], ids [B, N] int32 -> [B, N] standard Gumbel noise, a pure function of (key_b, token id).

  The bits are fold_in(key, id)'s key data: one Threefry-2x32 hash of (key, id) per token, half the cost
  (and compile time) of drawing from the folded key. 23 bits give u in (0, 1), never 0 or 1.
  """
  fold_row = lambda k, i: jax.vmap(lambda j: jax.random.fold_in(k, j))(i)
  bits = jax.random.key_data(jax.vmap(fold_row)(keys, ids))[..., 0]
  u = ((bits >> 9).astype(jnp.float32) + 0.5) * (2.0 ** -23)
  return -jnp.log(-jnp.log(u))


# -- the vocabulary split ------------------------------------------------------------------------------------


def _vocab_split(sharding: Sharding | None, shape: tuple[int, int]):
  """(mesh, row spec, vocab spec, vocab mesh axes) if the rules shard the logits' vocab axis, else None."""
  if sharding is None or sharding.mesh is None or sharding.rules is None or sharding.mesh.size == 1:
    return None
  row_spec, vocab_spec = sharding.rules.spec(("batch", "act_vocab"), shape, sharding.mesh)
  if vocab_spec is None:
    return None
  return sharding.mesh, row_spec, vocab_spec, _axis_tuple(vocab_spec)


def _axis_tuple(entry: str | tuple[str, ...] | None) -> tuple[str, ...]:
  """One PartitionSpec entry -> the mesh axes it names."""
  return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


# -- candidates: an exact top-k in about one pass ------------------------------------------------------------


def _block_size(n: int, k: int) -> int:
  """A block size g | n for the two-stage top-k, or 1 when plain lax.top_k is as good (small or awkward n)."""
  if n < 16 * k:
    return 1
  fits = [g for g in range(8, 129) if n % g == 0 and n // g >= k]
  return min(fits, key=lambda g: abs(g - 64)) if fits else 1


def _top_k(x: jax.Array, k: int, blocks: BlockMaxima | None = None) -> tuple[jax.Array, jax.Array]:
  """x [B, n] -> (values [B, k] descending, ids [B, k]): the exact top-k values, max ties lowest id first.

  The k blocks with the largest block maxima hold the top-k values: their maxima are k elements that are
  >= everything in the other blocks. So one max-reduction pass plus two small top-ks replace a top-k over
  the whole row, which on CPU is a slow per-row partial sort (~5x a reduction pass). `blocks` (this
  shard's maxima) are reused when their block size is the one chosen here.
  """
  b, n = x.shape
  g = _block_size(n, k)
  if g == 1:
    return lax.top_k(x, k)
  blocks_x = x.reshape(b, n // g, g)
  maxima = blocks.local if blocks is not None and blocks.local_size == g else jnp.max(blocks_x, axis=-1)
  _, blk = lax.top_k(maxima, k)  # equal maxima: lower block first
  cand = jnp.take_along_axis(blocks_x, blk[:, :, None], axis=1).reshape(b, k * g)
  vals, pos = lax.top_k(cand, k)
  return vals, jnp.take_along_axis(blk, pos // g, axis=1) * g + pos % g


def _candidates(x: jax.Array, k: int, axes: VocabAxes,
                blocks: BlockMaxima | None = None) -> tuple[jax.Array, jax.Array]:
  """Local logits [B, n] -> the global top-min(k, V) raw logits and their global ids, on every shard."""
  n = x.shape[1]
  vals, ids = _top_k(x, min(k, n), blocks)
  return axes.gather_best(vals, ids + axes.offset(n), min(k, axes.vocab))


# -- thresholds ----------------------------------------------------------------------------------------------


def _ordered(x: jax.Array) -> jax.Array:
  """float32 -> uint32 with the same order (negative floats have their magnitude bits flipped)."""
  bits = lax.bitcast_convert_type(x, jnp.uint32)
  sign = jnp.uint32(_SIGN)
  return jnp.where(bits >= sign, ~bits, bits | sign)


def _from_ordered(u: jax.Array) -> jax.Array:
  sign = jnp.uint32(_SIGN)
  return lax.bitcast_convert_type(jnp.where(u >= sign, u & ~sign, ~u), jnp.float32)


def _bisect(pred: Callable[[jax.Array], jax.Array], lo: jax.Array, hi: jax.Array) -> jax.Array:
  """Largest float t in [lo, hi] (per row) with pred(t), given pred(lo) and pred monotone non-increasing.

  Bisects the uint32 image of float32: 32 steps pin the exact value, one reduction pass (pred) each.
  """
  def step(_, bounds):
    lo, hi = bounds
    mid = lo + ((hi - lo + 1) >> 1)
    ok = pred(_from_ordered(mid))
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, jnp.where(mid > lo, mid - 1, lo))

  lo, hi = _ordered(lo), _ordered(hi)
  lo, _ = lax.fori_loop(0, _SEARCH_STEPS, step, (lo, jnp.maximum(hi, lo)))
  return _from_ordered(lo)


def _nucleus(c: jax.Array, survive: jax.Array, top_p: jax.Array, mass: jax.Array | None) -> jax.Array:
  """Top-p over the window: c [B, K] tempered candidate logits (c[:, 0] is the row max), survive [B, K].

  Keeps survivor i iff the mass of survivors with z strictly above z_i is < top_p of the survivors' mass
  (`mass`, relative to exp(max); None: the survivors all lie in the window). Ties share one "mass above",
  so a tie at the boundary is kept whole; the row max is always kept.
  """
  q = jnp.where(survive, jnp.exp(c - c[:, :1]), 0.0)
  mass = jnp.sum(q, axis=-1) if mass is None else mass
  # above[b, i] = sum_j q[b, j] [c_j > c_i]; a masked sum, not a matmul, so no TF32/bf16 matmul precision.
  above = jnp.sum(jnp.where(c[:, None, :] > c[:, :, None], q[:, None, :], 0.0), axis=-1)
  keep = (above < top_p[:, None] * mass[:, None]) | (c == c[:, :1]) | (top_p[:, None] >= 1.0)
  return survive & keep


def _count_ge(x: jax.Array, rows: _Rows, t: jax.Array, axes: VocabAxes) -> jax.Array:
  """[B] number of tokens with z >= t over the whole vocabulary."""
  z = x * rows.inv_t[:, None]
  return axes.psum(jnp.sum(z >= t[:, None], axis=-1, dtype=jnp.int32))


def _mass_ge(x: jax.Array, rows: _Rows, zmax: jax.Array, t: jax.Array, axes: VocabAxes) -> jax.Array:
  """[B] sum of exp(z - zmax) over tokens with z >= t, over the whole vocabulary."""
  z = x * rows.inv_t[:, None]
  return axes.psum(jnp.sum(jnp.where(z >= t[:, None], jnp.exp(z - zmax[:, None]), 0.0), axis=-1))


def _min_p_threshold(rows: _Rows, zmax: jax.Array) -> jax.Array:
  """[B] min-p survivors are z >= this (softmax(z) >= min_p * max softmax(z)); -inf when min-p is off."""
  return jnp.where(rows.min_p > 0, zmax + jnp.log(jnp.where(rows.min_p > 0, rows.min_p, 1.0)), _NEG_INF)


def _kth_largest(x: jax.Array, rows: _Rows, hi: jax.Array, axes: VocabAxes) -> jax.Array:
  """[B] the top_k-th largest tempered logit (largest t with count(z >= t) >= top_k), given hi >= it."""
  return _bisect(lambda t: _count_ge(x, rows, t, axes) >= rows.top_k, jnp.full_like(hi, _NEG_INF), hi)


def _nucleus_threshold(x: jax.Array, rows: _Rows, zmax: jax.Array, t_s: jax.Array, mass: jax.Array,
                       axes: VocabAxes) -> jax.Array:
  """[B] top-p threshold over the whole vocabulary, for survivors {z >= t_s} of total mass `mass`.

  The nucleus is {largest t : mass(z >= t) >= top_p * mass} (a tie at the boundary is kept whole). The
  bisection runs on e = exp(z - zmax), materialised once, so that each of its passes is one read and one
  masked sum (exp is monotone: {e >= s} is an upper set of z). Survivors whose e underflows to 0 have zero
  mass and are never in a nucleus with top_p < 1, as in the definition.
  """
  z = x * rows.inv_t[:, None]
  e = jnp.where(z >= t_s[:, None], jnp.exp(z - zmax[:, None]), 0.0)
  above = lambda s: axes.psum(jnp.sum(jnp.where(e >= s[:, None], e, 0.0), axis=-1))
  s = _bisect(lambda s: above(s) >= rows.top_p * mass, jnp.zeros_like(zmax), jnp.ones_like(zmax))
  return jnp.maximum(t_s, axes.pmin(jnp.min(jnp.where(e >= s[:, None], z, jnp.inf), axis=-1)))


@struct.dataclass
class _Plan:
  """Each row's kept set: `keep` over the window when `window`, else {z >= thresh} over the vocabulary."""

  c: jax.Array  # [B, K] tempered candidate logits, descending
  ids: jax.Array  # [B, K] their global token ids
  keep: jax.Array  # [B, K] bool, the kept set where `window`
  window: jax.Array  # [B] bool: the kept set lies inside the candidates
  thresh: jax.Array  # [B] kept = {i : z_i >= thresh} (both cases)


def _plan(x: jax.Array, rows: _Rows, k_max: int, axes: VocabAxes) -> _Plan:
  """Per-row kept sets for local logits x [B, n] (the global vocabulary is axes.vocab)."""
  raw, ids = _candidates(x, k_max, axes)
  window_k = raw.shape[1]
  c = raw * rows.inv_t[:, None]  # temperature commutes with selection: it is monotone
  zmax = c[:, 0]
  t_min_p = _min_p_threshold(rows, zmax)
  k_on = (rows.top_k > 0) & (rows.top_k < axes.vocab)
  k_in = k_on & (rows.top_k <= window_k)
  t_k = jnp.where(k_in, jnp.take_along_axis(c, jnp.clip(rows.top_k - 1, 0, window_k - 1)[:, None], axis=1)[:, 0],
                  _NEG_INF)
  t_1 = jnp.maximum(t_min_p, t_k)  # min-p and top-k survivors: z >= t_1 (a far top-k is resolved below)
  # Survivors may extend past the window iff its last candidate survives (rows with top_k > K count too).
  spill = ~rows.greedy & (axes.vocab > window_k) & (c[:, -1] >= t_1)
  keep = _nucleus(c, c >= t_1[:, None], rows.top_p, None)

  def exact(_):
    far = spill & k_on & ~k_in
    t_far = lax.cond(axes.any(far), lambda: _kth_largest(x, rows, c[:, -1], axes), lambda: t_k)
    t_s = jnp.maximum(t_min_p, jnp.where(far, t_far, t_k))
    mass = _mass_ge(x, rows, zmax, t_s, axes)
    keep_s = _nucleus(c, c >= t_s[:, None], rows.top_p, mass)
    inside = (rows.top_p < 1.0) & ~keep_s[:, -1]  # the nucleus closes within the window
    wide = spill & (rows.top_p < 1.0) & ~inside
    t_p = lax.cond(axes.any(wide), lambda: _nucleus_threshold(x, rows, zmax, t_s, mass, axes), lambda: t_s)
    return (jnp.where(spill[:, None], keep_s, keep), ~spill | inside,
            jnp.where(rows.top_p < 1.0, t_p, t_s))

  keep, window, t_full = lax.cond(axes.any(spill), exact, lambda _: (keep, jnp.ones_like(spill), t_1), None)
  t_window = jnp.min(jnp.where(keep, c, jnp.inf), axis=-1)
  return _Plan(c=c, ids=ids, keep=keep, window=window, thresh=jnp.where(window, t_window, t_full))


# -- the draw ------------------------------------------------------------------------------------------------


def _sample_local(x: jax.Array, rows: _Rows, keys: jax.Array, *, k_max: int, axes: VocabAxes) -> jax.Array:
  """Local logits [B, n] (a vocab shard inside shard_map, or everything) -> tokens [B], equal on all shards.

  Rows with 0 < top_k <= k_max (or a vocabulary inside the window) draw from the window unless ties spill
  out of it; every other sampled row draws by rejection over the whole vocabulary (`full_vocab.draw`),
  from the survivors z >= floor (min-p, top-k) and their nucleus.
  """
  blocks = full_vocab.block_maxima(x, axes)
  zmax = jnp.max(blocks.grid, axis=-1) * rows.inv_t
  window_k = min(k_max, axes.vocab)
  k_on = (rows.top_k > 0) & (rows.top_k < axes.vocab)
  k_in = k_on & (rows.top_k <= window_k)
  t_min_p = _min_p_threshold(rows, zmax)
  windowed = ~rows.greedy & (k_in | (axes.vocab <= window_k))
  lowest = jnp.full_like(zmax, _NEG_INF)  # constants derived from row values: typed like them under shard_map
  zeros = jnp.zeros_like(rows.top_k)

  def window():
    raw, ids = _candidates(x, k_max, axes, blocks)
    c = raw * rows.inv_t[:, None]
    t_k = jnp.where(k_in, jnp.take_along_axis(c, jnp.clip(rows.top_k - 1, 0, window_k - 1)[:, None], axis=1)[:, 0],
                    _NEG_INF)
    t_1 = jnp.maximum(t_min_p, t_k)
    spill = (axes.vocab > window_k) & (c[:, -1] >= t_1)  # the window's last candidate survives: ties may spill
    scores = jnp.where(_nucleus(c, c >= t_1[:, None], rows.top_p, None), c + _gumbel(keys, ids), _NEG_INF)
    token = jnp.take_along_axis(ids, jnp.argmax(scores, axis=-1)[:, None], axis=1)[:, 0]
    return token, windowed & ~spill, t_k

  token_w, done_w, t_k = lax.cond(axes.any(windowed), window, lambda: (zeros, zeros > 0, lowest))
  far = ~rows.greedy & k_on & ~k_in
  t_far = lax.cond(axes.any(far), lambda: _kth_largest(x, rows, zmax, axes), lambda: lowest)
  rest = ~rows.greedy & ~done_w
  draw_rows = full_vocab.Rows(inv_t=rows.inv_t, zmax=zmax, floor=jnp.maximum(t_min_p, jnp.where(far, t_far, t_k)),
                              top_p=rows.top_p, active=rest)
  token_f = lax.cond(axes.any(rest), lambda: full_vocab.draw(x, draw_rows, keys, blocks, axes), lambda: zeros)
  to_argmax = rows.greedy | (rest & ~jnp.isfinite(zmax))  # greedy rows, and rows whose maximum is not finite
  argmax = lax.cond(axes.any(to_argmax), lambda: full_vocab.lowest_argmax(x, blocks, axes), lambda: zeros)
  return jnp.where(to_argmax, argmax, jnp.where(done_w, token_w, token_f))
