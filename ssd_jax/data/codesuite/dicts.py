"""Dictionary families: counting into dicts, lookups, filtering, inverting, merging, grouping."""

from __future__ import annotations

import random

from ssd_jax.data.codesuite.core import COMPARISONS, WORDS, Variant, sentence, text, word_list


def _scores(r: random.Random, low: int, high: int, lo: int = 0, hi: int = 10, distinct: bool = False,
            pool: tuple[str, ...] = WORDS) -> dict[str, int]:
  """A dict of `low`..`high` distinct words of `pool` -> ints in [lo, hi] (distinct values when asked)."""
  keys = r.sample(pool, r.randint(low, high))
  values = r.sample(range(lo, hi + 1), len(keys)) if distinct else [r.randint(lo, hi) for _ in keys]
  return dict(zip(keys, values))


def char_frequency(rng: random.Random) -> Variant:
  if rng.random() < 0.5:
    return Variant(rng.choice(("char_frequency", "letter_counts")), "s: str", "Dict[str, int]",
                   "Return a dictionary that maps each character of the string s to the number of times it appears "
                   "in s.", "counts = {}\nfor ch in s:\n    counts[ch] = counts.get(ch, 0) + 1\nreturn counts",
                   lambda r: (text(r, "abcab", 0, 8),), (("",), ("aa",)))
  return Variant(rng.choice(("word_frequency", "word_counts")), "s: str", "Dict[str, int]",
                 "Return a dictionary that maps each word of the sentence s (words are separated by single spaces) to "
                 "the number of times it appears in s.",
                 "counts = {}\nfor w in s.split():\n    counts[w] = counts.get(w, 0) + 1\nreturn counts",
                 lambda r: (sentence(r, 0, 6, WORDS[:4]),), (("",), ("cat cat",)))


def key_of_max(rng: random.Random) -> Variant:
  kind, op = rng.choice((("largest", ">"), ("largest", ">"), ("smallest", "<")))
  body = f"best = None\nfor key in d:\n    if best is None or d[key] {op} d[best]:\n        best = key\nreturn best"
  return Variant(rng.choice((f"key_of_{kind}", "best_key", "winner")), "d: Dict[str, int]", "str",
                 f"Return the key of the dictionary d whose value is the {kind}. d is not empty and its values are all "
                 "different.", body, lambda r: (_scores(r, 1, 5, -20, 20, distinct=True),),
                 (({"a": 1},), ({"x": 3, "y": -2, "z": 9},), ({"x": -3, "y": 2, "z": -9},)))


def filter_dict(rng: random.Random) -> Variant:
  op, t = rng.choice(tuple(k for k in COMPARISONS if k != "==")), rng.randint(2, 8)
  return Variant(rng.choice(("filter_dict", "keep_entries", "select_items")), "d: Dict[str, int]", "Dict[str, int]",
                 f"Return a new dictionary with only the entries of d whose value is {COMPARISONS[op]} {t}.",
                 f"return {{k: v for k, v in d.items() if v {op} {t}}}", lambda r: (_scores(r, 0, 5),),
                 (({},), ({"a": t - 1, "b": t, "c": t + 1},)))


def get_default(rng: random.Random) -> Variant:
  default = rng.choice((0, -1, None))
  returns = "Optional[int]" if default is None else "int"

  def draw(r: random.Random) -> tuple[dict[str, int], str]:
    d = _scores(r, 0, 4)
    return d, r.choice(list(d)) if d and r.random() < 0.6 else r.choice(WORDS)

  return Variant(rng.choice(("get_or_default", "lookup", "value_of")), "d: Dict[str, int], key: str", returns,
                 f"Return the value stored in the dictionary d under key, or {default!r} if key is not in d.",
                 f"if key in d:\n    return d[key]\nreturn {default!r}", draw,
                 (({}, "a"), ({"a": 5}, "a"), ({"a": 5}, "b")))


def invert_dict(rng: random.Random) -> Variant:
  if rng.random() < 0.5:
    signature, returns, draw = "d: Dict[str, int]", "Dict[int, str]", lambda r: (_scores(r, 0, 5, distinct=True),)
  else:
    signature, returns = "d: Dict[int, str]", "Dict[str, int]"
    draw = lambda r: ({v: k for k, v in _scores(r, 0, 5, distinct=True).items()},)  # noqa: E731
  return Variant(rng.choice(("invert_dict", "swap_keys_values", "reverse_lookup")), signature, returns,
                 "Return a new dictionary that maps each value of d to its key. The values of d are all different.",
                 "return {v: k for k, v in d.items()}", draw, (({},),))


def sum_values(rng: random.Random) -> Variant:
  kind = rng.choice(("values", "values", "key_lengths", "starting"))
  c = rng.choice("abcgmprst")
  summary, body = {
      "values": ("Return the sum of all the values in the dictionary d (0 if it is empty).", "return sum(d.values())"),
      "key_lengths": ("Return the total number of characters in all the keys of the dictionary d.",
                      "return sum(len(k) for k in d)"),
      "starting": (f"Return the sum of the values in the dictionary d whose key starts with the letter {c!r}.",
                   f"total = 0\nfor k, v in d.items():\n    if k[0] == {c!r}:\n        total += v\nreturn total")}[kind]
  return Variant({"values": "sum_values", "key_lengths": "total_key_length", "starting": f"sum_for_{c}"}[kind],
                 "d: Dict[str, int]", "int", summary, body, lambda r: (_scores(r, 0, 5, -5, 10),),
                 (({},), ({f"{c}x": 2, "yy": 3},)))


def dict_from_lists(rng: random.Random) -> Variant:
  if rng.random() < 0.6:
    def draw(r: random.Random) -> tuple[list[str], list[int]]:
      d = _scores(r, 0, 5)
      return list(d), list(d.values())

    return Variant(rng.choice(("dict_from_lists", "pair_up", "make_dict")), "keys: List[str], values: List[int]",
                   "Dict[str, int]", "keys and values are lists of the same length, and the keys are all different. "
                   "Return a dictionary that maps keys[i] to values[i].", "return dict(zip(keys, values))", draw,
                   (([], []), (["a"], [1])))
  v = rng.choice((0, 1, -1))
  return Variant(rng.choice(("all_set_to", "fresh_counters")), "keys: List[str]", "Dict[str, int]",
                 f"Return a dictionary that maps every string in keys to {v}.", f"return {{k: {v} for k in keys}}",
                 lambda r: (word_list(r, 0, 5),), (([],), (["a", "a", "b"],)))


def merge_add(rng: random.Random) -> Variant:
  kind, rule, combine = rng.choice((("sum", "the sum of its two values", "result[k] + v"),
                                    ("sum", "the sum of its two values", "result[k] + v"),
                                    ("larger", "the larger of its two values", "max(result[k], v)")))
  body = f"result = dict(a)\nfor k, v in b.items():\n    if k in result:\n        result[k] = {combine}\n" \
         "    else:\n        result[k] = v\nreturn result"
  return Variant(rng.choice(("merge_counts", "merge_dicts", f"merge_{kind}")), "a: Dict[str, int], b: Dict[str, int]",
                 "Dict[str, int]", f"Return a new dictionary with every key of a and of b. A key found in both gets "
                 f"{rule}.", body, lambda r: tuple(_scores(r, 0, 3, -5, 9, pool=WORDS[:5]) for _ in range(2)),
                 (({}, {}), ({"a": 1}, {"a": 4, "b": 2}), ({"a": 5}, {"a": 3})),
                 example=({"red": 1, "blue": rng.randint(2, 5)}, {"blue": rng.randint(2, 5), "green": 4}))


def group_by_first_letter(rng: random.Random) -> Variant:
  kind, key = rng.choice((("first letter", "w[0]"), ("length", "len(w)")))
  return Variant("group_by_" + kind.replace(" ", "_"), "words: List[str]",
                 "Dict[str, List[str]]" if key == "w[0]" else "Dict[int, List[str]]",
                 f"Return a dictionary that maps each {kind} to the list of the strings in words with that {kind}, in "
                 "their original order.",
                 f"groups = {{}}\nfor w in words:\n    if {key} not in groups:\n        groups[{key}] = []\n"
                 f"    groups[{key}].append(w)\nreturn groups", lambda r: (word_list(r, 0, 6, WORDS[:12]),),
                 (([],), (["ant", "ant", "bee"],)))


FAMILIES = {f.__name__: f for f in (char_frequency, key_of_max, filter_dict, get_default, invert_dict, sum_values,
                                    dict_from_lists, merge_add, group_by_first_letter)}
