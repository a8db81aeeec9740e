"""The decoder-only transformer for Llama-3.x, Qwen3, Qwen3-MoE and GPT-OSS, as pure functions over a param pytree.

Param tree (head-split layouts so that heads shard and einsums read plainly):

  Params.embed        [V, D]        (vocab, embed)
  Params.layers[i]    Layer: attn_norm [D], attn: Attention, mlp_norm [D], mlp: Mlp | Moe
    Attention.q       [D, H, Dh]    (embed, q_heads, head_dim)      .o [H, Dh, D]
    Attention.k / .v  [D, K, Dh]    (embed, kv_heads, head_dim)     .q_norm / .k_norm [Dh] (Qwen3)
    Attention.sinks   [H]           (q_heads) GPT-OSS's per-head sink logits
    Mlp.gate / .up    [D, F]        (embed, mlp)                    .down [F, D]
    Moe.router        [D, E]        Moe.gate / .up [E, D, F] (experts, embed, moe_mlp); .down [E, F, D]
    Moe.*_bias        GPT-OSS: router [E], gate / up [E, F] (experts, moe_mlp), down [E, D] (experts, embed)
  Params.final_norm   [D]
  Params.lm_head      [D, V] or None when tied to embed

`param_specs(cfg)` describes every leaf once (shape, logical axes, initializer); init, shardings, the
abstract tree used by checkpoint import and orbax restore all derive from it.

Entry points: `forward` (full sequence: training, scoring) and `extend` (prefill chunks and decode steps over a
`paged.PagedCache`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct
from jax.sharding import Mesh

from ssd_jax.models import fused_attention, layers, paged
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
  sinks: Any = None


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
  router_bias: Any = None
  gate_bias: Any = None
  up_bias: Any = None
  down_bias: Any = None


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
        sinks=ParamSpec((h,), ("q_heads",), "zeros") if cfg.attention_sinks else None,
    )

  def mlp(layer: int):
    if cfg.is_moe_layer(layer):
      e, f = cfg.num_experts, cfg.moe_intermediate_size
      bias = cfg.moe_bias
      return Moe(
          router=ParamSpec((d, e), ("embed", None)),
          gate=ParamSpec((e, d, f), ("experts", "embed", "moe_mlp")),
          up=ParamSpec((e, d, f), ("experts", "embed", "moe_mlp")),
          down=ParamSpec((e, f, d), ("experts", "moe_mlp", "embed")),
          router_bias=ParamSpec((e,), (None,), "zeros") if bias else None,
          gate_bias=ParamSpec((e, f), ("experts", "moe_mlp"), "zeros") if bias else None,
          up_bias=ParamSpec((e, f), ("experts", "moe_mlp"), "zeros") if bias else None,
          down_bias=ParamSpec((e, d), ("experts", "embed"), "zeros") if bias else None,
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
    y, router_logits = layers.moe(h, m.router, m.gate, m.up, m.down, cfg, sh.mesh, sh.rules,
                                  router_bias=m.router_bias, gate_bias=m.gate_bias, up_bias=m.up_bias,
                                  down_bias=m.down_bias)
    return y, layers.load_balancing_stats(router_logits, token_mask.reshape(-1), cfg)
  m = layer.mlp
  y = layers.swiglu(h, m.gate, m.up, m.down, cfg.cdtype).astype(jnp.float32)
  return y, None


def _moe_loss(stats: list, num_tokens: jax.Array, cfg: ModelConfig) -> jax.Array:
  """HF's load_balancing_loss_func over all sparse layers (0 for dense models). stats: (hits, probs) per scanned
  group of layers, each [G, E] (G layers)."""
  if not stats:
    return jnp.zeros((), jnp.float32)
  n = jnp.maximum(num_tokens, 1.0) * sum(s[0].shape[0] for s in stats)
  hits = sum(s[0].sum(0) for s in stats) / n
  probs = sum(s[1].sum(0) for s in stats) / n
  return cfg.num_experts * jnp.sum(hits * probs)


def _block(layer: Layer, x: jax.Array, positions: jax.Array, segment_ids: jax.Array, mask: jax.Array | None,
           token_mask: jax.Array, cfg: ModelConfig, sh: Sharding, attention: str = "xla", interpret: bool = False,
           window: int = 0):
  """One decoder layer over a full sequence: x [B, S, D] f32 -> (x, k, v [B, K, S, Dh], balance stats).

  `window`: the layer's sliding window (0 = full attention); `mask` ("xla") already applies it."""
  h = layers.rms_norm(x, layer.attn_norm, cfg.rms_norm_eps)
  q, k, v = _project_qkv(layer.attn, h, positions, cfg, sh)
  attn = fused_attention.attention(q, k, v, segment_ids, impl=attention, mask=mask, window=window,
                                   sinks=layer.attn.sinks, mesh=sh.mesh, rules=sh.rules, interpret=interpret)
  x = x + _attn_out(layer.attn, attn, cfg)
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


def layer_period(cfg: ModelConfig) -> int:
  """The smallest p dividing the depth such that layer i and layer i + p have the same kind (sliding window, dense
  or MoE feed-forward): 1 for Llama / Qwen3 / Qwen3-MoE, 2 for GPT-OSS (sliding and full attention alternate)."""
  kinds = [(cfg.window(i), cfg.is_moe_layer(i)) for i in range(cfg.num_layers)]
  return next(p for p in range(1, cfg.num_layers + 1)
              if cfg.num_layers % p == 0 and all(kinds[i] == kinds[i % p] for i in range(cfg.num_layers)))


def _stacked_layers(params: Params, cfg: ModelConfig, sh: Sharding) -> tuple[Layer, ...]:
  """The layers as `layer_period` trees whose leaves gain a leading [L / p] axis: tree j stacks layers j, j + p, ....

  Why stack: a Python loop of checkpointed layers leaves XLA free to keep every layer's temporaries alive at once
  (Qwen3-30B-A3B's SFT step at 65,536 tokens: 1.59 TiB on a v5p chip, ~34 GiB per layer); `lax.scan` over the
  stack runs one layer's body at a time by construction. The stack is a copy of the layer params made inside the
  step (the checkpoint layout stays one tree per layer, as HF and GGUF files and the paged decoder read it);
  it keeps the params' sharding, with the new axis unsplit."""
  p = layer_period(cfg)
  specs = param_specs(cfg).layers
  out = []
  for j in range(p):
    group = params.layers[j::p]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *group)
    out.append(jax.tree.map(lambda x, s: sh.constrain(x, (None, *s.logical)), stacked, specs[j], is_leaf=_is_spec))
  return tuple(out)


def hidden_states(params: Params, tokens: jax.Array, segment_ids: jax.Array, cfg: ModelConfig,
                  positions: jax.Array | None = None, sharding: Sharding = NO_SHARDING,
                  remat: str = "none", attention: str = "xla", interpret: bool = False
                  ) -> tuple[jax.Array, jax.Array]:
  """Full-sequence decoder. tokens, segment_ids [B, S] (segment 0 = padding; packed documents have
  distinct ids and never attend across) -> (final-normed hidden [B, S, D] f32, MoE balance loss scalar).

  positions default to the offset inside each segment, which handles left/right padding and packing.
  `attention` is `fused_attention.attention`'s implementation ("cudnn" needs one right-padded sequence per row);
  `interpret` runs its Pallas kernels in interpret mode (tests on CPU). The layers run under `lax.scan` over
  `layer_period` layers at a time, each step checkpointed with the `remat` policy.
  """
  if positions is None:
    positions = layers.positions_from_segments(segment_ids)
  if REMAT_POLICIES.get(remat, 0) == 0:
    raise ValueError(f"unknown remat policy {remat!r}; expected one of {sorted(REMAT_POLICIES)}")
  sh = sharding
  period = layer_period(cfg)
  windows = [cfg.window(j) for j in range(period)]
  # One mask per distinct window (GPT-OSS: full and sliding), shared by the layers that use it.
  masks = {w: layers.segment_mask(segment_ids, w) for w in set(windows)} if attention == "xla" else {}
  token_mask = (segment_ids > 0).astype(jnp.float32)
  x = _embed(params, tokens, sh)

  def step(x: jax.Array, group: tuple[Layer, ...]):
    stats = []
    for layer, window in zip(group, windows):
      x, _, _, s = _block(layer, x, positions, segment_ids, masks.get(window), token_mask, cfg, sh, attention,
                          interpret, window)
      stats.append(s)
    return x, tuple(stats)

  if remat != "none":
    step = jax.checkpoint(step, policy=REMAT_POLICIES[remat], prevent_cse=False)
  x, stats = jax.lax.scan(step, x, _stacked_layers(params, cfg, sh))
  h = layers.rms_norm(x, params.final_norm, cfg.rms_norm_eps)
  return h, _moe_loss([s for s in stats if s is not None], token_mask.sum(), cfg)


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


# -- paged KV cache: prefill chunks and decode steps ----------------------------------------------------


def _through_cache(params: Params, tokens: jax.Array, positions: jax.Array, token_mask: jax.Array,
                   cache: paged.PagedCache, cfg: ModelConfig, sh: Sharding, write: Callable, attend: Callable
                   ) -> tuple[jax.Array, paged.PagedCache]:
  """The decoder over new tokens [B, C] at `positions` against the paged cache -> (hidden [B, C, D] before the final
  norm, cache). Per layer i, write(i, pages, scales, new [B, C, K, Dh]) -> (pages, scales) stores the new keys or
  values, and attend(i, q, k, v, k pages, v pages, k scales, v scales, rows) -> (out [B, C, H, Dh], rows) attends,
  rows being (k, v) of `cache.rows` after the step (or None, passed through)."""
  x = _embed(params, tokens, sh)
  ks, vs, kss, vss, rks, rvs = [], [], [], [], [], []
  quantized = cache.k_scale is not None
  for i, layer in enumerate(params.layers):
    h = layers.rms_norm(x, layer.attn_norm, cfg.rms_norm_eps)
    q, k, v = _project_qkv(layer.attn, h, positions, cfg, sh)
    k_new, v_new = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, C, K, Dh]
    kp, ksc = write(i, cache.k[i], cache.k_scale[i] if quantized else None, k_new)
    vp, vsc = write(i, cache.v[i], cache.v_scale[i] if quantized else None, v_new)
    rows = None if cache.rows is None else (cache.rows.k[i], cache.rows.v[i])
    attn, rows = attend(i, q, k, v, kp, vp, ksc, vsc, rows)
    for out, item in zip((ks, vs, kss, vss), (kp, vp, ksc, vsc)):
      out.append(item)
    if rows is not None:
      rks.append(rows[0])
      rvs.append(rows[1])
    x = x + _attn_out(layer.attn, attn, cfg)
    y, _ = _ffn(layer, x, token_mask, cfg, sh)
    x = sh.constrain(x + y, ("batch", "sequence", "act_embed"))
  rows = None if cache.rows is None else paged.SlotRows(k=tuple(rks), v=tuple(rvs))
  return x, paged.PagedCache(k=tuple(ks), v=tuple(vs), k_scale=tuple(kss) if quantized else None,
                             v_scale=tuple(vss) if quantized else None, rows=rows)


def extend(params: Params, tokens: jax.Array, start: jax.Array, length: jax.Array, page_table: jax.Array,
           cache: paged.PagedCache, cfg: ModelConfig, sharding: Sharding = NO_SHARDING, *,
           attention: str = "reference", fresh: bool = False) -> tuple[jax.Array, paged.PagedCache]:
  """Runs new tokens through the model against the paged cache: a prefill chunk, or (C = 1) a decode step.

  tokens [B, C]: row b's first length[b] tokens are real (a row with length 0 is padding and writes nothing); they
  sit at positions start[b] + c. Their keys and values are written into the row's pages (`page_table` [B, pps], page
  ids local to the row's data shard) and each query attends causally over the row's first start[b] + length[b]
  cached tokens. `fresh` (static): every row starts at 0, so attention runs over the chunk itself (dense causal)
  instead of over the pages. `attention` is `paged.attention`'s implementation, or "rows" (decode steps only, C = 1,
  one device, float pages): row b is also decode slot b of `cache.rows`, which gets the new keys and values too and
  is what the step attends over (`paged.rows_attention`). Returns (logits of each row's last real token [B, V] f32,
  cache).
  """
  sh = sharding
  b, c = tokens.shape
  use_rows = attention == "rows" and not fresh
  if use_rows and (c != 1 or cache.rows is None or cache.k_scale is not None or cfg.attention_sinks
                   or any(cfg.window(i) for i in range(cfg.num_layers))):
    raise ValueError(f"attention 'rows' needs one token per row ({c} given), a cache with rows "
                     f"({cache.rows is not None}), float pages ({cache.k_scale is None}) and no sinks or sliding "
                     "windows (those layers run the paged reference)")
  positions = start[:, None] + jnp.arange(c, dtype=jnp.int32)[None, :]
  seg = (jnp.arange(c)[None, :] < length[:, None]).astype(jnp.int32)
  windows = [cfg.window(i) for i in range(cfg.num_layers)]
  masks = {w: layers.segment_mask(seg, w) for w in set(windows)} if fresh else {}
  kv_len = start + length

  def write(i, pages, scales, new):
    return paged.write_sharded(pages, scales, new, page_table, start, length, num_heads=cfg.num_heads, mesh=sh.mesh,
                               rules=sh.rules)

  def attend(i, q, k, v, kp, vp, ksc, vsc, rows):
    if fresh:
      return layers.attention(q, k, v, masks[windows[i]], params.layers[i].attn.sinks), rows
    if use_rows:
      rk, rv = (paged.write_rows(r, new.transpose(0, 2, 1, 3), start, length) for r, new in zip(rows, (k, v)))
      return paged.rows_attention(q, rk, rv, kv_len), (rk, rv)
    return paged.attention(q, kp, vp, page_table, start, kv_len, k_scale=ksc, v_scale=vsc, impl=attention,
                           mesh=sh.mesh, rules=sh.rules, window=windows[i], sinks=params.layers[i].attn.sinks), rows

  x, cache = _through_cache(params, tokens, positions, seg.astype(jnp.float32), cache, cfg, sh, write, attend)
  last = jnp.maximum(length - 1, 0)
  h_last = jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]
  h_last = layers.rms_norm(h_last, params.final_norm, cfg.rms_norm_eps)
  return logits_from_hidden(params, h_last, cfg, sh), cache


def prefill_packed(params: Params, tokens: jax.Array, segment_ids: jax.Array, positions: jax.Array,
                   page_ids: jax.Array, offsets: jax.Array, last: jax.Array, cache: paged.PagedCache,
                   cfg: ModelConfig) -> tuple[jax.Array, paged.PagedCache]:
  """Prefills whole prompts packed back to back into rows (one device): tokens, segment_ids, positions, page_ids,
  offsets [R, W]. Segment 0 is padding; token (r, c) is at `positions[r, c]` of its segment's prompt, its key and
  value go to page `page_ids[r, c]` (out of range: nowhere) at `offsets[r, c]`, and it attends causally within its
  segment. Returns (logits [S, V] f32 of the tokens at flat indices `last` [S] (r * W + c), cache).

  Why: prompts padded to a power-of-two width each waste ~40% of a prefill's FLOPs at mixed lengths; packed, the
  rows are nearly full, and the dense [W, W] attention per row is no larger than a padded prompt's."""
  windows = [cfg.window(i) for i in range(cfg.num_layers)]
  masks = {w: layers.segment_mask(segment_ids, w) for w in set(windows)}

  def write(i, pages, scales, new):
    return paged.write_tokens(pages, scales, new, page_ids, offsets)

  def attend(i, q, k, v, kp, vp, ksc, vsc, rows):
    return layers.attention(q, k, v, masks[windows[i]], params.layers[i].attn.sinks), rows

  token_mask = (segment_ids > 0).astype(jnp.float32)
  x, cache = _through_cache(params, tokens, positions, token_mask, cache, cfg, NO_SHARDING, write, attend)
  h_last = layers.rms_norm(x.reshape(-1, x.shape[-1])[last], params.final_norm, cfg.rms_norm_eps)
  return logits_from_hidden(params, h_last, cfg), cache
