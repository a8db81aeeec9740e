"""An offline code suite of short HumanEval-style function tasks, easy enough for a 135M model.

53 families of short function tasks (strings, lists, arithmetic, dictionaries, simple loops), each a seeded
generator of variants (constants, which character or threshold, direction, names, examples). Every problem is a
`Problem` in HumanEval's mode: `prompt` (imports + signature + docstring with one `>>>` example, then a
"# Write your code here" line: `core.BODY_MARKER`), `test` (a `check(candidate)` of at least 8 held-back asserts,
computed by running the reference, edge cases included), `canonical_solution` (the reference body), so the evaluator
judges it exactly as it judges HumanEval.

Families, not problems, are split: `TRAIN_FAMILIES` are a synthesis prompt source, `EVAL_FAMILIES` an evaluation
benchmark, and related families (sums of a list and of a range, max of a list / of three / of a dict) sit on the
same side, so a gain on the evaluation split cannot come from having seen its families.
"""

from __future__ import annotations

import random

from ssd_jax.data.codesuite import dicts, lists, numbers, strings
from ssd_jax.data.codesuite.core import HELD_BACK_TESTS, Variant, build_problem, reference_function
from ssd_jax.data.problems import Problem

__all__ = ["EVAL_FAMILIES", "FAMILIES", "HELD_BACK_TESTS", "SPLITS", "TRAIN_FAMILIES", "Variant", "by_variant",
           "codesuite_problems", "family_variant", "reference_function"]

FAMILIES = {**strings.FAMILIES, **lists.FAMILIES, **numbers.FAMILIES, **dicts.FAMILIES}

# Synthesis prompts come from these families ...
TRAIN_FAMILIES = (
    "sum_filtered", "sum_mapped", "running_sum", "sum_range", "count_multiples", "product_list", "flatten",
    "sum_values", "reverse_words", "join_words", "acronym", "capitalize_words", "replace_char", "repeat_string",
    "scale_list", "pairwise_op", "remove_duplicates", "rotate_list", "is_prime", "leap_year", "digit_sum",
    "invert_dict", "dict_from_lists", "group_by_first_letter", "safe_first_last", "get_default")
# ... and evaluation problems from these, disjoint from them.
EVAL_FAMILIES = (
    "max_of_list", "max_of_three", "key_of_max", "count_compare", "filter_compare", "filter_dict", "clamp",
    "sign_word", "letter_grade", "fizz_word", "count_char", "char_frequency", "count_words", "longest_word",
    "word_lengths", "multiples_list", "countdown", "staircase", "is_palindrome", "string_slice", "pad_string",
    "index_of", "all_any", "sort_list", "fibonacci", "round_multiple", "merge_add")
SPLITS = {"train": TRAIN_FAMILIES, "eval": EVAL_FAMILIES, "all": TRAIN_FAMILIES + EVAL_FAMILIES}


_ATTEMPTS = 50  # draws of a variant before a family is declared too small for distinct prompts


def family_variant(family: str, k: int, *, seed: int = 0, attempt: int = 0) -> tuple[Variant, random.Random]:
  """Draw `attempt` of variant `k` of `family`, and the random stream that then draws its example and tests (a
  function of (seed, family, k, attempt) alone)."""
  if family not in FAMILIES:
    raise ValueError(f"codesuite family {family!r}: expected one of {sorted(FAMILIES)}")
  rng = random.Random(f"codesuite:{seed}:{family}:{k}" + (f":{attempt}" if attempt else ""))
  return FAMILIES[family](rng), rng


def codesuite_problems(split: str, *, seed: int = 0, variants: int = 10) -> list[Problem]:
  """The problems of `split` ("train", "eval" or "all"): `variants` per family, ids `codesuite/<family>/<k>`.

  Variant k of a family is its first draw (`family_variant`, attempt 0, 1, ...) whose prompt differs from those of
  variants 0..k-1, so no two problems share a prompt. It depends only on (seed, family, k), never on the split or on
  how many variants are asked for: `variants=5` is a prefix of `variants=10`, and "all" is "train" then "eval".
  """
  if split not in SPLITS:
    raise ValueError(f"codesuite split {split!r}: expected one of {sorted(SPLITS)}")
  if isinstance(variants, bool) or not isinstance(variants, int) or variants < 1:
    raise ValueError(f"codesuite variants={variants!r}: expected a positive integer (problems per family)")
  out = []
  for family in SPLITS[split]:
    prompts: set[str] = set()
    for k in range(variants):
      for attempt in range(_ATTEMPTS):
        problem = build_problem(f"codesuite/{family}/{k}", family, *family_variant(family, k, seed=seed,
                                                                                   attempt=attempt))
        if problem.prompt not in prompts:
          break
      else:
        raise ValueError(f"codesuite family {family!r}: no new prompt for variant {k} in {_ATTEMPTS} draws; "
                         "it has too few distinct variants")
      prompts.add(problem.prompt)
      out.append(problem)
  return out


def by_variant(problems: list[Problem]) -> list[Problem]:
  """Variant 0 of every family, then variant 1, ...: any prefix (a config's `limit`) spreads over all families."""
  return sorted(problems, key=lambda p: int(p.id.rsplit("/", 1)[1]))  # stable: family order within a variant
