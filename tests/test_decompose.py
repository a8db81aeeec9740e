"""The SSD loss decomposition (Eq. 10-15) and the entropy decomposition (Eq. 30-31) against float64 NumPy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssd_jax.analysis.decompose import entropy_terms, ssd_loss_terms

V = 50
SHAPE = (4, 6, V)  # two leading dims: the functions must keep them
ATOL = 1e-5
LOSS_TERMS = ("support_compression", "reshaping", "alignment", "constant")

# (temperature, top_k, top_p)
CONFIGS = {
    "none": (1.0, 0, 1.0),
    "temperature only": (0.7, 0, 1.0),
    "top-k only": (1.3, 7, 1.0),
    "top-p only": (0.8, 0, 0.85),
    "both": (1.6, 20, 0.8),
    "both, sharp": (0.5, 10, 0.95),
}


def _softmax(z: np.ndarray) -> np.ndarray:
  e = np.exp(z - z.max())
  return e / e.sum()


def truncated(logits: np.ndarray, temperature: float, top_k: int, top_p: float) -> tuple[np.ndarray, np.ndarray]:
  """(q_s, S_s) for one row from the definition (ssd_paper.md §2.1), float64.

  S_s is the kept set itself, not supp(q_s): at a tiny T a kept token's mass underflows even in float64.
  """
  if temperature < 1e-5:
    return np.eye(logits.size)[np.argmax(logits)], np.arange(logits.size) == np.argmax(logits)
  z = logits / temperature
  kept = np.ones(z.size, bool)
  if 0 < top_k < z.size:
    kept = z >= np.sort(z)[::-1][top_k - 1]
  if top_p < 1:
    q = _softmax(np.where(kept, z, -np.inf))
    desc = np.sort(q)[::-1]
    above = (np.cumsum(desc) - desc)[np.searchsorted(-desc, -q, side="left")]
    kept &= (above < top_p) | (q == q.max())
  return _softmax(np.where(kept, z, -np.inf)), kept


def _lse(a: np.ndarray) -> float:
  return float(a.max() + np.log(np.sum(np.exp(a - a.max()))))


def reference_terms(teacher: np.ndarray, student: np.ndarray, temperature: float, top_k: int, top_p: float
                    ) -> dict[str, float]:
  """One context's Eq. 15 terms straight from their formulas, float64 (log space: T may be tiny)."""
  q, s = truncated(teacher, temperature, top_k, top_p)
  log_p = student - _lse(student)
  t = temperature if temperature >= 1e-5 else 1.0
  log_cond = log_p[s] - _lse(log_p[s])  # p_θ(.|s, S_s) on S_s
  log_tempered = log_cond / t - _lse(log_cond / t)
  q_s = q[s]
  log_q = np.log(np.where(q_s > 0, q_s, 1.0))
  return {
      "loss": -np.sum(q_s * log_p[s]),
      "support_compression": -_lse(log_p[s]),
      "reshaping": -t * _lse(log_cond / t),
      "alignment": t * np.sum(q_s * (log_q - log_tempered)),
      "constant": -t * np.sum(q_s * log_q),
  }


def reference_entropy(logits: np.ndarray, support: np.ndarray) -> dict[str, float]:
  p = _softmax(logits)
  h = lambda x: -np.sum(x[x > 0] * np.log(x[x > 0]))
  k = p[support].sum()
  tail = (1 - k) * h(np.where(~support, p, 0) / (1 - k)) if k < 1 else 0.0
  return {"entropy": h(p), "gate": h(np.array([k, 1 - k])), "head": k * h(np.where(support, p, 0) / k),
          "tail": tail}


@pytest.fixture(scope="module")
def logits() -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(0)
  teacher = rng.normal(size=SHAPE) * rng.uniform(0.5, 4.0, size=SHAPE[:-1] + (1,))  # peaked and flat rows
  student = teacher + rng.normal(size=SHAPE)  # near the teacher, as a student is
  return teacher.astype(np.float32), student.astype(np.float32)


def _rows(a: np.ndarray) -> np.ndarray:
  return a.reshape(-1, V).astype(np.float64)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_loss_terms_add_up_and_match_the_formulas(logits, name):
  teacher, student = logits
  t, k, p = CONFIGS[name]
  got = {key: np.asarray(val) for key, val in ssd_loss_terms(teacher, student, temperature=t, top_k=k,
                                                              top_p=p).items()}
  assert all(val.shape == SHAPE[:-1] for val in got.values())
  total = sum(got[key] for key in LOSS_TERMS)
  np.testing.assert_allclose(total, got["loss"], atol=ATOL, rtol=1e-6)
  np.testing.assert_allclose(got["support_compression"] + got["conditional_ce"], got["loss"], atol=ATOL, rtol=1e-6)
  want = [reference_terms(a, b, t, k, p) for a, b in zip(_rows(teacher), _rows(student))]
  for key in ("loss",) + LOSS_TERMS:
    np.testing.assert_allclose(got[key].reshape(-1), [w[key] for w in want], atol=ATOL, rtol=1e-5, err_msg=key)
  assert np.all(got["alignment"] > -ATOL) and np.all(got["support_compression"] > -ATOL)
  if k == 0 and p >= 1:  # full support: no compression, and Eq. 14's three terms
    np.testing.assert_allclose(got["kept_mass"], 1.0, atol=1e-6)
  if t == 1.0:  # the free energy vanishes at T = 1 (Eq. 16)
    np.testing.assert_allclose(got["reshaping"], 0.0, atol=ATOL)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_entropy_terms_add_up(logits, name):
  teacher, student = logits
  t, k, p = CONFIGS[name]
  got = {key: np.asarray(val) for key, val in entropy_terms(student, temperature=t, top_k=k, top_p=p,
                                                             support_logits=teacher).items()}
  np.testing.assert_allclose(got["gate"] + got["head"] + got["tail"], got["entropy"], atol=ATOL, rtol=1e-6)
  supports = [truncated(a, t, k, p)[1] for a in _rows(teacher)]
  want = [reference_entropy(b, s) for b, s in zip(_rows(student), supports)]
  for key in ("entropy", "gate", "head", "tail"):
    np.testing.assert_allclose(got[key].reshape(-1), [w[key] for w in want], atol=ATOL, rtol=1e-5, err_msg=key)
  own = entropy_terms(student, temperature=t, top_k=k, top_p=p)  # a model split at its own support
  np.testing.assert_allclose(own["gate"] + own["head"] + own["tail"], own["entropy"], atol=ATOL, rtol=1e-6)


@pytest.mark.parametrize("temperature", [0.0, 1e-6])
def test_greedy(logits, temperature):
  """q_s is one-hot at the teacher's argmax: the loss is all support compression, the rest is 0."""
  teacher, student = logits
  got = ssd_loss_terms(teacher, student, temperature=temperature, top_k=20, top_p=0.8)
  best = np.argmax(teacher, axis=-1)[..., None]
  log_p = np.asarray(jax.nn.log_softmax(student, axis=-1))
  np.testing.assert_allclose(got["loss"], -np.take_along_axis(log_p, best, -1)[..., 0], atol=ATOL, rtol=1e-6)
  np.testing.assert_allclose(got["support_compression"], got["loss"], atol=ATOL, rtol=1e-6)
  for key in ("reshaping", "alignment", "constant"):
    np.testing.assert_allclose(got[key], 0.0, atol=ATOL, err_msg=key)
  ent = entropy_terms(student, temperature=temperature, top_k=20, top_p=0.8, support_logits=teacher)
  np.testing.assert_allclose(ent["kept_mass"], np.exp(-np.asarray(got["loss"])), rtol=1e-5)
  np.testing.assert_allclose(ent["head"], 0.0, atol=ATOL)
  np.testing.assert_allclose(ent["gate"] + ent["tail"], ent["entropy"], atol=ATOL, rtol=1e-6)


@pytest.mark.parametrize("temperature", [1e-4, 1e-2])
def test_very_low_temperature(logits, temperature):
  """Tempered logits in the thousands: q_s is near one-hot but not greedy; nothing overflows."""
  teacher, student = logits
  got = {key: np.asarray(val) for key, val in ssd_loss_terms(teacher, student, temperature=temperature, top_k=20,
                                                              top_p=1.0).items()}
  assert all(np.all(np.isfinite(val)) for val in got.values())
  np.testing.assert_allclose(sum(got[key] for key in LOSS_TERMS), got["loss"], atol=ATOL, rtol=1e-6)
  want = [reference_terms(a, b, temperature, 20, 1.0) for a, b in zip(_rows(teacher), _rows(student))]
  for key in ("loss",) + LOSS_TERMS:
    np.testing.assert_allclose(got[key].reshape(-1), [w[key] for w in want], atol=ATOL, rtol=1e-5, err_msg=key)
  ent = entropy_terms(student, temperature=temperature, top_k=20, top_p=1.0, support_logits=teacher)
  np.testing.assert_allclose(ent["gate"] + ent["head"] + ent["tail"], ent["entropy"], atol=ATOL, rtol=1e-6)


@pytest.mark.parametrize("top_k", [V, V + 10])
def test_top_k_at_or_above_vocab_is_off(logits, top_k):
  teacher, student = logits
  off = ssd_loss_terms(teacher, student, temperature=1.2, top_k=0, top_p=0.9)
  got = ssd_loss_terms(teacher, student, temperature=1.2, top_k=top_k, top_p=0.9)
  for key in off:
    np.testing.assert_allclose(got[key], off[key], atol=1e-6, err_msg=key)
  ent = entropy_terms(student, temperature=1.2, top_k=top_k, top_p=1.0)
  np.testing.assert_allclose(ent["kept_mass"], 1.0, atol=1e-6)
  np.testing.assert_allclose(ent["gate"], 0.0, atol=ATOL)
  np.testing.assert_allclose(ent["tail"], 0.0, atol=ATOL)


def test_jit_per_context_truncation_and_the_logit_gradient(logits):
  """Traced per-context parameters under jit; the loss's logit gradient is Eq. 17's."""
  teacher, student = logits
  rng = np.random.default_rng(1)
  t = rng.uniform(0.5, 2.0, SHAPE[:-1]).astype(np.float32)
  k = rng.integers(0, 30, SHAPE[:-1]).astype(np.int32)
  p = rng.uniform(0.6, 1.0, SHAPE[:-1]).astype(np.float32)

  @jax.jit
  def terms(teacher, student, t, k, p):
    return ssd_loss_terms(teacher, student, temperature=t, top_k=k, top_p=p)

  got = terms(teacher, student, t, k, p)
  for idx in [(0, 0), (1, 3), (3, 5)]:
    want = reference_terms(teacher[idx].astype(np.float64), student[idx].astype(np.float64), float(t[idx]),
                           int(k[idx]), float(p[idx]))
    for key in ("loss",) + LOSS_TERMS:
      np.testing.assert_allclose(got[key][idx], want[key], atol=ATOL, rtol=1e-5, err_msg=f"{key} at {idx}")

  loss = lambda s: jnp.sum(ssd_loss_terms(teacher, s, temperature=t, top_k=k, top_p=p)["loss"])
  grad = np.asarray(jax.grad(loss)(jnp.asarray(student)))
  q, s = (np.stack(a) for a in zip(*[truncated(a, float(ti), int(ki), float(pi)) for a, ti, ki, pi in
                                     zip(_rows(teacher), t.reshape(-1), k.reshape(-1), p.reshape(-1))]))
  prob = np.stack([_softmax(b) for b in _rows(student)])
  kept = np.sum(np.where(s, prob, 0), -1, keepdims=True)
  cond = np.where(s, prob, 0) / kept
  eq17 = np.where(s, -(1 - kept) * cond + (cond - q), prob)  # support transfer + fitting; tail push-down
  np.testing.assert_allclose(grad.reshape(-1, V), eq17, atol=ATOL)
