"""Launch command lines and per-uid cleanup for `ssd_jax.eval.sandbox` (see its docstring for the design)."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence

SANDBOX_DIR = "/sandbox"
# bwrap --clearenv then exactly these (code_eval.md §10.2); process mode points HOME/TMPDIR at the run's cwd.
ENV = {
  "PATH": "/usr/bin:/bin",
  "LANG": "C.UTF-8",
  "HOME": "/tmp",
  "TMPDIR": "/tmp",
  "OMP_NUM_THREADS": "1",
  "OPENBLAS_NUM_THREADS": "1",
  "MKL_NUM_THREADS": "1",
}
TOOLS = ("setpriv", "prlimit", "bash", "unshare", "bwrap")
LOCK_DIR = os.path.join(tempfile.gettempdir(), "ssd_jax_sandbox_locks")
# How long a kill sent as the slot uid is retried before the survivors are reported as an error.
_REAP_TIMEOUT_S = 5.0


def find_tools() -> dict[str, str | None]:
  """Absolute paths of the launch tools, looked up in the system directories only."""
  return {name: shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin") for name in TOOLS}


def launcher_argv(tools: Mapping[str, str | None], *, uid: int | None, limits: Mapping[str, str],
                  inherited: Sequence[int]) -> list[str]:
  """setpriv (uid drop, no_new_privs, parent-death SIGKILL) + prlimit + a bash step that renumbers pipes.

  Args:
    tools: from `find_tools`.
    uid: the slot uid to become (also its gid, with no supplementary groups); None keeps the current uid.
    limits: prlimit long options without the dashes, e.g. {"as": "1073741824", "cpu": "3:4"}.
    inherited: fds passed by Popen that must appear as 3, 4, ... in that order in the exec'd command.
  """
  argv = [tools["setpriv"]]
  if uid is not None:
    argv += ["--reuid", str(uid), "--regid", str(uid), "--clear-groups"]
  argv += ["--no-new-privs", "--pdeathsig", "KILL", tools["prlimit"]]
  argv += [f"--{name}={value}" for name, value in limits.items()] + ["--"]
  # Popen cannot renumber inherited fds; bash can (dash only handles fds 0-9). Park the pipes on free fds
  # first so that moving them to 3, 4... cannot clobber one another. The parking fds must be below the
  # NOFILE limit already in force, and not 10: bash keeps an internal fd there.
  park = [fd for fd in range(5, 10) if fd not in inherited][:len(inherited)]
  parked = " ".join(f"{p}>&{fd} {fd}>&-" for p, fd in zip(park, inherited))
  placed = " ".join(f"{3 + i}>&{p} {p}>&-" for i, p in enumerate(park))
  return argv + [tools["bash"], "-c", f'exec {parked}; exec {placed}; unset SHLVL; exec "$@"', "sandbox"]


def bwrap_argv(bwrap: str, *, files_dir: str, tmpfs_bytes: int, python: str, status_fd: int) -> list[str]:
  """bubblewrap: fresh namespaces, no nested user namespaces, no caps, explicit env, minimal read-only binds."""
  args = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
          "--as-pid-1", "--cap-drop", "ALL", "--clearenv"]
  for key, value in ENV.items():
    args += ["--setenv", key, value]
  args += ["--ro-bind", "/usr", "/usr"]
  # Merged-/usr hosts have /bin, /lib... as symlinks into /usr; mirror them rather than binding more.
  for path in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
    if os.path.islink(path):
      args += ["--symlink", os.readlink(path), path]
    elif os.path.isdir(path):
      args += ["--ro-bind", path, path]
  real = os.path.realpath(python)
  if not real.startswith("/usr/"):
    prefix = os.path.dirname(os.path.dirname(real))
    args += ["--ro-bind", prefix, prefix]
  return args + ["--proc", "/proc", "--dev", "/dev", "--size", str(tmpfs_bytes), "--tmpfs", "/tmp",
                 "--ro-bind", files_dir, SANDBOX_DIR, "--chdir", "/tmp", "--json-status-fd", str(status_fd)]


def pids_of_uid(uid: int) -> list[int]:
  """Live (non-zombie) processes whose real, effective or saved uid is `uid`."""
  wanted, pids = str(uid).encode(), []
  for name in os.listdir("/proc"):
    if not name.isdigit():
      continue
    try:
      with open(f"/proc/{name}/status", "rb") as f:
        status = f.read()
    except OSError:
      continue
    state = status.find(b"\nState:")
    uids = status.find(b"\nUid:")
    if state < 0 or uids < 0 or status[state + 7:state + 9].strip().startswith(b"Z"):
      continue
    if wanted in status[uids + 5:status.find(b"\n", uids + 1)].split()[:3]:
      pids.append(int(name))
  return pids


def reap_uid(tools: Mapping[str, str | None], uid: int, grace_s: float = 0.0) -> list[int]:
  """SIGKILLs every process of `uid` until none is left; returns those found alive.

  Processes that disappear on their own within `grace_s` (a pid namespace still tearing down after its bwrap
  was killed) are not returned. Raises RuntimeError if some survive `_REAP_TIMEOUT_S` of kills.
  """
  pids = pids_of_uid(uid)
  grace_end = time.monotonic() + grace_s
  while pids and time.monotonic() < grace_end:
    time.sleep(0.002)
    pids = pids_of_uid(uid)
  found = pids
  deadline = time.monotonic() + _REAP_TIMEOUT_S
  while pids and time.monotonic() < deadline:
    # kill(-1) sent *as the slot uid* reaches exactly that uid's processes, including ones forked meanwhile
    # (bash's builtin: /usr/bin/kill is procps, which minimal images lack).
    subprocess.run([tools["setpriv"], "--reuid", str(uid), "--regid", str(uid), "--clear-groups", tools["bash"],
                    "-c", "kill -9 -1"], capture_output=True, check=False)
    time.sleep(0.005)
    pids = pids_of_uid(uid)
  if pids:
    raise RuntimeError(f"processes {pids} of sandbox uid {uid} survived SIGKILL")
  return found


class UidLock:
  """An exclusive flock on a slot uid, machine-wide (across processes and threads), held in a `with` block."""

  def __init__(self, uid: int):
    os.makedirs(LOCK_DIR, mode=0o700, exist_ok=True)
    st = os.lstat(LOCK_DIR)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
      raise PermissionError(f"lock dir {LOCK_DIR} must be owned by uid {os.geteuid()} with mode 0700")
    self._path = os.path.join(LOCK_DIR, f"uid-{uid}.lock")
    self._fd = -1

  def __enter__(self) -> UidLock:
    self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(self._fd, fcntl.LOCK_EX)
    return self

  def __exit__(self, *exc) -> None:
    os.close(self._fd)
