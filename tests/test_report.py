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


# -- a fake workdir: eval summaries with their samples and verdicts, optional stage outputs -------------------


def write_run(root, model: str, temp: str, rates: list[float], *, n: int = 10, texts: dict | None = None,
              ks: tuple[int, ...] = (1,)) -> None:
  """eval/<model>/<model>_T<temp>.{summary.json,samples.jsonl,results.jsonl}: problem i passes rates[i] * n
  answers (the first ones); answer j of problem i reads texts.get((i, j), "answer <model> <i> <j>")."""
  model_dir = root / "eval" / model
  model_dir.mkdir(parents=True, exist_ok=True)
  tag = f"{model}_T{temp}"
  per = _per_problem(rates)
  for row in per.values():
    row["c"], row["n"] = round(row["pass@1"] * n), n
  passed = sum(row["c"] for row in per.values())
  overall = {f"pass@{k}": sum(rates) / len(rates) for k in ks}
  summary = {"tag": tag, "overall": overall, "per_problem": per, "n_problems": len(rates),
             "samples_per_problem": {"min": n, "max": n}, "verdicts": {"AC": passed, "WA": n * len(rates) - passed},
             "no_code_fraction": 0.0, "isolation": "bwrap"}
  (model_dir / f"{tag}.summary.json").write_text(json.dumps(summary))
  texts = texts or {}
  samples, results = [], []
  for i, (pid, row) in enumerate(per.items()):
    samples.append({"problem_id": pid, "completions": [texts.get((i, j), f"answer {model} {i} {j}") for j in range(n)],
                    "finish_reasons": ["stop"] * (n - 1) + ["length"]})
    results += [{"problem_id": pid, "sample_index": j, "verdict": "AC" if j < row["c"] else "WA"} for j in range(n)]
  (model_dir / f"{tag}.samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in samples))
  (model_dir / f"{tag}.results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))


BASE = [0.0, 0.5, 1.0, 0.2] * 5  # mean 0.425
SSD = [0.5, 0.5, 1.0, 0.6] * 5  # mean 0.65; per problem +0.5, 0, 0, +0.4: mean +0.225, never negative


def render(workdir) -> str:
  from ml_collections import config_dict

  from ssd_jax.analysis.report import write_report

  write_report(str(workdir), config_dict.ConfigDict({"seed": 0}))
  return (workdir / "report.md").read_text()


def test_headline_is_the_paired_delta_with_its_interval(tmp_path):
  write_run(tmp_path, "base", "0.5", BASE)
  write_run(tmp_path, "base", "0.9", [0.1] * 20)
  write_run(tmp_path, "ssd", "0.7", SSD)
  write_run(tmp_path, "ssd", "1.1", [0.6] * 20)
  head = collect(str(tmp_path))["headline"]
  assert (head["base_T"], head["ssd_T"]) == (0.5, 0.7)
  assert head["base_pass@1"] == pytest.approx(0.425) and head["ssd_pass@1"] == pytest.approx(0.65)
  assert head["delta_pass@1"] == pytest.approx(0.225) and head["problems"] == 20
  low, high = head["delta_ci95"]
  assert 0 < low < 0.225 < high <= 0.5  # no problem got worse: every resampled mean is >= 0
  assert head["delta_ci95"] == collect(str(tmp_path))["headline"]["delta_ci95"]  # seeded
  other_seed = paired_comparison(_per_problem(BASE), _per_problem(SSD), seed=1)["ci95"]
  assert other_seed != head["delta_ci95"] and other_seed[0] > 0
  assert head["sentence"].startswith("SSD raised pass@1 at each model's best T_eval: 42.5% (base, T_eval 0.5) -> "
                                     "65.0% (SSD, T_eval 0.7), +22.5 points")
  assert f"[{100 * low:+.1f}, {100 * high:+.1f}] points (width {100 * high - 100 * low:.1f})" in head["sentence"]
  assert "excludes 0" in head["sentence"]


def test_headline_says_when_t_eval_was_not_tuned(tmp_path):
  write_run(tmp_path, "base", "0.9", BASE)
  write_run(tmp_path, "ssd", "0.7", SSD)
  head = collect(str(tmp_path))["headline"]
  assert head["temperatures"] == {"base": 1, "ssd": 1}
  assert head["sentence"].startswith("SSD raised pass@1 with each model at its own evaluation setting (one T_eval for "
                                     "at least one model, so T_eval was not tuned for it;")
  assert "best T_eval" not in head["sentence"]


def test_headline_leads_the_report_and_says_when_nothing_changed(tmp_path):
  write_run(tmp_path, "base", "0.7", BASE)
  write_run(tmp_path, "ssd", "0.7", BASE)
  text = render(tmp_path)
  lines = [line for line in text.splitlines() if line and not line.startswith(("#", "Workdir"))]
  assert lines[0].startswith("**SSD did not measurably change pass@1") and "every problem tied" in lines[0]
  assert "includes 0" in lines[0]
  assert lines[2] == "![pass@1 vs T_eval](teval_sweep.png)"
  assert (tmp_path / "teval_sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ssd_checkpoints_table_and_selection(tmp_path):
  write_run(tmp_path, "base", "0.5", BASE)
  write_run(tmp_path, "ssd", "0.5", [0.3] * 20)
  write_run(tmp_path, "ssd", "0.9", [0.4] * 20)
  write_run(tmp_path, "ssd@2", "0.5", SSD)  # 0.65: the best cell ...
  write_run(tmp_path, "ssd@2", "0.9", SSD)  # ... tied at a higher T_eval
  write_run(tmp_path, "ssd@1", "0.5", SSD)  # ... tied at an earlier checkpoint
  write_run(tmp_path, "ssd@10", "0.7", [0.1] * 20)
  (tmp_path / "train").mkdir()
  (tmp_path / "train" / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n"
                                                            for s in (1, 2, 3)))
  summary = collect(str(tmp_path))
  ck = summary["checkpoints"]
  assert [r["model"] for r in ck["rows"]] == ["ssd@1", "ssd@2", "ssd@10", "ssd"]  # training order, final last
  assert ck["temperatures"] == ["0.5", "0.7", "0.9"] and ck["cells"] == 6
  assert ck["selected"] == {"model": "ssd@2", "step": 2, "final": False, "temperature": 0.5,
                            "pass@1": pytest.approx(0.65)}
  head = summary["headline"]
  assert (head["ssd_model"], head["ssd_step"], head["ssd_T"]) == ("ssd@2", 2, 0.5)
  assert head["delta_pass@1"] == pytest.approx(0.225)
  assert "checkpoint step 2, the best of 6 checkpoint x T_eval cells" in head["sentence"]
  text = render(tmp_path)
  assert "| SSD step 2 | **65.0** | not run | 65.0 |" in text
  assert "| SSD (final, step 3) | 30.0 | not run | 40.0 |" in text
  assert "Selected: step 2 at T_eval 0.5 (65.0%)" in text
  assert "| SSD step 10 |" not in text.split("### SSD checkpoints")[0]  # only the selected checkpoint's runs


def test_no_checkpoint_dirs_no_checkpoint_section(tmp_path):
  write_run(tmp_path, "base", "0.5", BASE)
  write_run(tmp_path, "ssd", "0.5", SSD)
  assert "checkpoints" not in collect(str(tmp_path))
  assert "SSD checkpoints" not in render(tmp_path)


def test_malformed_checkpoint_dir_is_named(tmp_path):
  write_run(tmp_path, "ssd@last", "0.5", SSD)
  with pytest.raises(ValueError, match=r"eval/ssd@last: .*ssd@<step>"):
    collect(str(tmp_path))


def test_report_hides_empty_sections_and_writes_words(tmp_path):
  write_run(tmp_path, "base", "0.5", BASE, ks=(1,))  # as if n < 10: pass@10 left out
  write_run(tmp_path, "base", "0.9", BASE, ks=(1, 10))
  write_run(tmp_path, "ssd", "0.5", SSD, ks=(1, 10))
  text = render(tmp_path)
  for section in ("## Data", "## Training", "## Diagnostics", "## Model", "By difficulty"):
    assert section not in text
  assert "| - |" not in text and ": -" not in text and "{'" not in text
  assert "| base | 0.5 | 42.5 | k > answers |" in text  # said, not "-"
  assert ("- base at its best T_eval 0.5: of 200 answers, 115 gave a wrong answer (57.5%), 85 passed every test "
          "(42.5%).") in text


def test_data_training_and_diagnostics_in_words(tmp_path):
  write_run(tmp_path, "base", "0.5", BASE)
  write_run(tmp_path, "ssd", "0.5", SSD)
  (tmp_path / "samples").mkdir()
  counts = {"prompts_in": 5, "prompts": 4, "bad_rows": 1, "samples": 4, "kept": 4, "tokens": 100, "kept_tokens": 100,
            "filtered": {}, "finish_reasons": {"stop": 3, "length": 1}}
  (tmp_path / "samples" / "manifest.json").write_text(json.dumps({"counts": counts}))
  (tmp_path / "analysis").mkdir()
  cfg = {"temperatures": [0.5, 1.0], "reference_temperature": 1.0, "top_k": 20, "top_p": 0.8, "ranks": 20,
         "top_mass_rank": 20, "bucket_labels": [">=99%", "<99%"]}

  def model(counts, bucket_entropy):  # the overall entropy is the count-weighted mean of the buckets'
    overall = sum(c * e for c, e in zip(counts, bucket_entropy)) / sum(counts)
    return {"positions": sum(counts), "cum_mass": [0.9] * 20, "survivors": [1.5, 2.0], "entropy": [0.1, overall],
            "bucket_counts": counts, "bucket_entropy": [[0.0, e] for e in bucket_entropy]}

  diag = {"config": cfg, "models": {"base": model([10, 90], [0.1, 1.0]), "ssd": model([90, 10], [0.2, 1.5])},
          "pngs": ["/elsewhere/analysis/fig6a_cum_mass.png"]}
  (tmp_path / "analysis" / "diagnostics.json").write_text(json.dumps(diag))
  text = render(tmp_path)
  assert ("Of all answers, 3 ended with a stop token (75.0%), 1 hit the token limit (25.0%)." in text)
  assert "SSD's entropy is higher than base's in 2 of the 2 groups both models populate; its overall mean is lower " \
         "(0.330 vs 0.910 nats)" in text
  assert "That is what happens here: the most confident populated group (>=99%) holds 10.0% of base's positions " \
         "and 90.0% of SSD's" in text
  assert "![fig6a_cum_mass.png](analysis/fig6a_cum_mass.png)" in text


def test_example_answers_show_ssds_largest_gain(tmp_path):
  fenced = "```python\nprint(1)\n```"
  write_run(tmp_path, "base", "0.5", BASE)
  write_run(tmp_path, "ssd", "0.7", SSD, texts={(0, 0): fenced})
  summary = collect(str(tmp_path))
  examples = summary["examples"]
  assert [e["model"] for e in examples] == ["base", "ssd"]
  assert {e["problem_id"] for e in examples} == {"P/0"}  # +0.5 on P/0, the first of the largest gains
  base, ssd = examples
  assert (base["sample_index"], base["verdict"], base["text"]) == (0, "WA", "answer base 0 0")  # no AC: the first
  assert (ssd["sample_index"], ssd["verdict"], ssd["text"]) == (0, "AC", fenced)
  text = render(tmp_path)
  assert "**SSD**, T_eval 0.7, answer 0: it passed every test and ended with a stop token" in text
  assert "````text\n" + fenced + "\n````" in text  # a longer fence than the answer's own
