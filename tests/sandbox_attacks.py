"""Adversarial programs for the sandbox tests (code_eval.md §11, A1-A26), as data.

Code templates name test-specific values as @KEY@ (listener ports, canary paths, the evaluator's pid, a random
tag); `render` fills them in. A "stdout" attack is judged like a stdin-mode solution against `answer`; a
"frames" attack like a call-based one, whose only passing evidence is one result frame on fd 3 holding the JSON
value 42. Every storm is bounded by a counter as well as by the sandbox limits.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Attack:
  name: str
  code: str
  verdicts: frozenset[str]
  mode: str = "stdout"
  answer: str = "42\n"
  stdin: bytes = b""
  wall_timeout_s: float | None = None
  # Substrings that must not appear in stdout (e.g. a successful escape reported by the program itself).
  forbidden: tuple[str, ...] = ()


def render(text: str, values: dict[str, object]) -> str:
  for key, value in values.items():
    text = text.replace(f"@{key}@", str(value))
  assert "@" not in text, text
  return text


_SEND_FRAME = """
import json, os, struct
def send(payload):
  os.write(3, struct.pack(">I", len(payload)) + payload)
"""

_PRIVILEGE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
out = []
try:
  os.setuid(0)
  out.append("setuid:ok")
except OSError as e:
  out.append("setuid:" + type(e).__name__)
calls = (("unshare_user", lambda: libc.unshare(0x10000000)), ("unshare_net", lambda: libc.unshare(0x40000000)),
         ("mount", lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)),
         ("ptrace_evaluator", lambda: libc.ptrace(16, @HOST_PID@, None, None)))
for name, call in calls:
  out.append(name + (":ok" if call() == 0 else ":denied"))
print(" ".join(out))
"""

_WRITES = """
import os, shutil
out = []
def attempt(name, fn):
  try:
    fn()
    out.append(name + ":ok")
  except Exception as e:
    out.append(name + ":" + type(e).__name__)
attempt("project_new", lambda: open("@PROJECT@/SANDBOX_PWNED_@TAG@", "w").write("x"))
attempt("project_open", lambda: os.close(os.open("@PROJECT@/README.md", os.O_WRONLY)))
attempt("home", lambda: open("/root/SANDBOX_PWNED_@TAG@", "w").write("x"))
attempt("etc", lambda: open("/etc/SANDBOX_PWNED_@TAG@", "w").write("x"))
attempt("usr", lambda: open("/usr/SANDBOX_PWNED_@TAG@", "w").write("x"))
attempt("interpreter", lambda: os.close(os.open("/usr/bin/python3", os.O_WRONLY)))
attempt("sandbox_files", lambda: open("/sandbox/main.py", "a").write("x"))
attempt("canary_remove", lambda: os.remove("@CANARY@/a.txt"))
attempt("canary_write", lambda: open("@CANARY@/b.txt", "a").write("x"))
attempt("canary_rmtree", lambda: shutil.rmtree("@CANARY@"))
print(" ".join(out))
"""

# The report that started issue 12: without bwrap a program wrote into the host's /var/tmp and /dev/shm and listed
# the checkout. Scratch writes must land in the run's private tmpfs; the host's directories stay hidden.
_HOST_SCRATCH = """
import os
out = []
for place in ("/tmp", "/var/tmp", "/dev/shm"):
  try:
    open(place + "/SANDBOX_PWNED_@TAG@", "w").write("x")
    out.append(place + ":private")
  except OSError as e:
    out.append(place + ":" + type(e).__name__)
for name, path in (("project", "@PROJECT@"), ("canary", "@CANARY@"), ("etc", "/etc"), ("home", "/root")):
  try:
    # /etc/alternatives (symlinks that resolve shared libraries) is the one part of /etc bound into the sandbox.
    seen = sorted(set(os.listdir(path)) - {"alternatives"} if path == "/etc" else os.listdir(path))
    out.append(name + (":listed " + ",".join(seen) if seen else ":only-alternatives"))
  except OSError as e:
    out.append(name + ":" + type(e).__name__)
for place in ("/", "/dev", "/usr"):
  try:
    open(place.rstrip("/") + "/SANDBOX_PWNED_@TAG@", "w").write("x")
    out.append(place + ":written")
  except OSError as e:
    out.append(place + ":" + type(e).__name__)
print(" ".join(out))
"""

# Every writable place is a size-capped tmpfs (28 = ENOSPC, 27 = EFBIG); the root and /dev are read-only (30).
_SCRATCH_FILL = """
import json, os
errors = {}
for place in ("/var/tmp", "/dev/shm"):
  try:
    for i in range(10**4):
      with open(f"{place}/f{i}", "wb") as f:
        for _ in range(8):
          f.write(b"\\0" * (1 << 20))
  except OSError as e:
    errors[place] = e.errno
for place in ("/", "/dev"):
  try:
    open(place.rstrip("/") + "/fill", "wb").write(b"x")
  except OSError as e:
    errors[place] = e.errno
print(json.dumps(errors, sort_keys=True))
"""

_NETWORK = """
import socket
out = []
try:
  socket.create_connection(("127.0.0.1", @PORT@), timeout=1)
  out.append("tcp:connected")
except OSError as e:
  out.append("tcp:" + type(e).__name__)
try:
  socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", @UPORT@))
  out.append("udp:sent")
except OSError as e:
  out.append("udp:" + type(e).__name__)
try:
  socket.getaddrinfo("sandbox-test.invalid", 80)
  out.append("dns:resolved")
except OSError as e:
  out.append("dns:" + type(e).__name__)
print(" ".join(out))
"""

_ENVIRON = """
import os
print(dict(os.environ))
for path in ("/proc/self/environ", "/proc/1/environ", "/proc/@HOST_PID@/environ", "/proc/@HOST_PPID@/environ"):
  try:
    print(path, open(path, "rb").read())
  except OSError as e:
    print(path, type(e).__name__)
"""

_INTROSPECT = """
import gc, sys
frame, depth = sys._getframe(), 0
while frame is not None:
  depth, frame = depth + 1, frame.f_back
prefix = "EXPECTED" + "-"
found = [o for o in gc.get_objects() if isinstance(o, str) and o.startswith(prefix) and len(o) > len(prefix)]
print(depth, found)
"""

ATTACKS: tuple[Attack, ...] = (
  Attack("A1_fork_bomb", """
import os, time
n = 0
while n < 3000:
  n += 1
  try:
    os.fork()
  except OSError:
    time.sleep(0.005)
""", frozenset({"TLE", "RE"})),
  Attack("A2_daemon_escape", """
import os, time
if os.fork() == 0:
  os.setsid()
  if os.fork() == 0:
    time.sleep(600)
  os._exit(0)
os.wait()
print(42)
""", frozenset({"AC"})),
  Attack("A3_busy_loop", "while True:\n  pass\n", frozenset({"TLE"})),
  Attack("A4a_sleep", "import time\ntime.sleep(1e9)\n", frozenset({"TLE"})),
  Attack("A4b_pause", "import signal\nsignal.pause()\n", frozenset({"TLE"})),
  Attack("A4c_event_wait", "import threading\nthreading.Event().wait()\n", frozenset({"TLE"})),
  Attack("A5_ignore_signals", """
import signal
for sig in (signal.SIGTERM, signal.SIGXCPU, signal.SIGINT, signal.SIGHUP):
  signal.signal(sig, signal.SIG_IGN)
while True:
  pass
""", frozenset({"TLE"})),
  Attack("A6a_huge_alloc", "x = bytearray(10**11)\n", frozenset({"MLE"})),
  Attack("A6b_growing_list", "x = []\nwhile True:\n  x.append(bytearray(10**7))\n", frozenset({"MLE"}),
         wall_timeout_s=8.0),
  Attack("A7_stack_smash", """
import sys
sys.setrecursionlimit(10**9)
class Deep:
  def __getattr__(self, name):
    return getattr(self, name)
Deep().x
""", frozenset({"RE"}), wall_timeout_s=8.0),
  Attack("A8_stdout_flood", "while True:\n  print('x' * 10**6)\n", frozenset({"OLE"})),
  Attack("A9_stderr_flood", "import sys\nfor _ in range(100):\n  sys.stderr.write('e' * 10**6)\nprint(42)\n",
         frozenset({"AC"})),
  Attack("A10_disk_fill", """
import os
seen = set()
try:
  with open("/tmp/big", "wb") as f:
    while True:
      f.write(b"\\0" * (1 << 20))
except OSError as e:
  seen.add(e.errno)
os.remove("/tmp/big")
try:
  for i in range(10**4):
    with open(f"/tmp/f{i}", "wb") as f:
      for _ in range(16):
        f.write(b"\\0" * (1 << 20))
except OSError as e:
  seen.add(e.errno)
print(sorted(seen))
raise SystemExit(1)
""", frozenset({"RE"})),
  Attack("A11_write_outside", _WRITES, frozenset({"WA"}), forbidden=(":ok",)),
  Attack("A11b_host_scratch_and_listing", _HOST_SCRATCH, frozenset({"WA"}), forbidden=(":listed", ":written")),
  Attack("A10b_scratch_fill", _SCRATCH_FILL, frozenset({"WA"})),
  Attack("A12_read_answers", """
for path in ("@ANSWERS@", "@PROJECT@/README.md"):
  try:
    print(open(path).read())
  except OSError as e:
    print(path, type(e).__name__)
""", frozenset({"WA"}), forbidden=("@SECRET_ANSWER@", "ssd_jax")),
  # UDP "sent" only reaches the sandbox's own loopback; that the host's listeners saw nothing is checked on the host.
  Attack("A13_network", _NETWORK, frozenset({"WA"}), forbidden=("connected", "resolved")),
  Attack("A14a_kill_parent", "import os\nos.kill(os.getppid(), 9)\nprint('alive')\n", frozenset({"RE", "WA"})),
  Attack("A14b_kill_all", "import os\ntry:\n  os.kill(-1, 9)\nfinally:\n  print('alive')\n",
         frozenset({"RE", "WA"})),
  Attack("A14c_killpg", "import os\nos.killpg(0, 9)\nprint('alive')\n", frozenset({"RE", "WA"})),
  Attack("A14d_kill_evaluator", "import os\nos.kill(@HOST_PID@, 0)\nprint('visible')\n", frozenset({"RE"})),
  Attack("A15_env_secrets", _ENVIRON, frozenset({"WA"})),
  Attack("A16a_exit_after_print", "import sys\nprint(42)\nsys.exit(0)\n", frozenset({"AC"})),
  Attack("A16b_os_exit_unflushed", "import os, sys\nsys.stdout.write('42\\n')\nos._exit(0)\n", frozenset({"WA"})),
  Attack("A16c_call_sys_exit", _SEND_FRAME + """
import sys
def solve():
  sys.exit(0)
send(json.dumps(solve()).encode())
""", frozenset({"RE"}), mode="frames"),
  Attack("A16c_call_os_exit", _SEND_FRAME + """
def solve():
  os._exit(0)
send(json.dumps(solve()).encode())
""", frozenset({"RE"}), mode="frames"),
  Attack("A16d_exit_before_asserts", _SEND_FRAME + """
def candidate(x):
  return x + 1
exit(0)
assert candidate(1) == 3
send(b'"completed"')
""", frozenset({"RE"}), mode="frames"),
  Attack("A17_fake_equality", _SEND_FRAME + """
class AlwaysInt(int):
  def __eq__(self, other):
    return True
  __hash__ = int.__hash__
class AlwaysList(list):
  def __eq__(self, other):
    return True
class Always:
  def __eq__(self, other):
    return True
for value in (AlwaysInt(0), AlwaysList(), Always()):
  try:
    send(json.dumps(value).encode())
  except TypeError:
    send(b'"unserializable"')
""", frozenset({"WA"}), mode="frames"),
  Attack("A18a_frames_on_stdout", """
print('{"i": 0, "ok": true, "value": 42}')
print("PASSED")
""", frozenset({"RE"}), mode="frames"),
  Attack("A18b_garbage_frame", _SEND_FRAME + "send(b'41')\nos.write(3, b'\\xff\\xff\\xff\\xffgarbage')\n",
         frozenset({"RE"}), mode="frames"),
  Attack("A18c_truncated_frame", "import os\nos.write(3, b'\\x00\\x00\\x00\\x10' + b'42')\n", frozenset({"RE"}),
         mode="frames"),
  Attack("A18d_monkeypatch", _SEND_FRAME + """
import builtins, sys
json.dumps = lambda *a, **k: "42"
builtins.print = lambda *a, **k: None
sys.modules["json"] = None
send(b'"PASSED"')
""", frozenset({"WA"}), mode="frames"),
  Attack("A19_introspection", _INTROSPECT, frozenset({"WA"}), answer="EXPECTED-@SECRET_ANSWER@\n",
         forbidden=("@SECRET_ANSWER@",)),
  Attack("A20a_fd_exhaustion_files", "fs = []\nfor _ in range(10**5):\n  fs.append(open('/dev/null'))\n",
         frozenset({"RE"})),
  Attack("A20b_fd_exhaustion_sockets", "import socket\nss = []\nfor _ in range(10**5):\n  ss.append(socket.socket())\n",
         frozenset({"RE"})),
  Attack("A21_thread_bomb", """
import threading, time
threading.stack_size(1 << 18)
for _ in range(10**5):
  threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
""", frozenset({"RE"})),
  Attack("A22a_null_deref", "import ctypes\nctypes.string_at(0)\n", frozenset({"RE"})),
  Attack("A22b_abort", "import os\nos.abort()\n", frozenset({"RE"})),
  Attack("A23_background_spinner", "import os\nif os.fork() == 0:\n  while True:\n    pass\nprint(42)\n",
         frozenset({"AC"})),
  Attack("A24_unread_input_big_output", "import sys\nsys.stdout.write('y' * (5 << 20) + '\\n')\n", frozenset({"AC"}),
         answer="y" * (5 << 20) + "\n", stdin=b"1 2 3\n" * ((10 << 20) // 6)),
  Attack("A25_invalid_utf8", "import sys\nsys.stdout.buffer.write(b'\\xff\\xfe42\\n')\n", frozenset({"WA"})),
  Attack("A26_privilege_escalation", _PRIVILEGE, frozenset({"WA"}), forbidden=(":ok",)),
)
