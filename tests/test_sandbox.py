"""Sandbox tests: a probe of the isolation first, then the adversarial programs of code_eval.md §11, under both
levels that run as root: "bwrap" (the default) and "unshare" (the opt-in fallback without bwrap, forced here).

The attacks only run after the probe has shown, inside the sandbox, a non-root uid, a private pid namespace, no
network, an explicit environment and an enforced RLIMIT_NPROC. Every attack runs alone and then two at a time
(`run_many` over two slots), and after each the host-side invariants are checked: the evaluator is alive, the
canary tree is unchanged, nothing was written into the host's /tmp, /var/tmp, /dev/shm, project, /root, /etc or
/usr, no process of the test's slot uids survives, the canary secret in the evaluator's environment never reaches
any output, and the loopback listeners saw nothing. Then the level policy: without bwrap the default refuses,
naming the fix; the opt-in takes "unshare"; without root and bwrap nothing runs; a level whose probe fails is not
claimed; the CLI refuses on a host whose bwrap is hidden.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import secrets
import select
import socket
import subprocess
import sys
import time

import pytest

from no_bwrap import without_bwrap
from sandbox_attacks import ATTACKS, Attack, render
from ssd_jax.eval import isolation
from ssd_jax.eval.compare import lcb_stdout_equal
from ssd_jax.eval.sandbox import Program, RunResult, Sandbox, SandboxConfig, SandboxError, failure_verdict

PROJECT = pathlib.Path(__file__).resolve().parents[1]
# Distinct from the default 61000 so that a developer's concurrent runs do not serialize with the tests.
BASE_UID = 61700
WALL_S = 1.5
SECRET_ENV = "FAKE_SECRET_TOKEN"
LEVELS = ("bwrap", "unshare")


def _cfg(level: str, **overrides) -> SandboxConfig:
  fields = dict(isolation=level, allow_weak_isolation=level != "bwrap", wall_timeout_s=WALL_S,
                memory_bytes=512 << 20, stack_bytes=64 << 20, fsize_bytes=32 << 20, tmpfs_bytes=64 << 20,
                stdout_cap=8 << 20, workers=2, base_uid=BASE_UID)
  return SandboxConfig(**{**fields, **overrides})


CFG = _cfg("bwrap")


def _live_pids_of_uid(uid: int) -> list[int]:
  pids = []
  for name in os.listdir("/proc"):
    if name.isdigit():
      try:
        status = pathlib.Path(f"/proc/{name}/status").read_text()
      except OSError:
        continue
      fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
      if not fields["State"].strip().startswith("Z") and str(uid) in fields["Uid"].split()[:3]:
        pids.append(int(name))
  return pids


def _tree_hash(root: pathlib.Path) -> str:
  digest = hashlib.sha256()
  for path in sorted(root.rglob("*")):
    digest.update(str(path.relative_to(root)).encode())
    if path.is_file():
      digest.update(path.read_bytes())
  return digest.hexdigest()


def _vm_rss() -> int:
  for line in pathlib.Path("/proc/self/status").read_text().splitlines():
    if line.startswith("VmRSS:"):
      return int(line.split()[1]) * 1024
  raise AssertionError("no VmRSS")


class Host:
  """The host-side state the attacks try to reach, and the invariants checked after every run."""

  def __init__(self, tmp: pathlib.Path):
    self.tag = secrets.token_hex(4)
    self.secret = "canary-" + secrets.token_hex(8)
    self.secret_answer = secrets.token_hex(8)
    self.canary = tmp / "canary"
    (self.canary / "sub").mkdir(parents=True)
    (self.canary / "a.txt").write_text("keep me")
    (self.canary / "sub" / "b.txt").write_text("keep me too")
    answers = tmp / "test6.jsonl"
    answers.write_text(json.dumps({"expected": self.secret_answer}) + "\n")
    # World-accessible on purpose: only the sandbox's mount namespace may protect them.
    for path in (tmp, self.canary, self.canary / "sub"):
      path.chmod(0o777)
    for path in (self.canary / "a.txt", self.canary / "sub" / "b.txt", answers):
      path.chmod(0o666)
    self.canary_hash = _tree_hash(self.canary)
    self.tcp = socket.create_server(("127.0.0.1", 0))
    self.tcp.setblocking(False)
    self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    self.udp.bind(("127.0.0.1", 0))
    self.udp.setblocking(False)
    self.values = {"PORT": self.tcp.getsockname()[1], "UPORT": self.udp.getsockname()[1], "CANARY": self.canary,
                   "ANSWERS": answers, "PROJECT": PROJECT, "HOST_PID": os.getpid(), "HOST_PPID": os.getppid(),
                   "TAG": self.tag, "SECRET_ANSWER": self.secret_answer}

  def program(self, attack: Attack) -> Program:
    return Program(files={"main.py": render(attack.code, self.values).encode()}, argv=("/sandbox/main.py",),
                   stdin=attack.stdin, wall_timeout_s=attack.wall_timeout_s)

  def judge(self, attack: Attack, result: RunResult) -> str:
    verdict = failure_verdict(result)
    if verdict is not None:
      return verdict
    if attack.mode == "frames":
      # Missing or malformed frames are never a pass; the parent compares its own expected value.
      if result.frames_error is not None or not result.frames:
        return "RE"
      try:
        values = [json.loads(frame) for frame in result.frames]
      except ValueError:
        return "RE"
      return "AC" if values == [42] else "WA"
    answer = render(attack.answer, self.values)
    return "AC" if lcb_stdout_equal(result.stdout.decode("utf-8", "replace"), answer) else "WA"

  def check(self, attack: Attack, result: RunResult, level: str) -> None:
    assert result.isolation == level, result
    verdict = self.judge(attack, result)
    assert verdict in attack.verdicts, (attack.name, verdict, result.outcome, result.stdout[:500], result.stderr[-500:])
    stdout = result.stdout.decode("utf-8", "replace")
    for bad in attack.forbidden:
      assert render(bad, self.values) not in stdout, (attack.name, stdout[:2000])
    self.check_invariants([result])

  def check_invariants(self, results: list[RunResult]) -> None:
    for result in results:
      for stream in (result.stdout, result.stderr, *result.frames):
        assert self.secret.encode() not in stream
    os.kill(self.values["HOST_PPID"], 0)  # the evaluator's parent survived kill(-1) attempts too
    for slot in range(CFG.workers):
      assert _live_pids_of_uid(BASE_UID + slot) == []
    assert _tree_hash(self.canary) == self.canary_hash
    for place in (PROJECT, "/root", "/etc", "/usr", "/", "/dev", "/tmp", "/var/tmp", "/dev/shm"):
      assert not (pathlib.Path(place) / f"SANDBOX_PWNED_{self.tag}").exists(), place
    assert select.select([self.tcp, self.udp], [], [], 0)[0] == [], "a loopback listener was reached"

  def close(self) -> None:
    self.tcp.close()
    self.udp.close()


@pytest.fixture(scope="module")
def host(root, tmp_path_factory):
  h = Host(tmp_path_factory.mktemp("sandbox_host"))
  os.environ[SECRET_ENV] = h.secret
  yield h
  del os.environ[SECRET_ENV]
  h.close()


_PROBE = """
import json, os, socket
forks = 0
for _ in range(100):
  try:
    if os.fork() == 0:
      import time
      time.sleep(0.5)
      os._exit(0)
    forks += 1
  except OSError:
    break
try:
  socket.create_connection(("127.0.0.1", @PORT@), timeout=1)
  reached = True
except OSError:
  reached = False
print(json.dumps({"uid": os.getuid(), "pid": os.getpid(), "pidns": os.readlink("/proc/self/ns/pid"),
                  "netdevs": [name for _, name in socket.if_nameindex()], "reached": reached,
                  "env": sorted(os.environ), "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
                  "work": os.path.exists("@PROJECT@"), "forks": forks}))
"""


@pytest.fixture(scope="module", params=LEVELS)
def level(request) -> str:
  return request.param


@pytest.fixture(scope="module")
def sandbox(host, level):
  """The sandbox at `level`, returned only after the probe proves its isolation; otherwise the module fails."""
  try:
    sb = Sandbox(_cfg(level))
  except SandboxError as e:
    pytest.fail(f"{level} sandbox unusable as root: {e}")
  result = sb.run(Program(files={"probe.py": render(_PROBE, host.values).encode()}, argv=("/sandbox/probe.py",)))
  try:
    probe = json.loads(result.stdout)
  except ValueError:
    sb.close()
    pytest.fail(f"probe failed: {result}")
  problems = []
  if probe["uid"] in (0, os.getuid()) or probe["uid"] != BASE_UID:
    problems.append(f"child uid {probe['uid']}")
  if probe["pidns"] == os.readlink("/proc/self/ns/pid") or probe["pid"] > 10:
    problems.append(f"no private pid namespace (pid {probe['pid']})")
  if probe["netdevs"] != ["lo"] or probe["reached"]:
    problems.append(f"network visible: {probe['netdevs']} reached={probe['reached']}")
  extra_env = set(probe["env"]) - {"PATH", "LANG", "HOME", "TMPDIR", "PWD", "LC_CTYPE", "OMP_NUM_THREADS",
                                   "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"}
  if extra_env:
    problems.append(f"unexpected environment {extra_env}")
  if probe["fds"][:4] != [0, 1, 2, 3] or len(probe["fds"]) > 5:
    problems.append(f"inherited fds {probe['fds']}")
  if probe["work"]:
    problems.append("project tree visible")
  if probe["forks"] >= 100:
    problems.append("RLIMIT_NPROC not enforced")
  if problems:
    sb.close()
    pytest.fail("sandbox isolation probe failed, attacks not run: " + "; ".join(problems))
  host.check_invariants([result])
  yield sb
  sb.close()


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_alone(sandbox, host, level, attack):
  rss_before = _vm_rss()
  result = sandbox.run(host.program(attack))
  host.check(attack, result, level)
  assert _vm_rss() - rss_before < 200 << 20
  if attack.name.startswith("A8"):
    assert result.stdout_truncated and len(result.stdout) == CFG.stdout_cap
  if attack.name.startswith("A9"):
    assert len(result.stderr) == CFG.stderr_cap and result.stderr.endswith(b"e" * 100)
  if attack.name.startswith("A10_"):
    assert result.stdout == b"[27, 28]\n"  # EFBIG from RLIMIT_FSIZE, then ENOSPC from the tmpfs size
  if attack.name.startswith("A10b"):
    assert json.loads(result.stdout) == {"/": 30, "/dev": 30, "/dev/shm": 28, "/var/tmp": 28}
  if attack.name.startswith("A11b"):
    assert result.stdout.split()[:3] == [b"/tmp:private", b"/var/tmp:private", b"/dev/shm:private"], result.stdout
  if attack.name.startswith("A16c") or attack.name.startswith("A16d"):
    assert result.outcome == "exited" and result.returncode == 0 and result.frames == ()
  if attack.name.startswith("A18b"):
    assert result.frames == (b"41",) and "exceeds frames_cap" in result.frames_error
  if attack.name.startswith("A18c"):
    assert result.frames == () and "truncated" in result.frames_error


def test_attacks_two_at_a_time(sandbox, host, level):
  results = sandbox.run_many([host.program(attack) for attack in ATTACKS])
  for attack, result in zip(ATTACKS, results):
    host.check(attack, result, level)


def test_kill_attacks_leave_a_neighbour_alone(sandbox, host, level):
  neighbour = Attack("neighbour", "import time\ntime.sleep(0.5)\nprint(42)\n", frozenset({"AC"}))
  kills = [a for a in ATTACKS if a.name.startswith(("A1_", "A14"))]
  programs = [p for attack in kills for p in (host.program(attack), host.program(neighbour))]
  results = sandbox.run_many(programs)
  for i, attack in enumerate(kills):
    host.check(attack, results[2 * i], level)
    host.check(neighbour, results[2 * i + 1], level)


def test_cpu_limit_kills_a_signal_ignoring_loop(host, level):
  with Sandbox(_cfg(level, wall_timeout_s=6.0, cpu_seconds=1, workers=1)) as sb:
    result = sb.run(host.program(next(a for a in ATTACKS if a.name.startswith("A5_"))))
  assert result.outcome == "signaled", result  # killed by the CPU limit, not by the 6 s wall timeout
  assert failure_verdict(result) == "TLE"
  host.check_invariants([result])


def test_result_channel_stdin_and_stderr_tail(sandbox):
  code = b"""
import os, struct, sys
data = sys.stdin.read()
sys.stdin.seek(0)
assert sys.stdin.read() == data and os.path.isfile("/proc/self/fd/0") is not None
for payload in (b"", b"one", data.encode()):
  os.write(3, struct.pack(">I", len(payload)) + payload)
sys.stderr.write("head" + "z" * 100000 + "tail")
print(len(data))
"""
  result = sandbox.run(Program(files={"main.py": code}, argv=("/sandbox/main.py",), stdin=b"hello\nworld\n"))
  assert (result.outcome, result.returncode, result.stdout) == ("exited", 0, b"12\n"), result
  assert result.frames == (b"", b"one", b"hello\nworld\n") and result.frames_error is None
  assert len(result.stderr) == CFG.stderr_cap and result.stderr.endswith(b"ztail")
  assert failure_verdict(result) is None


def test_frames_over_cap_and_order_of_run_many(host, level):
  code = b"import os, struct\nfor n in (30, 30):\n  os.write(3, struct.pack('>I', n) + b'x' * n)\n"
  with Sandbox(_cfg(level, frames_cap=64)) as sb:
    over = sb.run(Program(files={"main.py": code}, argv=("/sandbox/main.py",)))
    echoes = sb.run_many([Program(files={"main.py": f"print({i})".encode()}, argv=("/sandbox/main.py",))
                          for i in range(6)])
  assert over.frames == (b"x" * 30,) and "exceeds frames_cap" in over.frames_error
  assert [r.stdout for r in echoes] == [f"{i}\n".encode() for i in range(6)]
  host.check_invariants([over, *echoes])


def test_on_frame_ends_a_run_once_the_verdict_is_known(sandbox):
  code = b"import os, struct\ni = 0\nwhile True:\n  os.write(3, struct.pack('>I', 1) + bytes([i % 256]))\n  i += 1\n"
  seen = []

  def third(payload):
    seen.append(payload)
    return len(seen) == 3

  result = sandbox.run(Program(files={"main.py": code}, argv=("/sandbox/main.py",), wall_timeout_s=5.0,
                               on_frame=third))
  assert result.outcome == "stopped" and failure_verdict(result) is None  # ended by on_frame, not the timeout
  assert seen == [b"\x00", b"\x01", b"\x02"] and result.frames[:3] == tuple(seen)


def test_bad_program_and_slot_are_refused(sandbox):
  with pytest.raises(ValueError, match="flat"):
    sandbox.run(Program(files={"../x.py": b""}, argv=("/sandbox/x.py",)))
  with pytest.raises(ValueError, match="slot"):
    sandbox.run(Program(files={"m.py": b""}, argv=("/sandbox/m.py",)), slot=CFG.workers)


def test_unusable_configurations_are_refused(tmp_path):
  with pytest.raises(ValueError, match="isolation"):
    Sandbox(SandboxConfig(isolation="chroot"))
  with pytest.raises(SandboxError, match="not executable"):
    Sandbox(SandboxConfig(python=str(tmp_path / "python3")))


def test_failure_verdict_classification():
  base = dict(returncode=None, signal=None, stdout=b"", stdout_truncated=False, stderr=b"", frames=(),
              frames_error=None, wall_s=0.1, isolation="bwrap", cpu_s=0.1, max_rss_bytes=10 << 20, cpu_limit_s=3,
              memory_limit_bytes=1 << 30)
  cases = [
    (dict(outcome="exited", returncode=0), None),
    (dict(outcome="exited", returncode=1), "RE"),
    (dict(outcome="exited", returncode=1, stderr=b"...\nMemoryError\n"), "MLE"),
    (dict(outcome="signaled", signal=9, max_rss_bytes=900 << 20), "MLE"),
    (dict(outcome="signaled", signal=9, cpu_s=3.5), "TLE"),
    (dict(outcome="signaled", signal=24), "TLE"),
    (dict(outcome="signaled", signal=11), "RE"),
    (dict(outcome="timeout"), "TLE"),
    (dict(outcome="output_limit"), "OLE"),
    (dict(outcome="sandbox_error", error="x"), "SANDBOX_ERROR"),
  ]
  for fields, want in cases:
    assert failure_verdict(RunResult(**{**base, **fields})) == want, fields


def test_overhead_is_reported(sandbox):
  program = Program(files={"main.py": b"pass\n"}, argv=("/sandbox/main.py",))
  sandbox.run(program)
  n = 10
  start = time.perf_counter()
  results = [sandbox.run(program) for _ in range(n)]
  per_run = (time.perf_counter() - start) / n
  start = time.perf_counter()
  results += sandbox.run_many([program] * n)
  per_run_parallel = (time.perf_counter() - start) / n
  start = time.perf_counter()
  subprocess.run([CFG.python, *CFG.python_flags, "-c", "pass"], check=True)
  bare = time.perf_counter() - start
  assert all(r.outcome == "exited" and r.returncode == 0 for r in results)
  print(f"\n{sandbox.isolation} sandbox overhead: {per_run * 1e3:.1f} ms/run sequential, {per_run_parallel * 1e3:.1f} ms/run with "
        f"{CFG.workers} workers, bare python {bare * 1e3:.1f} ms")


def _without_bwrap(monkeypatch) -> None:
  tools = isolation.find_tools()
  monkeypatch.setattr(isolation, "find_tools", lambda: {**tools, "bwrap": None})


@pytest.mark.usefixtures("root")
def test_without_bwrap_the_default_refuses_and_the_opt_in_takes_unshare(monkeypatch):
  _without_bwrap(monkeypatch)
  with pytest.raises(SandboxError) as refused:
    Sandbox(SandboxConfig(workers=1, base_uid=BASE_UID))
  message = str(refused.value)
  assert "bubblewrap (bwrap) is not installed" in message and "apt-get install bubblewrap" in message
  assert "--config.eval.allow_weak_isolation=True" in message and "--allow-weak-isolation" in message
  with pytest.raises(SandboxError, match="weaker level, used only with the opt-in.*allow_weak_isolation=True"):
    Sandbox(SandboxConfig(isolation="unshare", workers=1, base_uid=BASE_UID))  # naming the level is not the opt-in
  with Sandbox(SandboxConfig(allow_weak_isolation=True, workers=1, base_uid=BASE_UID)) as sb:
    result = sb.run(Program(files={"m.py": b"import os\nprint(os.getuid(), os.getpid())\n"}, argv=("/sandbox/m.py",)))
  assert sb.isolation == "unshare" and result.isolation == "unshare"
  assert result.stdout == f"{BASE_UID} 1\n".encode()


def test_without_root_and_bwrap_nothing_runs_even_with_the_opt_in(monkeypatch):
  _without_bwrap(monkeypatch)
  monkeypatch.setattr(os, "geteuid", lambda: 1000)
  with pytest.raises(SandboxError) as refused:
    Sandbox(SandboxConfig(allow_weak_isolation=True, workers=1))
  assert "unshare' level needs root" in str(refused.value) and "accept a weaker level" not in str(refused.value)


@pytest.mark.usefixtures("root")
def test_a_level_whose_probe_fails_is_not_claimed(monkeypatch, tmp_path):
  # Data under /usr is visible through the read-only /usr bind: the probe sees it and the sandbox refuses.
  with pytest.raises(SandboxError, match="host directory /usr/share is listable"):
    Sandbox(SandboxConfig(protected_paths=("/usr/share",), workers=1, base_uid=BASE_UID))
  # "bwrap-nouid" without the uid drop, run here by root: the probe sees uid 0 inside.
  monkeypatch.setattr(os, "geteuid", lambda: 1000)
  with pytest.raises(SandboxError, match="weaker level, used only with the opt-in"):
    Sandbox(SandboxConfig(workers=1))
  with pytest.raises(SandboxError, match="runs as uid 0"):
    Sandbox(SandboxConfig(isolation="bwrap", allow_weak_isolation=True, workers=1))


@pytest.mark.usefixtures("root")
def test_unshare_setup_failure_is_a_sandbox_error_and_programs_cannot_fake_one(monkeypatch, tmp_path):
  with Sandbox(_cfg("unshare", workers=1)) as sb:
    fake = sb.run(Program(files={"m.py": b"import sys\nsys.stderr.write('newroot: mount failed')\nsys.exit(125)\n"},
                          argv=("/sandbox/m.py",)))
    assert fake.outcome == "exited" and fake.returncode == 125 and failure_verdict(fake) == "RE"
    broken = tmp_path / "newroot.py"
    broken.write_text("import sys\nprint('newroot: mount: Operation not permitted', file=sys.stderr)\nsys.exit(125)\n")
    monkeypatch.setattr(isolation, "NEWROOT_SCRIPT", str(broken))
    result = sb.run(Program(files={"m.py": b"print(42)\n"}, argv=("/sandbox/m.py",)))
  assert result.outcome == "sandbox_error" and failure_verdict(result) == "SANDBOX_ERROR"
  assert "did not start the program" in result.error and "Operation not permitted" in result.error


@pytest.mark.usefixtures("root")
def test_reap_uid_kills_every_process_of_the_uid():
  uid = BASE_UID + 9
  tools = isolation.find_tools()
  sleepers = [subprocess.Popen([tools["setpriv"], "--reuid", str(uid), "--regid", str(uid), "--clear-groups",
                                "sleep", "60"], start_new_session=True) for _ in range(3)]
  deadline = time.monotonic() + 60  # bounds a hang only: the loop ends as soon as all three run
  while len(_live_pids_of_uid(uid)) < 3 and time.monotonic() < deadline:
    time.sleep(0.01)
  assert sorted(isolation.reap_uid(tools, uid)) == sorted(p.pid for p in sleepers)
  assert [p.wait(timeout=5) for p in sleepers] == [-9] * 3
  assert _live_pids_of_uid(uid) == []


def _cli(tmp_path: pathlib.Path, code: str, *args: str) -> tuple[int, dict | None, str]:
  script = tmp_path / "main.py"
  script.write_text(code)
  proc = subprocess.run([sys.executable, "-m", "ssd_jax.eval.run", "--code", str(script), *args],
                        capture_output=True, text=True, cwd=PROJECT, timeout=60)
  lines = proc.stdout.strip().splitlines()
  return proc.returncode, json.loads(lines[-1]) if lines else None, proc.stderr


@pytest.mark.usefixtures("root")
def test_cli(tmp_path):
  (tmp_path / "in.txt").write_text("20 22\n")
  (tmp_path / "right.txt").write_text("42\n")
  (tmp_path / "wrong.txt").write_text("43\n")
  add = "a, b = map(int, input().split())\nprint(a + b)\n"
  stdin = ["--stdin", str(tmp_path / "in.txt")]
  rc, out, _ = _cli(tmp_path, add, *stdin)
  assert rc == 0 and out["verdict"] == "OK" and out["stdout"] == "42\n" and out["isolation"] == "bwrap"
  rc, out, _ = _cli(tmp_path, add, *stdin, "--expect", str(tmp_path / "right.txt"))
  assert rc == 0 and out["verdict"] == "AC" and out["returncode"] == 0
  rc, out, _ = _cli(tmp_path, add, *stdin, "--expect", str(tmp_path / "wrong.txt"))
  assert rc == 0 and out["verdict"] == "WA"
  rc, out, _ = _cli(tmp_path, "while True:\n  pass\n", "--timeout", "1")
  assert rc == 0 and out["verdict"] == "TLE" and out["wall_s"] >= 1.0
  rc, out, _ = _cli(tmp_path, "raise ValueError('boom')\n", "--expect", str(tmp_path / "right.txt"))
  assert rc == 0 and out["verdict"] == "RE" and "boom" in out["stderr_tail"] and out["returncode"] == 1
  missing = tmp_path / "absent.txt"
  rc, out, err = _cli(tmp_path, add, "--stdin", str(missing))
  assert rc == 2 and str(missing) in err and str(missing) in out["error"]  # bad input: the JSON line too
  rc, out, err = _cli(tmp_path, add, "--timeout", "0")
  assert rc == 2 and "--timeout must be positive" in err and "--timeout must be positive" in out["error"]


@pytest.mark.usefixtures("root")
def test_cli_on_a_host_without_bwrap_refuses_unless_opted_in(tmp_path):
  code = (tmp_path / "main.py")
  tag = secrets.token_hex(4)
  code.write_text(f"import os\nfor d in ('/tmp', '/var/tmp', '/dev/shm'):\n  open(d + '/SANDBOX_PWNED_{tag}', 'w')\n"
                  f"print(sorted(os.listdir('/tmp')))\ntry:\n  print(os.listdir({str(PROJECT)!r}))\n"
                  "except OSError as e:\n  print('project', type(e).__name__)\n")
  argv = [sys.executable, "-m", "ssd_jax.eval.run", "--code", str(code)]
  refused = subprocess.run(without_bwrap(argv), capture_output=True, text=True, cwd=PROJECT, timeout=60)
  out = json.loads(refused.stdout.strip().splitlines()[-1])
  assert refused.returncode == 1 and out["verdict"] == "SANDBOX_ERROR" and out["isolation"] is None
  assert "apt-get install bubblewrap" in refused.stderr and "--allow-weak-isolation" in out["error"]
  ran = subprocess.run(without_bwrap(argv + ["--allow-weak-isolation"]), capture_output=True, text=True, cwd=PROJECT,
                       timeout=60)
  out = json.loads(ran.stdout.strip().splitlines()[-1])
  assert ran.returncode == 0 and out["verdict"] == "OK" and out["isolation"] == "unshare", ran.stdout + ran.stderr
  assert out["stdout"] == f"['SANDBOX_PWNED_{tag}']\nproject FileNotFoundError\n"
  for place in ("/tmp", "/var/tmp", "/dev/shm"):
    assert not os.path.exists(f"{place}/SANDBOX_PWNED_{tag}")


def test_cli_refuses_a_missing_code_file(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "ssd_jax.eval.run", "--code", str(tmp_path / "nope.py")],
                        capture_output=True, text=True, cwd=PROJECT, timeout=60)
  assert proc.returncode == 2 and "nope.py" in proc.stderr
  assert "nope.py" in json.loads(proc.stdout.strip().splitlines()[-1])["error"]  # the JSON last line on errors too


def test_tempdirs_are_private_and_removed(host, level):
  with Sandbox(_cfg(level, workers=1)) as sb:
    base = pathlib.Path(sb._base)
    assert base.stat().st_mode & 0o777 == 0o711 and base.stat().st_uid == os.geteuid()
    sb.run(Program(files={"m.py": b"pass"}, argv=("/sandbox/m.py",)))
    assert list(base.iterdir()) == []
  assert not base.exists()
