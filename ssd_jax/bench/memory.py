"""The compiler's memory numbers for the SFT train step of a config, on its hardware or a TPU topology, without it.

  python -m ssd_jax.bench.memory --config=configs/qwen3_4b_instruct.py:tpu_v5p_64 --topology=v5p-64 \
      [--arch=qwen3-4b] [--seq_lens=65536,32768] [--config.train.packing=True] [--config.train.grad_accum_steps=8]

What is compiled is the trainer's own step (`trainer.make_train_step`) for the config as `ssd_jax.main` would run it:
its mesh, param and compute dtypes, global batch and gradient accumulation (microbatches), remat policy, loss chunk
and `train.attention` ("auto" resolved for the platform of the devices compiled for, so a TPU topology gets splash
attention although this host's jax backend is the CPU). Every input is abstract (`jax.ShapeDtypeStruct` with its
sharding): the params come from `transformer.abstract_params`, the train state's shapes and shardings from compiling
the trainer's real init (`trainer._init_fn`, whose output shardings are the compiler's choice, as in a run), the
batch [m, B/m, S] from `trainer.batch_sharding`. No weight is ever materialised.

`--topology=v5p-64` compiles for a TPU slice through libtpu's compile-only devices (deviceless AOT, as MaxText's
train_compile.py: `jax.experimental.topologies.get_topology_desc`); needs `pip install 'jax[tpu]'` on any host, run
with JAX_PLATFORMS=cpu. Without --topology it compiles for this host's devices (the CPU backend reports the same
analysis). Per device, from `Compiled.memory_analysis()`: arguments, outputs, aliased (the donated state), temporaries
and generated code; total = arguments + outputs - aliased + temporaries, against the chip's HBM (a datasheet table
keyed by TPU generation, or the device's own `memory_stats()` limit). A shape that does not fit fails to compile on
TPU with RESOURCE_EXHAUSTED: its row carries the compiler's message and the bytes it says it needed.

On TPU the temporaries are not a minimum: the scheduler spends HBM it has on overlapping collectives with compute,
so a step that needs 60 GiB may report 85 at 95 GiB. `--hbm_gib=N` compiles as if each chip had N GiB (libtpu's
xla_tpu_max_hbm_size_mib): below what the step needs, libtpu's error says how much it needs; a compile that
succeeds may still report a total above N (Qwen3-4B at N = 32: 35.4 GiB), so N brackets the minimum, it does not
measure it (BUILD_NOTES §14).

Beside the step, the pipeline (`ssd_jax.main --stage=all`) run by one process keeps the base model that sampling
loaded while it trains (`stages.train`; evaluation scores it later): `base_copy_bytes` is that (exact, from the
params' shardings; 0 with several processes, which drop the sampling copy and donate the trainer's), and
`fits_pipeline` counts it.

The model comes from `config.model.checkpoint` (an HF directory with config.json, or "random" with
`config.model.arch`), or, when that path is not on this host (the paper configs name /ckpt/...), from --arch: the
published config.json of one of the paper's models (Qwen3-4B, Qwen3-30B-A3B, Llama-3.1-8B, GPT-OSS-20B). One line
per shape; the last line is one JSON object.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
import time
from typing import Any, Sequence

GiB = 1024 ** 3

# The published config.json fields that shape training (hub: Qwen/Qwen3-4B-Instruct-2507,
# Qwen/Qwen3-30B-A3B-Instruct-2507 (the thinking variants share them), meta-llama/Llama-3.1-8B-Instruct,
# openai/gpt-oss-20b).
ARCHS: dict[str, dict[str, Any]] = {
    "qwen3-4b": dict(model_type="qwen3", vocab_size=151936, hidden_size=2560, num_hidden_layers=36,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=128, intermediate_size=9728,
                     max_position_embeddings=262144, rms_norm_eps=1e-6, rope_theta=5e6, tie_word_embeddings=True),
    "qwen3-30b-a3b": dict(model_type="qwen3_moe", vocab_size=151936, hidden_size=2048, num_hidden_layers=48,
                          num_attention_heads=32, num_key_value_heads=4, head_dim=128, intermediate_size=6144,
                          num_experts=128, num_experts_per_tok=8, moe_intermediate_size=768, norm_topk_prob=True,
                          decoder_sparse_step=1, router_aux_loss_coef=0.001, max_position_embeddings=262144,
                          rms_norm_eps=1e-6, rope_theta=1e7, tie_word_embeddings=False),
    "llama3.1-8b": dict(model_type="llama", vocab_size=128256, hidden_size=4096, num_hidden_layers=32,
                        num_attention_heads=32, num_key_value_heads=8, head_dim=128, intermediate_size=14336,
                        max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
                        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                          original_max_position_embeddings=8192), tie_word_embeddings=False),
    "gpt-oss-20b": dict(model_type="gpt_oss", vocab_size=201088, hidden_size=2880, num_hidden_layers=24,
                        num_attention_heads=64, num_key_value_heads=8, head_dim=64, intermediate_size=2880,
                        num_local_experts=32, num_experts_per_tok=4, layer_types=["sliding_attention",
                                                                                  "full_attention"] * 12,
                        sliding_window=128, swiglu_limit=7.0, attention_bias=True, router_aux_loss_coef=0.9,
                        max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=150000,
                        rope_scaling=dict(rope_type="yarn", factor=32.0, beta_fast=32.0, beta_slow=1.0,
                                          original_max_position_embeddings=4096, truncate=False),
                        tie_word_embeddings=False),
}


@dataclasses.dataclass(frozen=True)
class Topology:
  """A TPU slice as libtpu names it (MaxText's accelerator_to_spec_map): `get_topology_desc` arguments."""

  topology_name: str  # generation:chips per dimension
  chip_config_name: str  # "megacore": one JAX device per chip (both TensorCores)
  chips_per_host_bounds: tuple[int, int, int]
  wrap: tuple[bool, bool, bool]


_NO_WRAP = (False, False, False)
TOPOLOGIES = {
    **{f"v5p-{2 * n}": Topology(f"v5:{shape}", "megacore", (2, 2, 1), _NO_WRAP)
       for n, shape in ((4, "2x2x1"), (8, "2x2x2"), (16, "2x2x4"), (32, "2x4x4"))},
    "v5p-128": Topology("v5:4x4x4", "megacore", (2, 2, 1), (True, True, True)),
    **{f"v4-{2 * n}": Topology(f"v4:{shape}", "megacore", (2, 2, 1), _NO_WRAP)
       for n, shape in ((4, "2x2x1"), (8, "2x2x2"), (16, "2x2x4"))},
    **{f"v6e-{n}": Topology(f"v6e:{shape}", "default", (2, 2, 1), _NO_WRAP)
       for n, shape in ((4, "2x2"), (8, "2x4"), (16, "4x4"), (32, "4x8"), (64, "8x8"))},
}
# HBM per chip by generation (the topology name's prefix), datasheet values.
HBM_BYTES = {"v5p": 95 * GiB, "v4": 32 * GiB, "v6e": 32 * GiB}


def topology_devices(name: str) -> list:
  """The compile-only devices of TPU slice `name` (libtpu; no TPU needed)."""
  from jax.experimental.topologies import get_topology_desc

  if name not in TOPOLOGIES:
    raise ValueError(f"unknown --topology {name!r}; expected one of {sorted(TOPOLOGIES)}")
  t = TOPOLOGIES[name]
  return list(get_topology_desc(topology_name=t.topology_name, platform="tpu", chip_config_name=t.chip_config_name,
                                chips_per_host_bounds=t.chips_per_host_bounds, wrap=t.wrap).devices)


def hbm_bytes(topology: str, devices: Sequence) -> int | None:
  """Per-device memory: the topology's datasheet HBM, else the device's own limit (None where it has none: CPU)."""
  if topology:
    return HBM_BYTES.get(topology.split("-")[0])
  try:
    stats = devices[0].memory_stats()
  except Exception:  # CPU devices raise or return None: there is no fixed limit to compare with
    return None
  return int(stats["bytes_limit"]) if stats and "bytes_limit" in stats else None


def model_config(config, arch: str):
  """The ModelConfig the pipeline would load for `config`, with its param and compute dtypes."""
  from ssd_jax.models.config import ModelConfig

  model = config.model
  dtypes = dict(param_dtype=model.param_dtype, compute_dtype=model.compute_dtype)
  if arch:
    if arch not in ARCHS:
      raise ValueError(f"unknown --arch {arch!r}; expected one of {sorted(ARCHS)}")
    return ModelConfig.from_hf_dict(ARCHS[arch], source=f"--arch={arch}", **dtypes)
  if model.checkpoint == "random":
    return ModelConfig(**{**model.arch.to_dict(), **dtypes})
  if model.checkpoint and os.path.isfile(os.path.join(model.checkpoint, "config.json")):
    return ModelConfig.from_hf_dir(model.checkpoint, **dtypes)
  raise ValueError(f"config.model.checkpoint = {model.checkpoint!r} is not an HF directory on this host; pass "
                   f"--arch (one of {sorted(ARCHS)}) or --config.model.checkpoint=<a directory with config.json>")


def per_device_bytes(tree) -> int:
  """Bytes one device holds of a tree of ShapeDtypeStructs / arrays with NamedShardings (the largest shard)."""
  import jax
  import numpy as np

  return sum(math.prod(x.sharding.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def abstract_state(cfg, tc, mesh, rules):
  """The trainer's TrainState as ShapeDtypeStructs with the shardings its init compiles to."""
  import jax

  from ssd_jax.models.transformer import abstract_params
  from ssd_jax.train.trainer import _init_fn

  params = abstract_params(cfg, mesh, rules)
  init = _init_fn(cfg, tc, mesh, rules)
  shapes = jax.eval_shape(init, params)
  shardings = init.lower(params).compile().output_shardings
  return params, jax.tree.map(lambda s, shd: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=shd), shapes, shardings)


def abstract_batch(tc, seq_len: int, mesh, rules):
  """One global batch {BATCH_KEYS: [m, B/m, S]} as the trainer's `device_batch` places it."""
  import jax
  import jax.numpy as jnp

  from ssd_jax.train.pipeline import BATCH_KEYS
  from ssd_jax.train.trainer import batch_sharding

  m = tc.grad_accum_steps
  shape = (m, tc.global_batch_size // m, seq_len)
  shd = batch_sharding(mesh, rules, shape)
  return {k: jax.ShapeDtypeStruct(shape, jnp.float32 if k == "weights" else jnp.int32, sharding=shd)
          for k in BATCH_KEYS}, shd


# libtpu 0.0.42's out-of-memory message (the version jax[tpu]==0.10.2 pins).
_OOM = re.compile(r"required for HLO temporaries \(([\d.]+)([KMGT])\) exceeds available HBM \(([\d.]+)([KMGT])\)")
_UNITS = {"K": 1024, "M": 1024 ** 2, "G": GiB, "T": 1024 ** 4}


def _oom_numbers(message: str) -> dict[str, int]:
  """(temporaries needed, HBM available) bytes from libtpu's out-of-memory message, when it says them."""
  found = _OOM.search(message)
  if not found:
    return {}
  temp, temp_unit, hbm, hbm_unit = found.groups()
  return {"temp_needed_bytes": int(float(temp) * _UNITS[temp_unit]),
          "compiler_hbm_bytes": int(float(hbm) * _UNITS[hbm_unit])}


def compile_step(cfg, tc, mesh, rules, state, seq_len: int, options: dict[str, Any] | None = None) -> dict[str, Any]:
  """Lowers and compiles the trainer's step for one batch shape (`options`: XLA compiler options); the per-device
  memory analysis (or the out-of-memory error)."""
  import jax

  from ssd_jax.models.transformer import Sharding
  from ssd_jax.train.trainer import make_train_step, state_shardings

  batch, batch_shd = abstract_batch(tc, seq_len, mesh, rules)
  step = make_train_step(cfg, tc, Sharding(mesh, rules), state_shardings(state), batch_shd)
  t0 = time.perf_counter()
  lowered = step.lower(state, batch)
  try:
    compiled = lowered.compile(compiler_options=options)
  except jax.errors.JaxRuntimeError as e:
    message = str(e)
    if "RESOURCE_EXHAUSTED" not in message and "hbm" not in message.lower():
      raise
    return {"compile_s": round(time.perf_counter() - t0, 1), "error": message[:2000], **_oom_numbers(message)}
  stats = compiled.memory_analysis()
  out = {"argument": stats.argument_size_in_bytes, "output": stats.output_size_in_bytes,
         "alias": stats.alias_size_in_bytes, "temp": stats.temp_size_in_bytes,
         "generated_code": stats.generated_code_size_in_bytes}
  out["total"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
  out["peak"] = getattr(stats, "peak_memory_in_bytes", None)  # the compiler's own peak, where it reports one
  return {"compile_s": round(time.perf_counter() - t0, 1), "bytes_per_device": out}


def base_copy_bytes(cfg, config, devices: Sequence, local_devices: Sequence, rules) -> int:
  """Per device, the base params `stages.train` keeps while the trainer runs: with one process the sampling copy
  (the base model that evaluation scores; the state is a copy of it); with several none (the sampling copy is
  dropped and the global copy loaded for the trainer is donated to its state)."""
  from ssd_jax.models.sharding import make_mesh
  from ssd_jax.models.transformer import abstract_params

  if len(local_devices) < len(devices):
    return 0
  return per_device_bytes(abstract_params(cfg, make_mesh(dict(config.mesh), devices=local_devices), rules))


def _gib(n: int | None) -> str:
  return "?" if n is None else f"{n / GiB:.2f}"


def _row_line(row: dict) -> str:
  head = (f"seq_len {row['seq_len']} packing={row['packing']} batch {row['global_batch']} = {row['grad_accum']} x "
          f"{row['microbatch']} rows ({row['attention']}, remat {row['remat']}): ")
  hbm = _gib(row["hbm_bytes"])
  if "error" in row:
    need = row.get("temp_needed_bytes")
    return head + (f"does NOT fit: the compiler needs {_gib(need)} GiB of temporaries beside the arguments, of "
                   f"{_gib(row.get('compiler_hbm_bytes'))} GiB HBM" if need
                   else f"does NOT compile: {row['error'].splitlines()[0][:300]}")
  b = row["bytes_per_device"]
  verdict = "" if row["fits"] is None else (" fits" if row["fits"] else " does NOT fit")
  return head + (f"per device args {_gib(b['argument'])} + out {_gib(b['output'])} - alias {_gib(b['alias'])} + temp "
                 f"{_gib(b['temp'])} = {_gib(b['total'])} GiB (code {_gib(b['generated_code'])}) of {hbm} GiB HBM"
                 f"{verdict}; with the pipeline's base copy {_gib(b['total'] + row['base_copy_bytes'])} GiB")


def measure(config, topology: str, arch: str, seq_lens: Sequence[int], hbm_gib: float = 0) -> dict[str, Any]:
  """Compiles the config's train step at each row length; the result object `main` prints. `hbm_gib` > 0 (TPU):
  compile as if each chip had that much HBM."""
  import jax

  from ssd_jax import stages
  from ssd_jax.models.sharding import ShardingRules, make_mesh, topology_mesh

  devices = topology_devices(topology) if topology else jax.devices()
  platform = devices[0].platform
  # One process per host: a topology's compile-only devices carry the process (host) that would own them.
  local_devices = [d for d in devices if d.process_index == devices[0].process_index]
  processes = len({d.process_index for d in devices})
  cfg = model_config(config, arch)
  tc, _ = stages.train_settings(config, backend=platform, sinks=cfg.attention_sinks)
  if (tc.global_batch_size % processes) or (tc.global_batch_size // processes) % tc.grad_accum_steps:
    raise ValueError(f"config.train.global_batch_size = {tc.global_batch_size}: expected it to split into {processes} "
                     f"processes x config.train.grad_accum_steps = {tc.grad_accum_steps} microbatches")
  rules = ShardingRules()
  # The run's mesh: `make_mesh` over all devices orders them by the physical topology (`topology_mesh`).
  shape = make_mesh(dict(config.mesh), devices=devices).shape
  mesh = topology_mesh(tuple(shape.values()), devices)
  params, state = abstract_state(cfg, tc, mesh, rules)
  base = base_copy_bytes(cfg, config, devices, local_devices, rules)
  hbm = hbm_bytes(topology, devices)
  options = None
  if hbm_gib:
    if platform != "tpu":
      raise ValueError(f"--hbm_gib={hbm_gib}: expected 0 when compiling for {platform!r} (a TPU compiler option)")
    options, hbm = {"xla_tpu_max_hbm_size_mib": int(hbm_gib * 1024)}, int(hbm_gib * 1024) * 1024 ** 2
  result = {"config": "", "topology": topology or f"local:{platform}", "platform": platform, "hbm_gib": hbm_gib,
            "devices": len(devices), "processes": processes, "mesh": dict(mesh.shape), "model": cfg.model_type,
            "params": sum(math.prod(p.shape) for p in jax.tree.leaves(params)), "param_dtype": cfg.param_dtype,
            "state_bytes_per_device": per_device_bytes(state), "rows": []}
  for seq_len in seq_lens:
    row = {"seq_len": seq_len, "packing": bool(config.train.packing), "global_batch": tc.global_batch_size,
           "grad_accum": tc.grad_accum_steps, "microbatch": tc.global_batch_size // tc.grad_accum_steps,
           "attention": tc.attention, "remat": tc.remat, "loss_chunk_size": tc.loss_chunk_size,
           **compile_step(cfg, tc, mesh, rules, state, seq_len, options), "base_copy_bytes": base, "hbm_bytes": hbm}
    total = row.get("bytes_per_device", {}).get("total")
    row["fits"] = False if "error" in row else None if hbm is None else total <= hbm
    row["fits_pipeline"] = False if "error" in row else None if hbm is None else total + base <= hbm
    result["rows"].append(row)
    print(_row_line(row), flush=True)
  return result


def main(argv: Sequence[str]) -> dict[str, Any]:
  """Parses `argv` (program name first, as absl passes it), measures, prints the rows and the JSON line."""
  from absl import flags
  from ml_collections import config_flags

  from ssd_jax.main import unknown_override_keys

  config_path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "")
  if not config_path:
    raise ValueError("--config: expected a config file, e.g. --config=configs/qwen3_4b_instruct.py:tpu_v5p_64")
  unknown = unknown_override_keys(list(argv[1:]))
  if unknown:
    raise ValueError("unknown config keys: " + "; ".join(unknown))
  values = flags.FlagValues()
  # config_flags finds the --config.a.b overrides in `sys_argv` (not sys.argv: main may be called in-process).
  config_flag = config_flags.DEFINE_config_file("config", config_path, "Experiment config file (configs/*.py), as "
                                                "ssd_jax.main takes it; --config.a.b=value overrides.",
                                                flag_values=values, sys_argv=list(argv))
  topology = flags.DEFINE_string("topology", "", f"TPU slice to compile for: one of {sorted(TOPOLOGIES)}; "
                                 "empty: this host's devices.", flag_values=values)
  arch = flags.DEFINE_string("arch", "", f"Model shape when config.model.checkpoint is not on this host: one of "
                             f"{sorted(ARCHS)}.", flag_values=values)
  seq_lens = flags.DEFINE_list("seq_lens", [], "Row lengths to compile (default: config.train.seq_len).",
                               flag_values=values)
  hbm_gib = flags.DEFINE_float("hbm_gib", 0, "TPU only: compile as if each chip had this much HBM (libtpu's "
                               "xla_tpu_max_hbm_size_mib); 0: the chip's own. The TPU scheduler spends free HBM on "
                               "overlap, so temporaries grow with the limit; below the step's need libtpu's error "
                               "says how much it needs (a compile may still report a total above the limit).",
                               flag_values=values)
  values(list(argv))
  config = config_flag.value
  try:
    lengths = [int(s) for s in seq_lens.value] or [int(config.train.seq_len)]
  except ValueError:
    raise ValueError(f"--seq_lens={','.join(seq_lens.value)}: expected comma-separated integers") from None
  result = measure(config, topology.value, arch.value, lengths, hbm_gib.value)
  result["config"] = config_path
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  try:
    main(sys.argv)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    print(json.dumps({"error": str(e)}))
    sys.exit(2)
