"""String families: counting, replacing, reversing, slicing, padding, words."""

from __future__ import annotations

import random

from ssd_jax.data.codesuite.core import WORDS, Variant, sentence, text, word_list

_SHORT = tuple(w for w in WORDS if len(w) <= 4)


def count_char(rng: random.Random) -> Variant:
  kind = rng.choice(("char", "char", "vowels", "digits", "upper"))
  if kind == "char":
    c = rng.choice("aeilnorst")
    return Variant(rng.choice(("count_char", "char_count", "count_letter")), "s: str", "int",
                   f"Return how many times the character {c!r} appears in the string s.", f"return s.count({c!r})",
                   lambda r: (text(r, "aeilnorst", 0, 10),), (("",), (c * 3,)))
  what, test, alphabet = {"vowels": ("vowels (a, e, i, o, u)", "ch in 'aeiou'", "abcdeiklmnostu"),
                          "digits": ("digits", "ch.isdigit()", "ab1c2d3e45xyz"),
                          "upper": ("uppercase letters", "ch.isupper()", "aBcDeFgHxYz")}[kind]
  return Variant(f"count_{kind}", "s: str", "int", f"Return how many {what} the string s contains.",
                 f"return sum(1 for ch in s if {test})", lambda r: (text(r, alphabet, 0, 10),), (("",),))


def replace_char(rng: random.Random) -> Variant:
  a = rng.choice("aeiost")
  b = rng.choice(("", "", "*", "-", "_", "x"))
  if b:
    name, summary = rng.choice(("replace_char", "swap_letter")), f"Return s with every {a!r} replaced by {b!r}."
  else:
    name, summary = rng.choice(("remove_char", "drop_letter")), f"Return the string s with every {a!r} removed."
  return Variant(name, "s: str", "str", summary, f"return s.replace({a!r}, {b!r})",
                 lambda r: (text(r, "abeilostr", 0, 10),), (("",), (a + a,)))


def reverse_words(rng: random.Random) -> Variant:
  sep = rng.choice((" ", " ", "-", ", "))
  joined = "single spaces" if sep == " " else repr(sep)
  return Variant(rng.choice(("reverse_words", "words_backwards", "flip_words")), "s: str", "str",
                 f"Return the words of the sentence s in reverse order, joined by {joined}. Words in s are separated "
                 "by single spaces.", f"return {sep!r}.join(s.split()[::-1])",
                 lambda r: (sentence(r, 1, 5),), (("hello",), ("",), ("one two three",)))


def is_palindrome(rng: random.Random) -> Variant:
  fold = rng.random() < 0.4

  def draw(r: random.Random) -> tuple[str]:
    half = text(r, "abr", 1, 3)
    s = half + r.choice(("", "x")) + half[::-1] if r.random() < 0.5 else text(r, "abr", 2, 6)
    return ("".join(ch.upper() if fold and r.random() < 0.3 else ch for ch in s),)

  summary = "Return True if the string s reads the same forwards and backwards, otherwise False."
  if fold:
    summary += " Uppercase and lowercase letters count as the same letter."
  body = "t = s.lower()\nreturn t == t[::-1]" if fold else "return s == s[::-1]"
  edges = (("",), ("ab",), ("Aba",)) if fold else (("",), ("ab",), ("aba",))
  return Variant(rng.choice(("is_palindrome", "reads_same_backwards")), "s: str", "bool", summary, body, draw, edges)


def repeat_string(rng: random.Random) -> Variant:
  sep = rng.choice(("", "", "-", " ", ", "))
  between = f", with {sep!r} between the copies" if sep else ""
  return Variant(rng.choice(("repeat_string", "repeat_text", "copies")), "s: str, n: int", "str",
                 f"Return the string s repeated n times{between}. For n = 0 return an empty string.",
                 f"return {sep!r}.join([s] * n)" if sep else "return s * n",
                 lambda r: (r.choice(_SHORT), r.randint(0, 4)), (("ab", 0), ("ab", 1), ("xyz", 3)))


def longest_word(rng: random.Random) -> Variant:
  kind, op = rng.choice((("longest", ">"), ("longest", ">"), ("shortest", "<")))
  body = f"words = s.split()\nbest = words[0]\nfor w in words[1:]:\n    if len(w) {op} len(best):\n        best = w\n" \
         "return best"
  return Variant(f"{kind}_word", "s: str", "str",
                 f"Return the {kind} word in the sentence s (words are separated by single spaces; s has at least one "
                 "word). If several words tie, return the first of them.", body,
                 lambda r: (sentence(r, 1, 6),), (("one",), ("cat dog owl",), ("sky apple banana pear",),
                                                    ("cat apple dog",), ("apple cat dog",)))


def acronym(rng: random.Random) -> Variant:
  upper = rng.random() < 0.7
  return Variant(rng.choice(("acronym", "initials", "first_letters")), "s: str", "str",
                 "Return the first letter of every word in the sentence s, joined together"
                 + (" and converted to uppercase." if upper else " (keep their case)."),
                 "return ''.join(w[0] for w in s.split())" + (".upper()" if upper else ""),
                 lambda r: (" ".join(w if upper or r.random() < 0.7 else w.title() for w in word_list(r, 1, 5)),),
                 (("",), ("hello",)))


def capitalize_words(rng: random.Random) -> Variant:
  which = rng.choice(("first", "first", "last"))
  change = "w[0].upper() + w[1:]" if which == "first" else "w[:-1] + w[-1].upper()"
  return Variant(rng.choice(("capitalize_words", "shout_letters", "upper_edges")), "s: str", "str",
                 f"Return the sentence s with the {which} letter of every word changed to uppercase. Words in s are "
                 "separated by single spaces.", f"return ' '.join({change} for w in s.split(' '))",
                 lambda r: (sentence(r, 1, 4),), (("a",), ("hello world",)))


def string_slice(rng: random.Random) -> Variant:
  kind = rng.choice(("first", "last", "even", "odd"))
  k = rng.randint(2, 4)
  summary, body = {
      "first": (f"Return the first {k} characters of s (all of s if it is shorter).", f"return s[:{k}]"),
      "last": (f"Return the last {k} characters of s (all of s if it is shorter).", f"return s[-{k}:]"),
      "even": ("Return the characters of s at even positions (0, 2, 4, ...), in order.", "return s[::2]"),
      "odd": ("Return the characters of s at odd positions (1, 3, 5, ...), in order.", "return s[1::2]")}[kind]
  name = {"first": "head", "last": "tail", "even": "even_chars", "odd": "odd_chars"}[kind]
  return Variant(name, "s: str", "str", summary, body, lambda r: (text(r, "abcdefgh", 0, 9),),
                 (("",), ("x",), ("abcdefgh"[:k + 1],)))


def count_words(rng: random.Random) -> Variant:
  kind = rng.choice(("all", "longer", "longer", "starting"))
  k = rng.randint(3, 5)
  c = rng.choice("bcdgmrst")
  if kind == "all":
    return Variant("count_words", "s: str", "int", "Return the number of words in the sentence s. Words are separated "
                   "by single spaces; an empty string has 0 words.", "return len(s.split())",
                   lambda r: (sentence(r, 0, 6),), (("",), ("hello",)))
  if kind == "longer":
    body = f"count = 0\nfor w in s.split():\n    if len(w) > {k}:\n        count += 1\nreturn count"
    fixed = " ".join(next(w for w in WORDS if len(w) == n) for n in (k, k + 1))
    return Variant("count_long_words", "s: str", "int",
                   f"Return how many words in the sentence s have more than {k} letters.", body,
                   lambda r: (sentence(r, 0, 6),), (("",), (fixed,)))
  return Variant("count_words_starting", "s: str", "int",
                 f"Return how many words in the sentence s start with the letter {c!r}.",
                 f"return sum(1 for w in s.split() if w[0] == {c!r})", lambda r: (sentence(r, 0, 6),),
                 (("",), (f"{c}at {c}og", )))


def join_words(rng: random.Random) -> Variant:
  sep = rng.choice((" ", "-", ", ", "+", "", "/"))
  between = f"with {sep!r} between them" if sep else "with nothing between them"
  return Variant(rng.choice(("join_words", "glue_words", "combine")), "words: List[str]", "str",
                 f"Return the strings in the list words joined into one string, {between}.",
                 f"return {sep!r}.join(words)", lambda r: (word_list(r, 0, 4),), (([],), (["one"],), (["a", "b"],)))


def word_lengths(rng: random.Random) -> Variant:
  kind = rng.choice(("length", "length", "first", "last", "upper"))
  returns, summary, expr = {
      "length": ("List[int]", "the length of each string in words", "len(w)"),
      "first": ("List[str]", "the first letter of each string in words", "w[0]"),
      "last": ("List[str]", "the last letter of each string in words", "w[-1]"),
      "upper": ("List[str]", "each string in words converted to uppercase", "w.upper()")}[kind]
  name = {"length": "word_lengths", "first": "first_letters_list", "last": "last_letters", "upper": "upper_all"}[kind]
  return Variant(name, "words: List[str]", returns, f"Return a list with {summary}, in the same order.",
                 f"return [{expr} for w in words]", lambda r: (word_list(r, 0, 5),), (([],), (["a", "bc"],)))


def pad_string(rng: random.Random) -> Variant:
  side = rng.choice(("left", "right"))
  c = rng.choice("*0.-#")
  body = f"return {c!r} * (n - len(s)) + s" if side == "left" else f"return s + {c!r} * (n - len(s))"
  return Variant(rng.choice((f"pad_{side}", f"fill_{side}")), "s: str, n: int", "str",
                 f"Return s padded on the {side} with {c!r} characters until it is n characters long. If s already "
                 "has n or more characters, return it unchanged.", body,
                 lambda r: (text(r, "abcxyz", 0, 5), r.randint(0, 8)), (("", 3), ("abc", 2), ("abc", 3), ("ab", 4)),
                 example=(rng.choice(("ab", "xyz", "7")), 5))


FAMILIES = {f.__name__: f for f in (count_char, replace_char, reverse_words, is_palindrome, repeat_string,
                                    longest_word, acronym, capitalize_words, string_slice, count_words, join_words,
                                    word_lengths, pad_string)}
