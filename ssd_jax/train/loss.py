"""Token-level cross-entropy from hidden states, computed in sequence chunks.

A 151k-vocab model at [B, S] = [1, 65536] would need 40 GB for float32 logits alone, and autodiff would keep
them for the backward pass. `chunked_nll` scans over sequence chunks of `chunk_size` tokens; each chunk's
logits [B, c, V] live only inside a rematerialised scan body, so the peak is one chunk's logits in the
forward and again in the backward, never [B, S, V].

Losses are returned as sums with their weight totals, never as means: gradient accumulation divides the summed
loss of all microbatches by the target tokens of the whole batch (token-weighted), not a mean of means.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ssd_jax.models.config import ModelConfig
from ssd_jax.models.transformer import NO_SHARDING, Params, Sharding, logits_from_hidden


def chunked_nll(params: Params, h: jax.Array, targets: jax.Array, weights: jax.Array, cfg: ModelConfig,
                sharding: Sharding = NO_SHARDING, chunk_size: int = 512) -> tuple[jax.Array, jax.Array]:
  """Weighted next-token negative log-likelihood.

  Args:
    params: Model params (the output projection is read from them).
    h: [B, S, D] final-normed hidden states.
    targets: [B, S] int32 target ids (the token after each position).
    weights: [B, S] float32 loss weights (0 on prompt, padding and anything after end-of-turn).
    cfg: Model config.
    sharding: Mesh and rules for the logits constraint.
    chunk_size: Sequence positions per chunk; S is padded up to a multiple of it.

  Returns:
    (sum over positions of weight * nll, sum of weights), both float32 scalars.
  """
  b, s, d = h.shape
  c = min(chunk_size, s)
  n = -(-s // c)
  pad = n * c - s
  if pad:
    h = jnp.pad(h, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))
    weights = jnp.pad(weights, ((0, 0), (0, pad)))
  hs = h.reshape(b, n, c, d).swapaxes(0, 1)  # [n, B, c, D]
  ts = targets.reshape(b, n, c).swapaxes(0, 1)
  ws = weights.reshape(b, n, c).swapaxes(0, 1).astype(jnp.float32)

  @jax.checkpoint
  def chunk(hc, tc, wc):
    logits = logits_from_hidden(params, hc, cfg, sharding)  # [B, c, V] f32
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, tc[..., None], axis=-1)[..., 0]
    return jnp.sum((lse - picked) * wc)

  if n == 1:
    nll = chunk(hs[0], ts[0], ws[0])
  else:
    nll = jnp.sum(jax.lax.map(lambda xs: chunk(*xs), (hs, ts, ws)))
  return nll, jnp.sum(ws)
