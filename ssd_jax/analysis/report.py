"""The run report: `report.md` (with PNG plots beside it) and `summary.json`, built from what the stages wrote.

Everything is read back from the workdir (samples/manifest.json, train/metrics.jsonl, eval/<model>/*.summary.json,
analysis/diagnostics.json), so the report can be rebuilt at any time with `--stage=analyze` and reflects whatever is
complete. Only process 0 writes.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any

from ssd_jax.files import read_jsonl, write_atomic, write_json_atomic

__all__ = ["collect", "paired_comparison", "write_report"]


def _load_json(path: str) -> Any:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _metrics(path: str) -> list[dict]:
  return read_jsonl(path, torn="drop", missing_ok=True)  # appended per step: a kill may tear the last line


def _eval_runs(model_dir: str) -> dict[str, dict]:
  """T (as written in the tag) -> summary, for every finished run of one model."""
  runs = {}
  for path in sorted(glob.glob(os.path.join(model_dir, "*_T*.summary.json"))):
    summary = _load_json(path)
    runs[summary["tag"].rsplit("_T", 1)[1]] = summary
  return dict(sorted(runs.items(), key=lambda kv: float(kv[0])))


def paired_comparison(base: dict[str, dict], ssd: dict[str, dict], *, resamples: int = 10_000,
                      seed: int = 0) -> dict[str, Any]:
  """SSD minus base pass@1 over the problems both judged, with a paired bootstrap 95% interval.

  `base`, `ssd`: a summary's `per_problem` ({problem id: {"pass@1", ...}}). Problems are resampled with
  replacement (the same draw for both models, so per-problem difficulty cancels out); the interval is the 2.5th and
  97.5th percentiles of the resampled mean difference. `better` / `worse` count problems whose pass@1 went up / down.
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
          "resamples": resamples, "significant": bool(low > 0 or high < 0)}


def collect(workdir: str) -> dict[str, Any]:
  """Every number of the report, as one JSON-serialisable object."""
  manifest = _load_json(os.path.join(workdir, "samples", "manifest.json")) or {}
  curve = _metrics(os.path.join(workdir, "train", "metrics.jsonl"))
  evals, best_per_problem = {}, {}
  for model_dir in sorted(glob.glob(os.path.join(workdir, "eval", "*"))):
    runs = _eval_runs(model_dir)
    if not runs:
      continue
    best_t = max(runs, key=lambda t: runs[t]["overall"].get("pass@1", 0.0))
    evals[os.path.basename(model_dir)] = {
        "runs": {t: {"overall": r["overall"], "by_difficulty": r.get("by_difficulty", {}),
                     "windows": r.get("windows", {}), "verdicts": r.get("verdicts"),
                     "n_problems": r["n_problems"], "samples_per_problem": r["samples_per_problem"],
                     "no_code_fraction": r.get("no_code_fraction"), "isolation": r.get("isolation"),
                     "sampling": r.get("sampling")} for t, r in runs.items()},
        "best": {"temperature": float(best_t), **runs[best_t]["overall"],
                 "by_difficulty": runs[best_t].get("by_difficulty", {})}}
    best_per_problem[os.path.basename(model_dir)] = runs[best_t].get("per_problem", {})
  export = os.path.join(workdir, "export")
  summary = {
      "workdir": workdir,
      "data": manifest.get("counts", {}),
      "train": {"steps": curve[-1]["step"] if curve else 0, "loss_first": curve[0].get("loss") if curve else None,
                "loss_last": curve[-1].get("loss") if curve else None,
                "tokens_per_s_mean": (sum(m.get("tokens_per_s", 0.0) for m in curve) / len(curve)) if curve else None},
      "eval": evals,
      "export": export if os.path.exists(os.path.join(export, "config.json")) else None,
      "diagnostics": _load_json(os.path.join(workdir, "analysis", "diagnostics.json")),
  }
  if "base" in evals and "ssd" in evals:
    base, ssd = evals["base"]["best"], evals["ssd"]["best"]
    summary["headline"] = {"base_pass@1": base.get("pass@1"), "base_T": base["temperature"],
                           "ssd_pass@1": ssd.get("pass@1"), "ssd_T": ssd["temperature"],
                           "delta_pass@1": (ssd.get("pass@1") or 0.0) - (base.get("pass@1") or 0.0),
                           "paired": paired_comparison(best_per_problem["base"], best_per_problem["ssd"])}
  summary["_curve"] = [{"step": m["step"], "loss": m.get("loss"), "learning_rate": m.get("learning_rate")}
                       for m in curve]
  return summary


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
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, ev in summary["eval"].items():
      temps = [float(t) for t in ev["runs"]]
      ax.plot(temps, [r["overall"].get("pass@1", 0.0) for r in ev["runs"].values()], marker="o", label=name)
    ax.set(xlabel="T_eval", ylabel="pass@1", title="T_eval sweep")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out["teval_sweep"] = os.path.join(workdir, "teval_sweep.png")
    fig.savefig(out["teval_sweep"], dpi=110)
    plt.close(fig)
  return out


def _fmt(x: Any) -> str:
  return f"{100 * x:.1f}" if isinstance(x, float) else ("-" if x is None else str(x))


def _markdown(summary: dict, config_json: str, plots: dict[str, str]) -> str:
  lines = ["# SSD run report", "", f"Workdir: `{summary['workdir']}`", ""]
  head = summary.get("headline")
  if head:
    lines += ["## Headline", "",
              f"pass@1: base **{_fmt(head['base_pass@1'])}%** (T_eval {head['base_T']:g}) -> SSD "
              f"**{_fmt(head['ssd_pass@1'])}%** (T_eval {head['ssd_T']:g}); change {100 * head['delta_pass@1']:+.1f} "
              "points.", ""]
    paired = head.get("paired") or {}
    if paired.get("problems"):
      low, high = paired["ci95"]
      lines += [f"Paired over {paired['problems']} problems: {100 * paired['delta_pass@1']:+.1f} points, bootstrap 95% "
                f"interval [{100 * low:+.1f}, {100 * high:+.1f}]"
                f" ({'excludes' if paired['significant'] else 'includes'} 0); SSD better on {paired['better']}, "
                f"worse on {paired['worse']}, tied on {paired['tied']}.", ""]
  d = summary["data"]
  if d:
    lines += ["## Data (synthesis)", "", "| prompts in | prompts sampled | bad rows | samples | kept | tokens | "
              "filtered | finish reasons |", "|---|---|---|---|---|---|---|---|",
              f"| {d.get('prompts_in')} | {d.get('prompts')} | {d.get('bad_rows')} | {d.get('samples')} | "
              f"{d.get('kept')} | {d.get('tokens')} | {d.get('filtered')} | {d.get('finish_reasons')} |", ""]
  t = summary["train"]
  if t["steps"]:
    lines += ["## Training", "", f"{t['steps']} steps; loss {t['loss_first']:.4f} -> {t['loss_last']:.4f}; mean "
              f"{t['tokens_per_s_mean']:.0f} tokens/s.", ""]
    if "train_loss" in plots:
      lines += ["![training curve](train_loss.png)", ""]
  if summary["eval"]:
    lines += ["## Evaluation", ""]
    ks = sorted({k for ev in summary["eval"].values() for r in ev["runs"].values() for k in r["overall"]})
    lines += ["| model | T_eval | " + " | ".join(ks) + " | problems x n | no code | isolation |",
              "|---|---|" + "---|" * len(ks) + "---|---|---|"]
    for name, ev in summary["eval"].items():
      for temp, r in ev["runs"].items():
        cells = " | ".join(_fmt(r["overall"].get(k)) for k in ks)
        lines.append(f"| {name} | {temp} | {cells} | {r['n_problems']} x {r['samples_per_problem']['max']} | "
                     f"{_fmt(r['no_code_fraction'])}% | {r['isolation']} |")
    lines += ["", "pass@k in %, macro-averaged over problems (unbiased estimator). Per difficulty, at each model's "
              "best T_eval:", ""]
    for name, ev in summary["eval"].items():
      per = ev["best"].get("by_difficulty") or {}
      cells = ", ".join(f"{diff or 'all'}: " + " / ".join(f"{k} {_fmt(v)}" for k, v in vals.items() if k != "n")
                        for diff, vals in per.items())
      lines.append(f"- {name} (T {ev['best']['temperature']:g}): {cells or '-'}")
    lines.append("")
    if "teval_sweep" in plots:
      lines += ["![T_eval sweep](teval_sweep.png)", ""]
  diag = summary.get("diagnostics")
  if diag:
    lines += ["## Diagnostics (Fig. 6)", ""] + [f"![{os.path.basename(p)}]({os.path.relpath(p, summary['workdir'])})"
                                                for p in diag.get("pngs", [])] + [""]
  lines += ["## Model", "", f"Exported SSD model (HF format): `{summary['export']}`" if summary["export"]
            else "No exported model (config.train.export is off, or training has not finished).", "",
            "## Configuration", "", "```json", config_json, "```", ""]
  return "\n".join(lines)


def write_report(workdir: str, config) -> dict[str, Any]:
  """Writes report.md, summary.json and the PNGs into `workdir` (process 0); returns the summary."""
  import jax

  summary = collect(workdir)
  if jax.process_index() == 0:
    plots = _plots(summary, workdir)
    config_json = config.to_json_best_effort(indent=1, sort_keys=True)
    summary["plots"] = plots
    summary["report"] = os.path.join(workdir, "report.md")
    write_atomic(summary["report"], _markdown(summary, config_json, plots))
    write_json_atomic(os.path.join(workdir, "summary.json"),
                      {k: v for k, v in summary.items() if not k.startswith("_")})
  return {k: v for k, v in summary.items() if not k.startswith("_")}
