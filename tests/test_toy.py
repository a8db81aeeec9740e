"""The toy fork/lock model: the CLI's output, and the trained student against the ideal fit q_s of Eq. 7.

q_s is recomputed here in float64 from the definition (sorting allowed), independently of the sampler. The
student was trained on n_s sampled targets at state s, so its probability of token v should sit within a few
binomial standard errors sqrt(q (1 - q) / n_s) of q_s(v); the same bound must reject a wrong T_train or top-p.
The CLI's default 2^17 rollouts leave >= ~4.4k targets at the least visited lock (SE of its tok0 ~0.0034) and
2^17 at the root (SE ~0.0013), where moving T_train by 0.05 shifts entries by ~0.01: z ~ 17 for T_train 0.95.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from ssd_jax.analysis import toy

Z_MAX = 5.0  # per-entry bound in standard errors: ~30 non-trivial entries, P(any |z| > 5) ~ 2e-5 under the fit
OFF_SUPPORT = 1e-4  # the student's mass on a token q_s discards (the CE only pushes it towards 0, Eq. 13)


def ideal(probs: np.ndarray, temperature: float, top_p: float) -> np.ndarray:
  """q_s for one state: temper, keep the smallest descending prefix with mass >= top_p (ties kept), renormalise."""
  with np.errstate(divide="ignore"):  # q_s itself has zeros: they stay at -inf, i.e. discarded
    z = np.log(probs) / temperature
  q = np.exp(z - z.max())
  q /= q.sum()
  desc = np.sort(q)[::-1]
  above = (np.cumsum(desc) - desc)[np.searchsorted(-desc, -q, side="left")]  # mass strictly more likely
  q = np.where((above < top_p) | (q == q.max()), q, 0.0)
  return q / q.sum()


def ideal_table(temperature: float, top_p: float) -> np.ndarray:
  """[9, V] q_s of every physical state."""
  return np.stack([ideal(toy.type_probs()[t], temperature, top_p) for t in toy.STATE_TYPE])


def success(q: np.ndarray) -> float:
  """The reference's P for a teacher-shaped table (shared fork and lock): [q(A) + q(B)] q_fork(0) q_lock(0)^3."""
  return (q[0, 0] + q[0, 1]) * q[1, 0] * q[2, 0] ** toy.LOCKS


def z_scores(out: dict, temperature: float, top_p: float) -> np.ndarray:
  """[9, V] |student - q_s| in binomial standard errors; inf where q_s discards a token the student keeps."""
  q = ideal_table(temperature, top_p)
  student = np.asarray(out["student_probs"])
  n = np.asarray(out["visits"], np.float64)[:, None]
  se = np.sqrt(q * (1 - q) / n)
  z = np.abs(student - q) / np.where(se > 0, se, 1.0)
  return np.where(q > 0, z, np.where(student > OFF_SUPPORT, np.inf, 0.0))


@pytest.fixture(scope="module")
def cli() -> tuple[str, float]:
  start = time.perf_counter()
  proc = subprocess.run([sys.executable, "-m", "ssd_jax.analysis.toy"], capture_output=True, text=True, timeout=120,
                        check=True)
  return proc.stdout, time.perf_counter() - start


@pytest.fixture(scope="module")
def out(cli: tuple[str, float]) -> dict:
  return json.loads(cli[0].strip().splitlines()[-1])


def test_cli_last_line(cli, out):
  stdout, seconds = cli
  print(f"\ntoy CLI: {seconds:.1f} s")  # a figure, not a bound: the machine may be shared
  assert "best over T_eval" in stdout
  for key in ("teacher_best", "teacher_best_T", "student_best", "student_best_T"):
    assert isinstance(out[key], float), key
  for key in ("teacher_best", "student_best", "ideal_best"):
    assert 0.0 <= out[key] <= 1.0
  assert [g["top_p"] for g in out["grid"]] == list(toy.TOP_P_GRID)
  assert out["eval_top_p"] == 0.80 and out["t_train"] == 0.9 and out["top_p_train"] == 0.85


def test_student_matches_ideal_fit(out):
  z = z_scores(out, toy.T_TRAIN, toy.TOP_P_TRAIN)
  assert z.max() < Z_MAX, f"max |z| {z.max():.2f} at (state, token) {np.unravel_index(z.argmax(), z.shape)}"


@pytest.mark.parametrize("temperature, top_p", [(0.8, 0.85), (0.95, 0.85), (1.0, 0.85), (0.9, 0.80), (0.9, 0.90)])
def test_wrong_truncation_misses_the_fit(out, temperature, top_p):
  assert z_scores(out, temperature, top_p).max() > Z_MAX


def test_teacher_and_ideal_success_are_exact(out):
  """The printed curves against the float64 definition, at every printed T_eval (eval top-p 0.80)."""
  curve = out["curve"]
  q_s = ideal_table(toy.T_TRAIN, toy.TOP_P_TRAIN)
  for i, t in enumerate(curve["T"]):
    teacher = success(ideal_table(t, toy.TOP_P_EVAL))
    ideal_student = success(np.stack([ideal(q, t, toy.TOP_P_EVAL) for q in q_s]))
    assert curve["teacher"][i] == pytest.approx(teacher, abs=1e-5), t
    assert curve["ideal"][i] == pytest.approx(ideal_student, abs=1e-5), t


def test_ssd_beats_the_teacher(out):
  """What the toy is built to show: the best-tuned student beats the best-tuned teacher at every eval top-p."""
  for g in out["grid"]:
    assert g["student_best"] > g["teacher_best"], g


# -- the exact supremum over T_eval ----------------------------------------------------------------------------

SUP_RANGE = (float(toy.T_GRID[0]), float(toy.T_GRID[-1]))
NOT_ATTAINED_SEEDS = (6, 95, 118)  # random tables whose supremum is a one-sided limit (found by a seed scan)


def brute_success(probs: np.ndarray, temps: np.ndarray, top_p: float) -> np.ndarray:
  """P(success) [N] of a type table probs [3, V] (root, fork, lock) at every T, from the definition in float64.

  Independent of the toy's code: the tokens' order does not depend on T, so they are sorted once; a token is kept
  iff the tempered mass of the tokens strictly more likely is < top_p (the first member of its tie group sees it).
  """
  order = np.argsort(-probs, axis=1, kind="stable")
  p_sorted = np.take_along_axis(probs, order, 1)  # [3, V] descending
  first = np.stack([np.searchsorted(-row, -row, side="left") for row in p_sorted])  # [3, V] tie group start
  with np.errstate(divide="ignore"):
    z = np.log(p_sorted)[None] / temps[:, None, None]  # [N, 3, V]
  q = np.exp(z - z[..., :1])
  q /= q.sum(-1, keepdims=True)
  before = np.cumsum(q, -1) - q
  above = np.take_along_axis(before, np.broadcast_to(first, q.shape), 2)
  kept = ((above < top_p) | (first == 0)) & (p_sorted > 0)
  q = np.where(kept, q, 0.0)
  q /= q.sum(-1, keepdims=True)
  table = np.zeros_like(q)
  np.put_along_axis(table, np.broadcast_to(order, q.shape), q, 2)  # back to token ids
  return (table[:, 0, 0] + table[:, 0, 1]) * table[:, 1, 0] * table[:, 2, 0] ** toy.LOCKS


def random_case(seed: int) -> tuple[np.ndarray, float]:
  rng = np.random.default_rng(seed)
  return rng.dirichlet(np.full(toy.V, 0.3), size=3), float(rng.choice([0.5, 0.6, 0.7, 0.8, 0.9]))


CASES = [pytest.param(toy.type_probs(), p, id=f"teacher-{p}") for p in toy.TOP_P_GRID] + [
    pytest.param(*random_case(s), id=f"random-{s}") for s in (0, 1) + NOT_ATTAINED_SEEDS]


@pytest.mark.parametrize("probs, top_p", CASES)
def test_supremum_against_a_fine_grid(probs, top_p):
  """The supremum bounds every point of a 1e-4 grid and of a 1e-10 grid around its T, and those reach it."""
  sup = toy.supremum(np.log(probs)[toy.STATE_TYPE], top_p)
  value, t = sup["value"], sup["T"]
  grid = brute_success(probs, np.linspace(*SUP_RANGE, 39_501), top_p)
  assert value >= grid.max() * (1 - 1e-12)
  assert value - grid.max() <= 1e-3 * value  # a 1e-4 step already comes close
  local = brute_success(probs, np.clip(t + np.linspace(-1e-6, 1e-6, 20_001), *SUP_RANGE), top_p)
  assert value >= local.max() * (1 - 1e-12)
  assert value - local.max() <= 1e-7 * value
  at_t = brute_success(probs, np.array([t]), top_p)[0]
  if sup["attained"]:
    assert at_t == pytest.approx(value, rel=1e-9)
  else:  # the limit as T falls to t, a kept-set change: just below t it jumps down, just past t it is the supremum
    below, above = brute_success(probs, np.array([t * (1 - 1e-10), t * (1 + 1e-10)]), top_p)
    assert below < value * (1 - 1e-6) and above == pytest.approx(value, rel=1e-8)


def test_limits_are_exercised():
  assert not any(toy.supremum(np.log(p)[toy.STATE_TYPE], top_p)["attained"]
                 for p, top_p in map(random_case, NOT_ATTAINED_SEEDS))


def test_teacher_peak_sits_at_a_kept_set_change_the_grid_misses():
  """The issue's case: at eval top-p 0.80 the teacher's peak is where a kept set changes, between grid points."""
  x = np.log(toy.type_probs())[toy.STATE_TYPE]
  sup = toy.supremum(x, toy.TOP_P_EVAL)
  on_grid = brute_success(toy.type_probs(), toy.T_GRID.astype(np.float64), toy.TOP_P_EVAL).max()
  assert sup["value"] > on_grid + 1e-3 and sup["attained"]
  assert np.any(toy.kept_sets(x, sup["T"] - 1e-6, toy.TOP_P_EVAL) != toy.kept_sets(x, sup["T"] + 1e-6, toy.TOP_P_EVAL))


def test_cli_prints_the_supremum(cli, out):
  assert "supremum over T_eval" in cli[0] and "teacher at eval top-p 0.8: sup" in cli[0]
  for g in out["grid"]:
    for name in toy.MODELS:
      assert g[f"{name}_sup"] >= g[f"{name}_best"] - 1e-6, (g["top_p"], name)  # the grid runs the float32 sampler
      assert SUP_RANGE[0] <= g[f"{name}_sup_T"] <= SUP_RANGE[1] and isinstance(g[f"{name}_sup_attained"], bool)
  for name in ("teacher", "student"):
    assert out[f"{name}_sup"] == out["grid"][toy.TOP_P_GRID.index(toy.TOP_P_EVAL)][f"{name}_sup"]
