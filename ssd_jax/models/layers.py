"""The numerical building blocks shared by every family: RMSNorm, RoPE (default / linear / llama3 / yarn),
grouped-query attention over a [B, kv_heads, T, head_dim] key/value layout, SwiGLU, and the routed
mixture of experts (sorted dispatch + ragged_dot, expert-parallel under shard_map).

All functions are pure; shapes use B batch, S query length, T key length, D model width, H query heads,
K kv heads, G = H / K, Dh head dim, F mlp width, E experts.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from ssd_jax.models.config import ModelConfig
from ssd_jax.models.sharding import ShardingRules

# Finite, so that a fully masked row (a pad query) gives a uniform average instead of NaN.
_MASKED = -1e30


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
  """x: [..., D] -> [..., D] float32 (statistics and scale in float32)."""
  x32 = x.astype(jnp.float32)
  x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return x32 * weight.astype(jnp.float32)


# -- RoPE ------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def rope_frequencies(cfg: ModelConfig) -> tuple[np.ndarray, float]:
  """Inverse frequencies [Dh/2] and the cos/sin scale, as transformers' rope init functions compute them."""
  dim = cfg.head_dim
  base = cfg.rope_theta
  rs = cfg.rope_scaling
  inv_freq = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
  scale = 1.0
  if rs.rope_type == "linear":
    inv_freq = inv_freq / rs.factor
  elif rs.rope_type == "llama3":
    old_len = rs.original_max_position_embeddings or cfg.max_position_embeddings
    low_wavelen = old_len / rs.low_freq_factor
    high_wavelen = old_len / rs.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_wavelen, inv_freq / rs.factor, inv_freq)
    smooth = (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor)
    smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    inv_freq = np.where(medium, smoothed, scaled)
  elif rs.rope_type == "yarn":
    old_len = rs.original_max_position_embeddings or cfg.max_position_embeddings

    def mscale(s, m=1.0):
      return 1.0 if s <= 1 else 0.1 * m * math.log(s) + 1.0

    if rs.attention_factor is not None:
      scale = rs.attention_factor
    elif rs.mscale and rs.mscale_all_dim:
      scale = mscale(rs.factor, rs.mscale) / mscale(rs.factor, rs.mscale_all_dim)
    else:
      scale = mscale(rs.factor)

    def correction_dim(rotations):
      return dim * math.log(old_len / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(rs.beta_fast), correction_dim(rs.beta_slow)
    if rs.truncate:
      low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
      high += 0.001
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)
    extrapolation = 1 - ramp
    inv_freq = (inv_freq / rs.factor) * (1 - extrapolation) + inv_freq * extrapolation
  return inv_freq.astype(np.float32), float(scale)


def rope_cos_sin(positions: jax.Array, cfg: ModelConfig) -> tuple[jax.Array, jax.Array]:
  """positions [B, S] int -> (cos, sin) each [B, S, Dh] float32 (half-split layout, as HF)."""
  inv_freq, scale = rope_frequencies(cfg)
  freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb) * scale, jnp.sin(emb) * scale


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """x [B, S, N, Dh] rotated by cos/sin [B, S, Dh]; computed in float32, returned in x's dtype."""
  x32 = x.astype(jnp.float32)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
  return (x32 * cos[:, :, None, :] + rotated * sin[:, :, None, :]).astype(x.dtype)


# -- attention -------------------------------------------------------------------------------------


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, sinks: jax.Array | None = None
              ) -> jax.Array:
  """Grouped-query attention, XLA's dense masked einsum (training picks among fused kernels in `fused_attention`).

  q: [B, S, H, Dh]; k, v: [B, K, T, Dh]; mask [B, S, T] bool (True = may attend) -> [B, S, H, Dh]. Scores and
  softmax in float32. `sinks` [H] (GPT-OSS): one logit per query head that joins every row's softmax as an extra
  column and is then dropped, so a head can put mass on nothing. It materialises the [B, H, S, T] scores, which
  bounds the sequence length (~2.5x the f32 scores per layer in the backward).
  """
  b, s, h, dh = q.shape
  kv_heads = k.shape[1]
  q = q.reshape(b, s, kv_heads, h // kv_heads, dh)
  scores = jnp.einsum("bskgd,bktd->bkgst", q, k, preferred_element_type=jnp.float32) / math.sqrt(dh)
  scores = jnp.where(mask[:, None, None, :, :], scores, _MASKED)
  if sinks is None:
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  else:
    sink = sinks.astype(jnp.float32).reshape(1, kv_heads, h // kv_heads, 1, 1)
    sink = jnp.broadcast_to(sink, (*scores.shape[:-1], 1))
    probs = jax.nn.softmax(jnp.concatenate([scores, sink], axis=-1), axis=-1)[..., :-1].astype(v.dtype)
  out = jnp.einsum("bkgst,bktd->bskgd", probs, v, preferred_element_type=jnp.float32)
  return out.reshape(b, s, h, dh).astype(q.dtype)


def causal_attention_by_length(q: jax.Array, k: jax.Array, v: jax.Array, lengths: jax.Array,
                               implementation: str | None = "cudnn") -> jax.Array:
  """Causal GQA over right-padded rows through `jax.nn.dot_product_attention` (layouts as in `attention`).

  Rows past `lengths` [B] are padding: their keys are never attended; their query outputs are unspecified.
  """
  out = jax.nn.dot_product_attention(q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), is_causal=True,
                                     query_seq_lengths=lengths, key_value_seq_lengths=lengths,
                                     implementation=implementation)
  return out.astype(q.dtype)


def segment_mask(segment_ids: jax.Array, window: int = 0) -> jax.Array:
  """[B, S] segment ids (0 = padding) -> [B, S, S] causal, same-segment, non-pad-key mask.

  `window` > 0 keeps only the last `window` keys of each query (its own included): a segment is contiguous, so the
  index distance is the position distance.
  """
  s = segment_ids.shape[1]
  causal = jnp.tril(jnp.ones((s, s), dtype=bool))
  if window:
    causal &= ~jnp.tril(jnp.ones((s, s), dtype=bool), -window)
  same = segment_ids[:, :, None] == segment_ids[:, None, :]
  return causal[None] & same & (segment_ids[:, None, :] > 0)


def positions_from_segments(segment_ids: jax.Array) -> jax.Array:
  """Position of each token inside its segment: [B, S] -> [B, S] int32 (pads get 0).

  Works for left padding, right padding and packed rows alike.
  """
  idx = jnp.arange(segment_ids.shape[1], dtype=jnp.int32)[None, :]
  starts = jnp.concatenate(
      [jnp.ones_like(segment_ids[:, :1], dtype=bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
  start_idx = jax.lax.cummax(jnp.where(starts, idx, 0), axis=1)
  return jnp.where(segment_ids > 0, idx - start_idx, 0).astype(jnp.int32)


# -- feed-forward ----------------------------------------------------------------------------------


def swiglu(x: jax.Array, gate: jax.Array, up: jax.Array, down: jax.Array, dtype) -> jax.Array:
  """x [..., D]; gate, up [D, F]; down [F, D]."""
  x = x.astype(dtype)
  h = jax.nn.silu(x @ gate.astype(dtype)) * (x @ up.astype(dtype))
  return h @ down.astype(dtype)


def route(x: jax.Array, router: jax.Array, cfg: ModelConfig, router_bias: jax.Array | None = None
          ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """x [T, D] -> (router logits [T, E] f32, top-k weights [T, k] f32, top-k expert ids [T, k] int32)."""
  logits = jnp.dot(x.astype(cfg.cdtype), router.astype(cfg.cdtype), preferred_element_type=jnp.float32)
  if router_bias is not None:
    logits = logits + router_bias.astype(jnp.float32)
  probs = jax.nn.softmax(logits, axis=-1)
  weights, experts = jax.lax.top_k(probs, cfg.num_experts_per_tok)
  if cfg.norm_topk_prob:
    weights = weights / jnp.sum(weights, axis=-1, keepdims=True)
  return logits, weights, experts.astype(jnp.int32)


def gated_activation(gate: jax.Array, up: jax.Array, cfg: ModelConfig) -> jax.Array:
  """The experts' GLU: silu(gate) * up, or GPT-OSS's clamped (up + 1) * gate * sigmoid(alpha * gate)."""
  if not cfg.swiglu_limit:
    return jax.nn.silu(gate) * up
  gate = jnp.minimum(gate, cfg.swiglu_limit)
  up = jnp.clip(up, -cfg.swiglu_limit, cfg.swiglu_limit)
  return (up + 1) * gate * jax.nn.sigmoid(cfg.swiglu_alpha * gate)


# Tokens per pass through the local experts. Every assignment row of a pass is materialized several times over
# ([T * top_k, D] gathered inputs and float32 outputs): Qwen3-30B-A3B's 4 x 65,536 tokens gathered over the expert
# axis are 2.1M rows, ~34 GiB per layer in one pass. In passes of 8,192 tokens (65,536 rows at top-8, ~1 GiB), each
# pass checkpointed, the layer's MoE memory no longer grows with the row length; a pass still gives every local
# expert hundreds of rows, enough for full-size matmul tiles.
MOE_TOKENS_PER_PASS = 8192


def _local_experts(x, weights, experts, gate, up, down, gate_bias, up_bias, first_expert, cfg):
  """`_local_experts_pass` over the tokens in passes of MOE_TOKENS_PER_PASS (one pass when they fit), each pass
  recomputed in the backward pass rather than saved. x [T, D], weights/experts [T, k] -> [T, D] float32."""
  num_tokens = x.shape[0]
  chunk = MOE_TOKENS_PER_PASS
  if num_tokens <= chunk:
    return _local_experts_pass(x, weights, experts, gate, up, down, gate_bias, up_bias, first_expert, cfg)
  passes = -(-num_tokens // chunk)
  pad = passes * chunk - num_tokens
  # Padding tokens go to expert -1, which no shard holds: they get no rows' work.
  x, weights = (jnp.pad(a, ((0, pad), (0, 0))) for a in (x, weights))
  experts = jnp.pad(experts, ((0, pad), (0, 0)), constant_values=-1)

  @functools.partial(jax.checkpoint, policy=jax.checkpoint_policies.nothing_saveable, prevent_cse=False)
  def one_pass(args):
    return _local_experts_pass(*args, gate, up, down, gate_bias, up_bias, first_expert, cfg)

  y = jax.lax.map(one_pass, tuple(a.reshape(passes, chunk, -1) for a in (x, weights, experts)))
  return y.reshape(passes * chunk, -1)[:num_tokens]


def _local_experts_pass(x, weights, experts, gate, up, down, gate_bias, up_bias, first_expert, cfg):
  """Runs the experts held locally ([E_local, ...]) on the assignments that hit them.

  Assignments are sorted by local expert id; those for other shards sort last and get no group, so
  ragged_dot leaves their rows zero. x [T, D], weights/experts [T, k] -> [T, D] float32 (a partial sum
  over experts when the experts are split across shards). The gate/up biases [E_local, F] are added per row;
  the down bias is the caller's (`moe`), since a partial sum over F shards would count it once per shard.
  """
  dtype = cfg.cdtype
  num_tokens, top_k = experts.shape
  num_local = gate.shape[0]
  local_id = experts.reshape(-1) - first_expert
  is_local = (local_id >= 0) & (local_id < num_local)
  sort_key = jnp.where(is_local, local_id, num_local)
  order = jnp.argsort(sort_key, stable=True)
  token = order // top_k
  group_sizes = jnp.bincount(sort_key, length=num_local + 1)[:num_local].astype(jnp.int32)
  xs = x[token].astype(dtype)
  h = jax.lax.ragged_dot(xs, gate.astype(dtype), group_sizes)
  u = jax.lax.ragged_dot(xs, up.astype(dtype), group_sizes)
  if gate_bias is not None:
    # Rows of other shards' experts take expert 0's bias; their down-projection rows stay zero all the same.
    row_expert = jnp.minimum(sort_key[order], num_local - 1)
    h = h + gate_bias.astype(dtype)[row_expert]
    u = u + up_bias.astype(dtype)[row_expert]
  y = jax.lax.ragged_dot(gated_activation(h, u, cfg).astype(dtype), down.astype(dtype), group_sizes,
                         preferred_element_type=jnp.float32)
  w = jnp.where(is_local[order], weights.reshape(-1)[order], 0.0)
  return jnp.zeros((num_tokens, x.shape[-1]), jnp.float32).at[token].add(y * w[:, None])


def moe(x: jax.Array, router: jax.Array, gate: jax.Array, up: jax.Array, down: jax.Array, cfg: ModelConfig,
        mesh: Mesh | None = None, rules: ShardingRules | None = None, *, router_bias: jax.Array | None = None,
        gate_bias: jax.Array | None = None, up_bias: jax.Array | None = None, down_bias: jax.Array | None = None
        ) -> tuple[jax.Array, jax.Array]:
  """Routed experts. x [B, S, D]; gate/up [E, D, F]; down [E, F, D] -> (y [B, S, D] f32, router logits [B*S, E]).

  Biases (GPT-OSS, all or none): router [E], gate/up [E, F], down [E, D]. On a mesh the experts run under
  shard_map: tokens stay sharded over the batch axes and are all-gathered over the expert axis (when the batch is
  split there too), each shard runs its own experts on the tokens routed to them, and the partial outputs are
  reduce-scattered back.
  """
  b, s, d = x.shape
  tokens = x.reshape(b * s, d)
  logits, weights, experts = route(tokens, router, cfg, router_bias)
  biased = gate_bias is not None
  if mesh is None or rules is None or mesh.size == 1:
    y = _local_experts(tokens, weights, experts, gate, up, down, gate_bias, up_bias, 0, cfg)
  else:
    y = _sharded_experts(tokens, weights, experts, gate, up, down, gate_bias, up_bias, cfg, mesh, rules)
  if biased:
    # Each token's down bias, weighted by its routing weights: [T, E] combine weights times the [E, D] table.
    combine = jnp.zeros((b * s, cfg.num_experts), jnp.float32).at[
        jnp.arange(b * s)[:, None], experts].add(weights)
    y = y + jnp.dot(combine, down_bias.astype(jnp.float32), preferred_element_type=jnp.float32)
  return y.reshape(b, s, d), logits


def _sharded_experts(tokens, weights, experts, gate, up, down, gate_bias, up_bias, cfg, mesh, rules):
  """`_local_experts` under shard_map: each device runs its experts (and F slice) on the tokens routed there."""
  tok_spec = rules.spec(("batch", None), tokens.shape, mesh)
  w_spec = rules.spec(("experts", None, "moe_mlp"), gate.shape, mesh)
  down_spec = P(w_spec[0], w_spec[2], None)
  bias_spec = P(w_spec[0], w_spec[2])

  def names(entry) -> tuple[str, ...]:
    return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)

  tok_axes, exp_axes, mlp_axes = names(tok_spec[0]), names(w_spec[0]), names(w_spec[2])
  gather_axes = tuple(a for a in exp_axes if a in tok_axes)
  sum_axes = tuple(a for a in exp_axes if a not in tok_axes) + mlp_axes

  def body(tokens, weights, experts, gate, up, down, gate_bias, up_bias):
    if gather_axes:
      tokens, weights, experts = (jax.lax.all_gather(a, gather_axes, axis=0, tiled=True)
                                  for a in (tokens, weights, experts))
    first = jax.lax.axis_index(exp_axes) * gate.shape[0] if exp_axes else 0
    y = _local_experts(tokens, weights, experts, gate, up, down, gate_bias, up_bias, first, cfg)
    if sum_axes:
      y = jax.lax.psum(y, sum_axes)
    if gather_axes:
      y = jax.lax.psum_scatter(y, gather_axes, scatter_dimension=0, tiled=True)
    return y

  row = P(tok_spec[0], None)
  bias = None if gate_bias is None else bias_spec
  return jax.shard_map(body, mesh=mesh, in_specs=(row, row, row, w_spec, w_spec, down_spec, bias, bias),
                       out_specs=row, check_vma=False)(tokens, weights, experts, gate, up, down, gate_bias, up_bias)


def load_balancing_stats(router_logits: jax.Array, token_mask: jax.Array, cfg: ModelConfig):
  """Per-layer sums for the Switch/Qwen load-balancing loss: (tokens routed per expert [E], router prob
  mass per expert [E]) summed over the real tokens (token_mask [T] in {0, 1})."""
  probs = jax.nn.softmax(router_logits, axis=-1)
  _, top = jax.lax.top_k(probs, cfg.num_experts_per_tok)
  hits = jax.nn.one_hot(top, cfg.num_experts, dtype=jnp.float32).sum(axis=1)
  return (hits * token_mask[:, None]).sum(0), (probs * token_mask[:, None]).sum(0)
