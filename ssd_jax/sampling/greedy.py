"""Greedy decoding in one jitted while_loop: prefill, then one decode step per token, stopping when every
row has produced a stop token or max_new_tokens are out (no host round trip per token)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import struct

from ssd_jax.models import transformer
from ssd_jax.models.config import ModelConfig


@struct.dataclass
class _LoopState:
  step: jax.Array  # scalar int32
  tokens: jax.Array  # [B, N] generated ids (pad after a row stops)
  done: jax.Array  # [B] bool
  next_token: jax.Array  # [B]
  cache: transformer.KVCache


@functools.partial(jax.jit, static_argnames=("cfg", "max_new_tokens", "pad_id", "sharding"))
def greedy_decode(params: transformer.Params, prompt: jax.Array, prompt_valid: jax.Array, stop_ids: jax.Array,
                  cfg: ModelConfig, max_new_tokens: int, pad_id: int = 0,
                  sharding: transformer.Sharding = transformer.NO_SHARDING) -> tuple[jax.Array, jax.Array]:
  """prompt, prompt_valid [B, P] (left or right padded); stop_ids [S] ->
  (generated ids [B, max_new_tokens] padded with pad_id after the stop token, lengths [B] including it)."""
  b, p = prompt.shape
  cache = transformer.init_cache(cfg, b, p + max_new_tokens, sharding=sharding)
  logits, cache = transformer.prefill(params, prompt, prompt_valid, cache, cfg, sharding)
  first = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  state = _LoopState(step=jnp.zeros((), jnp.int32), tokens=jnp.full((b, max_new_tokens), pad_id, jnp.int32),
                     done=jnp.zeros((b,), bool), next_token=first, cache=cache)

  def cond(s: _LoopState):
    return (s.step < max_new_tokens) & ~jnp.all(s.done)

  def body(s: _LoopState):
    tok = jnp.where(s.done, pad_id, s.next_token)
    tokens = s.tokens.at[:, s.step].set(tok)
    done = s.done | jnp.isin(s.next_token, stop_ids)
    logits, cache = transformer.decode_step(params, tok, s.cache, cfg, sharding)
    return _LoopState(step=s.step + 1, tokens=tokens, done=done,
                      next_token=jnp.argmax(logits, axis=-1).astype(jnp.int32), cache=cache)

  state = jax.lax.while_loop(cond, body, state)
  is_stop = jnp.isin(state.tokens, stop_ids)
  first_stop = jnp.where(is_stop.any(axis=1), jnp.argmax(is_stop, axis=1) + 1, state.step)
  return state.tokens, first_stop.astype(jnp.int32)
