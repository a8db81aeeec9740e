"""The words of the run report: `report.md` from the summary that `report.collect` builds.

A newcomer should be able to read it top to bottom: it leads with the answer in one sentence, explains each
number in words beside its table, shows one answer per model, and leaves out any section with nothing in it
rather than printing placeholders.
"""

from __future__ import annotations

import os
import re

VERDICT_WORDS = {"AC": "passed every test", "WA": "gave a wrong answer", "TLE": "ran past the time limit",
                 "RE": "crashed (runtime error)", "MLE": "ran out of memory", "OLE": "printed too much output",
                 "NO_CODE": "contained no code block", "SANDBOX_ERROR": "could not be run by the sandbox"}
FINISH_WORDS = {"stop": "ended with a stop token", "length": "hit the token limit"}
GREEDY_T = 1e-5  # below this the sampler decodes greedily


def _pct(x: float | None) -> str:
  return "not measured" if x is None else f"{100 * x:.1f}%"


def _temperature(t: float | str) -> str:
  t = float(t)
  return "0 (greedy)" if t < GREEDY_T else f"{t:g}"


def _count_words(counts: dict[str, int], words: dict[str, str], total: int) -> str:
  """'48 ended with a stop token (58.5%), 34 hit ...' in decreasing count, unknown keys named as they are."""
  parts = [f"{n} {words.get(key, f'ended as {key!r}')} ({100 * n / max(total, 1):.1f}%)"
           for key, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n]
  return ", ".join(parts)


def model_label(name: str, summary: dict) -> str:
  """base / SSD / SSD step <n> / SSD (final, step <n>): how the report names an evaluated model."""
  if name == "ssd":
    steps = summary["train"]["steps"]
    return f"SSD (final, step {steps})" if summary.get("checkpoints") and steps else "SSD"
  match = re.fullmatch(r"ssd@(\d+)", name)
  return f"SSD step {match.group(1)}" if match else name


def headline_sentence(head: dict, checkpoints: dict | None) -> str:
  """The answer in one sentence: did SSD change pass@1 at each model's best T_eval (or, where a model was scored at
  one T_eval, at the setting it was given, said so), by how much, how sure."""
  if checkpoints:
    which = "final checkpoint" if head["ssd_final"] else f"checkpoint step {head['ssd_step']}"
    ssd = f"SSD, {which}, the best of {checkpoints['cells']} checkpoint x T_eval cells"
  else:
    ssd = "SSD"
  tuned = min(head["temperatures"].values()) > 1
  where = ("at each model's best T_eval" if tuned else
           "with each model at its own evaluation setting (one T_eval for at least one model, so T_eval was not "
           "tuned for it; a T_eval sweep, e.g. configs/smollm2_grid.py, tunes both)")
  delta, ci = 100 * head["delta_pass@1"], head["delta_ci95"]
  change = (f"{_pct(head['base_pass@1'])} (base, T_eval {_temperature(head['base_T'])}) -> "
            f"{_pct(head['ssd_pass@1'])} ({ssd}, T_eval {_temperature(head['ssd_T'])}), {delta:+.1f} points")
  if ci is None:
    return f"{where[0].upper()}{where[1:]}, pass@1 went {change}; no per-problem results, so no interval."
  low, high = 100 * ci[0], 100 * ci[1]
  verb = ("SSD raised pass@1" if low > 0 else "SSD lowered pass@1" if high < 0
          else "SSD did not measurably change pass@1")
  paired = head["paired"]
  tied = "; every problem tied" if paired["tied"] == paired["problems"] else ""
  return (f"{verb} {where}: {change}; the paired 95% bootstrap interval over the "
          f"{paired['problems']} problems both were scored on is [{low:+.1f}, {high:+.1f}] points (width "
          f"{high - low:.1f}{tied}), which {'excludes' if paired['significant'] else 'includes'} 0.")


def _lead(summary: dict, plots: dict[str, str]) -> list[str]:
  head = summary.get("headline")
  lines = []
  if head:
    paired = head["paired"]
    lines += [f"**{head['sentence']}**", ""]
    if paired["problems"]:
      lines += [f"Per problem, SSD did better on {paired['better']}, worse on {paired['worse']} and the same on "
                f"{paired['tied']}. pass@1 is the fraction of a problem's answers that pass every test, averaged "
                f"over problems; the interval resamples problems ({paired['resamples']} draws, seed "
                f"{paired['seed']}) with the same draw for both models, so a problem's difficulty cancels out.", ""]
  elif summary["eval"]:
    lines += ["Only " + ", ".join(f"{model_label(name, summary)} (best pass@1 {_pct(ev['best'].get('pass@1'))} at "
                                  f"T_eval {_temperature(ev['best']['temperature'])})"
                                  for name, ev in summary["eval"].items())
              + " was evaluated, so there is no base-vs-SSD comparison.", ""]
  if "teval_sweep" in plots:
    lines += ["![pass@1 vs T_eval](teval_sweep.png)", ""]
  return lines


def _evaluation(summary: dict) -> list[str]:
  evals, head, checkpoints = summary["eval"], summary.get("headline"), summary.get("checkpoints")
  shown = [n for n in evals if not n.startswith("ssd@") or (head and n == head["ssd_model"])]
  ks = sorted({k for n in shown for r in evals[n]["runs"].values() for k in r["overall"]},
              key=lambda k: int(k.split("@")[1]))
  lines = ["## Evaluation", "", "| model | T_eval | " + " | ".join(ks) + " | problems x answers | no code | sandbox |",
           "|---|---|" + "---|" * len(ks) + "---|---|---|"]
  for name in shown:
    for temp, r in evals[name]["runs"].items():
      cells = " | ".join(f"{100 * r['overall'][k]:.1f}" if k in r["overall"] else "k > answers" for k in ks)
      no_code = "not recorded" if r["no_code_fraction"] is None else _pct(r["no_code_fraction"])
      lines.append(f"| {model_label(name, summary)} | {_temperature(temp)} | {cells} | {r['n_problems']} x "
                   f"{r['samples_per_problem']['max']} | {no_code} | {r['isolation'] or 'not recorded'} |")
  lines += ["", "pass@k in %: the chance that at least one of k answers passes, estimated without bias from each "
            "problem's answers and averaged over problems.", ""]
  for name in shown:
    best = evals[name]["best"]
    temp = next(t for t in evals[name]["runs"] if float(t) == best["temperature"])
    verdicts = evals[name]["runs"][temp].get("verdicts") or {}
    if verdicts:
      total = sum(verdicts.values())
      lines.append(f"- {model_label(name, summary)} at its best T_eval {_temperature(temp)}: of {total} answers, "
                   f"{_count_words(verdicts, VERDICT_WORDS, total)}.")
  lines.append("")
  rows = [(name, diff, vals) for name in shown
          for diff, vals in (evals[name]["best"].get("by_difficulty") or {}).items()]
  if rows:
    dks = [k for k in ks if any(k in vals for _, _, vals in rows)]
    lines += ["By difficulty, at each model's best T_eval (pass@k in %):", "",
              "| model | difficulty | problems | " + " | ".join(dks) + " |", "|---|---|---|" + "---|" * len(dks)]
    lines += [f"| {model_label(name, summary)} | {diff or 'unlabelled'} | {vals.get('n_problems', '')} | "
              + " | ".join(f"{100 * vals[k]:.1f}" if k in vals else "k > answers" for k in dks) + " |"
              for name, diff, vals in rows]
    lines.append("")
  if checkpoints:
    lines += _checkpoint_table(summary)
  return lines


def _checkpoint_table(summary: dict) -> list[str]:
  ck = summary["checkpoints"]
  pick = ck["selected"]
  temps = ck["temperatures"]
  lines = ["### SSD checkpoints", "", "pass@1 (%) of each evaluated training checkpoint of the SSD model at each "
           "T_eval; the best cell (bold) is the SSD side of the headline.", "",
           "| checkpoint | " + " | ".join(f"T {_temperature(t)}" for t in temps) + " |", "|---|" + "---|" * len(temps)]
  for row in ck["rows"]:
    cells = []
    for t in temps:
      if t not in row["pass@1"]:
        cells.append("not run")
        continue
      cell = f"{100 * row['pass@1'][t]:.1f}"
      cells.append(f"**{cell}**" if row["model"] == pick["model"] and float(t) == pick["temperature"] else cell)
    lines.append(f"| {model_label(row['model'], summary)} | " + " | ".join(cells) + " |")
  which = "the final checkpoint" if pick["final"] else f"step {pick['step']}"
  lines += ["", f"Selected: {which} at T_eval {_temperature(pick['temperature'])} ({_pct(pick['pass@1'])}), the "
            f"best of {ck['cells']} cells (ties: lower T_eval, then the later checkpoint). As in the paper, the "
            "checkpoint and T_eval are chosen on the evaluation problems themselves, which flatters the selected "
            "number; the base model's T_eval is chosen the same way.", ""]
  return lines


def _fence(text: str) -> str:
  """A code fence longer than any backtick run inside the text."""
  longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
  return "`" * max(3, longest + 1)


def _examples(summary: dict) -> list[str]:
  examples = summary.get("examples") or []
  if not examples:
    return []
  problem = examples[0]["problem_id"]
  why = (" (where SSD's pass@1 rose the most over base's; the first such problem on ties)"
         if summary.get("headline") and len(examples) == 2 else "")
  lines = ["## Example answers", "", f"One answer per model to problem `{problem}`{why}, each model's first "
           "passing answer there if it has one, else its first answer:", ""]
  for ex in examples:
    text = "".join(c if c.isprintable() or c in "\n\t" else "\ufffd" for c in ex["text"])
    verdict = VERDICT_WORDS.get(ex["verdict"], "was not judged") if ex["verdict"] else "was not judged"
    finish = FINISH_WORDS.get(ex["finish_reason"], f"ended as {ex['finish_reason']!r}") if ex["finish_reason"] else ""
    cut = f" (the first {len(ex['text'])} of its {ex['chars']} characters)" if ex["chars"] > len(ex["text"]) else ""
    lines += [f"**{model_label(ex['model'], summary)}**, T_eval {_temperature(ex['temperature'])}, answer "
              f"{ex['sample_index']}: it {verdict}" + (f" and {finish}" if finish else "")
              + f"; this model's pass@1 on the problem is {_pct(ex['pass@1'])}{cut}.", "", _fence(text) + "text",
              text, _fence(text), ""]
  return lines


def _data(summary: dict) -> list[str]:
  d = summary["data"]
  if not d:
    return []
  samples = d.get("samples", 0)
  lines = ["## Data (synthesis)", "",
           f"The base model answered {d.get('prompts')} training prompts ({d.get('prompts_in')} read, "
           f"{d.get('bad_rows', 0)} malformed rows skipped): {samples} answers, {d.get('tokens')} tokens. "
           f"{d.get('kept')} answers were kept as SSD training data"
           + (f" ({d['kept_tokens']} tokens)" if d.get("kept_tokens") is not None else "") + "."]
  if d.get("finish_reasons"):
    lines[-1] += f" Of all answers, {_count_words(d['finish_reasons'], FINISH_WORDS, samples)}."
  if d.get("filtered"):
    lines[-1] += " Filtered out: " + ", ".join(f"{n} ({reason})" for reason, n in sorted(d["filtered"].items())) + "."
  return lines + [""]


def _training(summary: dict, plots: dict[str, str]) -> list[str]:
  t = summary["train"]
  if not t["steps"]:
    return []
  facts = [f"{t['steps']} optimizer steps"]
  if t["loss_first"] is not None and t["loss_last"] is not None:
    facts.append(f"the loss on the response tokens went from {t['loss_first']:.4f} to {t['loss_last']:.4f}")
  if t["tokens_per_s_mean"]:
    facts.append(f"{t['tokens_per_s_mean']:.0f} tokens/s on average")
  lines = ["## Training", "", "; ".join(facts) + ".", ""]
  return lines + (["![training curve](train_loss.png)", ""] if "train_loss" in plots else [])


def _diagnostics(summary: dict) -> list[str]:
  diag = summary.get("diagnostics")
  if not diag or len(diag.get("models", {})) < 2:
    return []
  cfg = diag["config"]
  keys = list(diag["models"])
  base, ssd = diag["models"][keys[0]], diag["models"][keys[-1]]
  b, s = model_label(keys[0], summary), model_label(keys[-1], summary)
  temps, ref = cfg["temperatures"], cfg["reference_temperature"]
  i, t_ref = temps.index(ref), _temperature(ref)
  r = min(cfg["top_mass_rank"], cfg["ranks"]) - 1
  trunc = f"top-k {cfg['top_k'] or 'off'}, top-p {cfg['top_p']:g}"
  e_base, e_ssd = base["entropy"][i], ssd["entropy"][i]
  both = [g for g, (cb, cs) in enumerate(zip(base["bucket_counts"], ssd["bucket_counts"])) if cb and cs]
  higher = sum(ssd["bucket_entropy"][g][i] > base["bucket_entropy"][g][i] for g in both)
  top = next(g for g, (cb, cs) in enumerate(zip(base["bucket_counts"], ssd["bucket_counts"])) if cb or cs)
  share = [m["bucket_counts"][top] / max(sum(m["bucket_counts"]), 1) for m in (base, ssd)]
  overall = "lower" if e_ssd < e_base else "higher" if e_ssd > e_base else "the same"
  paradox = bool(both) and higher == len(both) and e_ssd < e_base and share[1] > share[0]
  lines = ["## Diagnostics (Fig. 6)", "",
           f"The paper's Fig. 6 compares {b} and {s} token by token: each statistic is read off the next-token "
           f"distribution at {base['positions']} response positions of the SSD training answers, truncated as "
           f"the SSD model is evaluated ({trunc}).", "",
           f"- (a) Cumulative probability mass of the most likely tokens at T = 1, untruncated. The top token holds "
           f"{_pct(base['cum_mass'][0])} ({b}) vs {_pct(ssd['cum_mass'][0])} ({s}); the top {r + 1} hold "
           f"{base['cum_mass'][r]:.4f} vs {ssd['cum_mass'][r]:.4f}. A curve that climbs faster means a cleaner "
           "head and less tail; the axis is log-scaled in the distance from 1, so 0.9, 0.99, 0.999 are evenly "
           "spaced.",
           f"- (b) Tokens that survive the truncation, averaged over positions: at T_eval {t_ref}, "
           f"{base['survivors'][i]:.2f} ({b}) vs {ssd['survivors'][i]:.2f} ({s}); from T_eval "
           f"{_temperature(temps[0])} to {_temperature(temps[-1])}, {base['survivors'][0]:.2f} -> "
           f"{base['survivors'][-1]:.2f} ({b}) and {ssd['survivors'][0]:.2f} -> {ssd['survivors'][-1]:.2f} ({s}).",
           f"- (c) Entropy of the truncated distribution, i.e. how much choice is left after truncation: at T_eval "
           f"{t_ref}, {e_base:.3f} nats ({b}) vs {e_ssd:.3f} ({s}).",
           f"- (d) The same entropy at T_eval {t_ref}, with positions grouped by how much of the T = 1 mass their "
           f"top {cfg['top_mass_rank']} tokens hold, each model placing a position by its own confidence. {s}'s "
           f"entropy is higher than {b}'s in {higher} of the {len(both)} groups both models populate; its overall "
           f"mean is {overall} ({e_ssd:.3f} vs {e_base:.3f} nats). The overall mean weights each group's mean by "
           "the group's share of positions, so it can fall while every group's mean rises, when a model moves "
           "positions into the confident groups, where entropy is low for any model (Simpson's paradox)"
           + (". That is what happens here: " if paradox else "; ")
           + f"the most confident populated group ({cfg['bucket_labels'][top]}) holds {_pct(share[0])} of {b}'s "
           f"positions and {_pct(share[1])} of {s}'s. Empty groups have no bar.", ""]
  # diagnostics.json sits in <workdir>/analysis beside its PNGs; its paths are absolute, so a moved workdir
  # would point elsewhere
  return lines + [f"![{os.path.basename(p)}](analysis/{os.path.basename(p)})" for p in diag.get("pngs", [])] + [""]


def markdown(summary: dict, config_json: str, plots: dict[str, str]) -> str:
  """report.md: the answer, then evaluation, checkpoints, examples, data, training, diagnostics, model, config."""
  lines = ["# SSD run report", "", f"Workdir: `{summary['workdir']}`", ""]
  lines += _lead(summary, plots)
  if summary["eval"]:
    lines += _evaluation(summary)
  lines += _examples(summary) + _data(summary) + _training(summary, plots) + _diagnostics(summary)
  if summary["export"]:
    lines += ["## Model", "", f"The SSD model, exported in Hugging Face format: `{summary['export']}`", ""]
  lines += ["## Configuration", "", "```json", config_json, "```", ""]
  return "\n".join(lines)
