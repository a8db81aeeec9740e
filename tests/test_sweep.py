"""The T_train x T_eval grid runner (`ssd_jax.sweep`): cells, the shared base evaluation, the report's claims."""

import json
import os
import subprocess
import sys

import pytest

from ssd_jax import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID = os.path.join(ROOT, "tests", "tiny_grid.py")


def _summary(path, tag, per_problem):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  mean = sum(per_problem.values()) / len(per_problem)
  with open(path, "w") as f:
    json.dump({"tag": tag, "overall": {"pass@1": mean},
               "per_problem": {pid: {"pass@1": v} for pid, v in per_problem.items()}}, f)


def _write_cell(workdir, cell, model, temperature, per_problem):
  _summary(os.path.join(workdir, cell, "eval", model, f"{model}_T{temperature}.summary.json"),
           f"{model}_T{temperature}", per_problem)


def test_report_picks_each_cells_best_and_pairs_the_claims(tmp_path):
  config = sweep.cell_config(_grid_config(tmp_path), sweep.BASE_CELL, {})
  config.workdir = str(tmp_path)
  ids = [f"codesuite/fam{i % 4}/{i}" for i in range(8)]
  _write_cell(tmp_path, "base", "base", "0.7", dict.fromkeys(ids, 0.25))
  _write_cell(tmp_path, "base", "base", "1", dict.fromkeys(ids, 0.5))   # the base model's best T
  _write_cell(tmp_path, "T1.0", "ssd", "0.7", {i: 0.5 + 0.5 * (n % 2) for n, i in enumerate(ids)})  # 0.75
  _write_cell(tmp_path, "T1.0", "ssd@2", "0.7", dict.fromkeys(ids, 0.5))
  _write_cell(tmp_path, "T1.0", "ssd@2", "1", dict.fromkeys(ids, 1.0))   # its best: an earlier checkpoint
  _write_cell(tmp_path, "T1.0-notrunc", "ssd", "0.7", dict.fromkeys(ids, 0.5))
  summary = sweep.report(config, sweep.load_cells(GRID))
  assert summary["grid"] == {"base": {"0.7": 0.25, "1": 0.5}, "T1.0": {"0.7": 0.75, "1": 1.0},
                             "T1.0-notrunc": {"0.7": 0.5}}
  top = summary["claims"]["ssd_best_beats_base_best"]
  assert (top["cell"], top["model"], top["T"], top["base_T"]) == ("T1.0", "ssd@2", 1.0, 1.0)
  assert top["delta_pass@1"] == pytest.approx(0.5) and top["ci95"] == [pytest.approx(0.5)] * 2
  assert top["held_out_families"]["families"] == 4 and top["held_out_families"]["better"] == 4
  (pair,) = summary["claims"]["truncation_matters"]
  assert (pair["truncated"], pair["untruncated"], pair["delta_pass@1"]) == ("T1.0", "T1.0-notrunc", 0.5)
  text = open(tmp_path / "sweep.md").read()
  assert "+50.0 points, 95% paired interval [+50.0, +50.0] over 8 problems (excludes 0)" in text
  assert text.startswith("# SSD T_train x T_eval grid\n\n**Answer:** at each model's best T_eval, SSD's best cell "
                         "(T1.0) raised pass@1 beyond the noise: 50.0% (base, T 1) -> 100.0% (T 1), +50.0 points")
  versus = summary["cells_vs_base"]  # each cell at its own best, against the base model's best
  assert versus["T1.0-notrunc"]["delta_pass@1"] == 0.0 and versus["T1.0"]["delta_pass@1"] == 0.5
  assert "| T1.0-notrunc | 0.7 | 50.0% | +0.0 | [+0.0, +0.0] | 0 / 0 / 4 |" in text
  assert os.path.getsize(tmp_path / "heatmap.png") > 0


def test_a_cell_override_of_no_field_is_refused(tmp_path):
  with pytest.raises(ValueError, match=r"cell 'x': config.sample.temprature is not a config field"):
    sweep.cell_config(_grid_config(tmp_path), "x", {"sample.temprature": 1.0})


def test_cells_split_over_workers_or_by_name():
  cells = sweep.load_cells(GRID)
  assert sweep.select_cells(cells, 0, 2) == ["base", "T1.0-notrunc"]
  assert sweep.select_cells(cells, 1, 2) == ["T1.0"]
  assert sweep.select_cells(cells, only=("T1.0-notrunc", "base")) == ["base", "T1.0-notrunc"]
  with pytest.raises(ValueError, match=r"--cells: T9 not in this grid \(expected some of base, T1.0, T1.0-notrunc\)"):
    sweep.select_cells(cells, only=("T9",))
  assert sweep.load_cells(GRID, (1.2, 2.0)) == {"T1.2": {"sample.temperature": 1.2},
                                                 "T2": {"sample.temperature": 2.0}}


def test_launch_script_queues_one_job_per_cell():
  """launch/sweep.sh asks ssd_jax.sweep for the cells and gives each its own launcher job, then the report."""
  env = {**os.environ, "PYTHONPATH": ROOT, "DRY_RUN": "1", "LAUNCHER": "sbatch launch/slurm_gpu.sh"}
  out = subprocess.run(["launch/sweep.sh", GRID, "--config.workdir=/shared/g"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  jobs = out.stdout.strip().splitlines()
  assert [j.split("--cells=")[1].split()[0] for j in jobs] == ["base", "T1.0", "T1.0-notrunc"]
  assert all(j.startswith("MODULE=ssd_jax.sweep sbatch launch/slurm_gpu.sh --config=") and
             j.rstrip().endswith("--config.workdir=/shared/g") for j in jobs)
  assert "--report_only" in out.stderr
  env["T_TRAINS"] = "1.2 1.6"
  out = subprocess.run(["launch/sweep.sh", "configs/tiny.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
  assert [j.split("--cells=")[1].split()[0] for j in out.stdout.strip().splitlines()] == ["base", "T1.2", "T1.6"]


def _grid_config(tmp_path):
  import importlib.util
  spec = importlib.util.spec_from_file_location("tiny_grid", GRID)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.workdir = str(tmp_path)
  return config


@pytest.mark.slow
def test_two_workers_run_the_grid_and_the_report_reads_it(tmp_path):
  env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
  common = [sys.executable, "-m", "ssd_jax.sweep", f"--config={GRID}", f"--config.workdir={tmp_path}"]
  procs = [subprocess.Popen(common + [f"--worker={w}", "--workers=2"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for w in range(2)]
  outs = [p.communicate(timeout=1200) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  ran = sorted(c for out, _ in outs for c in json.loads(out.strip().splitlines()[-1])["ran"])
  assert ran == ["T1.0", "T1.0-notrunc", "base"]
  out = subprocess.run(common + ["--report_only"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  summary = json.loads(out.stdout.strip().splitlines()[-1])
  assert summary["missing_cells"] == [] and summary["ran"] == []
  assert set(summary["grid"]) == {"base", "T1.0", "T1.0-notrunc"}
  assert all(set(row) == {"0.7", "1"} for row in summary["grid"].values())
  assert {"T1.0", "T1.0-notrunc"} <= set(os.listdir(tmp_path))
  assert os.path.isdir(tmp_path / "T1.0" / "eval" / "ssd@2")  # the earlier checkpoint is scored too
  assert not os.path.exists(tmp_path / "base" / "samples")  # the base cell only evaluates
