"""CPU smoke run of the accelerator benchmark at toy size: both phases run and the JSON line is complete."""

import json
import os
import subprocess
import sys

import pytest

from ssd_jax.bench import device


@pytest.mark.slow
def test_device_bench_toy_cpu(capsys):
  result = device.main(["--size", "toy", "--decode-batch", "4", "--prompt-tokens", "16", "--new-tokens", "8",
                        "--chunk-steps", "4", "--train-batch", "2", "--seq", "32", "--train-steps", "2",
                        "--matmul-n", "128", "--copy-mb", "4"])
  last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert last == json.loads(json.dumps(result))
  assert last["decode"]["tokens"] == 4 * 8 and last["decode"]["decode_steps"] == 7
  assert last["train"]["loss_last"] < last["train"]["loss_first"]
  # CPU has no datasheet entry: no roofline or MFU is invented for it.
  assert "mfu" not in last["train"] and "roofline_tokens_per_s" not in last["decode"]
  assert last["train"]["matmul_params"] == 64 * 512 + 2 * (64 * 4 * 16 * 2 + 64 * 2 * 16 * 2 + 3 * 64 * 128)


def test_qwen3_4b_shape_has_4b_params():
  total, matmul = device.param_counts(device.model_config("qwen3-4b", "bfloat16"))
  assert total == 4_022_468_096  # Qwen3-4B's published parameter count (tied embeddings)
  assert matmul == total - 196_096  # all but the norm scales: 36 * (2 * 2560 + 2 * 128) + 2560


@pytest.mark.slow
def test_device_decode_script_smoke(tmp_path):
  """launch/device_decode.sh (issue 14's device measurements) runs its steps at toy sizes and leaves one JSON file
  per model."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(["bash", os.path.join(root, "launch", "device_decode.sh")], capture_output=True, text=True,
                        env={**os.environ, "SMOKE": "1", "OUT": str(tmp_path), "PY": sys.executable}, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for size in ("toy", "toy-moe"):
    result = json.loads((tmp_path / f"device_decode_{size}.json").read_text())
    assert result["decode"]["tokens"] == 8 * 8 and result["size"] == size


@pytest.mark.slow
def test_device_sft_script_smoke(tmp_path):
  """launch/device_sft.sh (issue 17's device measurements) runs its four SFT steps at toy sizes, one JSON per run."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(["bash", os.path.join(root, "launch", "device_sft.sh")], capture_output=True, text=True,
                        env={**os.environ, "SMOKE": "1", "OUT": str(tmp_path), "PY": sys.executable}, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert json.loads(proc.stdout.strip().splitlines()[-1])["failed"] == 0, proc.stdout
  expected = {"unpacked_8x8": (8, 1, "params"), "packed_8x32": (32, 8, "params"), "packed_1x64": (64, 16, "params"),
              "packed_8x32_bf16_master": (32, 8, "bf16_params_f32_master")}
  for name, (seq, segments, precision) in expected.items():
    train = json.loads((tmp_path / f"device_sft_{name}.json").read_text())["train"]
    assert (train["seq"], train["segments"], train["precision"]) == (seq, segments, precision)
    assert train["flops_per_token_causal"] < train["flops_per_token"]
