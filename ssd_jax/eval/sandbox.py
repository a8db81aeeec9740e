"""Process sandbox for untrusted, model-written Python (code_eval.md §10).

Every run is a fresh process tree launched (argv only, see `isolation.py`) as

  setpriv --reuid U --regid U --clear-groups --no-new-privs --pdeathsig KILL
    prlimit --as --cpu --nproc --nofile --fsize --core=0 --stack --
      bash -c '<renumber the result pipe to fd 3>' bwrap <namespaces, minimal binds> python3 -I -B ... ARGV

so no Python code runs between fork and exec in this (threaded) parent; a run costs about 15-20 ms more than a
bare interpreter start. Slot i runs as the dedicated host uid `base_uid + i`: dropping root first is what makes
RLIMIT_NPROC bite (root ignores it) and what stops signals to the evaluator or to other slots. A slot uid is a
machine-wide exclusive resource (an flock per uid) because after each run every process still owned by that uid
is SIGKILLed; two sandboxes sharing a `base_uid` serialize instead of killing each other's programs.

Isolation levels, recorded in every `RunResult.isolation`. The default is the strong one; where it cannot be had
the sandbox refuses (`SandboxError` naming the fix) unless the caller opts in by name with `allow_weak_isolation`:

- "bwrap" (strong; needs bubblewrap and root): new user/pid/net/ipc/uts/cgroup/mount namespaces, no nested user
  namespaces, all caps dropped, the explicit environment `isolation.ENV`, read-only /usr (plus the merged-/usr
  symlinks) and the program files at /sandbox, fresh size-capped tmpfs mounts at /tmp, /var/tmp and /dev/shm, a
  read-only root and /dev, and nothing else of the host filesystem (no /etc, /home, /root, /work). The network
  namespace has only its own loopback. The program runs as pid 1 of its namespace (`--as-pid-1`): when it exits
  the kernel kills every process it left behind, there is no bwrap init beside it to ptrace or stop, and, as for
  any init, signals it sends to itself are ignored unless it installed a handler (SIGKILL from outside, faults and
  rlimit kills still work). bwrap reports a child killed by signal N as exit status 128+N; that is unfolded back
  to `signal=N`, so `sys.exit(137)` reads as SIGKILL (a failure either way).
- "unshare" (weaker, opt-in; root without bwrap, e.g. a bare accelerator host): util-linux `unshare` into new
  mount/pid/net/ipc/uts namespaces, where `newroot.py` (our code, running as root before the program) builds the
  same filesystem view as bwrap's (read-only /usr and /sandbox, private size-capped /tmp, /var/tmp, /dev/shm,
  minimal /dev, a proc of the new pid namespace, read-only root) and chroots into it; then the same uid drop,
  rlimits and no_new_privs. The program is pid 1 as under bwrap. Weaker because it is assembled by hand instead of
  by a dedicated, audited tool, keeps the host's user namespace (the uid is a real host uid; a chroot refuses
  nested user namespaces), and leaves the host's mount tree in the namespace behind the chroot.
- "bwrap-nouid" (weaker, opt-in; bwrap without root, development only): no uid can be dropped, so every slot runs
  as the evaluator's uid, RLIMIT_NPROC counts the evaluator's own processes and no per-uid kill is done.

No root and no bwrap: refused, whatever the opt-in. Before its first program every `Sandbox` proves the level it
claims with `probe.Probe` (non-root uid, own pid namespace, no network, host paths hidden and unwritable,
private tmpfs); a level whose probe fails is not claimed.

The parent never decodes output: stdout (capped; over the cap the run is killed), the stderr tail and the frames
of the result channel (fd 3 in the child, 4-byte big-endian length + payload) come back as bytes.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import math
import os
import queue
import resource
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence

from ssd_jax.eval import isolation as iso
from ssd_jax.eval.probe import Probe, host_paths_to_hide

_CHUNK = 1 << 16
_STARTED = b"sandbox-started"  # the start record under bwrap (see Sandbox._argv)
_STATUS_CAP = 1 << 16
_FRAME_HEADER = 4
_MLE_RSS_FRACTION = 0.8


ISOLATIONS = ("auto", "bwrap", "unshare")
STRONG_LEVEL = "bwrap"
INSTALL_BWRAP = "apt-get install bubblewrap"
_OPT_IN = ("--config.eval.allow_weak_isolation=True (python -m ssd_jax.main) or --allow-weak-isolation "
           "(python -m ssd_jax.eval.run / selfcheck / bench.sandbox)")


class SandboxError(RuntimeError):
  """The sandbox cannot give the isolation it was asked for; the message names what is missing and the fix."""


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
  """Limits and isolation for every run of a `Sandbox`.

  Attributes:
    isolation: "auto" (the strongest level this host offers), "bwrap" or "unshare" (see the module docstring).
    allow_weak_isolation: Whether a level weaker than root + bwrap may be used; off, the sandbox refuses instead.
    protected_paths: Host files or directories (data with expected answers, the workdir, checkpoints) that the
      probe must find invisible, besides the checkout, the working directory, /etc and home directories.
  """

  isolation: str = "auto"
  allow_weak_isolation: bool = False
  protected_paths: tuple[str, ...] = ()
  python: str = "/usr/bin/python3"
  python_flags: tuple[str, ...] = ("-I", "-B", "-X", "int_max_str_digits=50000")
  wall_timeout_s: float = 10.0
  cpu_seconds: int | None = None
  memory_bytes: int = 4 << 30
  nproc: int = 64
  nofile: int = 128
  fsize_bytes: int = 64 << 20
  stack_bytes: int = 256 << 20
  tmpfs_bytes: int = 256 << 20
  stdout_cap: int = 64 << 20
  stderr_cap: int = 64 << 10
  frames_cap: int = 64 << 20
  workers: int = 2
  base_uid: int = 61000

  def __post_init__(self):
    if self.isolation not in ISOLATIONS:
      raise ValueError(f"isolation must be one of {ISOLATIONS}, got {self.isolation!r}")
    if self.workers < 1:
      raise ValueError(f"workers must be >= 1, got {self.workers}")


@dataclasses.dataclass(frozen=True)
class Program:
  """Files placed read-only in /sandbox, the interpreter's arguments, and stdin (a read-only file on fd 0).

  `on_frame`, if given, sees each result frame as it arrives (in the supervising thread); returning True ends the
  run at once (outcome "stopped"): the caller already knows the verdict, e.g. LCB stops at the first failed test.
  """

  files: Mapping[str, bytes]
  argv: tuple[str, ...]
  stdin: bytes = b""
  wall_timeout_s: float | None = None
  on_frame: Callable[[bytes], bool] | None = dataclasses.field(default=None, compare=False)


@dataclasses.dataclass(frozen=True)
class RunResult:
  """What one run did. Bytes are returned undecoded; `failure_verdict` classifies non-clean exits."""

  outcome: str
  returncode: int | None
  signal: int | None
  stdout: bytes
  stdout_truncated: bool
  stderr: bytes
  frames: tuple[bytes, ...]
  frames_error: str | None
  wall_s: float
  isolation: str
  error: str | None = None
  cpu_s: float | None = None
  max_rss_bytes: int | None = None
  cpu_limit_s: int | None = None
  memory_limit_bytes: int | None = None
  stragglers: int = 0


def add_isolation_flags(parser: argparse.ArgumentParser) -> None:
  """`--isolation` and `--allow-weak-isolation`, the same for every command-line tool that runs model code."""
  parser.add_argument("--isolation", choices=ISOLATIONS, default="auto",
                      help="sandbox level: auto = bwrap as root, else refuse unless --allow-weak-isolation")
  parser.add_argument("--allow-weak-isolation", action="store_true",
                      help="accept a level weaker than root + bubblewrap ('unshare' as root without bwrap, "
                           "'bwrap-nouid' without root); recorded in every result")


def failure_verdict(result: RunResult) -> str | None:
  """TLE / OLE / MLE / RE / SANDBOX_ERROR for a run that did not exit 0, else None (judge it by its output).

  MLE: MemoryError in the stderr tail, or killed with a peak RSS near the address-space limit. TLE: the wall
  timeout, SIGXCPU, or death after using the whole CPU budget (the hard limit sends SIGKILL).
  """
  if result.outcome == "sandbox_error":
    return "SANDBOX_ERROR"
  if result.outcome == "timeout":
    return "TLE"
  if result.outcome == "output_limit":
    return "OLE"
  if result.outcome == "stopped":
    return None  # ended by `Program.on_frame`: the frames decide
  if result.outcome == "exited" and result.returncode == 0:
    return None
  if b"MemoryError" in result.stderr:
    return "MLE"
  if result.signal == signal.SIGXCPU or (
      result.cpu_s is not None and result.cpu_limit_s is not None and result.cpu_s >= result.cpu_limit_s):
    return "TLE"
  if (result.signal is not None and result.max_rss_bytes is not None and result.memory_limit_bytes is not None
      and result.max_rss_bytes >= _MLE_RSS_FRACTION * result.memory_limit_bytes):
    return "MLE"
  return "RE"


class _Capture:
  """Incremental, capped readers for one run's stdout, stderr, result channel and bwrap status pipe."""

  def __init__(self, cfg: SandboxConfig):
    self.cfg = cfg
    self.stdout = bytearray()
    self.stdout_truncated = False
    self.stderr = bytearray()
    self.status = bytearray()
    self.frames: list[bytes] = []
    self.frames_error: str | None = None
    self._frame_buf = bytearray()
    self._frame_bytes = 0
    self._frames_seen = 0

  def new_frames(self) -> list[bytes]:
    """The complete frames received since the last call."""
    new = self.frames[self._frames_seen:]
    self._frames_seen = len(self.frames)
    return new

  def add_stdout(self, data: bytes) -> bool:
    """Appends stdout; False once the cap is exceeded (the run must be killed)."""
    room = self.cfg.stdout_cap - len(self.stdout)
    self.stdout += data[:room]
    if len(data) > room:
      self.stdout_truncated = True
    return not self.stdout_truncated

  def add_stderr(self, data: bytes) -> None:
    self.stderr += data
    if len(self.stderr) > self.cfg.stderr_cap:
      del self.stderr[:len(self.stderr) - self.cfg.stderr_cap]

  def add_status(self, data: bytes) -> None:
    self.status += data[:_STATUS_CAP - len(self.status)]

  def add_frames(self, data: bytes) -> None:
    # After a framing error the rest of the channel is drained and dropped, so the program is not blocked.
    if self.frames_error is not None:
      return
    self._frame_buf += data
    while len(self._frame_buf) >= _FRAME_HEADER:
      size = int.from_bytes(self._frame_buf[:_FRAME_HEADER], "big")
      if self._frame_bytes + _FRAME_HEADER + size > self.cfg.frames_cap:
        self.frames_error = f"frame of {size} bytes exceeds frames_cap={self.cfg.frames_cap}"
        self._frame_buf.clear()
        return
      if len(self._frame_buf) < _FRAME_HEADER + size:
        return
      self.frames.append(bytes(self._frame_buf[_FRAME_HEADER:_FRAME_HEADER + size]))
      del self._frame_buf[:_FRAME_HEADER + size]
      self._frame_bytes += _FRAME_HEADER + size

  def finish_frames(self) -> None:
    if self.frames_error is None and self._frame_buf:
      self.frames_error = f"truncated frame: {len(self._frame_buf)} trailing bytes"


class Sandbox:
  """Runs `Program`s in isolated, resource-limited process trees; see the module docstring."""

  def __init__(self, cfg: SandboxConfig = SandboxConfig()):
    self._cfg = cfg
    self._root = os.geteuid() == 0
    self._tools = iso.find_tools()
    missing = [name for name in ("setpriv", "prlimit", "bash") if self._tools[name] is None]
    if missing:
      raise SandboxError(f"sandbox needs {', '.join(missing)} (util-linux, bash) in /usr/bin or /bin")
    if not os.access(cfg.python, os.X_OK):
      raise SandboxError(f"sandbox interpreter {cfg.python} is not executable")
    # Root-owned 0711: a slot uid can reach its own run dir by name but cannot list the others.
    self._base = tempfile.mkdtemp(prefix="ssd_sandbox_")
    os.chmod(self._base, 0o711)
    self._remove_base = weakref.finalize(self, shutil.rmtree, self._base, True)
    self._executor: concurrent.futures.ThreadPoolExecutor | None = None
    self._executor_lock = threading.Lock()
    self._swept: set[int] = set()
    self._closed = False
    self._isolation = ""
    self._environment: dict[str, str | None] = {}
    try:
      self._isolation = self._resolve_isolation()
    except BaseException:
      self.close()
      raise

  @property
  def isolation(self) -> str:
    return self._isolation

  @property
  def config(self) -> SandboxConfig:
    return self._cfg

  @property
  def environment(self) -> dict[str, str | None]:
    """What programs run with, as the probe saw it: {"python": version, "numpy": version or None}."""
    return dict(self._environment)

  def __enter__(self) -> Sandbox:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def _candidates(self) -> list[tuple[str, str | None]]:
    """(level, why it is unavailable or None) in order of preference, for the configured `isolation`."""
    cfg, out = self._cfg, []
    if cfg.isolation in ("auto", "bwrap"):
      level = STRONG_LEVEL if self._root else "bwrap-nouid"
      out.append((level, None if self._tools["bwrap"] else f"bubblewrap (bwrap) is not installed; install it: "
                                                          f"`{INSTALL_BWRAP}`"))
    if cfg.isolation in ("auto", "unshare"):
      why = None
      if not self._root:
        why = "the 'unshare' level needs root (it mounts the sandbox's filesystem before dropping to a slot uid)"
      elif self._tools["unshare"] is None:
        why = "util-linux `unshare` is not installed"
      out.append(("unshare", why))
    return out

  def _resolve_isolation(self) -> str:
    """The first candidate level that is allowed, available and proven by the probe; else SandboxError."""
    refusals = []
    for level, why in self._candidates():
      if why is None and level != STRONG_LEVEL and not self._cfg.allow_weak_isolation:
        why = "a weaker level, used only with the opt-in"
      if why is None:
        problems = self._probe(level)
        if not problems:
          return level
        why = f"its isolation probe failed: {'; '.join(problems)}"
      refusals.append(f"{level}: {why}")
    fixes = []
    if self._cfg.isolation != "unshare":
      if self._tools["bwrap"] is None:
        fixes.append(f"install bubblewrap (`{INSTALL_BWRAP}`)" + ("" if self._root else " and run as root"))
      elif not self._root:
        fixes.append("run as root (each program then runs as its own uid)")
    if not self._cfg.allow_weak_isolation and (self._root or self._tools["bwrap"]):
      fixes.append(f"accept a weaker level by name with {_OPT_IN}")
    if not fixes:
      fixes.append("make the failed properties above hold on this host")
    raise SandboxError("refusing to run model-written code: no allowed isolation level works on this host ("
                       + " | ".join(refusals) + "). Fix: " + ", or ".join(fixes) + ".")

  def _probe(self, level: str) -> list[str]:
    """Runs the isolation probe under `level`; the properties that failed (empty when the level holds)."""
    self._isolation = level
    binds = iso.interpreter_binds(self._cfg.python)
    links = [p for p in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32") if os.path.lexists(p)]
    probe = Probe(host_paths_to_hide([self._base, *self._cfg.protected_paths]),
                  read_only=["/", "/usr", "/dev", iso.SANDBOX_DIR, *binds],
                  mount_points=["/usr", *links, *binds, iso.SANDBOX_DIR, "/proc", "/dev", *iso.PRIVATE_TMPFS])
    try:
      result = self.run(Program(files=probe.files(), argv=(f"{iso.SANDBOX_DIR}/probe.py",),
                                wall_timeout_s=max(self._cfg.wall_timeout_s, 10.0)))
      if result.outcome != "exited" or result.returncode != 0:
        detail = result.error or result.stderr.decode("utf-8", "replace").strip()[-2000:]
        return [f"the probe gave outcome={result.outcome} returncode={result.returncode}: {detail}"]
      problems = probe.check(result.stdout, uid=self._cfg.base_uid if self._root else None,
                             tmpfs_bytes=self._cfg.tmpfs_bytes)
      self._environment = probe.environment
      return problems
    finally:
      probe.close()

  def close(self) -> None:
    """Stops the worker threads and removes the temp tree."""
    if self._closed:
      return
    self._closed = True
    if self._executor is not None:
      self._executor.shutdown(wait=True)
    self._remove_base()

  def run_many(self, programs: Sequence[Program]) -> list[RunResult]:
    """Runs `programs` over `cfg.workers` slots in parallel (one program per slot at a time), in input order."""
    with self._executor_lock:
      if self._executor is None:
        self._executor = concurrent.futures.ThreadPoolExecutor(self._cfg.workers, thread_name_prefix="sandbox")
    free: queue.SimpleQueue[int] = queue.SimpleQueue()
    for slot in range(self._cfg.workers):
      free.put(slot)

    def one(program: Program) -> RunResult:
      slot = free.get()
      try:
        return self.run(program, slot)
      finally:
        free.put(slot)

    return list(self._executor.map(one, programs))

  def run(self, program: Program, slot: int = 0) -> RunResult:
    """Runs one program on `slot` (uid `base_uid + slot`), blocking until it ends or is killed."""
    if self._closed:
      raise SandboxError("sandbox is closed")
    if not 0 <= slot < self._cfg.workers:
      raise ValueError(f"slot must be in [0, {self._cfg.workers}), got {slot}")
    for name in program.files:
      if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"program file names must be flat, got {name!r}")
    uid = self._cfg.base_uid + slot
    if not self._root:
      return self._run(program, uid)
    try:
      lock = iso.UidLock(uid)
    except PermissionError as e:
      raise SandboxError(str(e)) from None
    with lock:
      if uid not in self._swept:
        self._reap(uid)
        self._swept.add(uid)
      return self._run(program, uid)

  def _run(self, program: Program, uid: int) -> RunResult:
    cfg = self._cfg
    wall = program.wall_timeout_s if program.wall_timeout_s is not None else cfg.wall_timeout_s
    cpu = cfg.cpu_seconds if cfg.cpu_seconds is not None else math.ceil(wall) + 1
    limits = dict(cpu_limit_s=cpu, memory_limit_bytes=cfg.memory_bytes)
    fds: list[int] = []
    dirs: list[str] = []
    start = time.monotonic()
    try:
      rundir = tempfile.mkdtemp(dir=self._base)
      dirs.append(rundir)
      os.chmod(rundir, 0o755)
      for name, data in program.files.items():
        path = os.path.join(rundir, name)
        with open(path, "wb") as f:
          f.write(data)
        os.chmod(path, 0o644)
      stdin_fd = self._stdin_file(program.stdin)
      fds.append(stdin_fd)
      frames_r, frames_w = os.pipe()
      status_r, status_w = os.pipe()
      fds += [frames_r, frames_w, status_r, status_w]
      # bwrap: the start record, written from inside the set-up sandbox (newroot.py writes its own on the status pipe)
      started_r, started_w = os.pipe() if self._isolation.startswith("bwrap") else (None, None)
      fds += [fd for fd in (started_r, started_w) if fd is not None]
      argv = self._argv(program, uid, cpu, rundir, frames_w, status_w, started_w, dirs)
      # ru_maxrss survives fork and exec, so the child starts at this process's peak; only a larger value
      # says anything about the program.
      parent_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
      start = time.monotonic()
      proc = subprocess.Popen(argv, stdin=stdin_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              pass_fds=[fd for fd in (frames_w, status_w, started_w) if fd is not None],
                              env=dict(iso.ENV), cwd=rundir, start_new_session=True, umask=0o077)
      for fd in (stdin_fd, frames_w, status_w, started_w):
        if fd is None:
          continue
        os.close(fd)
        fds.remove(fd)
      try:
        return self._supervise(proc, uid, wall, start, frames_r,
                               tuple(fd for fd in (status_r, started_r) if fd is not None), parent_peak, limits,
                               program.on_frame)
      except BaseException:
        if proc.returncode is None:
          with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
          proc.wait()
        raise
    except OSError as e:
      return RunResult(outcome="sandbox_error", returncode=None, signal=None, stdout=b"", stdout_truncated=False,
                       stderr=b"", frames=(), frames_error=None, wall_s=time.monotonic() - start,
                       isolation=self._isolation, error=f"launch failed: {e!r}", **limits)
    finally:
      for fd in fds:
        os.close(fd)
      for path in dirs:
        shutil.rmtree(path, ignore_errors=True)

  def _stdin_file(self, data: bytes) -> int:
    """A read-only fd on an unlinked root-owned 0600 file holding `data` (the child cannot reopen it)."""
    fd, path = tempfile.mkstemp(dir=self._base)
    try:
      with os.fdopen(os.dup(fd), "wb") as f:
        f.write(data)
      return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    finally:
      os.close(fd)
      os.unlink(path)

  def _argv(self, program: Program, uid: int, cpu: int, rundir: str, frames_w: int, status_w: int,
            started_w: int | None, dirs: list[str]) -> list[str]:
    """The launch command of one run under the sandbox's level (temporary directories it needs go to `dirs`)."""
    cfg = self._cfg
    limits = {"as": cfg.memory_bytes, "cpu": f"{cpu}:{cpu + 1}", "nproc": cfg.nproc, "nofile": cfg.nofile,
              "fsize": cfg.fsize_bytes, "core": 0, "stack": cfg.stack_bytes}
    command = [cfg.python, *cfg.python_flags, *program.argv]
    uid_or_none = uid if self._root else None
    if self._isolation == "unshare":
      root_dir = tempfile.mkdtemp(dir=self._base)
      dirs.append(root_dir)
      return (iso.unshare_argv(self._tools, root_dir=root_dir, files_dir=rundir, tmpfs_bytes=cfg.tmpfs_bytes,
                               python=cfg.python, status_fd=status_w, result_fd=frames_w)
              + iso.launcher_argv(self._tools, uid=uid_or_none, limits=limits, inherited=[]) + command)
    # The launcher places the inherited pipes on fds 3 (frames), 4 (bwrap's status) and 5 (the start record).
    # bwrap's child-pid record comes before its child sets up the mounts, so a failing bind would look like the
    # program exiting 1: the start record is written inside the finished sandbox, by a shell step before the
    # program (which never sees fd 5), and only its absence makes a SANDBOX_ERROR.
    started = [iso.SANDBOX_SHELL, "-c", f'printf {_STARTED.decode()} >&5 && exec 5>&- && exec "$@"', "sandbox"]
    return (iso.launcher_argv(self._tools, uid=uid_or_none, limits=limits, inherited=[frames_w, status_w, started_w])
            + iso.bwrap_argv(self._tools["bwrap"], files_dir=rundir, tmpfs_bytes=cfg.tmpfs_bytes, python=cfg.python,
                             status_fd=4) + ["--", *started, *command])

  def _supervise(self, proc: subprocess.Popen, uid: int, wall: float, start: float, frames_r: int,
                 status_rs: tuple[int, ...], parent_peak: int, limits: dict,
                 on_frame: Callable[[bytes], bool] | None) -> RunResult:
    cap = _Capture(self._cfg)
    readers = {proc.stdout.fileno(): cap.add_stdout, proc.stderr.fileno(): cap.add_stderr, frames_r: cap.add_frames,
               **{fd: cap.add_status for fd in status_rs}}
    pidfd = os.pidfd_open(proc.pid)
    outcome, exited, stragglers = None, False, 0
    deadline = start + wall
    with selectors.DefaultSelector() as sel:
      for fd in readers:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
      sel.register(pidfd, selectors.EVENT_READ)
      while readers or not exited:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
          break
        for key, _ in sel.select(remaining):
          fd = key.fd
          if fd == pidfd:
            exited = True
            sel.unregister(pidfd)
            continue
          try:
            data = os.read(fd, _CHUNK)
          except BlockingIOError:
            continue
          if not data:
            sel.unregister(fd)
            del readers[fd]
          elif readers[fd](data) is False:
            outcome = "output_limit"
            break
          elif fd == frames_r and on_frame is not None and any(map(on_frame, cap.new_frames())):
            outcome = "stopped"
            break
        if outcome:
          break
      if not exited:
        outcome = outcome or "timeout"
        self._kill_tree(proc)
    os.close(pidfd)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    proc.stderr.close()
    wall_s = time.monotonic() - start
    if self._root:  # a pid namespace still tearing down gets a moment before it counts as stragglers
      stragglers += self._reap(uid, grace_s=1.0)
    cap.finish_frames()
    returncode, sig = proc.returncode, None
    if returncode < 0:
      returncode, sig = None, -returncode
    elif self._isolation.startswith("bwrap") and 128 < returncode <= 128 + signal.SIGRTMAX:
      returncode, sig = None, returncode - 128
    error = None
    # No start record (written inside the set-up sandbox just before the program: the shell step under bwrap,
    # newroot's "started"): the program never ran (setup failed, or stalled past the deadline). Only this, never
    # anything the program does, makes a SANDBOX_ERROR.
    started = (_STARTED in cap.status) if self._isolation.startswith("bwrap") else b"started" in cap.status
    if not started and outcome in (None, "timeout"):
      outcome = "sandbox_error"
      error = (f"{self._isolation} did not start the program: "
               + bytes(cap.stderr).decode("utf-8", "replace").strip()[-2000:])
    if outcome is None:
      outcome = "signaled" if sig is not None else "exited"
    return RunResult(outcome=outcome, returncode=returncode, signal=sig, stdout=bytes(cap.stdout),
                     stdout_truncated=cap.stdout_truncated, stderr=bytes(cap.stderr), frames=tuple(cap.frames),
                     frames_error=cap.frames_error, wall_s=wall_s, isolation=self._isolation, error=error,
                     cpu_s=usage.ru_utime + usage.ru_stime,
                     max_rss_bytes=usage.ru_maxrss * 1024 if usage.ru_maxrss > parent_peak else None,
                     stragglers=stragglers, **limits)

  @staticmethod
  def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILLs the run: bwrap or unshare dies, its namespace's init gets the parent-death SIGKILL, and the kernel
    takes every process of the pid namespace with it (the per-uid sweep after the wait catches the rest)."""
    # os.kill, not proc.kill(): Popen would reap the child itself and lose its rusage.
    os.kill(proc.pid, signal.SIGKILL)

  def _reap(self, uid: int, grace_s: float = 0.0) -> int:
    """SIGKILLs every process of the slot uid; returns how many were found alive."""
    try:
      return len(iso.reap_uid(self._tools, uid, grace_s))
    except RuntimeError as e:
      raise SandboxError(str(e)) from None
