"""Training attention over packed and unpacked rows: one entry point, a fused kernel per backend.

A row holds one or more documents told apart by segment ids (0 = padding, anywhere in the row); a query attends
causally to the keys of its own segment. `attention` computes that with one of:

- "xla": the dense masked einsum (`layers.attention`): any backend, any rows, memory quadratic in S. The reference.
- "cudnn": cuDNN's flash attention through `jax.nn.dot_product_attention`, causal by lengths: GPUs, unpacked rows
  only (one right-padded document per row; the segment ids must be 1 then 0).
- "splash": jax's Pallas TPU splash attention (`jax.experimental.pallas.ops.tpu.splash_attention`): a static causal
  mask (fully masked tiles skipped; a local mask for sliding-window layers) and the segment ids, GQA natively (its
  MHA kernel maps query head h to KV head h // G, as `layers.attention` does), attention sinks natively, vmapped
  over the batch.
- "pallas_gpu": jax's Pallas GPU flash attention (`jax.experimental.pallas.ops.gpu.attention.mha`, Triton) with
  causal masking and segment ids; GQA by repeating the KV heads.

GPT-OSS layers add a sliding window and per-head attention sinks: "xla" and "splash" compute both; "cudnn" and
"pallas_gpu" have no sink logits (jax's kernels take none), so they refuse such layers and `auto_attention` picks
"xla" for a model with sinks on GPU, saying why.

The Pallas kernels run per device: on a mesh they go under shard_map, split over the mesh axes of the "batch" rule
and over the heads' axes ("act_heads" / "act_kv_heads") where both query and KV heads divide; the sequence is never
split (a kernel needs all of a row's keys). Rows are padded internally to whole tiles (as padding, segment 0).
Padding queries attend to padding keys only and their outputs are set to 0 in every implementation, so they are
finite and pass no gradient back; real positions are unaffected by padding. `interpret` runs the Pallas kernels in
interpret mode (CPU tests).

`auto_attention` is the choice per backend and row kind that the pipeline's `train.attention = "auto"` makes, with
the reason for it (including why a backend falls back to XLA).
"""

from __future__ import annotations

import functools
import logging
import math

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from ssd_jax.models import layers
from ssd_jax.models.sharding import ShardingRules

IMPLS = ("xla", "cudnn", "splash", "pallas_gpu")
# The jax backend each fused kernel compiles for.
_BACKEND = {"cudnn": "gpu", "splash": "tpu", "pallas_gpu": "gpu"}
_LANES = 128  # splash's kv tiles are multiples of the TPU lane width
_SPLASH_TILES = (512, 256, 128)
_PALLAS_GPU_TILE = 128  # jax's default forward tile; its backward default tile is 32
_PALLAS_GPU_BWD_TILE = 32

_log = logging.getLogger(__name__)
_reported: set[tuple] = set()


def auto_attention(backend: str, packing: bool, sinks: bool = False) -> tuple[str, str]:
  """The training attention for a jax backend ("cpu", "gpu", "tpu"), row kind and model (`sinks`: it has attention
  sinks, as GPT-OSS), and why (one sentence)."""
  rows = "packed" if packing else "unpacked"
  if backend == "tpu":
    return "splash", f"splash attention (Pallas TPU) for {rows} rows: causal mask and segment ids, memory linear in S"
  if backend == "gpu" and sinks:
    return "xla", (f"falls back to XLA's dense masked attention (memory quadratic in S) for {rows} rows: the model "
                   "has attention sinks, which neither cuDNN's nor jax's Pallas GPU flash attention computes")
  if backend == "gpu" and not packing:
    return "cudnn", "cuDNN flash attention by lengths for unpacked rows (one right-padded document per row)"
  if backend == "gpu":
    return "pallas_gpu", ("Pallas GPU (Triton) flash attention with segment ids for packed rows: cuDNN's packed "
                          "layout is reachable only through jax internals (jax._src), needs a static bound on "
                          "documents per row and has no CPU mode to test it, so it is not used")
  return "xla", (f"falls back to XLA's dense masked attention (memory quadratic in S) for {rows} rows: no fused "
                 f"kernel compiles for the {backend!r} backend (jax's Pallas kernels run there only in interpret "
                 f"mode, which is for tests)")


def attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, *, impl: str = "xla",
              mask: jax.Array | None = None, window: int = 0, sinks: jax.Array | None = None,
              mesh: Mesh | None = None, rules: ShardingRules | None = None, block: int | None = None,
              interpret: bool = False) -> jax.Array:
  """Causal, segment-masked grouped-query attention.

  q: [B, S, H, Dh]; k, v: [B, K, S, Dh]; segment_ids [B, S] int (0 = padding) -> [B, S, H, Dh] in q's dtype, 0 at
  padding queries. `window` > 0: a query sees only the last `window` keys (its own included); `sinks` [H]: one
  softmax sink logit per query head (both GPT-OSS; "xla" and "splash" only). `mask` ("xla" only):
  `layers.segment_mask(segment_ids, window)` when the caller holds it already (one per model instead of one per
  layer). `block`: the kernel's tile in tokens ("splash": every tile, a multiple of 128; "pallas_gpu": the forward
  tiles, backward ones min(32, block)); None picks per length. `interpret`: run a Pallas kernel in interpret mode,
  on any backend.
  """
  if impl not in IMPLS:
    raise ValueError(f"unknown attention {impl!r}; expected one of {IMPLS}")
  if impl in ("cudnn", "pallas_gpu") and (window or sinks is not None):
    raise ValueError(f"attention {impl!r} has no attention sinks or sliding window (this model's layers use them); "
                     "use 'xla' or 'splash' (or 'auto' in the pipeline's train.attention)")
  # The devices compiled for: the mesh's (a TPU topology's compile-only devices on a CPU host), else jax's backend.
  platform = mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()
  if impl in _BACKEND and not (interpret and impl != "cudnn") and platform != _BACKEND[impl]:
    raise ValueError(f"attention {impl!r} runs on {_BACKEND[impl]!r} devices, but the devices compiled for are "
                     f"{platform!r}; use 'xla' (or 'auto' in the pipeline's train.attention)")
  if impl == "xla":
    out = layers.attention(q, k, v, layers.segment_mask(segment_ids, window) if mask is None else mask, sinks)
  elif impl == "cudnn":
    lengths = (segment_ids > 0).sum(axis=1).astype(jnp.int32)
    out = layers.causal_attention_by_length(q, k, v, lengths, implementation="cudnn")
  elif impl == "splash":
    out = _per_shard(impl, functools.partial(_splash, block=block, window=window, interpret=interpret), q, k, v,
                     segment_ids, sinks, mesh, rules)
  else:
    out = _per_shard(impl, functools.partial(_pallas_gpu, block=block, interpret=interpret), q, k, v, segment_ids,
                     None, mesh, rules)
  return jnp.where((segment_ids > 0)[:, :, None, None], out, jnp.zeros((), out.dtype))


def _per_shard(impl: str, fn, q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array,
               sinks: jax.Array | None, mesh: Mesh | None, rules: ShardingRules | None) -> jax.Array:
  """fn(q, k, v, segment_ids, sinks) on each device's rows and heads (shard_map), or directly without a mesh."""
  if mesh is None or rules is None or mesh.size == 1:
    return fn(q, k, v, segment_ids, sinks)
  q_spec = rules.spec(("batch", None, "act_heads", None), q.shape, mesh)
  kv_spec = rules.spec(("batch", "act_kv_heads", None, None), k.shape, mesh)
  if q_spec[2] != kv_spec[1]:
    key = (impl, q.shape, k.shape, tuple(mesh.shape.items()))
    if key not in _reported:
      _reported.add(key)
      _log.warning("%s attention: query heads %d split over %s but KV heads %d over %s on mesh %s; every device "
                   "computes all heads of its rows instead", impl, q.shape[2], q_spec[2], k.shape[1], kv_spec[1],
                   dict(mesh.shape))
    q_spec, kv_spec = P(q_spec[0], None, None, None), P(kv_spec[0], None, None, None)
  sink_spec = None if sinks is None else P(q_spec[2])
  return jax.shard_map(fn, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec, P(q_spec[0], None), sink_spec),
                       out_specs=q_spec, check_vma=False)(q, k, v, segment_ids, sinks)


def _pad_to(x: jax.Array, axis: int, length: int) -> jax.Array:
  """Zero-pads `axis` up to `length` (padding tokens get segment 0)."""
  if x.shape[axis] == length:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, length - x.shape[axis])
  return jnp.pad(x, widths)


def _splash_tile(s: int, block: int | None) -> tuple[int, int]:
  """(tile, padded length) for a row of s tokens."""
  if block is not None:
    if block % _LANES:
      raise ValueError(f"splash attention block must be a multiple of {_LANES}, got {block}")
    return block, -(-s // block) * block
  padded = -(-s // _LANES) * _LANES
  return next(t for t in _SPLASH_TILES if padded % t == 0), padded


@functools.lru_cache(maxsize=32)
def _splash_kernel(length: int, heads: int, tile: int, window: int, interpret: bool):
  """The splash MHA kernel for [heads, length, Dh] queries: causal (within `window` when > 0), same tile forward
  and backward."""
  from jax.experimental.pallas.ops.tpu import splash_attention as splash

  shape = (length, length)
  head_mask = splash.LocalMask(shape, (window - 1, 0), offset=0) if window else splash.CausalMask(shape)
  mask = splash.MultiHeadMask([head_mask] * heads)
  sizes = splash.BlockSizes(block_q=tile, block_kv=tile, block_kv_compute=tile, block_q_dkv=tile, block_kv_dkv=tile,
                            block_kv_dkv_compute=tile, block_q_dq=tile, block_kv_dq=tile)
  # Built once and reused across traces, so its tile tables must be concrete arrays, never a trace's values.
  with jax.ensure_compile_time_eval():
    return splash.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)


def _splash(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, sinks: jax.Array | None, *,
            block: int | None, window: int, interpret: bool) -> jax.Array:
  """Splash attention on local rows: q [B, S, H, Dh]; k, v [B, K, S, Dh]; segment_ids [B, S]; sinks [H] or None
  -> [B, S, H, Dh]."""
  from jax.experimental.pallas.ops.tpu.splash_attention import SegmentIds

  b, s, h, dh = q.shape
  tile, padded = _splash_tile(s, block)
  # The kernel takes no softmax scale: scale q (in float32, then back to its dtype).
  q = (q.astype(jnp.float32) / math.sqrt(dh)).astype(q.dtype).transpose(0, 2, 1, 3)
  q, k, v = (_pad_to(x, 2, padded) for x in (q, k, v))
  seg = _pad_to(segment_ids.astype(jnp.int32), 1, padded)
  kernel = _splash_kernel(padded, h, tile, window, interpret)
  if sinks is None:
    out = jax.vmap(kernel, in_axes=(0, 0, 0, SegmentIds(0, 0)))(q, k, v, SegmentIds(seg, seg))
  else:
    out = jax.vmap(kernel, in_axes=(0, 0, 0, SegmentIds(0, 0), None))(q, k, v, SegmentIds(seg, seg),
                                                                       sinks.astype(jnp.float32))
  return out[:, :, :s].transpose(0, 2, 1, 3).astype(q.dtype)


def _pallas_gpu(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, sinks: None, *,
                block: int | None, interpret: bool) -> jax.Array:
  """jax's Pallas GPU `mha` on local rows (layouts as `_splash`); KV heads repeated to the query heads."""
  from jax.experimental.pallas.ops.gpu import attention as gpu_attention

  b, s, h, dh = q.shape
  tile = _PALLAS_GPU_TILE if block is None else block
  bwd = min(_PALLAS_GPU_BWD_TILE, tile)
  if tile % bwd:
    raise ValueError(f"pallas_gpu attention block must be a multiple of {bwd}, got {tile}")
  padded = -(-s // tile) * tile
  group = h // k.shape[1]
  k, v = (jnp.repeat(x.transpose(0, 2, 1, 3), group, axis=2) for x in (k, v))  # [B, S, H, Dh]: head i -> i // G
  q, k, v = (_pad_to(x, 1, padded) for x in (q, k, v))
  seg = _pad_to(segment_ids.astype(jnp.int32), 1, padded)
  sizes = gpu_attention.BlockSizes(block_q=tile, block_k=tile, block_q_dkv=bwd, block_kv_dkv=bwd, block_q_dq=bwd,
                                   block_kv_dq=bwd)
  out = gpu_attention.mha(q, k, v, seg, sm_scale=1.0 / math.sqrt(dh), causal=True, block_sizes=sizes,
                          interpret=interpret)
  return out[:, :s].astype(q.dtype)
