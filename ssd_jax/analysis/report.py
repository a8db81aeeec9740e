"""The run report: `report.md` (with PNG plots beside it) and `summary.json`, built from what the stages wrote.

Everything is read back from the workdir (samples/manifest.json, train/metrics.jsonl, eval/<model>/*.summary.json
with the samples and verdicts beside them, analysis/diagnostics.json), so the report can be rebuilt at any time
with `--stage=analyze` and reflects whatever is complete. Only process 0 writes.

The report leads with the answer: did SSD change pass@1, each model at its best T_eval, by how much, with a
paired bootstrap interval over the problems both were scored on. Evaluated training checkpoints of the SSD model
sit in eval/ssd@<step> beside eval/ssd (the final one); the SSD side of the headline is then the best
(checkpoint, T_eval) cell, as the paper selects (best over checkpoints and T_eval on the evaluation set itself).
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Any

from ssd_jax.analysis import report_text
from ssd_jax.files import read_jsonl, write_atomic, write_json_atomic

__all__ = ["collect", "example_answers", "paired_comparison", "select_checkpoint", "write_report"]

CHECKPOINT_DIR = re.compile(r"ssd@(.*)")  # eval/ssd@<step>: an SSD training checkpoint other than the final one
EXAMPLE_CHARS = 1500  # of each example answer, kept in summary.json and shown in the report


def _load_json(path: str) -> Any:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _metrics(path: str) -> list[dict]:
  return read_jsonl(path, torn="drop", missing_ok=True)  # appended per step: a kill may tear the last line


def _eval_runs(model_dir: str) -> dict[str, dict]:
  """T (as written in the tag) -> summary, for every finished run of one model, in increasing T."""
  runs = {}
  for path in sorted(glob.glob(os.path.join(model_dir, "*_T*.summary.json"))):
    summary = _load_json(path)
    runs[summary["tag"].rsplit("_T", 1)[1]] = summary
  return dict(sorted(runs.items(), key=lambda kv: float(kv[0])))


def _best_temperature(runs: dict[str, dict]) -> str:
  """The T (tag text) with the highest overall pass@1; ties go to the lower T (runs are in increasing T)."""
  return max(runs, key=lambda t: runs[t]["overall"].get("pass@1", 0.0))


def _run_key(runs: dict[str, dict], temperature: float) -> str:
  """The runs' key (T as its tag writes it) of a temperature given as a number."""
  return next(t for t in runs if float(t) == temperature)


def paired_comparison(base: dict[str, dict], ssd: dict[str, dict], *, resamples: int = 10_000,
                      seed: int = 0) -> dict[str, Any]:
  """SSD minus base pass@1 over the problems both judged, with a paired bootstrap 95% interval.

  `base`, `ssd`: a summary's `per_problem` ({problem id: {"pass@1", ...}}: c / n of that problem's n answers).
  Problems are resampled with replacement (the same draw for both models, so per-problem difficulty cancels
  out); the interval is the 2.5th and 97.5th percentiles of the resampled mean difference, from a generator
  seeded with `seed`. `better` / `worse` count problems whose pass@1 went up / down.
  """
  import numpy as np

  ids = sorted(set(base) & set(ssd))
  if not ids:
    return {"problems": 0}
  diff = np.array([ssd[i]["pass@1"] - base[i]["pass@1"] for i in ids], np.float64)
  draws = np.random.default_rng(seed).integers(0, len(ids), size=(resamples, len(ids)))
  means = diff[draws].mean(axis=1)
  low, high = np.percentile(means, [2.5, 97.5])
  return {"problems": len(ids), "delta_pass@1": float(diff.mean()), "ci95": [float(low), float(high)],
          "better": int((diff > 0).sum()), "worse": int((diff < 0).sum()), "tied": int((diff == 0).sum()),
          "resamples": resamples, "seed": seed, "significant": bool(low > 0 or high < 0)}


def _checkpoint_step(model: str) -> int | None:
  """ssd@<step> -> step; None for any other model name. A malformed ssd@ directory is an error."""
  match = CHECKPOINT_DIR.fullmatch(model)
  if match is None:
    return None
  if not match.group(1).isdigit():
    raise ValueError(f"eval/{model}: an SSD checkpoint's results directory must be named ssd@<step> with an "
                     "integer training step")
  return int(match.group(1))


def select_checkpoint(evals: dict[str, dict], final_step: int | None) -> dict[str, Any] | None:
  """The SSD checkpoint x T_eval pass@1 table and its best cell, or None without any ssd@<step> results.

  Rows are the checkpoints in training order, the final one (model "ssd", at `final_step` when known) last.
  The selected cell has the highest pass@1; ties go to the lower T_eval, then to the later checkpoint.
  """
  steps = {name: _checkpoint_step(name) for name in evals}
  if not any(step is not None for step in steps.values()):
    return None
  rows = [{"model": name, "step": step, "final": False} for name, step in steps.items() if step is not None]
  if "ssd" in evals:
    rows.append({"model": "ssd", "step": final_step, "final": True})
  rows.sort(key=lambda r: (r["final"], r["step"] if r["step"] is not None else 0))
  for row in rows:
    row["pass@1"] = {t: r["overall"].get("pass@1", 0.0) for t, r in evals[row["model"]]["runs"].items()}
  order = {row["model"]: i for i, row in enumerate(rows)}
  cells = [(row["pass@1"][t], -float(t), order[row["model"]], row, t) for row in rows for t in row["pass@1"]]
  value, _, _, row, temp = max(cells, key=lambda c: c[:3])
  temperatures = sorted({t for row in rows for t in row["pass@1"]}, key=float)
  return {"rows": rows, "temperatures": temperatures, "cells": len(cells),
          "selected": {"model": row["model"], "step": row["step"], "final": row["final"], "temperature": float(temp),
                       "pass@1": value}}


def _headline(evals: dict[str, dict], per_problem: dict[tuple[str, str], dict], checkpoints: dict | None,
              final_step: int | None) -> dict[str, Any] | None:
  """Base at its best T_eval against the SSD model's best (checkpoint, T_eval) cell, paired over problems."""
  if "base" not in evals or not ("ssd" in evals or checkpoints):
    return None
  base_t = _best_temperature(evals["base"]["runs"])
  if checkpoints:
    pick = checkpoints["selected"]
    ssd_model, ssd_step, ssd_final = pick["model"], pick["step"], pick["final"]
    ssd_t = _run_key(evals[ssd_model]["runs"], pick["temperature"])
  else:
    ssd_model, ssd_step, ssd_final = "ssd", final_step, True
    ssd_t = _best_temperature(evals["ssd"]["runs"])
  base_p1 = evals["base"]["runs"][base_t]["overall"].get("pass@1")
  ssd_p1 = evals[ssd_model]["runs"][ssd_t]["overall"].get("pass@1")
  paired = paired_comparison(per_problem[("base", base_t)], per_problem[(ssd_model, ssd_t)])
  head = {"base_pass@1": base_p1, "base_T": float(base_t), "ssd_pass@1": ssd_p1, "ssd_T": float(ssd_t),
          "ssd_model": ssd_model, "ssd_step": ssd_step, "ssd_final": ssd_final,
          "delta_pass@1": paired["delta_pass@1"] if paired["problems"] else (ssd_p1 or 0.0) - (base_p1 or 0.0),
          "delta_ci95": paired.get("ci95"), "problems": paired["problems"], "paired": paired,
          # how many T_eval each model was scored at: with one, its "best" T_eval is not a tuned one
          "temperatures": {"base": len(evals["base"]["runs"]), "ssd": len(evals[ssd_model]["runs"])}}
  head["sentence"] = report_text.headline_sentence(head, checkpoints)
  return head


def collect(workdir: str) -> dict[str, Any]:
  """Every number of the report, as one JSON-serialisable object (keys starting with "_" are internal)."""
  manifest = _load_json(os.path.join(workdir, "samples", "manifest.json")) or {}
  curve = _metrics(os.path.join(workdir, "train", "metrics.jsonl"))
  evals, per_problem, model_dirs = {}, {}, {}
  for model_dir in sorted(glob.glob(os.path.join(workdir, "eval", "*"))):
    runs = _eval_runs(model_dir)
    if not runs:
      continue
    name = os.path.basename(model_dir)
    best_t = _best_temperature(runs)
    evals[name] = {
        "runs": {t: {"overall": r["overall"], "by_difficulty": r.get("by_difficulty", {}),
                     "windows": r.get("windows", {}), "verdicts": r.get("verdicts"),
                     "n_problems": r["n_problems"], "samples_per_problem": r["samples_per_problem"],
                     "no_code_fraction": r.get("no_code_fraction"), "isolation": r.get("isolation"),
                     "sampling": r.get("sampling"), "tag": r["tag"]} for t, r in runs.items()},
        "best": {"temperature": float(best_t), **runs[best_t]["overall"],
                 "by_difficulty": runs[best_t].get("by_difficulty", {})}}
    per_problem.update({(name, t): r.get("per_problem", {}) for t, r in runs.items()})
    model_dirs[name] = model_dir
  export = os.path.join(workdir, "export")
  final_step = curve[-1]["step"] if curve else None
  checkpoints = select_checkpoint(evals, final_step)
  summary = {
      "workdir": workdir,
      "data": manifest.get("counts", {}),
      "train": {"steps": final_step or 0, "loss_first": curve[0].get("loss") if curve else None,
                "loss_last": curve[-1].get("loss") if curve else None,
                "tokens_per_s_mean": (sum(m.get("tokens_per_s", 0.0) for m in curve) / len(curve)) if curve else None},
      "eval": evals,
      "export": export if os.path.exists(os.path.join(export, "config.json")) else None,
      "diagnostics": _load_json(os.path.join(workdir, "analysis", "diagnostics.json")),
  }
  if checkpoints:
    summary["checkpoints"] = checkpoints
  head = _headline(evals, per_problem, checkpoints, final_step)
  if head:
    summary["headline"] = head
  shown = ([("base", _run_key(evals["base"]["runs"], head["base_T"])),
            (head["ssd_model"], _run_key(evals[head["ssd_model"]]["runs"], head["ssd_T"]))] if head
           else [(name, _run_key(ev["runs"], ev["best"]["temperature"])) for name, ev in evals.items()])
  summary["examples"] = example_answers(evals, model_dirs, per_problem, shown, paired=head is not None)
  summary["_curve"] = [{"step": m["step"], "loss": m.get("loss"), "learning_rate": m.get("learning_rate")}
                       for m in curve]
  return summary


def _run_files(model_dir: str, tag: str, kind: str) -> list[str]:
  """A run's `kind` ("samples" / "results") files: one, or one per process (`<tag>.p<i>of<n>.<kind>.jsonl`)."""
  return sorted(glob.glob(os.path.join(glob.escape(model_dir), f"{glob.escape(tag)}.{kind}.jsonl"))
                + glob.glob(os.path.join(glob.escape(model_dir), f"{glob.escape(tag)}.p*of*.{kind}.jsonl")))


def example_answers(evals: dict[str, dict], model_dirs: dict[str, str], per_problem: dict[tuple[str, str], dict],
                    shown: list[tuple[str, str]], *, paired: bool) -> list[dict[str, Any]]:
  """One answer per shown (model, T) run to the same problem, read from the samples and verdicts on disk.

  With `paired` (shown = base, then the headline's SSD run) the problem is where SSD's pass@1 rose most over
  base's (ties: the first id), so the pair shows the change when there is one; otherwise one the first model
  solved, if any. Each model's answer is its first accepted one there, else its first. Runs whose samples are
  not on disk are left out.
  """
  texts = {}
  for name, temp in shown:
    tag = evals[name]["runs"][temp]["tag"]
    rows = {r["problem_id"]: r for path in _run_files(model_dirs[name], tag, "samples")
            for r in read_jsonl(path, torn="drop")}
    verdicts = {(r["problem_id"], r["sample_index"]): r["verdict"]
                for path in _run_files(model_dirs[name], tag, "results") for r in read_jsonl(path, torn="drop")}
    if rows:
      texts[(name, temp)] = (rows, verdicts)
  common = sorted(set.intersection(*(set(rows) for rows, _ in texts.values()))) if texts else []
  if not common:
    return []

  def rate(model_temp: tuple[str, str], pid: str) -> float:
    return per_problem[model_temp].get(pid, {}).get("pass@1", 0.0)

  if paired:  # SSD's largest gain over base (max keeps the first id among equal gains)
    problem = max(common, key=lambda pid: rate(shown[1], pid) - rate(shown[0], pid))
  else:  # no pair: a problem the first model solved, if any
    problem = max(common, key=lambda pid: rate(shown[0], pid) > 0)
  out = []
  for (name, temp), (rows, verdicts) in texts.items():
    row = rows[problem]
    index = next((i for i in range(len(row["completions"])) if verdicts.get((problem, i)) == "AC"), 0)
    reasons = row.get("finish_reasons") or []
    text = row["completions"][index]
    out.append({"model": name, "temperature": float(temp), "problem_id": problem, "sample_index": index,
                "verdict": verdicts.get((problem, index)), "finish_reason": reasons[index] if index < len(reasons)
                else None, "pass@1": per_problem[(name, temp)].get(problem, {}).get("pass@1"),
                "text": text[:EXAMPLE_CHARS], "chars": len(text)})
  return out


def _plots(summary: dict, workdir: str) -> dict[str, str]:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  out = {}
  curve = [m for m in summary["_curve"] if m["loss"] is not None]
  if curve:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([m["step"] for m in curve], [m["loss"] for m in curve], marker="o", ms=3)
    ax.set(xlabel="step", ylabel="SFT loss (response tokens)", title="Training curve")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out["train_loss"] = os.path.join(workdir, "train_loss.png")
    fig.savefig(out["train_loss"], dpi=110)
    plt.close(fig)
  if summary["eval"]:
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    head = summary.get("headline")
    leads = ["base", head["ssd_model"]] if head else list(summary["eval"])
    for name, ev in summary["eval"].items():
      temps = [float(t) for t in ev["runs"]]
      pct = [100 * r["overall"].get("pass@1", 0.0) for r in ev["runs"].values()]
      lead = name in leads
      line, = ax.plot(temps, pct, marker="o" if lead else ".", lw=2 if lead else 0.8, ls="-" if lead else "--",
                      alpha=1.0 if lead else 0.6, label=report_text.model_label(name, summary))
      if lead:
        best = max(range(len(pct)), key=lambda i: (pct[i], -temps[i]))
        ax.plot([temps[best]], [pct[best]], marker="*", ms=14, color=line.get_color(), ls="none")
    ax.set(xlabel="T_eval", ylabel="pass@1 (%)", title="pass@1 vs T_eval (star: each model's best)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out["teval_sweep"] = os.path.join(workdir, "teval_sweep.png")
    fig.savefig(out["teval_sweep"], dpi=110)
    plt.close(fig)
  return out


def write_report(workdir: str, config) -> dict[str, Any]:
  """Writes report.md, summary.json and the PNGs into `workdir` (process 0); returns the summary."""
  import jax

  summary = collect(workdir)
  if jax.process_index() == 0:
    plots = _plots(summary, workdir)
    config_json = config.to_json_best_effort(indent=1, sort_keys=True)
    summary["plots"] = plots
    summary["report"] = os.path.join(workdir, "report.md")
    write_atomic(summary["report"], report_text.markdown(summary, config_json, plots))
    write_json_atomic(os.path.join(workdir, "summary.json"),
                      {k: v for k, v in summary.items() if not k.startswith("_")})
  return {k: v for k, v in summary.items() if not k.startswith("_")}
