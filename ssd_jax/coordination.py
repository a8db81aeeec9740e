"""Where the processes of a multi-host run meet: which one coordinates, and named barriers with a timeout.

Every meeting point of the pipeline (the end of synthesis, the HF export, the random model's tokenizer, each
T_eval's judging in evaluation, the end of a run) calls `barrier(name)`. It waits on the jax coordination
service (`client.wait_at_barrier`, through orbax's `get_barrier_sync_fn`), a plain RPC with an explicit timeout,
not a device collective: `jax.experimental.multihost_utils.sync_global_devices` is an all-reduce, and on CPU
(gloo) it gives up after about 30 s, so processes whose judging ended two minutes apart killed each other
(BUILD_NOTES.md §9). Orbax's `sync_global_processes` would take a timeout too, but without its absl flag
`experimental_orbax_use_distributed_barrier` it falls back to that same collective and ignores the timeout.

The timeout is long by default (`config.distributed.barrier_timeout_s`, set once by the pipeline through
`set_barrier_timeout`): processes share the work, not the time it takes. A process that dies is noticed sooner
anyway: the coordination service stops every process once its heartbeats stop (jax's default: 100 s).
"""

from __future__ import annotations

import collections
import re

import jax
from orbax.checkpoint import multihost as ocp_multihost

__all__ = ["BarrierTimeoutError", "barrier", "barrier_timeout_s", "is_coordinator", "process_count",
           "process_index", "set_barrier_timeout"]

# Hours of uneven judging or exporting must pass (the same default as configs/default.py, for library callers).
_timeout_s = 6 * 3600.0
# How often this process has entered each barrier name: coordination-service barrier ids must not be reused, and
# every process enters the same names in the same order, so (name, count) is the same id on all of them.
_entered: collections.Counter[str] = collections.Counter()


class BarrierTimeoutError(RuntimeError):
  """Some process did not reach a barrier within its timeout."""


def process_index() -> int:
  """This process's index in the job (0 on one host)."""
  return jax.process_index()


def process_count() -> int:
  """How many processes the job has (1 without jax.distributed)."""
  return jax.process_count()


def is_coordinator() -> bool:
  """Whether this is process 0, the one that writes manifests, exports, summaries and reports."""
  return jax.process_index() == 0


def set_barrier_timeout(seconds: float) -> None:
  """Sets the timeout of every later `barrier` called without one (the pipeline: config.distributed)."""
  global _timeout_s
  if seconds <= 0:
    raise ValueError(f"barrier timeout must be > 0 seconds, got {seconds}")
  _timeout_s = float(seconds)


def barrier_timeout_s() -> float:
  """The timeout a `barrier` without an explicit one waits."""
  return _timeout_s


def barrier(name: str, timeout_s: float | None = None) -> None:
  """Waits until every process has called `barrier(name)`; a no-op on one process.

  Every process must call it with the same names in the same order (each call is its own barrier, so a name may
  be used again). Raises `BarrierTimeoutError` naming the barrier, the timeout and the processes that were
  missing when `timeout_s` (default: `barrier_timeout_s()`) passed.
  """
  if jax.process_count() == 1:
    return
  timeout_s = _timeout_s if timeout_s is None else float(timeout_s)
  _entered[name] += 1
  key = f"ssd_jax:{name}#{_entered[name]}"
  try:
    ocp_multihost.get_barrier_sync_fn()(key=key, timeout_ms=max(1, round(timeout_s * 1000)))
  except jax.errors.JaxRuntimeError as e:
    if "DEADLINE_EXCEEDED" not in str(e):
      raise
    missing = _missing_processes(str(e))
    if not missing:
      who = "some processes (the coordination service did not say which) had not reached it"
    else:
      who = f"process{'es' if len(missing) > 1 else ''} {', '.join(map(str, missing))} had not reached it"
      if jax.process_index() in missing:
        who += " (this one came after the others had given up)"
    raise BarrierTimeoutError(
        f"barrier {name!r} timed out after {timeout_s:g} s on process {jax.process_index()} of "
        f"{jax.process_count()}: {who}. If they were only slower (uneven judging or export), raise the timeout: "
        f"--config.distributed.barrier_timeout_s=SECONDS (now {timeout_s:g})") from e


def _missing_processes(message: str) -> list[int]:
  """The processes a coordination-service timeout message names as absent ([] when it names none)."""
  # It lists them by task after "Some timed out task names:", one a line ("1" or ".../task:1"), up to a blank line.
  found = re.search(r"Some timed out task names:\s*\n((?:[^\n]+\n?)+)", message)
  names = [line.strip().rsplit("task:", 1)[-1] for line in found.group(1).splitlines()] if found else []
  return [int(n) for n in names if n.isdigit()]
