"""A T_train x T_eval grid of SSD runs (the paper's Fig. 3), scored against the base model's best T_eval.

  python -m ssd_jax.sweep --config=configs/smollm2_grid.py                      # every cell, then the report
  taskset -c 0 python -m ssd_jax.sweep --config=... --worker=0 --workers=2 &    # two workers, one per core,
  taskset -c 1 python -m ssd_jax.sweep --config=... --worker=1 --workers=2      # then --report_only
  python -m ssd_jax.sweep --config=configs/smollm2_grid.py --report_only

The config file is an ordinary experiment config (`get_config()`) that also defines `CELLS`: {cell name: {dotted
config key: value}}, the overrides of each SSD run (e.g. {"sample.temperature": 1.6}); for a config without
`CELLS` (the paper configs), `--t_train=1.2,1.6,2.0` makes one cell per T_train (`T1.2`, ...), keeping the config's
truncation. Each cell synthesizes, trains and evaluates the SSD model (and `eval.ssd.checkpoints`) at
`eval.ssd.temperatures` in `<workdir>/<cell>`;
the base model is evaluated once at `eval.base.temperatures` in `<workdir>/base`. Cells are independent and every
stage resumes, so workers split the cells (cell i runs on worker i mod workers) and a killed sweep is rerun as is.
On a cluster each cell is one job: `--cells=T1.6` runs just that cell (`base` is the base model's), `--list_cells`
prints the names; `launch/sweep.sh` queues one job per cell through any launcher, then writes the report.

The report (`<workdir>/sweep.md`, `sweep.json`, `heatmap.png`) holds the pass@1 grid (each cell at its best
checkpoint, as the paper reports) and checks the paper's three claims at this scale with paired bootstrap
intervals over problems: (1) SSD's best cell beats the base model at its best T_eval; (2) truncation at training
matters (the same T_train with and without it); (3) the gain holds on held-out families (the evaluation problems'
families are disjoint from the synthesis prompts'; per family, how many improved). Choosing the best cell on the
evaluation problems themselves flatters claim (1), as in the paper (ssd_paper.md §2.3); the report says so.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from typing import Any, Mapping

from absl import app, flags
from ml_collections import config_dict, config_flags

log = logging.getLogger("ssd_jax")

BASE_CELL = "base"


def load_cells(config_path: str, t_train: tuple[float, ...] = ()) -> dict[str, dict[str, Any]]:
  """The `CELLS` table of a grid config file (the path config_flags was given, without its `:arg`), or, given
  `t_train` temperatures, one cell `T<t>` per temperature (the file's own CELLS, if any, are then not used)."""
  if t_train:
    return {f"T{t:g}": {"sample.temperature": float(t)} for t in t_train}
  path = config_path.split(":", 1)[0]
  spec = importlib.util.spec_from_file_location("_ssd_grid_config", path)
  module = importlib.util.module_from_spec(spec)
  sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
  spec.loader.exec_module(module)
  cells = getattr(module, "CELLS", None)
  if not isinstance(cells, Mapping) or not cells or BASE_CELL in cells:
    raise ValueError(f"{path}: expected a non-empty dict CELLS = {{cell name: {{dotted key: value}}}} (a cell may "
                     f"not be named {BASE_CELL!r}), or --t_train=1.2,1.6,... for one cell per T_train")
  return {name: dict(overrides) for name, overrides in cells.items()}


def select_cells(cells: Mapping[str, Any], worker: int = 0, workers: int = 1, only: tuple[str, ...] = ()
                 ) -> list[str]:
  """The cells one worker runs, base first: `only` (names, `base` included) or every workers-th cell."""
  names = [BASE_CELL, *cells]
  unknown = [name for name in only if name not in names]
  if unknown:
    raise ValueError(f"--cells: {', '.join(unknown)} not in this grid (expected some of {', '.join(names)})")
  if only:
    return [name for name in names if name in only]
  return [name for i, name in enumerate(names) if i % workers == worker]


def cell_config(config: config_dict.ConfigDict, cell: str, overrides: Mapping[str, Any]) -> config_dict.ConfigDict:
  """The grid's config with one cell's overrides, its own workdir, and the model it evaluates."""
  out = config_dict.ConfigDict(config.to_dict())
  for key, value in overrides.items():
    node = out
    *parents, leaf = key.split(".")
    for part in parents:
      node = node[part]
    if leaf not in node:
      raise ValueError(f"cell {cell!r}: config.{key} is not a config field")
    node[leaf] = value
  out.workdir = os.path.join(config.workdir, cell)
  out.eval.models = ("base",) if cell == BASE_CELL else ("ssd",)
  out.analysis.diagnostics = False
  return out


def run_cells(config: config_dict.ConfigDict, cells: Mapping[str, Mapping[str, Any]], mine: list[str]
              ) -> list[str]:
  """Runs the cells `mine` (from `select_cells`) as `main.run` runs one experiment (configs and the sandbox checked
  first, jax.distributed on several hosts); the base model is loaded once and shared. Returns them."""
  from ssd_jax import coordination, main, stages

  configs = {name: cell_config(config, name, cells.get(name, {})) for name in mine}
  for cfg in configs.values():
    main.check_config(cfg)
  if configs:
    stages.check_sandbox(next(iter(configs.values())))
  main.maybe_initialize_distributed(config)
  coordination.set_barrier_timeout(config.distributed.barrier_timeout_s)
  base = None
  for name, cfg in configs.items():
    run = stages.start_run(cfg)
    run.base = base
    if name != BASE_CELL:
      stages.synthesize(run)
      stages.train(run)
    stages.evaluate(run)
    base = run.base
    log.info("sweep: cell %s done", name)
  coordination.barrier("ssd_jax.sweep.done")
  return mine


def _best(model_dir: str) -> dict[str, Any] | None:
  """The best (checkpoint, T_eval) run under a cell's eval dir: highest pass@1, ties to the lower T."""
  from ssd_jax.analysis.report import _eval_runs

  best = None
  for model in sorted(os.listdir(model_dir)) if os.path.isdir(model_dir) else []:
    for temperature, summary in _eval_runs(os.path.join(model_dir, model)).items():
      score = summary["overall"]["pass@1"]
      if best is None or score > best["pass@1"] or (score == best["pass@1"] and float(temperature) < best["T"]):
        best = {"model": model, "T": float(temperature), "pass@1": score, "per_problem": summary["per_problem"]}
  return best


def _grid(workdir: str, cells: Mapping[str, Any]) -> dict[str, dict[str, float]]:
  """cell -> {T_eval: pass@1 at the cell's best checkpoint for that T}."""
  from ssd_jax.analysis.report import _eval_runs

  grid = {}
  for cell in [BASE_CELL, *cells]:
    row: dict[str, float] = {}
    eval_dir = os.path.join(workdir, cell, "eval")
    for model in sorted(os.listdir(eval_dir)) if os.path.isdir(eval_dir) else []:
      for temperature, summary in _eval_runs(os.path.join(eval_dir, model)).items():
        row[temperature] = max(row.get(temperature, 0.0), summary["overall"]["pass@1"])
    grid[cell] = dict(sorted(row.items(), key=lambda kv: float(kv[0])))
  return grid


def _family(problem_id: str) -> str:
  parts = problem_id.split("/")
  return parts[1] if len(parts) == 3 else problem_id


def _by_family(base: Mapping[str, dict], ssd: Mapping[str, dict]) -> dict[str, Any]:
  """Per-family mean pass@1 change: how many held-out families improved, stayed, or got worse."""
  import collections

  deltas = collections.defaultdict(list)
  for pid in set(base) & set(ssd):
    deltas[_family(pid)].append(ssd[pid]["pass@1"] - base[pid]["pass@1"])
  means = {family: sum(d) / len(d) for family, d in sorted(deltas.items())}
  return {"families": len(means), "better": sum(m > 0 for m in means.values()),
          "worse": sum(m < 0 for m in means.values()), "same": sum(m == 0 for m in means.values()),
          "delta_by_family": means}


def report(config: config_dict.ConfigDict, cells: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
  """sweep.json, sweep.md and heatmap.png under the grid's workdir; returns the summary."""
  from ssd_jax.analysis.report import paired_comparison
  from ssd_jax.files import write_atomic, write_json_atomic

  workdir = config.workdir
  grid = _grid(workdir, cells)
  best = {cell: _best(os.path.join(workdir, cell, "eval")) for cell in [BASE_CELL, *cells]}
  missing = [cell for cell, b in best.items() if b is None]
  summary: dict[str, Any] = {"workdir": workdir, "grid": grid, "missing_cells": missing,
                             "best": {c: {k: v for k, v in b.items() if k != "per_problem"}
                                      for c, b in best.items() if b is not None}}
  base = best[BASE_CELL]
  done = {c: b for c, b in best.items() if c != BASE_CELL and b is not None}
  claims: dict[str, Any] = {}
  # Every cell at its own best (checkpoint, T_eval) against the base model's best T_eval; claim 1 is the top one.
  versus = {cell: {**{k: v for k, v in b.items() if k != "per_problem"},
                   **paired_comparison(base["per_problem"], b["per_problem"]),
                   "held_out_families": _by_family(base["per_problem"], b["per_problem"])}
            for cell, b in done.items()} if base is not None else {}
  summary["cells_vs_base"] = versus
  if versus:
    top = max(done, key=lambda c: (done[c]["pass@1"], -done[c]["T"]))
    claims["ssd_best_beats_base_best"] = {"cell": top, **versus[top], "base_T": base["T"],
                                          "base_pass@1": base["pass@1"]}
  pairs = [(c, c + "-notrunc") for c in done if c + "-notrunc" in done]
  claims["truncation_matters"] = [
      {"truncated": c, "untruncated": u, "truncated_pass@1": done[c]["pass@1"],
       "untruncated_pass@1": done[u]["pass@1"], **paired_comparison(done[u]["per_problem"], done[c]["per_problem"])}
      for c, u in pairs]
  summary["claims"] = claims
  write_json_atomic(os.path.join(workdir, "sweep.json"), summary)
  plot = _heatmap(grid, os.path.join(workdir, "heatmap.png"))
  write_atomic(os.path.join(workdir, "sweep.md"), _markdown(summary, cells, plot).encode())
  return summary


def _heatmap(grid: Mapping[str, Mapping[str, float]], path: str) -> str | None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np

  temps = sorted({t for row in grid.values() for t in row}, key=float)
  rows = [cell for cell, row in grid.items() if row]
  if not temps or not rows:
    return None
  values = np.array([[100 * grid[r].get(t, np.nan) for t in temps] for r in rows])
  fig, ax = plt.subplots(figsize=(1.2 * len(temps) + 2.5, 0.55 * len(rows) + 1.5))
  image = ax.imshow(values, cmap="viridis", aspect="auto")
  ax.set_xticks(range(len(temps)), [f"{float(t):g}" for t in temps])
  ax.set_yticks(range(len(rows)), rows)
  ax.set_xlabel("T_eval")
  ax.set_ylabel("T_train cell (base: no SSD)")
  for i in range(len(rows)):
    for j in range(len(temps)):
      if not np.isnan(values[i, j]):
        ax.text(j, i, f"{values[i, j]:.1f}", ha="center", va="center", color="w", fontsize=8)
  fig.colorbar(image, ax=ax, label="pass@1 (%), best checkpoint")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return os.path.basename(path)


def _pct(x: float) -> str:
  return f"{100 * x:.1f}%"


def _claim_line(head: str, comparison: Mapping[str, Any]) -> str:
  """`head`: the paired delta with its interval, or why there is none."""
  if not comparison.get("problems"):
    return f"{head}: no problem was judged for both."
  low, high = comparison["ci95"]
  verdict = "excludes" if comparison["significant"] else "includes"
  return (f"{head}: {100 * comparison['delta_pass@1']:+.1f} points, 95% paired interval [{100 * low:+.1f}, "
          f"{100 * high:+.1f}] over {comparison['problems']} problems ({verdict} 0).")


def _markdown(summary: Mapping[str, Any], cells: Mapping[str, Mapping[str, Any]], plot: str | None) -> str:
  lines = ["# SSD T_train x T_eval grid", ""]
  claims = summary["claims"]
  top = claims.get("ssd_best_beats_base_best")
  if top:
    low, high = top["ci95"]
    change = "raised" if top["significant"] and low > 0 else "lowered" if top["significant"] else "did not change"
    lines += [f"**Answer:** at each model's best T_eval, SSD's best cell ({top['cell']}) {change} pass@1 "
              f"beyond the noise: {_pct(top['base_pass@1'])} (base, T {top['base_T']:g}) -> {_pct(top['pass@1'])} "
              f"(T {top['T']:g}), {100 * top['delta_pass@1']:+.1f} points, 95% paired interval "
              f"[{100 * low:+.1f}, {100 * high:+.1f}] over {top['problems']} held-out problems.", ""]
  grid = summary["grid"]
  temps = sorted({t for row in grid.values() for t in row}, key=float)
  lines += ["pass@1 per cell (SSD cells at their best checkpoint for each T_eval):", "",
            "| cell | overrides | " + " | ".join(f"T {float(t):g}" for t in temps) + " |",
            "|---|---|" + "---|" * len(temps)]
  for cell, row in grid.items():
    overrides = ", ".join(f"{k}={v}" for k, v in cells.get(cell, {}).items()) or "(the base model)"
    lines.append(f"| {cell} | {overrides} | " + " | ".join(_pct(row[t]) if t in row else "" for t in temps) + " |")
  if plot:
    lines += ["", f"![heatmap]({plot})"]
  if top:
    lines += ["", "## The paper's claims at this scale", "", _claim_line(
        f"1. SSD's best cell ({top['cell']}, {top['model']}, T_eval {top['T']:g}: {_pct(top['pass@1'])}) vs the base "
        f"model at its best T_eval ({top['base_T']:g}: {_pct(top['base_pass@1'])})", top)
        + " Both bests are chosen on these problems, which flatters the comparison, as in the paper."]
    for pair in claims.get("truncation_matters", []):
      lines.append(_claim_line(f"2. Truncation at training: {pair['truncated']} {_pct(pair['truncated_pass@1'])} vs "
                               f"{pair['untruncated']} {_pct(pair['untruncated_pass@1'])}", pair))
    family = top["held_out_families"]
    lines.append(f"3. Held-out families: the evaluation families are disjoint from the synthesis families; of "
                 f"{family['families']} families, {family['better']} improved, {family['worse']} got worse and "
                 f"{family['same']} stayed the same at the best cell.")
    versus = summary.get("cells_vs_base", {})
    if len(versus) > 1:
      lines += ["", "Every cell at its best T_eval against the base model at its best "
                f"({top['base_T']:g}: {_pct(top['base_pass@1'])}):", "",
                "| cell | best T_eval | pass@1 | vs base | 95% paired interval | families better / worse / same |",
                "|---|---|---|---|---|---|"]
      for cell, c in versus.items():
        low, high = c["ci95"]
        f = c["held_out_families"]
        lines.append(f"| {cell} | {c['T']:g} | {_pct(c['pass@1'])} | {100 * c['delta_pass@1']:+.1f} | "
                     f"[{100 * low:+.1f}, {100 * high:+.1f}] | {f['better']} / {f['worse']} / {f['same']} |")
  if summary["missing_cells"]:
    lines += ["", f"Not finished yet: {', '.join(summary['missing_cells'])}."]
  return "\n".join(lines) + "\n"


_CONFIG = config_flags.DEFINE_config_file("config", None, "Grid config file (get_config() and CELLS).",
                                          lock_config=True)
_WORKER = flags.DEFINE_integer("worker", 0, "This worker's index: it runs cells i with i % workers == worker.")
_WORKERS = flags.DEFINE_integer("workers", 1, "How many workers split the cells.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only (re)write the report from the cells on disk.")
_CELLS = flags.DEFINE_list("cells", [], "Run only these cells (names from CELLS, or base); default: this worker's.")
_T_TRAIN = flags.DEFINE_list("t_train", [], "One cell per T_train (T<t>: sample.temperature=t) instead of CELLS.")
_LIST_CELLS = flags.DEFINE_bool("list_cells", False, "Print the grid's cell names (base first) and exit.")


def _main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)
  for chatty in ("absl", "jax", "matplotlib"):
    logging.getLogger(chatty).setLevel(logging.WARNING)
  from ssd_jax.eval.sandbox import SandboxError

  config = _CONFIG.value
  try:
    if not 0 <= _WORKER.value < _WORKERS.value:
      raise ValueError(f"--worker={_WORKER.value}: expected 0 <= worker < --workers ({_WORKERS.value})")
    try:
      t_train = tuple(float(t) for t in _T_TRAIN.value)
    except ValueError:
      raise ValueError(f"--t_train={','.join(_T_TRAIN.value)}: expected temperatures, e.g. --t_train=1.2,1.6") from None
    cells = load_cells(flags.FLAGS["config"].config_filename, t_train)
    mine = select_cells(cells, _WORKER.value, _WORKERS.value, tuple(_CELLS.value))
    if _LIST_CELLS.value:
      print(json.dumps({"cells": [BASE_CELL, *cells]}))
      return
    ran = [] if _REPORT_ONLY.value else run_cells(config, cells, mine)
  except ValueError as e:  # main's config checks raise ConfigValueError, a ValueError
    print(f"error: {e}", file=sys.stderr)
    print(json.dumps({"error": str(e)}))
    sys.exit(2)
  except SandboxError as e:  # as main: the sandbox cannot give the isolation it promises here
    print(f"error: {e}", file=sys.stderr)
    print(json.dumps({"error": str(e)}))
    sys.exit(1)
  import jax

  if jax.process_index() != 0:  # on several hosts every process ran the cells; one writes the report
    print(json.dumps({"ran": ran}))
    return
  summary = report(config, cells)
  print(json.dumps({"ran": ran, **{k: v for k, v in summary.items() if k != "grid"}, "grid": summary["grid"]}))


if __name__ == "__main__":
  app.run(_main)
