"""Arithmetic and simple-loop families: ranges, digits, divisibility, labels, sequences."""

from __future__ import annotations

import math
import random

from ssd_jax.data.codesuite.core import Variant


def clamp(rng: random.Random) -> Variant:
  lo, hi = rng.choice(((0, 10), (0, 100), (-5, 5), (1, 9), (10, 20), (-10, 0)))
  return Variant(rng.choice(("clamp", "limit", "bound")), "x: int", "int",
                 f"Return x limited to the range from {lo} to {hi}: {lo} if x is less than {lo}, {hi} if x is greater "
                 f"than {hi}, and x otherwise.",
                 f"if x < {lo}:\n    return {lo}\nif x > {hi}:\n    return {hi}\nreturn x",
                 lambda r: (r.randint(lo - 8, hi + 8),), ((lo,), (hi,), (lo - 1,), (hi + 1,), (lo + 1,)))


def fizz_word(rng: random.Random) -> Variant:
  a, b = rng.choice(((3, 5), (2, 3), (2, 5), (3, 7), (4, 6)))
  w1, w2 = rng.choice((("Fizz", "Buzz"), ("Foo", "Bar"), ("Ping", "Pong"), ("Hi", "Ho")))
  body = (f"if n % {a} == 0 and n % {b} == 0:\n    return {w1 + w2!r}\nif n % {a} == 0:\n    return {w1!r}\n"
          f"if n % {b} == 0:\n    return {w2!r}\nreturn str(n)")
  both = a * b // math.gcd(a, b)
  return Variant(rng.choice(("fizz_word", "say_number", "game_word")), "n: int", "str",
                 f"Return {w1 + w2!r} if n is divisible by both {a} and {b}, {w1!r} if n is divisible only by {a}, "
                 f"{w2!r} if n is divisible only by {b}, and otherwise n as a string.", body,
                 lambda r: (r.randint(1, 60),), ((both,), (2 * both,), (a,), (b,), (1,), (both + 1,)))


def digit_sum(rng: random.Random) -> Variant:
  kind = rng.choice(("sum", "sum", "largest", "even_count"))
  summary, body = {
      "sum": ("Return the sum of the digits of the non-negative integer n.",
              "total = 0\nfor ch in str(n):\n    total += int(ch)\nreturn total"),
      "largest": ("Return the largest digit of the non-negative integer n.",
                  "best = 0\nfor ch in str(n):\n    if int(ch) > best:\n        best = int(ch)\nreturn best"),
      "even_count": ("Return how many digits of the non-negative integer n are even (0, 2, 4, 6 or 8).",
                     "count = 0\nfor ch in str(n):\n    if int(ch) % 2 == 0:\n        count += 1\nreturn count")}[kind]
  return Variant({"sum": "digit_sum", "largest": "largest_digit", "even_count": "count_even_digits"}[kind], "n: int",
                 "int", summary, body, lambda r: (r.randint(0, 10 ** r.randint(1, 6)),), ((0,), (7,), (109,)))


def sum_range(rng: random.Random) -> Variant:
  kind = rng.choice(("all", "all", "squares", "even"))
  what, step = {"all": ("1 + 2 + ... + n", "i"), "squares": ("1*1 + 2*2 + ... + n*n", "i * i"),
                "even": ("the even numbers from 1 to n (including n)", "i if i % 2 == 0 else 0")}[kind]
  body = f"total = 0\nfor i in range(1, n + 1):\n    total += {step}\nreturn total"
  return Variant({"all": "sum_to_n", "squares": "sum_squares_to_n", "even": "sum_even_to_n"}[kind], "n: int", "int",
                 f"Return the sum {what} for a non-negative integer n (0 when n is 0)." if kind != "even" else
                 f"Return the sum of {what}, for a non-negative integer n.", body,
                 lambda r: (r.randint(0, 30),), ((0,), (1,), (2,), (4,)))


def count_multiples(rng: random.Random) -> Variant:
  k = rng.randint(2, 7)
  negate = rng.random() < 0.3
  cond = f"i % {k} != 0" if negate else f"i % {k} == 0"
  body = f"count = 0\nfor i in range(1, n + 1):\n    if {cond}:\n        count += 1\nreturn count"
  return Variant(f"count_{'non' if negate else ''}multiples_of_{k}", "n: int", "int",
                 f"Return how many of the numbers 1, 2, ..., n are {'not ' if negate else ''}divisible by {k}.", body,
                 lambda r: (r.randint(0, 50),), ((0,), (k,), (k - 1,), (2 * k,)))


def is_prime(rng: random.Random) -> Variant:
  if rng.random() < 0.7:
    return Variant(rng.choice(("is_prime", "prime_check")), "n: int", "bool",
                   "Return True if n is a prime number, otherwise False. Numbers below 2 are not prime.",
                   "if n < 2:\n    return False\nfor d in range(2, n):\n    if n % d == 0:\n        return False\n"
                   "return True", lambda r: (r.randint(0, 60),), ((0,), (1,), (2,), (9,), (4,)))
  return Variant("count_divisors", "n: int", "int", "Return how many positive integers divide the positive integer n "
                 "exactly (including 1 and n).",
                 "count = 0\nfor d in range(1, n + 1):\n    if n % d == 0:\n        count += 1\nreturn count",
                 lambda r: (r.randint(1, 60),), ((1,), (2,), (12,)))


def leap_year(rng: random.Random) -> Variant:
  rule = ("A year is a leap year if it is divisible by 4, except years divisible by 100, which are leap years only "
          "if they are also divisible by 400.")
  edges = ((1900,), (2000,), (2024,), (2023,))
  if rng.random() < 0.6:
    return Variant(rng.choice(("is_leap_year", "leap")), "year: int", "bool",
                   f"Return True if year is a leap year, otherwise False. {rule}",
                   "if year % 400 == 0:\n    return True\nif year % 100 == 0:\n    return False\nreturn year % 4 == 0",
                   lambda r: (r.randint(1800, 2100),), edges)
  return Variant("days_in_year", "year: int", "int", f"Return 366 if year is a leap year and 365 otherwise. {rule}",
                 "if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):\n    return 366\nreturn 365",
                 lambda r: (r.randint(1800, 2100),), edges)


def sign_word(rng: random.Random) -> Variant:
  pos, neg, zero = rng.choice((("positive", "negative", "zero"), ("plus", "minus", "zero"), ("up", "down", "flat")))
  return Variant(rng.choice(("sign_word", "describe_sign", "classify")), "n: int", "str",
                 f"Return {pos!r} if n is greater than 0, {neg!r} if n is less than 0, and {zero!r} if n is 0.",
                 f"if n > 0:\n    return {pos!r}\nif n < 0:\n    return {neg!r}\nreturn {zero!r}",
                 lambda r: (r.randint(-50, 50),), ((0,), (1,), (-1,)))


def letter_grade(rng: random.Random) -> Variant:
  high, mid, low = rng.choice(((90, 80, 70), (85, 70, 50), (80, 60, 40), (75, 50, 25)))
  labels = rng.choice((("A", "B", "C", "F"), ("gold", "silver", "bronze", "none")))
  body = (f"if score >= {high}:\n    return {labels[0]!r}\nif score >= {mid}:\n    return {labels[1]!r}\n"
          f"if score >= {low}:\n    return {labels[2]!r}\nreturn {labels[3]!r}")
  return Variant(rng.choice(("grade", "letter_grade", "medal")), "score: int", "str",
                 f"Return {labels[0]!r} if score is at least {high}, {labels[1]!r} if it is at least {mid}, "
                 f"{labels[2]!r} if it is at least {low}, and {labels[3]!r} otherwise.", body,
                 lambda r: (r.randint(0, 100),), tuple((v,) for t in (high, mid, low) for v in (t, t - 1)))


def fibonacci(rng: random.Random) -> Variant:
  name, a, b = rng.choice((("fib", 0, 1), ("fibonacci", 0, 1), ("lucas", 2, 1), ("pell_like", 1, 3)))
  return Variant(name, "n: int", "int",
                 f"Return the n-th number of the sequence that starts {name}(0) = {a}, {name}(1) = {b}, where each "
                 "later number is the sum of the two before it.",
                 f"a, b = {a}, {b}\nfor _ in range(n):\n    a, b = b, a + b\nreturn a",
                 lambda r: (r.randint(0, 20),), ((0,), (1,), (2,), (5,)))


def round_multiple(rng: random.Random) -> Variant:
  k = rng.choice((3, 4, 5, 10, 7))
  if rng.random() < 0.5:
    return Variant(rng.choice(("round_down", "floor_to_multiple")), "n: int", "int",
                   f"Return the largest multiple of {k} that is less than or equal to the non-negative integer n.",
                   f"return n - n % {k}", lambda r: (r.randint(0, 100),), ((0,), (k,), (k - 1,), (k + 1,)))
  return Variant(rng.choice(("round_up", "ceil_to_multiple")), "n: int", "int",
                 f"Return the smallest multiple of {k} that is greater than or equal to the non-negative integer n.",
                 f"return (n + {k - 1}) // {k} * {k}", lambda r: (r.randint(0, 100),), ((0,), (k,), (k - 1,), (k + 1,)))


def max_of_three(rng: random.Random) -> Variant:
  kind, body = rng.choice((("largest", "return max(a, b, c)"), ("smallest", "return min(a, b, c)"),
                           ("middle", "return sorted([a, b, c])[1]")))
  return Variant(rng.choice((f"{kind}_of_three", f"{kind}_of")), "a: int, b: int, c: int", "int",
                 f"Return the {kind} of the three numbers a, b and c." if kind != "middle" else
                 "Return the middle value of the three numbers a, b and c (the one that is neither the smallest nor "
                 "the largest when they are sorted).", body, lambda r: tuple(r.randint(-20, 20) for _ in range(3)),
                 ((1, 2, 3), (3, 2, 1), (2, 3, 1), (5, 5, 1)))


def multiples_list(rng: random.Random) -> Variant:
  k = rng.randint(2, 9)
  if rng.random() < 0.7:
    return Variant(rng.choice((f"multiples_of_{k}", "times_table")), "n: int", "List[int]",
                   f"Return the list of the first n multiples of {k}: [{k}, {2 * k}, ..., n * {k}].",
                   f"return [{k} * i for i in range(1, n + 1)]", lambda r: (r.randint(0, 12),), ((0,), (1,)))
  return Variant(f"powers_of_{k}", "n: int", "List[int]", f"Return the list [1, {k}, {k * k}, ...] of the first n "
                 f"powers of {k}, starting with {k} to the power 0.", f"return [{k} ** i for i in range(n)]",
                 lambda r: (r.randint(0, 10),), ((0,), (1,)))


def countdown(rng: random.Random) -> Variant:
  kind = rng.choice(("to_one", "to_zero", "evens", "odds"))
  summary, body = {"to_one": ("Return the list of numbers from n down to 1, for n >= 0 (empty for 0).",
                              "return list(range(n, 0, -1))"),
                   "to_zero": ("Return the list of numbers from n down to 0, for n >= 0.",
                               "return list(range(n, -1, -1))"),
                   "evens": ("Return the list of the even numbers from 0 up to n (including n if it is even), in "
                             "increasing order.", "return list(range(0, n + 1, 2))"),
                   "odds": ("Return the list of the odd numbers from 1 up to n (including n if it is odd), in "
                            "increasing order.", "return list(range(1, n + 1, 2))")}[kind]
  names = {"to_one": ("countdown", "count_down", "descending"), "to_zero": ("countdown_to_zero", "down_to_zero"),
           "evens": ("evens_up_to", "even_numbers"), "odds": ("odds_up_to", "odd_numbers")}[kind]
  return Variant(rng.choice(names), "n: int", "List[int]", summary, body, lambda r: (r.randint(0, 12),),
                 ((0,), (1,), (2,)), example=(rng.randint(3, 7),))


def staircase(rng: random.Random) -> Variant:
  c = rng.choice("*#+o")
  down = rng.random() < 0.4
  order = "range(n, 0, -1)" if down else "range(1, n + 1)"
  what = f"{c * 3!r}, {c * 2!r}, {c!r}" if down else f"{c!r}, {c * 2!r}, {c * 3!r}"
  return Variant(rng.choice(("staircase", "triangle_rows")), "n: int", "List[str]",
                 f"Return a list of n strings made of {c!r} characters, like [{what}] for n = 3: the lines "
                 f"{'shrink from n characters to 1' if down else 'grow from 1 character to n'}.",
                 f"return [{c!r} * i for i in {order}]", lambda r: (r.randint(0, 10),), ((0,), (1,)))


FAMILIES = {f.__name__: f for f in (clamp, fizz_word, digit_sum, sum_range, count_multiples, is_prime, leap_year,
                                    sign_word, letter_grade, fibonacci, round_multiple, max_of_three, multiples_list,
                                    countdown, staircase)}
