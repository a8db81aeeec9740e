"""The synthesis stage on a tiny random model: output format, manifest counts, degeneracy filter, kill -9 and resume,
multi-process shares, and refusal to mix runs."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import synth_helper
from ssd_jax.data.sources import BadRowError, PromptRecord, SourceSpec, load_source
from ssd_jax.data.synthesis import (MANIFEST, DegeneracyRule, SynthesisError, classify_sample, read_samples,
                                    shard_name, synthesize)

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "synth_helper.py")
NUM_PROMPTS, SHARD_SIZE = 6, 2


@pytest.fixture(scope="module")
def tok_bytes():
  return synth_helper.tokenizer_bytes()


@pytest.fixture(scope="module")
def model(tok_bytes):
  return synth_helper.tiny_model(tok_bytes)


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
  with open(path, "w") as f:
    for i in range(NUM_PROMPTS):
      f.write(json.dumps({"id": f"p{i}", "prompt": f"def solve():\n    n = int(input())  # case {i}\n"}) + "\n")
  return str(path)


def _config(**overrides):
  return dataclasses.replace(synth_helper.CONFIG, shard_size=SHARD_SIZE, **overrides)


def _shard_bytes(out_dir):
  names = sorted(f for f in os.listdir(out_dir) if f.startswith("samples-") and f.endswith(".jsonl"))
  return {name: open(os.path.join(out_dir, name), "rb").read() for name in names}


@pytest.fixture(scope="module")
def reference_run(model, prompt_file, tmp_path_factory):
  """An uninterrupted single-process run: the output every other run must reproduce."""
  out = str(tmp_path_factory.mktemp("reference"))
  records, report = load_source(SourceSpec("jsonl", prompt_file))
  manifest = synthesize(model, records, out, _config(), source_reports=[report])
  return out, manifest


def test_classify_sample_rules():
  default = DegeneracyRule()
  assert classify_sample("", "stop", default) == "empty"
  assert classify_sample("  \n\t", "stop", default) == "empty"
  assert classify_sample("pass", "stop", default) == "stub"
  assert classify_sample("x = 1\n\nprint(x)", "stop", default) is None
  trl = DegeneracyRule(min_lines=2, stub_max_chars=10)
  assert classify_sample("pass", "stop", trl) == "stub"
  assert classify_sample("print(sum(map(int, input().split())))", "stop", trl) is None
  fenced = DegeneracyRule(require_code_block=True, drop_truncated=True)
  assert classify_sample("a\nb", "stop", fenced) == "no_code_block"
  assert classify_sample("```python\nx = 1\n```", "stop", fenced) is None
  assert classify_sample("```python\nx = 1\n```", "length", fenced) == "truncated"


def test_output_format_and_manifest_counts(reference_run):
  out, manifest = reference_run
  assert manifest["finished"] and manifest["process_count"] == 1
  rows = [json.loads(line) for data in _shard_bytes(out).values() for line in data.splitlines()]
  assert [r["id"] for r in rows] == [f"p{i}" for i in range(NUM_PROMPTS)]  # every prompt exactly once, in order
  for r in rows:
    user, assistant = r["messages"]
    assert user["role"] == "user" and user["content"].startswith("def solve():") and assistant["role"] == "assistant"
    assert r["finish_reason"] in ("stop", "length") and 1 <= r["num_tokens"] <= 24 and r["sample_index"] == 0
    assert r["kept"] == (r["filter_reason"] is None) and r["source"] == "jsonl"
    assert r["filter_reason"] == classify_sample(assistant["content"], r["finish_reason"], DegeneracyRule())
  counts = manifest["counts"]
  filtered = {}
  for r in rows:
    if not r["kept"]:
      filtered[r["filter_reason"]] = filtered.get(r["filter_reason"], 0) + 1
  assert counts["filtered"] == filtered
  assert counts["samples"] == NUM_PROMPTS and counts["kept"] == NUM_PROMPTS - sum(filtered.values())
  assert counts["tokens"] == sum(r["num_tokens"] for r in rows) and counts["prompts"] == NUM_PROMPTS
  assert [s["file"] for s in manifest["shards"]] == [shard_name(k) for k in range(NUM_PROMPTS // SHARD_SIZE)]
  assert [r["id"] for r in read_samples(out, kept_only=False)] == [r["id"] for r in rows]
  assert all(r["kept"] for r in read_samples(out))
  assert not [f for f in os.listdir(out) if ".tmp" in f]
  with open(os.path.join(out, MANIFEST)) as f:
    assert json.load(f)["counts"] == counts


def test_n_samples_and_strict_filter_counts(model, tmp_path):
  records = [PromptRecord(f"q{i}", f"x = {i}\n", "", "jsonl", {"raw_prompt": True}) for i in range(2)]
  rule = DegeneracyRule(min_lines=10**6)  # every sample is a "stub" (or "empty"): all are filtered, none lost
  manifest = synthesize(model, records, str(tmp_path), _config(n_per_prompt=2, degeneracy=rule))
  rows = list(read_samples(str(tmp_path), kept_only=False))
  assert [(r["id"], r["sample_index"]) for r in rows] == [(f"q{i}", s) for i in range(2) for s in range(2)]
  assert rows[0]["messages"][-1]["content"] != rows[1]["messages"][-1]["content"]  # distinct streams per sample
  assert manifest["counts"]["kept"] == 0 and sum(manifest["counts"]["filtered"].values()) == 4
  assert set(manifest["counts"]["filtered"]) <= {"empty", "stub"} and list(read_samples(str(tmp_path))) == []


def test_too_long_prompts_are_reported_or_stop_the_run(model, tmp_path):
  records = [PromptRecord(name, text, "", "jsonl", {"raw_prompt": True})
             for name, text in [("short", "x = 1\n"), ("long", "x = 1\n" * 400), ("short2", "y = 2\n")]]
  manifest = synthesize(model, records, str(tmp_path / "skip"), _config())
  assert manifest["counts"]["bad_row_ids"] == ["long"] and manifest["counts"]["prompts"] == 2
  assert [r["id"] for r in read_samples(str(tmp_path / "skip"), kept_only=False)] == ["short", "short2"]
  with pytest.raises(BadRowError, match="'long': prompt too long"):
    synthesize(model, records, str(tmp_path / "error"), _config(on_bad_row="error"))
  assert not os.path.exists(tmp_path / "error" / shard_name(0))


def _run_helper(out_dir, tok_path, prompt_file, sleep_s, **env_extra):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu", **env_extra}
  return subprocess.Popen([sys.executable, HELPER, out_dir, tok_path, prompt_file, str(SHARD_SIZE), str(sleep_s)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_sigkill_mid_run_then_resume_equals_uninterrupted(reference_run, model, tok_bytes, prompt_file, tmp_path):
  ref_dir, ref_manifest = reference_run
  tok_path = tmp_path / "tok.model"
  tok_path.write_bytes(tok_bytes)
  out = str(tmp_path / "run")
  proc = _run_helper(out, str(tok_path), prompt_file, sleep_s=30)
  first = os.path.join(out, shard_name(0))
  deadline = time.time() + 120
  while not os.path.exists(first) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.1)
  os.kill(proc.pid, signal.SIGKILL)
  output = proc.communicate()[0].decode(errors="replace")
  assert proc.returncode == -signal.SIGKILL, output
  assert os.path.exists(first), output
  assert not os.path.exists(os.path.join(out, MANIFEST))
  assert not os.path.exists(os.path.join(out, shard_name(2)))
  # A torn temp file, as a kill during a shard write leaves it: never accepted, discarded on resume.
  with open(os.path.join(out, shard_name(2) + ".tmp"), "w") as f:
    f.write('{"id": "p4", "messages": [{"role": "us')
  records, report = load_source(SourceSpec("jsonl", prompt_file))
  manifest = synthesize(model, records, out, _config(), source_reports=[report])
  assert 0 in manifest["this_run"]["resumed"] and 2 in manifest["this_run"]["written"]
  assert manifest["this_run"]["discarded_temp"] == [2]
  assert _shard_bytes(out) == _shard_bytes(ref_dir)
  assert manifest["counts"] == ref_manifest["counts"]
  # A rerun of a finished run samples nothing and rewrites no shard.
  again = synthesize(model, records, out, _config(), source_reports=[report])
  assert again["this_run"]["written"] == [] and _shard_bytes(out) == _shard_bytes(ref_dir)


def test_process_shares_reproduce_the_single_process_output(reference_run, model, prompt_file, tmp_path):
  ref_dir, ref_manifest = reference_run
  records, report = load_source(SourceSpec("jsonl", prompt_file))
  out = str(tmp_path)
  first = synthesize(model, records, out, _config(), process_index=0, process_count=2)
  assert first["finished"] is False and first["written"] == [0, 2] and first["missing_shards"] == [1]
  other = synthesize(model, records, out, _config(), process_index=1, process_count=2)
  assert other == {"process_index": 1, "written": [1], "resumed": [], "discarded_temp": []}
  manifest = synthesize(model, records, out, _config(), source_reports=[report], process_index=0, process_count=2)
  assert manifest["finished"] and manifest["this_run"]["resumed"] == [0, 2]
  assert [s["process_index"] for s in manifest["shards"]] == [0, 1, 0]
  assert _shard_bytes(out) == _shard_bytes(ref_dir) and manifest["counts"] == ref_manifest["counts"]


def test_a_different_plan_is_refused(reference_run, model, prompt_file):
  ref_dir, _ = reference_run
  records, _ = load_source(SourceSpec("jsonl", prompt_file))
  before = _shard_bytes(ref_dir)
  with pytest.raises(SynthesisError, match=r"different plan \(differs in \['sampling'\]\)"):
    synthesize(model, records, ref_dir, _config(seed=8))
  with pytest.raises(SynthesisError, match="different plan"):
    synthesize(model, records[:4], ref_dir, _config())
  assert _shard_bytes(ref_dir) == before


@pytest.mark.slow
def test_two_real_processes_reproduce_the_single_process_output(reference_run, tok_bytes, prompt_file, tmp_path):
  """Two processes joined by jax.distributed on localhost each sample their share; process 0 writes the manifest."""
  import socket

  ref_dir, ref_manifest = reference_run
  tok_path = tmp_path / "tok.model"
  tok_path.write_bytes(tok_bytes)
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  out = str(tmp_path / "run")
  procs = [_run_helper(out, str(tok_path), prompt_file, 0, SSD_COORDINATOR=f"127.0.0.1:{port}",
                       SSD_NUM_PROCESSES="2", SSD_PROCESS_ID=str(i)) for i in range(2)]
  outputs = [p.communicate(timeout=300)[0].decode(errors="replace") for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outputs
  manifest = json.load(open(os.path.join(out, MANIFEST)))
  assert manifest["finished"] and sorted({s["process_index"] for s in manifest["shards"]}) == [0, 1]
  assert _shard_bytes(out) == _shard_bytes(ref_dir) and manifest["counts"] == ref_manifest["counts"]
