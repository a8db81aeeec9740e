"""A sample depends only on (seed, request identity, sample index): not on the batch, the order, the engine shape,
the shard size or the subset of prompts it is sampled with (engine, synthesis and evaluation)."""

import dataclasses
import hashlib
import json
import os

import jax
import numpy as np
import pytest

import synth_helper
from ssd_jax.data.sources import PromptRecord
from ssd_jax.data.synthesis import PLAN, SynthesisError, read_samples, synthesize
from ssd_jax.eval.evaluate import EvalSampling, sample_completions
from ssd_jax.data.synthetic import synthetic_problems
from ssd_jax.sampling.engine import Engine, EngineConfig, Request, stream_id_of
from ssd_jax.sampling.sampler import SamplingConfig, row_keys, sequence_keys

ENGINE = synth_helper.ENGINE  # batch 4, chunk 8
OTHER_SHAPE = EngineConfig(batch_size=2, max_seq_len=640, chunk_steps=3, page_size=16, prefill_chunk=64, kv_pages=40)


@pytest.fixture(scope="module")
def tok_bytes():
  return synth_helper.tokenizer_bytes()


@pytest.fixture(scope="module")
def model(tok_bytes):
  return synth_helper.tiny_model(tok_bytes)


def _prompts(vocab: int, lengths, seed: int = 0) -> list[list[int]]:
  rng = np.random.RandomState(seed)
  return [rng.randint(3, vocab, n).tolist() for n in lengths]


def _request(prompt, stream_id=None, max_new_tokens=10):
  sampling = SamplingConfig(temperature=1.0, top_k=50, top_p=0.95, max_new_tokens=max_new_tokens)
  return Request(prompt, n=2, sampling=sampling, stream_id=stream_id)


def _tokens(completions) -> list[list[int]]:
  return [c.tokens for c in completions]


def test_stream_ids_are_64_bit_sha256_prefixes():
  assert stream_id_of("p1") == int.from_bytes(hashlib.sha256(b"p1").digest()[:8], "big")
  assert stream_id_of("p1") != stream_id_of("p2") and 2 ** 32 <= stream_id_of("p1") < 2 ** 64


def test_sequence_keys_use_both_halves_and_the_sample_index():
  data = lambda keys: np.asarray(jax.random.key_data(keys))
  halves = np.array([[0, 7], [1, 7], [0, 7]], np.uint32)  # ids 7, 2**32 + 7, 7
  keys = data(sequence_keys(5, halves, np.array([0, 0, 1])))
  assert len({tuple(k) for k in keys}) == 3  # the high half and the sample index each change the stream
  np.testing.assert_array_equal(data(sequence_keys(5, np.array([7], np.uint32), 0)), keys[:1])  # [B] ids: hi = 0
  np.testing.assert_array_equal(data(row_keys(5, halves, 4, np.array([0, 0, 1]))),
                                data(jax.vmap(jax.random.fold_in)(sequence_keys(5, halves, [0, 0, 1]),
                                                                  np.full(3, 4, np.uint32))))


def test_engine_samples_do_not_depend_on_batch_order_or_shape(model):
  cfg, params = model.cfg, model.params
  a, *others = _prompts(cfg.vocab_size, [9, 40, 3, 100, 17], seed=1)
  target = _request(a, stream_id=stream_id_of("problem/a"))
  alone = Engine(params, cfg, [], ENGINE).generate([target], seed=3)[0]
  assert alone[0].tokens != alone[1].tokens  # each sample index is its own stream
  # Another stream id, same prompt: different samples, so the checks below are not vacuous.
  moved = Engine(params, cfg, [], ENGINE).generate([_request(a, stream_id=stream_id_of("problem/b"))], seed=3)[0]
  assert _tokens(moved) != _tokens(alone)
  crowd = [_request(p, stream_id=stream_id_of(f"other/{i}"), max_new_tokens=3 + 2 * i) for i, p in enumerate(others)]
  calls = [(ENGINE, crowd[:2] + [target] + crowd[2:]), (ENGINE, [target, *crowd[::-1]]),
           (OTHER_SHAPE, [*crowd, target])]  # 2 slots: the target is inserted after refills, in chunks of 3
  for ecfg, requests in calls:
    out = Engine(params, cfg, [], ecfg).generate(requests, seed=3)
    assert _tokens(out[requests.index(target)]) == _tokens(alone), ecfg
  other_seed = Engine(params, cfg, [], ENGINE).generate([target], seed=4)[0]
  assert _tokens(other_seed) != _tokens(alone)


def test_default_stream_is_the_prompt_not_the_position(model):
  cfg, params = model.cfg, model.params
  a, b, c = _prompts(cfg.vocab_size, [12, 5, 30], seed=2)
  engine = Engine(params, cfg, [], ENGINE)
  alone = engine.generate([_request(a)], seed=0)[0]
  last = engine.generate([_request(b), _request(c), _request(a)], seed=0)
  assert _tokens(last[2]) == _tokens(alone)
  assert _tokens(last[0]) != _tokens(engine.generate([_request(b, stream_id=0)], seed=0)[0])


def test_out_of_range_stream_id_is_refused(model):
  engine = Engine(model.params, model.cfg, [], ENGINE)
  with pytest.raises(ValueError, match=r"request 0: stream_id must be in \[0, 2\*\*64\)"):
    engine.generate([Request([5, 6], stream_id=2 ** 64)])


def _texts(out_dir: str) -> dict[str, str]:
  return {r["id"]: r["messages"][-1]["content"] for r in read_samples(out_dir, kept_only=False)}


def test_synthesis_texts_do_not_depend_on_shard_size_or_subset(model, tmp_path):
  records = [PromptRecord(f"p{i}", f"def solve():\n    n = int(input())  # case {i}\n", "", "jsonl",
                          {"raw_prompt": True}) for i in range(5)]
  full = _texts_of_run(model, records, str(tmp_path / "full"), shard_size=2)
  subset = _texts_of_run(model, [records[4], records[1], records[3]], str(tmp_path / "subset"), shard_size=3)
  assert subset == {k: full[k] for k in subset}
  assert len(set(full.values())) == len(full)  # distinct prompts, distinct streams: not a degenerate model
  # A directory planned under another random-stream scheme (plans without the entry predate it) is refused.
  plan_path = tmp_path / "full" / PLAN
  plan = json.loads(plan_path.read_text())
  assert "stream_id_of(prompt id)" in plan["random_stream"]
  del plan["random_stream"]
  plan_path.write_text(json.dumps(plan))
  with pytest.raises(SynthesisError, match=r"differs in \['random_stream'\]"):
    synthesize(model, records, str(tmp_path / "full"), dataclasses.replace(synth_helper.CONFIG, shard_size=2))


def _texts_of_run(model, records, out_dir: str, shard_size: int) -> dict[str, str]:
  synthesize(model, records, out_dir, dataclasses.replace(synth_helper.CONFIG, shard_size=shard_size))
  assert os.path.exists(os.path.join(out_dir, PLAN))
  return _texts(out_dir)


def test_evaluation_answers_do_not_depend_on_the_problem_list(model):
  problems = synthetic_problems(4)
  sampling = EvalSampling(SamplingConfig(temperature=1.0, top_k=50, top_p=0.95, max_new_tokens=12), n=2, seed=5)
  engine = Engine(model.params, model.cfg, model.tokenizer.stop_ids, ENGINE)
  texts, reasons = sample_completions(engine, model.tokenizer, problems, sampling)
  sub_texts, sub_reasons = sample_completions(engine, model.tokenizer, [problems[3], problems[1]], sampling)
  assert sub_texts == {p: texts[p] for p in sub_texts} and sub_reasons == {p: reasons[p] for p in sub_reasons}
  assert any(a != b for a, b in texts.values())  # the two samples of a problem are distinct streams
