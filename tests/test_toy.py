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
