"""The whole-vocabulary draw (sampling/full_vocab.py): its nucleus check against the float64 NumPy reference,
its draws against the reference distribution, and tokens that do not depend on how its passes are laid out."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssd_jax.sampling import full_vocab, row_keys, sample
from ssd_jax.sampling.full_vocab import VocabAxes
from test_sampler import ROWS, _tv, reference


def _draw_rows(logits: np.ndarray, temperature, top_k, top_p, min_p) -> tuple[full_vocab.Rows, jax.Array]:
  """The sampler's own row inputs for the whole-vocabulary draw (floor from min-p and top-k), and z [B, V]."""
  x = jnp.asarray(logits, jnp.float32)
  b, v = x.shape
  inv_t = 1.0 / jnp.asarray(temperature, jnp.float32)
  z = x * inv_t[:, None]
  zmax = jnp.max(z, axis=-1)
  min_p = jnp.asarray(min_p, jnp.float32)
  t_min_p = jnp.where(min_p > 0, zmax + jnp.log(jnp.where(min_p > 0, min_p, 1.0)), -jnp.inf)
  top_k = np.asarray(top_k)
  kth = jnp.take_along_axis(-jnp.sort(-z, axis=-1), jnp.clip(jnp.asarray(top_k) - 1, 0, v - 1)[:, None], axis=1)[:, 0]
  t_k = jnp.where((top_k > 0) & (top_k < v), kth, -jnp.inf)
  rows = full_vocab.Rows(inv_t=inv_t, zmax=zmax, floor=jnp.maximum(t_min_p, t_k),
                         top_p=jnp.asarray(top_p, jnp.float32), active=jnp.ones((b,), bool))
  return rows, z


@pytest.mark.parametrize("ties", [False, True])
def test_nucleus_check_keeps_the_reference_set(ties):
  """Token i is kept iff it survives min-p/top-k and D(z_i) < 0 (or it is the maximum): for every token of
  every sampled row with top-p on, that is exactly the reference's kept set."""
  params = [r for r in ROWS if r[0] >= 1e-5 and r[2] < 1.0] + [(1.0, 0, 0.95, 0.0), (1.6, 0, 0.95, 0.0)]
  rng = np.random.default_rng(11)
  logits = rng.standard_normal((len(params), 1000)) * 2.5
  logits = (np.round(logits) if ties else logits).astype(np.float32)
  t, k, p, m = (np.array(c) for c in zip(*params))
  rows, z = _draw_rows(logits, t, k, p, m)
  excess = np.asarray(full_vocab._excess(jnp.asarray(logits), rows, z, VocabAxes(vocab=1000)))  # records: all
  z = np.asarray(z)
  kept = (z >= np.asarray(rows.floor)[:, None]) & ((excess < 0) | (z >= np.asarray(rows.zmax)[:, None]))
  for b, row in enumerate(params):
    np.testing.assert_array_equal(kept[b], reference(logits[b], *row) > 0, err_msg=f"row {b} params {row}")


@pytest.mark.parametrize("params", [
    (1.0, 0, 1.0, 0.0),  # no truncation
    (1.6, 0, 0.95, 0.0),  # top-p only: records checked against the survivors' mass
    (0.7, 0, 0.3, 0.0),  # a narrow nucleus: several records per draw
    (1.0, 0, 1.0, 0.05),  # min-p only
    (1.2, 30, 0.9, 0.0),  # top-k beyond the window (bisection floor) and top-p
])
def test_draws_follow_the_reference(params):
  n, v = 40_000, 96  # 3 blocks of 32 tokens
  logits = (np.random.default_rng(5).standard_normal((1, v)) * np.linspace(3.0, 0.5, v)).astype(np.float32)
  probs = reference(logits[0], *params)
  tokens = np.asarray(sample(jax.random.key(7), np.broadcast_to(logits, (n, v)), *params, k_max=4))
  assert probs[tokens].min() > 0
  expected = 0.5 * np.sum(np.sqrt(2 * probs * (1 - probs) / (np.pi * n)))  # E|p_hat - p| summed, halved
  tv = _tv(tokens, probs)
  assert tv < 1.5 * expected + 0.002, f"TV {tv:.4f}, sampling noise alone {expected:.4f}, {(probs > 0).sum()} kept"


def test_ties_spilling_out_of_the_window():
  """30 tokens tie at the top-k (k = 20) value, more than the window of 8: all of them survive, equally likely."""
  n, v = 20_000, 512
  row = np.random.default_rng(3).standard_normal(v).astype(np.float32)
  row[100:130] = 4.0
  probs = reference(row, 1.0, 20, 0.9)
  assert (probs > 0).sum() == 30
  tokens = np.asarray(sample(jax.random.key(2), np.broadcast_to(row, (n, v)), 1.0, 20, 0.9, k_max=8))
  assert probs[tokens].min() > 0 and _tv(tokens, probs) < 0.03


def test_layouts_give_the_same_tokens():
  """Chunked passes and records per pass are chosen per platform for speed; they must not change a token."""
  b, v = 32, 1000
  rng = np.random.default_rng(4)
  logits = jnp.asarray((rng.standard_normal((b, v)) * rng.uniform(0.5, 4, (b, 1))).astype(np.float32))
  t = rng.uniform(0.5, 1.8, b)
  p = np.where(np.arange(b) % 4 == 0, 1.0, rng.uniform(0.05, 0.99, b))
  m = np.where(np.arange(b) % 5 == 0, 0.02, 0.0)
  rows, _ = _draw_rows(logits, t, np.zeros(b, int), p, m)
  axes = VocabAxes(vocab=v)
  blocks = full_vocab.block_maxima(logits, axes)
  keys = row_keys(3, jnp.arange(b), 0)
  draws = [np.asarray(jax.jit(lambda k: full_vocab.draw_with_layout(logits, rows, k, blocks, axes=axes, chunk_rows=c,
                                                                    checks=n, search=m))(keys))
           for c, n, m in [(b, 4, "scan_unrolled"), (4, 1, "scan"), (2, 3, "scan")]]
  assert len(set(draws[0].tolist())) > b // 2  # the rows really draw different tokens
  for other in draws[1:]:
    np.testing.assert_array_equal(other, draws[0])


def test_degenerate_rows():
  v = 640
  rng = np.random.default_rng(6)
  masked = rng.standard_normal(v).astype(np.float32)
  masked[::2] = -np.inf
  peaked = rng.standard_normal(v).astype(np.float32)
  peaked[321] = 30.0  # one token holds all the mass: a proposal is kept with probability ~1/g
  tied = np.zeros(v, np.float32)
  tied[[5, 300, 600]] = 3.0
  logits = np.stack([np.full(v, -np.inf, np.float32), masked, masked, peaked, tied, tied])
  t = np.array([1.0, 1.0, 1.3, 1.0, 1.0, 1.0], np.float32)
  p = np.array([0.9, 1.0, 0.5, 1.0, 1e-6, 1.0], np.float32)
  m = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.999], np.float32)
  for seed in range(20):
    tokens = np.asarray(sample(jax.random.key(seed), logits, t, 0, p, m, k_max=8))
    assert tokens[0] == 0  # nothing finite: the argmax
    assert tokens[1] % 2 == 1 and tokens[2] % 2 == 1  # never a masked token
    assert tokens[3] == 321
    assert tokens[4] in (5, 300, 600) and tokens[5] in (5, 300, 600)  # tied maxima: all kept
