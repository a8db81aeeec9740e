"""Settings dataclasses built from config subtrees: every key is a field, or the config is refused."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Iterable, Mapping, TypeVar

T = TypeVar("T")


class SettingsError(ValueError):
  """A config subtree names a field its settings type does not have."""


def check_fields(fields: Iterable[str], known: Iterable[str], where: str, owner: str) -> None:
  """Refuses the first of `fields` not in `known`, naming `config.<where>.<key>` and the nearest known names."""
  known = list(known)
  for key in fields:
    if key not in known:
      near = difflib.get_close_matches(key, known, n=3)
      hint = f"did you mean {', '.join(near)}?" if near else f"its fields: {', '.join(known)}"
      raise SettingsError(f"config.{where}.{key}: {owner} has no field {key!r} ({hint})")


def from_mapping(cls: type[T], fields: Mapping[str, Any], where: str, **values: Any) -> T:
  """`cls(**fields, **values)`, refusing a key of `fields` that is not a field of `cls`.

  `values` are fields the caller has already converted (nested settings), overriding the raw ones."""
  check_fields(fields, [f.name for f in dataclasses.fields(cls)], where, cls.__name__)
  return cls(**{**dict(fields), **values})
