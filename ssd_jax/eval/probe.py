"""The isolation probe: a program every `Sandbox` runs before any model code, proving the level it claims.

The child reports what it can see and do; the parent decides, and also checks the host side (a loopback listener
it owns, files named with a fresh token). A level is claimed only when every property holds:

- a non-root uid (the slot uid when the evaluator is root), no effective capabilities, no_new_privs;
- its own pid namespace (pid 1, a namespace id other than the evaluator's), so host processes are invisible;
- no network: only a loopback device, and the evaluator's listener on 127.0.0.1 is not reached;
- no nested user namespace can be created;
- an environment of `isolation.ENV` keys only;
- host paths hidden: the checkout, the working directory, /etc, home directories, the sandbox's own temp tree and
  any caller-named path (data, workdir) cannot be listed (at most the skeleton directories leading to a read-only
  bind show) and take no writes;
- read-only: /, /usr, /dev, /sandbox (and an interpreter prefix outside /usr) take no writes;
- private: /tmp, /var/tmp and /dev/shm are empty, writable and size-capped, and nothing written there reaches
  the host's directories of the same name.

It also reports the environment programs get (the Python version, numpy's if importable): `Sandbox.environment`.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from ssd_jax.eval import isolation as iso

CHILD_SOURCE = r'''
import ctypes, json, os, socket

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "probe.json")) as f:
  spec = json.load(f)


def write_error(directory):
  """None if a new file could be written in `directory`, else why not."""
  try:
    with open(os.path.join(directory, spec["token"]), "x") as f:
      f.write("probe")
    return None
  except OSError as e:
    return e.strerror or repr(e)


def listing(directory):
  try:
    return sorted(os.listdir(directory))
  except OSError:
    return None


with open("/proc/self/status") as f:
  status = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
report = {"uid": os.getuid(), "euid": os.geteuid(), "pid": os.getpid(), "pidns": os.readlink("/proc/self/ns/pid"),
          "netdevs": [name for _, name in socket.if_nameindex()], "env": sorted(os.environ),
          "cap_eff": int(status["CapEff"], 16), "no_new_privs": int(status["NoNewPrivs"])}
try:
  socket.create_connection(("127.0.0.1", spec["port"]), timeout=1).close()
  report["loopback_reached"] = True
except OSError:
  report["loopback_reached"] = False
report["userns_created"] = ctypes.CDLL(None, use_errno=True).unshare(0x10000000) == 0  # CLONE_NEWUSER
import platform
report["python"] = platform.python_version()
try:
  import numpy
  report["numpy"] = numpy.__version__
except ImportError:
  report["numpy"] = None
report["hidden"] = {p: {"listing": listing(p), "write_error": write_error(p)} for p in spec["hidden"]}
report["read_only"] = {p: write_error(p) for p in spec["read_only"]}
report["private"] = {}
for p in spec["private"]:
  before = listing(p)
  st = os.statvfs(p)
  report["private"][p] = {"listing": before, "write_error": write_error(p), "bytes": st.f_blocks * st.f_frsize}
print(json.dumps(report))
'''

_ALLOWED_ENV = frozenset(iso.ENV) | {"PWD", "LC_CTYPE"}
_PAGE = 4096


def host_paths_to_hide(extra: Sequence[str] = ()) -> list[str]:
  """Existing host directories a program must not see: the checkout, the working directory, /etc, homes, `extra`."""
  package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  # A source checkout (an installed package's site-packages is no secret, and may lie under /usr).
  checkout = [package_root] if os.path.isfile(os.path.join(package_root, "pyproject.toml")) else []
  candidates = [*checkout, os.getcwd(), "/etc", "/root", "/home", os.path.expanduser("~"), *extra]
  out = []
  for path in candidates:
    path = os.path.abspath(path)
    if os.path.isfile(path):
      path = os.path.dirname(path)  # a file: its directory must be hidden
    if path not in out and os.path.isdir(path):
      out.append(path)
  return out


class Probe:
  """One probe run: the files it ships, then `check` of its report against the host."""

  def __init__(self, hidden: Sequence[str], read_only: Sequence[str], mount_points: Sequence[str]):
    self.token = "ssd_jax_probe_" + secrets.token_hex(8)
    self.hidden = list(hidden)
    self.read_only = list(read_only)
    self.mount_points = list(mount_points)
    self._listener = socket.create_server(("127.0.0.1", 0))
    self._listener.setblocking(False)
    self.environment: dict[str, str | None] = {}  # what programs can import, from the report

  def files(self) -> dict[str, bytes]:
    spec = {"token": self.token, "port": self._listener.getsockname()[1], "hidden": self.hidden,
            "read_only": self.read_only, "private": list(iso.PRIVATE_TMPFS)}
    return {"probe.py": CHILD_SOURCE.encode(), "probe.json": json.dumps(spec).encode()}

  def close(self) -> None:
    self._listener.close()

  def _skeleton(self, path: str) -> set[str]:
    """Names a hidden `path` may list: the next component towards each mount point below it."""
    prefix = path.rstrip("/") + "/"
    return {m[len(prefix):].split("/")[0] for m in self.mount_points if m.startswith(prefix)}

  def check(self, stdout: bytes, *, uid: int | None, tmpfs_bytes: int) -> list[str]:
    """The properties the report (the probe's stdout) or the host contradict; empty when the level holds."""
    try:
      r: Mapping[str, Any] = json.loads(stdout)
    except ValueError:
      return [f"the probe printed no report: {stdout[:300]!r}"]
    self.environment = {"python": r["python"], "numpy": r["numpy"]}
    problems = []
    if r["uid"] == 0 or r["euid"] == 0 or (uid is not None and r["uid"] != uid):
      problems.append(f"runs as uid {r['uid']} (euid {r['euid']}), expected {uid if uid is not None else 'non-root'}")
    if r["cap_eff"] or r["no_new_privs"] != 1:
      problems.append(f"capabilities {r['cap_eff']:#x}, no_new_privs {r['no_new_privs']}")
    if r["pidns"] == os.readlink("/proc/self/ns/pid") or r["pid"] != 1:
      problems.append(f"no private pid namespace (pid {r['pid']}, {r['pidns']})")
    reached = select.select([self._listener], [], [], 0)[0]
    if r["netdevs"] != ["lo"] or r["loopback_reached"] or reached:
      problems.append(f"network visible (devices {r['netdevs']}, host loopback reached: "
                      f"{r['loopback_reached'] or bool(reached)})")
    if r["userns_created"]:
      problems.append("a nested user namespace could be created")
    if set(r["env"]) - _ALLOWED_ENV:
      problems.append(f"environment leaks {sorted(set(r['env']) - _ALLOWED_ENV)}")
    for path, seen in r["hidden"].items():
      if seen["listing"] is not None and not set(seen["listing"]) <= self._skeleton(path):
        under = [m for m in self.mount_points if path.startswith(m.rstrip("/") + "/")]
        why = f" (it lies under {under[0]}, which the sandbox binds read-only: move it elsewhere)" if under else ""
        problems.append(f"host directory {path} is listable inside{why} ({seen['listing'][:5]})")
      if seen["write_error"] is None:
        problems.append(f"host directory {path} took a write")
    problems += [f"{path} took a write" for path, error in r["read_only"].items() if error is None]
    cap = -(-tmpfs_bytes // _PAGE) * _PAGE
    for path, seen in r["private"].items():
      if seen["listing"] != [] or seen["write_error"] is not None or seen["bytes"] > cap:
        problems.append(f"{path} is not a fresh private tmpfs of at most {cap} bytes (listing {seen['listing']}, "
                        f"write error {seen['write_error']}, size {seen['bytes']})")
    for path in [*self.hidden, *self.read_only, *iso.PRIVATE_TMPFS]:
      if os.path.lexists(os.path.join(path, self.token)):
        problems.append(f"the probe's write reached the host: {os.path.join(path, self.token)}")
    return problems
