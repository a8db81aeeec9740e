"""The user-facing commands: the parity tool and the loader's checks (the pipeline entry point: test_main.py)."""

import json
import os
import subprocess
import sys

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

import tiny_hf
from ssd_jax.models import loader
from ssd_jax.models.tokenizer import TokenizerError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, timeout=300):
  env = {**os.environ, "XLA_FLAGS": ""}
  proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT, env=env,
                        timeout=timeout)
  return proc.returncode, proc.stdout, proc.stderr


def test_parity_tool_on_hf_dir(tmp_path):
  path = tiny_hf.save(tiny_hf.make_model("qwen3_moe"), str(tmp_path / "m"), sharded=True)
  rc, out, err = _run("ssd_jax.tools.parity", "--hf-dir", path, "--seq-len", "16")
  result = json.loads(out.strip().splitlines()[-1])
  assert rc == 0, err
  assert result["ok"] and result["max_abs_logit_diff"] <= 1e-4 and result["top1_agreement"] == 1.0
  rc, out, _ = _run("ssd_jax.tools.parity", "--hf-dir", path, "--seq-len", "16", "--tolerance", "-1")
  assert rc == 1 and json.loads(out.strip().splitlines()[-1])["ok"] is False


def _write_tokenizer(path, vocab_size):
  vocab = {f"t{i}": i for i in range(vocab_size)}
  tok = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.save(os.path.join(path, "tokenizer.json"))
  with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
    json.dump({"eos_token": "t2", "bos_token": "t1"}, f)


def test_loader_rejects_a_tokenizer_larger_than_the_vocab(tmp_path):
  path = tiny_hf.save(tiny_hf.make_model("llama"), str(tmp_path / "m"))
  _write_tokenizer(path, 200)  # the model has 96 embedding rows
  with pytest.raises(TokenizerError, match=r"tokenizer\.json has 200 ids .* vocab size 96"):
    loader.load_model(path, param_dtype="float32")
  _write_tokenizer(path, 90)
  model = loader.load_model(path, param_dtype="float32")
  assert model.cfg.vocab_size == 96 and model.tokenizer.vocab_size == 90


def test_loader_names_what_it_cannot_load(tmp_path):
  with pytest.raises(FileNotFoundError, match="not a checkpoint"):
    loader.load_model(str(tmp_path))
