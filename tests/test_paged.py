"""The paged KV cache: attention over pages equals dense attention, jax's Pallas kernels (interpret mode) equal the
reference, and prefill + decode through `transformer.extend` equal the full forward for every family."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import paged_run
import tiny_hf
from ssd_jax.models import hf, layers, paged, transformer
from ssd_jax.models.sharding import ShardingRules, make_mesh

_forward = jax.jit(transformer.forward, static_argnames=("cfg",))


def _scatter(rng, lengths, k_heads, page, pps, num_pages, dh):
  """Random keys/values per row, written into randomly chosen distinct pages -> (dense k, v [B, K, T, Dh], pool,
  page table)."""
  b = len(lengths)
  t = pps * page
  k = rng.standard_normal((b, k_heads, t, dh)).astype(np.float32)
  v = rng.standard_normal((b, k_heads, t, dh)).astype(np.float32)
  perm = rng.permutation(num_pages)[:b * pps].reshape(b, pps)
  k_pages = np.zeros((k_heads, num_pages, page, dh), np.float32)
  v_pages = np.zeros_like(k_pages)
  for row in range(b):
    for j in range(pps):
      k_pages[:, perm[row, j]] = k[row, :, j * page:(j + 1) * page]
      v_pages[:, perm[row, j]] = v[row, :, j * page:(j + 1) * page]
  return k, v, jnp.asarray(k_pages), jnp.asarray(v_pages), jnp.asarray(perm, jnp.int32)


def _dense(q, k, v, start, kv_len):
  """Causal masked attention over the dense keys: query c of row b at start[b] + c sees keys < kv_len[b]."""
  b, c = q.shape[:2]
  t = k.shape[2]
  q_pos = np.asarray(start)[:, None] + np.arange(c)[None, :]
  key = np.arange(t)[None, None, :]
  mask = (key <= q_pos[:, :, None]) & (key < np.asarray(kv_len)[:, None, None])
  return np.asarray(layers.attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(mask)))


@pytest.mark.parametrize("c", [1, 5])
def test_reference_equals_dense_attention(c):
  rng = np.random.default_rng(0)
  page, pps, k_heads, h, dh = 4, 6, 2, 8, 16
  # Lengths on and off page boundaries, a full table, a single token, and an empty (padding) row.
  kv_len = np.array([7, 8, 24, 1 if c == 1 else 5, 13, 0], np.int32)
  k, v, k_pages, v_pages, table = _scatter(rng, kv_len, k_heads, page, pps, 64, dh)
  q = rng.standard_normal((len(kv_len), c, h, dh)).astype(np.float32)
  start = np.maximum(kv_len - c, 0).astype(np.int32)
  for block_pages in (1, 2, 3):
    out = paged.attention(jnp.asarray(q), k_pages, v_pages, table, jnp.asarray(start), jnp.asarray(kv_len),
                          block_pages=block_pages)
    want = _dense(q, k, v, start, kv_len)
    live = kv_len > 0
    assert np.abs(np.asarray(out)[live] - want[live]).max() <= 1e-5
    assert np.all(np.asarray(out)[~live] == 0)


@pytest.mark.parametrize("backend", ["pallas_gpu", "pallas_tpu"])
def test_pallas_decode_kernels_in_interpret_mode_equal_the_reference(backend):
  rng = np.random.default_rng(1)
  page, pps, k_heads, h, dh = 16, 8, 2, 8, 128
  kv_len = np.array([1, 16, 17, 100, 128], np.int32)
  _, _, k_pages, v_pages, table = _scatter(rng, kv_len, k_heads, page, pps, 48, dh)
  # The TPU kernel computes in bfloat16: inputs exact in bfloat16 (q after the 1/sqrt(Dh) scaling) make any
  # difference the kernel's own.
  bf16 = lambda x: jnp.asarray(x).astype(jnp.bfloat16).astype(jnp.float32)  # noqa: E731
  k_pages, v_pages = bf16(k_pages), bf16(v_pages)
  q = bf16(rng.standard_normal((len(kv_len), 1, h, dh))) * math.sqrt(dh)
  args = (q, k_pages, v_pages, table, jnp.asarray(kv_len - 1), jnp.asarray(kv_len))
  want = np.asarray(paged.attention(*args))
  if backend == "pallas_tpu":
    from jax.experimental.pallas import tpu as pltpu
    with pltpu.force_tpu_interpret_mode():
      got = np.asarray(paged.attention(*args, impl=backend))
  else:
    got = np.asarray(paged.attention(*args, impl=backend, interpret=True))
  assert np.abs(got - want).max() <= 1e-5


def test_ragged_tpu_wrapper_with_the_kernels_reference_equals_ours(monkeypatch):
  """Prefill chunks on TPU go through jax's ragged paged-attention kernel, which does not run in interpret mode
  (checked): the wrapper (layout gather, packing of the rows' queries, unpacking) runs here with the kernel swapped
  for the reference function jax ships beside it."""
  from jax.experimental.pallas.ops.tpu.ragged_paged_attention import kernel as ragged
  calls = []

  def shipped_reference(q, kv, kv_lens, page_indices, cu_q_lens, num_seqs, *, sm_scale):
    calls.append(q.shape)
    return ragged.ref_ragged_paged_attention(q, kv, kv_lens, page_indices, cu_q_lens, num_seqs, sm_scale=sm_scale)

  monkeypatch.setattr(ragged, "ragged_paged_attention", shipped_reference)
  rng = np.random.default_rng(2)
  page, pps, k_heads, h, dh, c = 4, 6, 2, 8, 16, 5
  # Full chunks, a partial chunk, a chunk ending on a page boundary, a first chunk, and an empty (padding) row.
  kv_len = np.array([7, 8, 24, 5, 13, 0], np.int32)
  length = np.array([5, 3, 5, 5, 1, 0], np.int32)
  k, v, k_pages, v_pages, table = _scatter(rng, kv_len, k_heads, page, pps, 64, dh)
  q = rng.standard_normal((len(kv_len), c, h, dh)).astype(np.float32)
  start = (kv_len - length).astype(np.int32)
  args = (jnp.asarray(q), k_pages, v_pages, table, jnp.asarray(start), jnp.asarray(kv_len))
  got = np.asarray(paged.attention(*args, impl="pallas_tpu"))
  want = np.asarray(paged.attention(*args))
  assert calls == [(len(kv_len) * c, h, dh)]
  valid = np.arange(c)[None, :] < length[:, None]
  assert np.abs(got[valid] - want[valid]).max() <= 1e-5
  assert np.all(got[~valid] == 0)


@pytest.mark.parametrize("block", [128, 8])  # one block of 32 tokens; blocks of 8
def test_rows_staged_from_pages_give_the_reference_attention(block):
  rng = np.random.RandomState(5)
  k_heads, h, page, pps, dh = 2, 6, 4, 8, 8
  lengths = [1, 4, 5, 32, 0, 13]  # one token, a full page, one past it, the whole table, an empty row, mid-page
  k, v, k_pages, v_pages, table = _scatter(rng, lengths, k_heads, page, pps, 64, dh)
  b = len(lengths)
  slots = np.asarray([3, 0, 5, 1, 4, 2], np.int32)  # row i of the tables takes slot slots[i]
  cache = paged.PagedCache(k=(k_pages,), v=(v_pages,))
  cache = paged.init_rows(cache, _OneLayer(k_heads, dh), b, pps * page)
  cache = paged.stage_rows(cache, jnp.asarray(np.append(slots, b)), jnp.concatenate([table, table[:1]]))  # + padding
  rows_k, rows_v = np.asarray(cache.rows.k[0]), np.asarray(cache.rows.v[0])
  np.testing.assert_array_equal(rows_k[slots], k)  # each slot holds its row's tokens, in order
  np.testing.assert_array_equal(rows_v[slots], v)
  q = rng.standard_normal((b, 1, h, dh)).astype(np.float32)
  kv_len = np.asarray(lengths, np.int32)
  want = np.asarray(paged.attention(jnp.asarray(q), k_pages, v_pages, table, jnp.asarray(np.maximum(kv_len - 1, 0)),
                                    jnp.asarray(kv_len)))
  order = np.argsort(slots)  # slot s holds table row order[s]
  got = np.asarray(paged.rows_attention(jnp.asarray(q[order]), cache.rows.k[0], cache.rows.v[0],
                                        jnp.asarray(kv_len[order]), block=block))
  assert np.abs(got - want[order]).max() <= 1e-5
  assert np.abs(got[slots[4]]).max() == 0  # nothing to attend: zeros


class _OneLayer:
  """The model fields `init_rows` reads."""

  def __init__(self, k_heads: int, dh: int):
    self.num_layers, self.num_kv_heads, self.head_dim = 1, k_heads, dh


def test_write_rows_places_one_token_per_active_row():
  rows = jnp.zeros((3, 1, 8, 2))
  new = jnp.arange(1, 7, dtype=jnp.float32).reshape(3, 1, 1, 2)
  out = np.asarray(paged.write_rows(rows, new, jnp.asarray([5, 0, 7]), jnp.asarray([1, 0, 1])))[:, 0]
  assert (out[0, 5] == [1, 2]).all() and (out[2, 7] == [5, 6]).all()
  assert out[1].sum() == 0 and out[0].sum() == 3 and out[2].sum() == 11  # row 1 (length 0) writes nothing


def test_write_places_tokens_and_drops_padding():
  page, pps = 4, 3
  pool = jnp.zeros((1, 8, page, 2))
  table = jnp.asarray([[5, 2, 7], [1, 3, 0]], jnp.int32)
  new = jnp.arange(2 * 6 * 2, dtype=jnp.float32).reshape(2, 6, 1, 2) + 1
  out, _ = paged.write(pool, None, new, table, jnp.asarray([2, 0]), jnp.asarray([6, 3]))
  out = np.asarray(out)[0]
  # Row 0: positions 2..7 -> page 5 offsets 2, 3 then page 2 offsets 0..3. Row 1: positions 0..2 of page 1 only.
  assert (out[5, 2:, 0] == [1, 3]).all() and (out[2, :, 0] == [5, 7, 9, 11]).all()
  assert (out[1, :3, 0] == [13, 15, 17]).all() and out[1, 3].sum() == 0 and out[[0, 3, 4, 6, 7]].sum() == 0


@pytest.fixture(scope="module", params=list(tiny_hf.FAMILIES))
def model(request, tmp_path_factory):
  path = tiny_hf.save(tiny_hf.make_model(request.param, seed=4), str(tmp_path_factory.mktemp(request.param)))
  return hf.load_hf(path, param_dtype="float32")


@pytest.mark.parametrize("chunk", [11, 4, 3])
def test_extend_equals_the_full_forward(model, chunk):
  cfg, params = model
  tokens = np.random.RandomState(0).randint(3, cfg.vocab_size, (2, 19)).astype(np.int32)
  got = paged_run.run(cfg, params, tokens, [11, 11], 8, chunk=chunk)
  full = np.asarray(_forward(params, tokens, np.ones_like(tokens), cfg=cfg))[:, 10:]
  assert np.abs(got - full).max() <= 1e-5


def test_decode_over_staged_rows_equals_the_full_forward(model):
  cfg, params = model
  tokens = np.random.RandomState(3).randint(3, cfg.vocab_size, (3, 19)).astype(np.int32)
  if cfg.attention_sinks:  # sinks and sliding windows decode over pages (the reference has them); rows refuse
    with pytest.raises(ValueError, match="no sinks or sliding windows"):
      paged_run.run(cfg, params, tokens, [11, 7, 11], 8, attention="rows")
    return
  got = paged_run.run(cfg, params, tokens, [11, 7, 11], 8, attention="rows")
  full = np.asarray(_forward(params, tokens, np.ones_like(tokens), cfg=cfg))
  want = np.stack([full[0, 10:], full[1, 6:15], full[2, 10:]])
  assert np.abs(got - want).max() <= 1e-5


def test_packed_prefill_writes_each_prompts_pages_and_logits(model):
  cfg, params = model
  lengths, page, pps, width, steps = [7, 5, 11, 9], 4, 8, 24, 3
  tokens = np.random.RandomState(6).randint(3, cfg.vocab_size, (4, 16)).astype(np.int32)
  table = np.asarray(paged_run.page_table(4, pps))
  packed = [[2, 0, 1], [3]]  # two rows of 24: prompts 2, 0, 1 back to back (23 tokens), then prompt 3 alone
  arrays = [np.zeros((2, width), np.int32) for _ in range(4)]
  ids, segments, positions, offsets = arrays
  page_ids = np.full((2, width), 4 * pps, np.int32)
  last = np.zeros(4, np.int32)
  for r, group in enumerate(packed):
    at = 0
    for j, b in enumerate(group):
      n, span = lengths[b], slice(at, at + lengths[b])
      ids[r, span], segments[r, span], positions[r, span] = tokens[b, :n], j + 1, np.arange(n)
      page_ids[r, span], offsets[r, span] = table[b, np.arange(n) // page], np.arange(n) % page
      last[b] = r * width + at + n - 1
      at += n
  cache = paged.init_cache(cfg, 4 * pps, page, dtype="float32")
  logits, cache = jax.jit(transformer.prefill_packed, static_argnames=("cfg",))(
      params, *map(jnp.asarray, (ids, segments, positions, page_ids, offsets, last)), cache, cfg=cfg)
  out = [np.asarray(logits)]
  for t in range(steps):  # decoding over the pages the packed prefill wrote
    feed = tokens[np.arange(4), np.asarray(lengths) + t][:, None]
    step, cache = paged_run.extend(params, jnp.asarray(feed), jnp.asarray(lengths, jnp.int32) + t,
                                   jnp.ones((4,), jnp.int32), jnp.asarray(table), cache, cfg=cfg)
    out.append(np.asarray(step))
  full = np.asarray(_forward(params, tokens, np.ones_like(tokens), cfg=cfg))
  want = np.stack([full[b, lengths[b] - 1:lengths[b] + steps] for b in range(4)])
  assert np.abs(np.stack(out, axis=1) - want).max() <= 1e-5


def test_int8_pages_stay_close(model):
  cfg, params = model
  tokens = np.random.RandomState(1).randint(3, cfg.vocab_size, (2, 19)).astype(np.int32)
  got = paged_run.run(cfg, params, tokens, [11, 11], 8, dtype="int8")
  full = np.asarray(_forward(params, tokens, np.ones_like(tokens), cfg=cfg))[:, 10:]
  err = np.abs(got - full).max() / np.abs(full).max()
  assert 0 < err < 0.05, err


def test_extend_on_eight_devices_equals_one(model):
  cfg, params = model
  tokens = np.random.RandomState(2).randint(3, cfg.vocab_size, (4, 15)).astype(np.int32)
  want = paged_run.run(cfg, params, tokens, [9, 6, 9, 3], 5, chunk=5)
  mesh = make_mesh({"data": 4, "tensor": 2})
  sharding = transformer.Sharding(mesh, ShardingRules())
  params = jax.device_put(params, transformer.param_shardings(cfg, mesh, sharding.rules))
  got = paged_run.run(cfg, params, tokens, [9, 6, 9, 3], 5, chunk=5, sharding=sharding)
  assert np.abs(got - want).max() <= 1e-5
