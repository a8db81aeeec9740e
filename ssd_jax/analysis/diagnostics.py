"""The paper's Fig. 6 diagnostics (ssd_paper.md §6.6) for any set of models scored on the same sequences.

Every statistic is read off the model's next-token distribution at the response positions of the given
sequences (the position that predicts each response token), and every truncated statistic comes from the
sampler's exact operator, `sampling.sampler.truncated_probs` (temperature -> top-k with ties -> top-p):

  (a) cumulative probability mass vs rank (1..`ranks`) of the model's own distribution at T = 1 without
      truncation, averaged over positions: the paper's "cleaner head, less tail" reading needs the untruncated
      tail (a truncated curve is exactly 1 past the kept set). The same curve under the eval truncation at
      every T_eval is kept in the table as `cum_mass_eval`;
  (b) mean number of tokens surviving the eval truncation (top-k / top-p at each T_eval) vs T_eval, counted as
      the tokens with nonzero truncated probability (with top-p < 1 every kept token has mass >= (1 - top_p) / k;
      without it, a kept token whose mass underflows float32 at a very low T is not counted);
  (c) mean entropy (nats) of the truncated distribution vs T_eval;
  (d) truncated entropy bucketed by the position's top-20 mass (T = 1, untruncated; buckets between the
      descending `mass_buckets` thresholds, plus one below the last), per T_eval in the table; the plot shows
      `reference_temperature`, the T_eval closest to 1.

Positions stream through in fixed-size chunks that are reduced to sums on the device, so no [N, V] array
is held beyond one chunk: a chunk's logits are computed from gathered hidden states, and its statistics by
one jitted function per (chunk, vocab, #temperatures) shape.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ssd_jax.models import transformer
from ssd_jax.models.config import ModelConfig
from ssd_jax.models.transformer import Params
from ssd_jax.sampling.sampler import truncated_probs

CHUNK = 128  # positions per statistics / logits call: one compiled shape, [CHUNK, V] f32 live at a time
TOP_MASS_RANK = 20  # panel (d) buckets positions by the mass of their top-20 tokens
DEFAULT_MASS_BUCKETS = (0.999, 0.995, 0.99, 0.98, 0.95)  # the paper's panel (d) thresholds
_K_MAX = 64  # the sampler's candidate window (its default)
PNG_NAMES = ("fig6a_cum_mass.png", "fig6b_survivors.png", "fig6c_entropy.png", "fig6d_entropy_by_top20_mass.png")


# -- logits at the response positions ------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("cfg",))
def _hidden(params: Params, tokens: jax.Array, segment_ids: jax.Array, cfg: ModelConfig) -> jax.Array:
  """tokens, segment_ids [B, S] -> final hidden [B, S, D] in the compute dtype (exactly what the lm head reads)."""
  h, _ = transformer.hidden_states(params, tokens, segment_ids, cfg)
  return h.astype(cfg.cdtype)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _logits(params: Params, h: jax.Array, cfg: ModelConfig) -> jax.Array:
  """h [C, D] -> logits [C, V] float32."""
  return transformer.logits_from_hidden(params, h, cfg)


def _bucket_len(n: int) -> int:
  """Padded sequence length: the next power of two (at least 16), so a sweep compiles a handful of shapes."""
  return max(16, 1 << (n - 1).bit_length())


def _plan_sequences(sequences: Sequence[Sequence[int]], prompt_lens: Sequence[int],
                    max_positions: int | None) -> list[tuple[np.ndarray, int]]:
  """(tokens cut after the last scored target, prompt length) per sequence with at least one scored position."""
  if len(sequences) != len(prompt_lens):
    raise ValueError(f"{len(sequences)} sequences but {len(prompt_lens)} prompt lengths")
  budget = np.inf if max_positions is None else int(max_positions)
  plan = []
  for seq, p in zip(sequences, prompt_lens):
    if p < 1:
      raise ValueError(f"prompt length {p} < 1: the first token has no predicting position")
    n = min(len(seq) - p, budget)
    if n <= 0:
      continue
    plan.append((np.asarray(seq[:p + n], np.int32), int(p)))
    budget -= n
    if budget <= 0:
      break
  return plan


def iter_position_logits(params: Params, cfg: ModelConfig, sequences: Sequence[Sequence[int]],
                         prompt_lens: Sequence[int], *, batch_size: int = 8, max_positions: int | None = None,
                         chunk: int = CHUNK) -> Iterator[tuple[jax.Array, int]]:
  """Yields (logits [chunk, V] float32 on the device, n valid rows): the response positions in order.

  Sequences are taken in the given order (shuffle them to spread `max_positions` over prompts); position t of a
  sequence with prompt length P is scored for t in [P - 1, len - 2], i.e. it predicts each response token.
  Batches are right-padded to [batch_size, power-of-two length]; only the last chunk has padding rows.
  """
  plan = _plan_sequences(sequences, prompt_lens, max_positions)
  pending: list[np.ndarray] = []  # gathered hidden rows [n_i, D], not yet turned into logits
  n_pending = 0
  for start in range(0, len(plan), batch_size):
    batch = plan[start:start + batch_size]
    s = _bucket_len(max(len(t) for t, _ in batch))
    tokens = np.zeros((batch_size, s), np.int32)
    segs = np.zeros((batch_size, s), np.int32)
    for b, (t, _) in enumerate(batch):
      tokens[b, :len(t)], segs[b, :len(t)] = t, 1
    h = np.asarray(_hidden(params, tokens, segs, cfg=cfg))  # [B, S, D]
    for b, (t, p) in enumerate(batch):
      pending.append(h[b, p - 1:len(t) - 1])
      n_pending += len(t) - p
    while n_pending >= chunk or (n_pending and start + batch_size >= len(plan)):
      rows = np.concatenate(pending)
      head, rest = rows[:chunk], rows[chunk:]
      pending, n_pending = ([rest] if len(rest) else []), len(rest)
      padded = np.zeros((chunk, rows.shape[1]), rows.dtype)
      padded[:len(head)] = head
      yield _logits(params, padded, cfg=cfg), len(head)


def model_position_logits(params: Params, cfg: ModelConfig, sequences: Sequence[Sequence[int]],
                          prompt_lens: Sequence[int], *, batch_size: int = 8,
                          max_positions: int | None = None) -> np.ndarray:
  """Logits [N_positions, V] float32 at the response positions (see `iter_position_logits`), on the host.

  Holds all N x V floats: for large vocabularies use `iter_position_logits` (as `run_diagnostics` does).
  """
  chunks = [np.asarray(x[:n]) for x, n in iter_position_logits(params, cfg, sequences, prompt_lens,
                                                               batch_size=batch_size, max_positions=max_positions)]
  return np.concatenate(chunks) if chunks else np.zeros((0, cfg.vocab_size), np.float32)


# -- statistics ----------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("ranks", "k_max"))
def _chunk_stats(logits: jax.Array, valid: jax.Array, temperatures: jax.Array, top_k: jax.Array, top_p: jax.Array,
                 edges: jax.Array, *, ranks: int, k_max: int) -> dict[str, jax.Array]:
  """Sums over the valid rows of one chunk. logits [C, V], valid [C] bool, temperatures [T], edges [E] descending.

  Returns n [], tail [R] (mass beyond each rank at T = 1), cum_eval [T, R], survivors [T], entropy [T],
  bucket_counts [E+1], bucket_entropy [E+1, T].
  """
  x = logits.astype(jnp.float32)
  w = valid.astype(jnp.float32)
  p = jax.nn.softmax(x, axis=-1)
  n_top = min(max(ranks, TOP_MASS_RANK), x.shape[1])
  top = lax.top_k(p, n_top)[0]  # [C, n_top]
  # Tail masses as sums of small terms, not 1 - cumsum: float32 1 - cumsum bottoms out near 1e-7, and the
  # panel reads tails down to 1e-6. Tokens tied with the last listed one but left out of the list are tail.
  last = top[:, -1:]
  beyond = jnp.sum(jnp.where(p < last, p, 0.0), axis=-1) + (jnp.sum(p >= last, axis=-1) - n_top) * last[:, 0]
  after = jnp.cumsum(top[:, ::-1], axis=-1)[:, ::-1]  # [C, n_top]: mass of listed ranks >= i
  tail = beyond[:, None] + jnp.pad(after[:, 1:], ((0, 0), (0, 1)))  # [C, n_top]: mass beyond rank i + 1
  top_mass_tail = tail[:, min(TOP_MASS_RANK, n_top) - 1]
  bucket = jnp.sum(top_mass_tail[:, None] > 1.0 - edges[None, :], axis=-1)  # [C]: thresholds above the top-20 mass

  def per_temperature(t: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    q = truncated_probs(x, t, top_k, top_p, k_max=k_max)  # [C, V]
    q_cum = jnp.minimum(jnp.cumsum(lax.top_k(q, ranks)[0], axis=-1), 1.0)  # [C, R]
    return jnp.sum(q > 0, axis=-1).astype(jnp.float32), jnp.sum(jax.scipy.special.entr(q), axis=-1), q_cum

  # lax.map, not vmap: one [C, V] truncated distribution alive at a time.
  kept, ent, q_cum = lax.map(per_temperature, temperatures)  # [T, C], [T, C], [T, C, R]
  member = jax.nn.one_hot(bucket, edges.shape[0] + 1) * w[:, None]  # [C, E+1]
  return dict(n=w.sum(), tail=w @ tail[:, :ranks], cum_eval=jnp.einsum("c,tcr->tr", w, q_cum), survivors=kept @ w,
              entropy=ent @ w, bucket_counts=member.sum(0), bucket_entropy=member.T @ ent.T)


def _bucket_labels(edges: Sequence[float]) -> list[str]:
  pct = [f"{100 * e:g}%" for e in edges]
  return [f">={pct[0]}"] + [f"[{lo}, {hi})" for lo, hi in zip(pct[1:], pct[:-1])] + [f"<{pct[-1]}"]


class _Accumulator:
  """Float64 running sums of `_chunk_stats` for one model, finalised into its JSON table."""

  def __init__(self, temperatures: Sequence[float], top_k: int, top_p: float, ranks: int, edges: Sequence[float]):
    self.args = (jnp.asarray(temperatures, jnp.float32), jnp.int32(top_k), jnp.float32(top_p),
                 jnp.asarray(edges, jnp.float32))
    self.ranks = ranks
    self.sums: dict[str, np.ndarray] = {}

  def add(self, logits: jax.Array | np.ndarray, n_valid: int) -> None:
    """logits [C, V] whose first n_valid rows are positions (the rest padding)."""
    v = logits.shape[1]
    if self.ranks > v:
      raise ValueError(f"ranks={self.ranks} exceeds the vocabulary ({v})")
    valid = np.arange(logits.shape[0]) < n_valid
    out = _chunk_stats(logits, valid, *self.args, ranks=self.ranks, k_max=min(_K_MAX, v))
    for name, val in out.items():
      self.sums[name] = self.sums.get(name, 0.0) + np.asarray(val, np.float64)

  def add_array(self, logits: np.ndarray) -> None:
    """logits [N, V]: fed in zero-padded chunks of CHUNK rows (one compiled shape)."""
    for start in range(0, len(logits), CHUNK):
      part = np.asarray(logits[start:start + CHUNK], np.float32)
      self.add(np.pad(part, ((0, CHUNK - len(part)), (0, 0))), len(part))

  def table(self) -> dict:
    if not self.sums or self.sums["n"] == 0:
      raise ValueError("no response positions to analyse")
    s, n = self.sums, float(self.sums["n"])
    counts = s["bucket_counts"]
    per_bucket = s["bucket_entropy"] / np.maximum(counts, 1)[:, None]  # [E+1, T]
    return dict(positions=int(n), cum_mass=(1.0 - s["tail"] / n).tolist(), cum_mass_eval=(s["cum_eval"] / n).tolist(),
                survivors=(s["survivors"] / n).tolist(), entropy=(s["entropy"] / n).tolist(),
                bucket_counts=[int(c) for c in counts],
                bucket_entropy=[row.tolist() if c else None for row, c in zip(per_bucket, counts)])


def _config(temperatures: Sequence[float], top_k: int, top_p: float, ranks: int,
            mass_buckets: Sequence[float]) -> tuple[dict, list[float]]:
  edges = sorted((float(e) for e in mass_buckets), reverse=True)
  if not edges or not all(0.0 < e < 1.0 for e in edges):
    raise ValueError(f"mass_buckets must be thresholds in (0, 1), got {mass_buckets}")
  temps = [float(t) for t in temperatures]
  if not temps:
    raise ValueError("need at least one temperature")
  ref = min(temps, key=lambda t: (abs(t - 1.0), t))
  return dict(temperatures=temps, top_k=int(top_k), top_p=float(top_p), ranks=int(ranks), mass_buckets=edges,
              bucket_labels=_bucket_labels(edges), top_mass_rank=TOP_MASS_RANK, reference_temperature=ref,
              cum_mass="T=1, untruncated; cum_mass_eval: per T_eval under the eval truncation"), edges


def fig6_diagnostics(logits_by_model: Mapping[str, np.ndarray], *, temperatures: Sequence[float], top_k: int,
                     top_p: float, ranks: int = 60, mass_buckets: Sequence[float] = DEFAULT_MASS_BUCKETS) -> dict:
  """The Fig. 6 table from logits [N, V] at response positions, per model (see the module doc).

  Args:
    logits_by_model: model name -> [N, V] logits (models may have different N; the same sequences are expected).
    temperatures: the T_eval sweep; T < 1e-5 decodes greedily (one surviving token, entropy 0).
    top_k, top_p: the eval truncation (0 / 1.0 turn them off).
    ranks: length of the cumulative-mass curves (at most V).
    mass_buckets: top-20 mass thresholds of panel (d), any order.

  Returns:
    {"config": {...}, "models": {name: {positions, cum_mass [R], cum_mass_eval [T][R], survivors [T],
    entropy [T], bucket_counts [E+1], bucket_entropy [E+1] of [T] or None when empty}}}.
  """
  config, edges = _config(temperatures, top_k, top_p, ranks, mass_buckets)
  models = {}
  for name, logits in logits_by_model.items():
    acc = _Accumulator(config["temperatures"], top_k, top_p, ranks, edges)
    acc.add_array(logits)
    models[name] = acc.table()
  return dict(config=config, models=models)


# -- plots ---------------------------------------------------------------------------------------------------

TAIL_FLOOR = 1e-12  # panel (a) plots tail masses down to this


def _tail_label(m: int, k: int) -> str:
  """The cumulative mass 1 - m 10^-k as text: 0, 0.8, 0.9, 0.95, 0.99, 0.999, then 1-1e-4, 1-5e-5, ..."""
  return f"{1.0 - m * 10.0 ** -k:.{k}f}" if k <= 3 else f"1-{m}e-{k}"


def mass_axis(lowest: float, highest: float) -> tuple[tuple[float, float], list[float], list[str]]:
  """Panel (a)'s y axis: the tail mass 1 - cum on an inverted log scale, labelled as the cumulative mass.

  Args:
    lowest, highest: the smallest and largest tail mass plotted, in [TAIL_FLOOR, 1].

  Returns:
    (bottom, top) limits (bottom > top: inverted, so the cumulative mass grows upwards), tick positions (tail
    masses inside the limits, descending) and labels (their cumulative masses, increasing up the axis). Ticks sit
    at tails 10^-k (0.9, 0.99, ...), or, when the curves span fewer than three of those, also at 2 and 5 10^-k
    (0.8, 0.95, 0.98, ...), then at every digit; curves flatter still (a tiny model's) get evenly spaced masses.
  """
  from matplotlib.ticker import MaxNLocator

  lowest, highest = max(lowest, TAIL_FLOOR), min(max(highest, lowest), 1.0)
  bottom, top = min(1.0, highest * 1.2), lowest / 1.2
  k_max = int(np.ceil(-np.log10(top))) + 1
  for digits in ((1,), (1, 2, 5), tuple(range(1, 10))):
    cells = sorted(((m * 10.0 ** -k, m, k) for k in range(k_max + 1) for m in digits
                    if top <= m * 10.0 ** -k <= bottom), reverse=True)
    if len(cells) >= 3:
      return (bottom, top), [t for t, _, _ in cells], [_tail_label(m, k) for _, m, k in cells]
  masses = [float(m) for m in MaxNLocator(nbins=5).tick_values(1.0 - bottom, 1.0 - top)
            if 1.0 - bottom <= m <= 1.0 - top]
  step = masses[1] - masses[0] if len(masses) > 1 else 1.0 - top
  decimals = next(d for d in range(1, 17) if all(abs(round(m, d) - m) < 1e-6 * step for m in masses))
  ticks = [1.0 - m for m in masses]  # 1 - (1 - t) may land a rounding error outside the limits: widen them
  return (max(bottom, *ticks), min(top, *ticks)), ticks, [f"{m:.{decimals}f}" for m in masses]


def plot_fig6(table: dict, out_dir: str) -> list[str]:
  """Writes the four panels (every model on each) as PNGs into out_dir; returns their paths in panel order."""
  import matplotlib
  import matplotlib.ticker
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  os.makedirs(out_dir, exist_ok=True)
  cfg, models = table["config"], table["models"]
  temps, names = cfg["temperatures"], list(models)
  trunc = f"top-k {cfg['top_k'] or 'off'}, top-p {cfg['top_p']:g}"
  paths = [os.path.join(out_dir, name) for name in PNG_NAMES]

  def ratio_note(ax, xs, key: str) -> None:
    """Last model / first model at each x: the paper's "4x" annotations."""
    if len(names) < 2:
      return
    first, last = models[names[0]][key], models[names[-1]][key]
    for x, a, b in zip(xs, first, last):
      if a > 0:
        ax.annotate(f"{b / a:.1f}x", (x, b), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)

  fig, ax = plt.subplots(figsize=(6, 4))
  rank = np.arange(1, cfg["ranks"] + 1)
  tails = {name: np.clip(1.0 - np.asarray(m["cum_mass"]), TAIL_FLOOR, 1.0) for name, m in models.items()}
  for name in names:  # tail mass on an inverted log axis reads as cumulative mass 1 - 10^-k
    ax.plot(rank, tails[name], label=name)
  ax.set_yscale("log")
  limits, ticks, labels = mass_axis(min(t.min() for t in tails.values()), max(t.max() for t in tails.values()))
  ax.set_ylim(*limits)  # bottom > top: inverted, cumulative mass grows upwards
  ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())  # log minor ticks would be labelled as tail masses
  ax.set_yticks(ticks, labels)
  ax.set(xlabel="token rank", ylabel="cumulative probability mass",
         title="(a) cumulative mass vs rank (T=1, untruncated)")

  def finish(fig, ax, path: str) -> None:
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

  finish(fig, ax, paths[0])
  for path, key, ylabel, title in ((paths[1], "survivors", "mean tokens surviving truncation", "(b) survivors"),
                                   (paths[2], "entropy", "mean entropy (nats)", "(c) post-truncation entropy")):
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in names:
      ax.plot(temps, models[name][key], marker="o", label=name)
    ratio_note(ax, temps, key)
    ax.set(xlabel="T_eval", ylabel=ylabel, title=f"{title} vs T_eval ({trunc})")
    finish(fig, ax, path)

  fig, ax = plt.subplots(figsize=(7, 4))
  t_ref = temps.index(cfg["reference_temperature"])
  labels = cfg["bucket_labels"]
  width = 0.8 / len(names)
  for i, name in enumerate(names):
    m = models[name]
    heights = [e[t_ref] if e is not None else 0.0 for e in m["bucket_entropy"]]
    xs = np.arange(len(labels)) + (i - (len(names) - 1) / 2) * width
    bars = ax.bar(xs, heights, width, label=name)
    ax.bar_label(bars, [f"n={c}" for c in m["bucket_counts"]], fontsize=7)
  ax.set_xticks(np.arange(len(labels)), labels, fontsize=8)
  ax.set(xlabel=f"top-{cfg['top_mass_rank']} mass (T=1)", ylabel="mean entropy (nats)",
         title=f"(d) entropy by top-{cfg['top_mass_rank']} mass (T_eval {cfg['reference_temperature']:g}, {trunc})")
  finish(fig, ax, paths[3])
  return paths


# -- the analyze stage ---------------------------------------------------------------------------------------


def run_diagnostics(models: Mapping[str, tuple[ModelConfig, Params]], sequences: Sequence[Sequence[int]],
                    prompt_lens: Sequence[int], out_dir: str, *, temperatures: Sequence[float], top_k: int,
                    top_p: float, max_positions: int | None = 4096, batch_size: int = 8, ranks: int = 60,
                    mass_buckets: Sequence[float] = DEFAULT_MASS_BUCKETS) -> dict:
  """Scores every model on the same sequences, streaming chunks into the statistics; writes diagnostics.json
  and the four PNGs into out_dir and returns the table (with "pngs" and "json" paths added).

  Each model's logits are computed chunk by chunk and reduced at once, so memory is one [CHUNK, V] chunk plus
  one padded batch of hidden states, whatever the number of positions.
  """
  config, edges = _config(temperatures, top_k, top_p, ranks, mass_buckets)
  config["max_positions"] = max_positions
  tables = {}
  for name, (cfg, params) in models.items():
    acc = _Accumulator(config["temperatures"], top_k, top_p, ranks, edges)
    for logits, n in iter_position_logits(params, cfg, sequences, prompt_lens, batch_size=batch_size,
                                          max_positions=max_positions):
      acc.add(logits, n)
    tables[name] = acc.table()
  table = dict(config=config, models=tables)
  os.makedirs(out_dir, exist_ok=True)
  table["pngs"] = plot_fig6(table, out_dir)
  table["json"] = os.path.join(out_dir, "diagnostics.json")
  with open(table["json"], "w") as f:
    json.dump(table, f, indent=1)
  return table
