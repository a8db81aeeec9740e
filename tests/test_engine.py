"""The decode engine: greedy exactness, stop handling, shared prefill, refill invariance, sharding."""

import jax
import numpy as np
import pytest

import tiny_hf
from ssd_jax.models import hf, transformer
from ssd_jax.models.sharding import ShardingRules, make_mesh
from ssd_jax.sampling import engine as engine_lib
from ssd_jax.sampling.engine import Engine, EngineConfig, Request
from ssd_jax.sampling.sampler import SamplingConfig

_forward = jax.jit(transformer.forward, static_argnames=("cfg",))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  path = tiny_hf.save(tiny_hf.make_model("qwen3", seed=11, vocab_size=128), str(tmp_path_factory.mktemp("q")))
  return hf.load_hf(path, param_dtype="float32")


def _prompts(cfg, lengths, seed=0):
  rng = np.random.RandomState(seed)
  return [rng.randint(3, cfg.vocab_size, n).tolist() for n in lengths]


def _greedy_reference(params, cfg, prompt, steps, width=48):
  """Step-by-step argmax of the full forward (right-padded to one width: causal, so pads change nothing)."""
  seq = list(prompt)
  for _ in range(steps):
    tokens = np.zeros((1, width), np.int32)
    tokens[0, :len(seq)] = seq
    segments = (np.arange(width) < len(seq)).astype(np.int32)[None]
    seq.append(int(np.asarray(_forward(params, tokens, segments, cfg=cfg))[0, len(seq) - 1].argmax()))
  return seq[len(prompt):]


ECFG = EngineConfig(batch_size=4, max_seq_len=256, chunk_steps=4, page_size=4, prefill_chunk=16)


def test_greedy_equals_argmax_of_full_forward(model):
  cfg, params = model
  prompts = _prompts(cfg, [5, 11, 3])
  out = Engine(params, cfg, stop_ids=[], engine_cfg=ECFG).generate(
      [Request(p, sampling=SamplingConfig(max_new_tokens=9, temperature=0.0)) for p in prompts])
  for prompt, (completion,) in zip(prompts, out):
    assert completion.tokens == _greedy_reference(params, cfg, prompt, 9)
    assert completion.finish_reason == "length"


def test_stop_token_mid_batch(model):
  cfg, params = model
  prompts = _prompts(cfg, [6, 6, 9], seed=1)
  refs = [_greedy_reference(params, cfg, p, 12) for p in prompts]
  stop = refs[0][3]  # row 0 stops at its 4th token (or earlier if the token appears before)
  out = Engine(params, cfg, stop_ids=[stop], engine_cfg=ECFG).generate(
      [Request(p, sampling=SamplingConfig(max_new_tokens=12, temperature=0.0)) for p in prompts])
  for ref, (completion,) in zip(refs, out):
    if stop in ref:
      expected = ref[:ref.index(stop) + 1]
      assert completion.finish_reason == "stop"
    else:
      expected = ref
      assert completion.finish_reason == "length"
    assert completion.tokens == expected
  assert out[0][0].num_tokens <= 4


def test_n_samples_share_one_prefill(model):
  cfg, params = model
  engine = Engine(params, cfg, stop_ids=[], engine_cfg=ECFG)
  sampling = SamplingConfig(temperature=1.0, max_new_tokens=6)
  (samples,) = engine.generate([Request(_prompts(cfg, [7])[0], n=4, sampling=sampling)], seed=3)
  assert engine.stats["prefill_calls"] == 1 and engine.stats["prefill_rows"] == 1
  assert [c.sample_index for c in samples] == [0, 1, 2, 3]
  assert len({tuple(c.tokens) for c in samples}) > 1  # distinct random streams
  # 7 prompt + 5 cached answer tokens = 12 per sample, 3 pages of 4 alone; sharing the full prompt page saves 3.
  assert engine.stats["peak_pages"] == 4 * 3 - 3


def test_refilled_rows_equal_a_run_without_refill(model):
  cfg, params = model
  prompts = _prompts(cfg, [4, 9, 13, 6, 2], seed=2)
  requests = [Request(p, n=2, sampling=SamplingConfig(max_new_tokens=3 + 4 * i, temperature=0.9, top_k=20, top_p=0.9))
              for i, p in enumerate(prompts)]
  small = Engine(params, cfg, stop_ids=[], engine_cfg=ECFG.__class__(**{**ECFG.__dict__, "batch_size": 2}))
  big = Engine(params, cfg, stop_ids=[], engine_cfg=ECFG.__class__(**{**ECFG.__dict__, "batch_size": 16}))
  out_small = small.generate(requests, seed=5)
  out_big = big.generate(requests, seed=5)
  assert small.stats["prefill_calls"] > 1  # rows really were refilled
  for a, b in zip(out_small, out_big):
    assert [c.tokens for c in a] == [c.tokens for c in b]


def test_decode_compiles_once_across_sampling_parameters(model):
  cfg, params = model
  ecfg = EngineConfig(batch_size=3, max_seq_len=128, chunk_steps=3, page_size=8)  # shapes of its own
  engine = Engine(params, cfg, stop_ids=[], engine_cfg=ecfg)
  prompt = _prompts(cfg, [5])[0]
  before = engine_lib._decode._cache_size(), engine_lib._insert._cache_size()
  for t, k, p in [(0.0, 0, 1.0), (0.7, 20, 0.8), (1.6, 5, 0.95), (1.0, 0, 0.5), (0.3, 50, 1.0)]:
    engine.generate([Request(prompt, sampling=SamplingConfig(max_new_tokens=5, temperature=t, top_k=k, top_p=p))])
  after = engine_lib._decode._cache_size(), engine_lib._insert._cache_size()
  assert (after[0] - before[0], after[1] - before[1]) == (1, 1)


def test_eight_devices_equal_one(model):
  cfg, params = model
  prompts = _prompts(cfg, [5, 12, 8, 3], seed=4)
  sampling = SamplingConfig(temperature=1.0, top_k=10, top_p=0.9, max_new_tokens=7)
  requests = [Request(p, n=2, sampling=sampling) for p in prompts]
  ecfg = EngineConfig(batch_size=8, max_seq_len=256, chunk_steps=4, page_size=4, prefill_chunk=8)
  ref = Engine(params, cfg, stop_ids=[], engine_cfg=ecfg).generate(requests, seed=9)
  mesh = make_mesh({"data": 2, "tensor": 4})
  rules = ShardingRules()
  sharded_params = jax.device_put(params, transformer.param_shardings(cfg, mesh, rules))
  out = Engine(sharded_params, cfg, stop_ids=[], engine_cfg=ecfg,
               sharding=transformer.Sharding(mesh, rules)).generate(requests, seed=9)
  assert [[c.tokens for c in r] for r in out] == [[c.tokens for c in r] for r in ref]


def test_a_request_that_can_never_fit_is_refused_up_front(model):
  cfg, params = model
  engine = Engine(params, cfg, stop_ids=[], engine_cfg=EngineConfig(**{**ECFG.__dict__, "kv_pages": 30}))
  ok = Request(list(range(3, 13)), sampling=SamplingConfig(max_new_tokens=4))
  with pytest.raises(ValueError, match=r"request 1: prompt of 40 tokens \+ max_new_tokens 200 = 240 tokens "
                                       r"\(60 pages of 4\) cannot fit: the KV pool holds 30 pages"):
    engine.generate([ok, Request(list(range(3, 43)), sampling=SamplingConfig(max_new_tokens=200))])
  assert engine.stats["prefill_calls"] == 0  # refused before any work


def test_a_pool_that_forces_preemption_gives_the_tokens_of_an_ample_one(model):
  cfg, params = model
  prompts = _prompts(cfg, [9, 14, 5, 11, 7, 3], seed=6)
  sampling = SamplingConfig(temperature=1.0, top_k=20, top_p=0.95, max_new_tokens=24)
  requests = [Request(p, n=2, sampling=sampling) for p in prompts]
  ample = Engine(params, cfg, stop_ids=[], engine_cfg=EngineConfig(**{**ECFG.__dict__, "batch_size": 8}))
  tight = Engine(params, cfg, stop_ids=[], engine_cfg=EngineConfig(**{**ECFG.__dict__, "batch_size": 8,
                                                                     "kv_pages": 24}))
  want = ample.generate(requests, seed=11)
  got = tight.generate(requests, seed=11)  # generate itself checks that every page is back in the pool
  assert ample.stats["preemptions"] == 0 and tight.stats["preemptions"] > 0
  assert tight.stats["peak_pages"] <= 24
  assert [[c.tokens for c in r] for r in got] == [[c.tokens for c in r] for r in want]


def test_prompts_prefilled_in_chunks_equal_one_chunk(model):
  cfg, params = model
  prompts = _prompts(cfg, [37, 5, 22], seed=7)
  requests = [Request(p, n=2, sampling=SamplingConfig(max_new_tokens=6, temperature=1.0, top_k=20)) for p in prompts]
  whole = Engine(params, cfg, stop_ids=[], engine_cfg=EngineConfig(**{**ECFG.__dict__, "prefill_chunk": 64}))
  chunked = Engine(params, cfg, stop_ids=[], engine_cfg=EngineConfig(**{**ECFG.__dict__, "prefill_chunk": 8,
                                                                       "prefill_rows": 1}))
  want = whole.generate(requests, seed=2)
  got = chunked.generate(requests, seed=2)
  assert whole.stats["prefill_rows"] == 3
  assert chunked.stats["prefill_rows"] == 5 + 1 + 3  # 37 tokens in chunks of 8, then 5, then 22
  assert [[c.tokens for c in r] for r in got] == [[c.tokens for c in r] for r in want]
  greedy = chunked.generate([Request(prompts[0], sampling=SamplingConfig(max_new_tokens=5, temperature=0.0))])
  assert greedy[0][0].tokens == _greedy_reference(params, cfg, prompts[0], 5)


def test_rows_give_the_tokens_of_pages(model):
  cfg, params = model
  prompts = _prompts(cfg, [9, 3, 14, 6, 21], seed=8)
  requests = [Request(p, n=2, sampling=SamplingConfig(max_new_tokens=4 + 3 * i, temperature=1.0, top_k=20, top_p=0.9))
              for i, p in enumerate(prompts)]
  ecfg = EngineConfig(**{**ECFG.__dict__, "batch_size": 3})  # refills: rows are staged into reused slots
  rows = Engine(params, cfg, stop_ids=[], engine_cfg=EngineConfig(**{**ecfg.__dict__, "decode_attention": "rows"}))
  pages = Engine(params, cfg, stop_ids=[], engine_cfg=EngineConfig(**{**ecfg.__dict__,
                                                                     "decode_attention": "reference"}))
  assert (rows.decode_impl, pages.decode_impl) == ("rows", "reference")
  got, want = rows.generate(requests, seed=4), pages.generate(requests, seed=4)
  assert [[c.tokens for c in r] for r in got] == [[c.tokens for c in r] for r in want]


def test_rows_apply_only_where_they_can(model):
  cfg, params = model
  int8 = EngineConfig(**{**ECFG.__dict__, "kv_dtype": "int8"})
  assert Engine(params, cfg, stop_ids=[], engine_cfg=int8).decode_impl == "reference"  # "auto" falls back
  with pytest.raises(ValueError, match="decode_attention 'rows' does not apply: int8 pages"):
    Engine(params, cfg, stop_ids=[], engine_cfg=EngineConfig(**{**int8.__dict__, "decode_attention": "rows"}))
  huge = EngineConfig(**{**ECFG.__dict__, "batch_size": 4096, "max_seq_len": 65536, "kv_pages": 64})
  assert Engine(params, cfg, stop_ids=[], engine_cfg=huge).decode_impl == "reference"
  with pytest.raises(ValueError, match="unknown decode_attention 'dense'"):
    Engine(params, cfg, stop_ids=[], engine_cfg=EngineConfig(**{**ECFG.__dict__, "decode_attention": "dense"}))


def test_slots_are_filled_before_decoding_and_refilled_as_they_free(model):
  cfg, params = model
  prompts = _prompts(cfg, [5, 8, 3, 6], seed=9)
  requests = [Request(p, sampling=SamplingConfig(max_new_tokens=m, temperature=1.0))
              for p, m in zip(prompts, [3, 9, 5, 7])]
  ecfg = EngineConfig(batch_size=2, max_seq_len=64, chunk_steps=16, page_size=4, prefill_rows=1)
  engine = Engine(params, cfg, stop_ids=[], engine_cfg=ecfg)
  out = engine.generate(requests, seed=1)
  # Decode steps per request (the first token comes from the prefill): 2, 8, 4, 6. Both slots start busy (two
  # one-row prefills before the first chunk); a chunk ends when a slot frees while a request waits: slot A runs
  # 2 + 4 + 6 steps, slot B 8, so 12 steps carry 20 tokens. Without the refill, the first chunk runs 8 steps and
  # the second 6 (14); without filling both slots first, the first chunk runs request 0 alone.
  assert engine.stats["prefill_calls"] == 4
  assert (engine.stats["decode_steps"], engine.stats["decode_tokens"]) == (12, 20)
  assert [c.num_tokens for (c,) in out] == [3, 9, 5, 7]
  big = Engine(params, cfg, stop_ids=[], engine_cfg=EngineConfig(**{**ecfg.__dict__, "batch_size": 8}))
  assert [[c.tokens for c in r] for r in big.generate(requests, seed=1)] == [[c.tokens for c in r] for r in out]


def test_whole_prompts_are_packed_into_a_power_of_two_of_rows(model):
  cfg, params = model
  prompts = _prompts(cfg, [12, 12, 12, 3], seed=10)
  engine = Engine(params, cfg, stop_ids=[], engine_cfg=EngineConfig(**{**ECFG.__dict__, "batch_size": 8}))
  out = engine.generate([Request(p, sampling=SamplingConfig(max_new_tokens=3, temperature=0.0)) for p in prompts])
  # Rows of 16 tokens: [12 + 3], [12], [12]; two rows run, the third prompt waits for a second call.
  assert engine.pack_prefill
  assert (engine.stats["prefill_calls"], engine.stats["prefill_rows"]) == (2, 4)
  for prompt, (completion,) in zip(prompts, out):
    assert completion.tokens == _greedy_reference(params, cfg, prompt, 3)


@pytest.mark.slow
def test_smollm2_greedy_matches_transformers_for_64_tokens():
  import os

  import torch
  import transformers

  from ssd_jax.models import loader
  from ssd_jax.models.gguf import smollm2_gguf_path

  path = smollm2_gguf_path()
  model = loader.load_model(path, param_dtype="float32")
  prompt = model.tokenizer.apply_chat_template(
      [{"role": "user", "content": "Write a Python function that returns the n-th Fibonacci number."}],
      add_generation_prompt=True, tokenize=True)
  ((ours,),) = Engine(model.params, model.cfg, stop_ids=[], engine_cfg=EngineConfig(batch_size=1)).generate(
      [Request(prompt, sampling=SamplingConfig(max_new_tokens=64, temperature=0.0))])
  reference = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()
  ids = torch.tensor([prompt])
  with torch.no_grad():
    out = reference.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=64,
                             min_new_tokens=64, pad_token_id=0)
  assert ours.tokens == out[0, len(prompt):].tolist()
