"""The "unshare" isolation level's root-side step: builds the sandbox's filesystem, starts the program as pid 1 of
a fresh pid namespace, and reports how it ended (stdlib only).

Run as root by `isolation.unshare_argv`, inside fresh mount, network, ipc and uts namespaces with a pending pid
namespace (`unshare --mount --propagation private --net --ipc --uts --pid`), so nothing mounted here is visible to
the host and everything disappears with the namespaces:

  python3 -I -S -B newroot.py ROOT FILES TMPFS_BYTES STATUS_FD RESULT_FD [BIND ...] -- COMMAND ...

This process forks once; the child is pid 1 of the new pid namespace. The child turns ROOT (an empty directory)
into a small tmpfs holding only: /usr read-only (plus the merged-/usr links /bin, /lib...), each extra BIND
directory read-only (an interpreter outside /usr), FILES read-only at /sandbox, a proc of the new pid namespace, a
minimal /dev (null, zero, full, random, urandom, fd links), and fresh size-capped tmpfs mounts on /tmp, /var/tmp
and /dev/shm. The root and /dev are then made read-only, the child chroots into ROOT, writes `started` to
STATUS_FD (the evidence that the program was launched, as bwrap's child-pid record), closes it, moves the result
pipe RESULT_FD to fd 3 and execs COMMAND, which drops root (`setpriv`) before the untrusted program runs. The host's
files, /etc, home directories and the checkout are not in the new root at all; a chrooted process cannot create a
user namespace (the kernel refuses CLONE_NEWUSER inside a chroot), which stands in for bwrap's --disable-userns.

The parent waits for the child and ends the same way (its exit status, or the same signal, core dumps off), so the
evaluator's wait status and rusage are the program's: util-linux's own `unshare --fork` turns a SIGKILLed child
(RLIMIT_CPU's hard limit, a memory kill) into exit status 1. The child gets SIGKILL if this process dies. A failure
before the exec exits 125 with the reason on stderr, without the `started` record.
"""

import ctypes
import os
import resource
import signal
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND = 1, 2, 4, 8, 32, 4096
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source: str, target: str, fstype: str, flags: int, data: str = "") -> None:
  if _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode()) != 0:
    errno = ctypes.get_errno()
    raise OSError(errno, f"mount {fstype or 'bind'} {source} on {target}: {os.strerror(errno)}")


def _bind_ro(source: str, target: str) -> None:
  os.makedirs(target, exist_ok=True)
  _mount(source, target, "", MS_BIND)
  _mount("", target, "", MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _tmpfs(target: str, size: int, mode: str = "1777") -> None:
  os.makedirs(target, exist_ok=True)
  _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode={mode}")


def build(root: str, files: str, tmpfs_bytes: int, binds: list[str]) -> None:
  _tmpfs(root, 1 << 20, mode="755")
  for link in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
    if os.path.islink("/" + link):
      os.symlink(os.readlink("/" + link), os.path.join(root, link))
  for path in ("/usr", *binds):
    _bind_ro(path, root + path)
  _bind_ro(files, root + "/sandbox")
  os.makedirs(root + "/proc")
  _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
  _tmpfs(root + "/dev", 64 << 10, mode="755")
  for name in ("null", "zero", "full", "random", "urandom"):
    open(f"{root}/dev/{name}", "w").close()
    _mount(f"/dev/{name}", f"{root}/dev/{name}", "", MS_BIND)
  for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                       ("stderr", "/proc/self/fd/2")):
    os.symlink(target, f"{root}/dev/{name}")
  for path in ("/tmp", "/var/tmp", "/dev/shm"):
    _tmpfs(root + path, tmpfs_bytes)
  for path in ("/dev", ""):  # the skeleton is read-only; only the three tmpfs mounts take writes
    _mount("", root + path, "", MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _supervisor_alive(lifeline: int) -> bool:
  """Whether the parent still holds the lifeline pipe's write end (getppid() is 0 across the pid namespace)."""
  os.set_blocking(lifeline, False)
  try:
    return os.read(lifeline, 1) != b""
  except BlockingIOError:
    return True


def _start(root: str, files: str, tmpfs_bytes: int, binds: list[str], status_fd: int, result_fd: int,
           command: list[str], lifeline: int) -> None:
  """The child: pid 1 of the new pid namespace; never returns."""
  try:
    if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0 or not _supervisor_alive(lifeline):
      raise OSError("the supervisor is gone")
    os.close(lifeline)
    os.umask(0o022)  # the evaluator launches with 077; the skeleton must be traversable by the slot uid
    build(root, files, tmpfs_bytes, binds)
    os.chroot(root)
    os.chdir("/tmp")
    os.write(status_fd, b"started\n")
    os.close(status_fd)
    if result_fd != 3:
      os.dup2(result_fd, 3)  # inheritable: the program's result channel
      os.close(result_fd)
    os.execv(command[0], command)
  except OSError as e:
    print(f"newroot: {e}", file=sys.stderr)
  os._exit(125)


def main(argv: list[str]) -> None:
  split = argv.index("--")
  root, files, tmpfs_bytes, status_fd, result_fd, *binds = argv[1:split]
  status_fd, result_fd = int(status_fd), int(result_fd)
  lifeline, held = os.pipe()
  child = os.fork()
  if child == 0:
    os.close(held)
    _start(root, files, int(tmpfs_bytes), binds, status_fd, result_fd, argv[split + 1:], lifeline)
  os.close(lifeline)
  os.close(result_fd)
  os.close(status_fd)
  _, status = os.waitpid(child, 0)
  if os.WIFSIGNALED(status):
    sig = os.WTERMSIG(status)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sig != signal.SIGKILL:
      signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)  # not reached for a terminating signal
  os._exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
  main(sys.argv)
