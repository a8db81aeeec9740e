"""The paged KV cache: per-layer pools of fixed-size pages, writes into them, and attention over them.

Layout (that of jax's Pallas paged-attention kernels): per layer `k` and `v` are [K, P, page, Dh] (KV heads, pages,
tokens per page, head dim). A sequence's token t lives in page `page_table[b, t // page]` at offset `t % page`; its
first `kv_len[b]` tokens are valid. Page ids in a page table are local to the sequence's data shard: on a mesh, the
pool and the slots split over the mesh axes the "batch" rule names (each shard owns P/n pages and B/n slots, so no
page crosses devices) and KV heads over "tensor"; writes and attention run under `shard_map`.

`attention` is one function with three backends:
- "reference": pure JAX, an online softmax over blocks of pages up to the longest sequence in the batch (a step costs
  what the sequences hold, not what they could hold); any query length (prefill chunks and decode); what CPU runs
  and what the tests trust;
- "pallas_gpu" / "pallas_tpu": jax's own decode kernels (`jax.experimental.pallas.ops.gpu.paged_attention`,
  `...ops.tpu.paged_attention`) for one query token per sequence. Longer queries (prefill chunks) on TPU go through
  `...ops.tpu.ragged_paged_attention` (mixed prefill and decode; it does not run in interpret mode, so CPU tests
  check the wrapper against the kernel's shipped reference function); on GPU, and int8 pools on TPU, through
  "reference".
An int8 pool (`PagedCache.k_scale`/`v_scale`, one float32 scale per token and head) dequantizes on read.

GPT-OSS layers attend within a sliding window and add a sink logit per head to each softmax; jax's kernels take no
sinks, so such layers always run "reference" (which skips no pages before the window: it masks them).

On CPU the engine's decode steps attend over `SlotRows` instead ("rows"): each decode slot's keys and values copied
out of its pages once, when a sequence takes the slot (`stage_rows`), then extended by every step beside the pages.
Attention over pages copies each block it gathers, every step, and reads it again; over contiguous rows a step reads
each cached key and value once (2.5x less attention time per layer on this 2-core CPU, BUILD_NOTES §15). Accelerators
keep reading pages in place through the Pallas kernels. (Models with sinks or windows decode over pages.)
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import struct
from jax.sharding import NamedSharding, PartitionSpec as P

from ssd_jax.models.config import ModelConfig

PAGE_IMPLS = ("reference", "pallas_gpu", "pallas_tpu")
_MASKED = -1e30


@struct.dataclass
class SlotRows:
  """Per layer, each decode slot's cached keys and values, contiguous: k[i], v[i] [B, K, T, Dh] (CPU decode).

  Row b holds the first kv_len[b] tokens of the sequence in slot b (the rest is stale and masked). A copy of what the
  pages hold, kept so that a decode step reads a slot's tokens without gathering them (see the module docstring)."""

  k: tuple[jax.Array, ...]
  v: tuple[jax.Array, ...]

  @property
  def length(self) -> int:
    return self.k[0].shape[2]


@struct.dataclass
class PagedCache:
  """Per-layer page pools: k[i], v[i] [K, P, page, Dh]; with int8 pages, k_scale[i], v_scale[i] [K, P, page] f32.
  `rows`: the decode slots' contiguous copies (CPU decode, "rows" attention), else None."""

  k: tuple[jax.Array, ...]
  v: tuple[jax.Array, ...]
  k_scale: tuple[jax.Array, ...] | None = None
  v_scale: tuple[jax.Array, ...] | None = None
  rows: SlotRows | None = None

  @property
  def page_size(self) -> int:
    return self.k[0].shape[2]

  @property
  def num_pages(self) -> int:
    return self.k[0].shape[1]


def page_bytes(cfg: ModelConfig, page_size: int, dtype: str) -> int:
  """Bytes one page takes over all layers (keys and values, plus int8 scales)."""
  per_token = cfg.num_kv_heads * (cfg.head_dim * jnp.dtype(dtype).itemsize + (4 if dtype == "int8" else 0))
  return 2 * cfg.num_layers * page_size * per_token


def mesh_split(mesh, rules, num_kv_heads: int, num_heads: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """(mesh axes the slots and pages split over, mesh axes the KV heads split over); ((), ()) without a mesh."""
  if mesh is None or rules is None or mesh.size == 1:
    return (), ()
  data = tuple(a for a in rules.batch if mesh.shape.get(a, 1) > 1)
  tensor = tuple(a for a in rules.act_kv_heads if mesh.shape.get(a, 1) > 1 and a not in data)
  split = math.prod(mesh.shape[a] for a in tensor)
  if num_kv_heads % split or num_heads % split:
    tensor = ()  # heads replicate rather than mismatch the query-to-KV-head groups
  return data, tensor


def num_shards(mesh, rules) -> int:
  """How many data shards own slots and pages (1 without a mesh)."""
  data, _ = mesh_split(mesh, rules, 1, 1)
  return math.prod(mesh.shape[a] for a in data) if data else 1


def _axes(names: tuple[str, ...]):
  return None if not names else names[0] if len(names) == 1 else names


def init_cache(cfg: ModelConfig, num_pages: int, page_size: int, *, dtype: str, mesh=None, rules=None) -> PagedCache:
  """An empty pool of `num_pages` pages (a multiple of the data shards) of `page_size` tokens per layer."""
  data, tensor = mesh_split(mesh, rules, cfg.num_kv_heads, cfg.num_heads)
  shape = (cfg.num_kv_heads, num_pages, page_size, cfg.head_dim)
  quantized = dtype == "int8"

  def make():
    zeros = jnp.zeros(shape, dtype)
    scales = jnp.ones(shape[:3], jnp.float32)
    n = cfg.num_layers
    return PagedCache(k=(zeros,) * n, v=(zeros,) * n, k_scale=(scales,) * n if quantized else None,
                      v_scale=(scales,) * n if quantized else None)

  # Under jit, so that every layer gets its own buffer (the engine donates the cache); committed to its device like
  # the outputs of the calls that update it, so the first call compiles the same program as the others.
  if mesh is None:
    return jax.device_put(jax.jit(make)(), jax.local_devices()[0])
  pages = NamedSharding(mesh, P(_axes(tensor), _axes(data), None, None))
  scales = NamedSharding(mesh, P(_axes(tensor), _axes(data), None))
  n = cfg.num_layers
  out = PagedCache(k=(pages,) * n, v=(pages,) * n, k_scale=(scales,) * n if quantized else None,
                   v_scale=(scales,) * n if quantized else None)
  return jax.jit(make, out_shardings=out)()


def rows_bytes(cfg: ModelConfig, slots: int, length: int, dtype: str) -> int:
  """Bytes of `SlotRows` for `slots` rows of `length` tokens over all layers (keys and values)."""
  return 2 * cfg.num_layers * slots * length * cfg.num_kv_heads * cfg.head_dim * jnp.dtype(dtype).itemsize


def init_rows(cache: PagedCache, cfg: ModelConfig, slots: int, length: int) -> PagedCache:
  """`cache` with empty `SlotRows` of `slots` rows x `length` tokens (a multiple of the page size) attached.

  Unsharded pools only (one device): rows are indexed by slot, and a mesh splits slots and pages by shard."""
  if length % cache.page_size:
    raise ValueError(f"rows of {length} tokens: expected a multiple of the page size {cache.page_size}")
  shape = (slots, cfg.num_kv_heads, length, cfg.head_dim)
  n, dtype = cfg.num_layers, cache.k[0].dtype
  make = jax.jit(lambda: SlotRows(k=(jnp.zeros(shape, dtype),) * n, v=(jnp.zeros(shape, dtype),) * n))
  return cache.replace(rows=jax.device_put(make(), next(iter(cache.k[0].devices()))))


def stage_rows(cache: PagedCache, slots: jax.Array, page_table: jax.Array) -> PagedCache:
  """Copies the pages of page_table [w, rows length / page] into the rows of `slots` [w] (entries out of range are
  padding and dropped): what a sequence already holds, when it takes its slot."""
  k_heads, _, page, dh = cache.k[0].shape
  w = slots.shape[0]

  def stage(rows: jax.Array, pages: jax.Array) -> jax.Array:
    got = pages[:, page_table].transpose(1, 0, 2, 3, 4).reshape(w, k_heads, page_table.shape[1] * page, dh)
    return rows.at[slots].set(got.astype(rows.dtype), mode="drop")

  rows = cache.rows
  return cache.replace(rows=SlotRows(k=tuple(stage(r, p) for r, p in zip(rows.k, cache.k)),
                                     v=tuple(stage(r, p) for r, p in zip(rows.v, cache.v))))


def write_rows(rows: jax.Array, new: jax.Array, start: jax.Array, length: jax.Array) -> jax.Array:
  """Writes new [B, 1, K, Dh] at position start[b] of row b of rows [B, K, T, Dh] where length[b] > 0 (one decode
  token per row; a row with length 0 writes nothing)."""
  b = rows.shape[0]
  row = jnp.where(length > 0, jnp.arange(b), b)  # out of range: dropped
  return rows.at[row, :, start].set(new[:, 0].astype(rows.dtype), mode="drop")


def rows_attention(q: jax.Array, k_rows: jax.Array, v_rows: jax.Array, kv_len: jax.Array, block: int = 512
                   ) -> jax.Array:
  """Attention of one query per row, q [B, 1, H, Dh] (at position kv_len[b] - 1), over the first kv_len[b] tokens of
  its row of k_rows, v_rows [B, K, T, Dh] -> [B, 1, H, Dh]; a row with kv_len 0 gives zeros.

  An online softmax over blocks of `block` tokens, up to the longest row. Why this shape: on CPU each block's slice
  is a copy and each (row, kv head) a small matmul, so blocks are large (512: a 512-token row is one block) and the
  scores put the block's tokens on the long side of the matmul ([W, Dh] x [Dh, G]), ~1.5x faster than [G, Dh] x
  [Dh, W] at batch 64 with XLA's CPU dots."""
  b, _, h, dh = q.shape
  k_heads, t = k_rows.shape[1], k_rows.shape[2]
  g = h // k_heads
  width = math.gcd(block, t)
  qg = (q.reshape(b, k_heads, g, dh).astype(jnp.float32) / math.sqrt(dh)).astype(q.dtype)
  limit = jnp.max(kv_len)
  idx = jnp.arange(width, dtype=jnp.int32)

  def body(carry):
    i, m, l, acc = carry
    ks = jax.lax.dynamic_slice_in_dim(k_rows, i * width, width, axis=2).astype(q.dtype)  # [B, K, W, Dh]
    vs = jax.lax.dynamic_slice_in_dim(v_rows, i * width, width, axis=2).astype(q.dtype)
    ok = ((i * width + idx)[None, :] < kv_len[:, None])[:, None, :, None]  # [B, 1, W, 1]
    scores = jnp.einsum("bktd,bkgd->bktg", ks, qg, preferred_element_type=jnp.float32)
    scores = jnp.where(ok, scores, _MASKED)
    m_new = jnp.maximum(m, scores.max(2))
    p = jnp.where(ok, jnp.exp(scores - m_new[:, :, None]), 0.0)
    scale = jnp.exp(m - m_new)
    acc = acc * scale[..., None] + jnp.einsum("bktg,bktd->bkgd", p.astype(vs.dtype), vs,
                                              preferred_element_type=jnp.float32)
    return i + 1, m_new, l * scale + p.sum(2), acc

  init = (jnp.zeros((), jnp.int32), jnp.full((b, k_heads, g), _MASKED, jnp.float32),
          jnp.zeros((b, k_heads, g), jnp.float32), jnp.zeros((b, k_heads, g, dh), jnp.float32))
  _, _, l, acc = jax.lax.while_loop(lambda s: s[0] * width < limit, body, init)
  out = acc / jnp.maximum(l, 1e-30)[..., None]
  return out.reshape(b, 1, h, dh).astype(q.dtype)


def _quantize(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """x [..., Dh] -> (int8 [..., Dh], f32 scale [...]): symmetric per token and head."""
  scale = jnp.maximum(jnp.max(jnp.abs(x.astype(jnp.float32)), axis=-1), 1e-8) / 127.0
  return jnp.clip(jnp.round(x / scale[..., None]), -127, 127).astype(jnp.int8), scale


def write(pages: jax.Array, scales: jax.Array | None, new: jax.Array, page_table: jax.Array, start: jax.Array,
          length: jax.Array) -> tuple[jax.Array, jax.Array | None]:
  """Writes new [B, C, K, Dh] at positions start[b] + c (c < length[b]) of each row's pages [K, P, page, Dh]."""
  num_pages, page = pages.shape[1:3]
  c = new.shape[1]
  pos = start[:, None] + jnp.arange(c, dtype=jnp.int32)[None, :]
  ok = jnp.arange(c)[None, :] < length[:, None]
  page_id = jnp.take_along_axis(page_table, jnp.clip(pos // page, 0, page_table.shape[1] - 1), axis=1)
  return write_tokens(pages, scales, new, jnp.where(ok, page_id, num_pages), pos % page)


def write_tokens(pages: jax.Array, scales: jax.Array | None, new: jax.Array, page_id: jax.Array, offset: jax.Array
                 ) -> tuple[jax.Array, jax.Array | None]:
  """Writes token (b, c) of new [B, C, K, Dh] into page page_id[b, c] at offset[b, c] of pages [K, P, page, Dh]; a
  page id out of range (padding) writes nothing."""
  vals = new.transpose(2, 0, 1, 3)  # [K, B, C, Dh]
  if scales is not None:
    vals, s = _quantize(vals)
    scales = scales.at[:, page_id, offset].set(s, mode="drop")
  return pages.at[:, page_id, offset].set(vals.astype(pages.dtype), mode="drop"), scales


def _dequantize(x: jax.Array, scale: jax.Array | None, dtype) -> jax.Array:
  return (x.astype(jnp.float32) * scale[..., None]).astype(dtype) if scale is not None else x.astype(dtype)


def _reference(q, k_pages, v_pages, k_scale, v_scale, page_table, start, kv_len, block_pages: int, window: int = 0,
               sinks=None):
  """q [B, C, H, Dh] (query c of row b at position start[b] + c) over each row's first kv_len[b] tokens, causal;
  within the last `window` positions when > 0; sinks [H]: each head's softmax sink logit (its running maximum and
  sum start from the sink's column instead of from nothing)."""
  b, c, h, dh = q.shape
  k_heads, _, page, _ = k_pages.shape
  g = h // k_heads
  pps = page_table.shape[1]
  block_pages = math.gcd(block_pages, pps)
  width = block_pages * page
  qg = (q.reshape(b, c, k_heads, g, dh).astype(jnp.float32) / math.sqrt(dh)).astype(q.dtype)
  q_pos = start[:, None] + jnp.arange(c, dtype=jnp.int32)[None, :]
  limit = jnp.max(kv_len)
  idx = jnp.arange(width, dtype=jnp.int32)

  def body(carry):
    i, m, l, acc = carry
    pages = jax.lax.dynamic_slice_in_dim(page_table, i * block_pages, block_pages, axis=1)  # [B, bp]
    ks = _dequantize(k_pages[:, pages], None if k_scale is None else k_scale[:, pages], q.dtype)
    vs = _dequantize(v_pages[:, pages], None if v_scale is None else v_scale[:, pages], q.dtype)
    ks, vs = ks.reshape(k_heads, b, width, dh), vs.reshape(k_heads, b, width, dh)
    key_pos = i * width + idx
    ok = (key_pos[None, None, :] <= q_pos[:, :, None]) & (key_pos[None, None, :] < kv_len[:, None, None])
    if window:
      ok &= key_pos[None, None, :] > q_pos[:, :, None] - window
    scores = jnp.einsum("bckgd,kbtd->bkgct", qg, ks, preferred_element_type=jnp.float32)
    scores = jnp.where(ok[:, None, None], scores, _MASKED)
    m_new = jnp.maximum(m, scores.max(-1))
    p = jnp.where(ok[:, None, None], jnp.exp(scores - m_new[..., None]), 0.0)  # a row with no key gets nothing
    scale = jnp.exp(m - m_new)
    acc = acc * scale[..., None] + jnp.einsum("bkgct,kbtd->bkgcd", p.astype(vs.dtype), vs,
                                              preferred_element_type=jnp.float32)
    return i + 1, m_new, l * scale + p.sum(-1), acc

  if sinks is None:
    m0, l0 = jnp.full((b, k_heads, g, c), _MASKED, jnp.float32), jnp.zeros((b, k_heads, g, c), jnp.float32)
  else:
    m0 = jnp.broadcast_to(sinks.astype(jnp.float32).reshape(1, k_heads, g, 1), (b, k_heads, g, c))
    l0 = jnp.ones((b, k_heads, g, c), jnp.float32)
  init = (jnp.zeros((), jnp.int32), m0, l0, jnp.zeros((b, k_heads, g, c, dh), jnp.float32))
  _, _, l, acc = jax.lax.while_loop(lambda s: s[0] * width < limit, body, init)
  out = acc / jnp.maximum(l, 1e-30)[..., None]  # rows with nothing to attend (padding) give zeros
  return out.transpose(0, 3, 1, 2, 4).reshape(b, c, h, dh).astype(q.dtype)


def _pallas_decode(q, k_pages, v_pages, k_scale, v_scale, page_table, kv_len, backend: str, interpret: bool):
  """One query token per row through jax's Pallas paged-attention kernel; q [B, 1, H, Dh]."""
  b, _, h, dh = q.shape
  scaled = (q[:, 0].astype(jnp.float32) / math.sqrt(dh)).astype(q.dtype)  # the kernels take no softmax scale
  if backend == "pallas_gpu":
    from jax.experimental.pallas.ops.gpu import paged_attention as gpu_paged
    pps = page_table.shape[1]
    out = gpu_paged.paged_attention(scaled, k_pages, v_pages, page_table, kv_len, k_scale, v_scale,
                                    pages_per_compute_block=math.gcd(8, pps), k_splits=math.gcd(16, pps),
                                    interpret=interpret)
  else:
    from jax.experimental.pallas.ops.tpu.paged_attention import paged_attention_kernel as tpu_paged
    from jax.experimental.pallas.ops.tpu.paged_attention import quantization_utils
    if k_scale is not None:
      k_pages = quantization_utils.QuantizedTensor(k_pages, k_scale[..., None])
      v_pages = quantization_utils.QuantizedTensor(v_pages, v_scale[..., None])
    out = tpu_paged.paged_attention(scaled, k_pages, v_pages, kv_len, page_table,
                                    pages_per_compute_block=math.gcd(8, page_table.shape[1]))
  return out[:, None].astype(q.dtype)


def _pallas_ragged(q, k_pages, v_pages, page_table, start, kv_len):
  """Queries of any length per row (prefill chunks) through jax's TPU ragged paged-attention kernel.

  That kernel reads one pool with each head's keys and values interleaved ([pages, page, 2K, Dh]); ours keeps them
  apart in the decode kernels' layout, so the rows' pages are gathered into its layout first: one extra read of
  what the rows' tables name (the engine trims prefill tables to the pages the chunk reaches), small next to a
  prefill chunk's compute. Row b's queries are positions start[b] .. kv_len[b] - 1; rows are packed back to back.
  """
  from jax.experimental.pallas.ops.tpu.ragged_paged_attention import kernel as ragged
  b, c, h, dh = q.shape
  k_heads, _, page, _ = k_pages.shape
  pps = page_table.shape[1]
  kv = jnp.stack([k_pages[:, page_table], v_pages[:, page_table]], axis=1)  # [K, 2, B, pps, page, Dh]
  kv = kv.transpose(2, 3, 4, 0, 1, 5).reshape(b * pps, page, 2 * k_heads, dh)  # head 2k: keys, 2k + 1: values
  q_len = kv_len - start
  cu = jnp.concatenate([jnp.zeros((1,), jnp.int32), jnp.cumsum(q_len, dtype=jnp.int32)])
  flat = cu[:b, None] + jnp.arange(c, dtype=jnp.int32)[None, :]  # [B, C] packed index of each query
  valid = jnp.arange(c)[None, :] < q_len[:, None]
  packed = jnp.zeros((b * c, h, dh), q.dtype).at[jnp.where(valid, flat, b * c)].set(q, mode="drop")
  out = ragged.ragged_paged_attention(packed, kv, kv_len, jnp.arange(b * pps, dtype=jnp.int32).reshape(b, pps), cu,
                                      jnp.full((1,), b, jnp.int32), sm_scale=1.0 / math.sqrt(dh))
  return jnp.where(valid[..., None, None], out[jnp.clip(flat, 0, b * c - 1)], 0).astype(q.dtype)


def _local(q, k_pages, v_pages, k_scale, v_scale, page_table, start, kv_len, sinks, *, impl: str, block_pages: int,
           interpret: bool, window: int):
  if window or sinks is not None:  # GPT-OSS: no jax kernel has sinks
    return _reference(q, k_pages, v_pages, k_scale, v_scale, page_table, start, kv_len, block_pages, window, sinks)
  if impl != "reference" and q.shape[1] == 1:
    return _pallas_decode(q, k_pages, v_pages, k_scale, v_scale, page_table, kv_len, impl, interpret)
  if impl == "pallas_tpu" and k_scale is None:  # its int8 takes one scale per pool, not one per token
    return _pallas_ragged(q, k_pages, v_pages, page_table, start, kv_len)
  return _reference(q, k_pages, v_pages, k_scale, v_scale, page_table, start, kv_len, block_pages)


def attention(q: jax.Array, k_pages: jax.Array, v_pages: jax.Array, page_table: jax.Array, start: jax.Array,
              kv_len: jax.Array, *, k_scale: jax.Array | None = None, v_scale: jax.Array | None = None,
              impl: str = "reference", block_pages: int = 8, mesh=None, rules=None, interpret: bool = False,
              window: int = 0, sinks: jax.Array | None = None) -> jax.Array:
  """Causal attention of q [B, C, H, Dh] (query c of row b at position start[b] + c) over each row's first
  kv_len[b] cached tokens (the query's own keys already written) -> [B, C, H, Dh].

  impl: "reference" (any C), "pallas_gpu" / "pallas_tpu" (C == 1; else the reference). `interpret` runs a Pallas
  kernel in interpret mode (tests on CPU). On a mesh (see `mesh_split`) it runs per shard under shard_map.
  `window` > 0: only the last `window` positions (the query's own included); `sinks` [H]: one softmax sink logit per
  query head (GPT-OSS; either one runs "reference").
  """
  if impl not in PAGE_IMPLS:
    raise ValueError(f"unknown paged attention {impl!r}; expected one of {PAGE_IMPLS}")
  fn = functools.partial(_local, impl=impl, block_pages=block_pages, interpret=interpret, window=window)
  data, tensor = mesh_split(mesh, rules, k_pages.shape[0], q.shape[2])
  if not data and not tensor:
    return fn(q, k_pages, v_pages, k_scale, v_scale, page_table, start, kv_len, sinks)
  d, t = _axes(data), _axes(tensor)
  row, pages, scales = P(d), P(t, d, None, None), P(t, d, None)
  specs = (P(d, None, t, None), pages, pages, None if k_scale is None else scales,
           None if v_scale is None else scales, P(d, None), row, row, None if sinks is None else P(t))
  return jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=P(d, None, t, None),
                       check_vma=False)(q, k_pages, v_pages, k_scale, v_scale, page_table, start, kv_len, sinks)


def write_sharded(pages: jax.Array, scales: jax.Array | None, new: jax.Array, page_table: jax.Array,
                  start: jax.Array, length: jax.Array, *, num_heads: int, mesh=None, rules=None
                  ) -> tuple[jax.Array, jax.Array | None]:
  """`write` on a mesh: each data shard writes its rows into its own pages (local page ids)."""
  data, tensor = mesh_split(mesh, rules, pages.shape[0], num_heads)
  if not data and not tensor:
    return write(pages, scales, new, page_table, start, length)
  d, t = _axes(data), _axes(tensor)
  pspec, sspec = P(t, d, None, None), P(t, d, None)
  return jax.shard_map(write, mesh=mesh,
                       in_specs=(pspec, None if scales is None else sspec, P(d, None, t, None), P(d, None), P(d),
                                 P(d)),
                       out_specs=(pspec, None if scales is None else sspec),
                       check_vma=False)(pages, scales, new, page_table, start, length)


def copy_pages(cache: PagedCache, src: jax.Array, dst: jax.Array) -> PagedCache:
  """Copies page src[i] to dst[i] in every layer (out-of-range dst entries are padding and dropped).

  Unsharded or single-shard only: the engine copies a sequence's pages within its shard, giving global ids."""
  def cp(x):
    return None if x is None else tuple(a.at[:, dst].set(a[:, src], mode="drop") for a in x)
  return cache.replace(k=cp(cache.k), v=cp(cache.v), k_scale=cp(cache.k_scale), v_scale=cp(cache.v_scale))
