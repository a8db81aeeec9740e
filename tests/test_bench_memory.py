"""The compile-time memory tool (`ssd_jax.bench.memory`) on the CPU backend at tiny size: it compiles the trainer's
own step from abstract inputs whose shardings are the real trainer's, and its numbers move with the row length."""

import json
import os

import jax
import numpy as np
import pytest

from ssd_jax.bench import memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny.py")


def test_tiny_rows_grow_with_seq_len(capsys):
  result = memory.main(["memory", f"--config={TINY}", "--seq_lens=128,256", "--config.train.grad_accum_steps=2"])
  lines = capsys.readouterr().out.strip().splitlines()
  assert json.loads(lines[-1]) == json.loads(json.dumps(result))
  assert len(lines) == 3 and lines[0].startswith("seq_len 128 packing=True batch 4 = 2 x 2 rows (xla, remat none)")
  assert result["topology"] == "local:cpu" and result["devices"] == len(jax.devices())
  short, long = result["rows"]
  assert (short["seq_len"], long["seq_len"]) == (128, 256)
  for row in (short, long):
    b = row["bytes_per_device"]
    assert min(b["argument"], b["output"], b["temp"], row["base_copy_bytes"]) > 0
    assert b["total"] == b["argument"] + b["output"] - b["alias"] + b["temp"]
    assert b["argument"] >= result["state_bytes_per_device"]  # the state is an argument, with the batch
    assert row["fits"] is None  # the CPU has no HBM to compare with
  # Twice the row length: the dense [B, H, S, S] attention and every activation grow, the state does not.
  assert long["bytes_per_device"]["temp"] > short["bytes_per_device"]["temp"]
  assert long["bytes_per_device"]["argument"] > short["bytes_per_device"]["argument"]
  assert long["bytes_per_device"]["alias"] == short["bytes_per_device"]["alias"]


def test_abstract_state_has_the_trainers_shardings():
  """The state the tool compiles against is placed exactly as a real Trainer places its state on the same mesh."""
  from ml_collections import config_dict

  from ssd_jax.models.sharding import ShardingRules, make_mesh
  from ssd_jax.models.transformer import init_params
  from ssd_jax.train.optim import TrainConfig
  from ssd_jax.train.trainer import Trainer, state_shardings

  config = config_dict.ConfigDict({"model": {"checkpoint": "random", "param_dtype": "float32",
                                             "compute_dtype": "float32",
                                             "arch": dict(model_type="qwen3", vocab_size=128, hidden_size=32,
                                                          num_layers=1, num_heads=4, num_kv_heads=2, head_dim=8,
                                                          intermediate_size=64, qk_norm=True)}})
  cfg = memory.model_config(config, "")
  mesh = make_mesh({"fsdp": 4, "tensor": 2})
  tc = TrainConfig(global_batch_size=8, grad_accum_steps=2)
  rules = ShardingRules()
  _, state = memory.abstract_state(cfg, tc, mesh, rules)
  trainer = Trainer(cfg, tc, init_params(cfg, jax.random.key(0), mesh, rules), mesh=mesh)
  real = state_shardings(trainer.state)
  assert jax.tree.structure(real) == jax.tree.structure(state)
  for ours, theirs, array in zip(jax.tree.leaves(state), jax.tree.leaves(real), jax.tree.leaves(trainer.state)):
    assert ours.sharding.is_equivalent_to(theirs, array.ndim) and ours.shape == array.shape
    assert ours.dtype == array.dtype
  # Adam's moments sit where their params do (left to the compiler, the zeros came out replicated on every device).
  adam = trainer.state.opt_state[1][0]
  for moment in (adam.mu, adam.nu):
    for m, p in zip(jax.tree.leaves(moment), jax.tree.leaves(trainer.state.params)):
      assert m.sharding.is_equivalent_to(p.sharding, p.ndim), (m.sharding, p.sharding)
  assert trainer.state.params.embed.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
  # So a device holds 1/8 of the state but the scalars and the norm scales (replicated, 4 x 32 floats each).
  whole = sum(np.asarray(x).nbytes for x in jax.tree.leaves(trainer.state))
  replicated = sum(np.asarray(x).nbytes for x in jax.tree.leaves(trainer.state) if x.sharding.is_fully_replicated)
  assert memory.per_device_bytes(state) == (whole - replicated) // 8 + replicated


def test_paper_arch_has_the_published_parameter_counts():
  from ml_collections import config_dict

  config = config_dict.ConfigDict({"model": {"checkpoint": "/nowhere", "param_dtype": "float32",
                                             "compute_dtype": "bfloat16"}})
  from ssd_jax.bench.device import param_counts

  assert param_counts(memory.model_config(config, "qwen3-4b"))[0] == 4_022_468_096
  assert round(param_counts(memory.model_config(config, "qwen3-30b-a3b"))[0] / 1e9, 2) == 30.53
  assert param_counts(memory.model_config(config, "llama3.1-8b"))[0] == 8_030_261_248
  gpt_oss = memory.model_config(config, "gpt-oss-20b")  # 20.9e9 in OpenAI's model card
  assert round(param_counts(gpt_oss)[0] / 1e9, 1) == 20.9 and gpt_oss.attention_sinks and gpt_oss.window(0) == 128
  with pytest.raises(ValueError, match="pass --arch"):
    memory.model_config(config, "")


def test_bad_flags_are_named():
  with pytest.raises(ValueError, match="unknown --topology 'v9-1'"):
    memory.main(["memory", f"--config={TINY}", "--topology=v9-1"])
  with pytest.raises(ValueError, match="--seq_lens=12x"):
    memory.main(["memory", f"--config={TINY}", "--seq_lens=12x"])
  with pytest.raises(ValueError, match="config.train has no field 'seqlen'"):
    memory.main(["memory", f"--config={TINY}", "--config.train.seqlen=5"])


def test_oom_message_numbers():
  # What libtpu 0.0.42 printed for a 2-layer Qwen3-4B step compiled for v5p-64 with --hbm_gib=1.
  message = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries (1.29G) "
             "exceeds available HBM (1.00G).")
  assert memory._oom_numbers(message) == {"temp_needed_bytes": int(1.29 * memory.GiB),
                                          "compiler_hbm_bytes": memory.GiB}
  assert memory._oom_numbers("RESOURCE_EXHAUSTED: something else") == {}


def test_hbm_limit_is_tpu_only():
  with pytest.raises(ValueError, match="--hbm_gib=8.0: expected 0 when compiling for 'cpu'"):
    memory.main(["memory", f"--config={TINY}", "--hbm_gib=8"])


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_sft_temporaries_do_not_grow_per_layer(moe):
  """Under full remat a layer adds only its saved input to the step's memory: the layers run under lax.scan, one
  layer's intermediates live at a time. (Unrolled in Python, XLA kept every layer's: +170 MiB per dense layer and
  +468 MiB per MoE layer here, the growth that made Qwen3-30B-A3B's 65,536-token step need 1.59 TiB per chip.)"""
  import importlib.util

  spec = importlib.util.spec_from_file_location("tiny_config", TINY)
  tiny = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tiny)
  seq_len, hidden, rows = 2048, 256, 8
  temps = {}
  for num_layers in (2, 6):
    config = tiny.get_config()
    config.model.arch.update(dict(num_layers=num_layers, hidden_size=hidden, intermediate_size=512, head_dim=64))
    if moe:
      config.model.arch.update(dict(model_type="qwen3_moe", num_experts=16, num_experts_per_tok=4,
                                    moe_intermediate_size=128))
      config.mesh.update(dict(fsdp=2, expert=4))
    config.train.update(dict(remat="full", global_batch_size=rows, packing=True))
    result = memory.measure(config, "", "", [seq_len])
    temps[num_layers] = result["rows"][0]["bytes_per_device"]["temp"]
  layer_input = rows // result["devices"] * seq_len * hidden * 4  # one device's f32 residual stream
  growth = (temps[6] - temps[2]) / 4
  print(f"temporaries {temps[2] / 2**20:.1f} MiB at 2 layers, {temps[6] / 2**20:.1f} at 6: "
        f"{growth / 2**20:.2f} MiB per layer (a layer's input: {layer_input / 2**20:.2f} MiB)")
  assert growth <= 3 * layer_input
