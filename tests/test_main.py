"""The pipeline entry point: config errors before any work, the tiny config end to end, resume after kills, and
two real jax.distributed processes against one."""

import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from no_bwrap import without_bwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny.py")


# Runs after the first load their compiled programs from a persistent cache (each run compiles ~20 programs).
JAX_CACHE = os.path.join(tempfile.gettempdir(), "ssd_jax_test_main_jax_cache")


def _env(**extra):
  # One CPU device per process, as a user's laptop has (the suite's 8 fake devices are for mesh tests).
  return {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": JAX_CACHE,
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", **extra}


def _main(*args, timeout=600, env=None):
  proc = subprocess.run([sys.executable, "-m", "ssd_jax.main", *args], capture_output=True, text=True, cwd=ROOT,
                        env=env or _env(), timeout=timeout)
  return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("override, names", [
    ("--config.nonexistent=1", "nonexistent"),
    ("--config.sample.temperature=hot", "sample.temperature"),
    ("--config.train.total_steps=2.5", "train.total_steps"),
])
def test_bad_override_stops_before_any_work(tmp_path, override, names):
  rc, out, err = _main(f"--config={TINY}", f"--config.workdir={tmp_path}/w", override, timeout=120)
  assert rc != 0
  assert names in err
  assert not os.path.exists(tmp_path / "w")  # nothing was started


def test_an_unknown_key_is_one_line_with_or_without_a_config_file(tmp_path):
  for args in ([], [f"--config={TINY}"]):
    rc, out, err = _main(*args, f"--config.workdir={tmp_path}/w", "--config.sample.temprature=1.0", timeout=120)
    assert rc == 2 and "Traceback" not in err, err[-2000:]
    assert "config.sample has no field 'temprature' (did you mean temperature?)" in err
    assert json.loads(out.strip().splitlines()[-1])["error"] == "unknown config keys"
  assert not os.path.exists(tmp_path / "w")


def test_help_says_where_the_fields_are():
  rc, out, err = _main("--help", timeout=120)
  assert "configs/default.py" in out + err and "Traceback" not in err


@pytest.mark.parametrize("override, names", [
    ("--config.eval.models=('base','bogus')", "eval.models"),
    ("--config.data.subset=third_half", "data.subset"),
    ("--config.eval.ssd.top_p=1.5", "eval.ssd.top_p"),
])
def test_bad_value_stops_before_any_work(tmp_path, override, names):
  rc, out, err = _main(f"--config={TINY}", f"--config.workdir={tmp_path}/w", override, timeout=120)
  assert rc == 2
  assert names in err and names in json.loads(out.strip().splitlines()[-1])["error"]
  assert not os.path.exists(tmp_path / "w")


@pytest.mark.usefixtures("root")
def test_on_a_host_without_bwrap_the_main_job_refuses_before_any_work(tmp_path):
  argv = [sys.executable, "-m", "ssd_jax.main", f"--config={TINY}", f"--config.workdir={tmp_path}/w"]
  proc = subprocess.run(without_bwrap(argv), capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=120)
  assert proc.returncode == 1, proc.stderr[-2000:]
  error = json.loads(proc.stdout.strip().splitlines()[-1])["error"]
  assert "apt-get install bubblewrap" in proc.stderr and "--config.eval.allow_weak_isolation=True" in error
  assert not os.path.exists(tmp_path / "w")  # refused before synthesis or training started


@pytest.mark.slow
@pytest.mark.usefixtures("root")
def test_on_a_host_without_bwrap_the_opt_in_evaluates_under_unshare(tmp_path):
  workdir = tmp_path / "w"
  argv = [sys.executable, "-m", "ssd_jax.main", f"--config={TINY}", f"--config.workdir={workdir}", "--stage=evaluate",
          "--config.eval.models=('base',)", "--config.eval.base.temperatures=(0.7,)",
          "--config.eval.allow_weak_isolation=True"]
  proc = subprocess.run(without_bwrap(argv), capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  run = _eval_rows(workdir, "base", "0.7")
  assert run["isolation"] == "unshare" and run["n_samples"] == 32


def _summary(workdir):
  with open(os.path.join(workdir, "summary.json")) as f:
    return json.load(f)


def _jsonl_records(workdir):
  """The bytes of every JSONL file in the workdir (sample shards, train metrics, eval samples and verdicts)."""
  records = {}
  for path in glob.glob(os.path.join(workdir, "**", "*.jsonl"), recursive=True):
    with open(path, "rb") as f:
      records[os.path.relpath(path, workdir)] = f.read()
  return records


def _eval_rows(workdir, model, temperature):
  with open(os.path.join(workdir, "eval", model, f"{model}_T{temperature}.summary.json")) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("tiny") / "run")
  rc, out, err = _main(f"--config={TINY}", f"--config.workdir={workdir}")
  assert rc == 0, err[-3000:]
  return workdir, json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
def test_tiny_config_end_to_end(uninterrupted):
  workdir, result = uninterrupted
  summary = _summary(workdir)
  assert summary["data"]["prompts"] == 16 and summary["data"]["samples"] == 16
  assert summary["train"]["steps"] == 4 and summary["train"]["loss_last"] < summary["train"]["loss_first"]
  for model in ("base", "ssd"):
    for temperature in ("0.7", "1"):
      run = summary["eval"][model]["runs"][temperature]
      assert run["n_problems"] == 16 and run["samples_per_problem"] == {"min": 2, "max": 2}
      assert run["isolation"] in ("bwrap", "process")
  assert summary["export"] and os.path.exists(os.path.join(summary["export"], "model.safetensors"))
  for name in ("report.md", "summary.json", "train_loss.png", "teval_sweep.png", "analysis/diagnostics.json",
               "analysis/fig6a_cum_mass.png", "analysis/fig6b_survivors.png", "analysis/fig6c_entropy.png",
               "analysis/fig6d_entropy_by_top20_mass.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  report = open(os.path.join(workdir, "report.md")).read()
  assert "## Evaluation" in report and "teval_sweep.png" in report
  assert result["evaluate"]["ssd"]["temperature"] in (0.7, 1.0)
  # A rerun finds everything complete and redoes nothing: same numbers, and not one sample, training step or
  # verdict added to the JSONL records.
  records = _jsonl_records(workdir)
  rc, out, err = _main(f"--config={TINY}", f"--config.workdir={workdir}")
  assert rc == 0, err[-3000:]
  assert _summary(workdir)["eval"] == summary["eval"]
  assert _jsonl_records(workdir) == records


def _kill_when(args, path_test, timeout=300):
  """Starts the pipeline, SIGKILLs it as soon as `path_test()` holds; returns whether it was killed mid-run."""
  proc = subprocess.Popen([sys.executable, "-m", "ssd_jax.main", *args], cwd=ROOT, env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + timeout
  while proc.poll() is None and time.time() < deadline:
    if path_test():
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      return True
    time.sleep(0.05)
  proc.kill()
  proc.wait()
  return False


@pytest.mark.slow
def test_killed_mid_synthesis_and_mid_training_completes_the_same(uninterrupted, tmp_path):
  reference, _ = uninterrupted
  workdir = str(tmp_path / "run")
  args = (f"--config={TINY}", f"--config.workdir={workdir}")
  samples = os.path.join(workdir, "samples")
  assert _kill_when(args, lambda: os.path.exists(os.path.join(samples, "samples-00000.jsonl")))
  assert not os.path.exists(os.path.join(samples, "manifest.json"))
  checkpoints = os.path.join(workdir, "train", "checkpoints")
  assert _kill_when(args, lambda: os.path.isdir(checkpoints) and any(d.isdigit() for d in os.listdir(checkpoints)))
  assert not os.path.exists(os.path.join(workdir, "export"))
  rc, out, err = _main(*args)
  assert rc == 0, err[-3000:]
  got, want = _summary(workdir), _summary(reference)
  assert got["data"] == want["data"]
  assert got["train"]["steps"] == want["train"]["steps"]
  assert got["train"]["loss_last"] == pytest.approx(want["train"]["loss_last"], abs=1e-6)
  assert got["eval"] == want["eval"]


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(uninterrupted, tmp_path):
  reference, _ = uninterrupted
  workdir = str(tmp_path / "run")
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, "-m", "ssd_jax.main", f"--config={TINY}", f"--config.workdir={workdir}",
       f"--config.distributed.coordinator_address=127.0.0.1:{port}", "--config.distributed.num_processes=2",
       f"--config.distributed.process_id={i}"], cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in procs]
  for p, (out, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  got, want = _summary(workdir), _summary(reference)
  # Synthesis: each process sampled its own shards with per-shard seeds, so the samples are the same ones.
  assert got["data"] == want["data"]
  with open(os.path.join(workdir, "samples", "manifest.json")) as f:
    assert json.load(f)["process_count"] == 2
  # Training on the 2-process mesh: same steps, same loss up to float32 reduction order.
  assert got["train"]["steps"] == want["train"]["steps"]
  assert got["train"]["loss_last"] == pytest.approx(want["train"]["loss_last"], abs=1e-4)
  # Evaluation: each process judged half of the problems; process 0 scored them all.
  for model in ("base", "ssd"):
    run = _eval_rows(workdir, model, "0.7")
    assert run["process_count"] == 2 and run["n_problems"] == 16 and run["n_samples"] == 32
    assert run["problem_ids"] == _eval_rows(reference, model, "0.7")["problem_ids"]
    parts = [os.path.join(workdir, "eval", model, f"{model}_T0.7.p{i}of2.results.jsonl") for i in range(2)]
    assert [sum(1 for _ in open(p)) for p in parts] == [16, 16]
  base = _eval_rows(workdir, "base", "0.7")
  assert base["overall"] == _eval_rows(reference, "base", "0.7")["overall"]  # the base model is the same
  # The samples themselves: answer i of problem p is drawn from (seed, p, i) wherever p was sampled, so the two
  # processes' shares hold exactly the single process's texts, for synthesis and for evaluation.
  assert _texts(os.path.join(workdir, "samples", "samples-*.jsonl"), "id") == _texts(
      os.path.join(reference, "samples", "samples-*.jsonl"), "id")
  for temperature in ("0.7", "1"):
    got = _texts(os.path.join(workdir, "eval", "base", f"base_T{temperature}.p*of2.samples.jsonl"), "problem_id")
    want = _texts(os.path.join(reference, "eval", "base", f"base_T{temperature}.samples.jsonl"), "problem_id")
    assert got == want and len(got) == 16


def _texts(pattern, key):
  """{id: sampled text(s)} over the JSONL files matching `pattern` (synthesis shards or evaluation samples)."""
  out = {}
  for path in glob.glob(pattern):
    for line in open(path):
      row = json.loads(line)
      out[(row[key], row.get("sample_index", 0))] = row["messages"][-1]["content"] if "messages" in row else row[
          "completions"]
  return out


def _tiny_config():
  import importlib.util
  spec = importlib.util.spec_from_file_location("tiny_config", TINY)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_sampling_fields_of_the_config_reach_synthesis_and_the_engine(tmp_path, monkeypatch):
  """config.sample's operator (min_p included) and chat-template arguments reach synthesis's prompts and the
  engine's requests through the one SamplingConfig; eval decodings likewise."""
  sys.path.insert(0, os.path.join(ROOT, "tests"))
  import synth_helper  # pylint: disable=import-outside-toplevel

  from ssd_jax import main, stages
  from ssd_jax.data import synthesis
  from ssd_jax.data.sources import PromptRecord
  from ssd_jax.sampling.engine import Engine
  from ssd_jax.sampling.sampler import SamplingConfig

  config = _tiny_config()
  config.sample.update(temperature=0.9, top_k=7, top_p=0.85, min_p=0.05, max_new_tokens=12)
  config.sample.chat_template_kwargs = {"enable_thinking": False}
  config.eval.ssd.min_p = 0.1
  config.analysis.diagnostics = False
  main.check_config(config)
  scfg = stages.synthesis_config(config)
  want = SamplingConfig(temperature=0.9, top_k=7, top_p=0.85, min_p=0.05, max_new_tokens=12)
  assert scfg.sampling == want and dict(scfg.chat_template_kwargs) == {"enable_thinking": False}
  assert stages.eval_sampling(config, "ssd").sampling.min_p == 0.1

  seen = {}
  render = synthesis.render_prompts

  def spy_render(*args, **kwargs):
    seen["chat_template_kwargs"] = kwargs["chat_template_kwargs"]
    return render(*args, **kwargs)

  def spy_generate(self, requests, seed=0, progress=None):
    seen["sampling"] = {r.sampling for r in requests}
    raise StopIteration  # enough: the requests were built

  monkeypatch.setattr(synthesis, "render_prompts", spy_render)
  monkeypatch.setattr(Engine, "generate", spy_generate)
  model = synth_helper.tiny_model(synth_helper.tokenizer_bytes())
  with pytest.raises(StopIteration):
    synthesis.synthesize(model, [PromptRecord("p0", "Add two numbers.", "", "jsonl", {})], str(tmp_path), scfg)
  assert seen == {"chat_template_kwargs": {"enable_thinking": False}, "sampling": {want}}


@pytest.mark.parametrize("key, value, message", [
    ("sample.tempreature", 1.0, "config.sample.tempreature: SynthesisConfig has no field 'tempreature' "
                                "(did you mean temperature?)"),
    ("sample.engine.page_sz", 8, "config.sample.engine.page_sz: EngineConfig has no field 'page_sz'"),
    ("eval.base.top_q", 0.5, "config.eval.base.top_q: SamplingConfig has no field 'top_q' (did you mean top_p, top_k?)"),
    ("sample.min_p", 1.5, "config.sample.min_p = 1.5: expected a value in [0, 1)"),
    ("eval.ssd.checkpoints", (9,), "config.eval.ssd.checkpoints = (9,): expected training steps in "
                                   "1..train.total_steps (4)"),
    ("eval.ssd.checkpoints", (3,), "expected steps the trainer saves (multiples of train.save_interval_steps = 2"),
    ("eval.base.checkpoints", (2,), "config.eval.base.checkpoints: SamplingConfig has no field 'checkpoints'"),
])
def test_a_config_field_nothing_reads_is_refused(key, value, message):
  """A field set in a config file (where ml_collections accepts new keys) reaches the kernel or is refused."""
  from ssd_jax import main

  config = _tiny_config()
  node = config
  *parents, leaf = key.split(".")
  for part in parents:
    node = node[part]
  with node.unlocked():
    node[leaf] = value
  with pytest.raises(main.ConfigValueError, match=re.escape(message)):
    main.check_config(config)


def test_checkpoints_to_score_must_be_kept_by_the_trainer():
  from ssd_jax import main

  config = _tiny_config()
  config.eval.ssd.checkpoints = (2,)
  main.check_config(config)  # tiny saves steps 2 and 4 and keeps three
  config.train.max_to_keep = 1
  with pytest.raises(main.ConfigValueError, match=re.escape("only [4] survive; set --config.train.max_to_keep=2")):
    main.check_config(config)
  config.train.max_to_keep = 0  # keep all
  main.check_config(config)


@pytest.mark.slow
def test_earlier_checkpoints_are_scored_as_their_own_models(uninterrupted, tmp_path):
  reference, _ = uninterrupted
  workdir = str(tmp_path / "run")
  shutil.copytree(reference, workdir)
  rc, out, err = _main(f"--config={TINY}", f"--config.workdir={workdir}", "--stage=evaluate",
                       "--config.eval.ssd.checkpoints=(2,)")
  assert rc == 0, err[-3000:]
  result = json.loads(out.strip().splitlines()[-1])
  assert list(result["evaluate"]) == ["base", "ssd@2", "ssd"]
  for temperature in ("0.7", "1"):
    step2, final = _eval_rows(workdir, "ssd@2", temperature), _eval_rows(workdir, "ssd", temperature)
    assert step2["n_problems"] == final["n_problems"] == 16
  # The final model's verdicts were complete: nothing of them was redone.
  assert {k: v for k, v in _jsonl_records(workdir).items() if "ssd@2" not in k} == _jsonl_records(reference)


def test_a_workdir_that_is_a_file_and_a_missing_checkpoint_are_one_line(tmp_path):
  (tmp_path / "file").write_text("x")
  for override, words in [(f"--config.workdir={tmp_path}/file", "config.workdir = "),
                          (f"--config.model.checkpoint={tmp_path}/nope", "config.model.checkpoint = ")]:
    args = [f"--config={TINY}", override] + ([] if "workdir" in override else [f"--config.workdir={tmp_path}/w"])
    rc, out, err = _main(*args, timeout=120)
    assert rc == 2 and "Traceback" not in err, err[-2000:]
    assert words in err and words in json.loads(out.strip().splitlines()[-1])["error"]
  assert not os.path.exists(tmp_path / "w")


def test_a_truncated_gguf_is_one_line_with_the_fix(tmp_path):
  from ssd_jax.models.gguf import smollm2_gguf_path
  truncated = tmp_path / "model.gguf"
  with open(smollm2_gguf_path(), "rb") as f:
    truncated.write_bytes(f.read(20_000_000))
  rc, out, err = _main(f"--config={TINY}", f"--config.workdir={tmp_path}/w", "--stage=synthesize",
                       f"--config.model.checkpoint={truncated}", "--config.model.tokenizer=", timeout=300)
  assert rc == 2 and "Traceback" not in err, err[-3000:]
  error = json.loads(out.strip().splitlines()[-1])["error"]
  assert "not a readable GGUF file: truncated or corrupt" in error and "download it again" in error
