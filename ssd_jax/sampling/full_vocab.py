"""Draws that need the whole vocabulary: one max pass (plus, with top-p, about one exp pass); no sort, no
per-token noise, no threshold search.

Used by `sampler.sample` for every row whose kept set does not fit its top-k window: no truncation, top-p
without top-k, min-p only, top-k beyond the window, and ties that spill out of the window.

Block maxima. One max-reduction pass gives the maximum of each block of `g = gcd(64, V)` consecutive tokens
(the same grid on every vocab sharding: shards whose slice is not a multiple of g reduce finer blocks, and
the gathered maxima are folded to the global grid, so the draw never depends on the sharding).

Rejection sampling from the candidates (z >= floor, z > pivot), exact in distribution: a proposal picks a
block b with probability proportional to exp(m_b) (m_b its tempered maximum, over the blocks whose maximum
is a candidate), then a slot uniformly among its g tokens, and keeps token i with probability
exp(z_i - m_b) if i is a candidate. So P(i) is proportional to exp(z_i), and each proposal succeeds with
probability >= 1/g (a block's maximum is always kept). `PROPOSALS` proposals per round, a fixed number,
are drawn from the row's key, the round index and the proposal index: one read per proposal, not a pass.

Top-p as a rejection against a pivot (as FlashInfer): token i is in the nucleus iff the survivors' mass
strictly above z_i is < top_p of their total, i.e. iff D(z_i) = sum_j e_j ([z_j > z_i] - top_p [j survives])
< 0 (or z_i is the maximum). The answer is the first sample of the row's stream that lies in the nucleus.
That sample is a record (a strict new maximum of the stream), so only records are checked, and after a
record fails the nucleus the next round proposes only above it. A check is one pass over the logits (one
exp and a masked sum); the number of records checked is about 1 + ln(1 / top_p) on average.

The stream, hence the token, is a function of the row's key, its logits and its parameters alone: not of
the batch, the other rows, the vocab sharding, nor of the pass layout, chosen per platform for speed only:
on CPU (where XLA materialises every elementwise stage) each pass covers a chunk of rows that stays in
cache, checks one record, and chunks with nothing to check skip it; on accelerators one fused pass over the
batch checks four records. The float sums in the checks are the only thing that can differ, in the last bit.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct
from jax import lax

GRID = 64  # largest block of the maxima grid; g = gcd(GRID, V)
PROPOSALS = 256  # proposals per round and row (fixed: it is part of the definition of the stream)
_NEG_INF = float("-inf")
_SIGN = 0x80000000
_CPU_CHUNK_ELEMENTS = 1 << 20  # XLA:CPU materialises each elementwise stage: chunks of rows keep them in cache


@struct.dataclass
class VocabAxes:
  """How the vocabulary is laid out: its global size and the mesh axes it is split over (inside shard_map)."""

  vocab: int = struct.field(pytree_node=False)
  shard_axes: tuple[str, ...] | None = struct.field(pytree_node=False, default=None)  # vocab split; None: whole
  row_axes: tuple[str, ...] = struct.field(pytree_node=False, default=())  # mesh axes the rows are split over
  shards: int = struct.field(pytree_node=False, default=1)  # number of vocab shards

  def psum(self, x: jax.Array) -> jax.Array:
    return x if self.shard_axes is None else lax.psum(x, self.shard_axes)

  def pmin(self, x: jax.Array) -> jax.Array:
    return x if self.shard_axes is None else lax.pmin(x, self.shard_axes)

  def any(self, mask: jax.Array) -> jax.Array:
    """True if any row anywhere has `mask` set; the same on every device, so `lax.cond` branches agree."""
    hit = jnp.any(mask)  # replicated over the vocab axes already: computed from gathered / psummed values
    if not self.row_axes:
      return hit
    return lax.psum(hit.astype(jnp.int32), self.row_axes) > 0

  def offset(self, n_local: int) -> jax.Array | int:
    """Global id of this shard's first token (shards hold equal, contiguous slices)."""
    return 0 if self.shard_axes is None else lax.axis_index(self.shard_axes) * n_local

  def all_gather(self, x: jax.Array) -> jax.Array:
    """Per-shard [B, n] -> [B, shards * n] in shard order, typed as replicated over the vocab axes.

    A psum of zero-padded slots (each slot has one non-zero contributor, so the sum is exact):
    `lax.all_gather`'s result is typed as varying, which shard_map's replication check rejects.
    """
    b, n = x.shape
    slots = jnp.zeros((b, self.shards, n), x.dtype).at[:, lax.axis_index(self.shard_axes)].set(x)
    return lax.psum(slots, self.shard_axes).reshape(b, self.shards * n)

  def gather_best(self, vals: jax.Array, ids: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """Per-shard [B, n] (values, global ids) -> the global top-k (ties: the lower shard, i.e. the lower id)."""
    if self.shard_axes is not None:
      vals, ids = self.all_gather(vals), self.all_gather(ids)
    if vals.shape[1] == k and self.shard_axes is None:
      return vals, ids
    vals, pos = lax.top_k(vals, k)
    return vals, jnp.take_along_axis(ids, pos, axis=1)

  def take(self, x: jax.Array, ids: jax.Array) -> jax.Array:
    """Local logits [B, n], global token ids [B, M] -> their values [B, M] on every shard (the owner's, psummed)."""
    n = x.shape[1]
    local = ids - self.offset(n)
    vals = jnp.take_along_axis(x, jnp.clip(local, 0, n - 1), axis=1)
    if self.shard_axes is None:
      return vals
    return self.psum(jnp.where((local >= 0) & (local < n), vals, 0.0))


# -- block maxima ----------------------------------------------------------------------------------------------


@struct.dataclass
class BlockMaxima:
  """Raw-logit maxima of consecutive token blocks: the shard's own (for the candidate top-k) and the global grid."""

  local: jax.Array  # [B, n / local_size], this shard's blocks
  grid: jax.Array  # [B, V / size], replicated: block b holds tokens [b * size, (b + 1) * size)
  local_size: int = struct.field(pytree_node=False)
  size: int = struct.field(pytree_node=False)


def block_maxima(x: jax.Array, axes: VocabAxes) -> BlockMaxima:
  """Local logits [B, n] -> block maxima on the grid g = gcd(GRID, V): one max-reduction pass, no elementwise work."""
  b, n = x.shape
  size = math.gcd(GRID, axes.vocab)
  local_size = math.gcd(size, n)
  # The barrier keeps XLA from rewriting later maxima of the blocks (the row maximum) into more passes over x.
  local = lax.optimization_barrier(jnp.max(x.reshape(b, n // local_size, local_size), axis=-1))
  grid = local if axes.shard_axes is None else axes.all_gather(local)
  if local_size < size:  # the shard slices cut grid blocks: fold the finer gathered blocks onto the grid
    grid = jnp.max(grid.reshape(b, axes.vocab // size, size // local_size), axis=-1)
  return BlockMaxima(local=local, grid=grid, local_size=local_size, size=size)


def lowest_argmax(x: jax.Array, blocks: BlockMaxima, axes: VocabAxes) -> jax.Array:
  """[B] int32: the lowest token id holding the row maximum (jnp.argmax's tie rule), from the block maxima."""
  top = jnp.max(blocks.grid, axis=-1)
  first = jnp.argmax(blocks.grid == top[:, None], axis=-1)  # the first block holding the maximum
  ids = first[:, None] * blocks.size + jnp.arange(blocks.size, dtype=jnp.int32)
  pos = jnp.argmax(axes.take(x, ids) == top[:, None], axis=-1)
  return jnp.take_along_axis(ids, pos[:, None], axis=1)[:, 0].astype(jnp.int32)


# -- the draw --------------------------------------------------------------------------------------------------


@struct.dataclass
class Rows:
  """The per-row inputs of a full-vocabulary draw, all [B]."""

  inv_t: jax.Array  # float32, 1 / temperature
  zmax: jax.Array  # float32, tempered row maximum
  floor: jax.Array  # float32, survivors are z >= floor (min-p and top-k); -inf when neither is on
  top_p: jax.Array  # float32, >= 1: off
  active: jax.Array  # bool, rows to draw (the others return 0)


def draw(x: jax.Array, rows: Rows, keys: jax.Array, blocks: BlockMaxima, axes: VocabAxes) -> jax.Array:
  """One token per active row from the survivors' nucleus, by rejection: local logits [B, n] -> int32 [B].

  `keys` are the rows' typed keys. The pass layout is chosen per platform (see the module doc); it does not
  change the tokens.
  """
  b, n = x.shape
  cpu_chunk = max(d for d in range(1, b + 1) if b % d == 0 and d * n <= max(_CPU_CHUNK_ELEMENTS, n))
  return lax.platform_dependent(
      x, rows, keys, blocks,
      cpu=lambda *a: draw_with_layout(*a, axes=axes, chunk_rows=cpu_chunk, checks=1, search="scan"),
      # Accelerators: one fused pass checks several records; the search is unrolled (a while loop syncs).
      default=lambda *a: draw_with_layout(*a, axes=axes, chunk_rows=b, checks=4, search="scan_unrolled"))


def draw_with_layout(x: jax.Array, rows: Rows, keys: jax.Array, blocks: BlockMaxima, *, axes: VocabAxes,
                     chunk_rows: int, checks: int, search: str = "scan") -> jax.Array:
  """`draw` with an explicit layout: nucleus checks in passes over `chunk_rows` rows, `checks` records per pass,
  proposals' blocks found by `jnp.searchsorted(method=search)`."""
  b = x.shape[0]
  plain = rows.top_p >= 1.0
  zeros = jnp.zeros_like(rows.zmax, jnp.int32)  # derived from row values: typed like them under shard_map
  lowest = jnp.full_like(rows.zmax, _NEG_INF)
  state = (~rows.active | ~jnp.isfinite(rows.zmax), zeros, zeros, lowest,
           jnp.broadcast_to(lowest[:, None], (b, PROPOSALS)), jnp.broadcast_to(zeros[:, None], (b, PROPOSALS)))

  def step(state):
    done, token, rounds, pivot, values, ids = state
    fresh = ~done & ~jnp.any(values > pivot[:, None], axis=-1)  # nothing left above the pivot: a new round
    propose = lambda: _propose(x, rows, pivot, keys, rounds, blocks, axes, search)
    new_values, new_ids = lax.cond(axes.any(fresh), propose, lambda: (values, ids))
    values = jnp.where(fresh[:, None], new_values, values)
    ids = jnp.where(fresh[:, None], new_ids, ids)
    rounds = rounds + fresh
    rz, rid = _records(values, ids, pivot, checks)  # [B, checks], -inf where a row has fewer records
    found = rz[:, 0] > _NEG_INF
    # No nucleus, or a first record at the row maximum (always kept): the first record is the draw, no pass.
    hit_first = ~done & found & (plain | (rz[:, 0] >= rows.zmax))
    pending = ~done & found & ~hit_first
    excess = _checked_excess(x, rows, rz, pending, axes, chunk_rows)
    inside = (rz > _NEG_INF) & ((excess < 0) | (rz >= rows.zmax[:, None]))
    hit_nucleus = pending & jnp.any(inside, axis=-1)
    first = jnp.take_along_axis(rid, jnp.argmax(inside, axis=-1)[:, None], axis=1)[:, 0]
    token = jnp.where(hit_first, rid[:, 0], jnp.where(hit_nucleus, first, token))
    pivot = jnp.where(pending & ~hit_nucleus, jnp.max(rz, axis=-1), pivot)  # the last record checked
    return done | hit_first | hit_nucleus, token, rounds, pivot, values, ids

  return lax.while_loop(lambda s: axes.any(~s[0]), step, state)[1]


def _unit(bits: jax.Array) -> jax.Array:
  """uint32 -> float32 uniform in [0, 1) on a 2^-24 grid."""
  return (bits >> 8).astype(jnp.float32) * (2.0 ** -24)


def _propose(x: jax.Array, rows: Rows, pivot: jax.Array, keys: jax.Array, rounds: jax.Array, blocks: BlockMaxima,
             axes: VocabAxes, search: str = "scan") -> tuple[jax.Array, jax.Array]:
  """One round: [B, PROPOSALS] tempered values of the accepted proposals (-inf where rejected) and token ids."""
  size = blocks.size
  bound = blocks.grid * rows.inv_t[:, None]  # tempered block maxima: max(x) * s == max(x * s) for s > 0
  live = (bound >= rows.floor[:, None]) & (bound > pivot[:, None])
  cdf = _prefix_sums(jnp.where(live, jnp.exp(bound - rows.zmax[:, None]), 0.0))
  word, coin_word = _proposal_bits(keys, rounds)  # word: the block (its top 24 bits) and the slot (its low 8)
  target = _unit(word) * cdf[:, -1:]
  find = jax.vmap(lambda c, t: jnp.searchsorted(c, t, side="right", method=search))
  block = jnp.minimum(find(cdf, target), cdf.shape[1] - 1)
  slot = (word & 0xFF) >> (8 - int(math.log2(size)))  # size <= GRID = 64 = 2^6
  ids = (block * size + slot.astype(jnp.int32)).astype(jnp.int32)
  z = axes.take(x, ids) * rows.inv_t[:, None]
  coin = _unit(coin_word) + 2.0 ** -25  # in (0, 1): the block maximum (ratio 1) is always kept
  keep = (z >= rows.floor[:, None]) & (z > pivot[:, None])
  keep &= coin < jnp.exp(z - jnp.take_along_axis(bound, block, axis=1))
  return jnp.where(keep, z, _NEG_INF), ids


def _proposal_bits(keys: jax.Array, rounds: jax.Array) -> tuple[jax.Array, jax.Array]:
  """[B] typed keys, round indices -> two uint32 words [B, PROPOSALS] per proposal: fold_in(key, 2^31 +
  PROPOSALS * round + j)'s key data (one Threefry hash, as `sampler._gumbel`; it compiles in a third of the
  time of `jax.random.bits`). The ids lie above 2^31, apart from the token ids of the window's noise."""
  ids = jnp.uint32(_SIGN) + rounds.astype(jnp.uint32)[:, None] * jnp.uint32(PROPOSALS) + jnp.arange(
      PROPOSALS, dtype=jnp.uint32)
  data = jax.random.key_data(jax.vmap(lambda k, i: jax.vmap(lambda j: jax.random.fold_in(k, j))(i))(keys, ids))
  return data[..., 0], data[..., 1]


def _prefix_sums(w: jax.Array, width: int = 64) -> jax.Array:
  """Inclusive prefix sums along axis 1 as two small triangular matmuls (within groups of `width`, then over
  the group totals): ~3x faster than jnp.cumsum on XLA:CPU and ~3x quicker to compile than an associative scan."""
  b, n = w.shape
  groups = -(-n // width)
  within = jnp.einsum("bgf,fh->bgh", jnp.pad(w, ((0, 0), (0, groups * width - n))).reshape(b, groups, width),
                      jnp.triu(jnp.ones((width, width), w.dtype)), precision=lax.Precision.HIGHEST)
  before = jnp.einsum("bg,gh->bh", within[:, :, -1], jnp.triu(jnp.ones((groups, groups), w.dtype), 1),
                      precision=lax.Precision.HIGHEST)
  return (within + before[:, :, None]).reshape(b, groups * width)[:, :n]


def _records(values: jax.Array, ids: jax.Array, pivot: jax.Array, checks: int) -> tuple[jax.Array, jax.Array]:
  """The first `checks` records above the pivot, in proposal order: values [B, checks] (-inf: none) and ids."""
  b, p = values.shape
  before = jnp.concatenate([jnp.full((b, 1), _NEG_INF, values.dtype), lax.cummax(values, axis=1)[:, :-1]], axis=1)
  record = values > jnp.maximum(before, pivot[:, None])
  rank = jnp.where(record, jnp.cumsum(record, axis=1) - 1, checks)  # [B, P]; `checks` = not a record / too late
  pick = rank[:, None, :] == jnp.arange(checks)[None, :, None]  # [B, checks, P], at most one True per (b, k)
  rz = jnp.max(jnp.where(pick, values[:, None, :], _NEG_INF), axis=-1)
  rid = jnp.sum(jnp.where(pick, ids[:, None, :], 0), axis=-1)
  return rz, rid


def _excess(x: jax.Array, rows: Rows, records: jax.Array, axes: VocabAxes) -> jax.Array:
  """[B, C] D(r) = sum_j e_j ([z_j > r] - top_p [z_j >= floor]) for records r [B, C]: one pass over the logits.

  D(r) < 0 iff the survivors strictly above r hold < top_p of their mass. The exp sits inside the selects
  so that XLA:CPU computes it in its own vectorised loop and hands a plain sum to its reduction library.
  """
  z = x * rows.inv_t[:, None]
  e = jnp.exp(z - rows.zmax[:, None])
  p = rows.top_p[:, None]
  below = jnp.where(z >= rows.floor[:, None], -p * e, 0.0)
  terms = jnp.where(z[:, None, :] > records[:, :, None], ((1.0 - p) * e)[:, None, :], below[:, None, :])
  return axes.psum(jnp.sum(terms, axis=-1))


def _checked_excess(x: jax.Array, rows: Rows, records: jax.Array, pending: jax.Array, axes: VocabAxes,
                    chunk_rows: int) -> jax.Array:
  """`_excess` for the pending rows (0 elsewhere), in passes over chunks of `chunk_rows` rows; a chunk with
  nothing pending skips its pass (on CPU, where a chunk's buffers stay in cache, this is most of them after
  the first check). The chunk is sliced inside the taken branch, so a skipped chunk copies nothing."""
  b = x.shape[0]
  if chunk_rows >= b:
    return lax.cond(axes.any(pending), lambda: _excess(x, rows, records, axes), lambda: jnp.zeros_like(records))

  def chunk(i, out):
    part = lambda a: lax.dynamic_slice_in_dim(a, i * chunk_rows, chunk_rows, axis=0)
    value = lax.cond(axes.any(part(pending)), lambda: _excess(part(x), jax.tree.map(part, rows), part(records), axes),
                     lambda: jnp.zeros_like(part(records)))
    return lax.dynamic_update_slice_in_dim(out, value, i * chunk_rows, axis=0)

  return lax.fori_loop(0, b // chunk_rows, chunk, jnp.zeros_like(records))
