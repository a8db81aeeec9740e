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
SANDBOX_SHELL = "/bin/sh"  # inside the sandbox (bound read-only from the host)
# The whole environment of a sandboxed program (code_eval.md §10.2): bwrap --clearenv then these; the unshare level
# launches its chain with exactly these.
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
    inherited: fds passed by Popen that must appear as 3, 4, ... in that order in the exec'd command (none: no
      bash step; the unshare level's newroot.py places the result pipe itself).
  """
  argv = [tools["setpriv"]]
  if uid is not None:
    argv += ["--reuid", str(uid), "--regid", str(uid), "--clear-groups"]
  argv += ["--no-new-privs", "--pdeathsig", "KILL", tools["prlimit"]]
  argv += [f"--{name}={value}" for name, value in limits.items()] + ["--"]
  if not inherited:
    return argv
  # Popen cannot renumber inherited fds; bash can (dash only handles fds 0-9). Park the pipes on free fds
  # first so that moving them to 3, 4... cannot clobber one another. The parking fds must be below the
  # NOFILE limit already in force, and not 10: bash keeps an internal fd there.
  park = [fd for fd in range(5, 10) if fd not in inherited][:len(inherited)]
  parked = " ".join(f"{p}>&{fd} {fd}>&-" for p, fd in zip(park, inherited))
  placed = " ".join(f"{3 + i}>&{p} {p}>&-" for i, p in enumerate(park))
  return argv + [tools["bash"], "-c", f'exec {parked}; exec {placed}; unset SHLVL; exec "$@"', "sandbox"]


# Fresh, size-capped, writable mounts in both levels; everything else the program sees is read-only.
PRIVATE_TMPFS = ("/tmp", "/var/tmp", "/dev/shm")
NEWROOT_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "newroot.py")


def interpreter_binds(python: str) -> list[str]:
  """Host directories besides /usr the interpreter and its libraries need, bound read-only: its install prefix
  when it lives outside /usr, and /etc/alternatives (symlinks only: Debian resolves shared libraries such as
  numpy's libblas.so.3 through it); nothing else of /etc."""
  real = os.path.realpath(python)
  binds = [] if real.startswith("/usr/") else [os.path.dirname(os.path.dirname(real))]
  return binds + ["/etc/alternatives"] * os.path.isdir("/etc/alternatives")


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
  for prefix in interpreter_binds(python):
    args += ["--ro-bind", prefix, prefix]
  args += ["--proc", "/proc", "--dev", "/dev"]
  for path in PRIVATE_TMPFS:
    args += ["--size", str(tmpfs_bytes), "--tmpfs", path]
  # bwrap's root and /dev are tmpfs mounts without a size cap: read-only, so the program cannot fill host memory.
  return args + ["--ro-bind", files_dir, SANDBOX_DIR, "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/tmp",
                 "--json-status-fd", str(status_fd)]


def unshare_argv(tools: Mapping[str, str | None], *, root_dir: str, files_dir: str, tmpfs_bytes: int, python: str,
                 status_fd: int, result_fd: int) -> list[str]:
  """The weaker level: util-linux `unshare` (as root) into new mount/net/ipc/uts namespaces and a pending pid
  namespace, where `newroot.py` starts pid 1, builds a minimal read-only root at `root_dir`, chroots into it and
  moves `result_fd` to fd 3 before the launcher (`launcher_argv` without inherited fds) drops root.

  The whole tree gets SIGKILL if the evaluator dies: setpriv's parent-death signal survives the execs into
  unshare and newroot.py, whose child, the namespace's init, has its own.
  """
  return [tools["setpriv"], "--pdeathsig", "KILL", "--", tools["unshare"], "--mount", "--propagation", "private",
          "--net", "--pid", "--ipc", "--uts", "--", python, "-I", "-S", "-B",
          NEWROOT_SCRIPT, root_dir, files_dir, str(tmpfs_bytes), str(status_fd), str(result_fd),
          *interpreter_binds(python), "--"]


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
