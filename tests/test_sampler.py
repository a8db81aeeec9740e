"""The sampler against a float64 NumPy transcription of vLLM's operator, its draws, sharding and recompiles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssd_jax.models.sharding import ShardingRules, make_mesh
from ssd_jax.models.transformer import Sharding
from ssd_jax.sampling import SamplingParams, row_keys, sample, truncated_probs


def _softmax(z: np.ndarray) -> np.ndarray:
  e = np.exp(z - np.max(z))
  return e / e.sum()


def reference(logits, temperature, top_k, top_p, min_p=0.0) -> np.ndarray:
  """One row, straight from the definition (float64, sorting allowed)."""
  x = np.asarray(logits, np.float64)
  v = x.size
  if temperature < 1e-5:
    return np.eye(v)[np.argmax(x)]
  z = x / temperature  # 1. temperature first
  if min_p > 0:  # 2. min-p on the tempered full distribution
    p = _softmax(z)
    z = np.where(p < min_p * p.max(), -np.inf, z)
  if 0 < top_k < v:  # 3. top-k: drop what is strictly below the k-th largest
    z = np.where(z < np.sort(z)[::-1][top_k - 1], -np.inf, z)
  if top_p < 1:  # 4. top-p on the survivors' renormalised distribution
    q = _softmax(z)
    desc = np.sort(q)[::-1]
    above = (np.cumsum(desc) - desc)[np.searchsorted(-desc, -q, side="left")]  # mass strictly above q_i
    z = np.where((above < top_p) | (q == q.max()), z, -np.inf)
  return _softmax(z)  # 5. renormalise


def _check_rows(logits, rows, k_max=64, atol=1e-6):
  t, k, p, m = (np.array(c) for c in zip(*rows))
  got = np.asarray(truncated_probs(jnp.asarray(logits), t.astype(np.float32), k.astype(np.int32),
                                   p.astype(np.float32), m.astype(np.float32), k_max=k_max))
  for b, row in enumerate(rows):
    want = reference(logits[b], *row)
    np.testing.assert_allclose(got[b], want, atol=atol, err_msg=f"row {b} params {row} k_max {k_max}")
    np.testing.assert_array_equal(got[b] > 0, want > 0, err_msg=f"support, row {b} params {row}")


# (temperature, top_k, top_p, min_p)
ROWS = [
    (0.7, 20, 0.8, 0.0),  # SSD eval
    (1.6, 20, 0.8, 0.0),  # SSD train
    (1.0, 10, 1.0, 0.0),  # top-k only
    (1.5, 0, 0.9, 0.0),  # top-p only, nucleus wider than the window
    (1.0, 0, 0.3, 0.0),  # top-p only, nucleus inside the window
    (1.2, 50, 0.95, 0.0),  # both
    (0.0, 20, 0.8, 0.0),  # greedy
    (1e-6, 0, 1.0, 0.0),  # greedy
    (2e-5, 20, 0.8, 0.0),  # tiny but sampled
    (1.0, 1000, 0.8, 0.0),  # k = V: off
    (1.0, 5000, 1.0, 0.0),  # k > V: off
    (1.0, 200, 1.0, 0.0),  # k > k_max
    (1.3, 200, 0.9, 0.0),  # k > k_max with top-p
    (1.0, 0, 1.0, 0.0),  # no truncation
    (1.0, 0, 1.0, 0.01),  # min-p only
    (1.5, 20, 0.9, 0.05),  # min-p with top-k/top-p
    (0.9, 300, 0.99, 0.02),  # min-p cutting below a far top-k
    (1.0, 1, 1.0, 0.0),  # top-1
]


@pytest.mark.parametrize("k_max", [64, 8])
def test_matches_reference_random_logits(k_max):
  rng = np.random.default_rng(0)
  logits = (rng.standard_normal((len(ROWS), 1000)) * 2.5).astype(np.float32)
  _check_rows(logits, ROWS, k_max=k_max)


@pytest.mark.parametrize("k_max", [64, 8])
def test_matches_reference_with_ties(k_max):
  rng = np.random.default_rng(1)
  logits = np.round(rng.standard_normal((len(ROWS), 1000)) * 2).astype(np.float32)  # heavy ties everywhere
  _check_rows(logits, ROWS, k_max=k_max)
  row = np.zeros(1000, np.float32)
  row[:30] = 5.0  # 30 tokens tie at the k-th (k = 20) value: all survive
  row[30:] = rng.standard_normal(970)
  _check_rows(np.stack([row] * 3), [(1.0, 20, 1.0, 0.0), (1.0, 20, 0.5, 0.0), (1.0, 25, 0.9, 0.0)], k_max=k_max)


def test_degenerate_rows():
  v = 1000
  flat = np.zeros(v, np.float32)  # every token ties
  huge = np.random.default_rng(2).standard_normal(v).astype(np.float32)
  huge[17] = 60.0
  masked = np.random.default_rng(3).standard_normal(v).astype(np.float32)
  masked[::3] = -np.inf
  logits = np.stack([flat, flat, flat, flat, huge, huge, masked, masked, masked])
  rows = [(1.0, 20, 1.0, 0.0), (1.0, 20, 0.5, 0.0), (1.0, 0, 0.9, 0.0), (0.0, 0, 1.0, 0.0), (1.0, 0, 0.8, 0.0),
          (1.0, 0, 1.0, 0.0), (1.0, 0, 1.0, 0.0), (1.0, 0, 0.9, 0.0), (0.8, 800, 1.0, 0.0)]
  _check_rows(logits, rows)
  small = np.random.default_rng(4).standard_normal((len(ROWS), 10)).astype(np.float32)  # V < k_max
  _check_rows(small, ROWS)


def test_temperature_before_top_p():
  logits = np.array([[3.0, 2.0, 1.0, 0.0, -1.0, -2.0]], np.float32)
  t, p = 2.0, 0.8
  got = np.asarray(truncated_probs(logits, t, 0, p))[0]
  np.testing.assert_allclose(got, reference(logits[0], t, 0, p), atol=1e-6)
  untempered = reference(logits[0], 1.0, 0, p)  # the wrong order: top-p first, then temperature
  wrong = np.where(untempered > 0, _softmax(logits[0].astype(np.float64) / t), 0.0)
  assert (got > 0).sum() == 3 and (wrong > 0).sum() == 2
  draws = np.asarray(sample(jax.random.key(0), np.repeat(logits, 2000, axis=0), t, 0, p))
  assert set(np.unique(draws)) == {0, 1, 2}


def _tv(tokens: np.ndarray, probs: np.ndarray) -> float:
  return 0.5 * np.abs(np.bincount(tokens, minlength=probs.size) / tokens.size - probs).sum()


@pytest.mark.parametrize("params, k_max", [
    ((0.8, 10, 0.9, 0.0), 64),  # window
    ((1.5, 0, 0.8, 0.0), 4),  # sort-free: nucleus wider than the window, bisection + full-vocab Gumbel
    ((1.0, 30, 1.0, 0.02), 4),  # sort-free: top-k beyond the window, min-p
    ((1.3, 0, 1.0, 0.0), 64),  # no truncation: full-vocab draw
])
def test_draws_follow_truncated_probs(params, k_max):
  n, v = 100_000, 64
  logits = (np.random.default_rng(5).standard_normal((1, v)) * np.linspace(3.0, 0.5, v)).astype(np.float32)
  probs = np.asarray(truncated_probs(logits, *params, k_max=k_max), np.float64)[0]
  assert (probs > 0).sum() > k_max or k_max == 64
  tokens = np.asarray(sample(jax.random.key(7), np.broadcast_to(logits, (n, v)), *params, k_max=k_max))
  assert probs[tokens].min() > 0
  tv = _tv(tokens, probs)
  assert tv < 0.01, f"TV {tv:.4f} over {(probs > 0).sum()} kept tokens"


def _mixed_batch(v: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  logits = (rng.standard_normal((8, v)) * 3).astype(np.float32)
  logits[5, :40] = 9.0  # ties spill out of the window
  params = SamplingParams(temperature=jnp.array([0.7, 1.6, 0.0, 1.0, 1.2, 1.0, 0.9, 1.5], jnp.float32),
                          top_k=jnp.array([20, 20, 0, 0, 100, 20, 0, 0], jnp.int32),
                          top_p=jnp.array([0.8, 0.95, 1.0, 0.9, 0.9, 0.8, 0.3, 1.0], jnp.float32),
                          min_p=jnp.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.05], jnp.float32))
  return logits, params


def _draw(key, logits, params, sharding=None, k_max=64):
  return np.asarray(sample(key, logits, params.temperature, params.top_k, params.top_p, params.min_p, k_max=k_max,
                           sharding=sharding))


@pytest.mark.parametrize("mesh_shape, v", [({"tensor": 8}, 4096), ({"data": 2, "tensor": 4}, 4096),
                                           ({"tensor": 8}, 1600)])  # 1600: shards of 200 cut the 64-token blocks
def test_same_tokens_on_one_and_eight_devices(mesh_shape, v):
  logits, params = _mixed_batch(v)
  mesh, rules = make_mesh(mesh_shape), ShardingRules()
  placed = jax.device_put(logits, rules.sharding(mesh, ("batch", "act_vocab"), logits.shape))
  assert len(placed.sharding.device_set) == 8
  for seed in range(3):
    keys = row_keys(seed, jnp.arange(8), 5)
    want = _draw(keys, logits, params)
    got = _draw(keys, placed, params, sharding=Sharding(mesh, rules))
    np.testing.assert_array_equal(got, want)
    probs = np.asarray(truncated_probs(logits, params.temperature, params.top_k, params.top_p, params.min_p))
    assert probs[np.arange(8), want].min() > 0


def test_rows_are_independent():
  v = 2048
  logits, params = _mixed_batch(v, seed=1)
  ids = jnp.arange(100, 108)
  want = _draw(row_keys(3, ids, 11), logits, params)
  perm = np.array([3, 0, 7, 1, 6, 2, 5, 4])
  moved = jax.tree.map(lambda a: a[perm], params)
  got = _draw(row_keys(3, ids[perm], 11), logits[perm], moved)
  np.testing.assert_array_equal(got, want[perm])
  # Rewrite rows 0-3; rows 4-7 keep their tokens (a rewritten row 0 with top_k = 0 forces the full-vocab branch).
  other = logits.copy()
  other[:4] = np.random.default_rng(9).standard_normal((4, v)) * 5
  changed = params.replace(top_k=params.top_k.at[:4].set(jnp.array([0, 3, 7, 0])),
                           top_p=params.top_p.at[:4].set(jnp.array([1.0, 0.5, 0.9, 0.99])))
  got = _draw(row_keys(3, ids, 11), other, changed)
  np.testing.assert_array_equal(got[4:], want[4:])


def test_rows_without_top_k_do_not_depend_on_k_max():
  """Rows without top-k draw over the whole vocabulary whatever the window size; rows with a top-k inside both
  windows draw from the window, with noise keyed by token id, so the same token too."""
  logits = (np.random.default_rng(6).standard_normal((8, 2048)) * 4).astype(np.float32)
  open_rows = SamplingParams.full(8, temperature=1.0, top_k=0, top_p=0.5)
  top_k_rows = SamplingParams.full(8, temperature=1.0, top_k=3, top_p=0.9)
  for seed in range(4):
    keys = row_keys(seed, jnp.arange(8), 0)
    for params in (open_rows, top_k_rows):
      np.testing.assert_array_equal(_draw(keys, logits, params, k_max=64), _draw(keys, logits, params, k_max=4))


def test_compiles_once_for_new_parameter_values():
  traces = []

  @jax.jit
  def step(key, logits, t, k, p, m):
    traces.append(1)
    return sample(key, logits, t, k, p, m)

  logits = np.random.default_rng(7).standard_normal((4, 512)).astype(np.float32)
  for i in range(5):
    p = SamplingParams.full(4, temperature=0.5 + 0.3 * i, top_k=5 * i, top_p=1.0 - 0.1 * i, min_p=0.01 * i)
    step(jax.random.key(i), logits, p.temperature, p.top_k, p.top_p, p.min_p).block_until_ready()
  assert len(traces) == 1 and step._cache_size() == 1


def test_greedy_and_top1_pick_argmax():
  logits = (np.random.default_rng(8).standard_normal((8, 3000)) * 2).astype(np.float32)
  logits[6:] = 0.0
  logits[6:, [70, 900, 2999]] = 1.0  # tied maxima: the lowest id, like argmax
  t = np.array([0.0, 1e-6, 9e-6, 1.0, 1.7, 0.5, 0.0, 1e-7], np.float32)
  k = np.array([0, 20, 0, 1, 1, 1, 0, 50], np.int32)
  for seed in range(3):
    np.testing.assert_array_equal(np.asarray(sample(jax.random.key(seed), logits, t, k, 0.9)), logits.argmax(-1))
