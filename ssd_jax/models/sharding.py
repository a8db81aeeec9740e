"""One device mesh and one set of logical-axis rules for params, KV cache and activations.

Every array in ssd_jax is described by *logical* axis names ("embed", "q_heads", "experts", "batch", ...).
`ShardingRules` maps each logical name to zero or more physical mesh axes; the same rules give the
params' shardings at init, the placement of each tensor during checkpoint import and orbax restore, the
KV-cache sharding, and the activation constraints inside the forward pass.

A dimension whose size does not divide by the product of its mesh axes is replicated instead of
failing (e.g. 3 KV heads on a tensor axis of 4), so one rule set serves every model size. Each such
replication is logged once per (logical axes, shape, mesh) as a warning on "ssd_jax.models.sharding", so a
run that asked for tensor (or data, expert) parallelism learns where it did not get it.

The mesh uses Auto axis types: jax 0.10's `jax.make_mesh` defaults to Explicit axes, which reject
`with_sharding_constraint` on unlisted axes; we want the compiler to propagate everything we don't pin.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "expert", "tensor")

Logical = tuple[str | None, ...]

_log = logging.getLogger(__name__)
# (rules, logical axes, shape, mesh shape) already warned about: spec runs for every param and on every trace,
# and one line per array and mesh says all there is to say.
_reported: set[tuple] = set()


@dataclasses.dataclass(frozen=True)
class ShardingRules:
  """Logical axis name -> mesh axes. Each field names one logical axis."""

  # Activations and KV cache.
  batch: tuple[str, ...] = ("data", "fsdp", "expert")
  sequence: tuple[str, ...] = ()
  act_embed: tuple[str, ...] = ()
  act_heads: tuple[str, ...] = ("tensor",)
  act_kv_heads: tuple[str, ...] = ("tensor",)
  act_mlp: tuple[str, ...] = ("tensor",)
  act_vocab: tuple[str, ...] = ("tensor",)
  # Params.
  vocab: tuple[str, ...] = ("tensor",)
  embed: tuple[str, ...] = ("fsdp",)
  q_heads: tuple[str, ...] = ("tensor",)
  kv_heads: tuple[str, ...] = ("tensor",)
  head_dim: tuple[str, ...] = ()
  mlp: tuple[str, ...] = ("tensor",)
  experts: tuple[str, ...] = ("expert",)
  moe_mlp: tuple[str, ...] = ("tensor",)
  norm: tuple[str, ...] = ()

  def mesh_axes(self, logical: str | None) -> tuple[str, ...]:
    if logical is None:
      return ()
    try:
      return getattr(self, logical)
    except AttributeError:
      raise KeyError(f"no sharding rule for logical axis {logical!r}") from None

  def spec(self, logical: Logical, shape: Sequence[int] | None = None, mesh: Mesh | None = None) -> P:
    """PartitionSpec for an array with these logical axes; replicates dims that don't divide."""
    used: set[str] = set()
    out = []
    dropped: list[str] = []
    for i, name in enumerate(logical):
      axes = tuple(a for a in self.mesh_axes(name) if a not in used)
      if mesh is not None:
        # Axes of size 1 (or absent) split nothing, so leaving them out loses no parallelism.
        axes = tuple(a for a in axes if a in mesh.shape and mesh.shape[a] > 1)
        if shape is not None:
          asked = axes
          # Drop axes from the right until the dimension divides.
          while axes and shape[i] % math.prod(mesh.shape[a] for a in axes):
            axes = axes[:-1]
          if axes != asked:
            dropped.append(_describe_drop(name, i, int(shape[i]), asked, axes, mesh))
      used.update(axes)
      out.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    if dropped:
      key = (self, tuple(logical), tuple(int(d) for d in shape), tuple(mesh.shape.items()))
      if key not in _reported:
        _reported.add(key)
        _log.warning("sharding rule not applied to an array of shape %s with logical axes %s on mesh %s: %s",
                     key[2], key[1], dict(mesh.shape), "; ".join(dropped))
    return P(*out)

  def sharding(self, mesh: Mesh, logical: Logical, shape: Sequence[int]) -> NamedSharding:
    return NamedSharding(mesh, self.spec(logical, shape, mesh))


def _describe_drop(name: str | None, dim: int, size: int, asked: tuple[str, ...], kept: tuple[str, ...],
                   mesh: Mesh) -> str:
  """One dimension's lost mesh axes: what the rule asked for, what is replicated, and sizes that would divide."""
  ask = " x ".join(f"{a}={mesh.shape[a]}" for a in asked)
  lost = ", ".join(asked[len(kept):])
  fits = [d for d in range(2, min(size, mesh.size) + 1) if size % d == 0]
  fix = (f"to shard it, make {' x '.join(asked)} one of {', '.join(map(str, fits))}" if fits
         else f"no mesh axis size from 2 to {mesh.size} divides {size}")
  kept_note = f" (kept {', '.join(kept)})" if kept else ""
  return (f"logical axis {name!r} (dim {dim}, size {size}) asked for mesh axes {ask}, which do not divide {size}; "
          f"replicated over {lost} instead{kept_note}; {fix}")


def make_mesh(shape: dict[str, int] | None = None, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh over all (or the given) devices with axes (data, fsdp, expert, tensor).

  `shape` gives sizes for some axes; one axis may be -1 and takes the remaining devices. Unnamed axes
  are 1, except that with no -1 anywhere "fsdp" absorbs what is left.
  """
  devices = list(devices if devices is not None else jax.devices())
  shape = dict(shape or {})
  unknown = set(shape) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"unknown mesh axes {sorted(unknown)}; expected a subset of {MESH_AXES}")
  sizes = {a: int(shape.get(a, 1)) for a in MESH_AXES}
  free = [a for a, s in sizes.items() if s == -1]
  if len(free) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {free}")
  known = math.prod(s for s in sizes.values() if s != -1)
  if not free and known != len(devices) and "fsdp" not in shape:
    free = ["fsdp"]
    sizes["fsdp"] = -1
    known = math.prod(s for s in sizes.values() if s != -1)
  if free:
    if len(devices) % known:
      raise ValueError(f"mesh {shape} does not divide {len(devices)} devices")
    sizes[free[0]] = len(devices) // known
  if math.prod(sizes.values()) != len(devices):
    raise ValueError(f"mesh {sizes} has {math.prod(sizes.values())} devices, but {len(devices)} are given")
  dims = tuple(sizes[a] for a in MESH_AXES)
  if len(devices) == len(jax.devices()) and devices == list(jax.devices()):
    return topology_mesh(dims, devices)
  return Mesh(np.asarray(devices).reshape(dims), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def topology_mesh(dims: tuple[int, ...], devices: Sequence[jax.Device]) -> Mesh:
  """The (data, fsdp, expert, tensor) mesh of sizes `dims` over `devices`, ordered by their physical topology
  (`jax.make_mesh`). When a size is not a product of whole physical axes (GPT-OSS's fsdp 8 x expert 2 x tensor 2
  on a v5p-64's 2 x 4 x 4 chips), physical axes are split, as jax itself does on v5e; logged once."""
  types = (AxisType.Auto,) * len(MESH_AXES)
  try:
    return jax.make_mesh(dims, MESH_AXES, axis_types=types, devices=devices)
  except NotImplementedError as e:
    from jax.experimental import mesh_utils

    key = ("split", dims, getattr(devices[0], "device_kind", ""), len(devices))
    if key not in _reported:
      _reported.add(key)
      _log.warning("mesh %s: splitting physical axes of the %d devices (%s)", dict(zip(MESH_AXES, dims)),
                   len(devices), str(e).split(". ")[0])
    grid = mesh_utils.create_device_mesh(dims, devices, allow_split_physical_axes=True)
    return Mesh(grid, MESH_AXES, axis_types=types)


def constrain(x: jax.Array, rules: ShardingRules | None, mesh: Mesh | None, logical: Logical) -> jax.Array:
  """with_sharding_constraint by logical axes; a no-op without a mesh (single-device code paths)."""
  if mesh is None or rules is None or mesh.size == 1:
    return x
  return jax.lax.with_sharding_constraint(x, rules.sharding(mesh, logical, x.shape))
