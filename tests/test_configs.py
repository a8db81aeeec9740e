"""Config files and launch scripts: they load the way `--config=` loads them, use only fields of configs/default.py,
carry the paper's numbers (ssd_paper.md Table 3, Table 4, §3, §4), and their meshes fit the hardware they name.

Fast: no jax compilation, one short subprocess for the real config_flags path.
"""

import dataclasses
import glob
import importlib.machinery
import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest
from ml_collections import config_dict

from ssd_jax.models.config import ModelConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")
ALL_CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(CONFIGS, "*.py")))
# Backbone modules: one model's shape, memory arithmetic and hardware table (SHAPES, HARDWARE), imported by its
# variants (instruct / thinking). They have no get_config and are not run; every other file here is a config.
BACKBONES = {"qwen3_4b": ("qwen3_4b_instruct", "qwen3_4b_thinking"),
             "qwen3_30b_a3b": ("qwen3_30b_a3b_instruct", "qwen3_30b_a3b_thinking")}
RUNNABLE_CONFIGS = [name for name in ALL_CONFIGS if name not in BACKBONES]
LAUNCH_SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "launch", "*.sh")))

# Each hardware name: (JAX devices in all, devices per host/process). v5p-64 counts TensorCores: 32 chips, each one
# JAX device (megacore), 4 per host VM, so 8 processes. One 8 x H100 node: 8 devices, one process.
HARDWARE = {"tpu_v5p_64": (32, 4), "gpu_8xh100": (8, 8)}

# ssd_paper.md Table 3 (SSD train: T, top-k, top-p; SSD eval: T, top-k, top-p), Table 4 (base eval: T, top-k, top-p;
# "none" = 0), §3 schedule, §7 (q heads, kv heads, MoE). top-p 1.0 means off (GPT-OSS-20B synthesis and base).
PAPER = {
    "qwen3_4b_instruct": {"train": (1.6, 20, 0.8), "ssd": (1.1, 20, 0.8), "base": (0.7, 20, 0.8),
                          "schedule": "instruct", "heads": (32, 8), "moe": False, "ckpt": "Qwen3-4B-Instruct-2507"},
    "qwen3_4b_thinking": {"train": (1.1, 20, 0.95), "ssd": (0.7, 20, 0.95), "base": (0.6, 20, 0.95),
                          "schedule": "thinking", "heads": (32, 8), "moe": False, "ckpt": "Qwen3-4B-Thinking-2507"},
    "qwen3_30b_a3b_instruct": {"train": (1.6, 20, 0.8), "ssd": (0.9, 20, 0.8), "base": (0.7, 20, 0.8),
                               "schedule": "instruct", "heads": (32, 4), "moe": True,
                               "ckpt": "Qwen3-30B-A3B-Instruct-2507"},
    "qwen3_30b_a3b_thinking": {"train": (1.2, 20, 0.95), "ssd": (0.7, 20, 0.95), "base": (0.6, 20, 0.95),
                               "schedule": "thinking", "heads": (32, 4), "moe": True,
                               "ckpt": "Qwen3-30B-A3B-Thinking-2507"},
    "llama3_1_8b_instruct": {"train": (0.8, 20, 0.8), "ssd": (0.7, 20, 0.8), "base": (0.9, 0, 0.8),
                             "schedule": "instruct", "heads": (32, 8), "moe": False, "ckpt": "Llama-3.1-8B-Instruct"},
    # The schedule is not stated for GPT-OSS (ssd_paper.md §3); the config infers the thinking one.
    "gpt_oss_20b": {"train": (1.2, 0, 1.0), "ssd": (1.0, 20, 0.95), "base": (1.0, 0, 1.0), "schedule": "thinking",
                    "heads": (64, 8), "moe": True, "ckpt": "gpt-oss-20b"},
}
SCHEDULES = {"instruct": {"warmup_steps": 250, "total_steps": 2500, "save_interval_steps": 250},
             "thinking": {"warmup_steps": 50, "total_steps": 300, "save_interval_steps": 50}}
COMMON = {  # §3 SFT, §1 sampling, §4 evaluation: the same for every paper model
    "train.learning_rate": 5e-6, "train.min_learning_rate": 1e-6, "train.global_batch_size": 32,
    "train.seq_len": 65536, "train.b1": 0.9, "train.b2": 0.95, "train.weight_decay": 0.1,
    "sample.n_per_prompt": 1, "data.kind": "rstar_seed", "data.require_passed": True, "data.dedup": True,
    "eval.benchmark": "lcb", "eval.version": "release_v6", "eval.start_date": "2025-02-01",
    "eval.end_date": "2025-05-01", "eval.n": 10, "eval.models": ("base", "ssd"),
    "model.param_dtype": "float32", "model.compute_dtype": "bfloat16",
}


@pytest.fixture(autouse=True)
def _no_hardware_env(monkeypatch):
  monkeypatch.delenv("SSD_HARDWARE", raising=False)  # each file's HARDWARE is the default under test


def load_module(name: str):
  """The config file as config_flags loads it: by path, with SourceFileLoader, under a fresh module name."""
  loader = importlib.machinery.SourceFileLoader(f"test_config_{name}", os.path.join(CONFIGS, name + ".py"))
  module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
  loader.exec_module(module)
  return module


def load(name: str, *args) -> config_dict.ConfigDict:
  return load_module(name).get_config(*args)


def get(config, dotted: str):
  for part in dotted.split("."):
    config = config[part]
  return config


def leaves(config: config_dict.ConfigDict, prefix: str = "") -> dict:
  """Dotted key -> value of every leaf (placeholders give None)."""
  out = {}
  for key, value in config.items():
    if isinstance(value, config_dict.ConfigDict):
      out.update(leaves(value, f"{prefix}{key}."))
      if not value:
        out[f"{prefix}{key}"] = {}
    else:
      out[f"{prefix}{key}"] = value
  return out


def resolve_mesh(shape: dict, devices: int) -> dict:
  """The sizes `ssd_jax.models.sharding.make_mesh` gives `shape` over `devices` devices (it raises the same way)."""
  sizes = {a: int(shape.get(a, 1)) for a in ("data", "fsdp", "expert", "tensor")}
  free = [a for a, s in sizes.items() if s == -1]
  assert len(free) <= 1, f"at most one -1 axis: {shape}"
  known = math.prod(s for s in sizes.values() if s != -1)
  if not free and known != devices and "fsdp" not in shape:
    free = ["fsdp"]
  if free:
    assert devices % known == 0, f"mesh {shape} does not divide {devices} devices"
    sizes[free[0]] = devices // known
  assert math.prod(sizes.values()) == devices, f"mesh {sizes} != {devices} devices"
  return sizes


# -- every config --------------------------------------------------------------------------------------------------


def test_paper_configs_present():
  assert set(PAPER) <= set(RUNNABLE_CONFIGS)
  assert set(BACKBONES) <= set(ALL_CONFIGS)


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_runnable_or_named_backbone(name):
  """A file without get_config is skipped by the tests below only if BACKBONES names it."""
  assert hasattr(load_module(name), "get_config") == (name not in BACKBONES), (
      f"{name}: a backbone module (BACKBONES) must have no get_config, every other config file must have one")


@pytest.mark.parametrize("name", RUNNABLE_CONFIGS)
def test_loads_and_uses_only_default_fields(name):
  config = load(name)
  assert isinstance(config, config_dict.ConfigDict)
  default = leaves(load("default"))
  arch_fields = {f.name for f in dataclasses.fields(ModelConfig)}
  for key, value in leaves(config).items():
    if key.startswith("model.arch."):  # a random model's ModelConfig fields (configs/tiny.py)
      assert key.split(".")[2] in arch_fields, f"{name}: config.{key} is not a ModelConfig field"
      continue
    if ".chat_template_kwargs." in key:  # the template's own variables (e.g. reasoning_effort): strings or flags
      assert isinstance(value, (str, bool)), f"{name}: config.{key} = {value!r}"
      continue
    assert key in default, f"{name}: config.{key} is not a field of configs/default.py"
    expected = default[key]
    if expected is None or value is None or isinstance(expected, dict):
      continue
    ok = isinstance(value, type(expected)) or (isinstance(expected, float) and isinstance(value, int))
    assert ok and not (isinstance(value, bool) and not isinstance(expected, bool)), (
        f"{name}: config.{key} = {value!r} ({type(value).__name__}), default.py has {type(expected).__name__}")


# -- the paper's configs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_numbers(name):
  paper = PAPER[name]
  config = load(name)
  assert (config.sample.temperature, config.sample.top_k, config.sample.top_p) == paper["train"]
  for model in ("base", "ssd"):
    ev = config.eval[model]
    t, k, p = paper[model]
    assert tuple(ev.temperatures) == (t,), f"{model}: the default run evaluates the paper's single T_eval"
    assert (ev.top_k, ev.top_p) == (k, p), model
  for key, value in {**COMMON, **{f"train.{k}": v for k, v in SCHEDULES[paper["schedule"]].items()}}.items():
    assert get(config, key) == value, f"{name}: config.{key} = {get(config, key)!r}, paper {value!r}"
  # The placeholder paths are fields a researcher edits; the checkpoint names the paper's model.
  assert config.model.checkpoint.endswith(paper["ckpt"])
  assert config.data.path and config.eval.path


def test_gpt_oss_reasoning_effort_reaches_sampling_evaluation_and_sft():
  """GPT-OSS-20B runs at high reasoning effort: the synthesis prompts, the SFT targets (rendered with synthesis's
  template kwargs) and both evaluations pass it to the chat template; a flag changes all of them."""
  from ssd_jax import stages

  config = load("gpt_oss_20b")
  assert stages.synthesis_config(config).chat_template_kwargs == {"reasoning_effort": "high"}
  for model in ("base", "ssd"):
    assert stages.eval_sampling(config, model).chat_template_kwargs == {"reasoning_effort": "high"}
  config.sample.chat_template_kwargs.reasoning_effort = "medium"
  assert stages.synthesis_config(config).chat_template_kwargs == {"reasoning_effort": "medium"}
  assert stages.eval_sampling(config, "ssd").chat_template_kwargs == {"reasoning_effort": "high"}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_sweep_grid_starts_at_the_paper_value(name):
  module = load_module(name)
  module.SWEEP = True
  config = module.get_config()
  for model in ("base", "ssd"):
    temps = tuple(config.eval[model].temperatures)
    assert len(temps) > 1 and len(set(temps)) == len(temps)
    assert temps[0] == PAPER[name][model][0]


@pytest.mark.parametrize("hardware", sorted(HARDWARE))
@pytest.mark.parametrize("name", sorted(PAPER))
def test_meshes_fit_the_hardware(name, hardware):
  devices, per_host = HARDWARE[hardware]
  processes = devices // per_host
  config = load(name, hardware)
  shape = dict(config.mesh)
  mesh = resolve_mesh(shape, devices)  # training: the global mesh
  local = resolve_mesh(shape, per_host)  # sampling and evaluation: each process's own devices
  assert math.prod(mesh.values()) == devices and math.prod(local.values()) == per_host

  q_heads, kv_heads = PAPER[name]["heads"]
  assert q_heads % mesh["tensor"] == 0 and kv_heads % mesh["tensor"] == 0, "tensor must split the heads"
  # The expert axis shards only expert weights: on a dense model it would replicate every param.
  assert (mesh["expert"] > 1) == PAPER[name]["moe"]

  # Rows are sharded over data x fsdp x expert; a row count that does not divide is silently replicated.
  tc = config.train
  assert tc.global_batch_size % (processes * tc.grad_accum_steps) == 0
  micro_rows = tc.global_batch_size // tc.grad_accum_steps
  assert micro_rows % (mesh["data"] * mesh["fsdp"] * mesh["expert"]) == 0
  assert config.sample.engine.batch_size % (local["data"] * local["fsdp"] * local["expert"]) == 0
  assert config.sample.engine.max_seq_len >= config.sample.max_new_tokens


@pytest.mark.parametrize("name", sorted(PAPER))
def test_hardware_selection(name, monkeypatch):
  module = load_module(name)
  assert module.HARDWARE in HARDWARE and set(module.SHAPES) == set(HARDWARE)
  other = next(h for h in HARDWARE if h != module.HARDWARE)
  assert dict(load(name).mesh) == module.SHAPES[module.HARDWARE]["mesh"]
  monkeypatch.setenv("SSD_HARDWARE", other)
  assert dict(load(name).mesh) == module.SHAPES[other]["mesh"]
  assert dict(load(name, module.HARDWARE).mesh) == module.SHAPES[module.HARDWARE]["mesh"]  # `:arg` wins
  with pytest.raises(ValueError, match="unknown hardware"):
    load(name, "tpu_v9")


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_variants_share_the_backbone_hardware_table(backbone):
  """A backbone's variants take SHAPES and HARDWARE from its module, so their meshes cannot drift apart."""
  shared = load_module(backbone)
  modules = [load_module(name) for name in BACKBONES[backbone]]
  assert set(shared.SHAPES) == set(HARDWARE) and shared.HARDWARE in HARDWARE
  for module in modules:
    assert module.SHAPES == shared.SHAPES and module.HARDWARE == shared.HARDWARE
    assert module.SHAPES is modules[0].SHAPES, "each variant imports the backbone's SHAPES, not a copy"
  for hardware in ("", *sorted(HARDWARE)):
    shape = shared.SHAPES[hardware or shared.HARDWARE]
    for name in BACKBONES[backbone]:
      config = load(name, hardware)
      assert dict(config.mesh) == shape["mesh"], (name, hardware)
      assert config.sample.engine.batch_size == shape["engine_batch"], (name, hardware)
      assert config.train.grad_accum_steps == shape["grad_accum"], (name, hardware)


def test_config_flags_path_and_overrides():
  """The real `--config=path:arg --config.x=...` parse, as ssd_jax.main does it (absl + config_flags)."""
  probe = ("import json\nfrom absl import app\nfrom ml_collections import config_flags\n"
           "C = config_flags.DEFINE_config_file('config')\n"
           "app.run(lambda argv: print(json.dumps(C.value.to_dict(), default=list)))\n")
  out = subprocess.run(
      [sys.executable, "-c", probe, "--config=configs/qwen3_30b_a3b_instruct.py:gpu_8xh100",
       "--config.sample.temperature=2.0", "--config.eval.ssd.temperatures=(0.7,0.9,1.1)",
       '--config.eval.models=("ssd",)', "--config.distributed.process_id=3"],
      cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, "SSD_HARDWARE": ""})
  assert out.returncode == 0, out.stderr
  config = json.loads(out.stdout.strip().splitlines()[-1])
  assert config["mesh"] == {"data": 1, "fsdp": -1, "expert": 8, "tensor": 1}
  assert config["sample"]["temperature"] == 2.0 and config["sample"]["top_k"] == 20
  assert config["eval"]["ssd"]["temperatures"] == [0.7, 0.9, 1.1] and config["eval"]["models"] == ["ssd"]
  assert config["distributed"]["process_id"] == 3


# -- launch scripts ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", LAUNCH_SCRIPTS, ids=os.path.basename)
def test_launch_script_syntax(script):
  subprocess.run(["bash", "-n", script], check=True)
  with open(script) as f:
    text = f.read()
  assert "set -euo pipefail" in text
  assert os.access(script, os.X_OK), f"{script} is not executable"


def test_tpu_pod_dry_run():
  env = {**os.environ, "DRY_RUN": "1", "TPU_NAME": "slice", "ZONE": "zone-a", "SYNC": "git",
         "REPO_URL": "https://example.invalid/ssd_jax.git", "REF": "abc123"}
  out = subprocess.run(["launch/tpu_pod.sh", "--config=configs/qwen3_4b_instruct.py", "--config.workdir=/mnt/a b"],
                       cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout.splitlines()
  assert len(out) == 3  # sync, setup, run
  assert all("--worker=all" in line and line.startswith("gcloud compute tpus tpu-vm ssh slice") for line in out)
  assert "bubblewrap" in out[1] and "jax\\\\\\[tpu\\\\\\]" in out[1]
  assert "ssd_jax.main" in out[2] and "--config.workdir=/mnt/a" in out[2]
  assert "exec\\ sudo\\ -E\\ .venv/bin/python" in out[2]  # as root: the sandbox's uid drop needs it
