"""A tiny random qwen3 model with a SentencePiece ChatML tokenizer, and a synthesis entry point for subprocess tests.

`python tests/synth_helper.py OUT_DIR TOKENIZER.model PROMPTS.jsonl SHARD_SIZE [SLEEP_S]` runs `synthesize` over a
plain-JSONL prompt file; SLEEP_S pauses after each committed shard so that a test can SIGKILL the run mid-way.
With SSD_COORDINATOR / SSD_NUM_PROCESSES / SSD_PROCESS_ID set it first joins a jax.distributed job.
"""

from __future__ import annotations

import dataclasses
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from ssd_jax.data.sources import SourceSpec, load_source  # noqa: E402
from ssd_jax.data.synthesis import DegeneracyRule, SynthesisConfig, synthesize  # noqa: E402
from ssd_jax.models.config import ModelConfig  # noqa: E402
from ssd_jax.models.loader import LoadedModel  # noqa: E402
from ssd_jax.models.tokenizer import CHATML_TEMPLATE, Tokenizer, train_sentencepiece  # noqa: E402
from ssd_jax.models.transformer import init_params  # noqa: E402
from ssd_jax.sampling.engine import EngineConfig  # noqa: E402
from ssd_jax.sampling.sampler import SamplingConfig  # noqa: E402

TRAINING_TEXT = """def solve():
    n = int(input())
    a = list(map(int, input().split()))
    print(sum(a) % n)
class Solution:
    def twoSum(self, nums: List[int], target: int) -> List[int]:
        seen = {}
        for i, x in enumerate(nums):
            if target - x in seen:
                return [seen[target - x], i]
You will be given a question (problem specification) and will generate a correct Python program.
Read the inputs from stdin solve the problem and write the answer to stdout.
Given an array of integers, return the number of pairs whose sum is even. Constraints: 1 <= N <= 10^5.
### Question: ### Format: ### Answer: (use the provided format with backticks) ```python # YOUR CODE HERE ```
system user assistant
"""

ENGINE = EngineConfig(batch_size=4, max_seq_len=640, chunk_steps=8, page_size=8, prefill_chunk=256)
CONFIG = SynthesisConfig(SamplingConfig(temperature=1.0, top_k=20, top_p=0.95, max_new_tokens=24), seed=7, shard_size=2,
                         degeneracy=DegeneracyRule(min_lines=2), engine=ENGINE)


def tokenizer_bytes() -> bytes:
  return train_sentencepiece(TRAINING_TEXT * 4, vocab_size=400)


def tiny_model(tok_bytes: bytes) -> LoadedModel:
  tok = Tokenizer.from_sentencepiece(tok_bytes, chat_template=CHATML_TEMPLATE)
  cfg = ModelConfig(model_type="qwen3", vocab_size=tok.vocab_size, hidden_size=32, num_layers=1, num_heads=2,
                    num_kv_heads=1, head_dim=16, intermediate_size=64, qk_norm=True, tie_word_embeddings=True,
                    max_position_embeddings=1024, eos_token_ids=tuple(tok.stop_ids), param_dtype="float32",
                    compute_dtype="float32")
  return LoadedModel(cfg, init_params(cfg, jax.random.PRNGKey(0)), tok, "tiny-random-qwen3")


def main(argv: list[str]) -> None:
  if os.environ.get("SSD_COORDINATOR"):  # one of several real processes (jax.distributed on localhost)
    jax.distributed.initialize(os.environ["SSD_COORDINATOR"], num_processes=int(os.environ["SSD_NUM_PROCESSES"]),
                               process_id=int(os.environ["SSD_PROCESS_ID"]))
  out_dir, tok_path, prompts_path, shard_size = argv[1:5]
  sleep_s = float(argv[5]) if len(argv) > 5 else 0.0
  with open(tok_path, "rb") as f:
    model = tiny_model(f.read())
  records, report = load_source(SourceSpec("jsonl", prompts_path))
  config = dataclasses.replace(CONFIG, shard_size=int(shard_size))

  def pause(_k: int, _path: str) -> None:
    if sleep_s:
      import time  # pylint: disable=import-outside-toplevel
      time.sleep(sleep_s)

  synthesize(model, records, out_dir, config, source_reports=[report], after_shard=pause)


if __name__ == "__main__":
  main(sys.argv)
