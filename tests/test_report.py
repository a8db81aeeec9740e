"""The report's paired base-vs-SSD comparison and its rendering from eval summaries in a workdir."""

import json
import os

import pytest

from ssd_jax.analysis.report import collect, paired_comparison


def _per_problem(rates: list[float]) -> dict[str, dict]:
  return {f"P/{i}": {"c": round(10 * r), "n": 10, "pass@1": r} for i, r in enumerate(rates)}


def test_identical_models_tie_and_are_not_significant():
  rates = [0.0, 0.1, 0.5, 1.0, 0.3] * 8
  out = paired_comparison(_per_problem(rates), _per_problem(rates))
  assert out["problems"] == 40 and out["delta_pass@1"] == 0.0 and out["ci95"] == [0.0, 0.0]
  assert (out["better"], out["worse"], out["tied"]) == (0, 0, 40) and not out["significant"]


def test_consistent_gain_is_significant_and_interval_brackets_the_mean():
  base = _per_problem([0.1, 0.2, 0.0, 0.4] * 10)
  ssd = _per_problem([0.3, 0.3, 0.2, 0.5] * 10)
  out = paired_comparison(base, ssd)
  assert out["delta_pass@1"] == pytest.approx(0.15)
  low, high = out["ci95"]
  assert 0 < low < 0.15 < high
  assert out["significant"] and out["better"] == 40


def test_one_lucky_problem_is_not_significant():
  base = _per_problem([0.0] * 40)
  ssd = _per_problem([0.0] * 39 + [0.2])
  out = paired_comparison(base, ssd)
  assert out["delta_pass@1"] == pytest.approx(0.005)
  assert out["ci95"][0] == 0.0 and not out["significant"] and (out["better"], out["tied"]) == (1, 39)


def test_only_shared_problems_are_compared():
  base = _per_problem([0.5, 0.5])
  ssd = {"P/1": {"pass@1": 1.0}, "Other/9": {"pass@1": 1.0}}
  out = paired_comparison(base, ssd)
  assert out["problems"] == 1 and out["delta_pass@1"] == pytest.approx(0.5)
  assert paired_comparison(base, {})["problems"] == 0


def test_collect_pairs_each_models_best_temperature(tmp_path):
  def write(model, temp, rates):
    os.makedirs(tmp_path / "eval" / model, exist_ok=True)
    per = _per_problem(rates)
    summary = {"tag": f"{model}_T{temp}", "overall": {"pass@1": sum(rates) / len(rates)}, "per_problem": per,
               "n_problems": len(rates), "samples_per_problem": {"min": 10, "max": 10}}
    (tmp_path / "eval" / model / f"{model}_T{temp}.summary.json").write_text(json.dumps(summary))

  write("base", "0.5", [0.2] * 20)
  write("base", "0.9", [0.1] * 20)
  write("ssd", "0.7", [0.4] * 20)
  head = collect(str(tmp_path))["headline"]
  assert (head["base_T"], head["ssd_T"]) == (0.5, 0.7)
  assert head["paired"]["delta_pass@1"] == pytest.approx(0.2) and head["paired"]["significant"]
  assert "_per_problem" not in collect(str(tmp_path))["eval"]["base"]
