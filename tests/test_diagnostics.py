"""Fig. 6 diagnostics on a tiny random model and a sharpened copy, against float64 numpy references."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny_sft
from ssd_jax.analysis import diagnostics
from ssd_jax.models import transformer

TEMPS = (1e-6, 0.05, 0.4, 0.7, 1.0, 1.4, 2.0)  # greedy first; one compiled statistics shape for every test
TOP_K, TOP_P = 20, 0.8


@pytest.fixture(scope="module")
def setup():
  """A base model (logits std ~3) and a 3x sharper copy (same ranking, lower entropy), plus sampled sequences."""
  cfg = tiny_sft.model_config(tie_word_embeddings=False)
  init = np.random.RandomState(1)  # numpy init: init_params compiles one initializer per leaf shape (slow on CI)
  fill = {"ones": np.ones, "zeros": np.zeros, "normal": lambda shape: 0.02 * init.standard_normal(shape)}
  params = transformer.map_specs(lambda spec: jnp.asarray(fill[spec.init](spec.shape), jnp.float32), cfg)
  base = params.replace(lm_head=params.lm_head * 30)
  sharp = params.replace(lm_head=params.lm_head * 90)
  rng = np.random.RandomState(0)
  seqs = [rng.randint(3, cfg.vocab_size, rng.randint(5, 40)).tolist() for _ in range(12)]
  prompt_lens = [int(rng.randint(1, 5)) for _ in seqs]
  logits = {name: diagnostics.model_position_logits(p, cfg, seqs, prompt_lens, batch_size=5)
            for name, p in (("base", base), ("ssd", sharp))}
  return cfg, {"base": base, "ssd": sharp}, seqs, prompt_lens, logits


def _table(logits, top_k=TOP_K, top_p=TOP_P, **kw):
  return diagnostics.fig6_diagnostics(logits, temperatures=TEMPS, top_k=top_k, top_p=top_p, **kw)


def _softmax(z: np.ndarray) -> np.ndarray:
  e = np.exp(z - z.max())
  return e / e.sum()


def _ref_truncated(x: np.ndarray, t: float, top_k: int, top_p: float) -> np.ndarray:
  """vLLM's operator in float64: temperature -> top-k (strictly-below masked, ties kept) -> top-p."""
  x = x.astype(np.float64)
  if t < 1e-5:
    return np.eye(len(x))[np.argmax(x)]
  z = x / t
  if 0 < top_k < len(z):
    z = np.where(z < np.sort(z)[-top_k], -np.inf, z)
  if top_p < 1:
    order = np.argsort(_softmax(z), kind="stable")
    drop = np.cumsum(_softmax(z)[order]) <= 1 - top_p
    drop[-1] = False
    z[order[drop]] = -np.inf
  return _softmax(z)


def _entropy(q: np.ndarray) -> float:
  q = q[q > 0]
  return float(-(q * np.log(q)).sum())


def test_position_logits_are_the_response_positions(setup):
  cfg, models, seqs, prompt_lens, logits = setup
  # Reference without padding or segments: causal attention makes the filler after each sequence irrelevant.
  width = max(map(len, seqs))
  tokens = jnp.asarray([s + [3] * (width - len(s)) for s in seqs], jnp.int32)
  full = np.asarray(jax.jit(transformer.forward, static_argnames=("cfg",))(models["base"], tokens,
                                                                          jnp.ones_like(tokens), cfg=cfg))
  want = np.concatenate([full[i, p - 1:len(s) - 1] for i, (s, p) in enumerate(zip(seqs, prompt_lens))])
  assert logits["base"].shape == (sum(len(s) - p for s, p in zip(seqs, prompt_lens)), cfg.vocab_size)
  assert len(want) > diagnostics.CHUNK  # several chunks and batches, padded rows and lengths
  np.testing.assert_allclose(logits["base"], want, atol=1e-4)
  capped = diagnostics.model_position_logits(models["base"], cfg, seqs, prompt_lens, batch_size=5, max_positions=50)
  np.testing.assert_allclose(capped, want[:50], atol=1e-4)


def test_cumulative_mass(setup):
  cfg, _, _, _, logits = setup
  v = cfg.vocab_size
  full = _table({"base": logits["base"]}, ranks=v)["models"]["base"]
  cum = np.asarray(full["cum_mass"])
  assert np.all(np.diff(cum) >= -1e-6) and cum.min() >= 0 and cum.max() <= 1
  assert cum[-1] == pytest.approx(1.0, abs=1e-4)
  probs = np.stack([_softmax(x.astype(np.float64)) for x in logits["base"]])
  want = np.cumsum(-np.sort(-probs, axis=1), axis=1).mean(0)
  np.testing.assert_allclose(cum, want, atol=1e-5)
  evals = np.asarray(full["cum_mass_eval"])  # [T, V]: the truncated distribution has at most top-k tokens
  assert np.all(np.diff(evals, axis=1) >= -1e-6)
  np.testing.assert_allclose(evals[:, TOP_K - 1], 1.0, atol=1e-5)
  assert _table({"base": logits["base"]})["models"]["base"]["cum_mass"] == pytest.approx(cum[:60].tolist(), abs=1e-6)


def test_tail_mass_keeps_relative_precision(setup):
  _, _, _, _, logits = setup
  tail = 1.0 - np.asarray(_table({"ssd": logits["ssd"]})["models"]["ssd"]["cum_mass"])
  probs = np.sort(np.stack([_softmax(x.astype(np.float64)) for x in logits["ssd"]]), axis=1)  # ascending
  want = np.cumsum(probs, axis=1)[:, ::-1][:, 1:61].mean(0)  # mass beyond ranks 1..60
  assert want[-1] < 1e-6  # where 1 - (float32 cumsum) is off by ~10%
  np.testing.assert_allclose(tail, want, rtol=1e-3)


@pytest.mark.parametrize("top_k,top_p", [(TOP_K, TOP_P), (5, 0.95), (0, 0.7)])
def test_survivors_and_entropy_match_numpy_operator(setup, top_k, top_p):
  _, _, _, _, logits = setup
  for x in logits["base"][::37]:
    row = _table({"m": x[None]}, top_k=top_k, top_p=top_p)["models"]["m"]
    refs = [_ref_truncated(x, t, top_k, top_p) for t in TEMPS]
    assert row["survivors"] == [float(np.count_nonzero(q)) for q in refs]
    np.testing.assert_allclose(row["entropy"], [_entropy(q) for q in refs], atol=1e-4)


def test_untruncated_entropy_grows_from_zero(setup):
  _, _, _, _, logits = setup
  table = _table(logits, top_k=0, top_p=1.0)
  for name, m in table["models"].items():
    ent = np.asarray(m["entropy"])
    assert ent[0] == 0 and np.all(np.diff(ent) > 0), (name, ent)
    assert m["survivors"][0] == 1
    full = np.mean([_entropy(_softmax(x.astype(np.float64))) for x in logits[name]])
    assert ent[TEMPS.index(1.0)] == pytest.approx(full, abs=1e-4)
  assert table["models"]["ssd"]["entropy"][1] < 0.05  # T -> 0 collapses onto the argmax


def test_sharper_model_has_less_entropy_and_fewer_survivors(setup):
  _, _, _, _, logits = setup
  base, ssd = (_table(logits)["models"][k] for k in ("base", "ssd"))
  assert np.all(np.asarray(ssd["entropy"][1:]) < np.asarray(base["entropy"][1:]))
  assert np.all(np.asarray(ssd["survivors"]) <= np.asarray(base["survivors"]))
  assert ssd["survivors"][-1] < base["survivors"][-1] - 1
  assert np.all(np.asarray(ssd["cum_mass"]) > np.asarray(base["cum_mass"]))


def test_buckets_by_top20_mass(setup):
  _, _, _, _, logits = setup
  edges = (0.9, 0.5, 0.99, 0.3, 0.7)  # any order (sorted descending); five, as the default, to reuse the compile
  table = _table(logits, mass_buckets=edges)
  labels = [">=99%", "[90%, 99%)", "[70%, 90%)", "[50%, 70%)", "[30%, 50%)", "<30%"]
  assert table["config"]["bucket_labels"] == labels
  t = TEMPS.index(table["config"]["reference_temperature"])
  for name, m in table["models"].items():
    assert sum(m["bucket_counts"]) == m["positions"] == len(logits[name])
    mass = np.array([np.sort(_softmax(x.astype(np.float64)))[-20:].sum() for x in logits[name]])
    bucket = np.sum(np.array([0.99, 0.9, 0.7, 0.5, 0.3])[None] > mass[:, None], axis=1)
    assert m["bucket_counts"] == np.bincount(bucket, minlength=6).tolist()
    ent = np.array([_entropy(_ref_truncated(x, 1.0, TOP_K, TOP_P)) for x in logits[name]])
    for b, (count, row) in enumerate(zip(m["bucket_counts"], m["bucket_entropy"])):
      assert (row is None) == (count == 0)
      if count:
        assert row[t] == pytest.approx(ent[bucket == b].mean(), abs=1e-4)
  assert len({tuple(m["bucket_counts"]) for m in table["models"].values()}) == 2  # the sharper model moves up


def test_run_diagnostics_writes_four_pngs_and_json(setup, tmp_path):
  cfg, models, seqs, prompt_lens, logits = setup
  out = str(tmp_path / "diag")
  table = diagnostics.run_diagnostics({k: (cfg, p) for k, p in models.items()}, seqs, prompt_lens, out,
                                      temperatures=TEMPS, top_k=TOP_K, top_p=TOP_P, max_positions=None,
                                      batch_size=5)
  assert sorted(os.listdir(out)) == sorted(["diagnostics.json", *diagnostics.PNG_NAMES])
  assert table["pngs"] == [os.path.join(out, n) for n in diagnostics.PNG_NAMES]
  for path in table["pngs"]:
    with open(path, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with open(table["json"]) as f:
    assert json.load(f) == table
  from_arrays = _table(logits)["models"]
  for name, m in table["models"].items():  # streaming chunks == the [N, V] path
    for key in ("cum_mass", "survivors", "entropy", "bucket_counts"):
      np.testing.assert_allclose(m[key], from_arrays[name][key], atol=1e-5)


def _mass(label: str) -> float:
  """A panel (a) tick label as the cumulative mass it names ("0.99", "1-5e-6")."""
  return 1.0 - float(label[2:]) if label.startswith("1-") else float(label)


@pytest.mark.parametrize("lowest, highest", [(0.79, 0.99), (0.3, 0.31), (0.0012, 0.16), (2e-7, 0.6), (1e-12, 1e-3),
                                             (2e-5, 3e-5), (0.5, 0.5), (0.9, 1.0)])
def test_cumulative_mass_axis_reads_in_order(lowest, highest):
  """Panel (a)'s labels name the cumulative mass at their tick, rise up the (inverted) axis, and sit inside it;
  the tiny run's flat curves (tails 0.79-0.99) once got tail-mass labels out of order."""
  (bottom, top), ticks, labels = diagnostics.mass_axis(lowest, highest)
  assert bottom >= highest and top <= lowest and bottom > top
  assert len(ticks) >= 3 and all(top <= t <= bottom for t in ticks)
  masses = [_mass(label) for label in labels]
  assert all(b > a for a, b in zip(masses, masses[1:])), labels  # ticks run down the tail = up the axis
  assert all(t2 < t1 for t1, t2 in zip(ticks, ticks[1:]))
  for t, m in zip(ticks, masses):
    assert m == pytest.approx(1.0 - t, abs=1e-9 + 1e-6 * t), (t, m)
