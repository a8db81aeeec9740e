"""List families: sums, extremes, counting and filtering, mapping, searching, reordering."""

from __future__ import annotations

import random

from ssd_jax.data.codesuite.core import COMPARISONS, WORDS, Variant, int_list, word_list


def sum_filtered(rng: random.Random) -> Variant:
  k, t = rng.randint(3, 5), rng.randint(2, 8)
  kind = rng.choice(("even", "odd", "positive", "negative", "multiple", "greater"))
  what, cond = {"even": ("even numbers", "x % 2 == 0"), "odd": ("odd numbers", "x % 2 == 1"),
                "positive": ("positive numbers", "x > 0"), "negative": ("negative numbers", "x < 0"),
                "multiple": (f"numbers that are multiples of {k}", f"x % {k} == 0"),
                "greater": (f"numbers greater than {t}", f"x > {t}")}[kind]
  name = {"multiple": f"sum_multiples_of_{k}", "greater": "sum_above"}.get(kind, f"sum_{kind}")
  body = f"total = 0\nfor x in nums:\n    if {cond}:\n        total += x\nreturn total"
  return Variant(name, "nums: List[int]", "int",
                 f"Return the sum of the {what} in the list nums (0 if there are none).", body,
                 lambda r: (int_list(r, -10, 12, 0, 8),), (([],), ([t, t + 1, k, -1],), ([1, -1, 0, 2, -2],)))


def sum_mapped(rng: random.Random) -> Variant:
  k = rng.randint(2, 5)
  kind = rng.choice(("squares", "absolute", "times", "cubes"))
  what, expr = {"squares": ("the squares of the numbers", "x * x"), "cubes": ("the cubes of the numbers", "x * x * x"),
                "absolute": ("the absolute values of the numbers", "abs(x)"),
                "times": (f"the numbers, each multiplied by {k},", f"x * {k}")}[kind]
  name = {"squares": "sum_of_squares", "cubes": "sum_of_cubes", "absolute": "sum_abs", "times": f"sum_times_{k}"}[kind]
  return Variant(name, "nums: List[int]", "int", f"Return the sum of {what} in the list nums (0 if it is empty).",
                 f"return sum({expr} for x in nums)", lambda r: (int_list(r, -6, 6, 0, 6),), (([],), ([-2, 3],)))


def running_sum(rng: random.Random) -> Variant:
  if rng.random() < 0.6:
    return Variant(rng.choice(("running_sum", "prefix_sums", "cumulative_sum")), "nums: List[int]", "List[int]",
                   "Return a list whose i-th element is the sum of nums[0], nums[1], ..., nums[i].",
                   "result = []\ntotal = 0\nfor x in nums:\n    total += x\n    result.append(total)\nreturn result",
                   lambda r: (int_list(r, -5, 9, 0, 6),), (([],), ([4],)))
  return Variant(rng.choice(("running_max", "best_so_far")), "nums: List[int]", "List[int]",
                 "Return a list whose i-th element is the largest of nums[0], nums[1], ..., nums[i].",
                 "result = []\nfor x in nums:\n    if not result or x > result[-1]:\n        result.append(x)\n"
                 "    else:\n        result.append(result[-1])\nreturn result",
                 lambda r: (int_list(r, -5, 9, 0, 6),), (([],), ([-3, -5],), ([1, 3, 2],)))


def max_of_list(rng: random.Random) -> Variant:
  kind, op = rng.choice((("largest", ">"), ("smallest", "<")))
  body = f"best = nums[0]\nfor x in nums[1:]:\n    if x {op} best:\n        best = x\nreturn best"
  name = rng.choice(("find_max", "largest", "max_value")) if kind == "largest" else rng.choice(
      ("find_min", "smallest", "min_value"))
  return Variant(name, "nums: List[int]", "int", f"Return the {kind} number in the list nums. nums is not empty.",
                 body, lambda r: (int_list(r, -20, 20, 1, 7),),
                 (([7],), ([-4, -9, -2],), ([1, 5, 3],), ([9, 1, 5],), ([-9, 1, -5],)))


def count_compare(rng: random.Random) -> Variant:
  op, t = rng.choice(tuple(COMPARISONS)), rng.randint(1, 9)
  body = f"count = 0\nfor x in nums:\n    if x {op} {t}:\n        count += 1\nreturn count"
  return Variant(rng.choice(("count_matching", "how_many", "count_if")), "nums: List[int]", "int",
                 f"Return how many numbers in the list nums are {COMPARISONS[op]} {t}.", body,
                 lambda r: (int_list(r, 0, 12, 0, 8),), (([],), ([t],), ([t - 1, t, t + 1],)))


def filter_compare(rng: random.Random) -> Variant:
  op, t = rng.choice(tuple(COMPARISONS)), rng.randint(1, 9)
  return Variant(rng.choice(("keep_matching", "filter_numbers", "select")), "nums: List[int]", "List[int]",
                 f"Return a list of the numbers in nums that are {COMPARISONS[op]} {t}, in their original order.",
                 f"return [x for x in nums if x {op} {t}]", lambda r: (int_list(r, 0, 12, 0, 8),),
                 (([],), ([t - 1, t, t + 1],)))


def scale_list(rng: random.Random) -> Variant:
  k = rng.randint(2, 9)
  kind = rng.choice(("times", "plus", "minus"))
  what, expr = {"times": (f"multiplied by {k}", f"x * {k}"), "plus": (f"increased by {k}", f"x + {k}"),
                "minus": (f"decreased by {k}", f"x - {k}")}[kind]
  return Variant(rng.choice((f"{kind}_{k}", "scale_all", "shift_all")), "nums: List[int]", "List[int]",
                 f"Return a new list with every number in nums {what}.", f"return [{expr} for x in nums]",
                 lambda r: (int_list(r, -9, 9, 0, 6),), (([],), ([0],)))


def pairwise_op(rng: random.Random) -> Variant:
  what, expr = rng.choice((("a[i] + b[i]", "x + y"), ("a[i] * b[i]", "x * y"), ("a[i] - b[i]", "x - y"),
                           ("the larger of a[i] and b[i]", "max(x, y)")))

  def draw(r: random.Random) -> tuple[list[int], list[int]]:
    n = r.randint(0, 5)
    return [r.randint(-5, 9) for _ in range(n)], [r.randint(-5, 9) for _ in range(n)]

  return Variant(rng.choice(("combine_lists", "pairwise", "zip_with")), "a: List[int], b: List[int]", "List[int]",
                 f"a and b are lists of the same length. Return a list whose i-th element is {what}.",
                 f"return [{expr} for x, y in zip(a, b)]", draw, (([], []), ([2, 7], [3, 1])))


def index_of(rng: random.Random) -> Variant:
  kind = rng.choice(("first", "first", "last"))
  if kind == "first":
    body = "for i in range(len(nums)):\n    if nums[i] == x:\n        return i\nreturn -1"
  else:
    body = "result = -1\nfor i in range(len(nums)):\n    if nums[i] == x:\n        result = i\nreturn result"
  return Variant(rng.choice((f"{kind}_index", f"find_{kind}")), "nums: List[int], x: int", "int",
                 f"Return the index of the {kind} occurrence of x in the list nums, or -1 if x is not in nums.", body,
                 lambda r: (int_list(r, 0, 5, 0, 7), r.randint(0, 5)), (([], 3), ([3, 1, 3], 3), ([0, 2], 0)))


def remove_duplicates(rng: random.Random) -> Variant:
  strings = rng.random() < 0.4
  kind, draw = (("words", "List[str]"), lambda r: (word_list(r, 0, 7, WORDS[:6]),)) if strings else (
      ("nums", "List[int]"), lambda r: (int_list(r, 0, 6, 0, 8),))
  name, typ = kind
  body = f"seen = []\nfor x in {name}:\n    if x not in seen:\n        seen.append(x)\nreturn seen"
  return Variant(rng.choice(("remove_duplicates", "unique_in_order", "dedupe")), f"{name}: {typ}", typ,
                 f"Return the items of {name} without repeats, keeping the first occurrence of each, in their "
                 "original order.", body, draw, (([],),))


def all_any(rng: random.Random) -> Variant:
  quantifier = rng.choice(("all", "any"))
  t = rng.randint(2, 6)
  what, cond, holds = rng.choice((("even", "x % 2 == 0", lambda x: x % 2 == 0), ("positive", "x > 0", lambda x: x > 0),
                                   ("negative", "x < 0", lambda x: x < 0),
                                   (f"greater than {t}", f"x > {t}", lambda x: x > t)))
  if quantifier == "all":
    summary, name = f"Return True if every number in the list nums is {what}, otherwise False. An empty list gives " \
        "True.", "all_" + what.split()[0]
  else:
    summary, name = f"Return True if at least one number in the list nums is {what}, otherwise False.", \
        "any_" + what.split()[0]

  def draw(r: random.Random) -> tuple[list[int]]:
    """Lists where the property holds for all, for none, or for some of the items, so both answers occur."""
    nums, kind = int_list(r, -6, 9, 1, 6), r.randrange(3)
    return ([x for x in nums if holds(x) == (kind == 0)] or nums if kind < 2 else nums,)

  return Variant(name, "nums: List[int]", "bool", summary, f"return {quantifier}({cond} for x in nums)", draw,
                 (([],), ([t, 0, -1, 1],), ([t + 1, 2],)) + tuple(([b],) for b in (t, t + 1, 0, 1, -1, 2, 3)))


def rotate_list(rng: random.Random) -> Variant:
  if rng.random() < 0.5:
    summary, body = "Return nums rotated left by k positions: the first k items move to the end.", \
        "return nums[k:] + nums[:k]"
    name = "rotate_left"
  else:
    summary, body = "Return nums rotated right by k positions: the last k items move to the front.", \
        "return nums[len(nums) - k:] + nums[:len(nums) - k]"
    name = "rotate_right"

  def draw(r: random.Random) -> tuple[list[int], int]:
    nums = int_list(r, 0, 9, 1, 6)
    return nums, r.randint(0, len(nums))

  return Variant(name, "nums: List[int], k: int", "List[int]", summary + " k is between 0 and len(nums).", body, draw,
                 (([], 0), ([1, 2, 3], 0), ([1, 2, 3], 3), ([1, 2, 3, 4], 1)))


def sort_list(rng: random.Random) -> Variant:
  kind = rng.choice(("ascending", "descending", "descending", "length"))
  if kind == "length":
    return Variant(rng.choice(("sort_by_length", "shortest_first")), "words: List[str]", "List[str]",
                   "Return the strings of words sorted from shortest to longest; strings of equal length keep their "
                   "original order.", "return sorted(words, key=len)", lambda r: (word_list(r, 0, 6),),
                   (([],), (["pear", "fig", "kiwi"],)))
  what = "smallest to largest" if kind == "ascending" else "largest to smallest"
  return Variant(rng.choice((f"sort_{kind}", "ordered")), "nums: List[int]", "List[int]",
                 f"Return a new list with the numbers of nums sorted from {what}.",
                 "return sorted(nums)" if kind == "ascending" else "return sorted(nums, reverse=True)",
                 lambda r: (int_list(r, -9, 9, 0, 7),), (([],), ([2, 2, 1],)))


def product_list(rng: random.Random) -> Variant:
  kind = rng.choice(("all", "all", "odd", "nonzero"))
  what, cond = {"all": ("all numbers", ""), "odd": ("the odd numbers", "\n    if x % 2 == 1:"),
                "nonzero": ("the non-zero numbers", "\n    if x != 0:")}[kind]
  body = f"result = 1\nfor x in nums:{cond}\n{'    ' * (2 if cond else 1)}result *= x\nreturn result"
  return Variant(rng.choice(("product", "multiply_all", f"product_{kind}")), "nums: List[int]", "int",
                 f"Return the product of {what} in the list nums (1 if there are none).", body,
                 lambda r: (int_list(r, -4, 6, 0, 5),), (([],), ([0, 3],), ([2, 3],)))


def flatten(rng: random.Random) -> Variant:
  kind = rng.choice(("flatten", "flatten", "count", "total"))
  summary, returns, body = {
      "flatten": ("Return one list with the items of all the lists in nested, in order.", "List[int]",
                  "result = []\nfor part in nested:\n    result.extend(part)\nreturn result"),
      "count": ("Return the total number of items in all the lists in nested.", "int",
                "count = 0\nfor part in nested:\n    count += len(part)\nreturn count"),
      "total": ("Return the sum of all the numbers in all the lists in nested.", "int",
                "total = 0\nfor part in nested:\n    total += sum(part)\nreturn total")}[kind]
  return Variant({"flatten": "flatten", "count": "count_items", "total": "nested_sum"}[kind],
                 "nested: List[List[int]]", returns, "nested is a list of lists of numbers. " + summary, body,
                 lambda r: ([int_list(r, -3, 9, 0, 3) for _ in range(r.randint(0, 4))],), (([],), ([[], [1]],)))


def safe_first_last(rng: random.Random) -> Variant:
  which, index = rng.choice((("first", "0"), ("last", "-1")))
  default = rng.choice((None, 0, -1))
  returns = "Optional[int]" if default is None else "int"
  return Variant(rng.choice((f"{which}_or_default", f"safe_{which}")), "nums: List[int]", returns,
                 f"Return the {which} item of the list nums, or {default!r} if nums is empty.",
                 f"if not nums:\n    return {default!r}\nreturn nums[{index}]", lambda r: (int_list(r, -5, 9, 0, 5),),
                 (([],), ([7],), ([1, 2],)))


FAMILIES = {f.__name__: f for f in (sum_filtered, sum_mapped, running_sum, max_of_list, count_compare, filter_compare,
                                    scale_list, pairwise_op, index_of, remove_duplicates, all_any, rotate_list,
                                    sort_list, product_list, flatten, safe_first_last)}
