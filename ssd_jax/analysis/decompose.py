"""The SSD loss decomposition (Eq. 10-15) and the entropy decomposition (Eq. 30-31) of the paper's App. B.

Notation (ssd_paper.md §6.2): at one context s, p0 is the frozen teacher, p_θ the student, T = T_train and
S_s the retained support of the training-time truncation (Eq. 6). The truncated teacher is the target
q_s = Temper_T^{S_s}[p0] (Eq. 7), taken from the sampler's exact operator (`truncated_probs`: temperature,
top-k with ties, top-p on the renormalised survivors), so the decomposition is of the loss SSD really trains.

S_s is the operator's kept set (`kept_set`), which can be larger than supp(q_s): a kept token whose tempered
probability underflows float32 has q_s = 0 but is still in S_s (only with top-p off, e.g. top-k 20 at T 0.01:
with top-p on, a token of no representable mass is never kept). The split of the loss depends on S_s (the
student's mass on such a token counts as kept); the identities hold for any S_s that contains supp(q_s).
Temperatures below the sampler's greedy threshold (1e-5) decode greedily: q_s is one-hot and S_s is that one
token, every T-dependent term is 0, and it is computed with T = 1 to avoid dividing by zero.

The public functions take logits [..., V] with any leading (batch) dims and return arrays of the leading
shape. They are pure jnp and jitted (one compile per shape, inlined under an outer jit); the truncation
parameters may be Python numbers or arrays that broadcast to the leading shape, all traced, so new values do
not recompile. Entropies are in nats.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ssd_jax.sampling.sampler import GREEDY_BELOW, truncated_probs

_NEG_INF = float("-inf")


def _row_param(a: jax.Array | float | int, lead: tuple[int, ...], dtype) -> jax.Array:
  """A scalar or [...]-broadcastable truncation parameter -> [prod(lead)] (the sampler's row layout)."""
  return jnp.broadcast_to(jnp.asarray(a, dtype), lead).reshape(-1)


@jax.jit
def truncated_teacher(logits: jax.Array, *, temperature: jax.Array | float, top_k: jax.Array | int = 0,
                      top_p: jax.Array | float = 1.0) -> jax.Array:
  """logits [..., V] -> q_s [..., V] float32: the sampler's truncated tempered distribution (Eq. 7)."""
  lead, v = logits.shape[:-1], logits.shape[-1]
  q = truncated_probs(jnp.reshape(logits, (-1, v)), _row_param(temperature, lead, jnp.float32),
                      _row_param(top_k, lead, jnp.int32), _row_param(top_p, lead, jnp.float32))
  return q.reshape(logits.shape)


@jax.jit
def kept_set(logits: jax.Array, *, temperature: jax.Array | float, top_k: jax.Array | int = 0,
             top_p: jax.Array | float = 1.0) -> tuple[jax.Array, jax.Array]:
  """logits [..., V] -> (q_s [..., V] float32, S_s [..., V] bool): the truncated distribution and its kept set.

  S_s = supp(q_s), plus, when top-p is off and the row is not greedy, the whole top-k set (ties included; all
  of V when top-k is off): tokens the operator keeps whose tempered probability underflows to 0. Those are
  found on the tempered logits z = logits * (1 / T), rounded as the sampler rounds them (one sort per row).
  """
  q = truncated_teacher(logits, temperature=temperature, top_k=top_k, top_p=top_p)
  lead, v = q.shape[:-1], q.shape[-1]
  t = _row_param(temperature, lead, jnp.float32).reshape(lead)
  k = _row_param(top_k, lead, jnp.int32).reshape(lead)
  p = _row_param(top_p, lead, jnp.float32).reshape(lead)
  z = jnp.asarray(logits, jnp.float32) * (1.0 / jnp.where(t < GREEDY_BELOW, 1.0, t))[..., None]
  kth = jnp.take_along_axis(jnp.sort(z, axis=-1), jnp.clip(v - k, 0, v - 1)[..., None], axis=-1)  # k-th largest
  top_k_set = ((k <= 0) | (k >= v))[..., None] | (z >= kth)
  untruncated = ((t >= GREEDY_BELOW) & (p >= 1.0))[..., None]
  return q, (q > 0) | (untruncated & top_k_set)


def _masked_lse(z: jax.Array, mask: jax.Array) -> jax.Array:
  """log sum_{mask} exp(z) over the last axis; -inf on an empty mask."""
  return jax.nn.logsumexp(jnp.where(mask, z, _NEG_INF), axis=-1)


def _xlogy_sum(p: jax.Array, log_p: jax.Array) -> jax.Array:
  """sum p log_p over the last axis, with 0 log 0 = 0 (log_p may be -inf where p = 0)."""
  return jnp.sum(jnp.where(p > 0, p * jnp.where(p > 0, log_p, 0.0), 0.0), axis=-1)


def _restrict(z: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """softmax(z) restricted to `mask` and renormalised: (log mass of the mask [...], log probs [..., V]).

  Off the mask (and everywhere when the mask is empty) the log probs are -inf.
  """
  lse = _masked_lse(z, mask)
  return lse, jnp.where(mask, z - jnp.where(mask, lse[..., None], 0.0), _NEG_INF)


def _entropy(log_p: jax.Array) -> jax.Array:
  """Shannon entropy [...] of log probs [..., V] (-inf entries carry no mass; all -inf gives 0)."""
  return -_xlogy_sum(jnp.exp(log_p), log_p)


@jax.jit
def ssd_loss_terms(teacher_logits: jax.Array, student_logits: jax.Array, *, temperature: jax.Array | float,
                   top_k: jax.Array | int = 0, top_p: jax.Array | float = 1.0) -> dict[str, jax.Array]:
  """The per-context SSD loss L_s = CE(q_s, p_θ) and its four terms (Eq. 15), all [...].

  L_s = support_compression + reshaping + alignment + constant, where
    support_compression = -log KeptMass_θ(s), KeptMass_θ(s) = sum_{v in S_s} p_θ(v|s)        (Eq. 10, 12)
    reshaping           = (1 - T) H_{1/T}(p_θ(.|s, S_s)) = -T log sum_{v in S_s} p_θ(v|s, S_s)^{1/T}   (Eq. 16)
    alignment           = T KL(q_s || Temper_T[p_θ(.|s, S_s)])
    constant            = T H(q_s)   (independent of θ; with reshaping + alignment it makes CE(q_s, p_θ(.|s, S_s)))
  and p_θ(.|s, S_s) is the student renormalised on S_s (Eq. 11). Only the first term sees the student's mass
  outside S_s; it is 0 iff the student puts nothing there, which finite logits never do (Eq. 13).

  Args:
    teacher_logits: [..., V] logits of p0 (untempered).
    student_logits: [..., V] logits of p_θ (untempered), same shape.
    temperature, top_k, top_p: the training-time truncation (T_train, top-k, top-p), as in `sampler.sample`.

  Returns:
    dict of [...] float32 arrays: "loss" (CE(q_s, p_θ), computed directly), "support_compression",
    "reshaping", "alignment", "constant" (the four terms of Eq. 15, which add up to "loss"), and
    "kept_mass" (KeptMass_θ) and "conditional_ce" (CE(q_s, p_θ(.|s, S_s)), the second term of Eq. 12).
  """
  q, support = kept_set(teacher_logits, temperature=temperature, top_k=top_k, top_p=top_p)
  z = jnp.asarray(student_logits, jnp.float32)
  t_raw = jnp.broadcast_to(jnp.asarray(temperature, jnp.float32), z.shape[:-1])
  t = jnp.where(t_raw < GREEDY_BELOW, 1.0, t_raw)  # greedy: singleton support, every T-term is 0 for any T

  lse_all = jax.nn.logsumexp(z, axis=-1)
  lse_s, log_cond = _restrict(z, support)  # log p_θ(v|s, S_s)
  log_z = _masked_lse(log_cond / t[..., None], support)  # log sum_S p_θ(.|s, S_s)^{1/T}
  log_tempered = log_cond / t[..., None] - log_z[..., None]  # log Temper_T[p_θ(.|s, S_s)]
  log_q = jnp.log(jnp.where(q > 0, q, 1.0))
  neg_entropy_q = _xlogy_sum(q, log_q)

  kept_log = lse_s - lse_all
  reshaping = -t * log_z
  alignment = t * (neg_entropy_q - _xlogy_sum(q, log_tempered))
  return {
      "loss": -_xlogy_sum(q, z - lse_all[..., None]),
      "support_compression": -kept_log,
      "reshaping": reshaping,
      "alignment": alignment,
      "constant": -t * neg_entropy_q,
      "kept_mass": jnp.exp(kept_log),
      "conditional_ce": -_xlogy_sum(q, log_cond),
  }


@jax.jit
def entropy_terms(logits: jax.Array, *, temperature: jax.Array | float, top_k: jax.Array | int = 0,
                  top_p: jax.Array | float = 1.0, support_logits: jax.Array | None = None) -> dict[str, jax.Array]:
  """H(p) split at a truncation support S (Eq. 30-31): entropy = gate + head + tail, all [...].

  With K = sum_{v in S} p(v) (the kept mass), p(.|S) = p restricted to S and renormalised (the head) and
  u = p restricted to the complement of S and renormalised (the tail, Eq. 30):
    gate = h2(K) = -K log K - (1 - K) log(1 - K): the uncertainty of whether a draw from p lands in S at all;
    head = K H(p(.|S)): the uncertainty among the kept tokens, weighted by how often a draw is kept;
    tail = (1 - K) H(u): the uncertainty among the discarded tokens, weighted by how often a draw is discarded.
  SSD's signature (App. B.4) is lower gate and tail with the head kept or raised at forks.

  p is softmax(logits), untempered (pass logits / T_eval to decompose a tempered distribution). S is the kept
  set of the sampler's truncation (temperature, top_k, top_p) applied to `support_logits` -- by default to
  `logits` itself, i.e. a model's own support; pass the teacher's logits (same shape) to split a student at the
  teacher's S_s as in the paper. When S is everything, K = 1 and gate = tail = 0.

  Returns:
    dict of [...] float32 arrays: "entropy" (H(p), computed directly), "gate", "head", "tail" (adding up
    to "entropy"), "kept_mass" (K), "head_entropy" (H(p(.|S))), "tail_entropy" (H(u); 0 when K = 1).
  """
  z = jnp.asarray(logits, jnp.float32)
  ref = z if support_logits is None else support_logits
  _, support = kept_set(ref, temperature=temperature, top_k=top_k, top_p=top_p)

  lse_all = jax.nn.logsumexp(z, axis=-1)
  lse_in, log_head = _restrict(z, support)
  lse_out, log_tail = _restrict(z, ~support)
  gate_log = jnp.stack([lse_in - lse_all, lse_out - lse_all], axis=-1)  # log K, log(1 - K): no cancellation
  k, one_minus_k = jnp.exp(gate_log[..., 0]), jnp.exp(gate_log[..., 1])
  head_entropy, tail_entropy = _entropy(log_head), _entropy(log_tail)
  return {
      "entropy": _entropy(z - lse_all[..., None]),
      "gate": _entropy(gate_log),
      "head": k * head_entropy,
      "tail": one_minus_k * tail_entropy,
      "kept_mass": k,
      "head_entropy": head_entropy,
      "tail_entropy": tail_entropy,
  }
