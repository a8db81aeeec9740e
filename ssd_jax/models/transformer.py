"""The decoder-only transformer for Llama-3.x, Qwen3 and Qwen3-MoE, as pure functions over a param pytree.

Param tree (head-split layouts so that heads shard and einsums read plainly):

  Params.embed        [V, D]        (vocab, embed)
  Params.layers[i]    Layer: attn_norm [D], attn: Attention, mlp_norm [D], mlp: Mlp | Moe
    Attention.q       [D, H, Dh]    (embed, q_heads, head_dim)      .o [H, Dh, D]
    Attention.k / .v  [D, K, Dh]    (embed, kv_heads, head_dim)     .q_norm / .k_norm [Dh] (Qwen3)
    Mlp.gate / .up    [D, F]        (embed, mlp)                    .down [F, D]
    Moe.router        [D, E]        Moe.gate / .up [E, D, F] (experts, embed, moe_mlp); .down [E, F, D]
  Params.final_norm   [D]
  Params.lm_head      [D, V] or None when tied to embed

`param_specs(cfg)` describes every leaf once (shape, logical axes, initializer); init, shardings, the
abstract tree used by checkpoint import and orbax restore all derive from it.

Entry points: `forward` (full sequence: training, scoring) and `prefill` / `decode_step` over a `KVCache`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct
from jax.sharding import Mesh, NamedSharding

from ssd_jax.models import layers
from ssd_jax.models.config import ModelConfig
from ssd_jax.models.sharding import Logical, ShardingRules, constrain


@dataclasses.dataclass(frozen=True)
class ParamSpec:
  """What one param leaf is: its shape, logical axes and how to initialize it."""

  shape: tuple[int, ...]
  logical: Logical
  init: str = "normal"  # "normal" (std 0.02), "ones", "zeros"


@struct.dataclass
class Attention:
  q: Any
  k: Any
  v: Any
  o: Any
  q_norm: Any = None
  k_norm: Any = None
  q_bias: Any = None
  k_bias: Any = None
  v_bias: Any = None
  o_bias: Any = None


@struct.dataclass
class Mlp:
  gate: Any
  up: Any
  down: Any


@struct.dataclass
class Moe:
  router: Any
  gate: Any
  up: Any
  down: Any


@struct.dataclass
class Layer:
  attn_norm: Any
  attn: Attention
  mlp_norm: Any
  mlp: Any  # Mlp | Moe


@struct.dataclass
class Params:
  embed: Any
  layers: tuple[Layer, ...]
  final_norm: Any
  lm_head: Any = None


def param_specs(cfg: ModelConfig) -> Params:
  """The param tree with a ParamSpec at every leaf."""
  d, h, k, dh = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim

  def norm(n: int) -> ParamSpec:
    return ParamSpec((n,), ("norm",), "ones")

  def attention() -> Attention:
    bias = cfg.attention_bias
    return Attention(
        q=ParamSpec((d, h, dh), ("embed", "q_heads", "head_dim")),
        k=ParamSpec((d, k, dh), ("embed", "kv_heads", "head_dim")),
        v=ParamSpec((d, k, dh), ("embed", "kv_heads", "head_dim")),
        o=ParamSpec((h, dh, d), ("q_heads", "head_dim", "embed")),
        q_norm=norm(dh) if cfg.qk_norm else None,
        k_norm=norm(dh) if cfg.qk_norm else None,
        q_bias=ParamSpec((h, dh), ("q_heads", "head_dim"), "zeros") if bias else None,
        k_bias=ParamSpec((k, dh), ("kv_heads", "head_dim"), "zeros") if bias else None,
        v_bias=ParamSpec((k, dh), ("kv_heads", "head_dim"), "zeros") if bias else None,
        o_bias=ParamSpec((d,), ("norm",), "zeros") if bias else None,
    )

  def mlp(layer: int):
    if cfg.is_moe_layer(layer):
      e, f = cfg.num_experts, cfg.moe_intermediate_size
      return Moe(
          router=ParamSpec((d, e), ("embed", None)),
          gate=ParamSpec((e, d, f), ("experts", "embed", "moe_mlp")),
          up=ParamSpec((e, d, f), ("experts", "embed", "moe_mlp")),
          down=ParamSpec((e, f, d), ("experts", "moe_mlp", "embed")),
      )
    f = cfg.intermediate_size
    return Mlp(gate=ParamSpec((d, f), ("embed", "mlp")), up=ParamSpec((d, f), ("embed", "mlp")),
               down=ParamSpec((f, d), ("mlp", "embed")))

  return Params(
      embed=ParamSpec((cfg.vocab_size, d), ("vocab", "embed")),
      layers=tuple(Layer(norm(d), attention(), norm(d), mlp(i)) for i in range(cfg.num_layers)),
      final_norm=norm(d),
      lm_head=None if cfg.tie_word_embeddings else ParamSpec((d, cfg.vocab_size), ("embed", "vocab")),
  )


def _is_spec(x) -> bool:
  return isinstance(x, ParamSpec)


def map_specs(fn: Callable[[ParamSpec], Any], cfg: ModelConfig) -> Params:
  return jax.tree.map(fn, param_specs(cfg), is_leaf=_is_spec)


def param_shardings(cfg: ModelConfig, mesh: Mesh, rules: ShardingRules) -> Params:
  return map_specs(lambda s: rules.sharding(mesh, s.logical, s.shape), cfg)


def abstract_params(cfg: ModelConfig, mesh: Mesh | None = None, rules: ShardingRules | None = None) -> Params:
  """ShapeDtypeStructs (with shardings when a mesh is given): the target of import and restore."""
  def leaf(s: ParamSpec):
    sharding = rules.sharding(mesh, s.logical, s.shape) if mesh is not None else None
    return jax.ShapeDtypeStruct(s.shape, cfg.dtype, sharding=sharding)
  return map_specs(leaf, cfg)


@functools.partial(jax.jit, static_argnames=("shape", "dtype", "init", "sharding"))
def _init_leaf(key: jax.Array, *, shape: tuple[int, ...], dtype: str, init: str, sharding) -> jax.Array:
  if init == "ones":
    x = jnp.ones(shape, dtype)
  elif init == "zeros":
    x = jnp.zeros(shape, dtype)
  else:
    x = (0.02 * jax.random.normal(key, shape, jnp.float32)).astype(dtype)
  return x if sharding is None else jax.lax.with_sharding_constraint(x, sharding)


def init_params(cfg: ModelConfig, key: jax.Array, mesh: Mesh | None = None,
                rules: ShardingRules | None = None) -> Params:
  """Random params (std 0.02 normal matrices, unit norms), each created directly in its sharding.

  One small jitted initializer per distinct (shape, sharding): layers repeat shapes, so a deep model compiles a
  handful of programs instead of one program holding a random-number kernel per leaf (slow to compile).
  """
  specs = param_specs(cfg)
  leaves, treedef = jax.tree.flatten(specs, is_leaf=_is_spec)
  keys = jax.random.split(key, len(leaves))
  out = []
  for spec, k in zip(leaves, keys):
    sharding = rules.sharding(mesh, spec.logical, spec.shape) if mesh is not None else None
    out.append(_init_leaf(k, shape=spec.shape, dtype=cfg.param_dtype, init=spec.init, sharding=sharding))
  return jax.tree.unflatten(treedef, out)


# -- the decoder -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sharding:
  """Mesh and rules, bundled so that model functions take one optional static argument."""

  mesh: Mesh | None = None
  rules: ShardingRules | None = None

  def constrain(self, x: jax.Array, logical: Logical) -> jax.Array:
    return constrain(x, self.rules, self.mesh, logical)


NO_SHARDING = Sharding()


def _project_qkv(p: Attention, x: jax.Array, positions: jax.Array, cfg: ModelConfig, sh: Sharding):
  """x [B, S, D] -> q [B, S, H, Dh], k and v [B, K, S, Dh] (RoPE and QK-norm applied)."""
  dt = cfg.cdtype
  x = x.astype(dt)
  q = jnp.einsum("bsd,dhk->bshk", x, p.q.astype(dt))
  k = jnp.einsum("bsd,dhk->bshk", x, p.k.astype(dt))
  v = jnp.einsum("bsd,dhk->bhsk", x, p.v.astype(dt))
  if cfg.attention_bias:
    q = q + p.q_bias.astype(dt)
    k = k + p.k_bias.astype(dt)
    v = v + p.v_bias.astype(dt)[None, :, None, :]
  if cfg.qk_norm:
    q = layers.rms_norm(q, p.q_norm, cfg.rms_norm_eps).astype(dt)
    k = layers.rms_norm(k, p.k_norm, cfg.rms_norm_eps).astype(dt)
  cos, sin = layers.rope_cos_sin(positions, cfg)
  q = layers.apply_rope(q, cos, sin)
  k = layers.apply_rope(k, cos, sin).transpose(0, 2, 1, 3)
  q = sh.constrain(q, ("batch", "sequence", "act_heads", None))
  k = sh.constrain(k, ("batch", "act_kv_heads", "sequence", None))
  v = sh.constrain(v, ("batch", "act_kv_heads", "sequence", None))
  return q, k, v


def _attn_out(p: Attention, out: jax.Array, cfg: ModelConfig) -> jax.Array:
  y = jnp.einsum("bshk,hkd->bsd", out, p.o.astype(cfg.cdtype), preferred_element_type=jnp.float32)
  return y + p.o_bias.astype(jnp.float32) if cfg.attention_bias else y


def _ffn(layer: Layer, x: jax.Array, token_mask: jax.Array, cfg: ModelConfig, sh: Sharding):
  """Returns (y [B, S, D] f32, load-balancing stats or None)."""
  h = layers.rms_norm(x, layer.mlp_norm, cfg.rms_norm_eps)
  if isinstance(layer.mlp, Moe):
    m = layer.mlp
    y, router_logits = layers.moe(h, m.router, m.gate, m.up, m.down, cfg, sh.mesh, sh.rules)
    return y, layers.load_balancing_stats(router_logits, token_mask.reshape(-1), cfg)
  m = layer.mlp
  y = layers.swiglu(h, m.gate, m.up, m.down, cfg.cdtype).astype(jnp.float32)
  return y, None


def _moe_loss(stats: list, num_tokens: jax.Array, cfg: ModelConfig) -> jax.Array:
  """HF's load_balancing_loss_func over all sparse layers (0 for dense models)."""
  if not stats:
    return jnp.zeros((), jnp.float32)
  n = jnp.maximum(num_tokens, 1.0) * len(stats)
  hits = sum(s[0] for s in stats) / n
  probs = sum(s[1] for s in stats) / n
  return cfg.num_experts * jnp.sum(hits * probs)


def _block(layer: Layer, x: jax.Array, positions: jax.Array, mask: jax.Array | None, token_mask: jax.Array,
           cfg: ModelConfig, sh: Sharding, attention: str = "xla", lengths: jax.Array | None = None):
  """One decoder layer over a full sequence: x [B, S, D] f32 -> (x, k, v [B, K, S, Dh], balance stats)."""
  h = layers.rms_norm(x, layer.attn_norm, cfg.rms_norm_eps)
  q, k, v = _project_qkv(layer.attn, h, positions, cfg, sh)
  x = x + _attn_out(layer.attn, layers.attention(q, k, v, mask, impl=attention, lengths=lengths), cfg)
  y, stats = _ffn(layer, x, token_mask, cfg, sh)
  return sh.constrain(x + y, ("batch", "sequence", "act_embed")), k, v, stats


def _embed(params: Params, tokens: jax.Array, sh: Sharding) -> jax.Array:
  x = jnp.take(params.embed, tokens, axis=0).astype(jnp.float32)
  return sh.constrain(x, ("batch", "sequence", "act_embed"))


REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def hidden_states(params: Params, tokens: jax.Array, segment_ids: jax.Array, cfg: ModelConfig,
                  positions: jax.Array | None = None, sharding: Sharding = NO_SHARDING,
                  remat: str = "none", attention: str = "xla") -> tuple[jax.Array, jax.Array]:
  """Full-sequence decoder. tokens, segment_ids [B, S] (segment 0 = padding; packed documents have
  distinct ids and never attend across) -> (final-normed hidden [B, S, D] f32, MoE balance loss scalar).

  positions default to the offset inside each segment, which handles left/right padding and packing.
  attention "cudnn" (`layers.attention`) needs one right-padded sequence per row (no packing, no left padding).
  """
  if positions is None:
    positions = layers.positions_from_segments(segment_ids)
  sh = sharding
  fused = attention == "cudnn"
  mask = None if fused else layers.segment_mask(segment_ids)
  lengths = (segment_ids > 0).sum(axis=1).astype(jnp.int32) if fused else None
  token_mask = (segment_ids > 0).astype(jnp.float32)
  x = _embed(params, tokens, sh)

  def block(layer: Layer, x: jax.Array):
    x, _, _, stats = _block(layer, x, positions, mask, token_mask, cfg, sh, attention, lengths)
    return x, stats

  if REMAT_POLICIES.get(remat, 0) == 0:
    raise ValueError(f"unknown remat policy {remat!r}; expected one of {sorted(REMAT_POLICIES)}")
  if remat != "none":
    block = jax.checkpoint(block, policy=REMAT_POLICIES[remat])
  stats = []
  for layer in params.layers:
    x, s = block(layer, x)
    if s is not None:
      stats.append(s)
  h = layers.rms_norm(x, params.final_norm, cfg.rms_norm_eps)
  return h, _moe_loss(stats, token_mask.sum(), cfg)


def logits_from_hidden(params: Params, h: jax.Array, cfg: ModelConfig, sharding: Sharding = NO_SHARDING
                       ) -> jax.Array:
  """h [..., D] -> logits [..., V] float32."""
  dt = cfg.cdtype
  w = params.embed.T if params.lm_head is None else params.lm_head
  logits = jnp.einsum("...d,dv->...v", h.astype(dt), w.astype(dt), preferred_element_type=jnp.float32)
  if logits.ndim == 3:
    logits = sharding.constrain(logits, ("batch", "sequence", "act_vocab"))
  return logits


def forward(params: Params, tokens: jax.Array, segment_ids: jax.Array, cfg: ModelConfig,
            positions: jax.Array | None = None, sharding: Sharding = NO_SHARDING) -> jax.Array:
  """tokens, segment_ids [B, S] -> logits [B, S, V] float32."""
  h, _ = hidden_states(params, tokens, segment_ids, cfg, positions, sharding)
  return logits_from_hidden(params, h, cfg, sharding)


# -- KV cache, prefill and decode ------------------------------------------------------------------

CACHE_LOGICAL: Logical = ("batch", "act_kv_heads", "sequence", "head_dim")


@struct.dataclass
class KVCache:
  """Per-layer keys/values [B, K, T, Dh] plus per-row bookkeeping.

  Each row owns its slots: `valid[b, t]` says slot t holds a real token (pads never do), `length[b]` is
  the next slot to write and `next_pos[b]` the RoPE position of the next token. Rows advance
  independently, so a finished row can be refilled with a new prompt without touching the others.
  """

  k: tuple[jax.Array, ...]
  v: tuple[jax.Array, ...]
  valid: jax.Array  # [B, T] bool
  length: jax.Array  # [B] int32
  next_pos: jax.Array  # [B] int32

  @property
  def max_len(self) -> int:
    return self.valid.shape[1]


def cache_shardings(cfg: ModelConfig, batch: int, max_len: int, mesh: Mesh, rules: ShardingRules) -> KVCache:
  kv = rules.sharding(mesh, CACHE_LOGICAL, (batch, cfg.num_kv_heads, max_len, cfg.head_dim))
  row2 = rules.sharding(mesh, ("batch", None), (batch, max_len))
  row = NamedSharding(mesh, jax.sharding.PartitionSpec(row2.spec[0]))
  return KVCache(k=(kv,) * cfg.num_layers, v=(kv,) * cfg.num_layers, valid=row2, length=row, next_pos=row)


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype=None, sharding: Sharding = NO_SHARDING
               ) -> KVCache:
  """An empty cache; placed on the mesh by the cache rules when one is given."""
  dtype = dtype or cfg.cdtype

  def make():
    zeros = jnp.zeros((batch, cfg.num_kv_heads, max_len, cfg.head_dim), dtype)
    return KVCache(k=(zeros,) * cfg.num_layers, v=(zeros,) * cfg.num_layers,
                   valid=jnp.zeros((batch, max_len), bool), length=jnp.zeros((batch,), jnp.int32),
                   next_pos=jnp.zeros((batch,), jnp.int32))

  # Built under jit even without a mesh: each layer gets its own buffer (a Python-level `(zeros,) * L` would
  # alias them, and the engine donates the cache).
  if sharding.mesh is None:
    return jax.jit(make)()
  return jax.jit(make, out_shardings=cache_shardings(cfg, batch, max_len, sharding.mesh, sharding.rules))()


def prefill(params: Params, tokens: jax.Array, valid: jax.Array, cache: KVCache, cfg: ModelConfig,
            sharding: Sharding = NO_SHARDING) -> tuple[jax.Array, KVCache]:
  """Runs the prompts through the model and writes their keys/values into slots [0, P) of `cache`.

  tokens [B, P]; valid [B, P] bool marks real tokens (left or right padding, or both). The cache rows
  are overwritten from slot 0. Returns (logits of each row's last real token [B, V] f32, cache).
  """
  sh = sharding
  b, p = tokens.shape
  seg = valid.astype(jnp.int32)
  positions = jnp.maximum(jnp.cumsum(seg, axis=1) - 1, 0).astype(jnp.int32)
  mask = layers.segment_mask(seg)
  x = _embed(params, tokens, sh)
  token_mask = seg.astype(jnp.float32)
  ks, vs = [], []
  for i, layer in enumerate(params.layers):
    x, k, v, _ = _block(layer, x, positions, mask, token_mask, cfg, sh)
    ks.append(sh.constrain(jax.lax.dynamic_update_slice(cache.k[i], k.astype(cache.k[i].dtype), (0, 0, 0, 0)),
                           CACHE_LOGICAL))
    vs.append(sh.constrain(jax.lax.dynamic_update_slice(cache.v[i], v.astype(cache.v[i].dtype), (0, 0, 0, 0)),
                           CACHE_LOGICAL))
  idx = jnp.arange(p, dtype=jnp.int32)
  last = jnp.max(jnp.where(valid, idx[None, :], -1), axis=1)
  h_last = jnp.take_along_axis(x, jnp.maximum(last, 0)[:, None, None], axis=1)[:, 0]
  h_last = layers.rms_norm(h_last, params.final_norm, cfg.rms_norm_eps)
  slot_valid = jnp.zeros_like(cache.valid).at[:, :p].set(valid)
  new_cache = KVCache(k=tuple(ks), v=tuple(vs), valid=slot_valid, length=(last + 1).astype(jnp.int32),
                      next_pos=seg.sum(axis=1).astype(jnp.int32))
  return logits_from_hidden(params, h_last, cfg, sh), new_cache


def decode_step(params: Params, tokens: jax.Array, cache: KVCache, cfg: ModelConfig,
                sharding: Sharding = NO_SHARDING, attention: str = "blockwise") -> tuple[jax.Array, KVCache]:
  """One token per row: tokens [B] -> (logits [B, V] f32, cache advanced by one slot per row).

  `attention` picks `layers.decode_attention`'s implementation ("blockwise" or "dense"); both give the same values.
  """
  sh = sharding
  b = tokens.shape[0]
  rows = jnp.arange(b)
  slot = cache.length
  positions = cache.next_pos[:, None]
  valid = cache.valid.at[rows, slot].set(True)
  x = _embed(params, tokens[:, None], sh)
  token_mask = jnp.ones((b, 1), jnp.float32)
  ks, vs = [], []
  for i, layer in enumerate(params.layers):
    h = layers.rms_norm(x, layer.attn_norm, cfg.rms_norm_eps)
    q, k, v = _project_qkv(layer.attn, h, positions, cfg, sh)
    ck = cache.k[i].at[rows, :, slot].set(k[:, :, 0].astype(cache.k[i].dtype))
    cv = cache.v[i].at[rows, :, slot].set(v[:, :, 0].astype(cache.v[i].dtype))
    ck, cv = sh.constrain(ck, CACHE_LOGICAL), sh.constrain(cv, CACHE_LOGICAL)
    ks.append(ck)
    vs.append(cv)
    attn = layers.decode_attention(q, ck.astype(q.dtype), cv.astype(q.dtype), valid, slot, impl=attention)
    x = x + _attn_out(layer.attn, attn, cfg)
    y, _ = _ffn(layer, x, token_mask, cfg, sh)
    x = x + y
  h = layers.rms_norm(x[:, 0], params.final_norm, cfg.rms_norm_eps)
  new_cache = KVCache(k=tuple(ks), v=tuple(vs), valid=valid, length=slot + 1, next_pos=cache.next_pos + 1)
  return logits_from_hidden(params, h, cfg, sh), new_cache
