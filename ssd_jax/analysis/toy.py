"""The paper's toy fork/lock model (App. C.4; ssd_paper.md §6.7), run through the project's own SSD machinery.

The teacher. V = 16. The root branches into paths A (tok0) and B (tok1); any other root token fails. Each path is
1 fork state then L = 3 lock states, then PASS; at every non-root state tok0 is correct and any other token
fails. Each state type lists its first 4 token probabilities (`HEADS`); the other 12 tokens (ids 4..15) form a
geometric tail with ratio 0.5 scaled to the residual mass, a_j = r 0.5^j / sum_{i<12} 0.5^i. Choices where the
reference is silent or loose, made here:
  * "25 % of the mass lies in the tail" of the lock is read as all of its distractor mass (1 - 0.750); the
    geometric tail proper holds the residual 1 - 0.892 = 0.108, and its first token (0.0540) outranks tok2 and
    tok3. In the fork the first tail token (0.14404) sits just above tok3 (0.144).
  * The student has one logit vector per physical state (root, fork and 3 locks on each path: 9 states), and
    success is the path sum q(root -> A) prod_A q(tok0) + q(root -> B) prod_B q(tok0). For the teacher, whose
    forks and locks are shared, this is the reference's P = [q_root(A) + q_root(B)] q_fork(tok0) q_lock(tok0)^3.
  * SSD data are whole rollouts from the root, sampled with `sampling.sampler.sample` at T_train 0.9 / top-p
    0.85 (no top-k) and the engine's per-row keys, kept unfiltered (the paper has no correctness filter); a
    failed rollout ends at its failing token, so later states are visited less (~4.4k-5.2k targets per lock
    state out of 2^17 rollouts).
  * The student is a zero-layer model of the project's `Params`: its hidden state is the one-hot of the state
    and its `lm_head` [9, 16] is the logit table, so `train.loss.chunked_nll` -- the trainer's token-level CE --
    gives logits = lm_head[state]. Identical (state, token) pairs are merged into one target whose loss weight
    is its count, which is the same sum as one target per sampled token.
  * The student starts as the teacher (SSD fine-tunes the base model). The optimizer is the trainer's
    (`train.optim.make_optimizer`: AdamW b1 0.9 / b2 0.95, warmup then cosine, clipping at 1) with weight decay
    0 and a learning rate (0.1, 1500 full-batch steps) sized for a 144-entry table; the reference names no toy
    optimizer. Decay would pull the logits of discarded tokens back from -inf, away from the target q_s. The
    CE's infimum is not attained (Eq. 13), but after training the discarded tokens sit >= 18 nats below the
    top and re-enter no kept set anywhere in the sweep; the student then matches the empirical frequencies to
    ~1e-6, so it differs from q_s by sampling noise only.
  * Evaluation sweeps T_eval over 0.05..4.00 in steps of 0.01 (the reference gives no range; 4.00 covers every
    optimum of the ideal student, the latest being 3.42 at eval top-p 0.70) through `sampler.truncated_probs`,
    exactly (no Monte Carlo): success probabilities are products of its float32 entries. "Best" is the maximum over
    that grid, at the lowest T reaching it. A grid misses a peak that sits where a kept set changes with T (the
    teacher's does), so "sup" is the exact supremum over the same range (`supremum`: every kept-set breakpoint, both
    one-sided limits there, and a bounded maximisation of each smooth piece between them, in float64), with its T
    and whether it is attained or only approached as T falls to that T. Three models are swept: the teacher p0, the
    ideal student q_s of Eq. 7 (the population limit of SSD), and the trained student. The student's curve follows
    q_s's to ~1e-3 except near top-p boundaries, where sampling noise moves the T at which a token is admitted (at
    eval top-p 0.80: T_eval 2.0-2.1, where a lock admits tok1, and >= 3.6, where a fork admits its 5th token).

Agreement with the paper. ssd_paper.md §6.7 withholds the paper's toy numbers on purpose ("check against the ideal
student of Eq. 7, not against numbers"), so no printed number can be compared with a reported one; tests/test_toy.py
holds the trained student to q_s within binomial error instead (and checks that a wrong T_train or top-p misses it).
The qualitative claims of §6.3 do hold. Seed 0, 2^17 rollouts, eval top-p 0.80: the teacher's best on the grid is
0.0822 (T_eval 0.63) and its supremum 0.08334, at T_eval 0.63947 where the forks admit their 5th token (tok2); the
student's best is 0.1358 (T_eval 2.02), supremum 0.13585 at 2.0247 (ideal q_s 0.1377 at 2.09); the student beats the
best-tuned teacher at every eval top-p of the grid (+0.013 at 0.90 to +0.054 at 0.80; by supremum +0.0127 to
+0.0525). The lock's support shrinks to {tok0, tok1} (tok0 0.750 -> 0.948) and its loss is dominated by support
compression (-log kept mass 0.217 of 0.424 nats at init), while the fork keeps 5 tokens and its within-support
reshaping term is as large as the compression term (0.156 vs 0.155): support compression at locks, reshaping at
forks.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from ssd_jax.analysis.decompose import entropy_terms, ssd_loss_terms
from ssd_jax.models.config import ModelConfig
from ssd_jax.models.transformer import Params
from ssd_jax.sampling.sampler import row_keys, sample, truncated_probs
from ssd_jax.train.loss import chunked_nll
from ssd_jax.train.optim import TrainConfig, make_optimizer

V = 16
LOCKS = 3
TAIL_RATIO = 0.5
HEADS = {  # first 4 token probabilities per state type (App. C.4)
    "root": (0.200, 0.190, 0.329, 0.126),
    "fork": (0.148, 0.280, 0.140, 0.144),
    "lock": (0.750, 0.055, 0.050, 0.037),
}
TYPES = ("root", "fork", "lock")
# Physical states: root, then each path's fork and locks. STATE_TYPE indexes TYPES.
STATES = ("root",) + tuple(f"{kind}_{path}" for path in "AB" for kind in ("fork",) + tuple(
    f"lock{i}" for i in range(1, LOCKS + 1)))
STATE_TYPE = np.array([0] + [1] + [2] * LOCKS + [1] + [2] * LOCKS)
TYPE_STATE = tuple(int(np.argmax(STATE_TYPE == i)) for i in range(len(TYPES)))  # one state per type: 0, 1, 2
PATH_LEN = 1 + LOCKS  # fork + locks after the root
DONE = -1  # PASS or FAIL: the rollout has ended

T_TRAIN, TOP_P_TRAIN = 0.9, 0.85
TOP_P_EVAL = 0.80
TOP_P_GRID = (0.65, 0.70, 0.75, 0.80, 0.85, 0.90)
T_GRID = np.round(np.arange(0.05, 4.0 + 1e-9, 0.01), 2)
MODELS = ("teacher", "ideal", "student")  # p0; q_s of Eq. 7 (the population-limit student); the trained student


def type_probs() -> np.ndarray:
  """[3, V] float64 teacher distributions of root, fork, lock: the listed head plus the geometric tail."""
  geo = TAIL_RATIO ** np.arange(V - 4)
  rows = [np.concatenate([head, (1.0 - sum(head)) * geo / geo.sum()]) for head in (HEADS[t] for t in TYPES)]
  return np.stack(rows)


def teacher_logits() -> jax.Array:
  """[9, V] float32 teacher logits (log-probabilities) of the physical states."""
  return jnp.asarray(np.log(type_probs())[STATE_TYPE], jnp.float32)


def _transitions() -> np.ndarray:
  """[9, V] int: the next state after each token (DONE on fail and after the last lock)."""
  nxt = np.full((len(STATES), V), DONE)
  nxt[0, 0], nxt[0, 1] = 1, 1 + PATH_LEN  # root: tok0 -> fork_A, tok1 -> fork_B
  for path in range(2):
    for i in range(PATH_LEN - 1):
      s = 1 + path * PATH_LEN + i
      nxt[s, 0] = s + 1
  return nxt


def success(probs: jax.Array | np.ndarray) -> jax.Array | np.ndarray:
  """probs [..., 9, V] -> [...]: P(PASS) = sum over paths of q(root -> path) prod_{path states} q(tok0).

  Array methods only, so a float64 numpy table stays numpy (the supremum search) and a jax one stays jax.
  """
  correct = probs[..., 1:, 0].reshape(probs.shape[:-2] + (2, PATH_LEN))
  return probs[..., 0, 0] * correct[..., 0, :].prod(-1) + probs[..., 0, 1] * correct[..., 1, :].prod(-1)


def rollout_counts(seed: int, n: int, *, temperature: float = T_TRAIN, top_p: float = TOP_P_TRAIN,
                   chunk: int = 2 ** 14) -> np.ndarray:
  """Samples n teacher rollouts with the project's sampler -> [9, V] int64 counts of (state, token) targets.

  Rollout r draws its step-d token with the engine's per-row key `row_keys(seed, r, d)`, so the draws do not
  depend on how the live rollouts are batched: each depth samples only the live ones, in fixed-size chunks
  (one compile), which is ~1/3 of the rows of sampling every rollout at every depth.
  """
  logits, nxt = teacher_logits(), _transitions()
  keys_of = jax.jit(row_keys)
  state = np.zeros(n, np.int64)
  counts = np.zeros((len(STATES), V), np.int64)
  for depth in range(1 + PATH_LEN):
    live = np.flatnonzero(state != DONE)
    for start in range(0, live.size, chunk):
      rows = live[start:start + chunk]
      padded = np.pad(rows, (0, chunk - rows.size), mode="edge")  # the padding rows' draws are dropped
      keys = keys_of(seed, jnp.asarray(padded, jnp.int32), depth)
      tok = np.asarray(sample(keys, logits[state[padded]], temperature, 0, top_p))[:rows.size]
      np.add.at(counts, (state[rows], tok), 1)
      state[rows] = nxt[state[rows], tok]
  return counts


def _student_cfg() -> ModelConfig:
  """A zero-layer float32 'model' whose hidden size is the number of states (see the module doc)."""
  return ModelConfig(model_type="llama", vocab_size=V, hidden_size=len(STATES), num_layers=0, num_heads=1,
                     num_kv_heads=1, head_dim=1, intermediate_size=1, param_dtype="float32", compute_dtype="float32")


def train_student(counts: np.ndarray, *, steps: int = 1500, learning_rate: float = 0.1) -> jax.Array:
  """Fits one logit vector per state to the sampled targets with the trainer's CE and optimizer -> [9, V]."""
  cfg = _student_cfg()
  n_states = len(STATES)
  h = jnp.repeat(jnp.eye(n_states, dtype=jnp.float32), V, axis=0)[None]  # [1, 9 V, 9] one-hot state per target
  targets = jnp.tile(jnp.arange(V, dtype=jnp.int32), n_states)[None]  # [1, 9 V]
  weights = jnp.asarray(counts, jnp.float32).reshape(1, -1)  # [1, 9 V] multiplicity of each (state, token)
  tx = make_optimizer(TrainConfig(learning_rate=learning_rate, min_learning_rate=learning_rate * 1e-3,
                                  warmup_steps=10, total_steps=steps, weight_decay=0.0))

  def loss_fn(table):
    params = Params(embed=None, layers=(), final_norm=None, lm_head=table.T)  # [9 states = D, V]
    nll, total = chunked_nll(params, h, targets, weights, cfg)
    return nll / total

  @jax.jit
  def fit(table):
    def step(carry, _):
      table, opt = carry
      updates, opt = tx.update(jax.grad(loss_fn)(table), opt, table)
      return (table + updates, opt), None
    (table, _), _ = jax.lax.scan(step, (table, tx.init(table)), None, length=steps)
    return table

  return fit(teacher_logits().T).T  # SSD fine-tunes the base model: the student starts as the teacher


def ideal_student(*, temperature: float = T_TRAIN, top_p: float = TOP_P_TRAIN) -> jax.Array:
  """[9, V] q_s of Eq. 7: the truncated tempered teacher, the population limit of the student."""
  return truncated_probs(teacher_logits(), temperature, 0, top_p)


@jax.jit
def sweep(logits: jax.Array, temps: jax.Array, top_ps: jax.Array) -> jax.Array:
  """Exact success probabilities of M models -> [M, P, T] for every eval top-p x T_eval.

  logits [M, 9, V] (-inf allowed: the ideal student's discarded tokens); temps [T]; top_ps [P]. One
  `truncated_probs` call over all rows, so one compile.
  """
  m, n_s = logits.shape[:2]
  n_t, n_p = temps.shape[0], top_ps.shape[0]
  shape = (m, n_p, n_t, n_s)
  rows = jnp.broadcast_to(logits[:, None, None], shape + (V,)).reshape(-1, V)
  t_rows = jnp.broadcast_to(temps[None, None, :, None], shape).reshape(-1)
  p_rows = jnp.broadcast_to(top_ps[None, :, None, None], shape).reshape(-1)
  return success(truncated_probs(rows, t_rows, 0, p_rows).reshape(shape + (V,)))


# -- the exact optimum over T --------------------------------------------------------------------------------

PIECE_POINTS = 257  # evaluations across one smooth piece before the bounded refinement around the best of them


def _log_tempered(logits: np.ndarray, temperatures: np.ndarray) -> np.ndarray:
  """logits [S, V] float64 (-inf allowed), temperatures [N] -> [N, S, V] log softmax(logits / T), untruncated."""
  z = logits[None] / temperatures[:, None, None]
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def kept_sets(logits: np.ndarray, temperature: float, top_p: float) -> np.ndarray:
  """[S, V] bool: the tokens eval top-p keeps at T, by the sampler's rule in float64.

  A token stays iff the tempered mass of the tokens strictly more likely than it is < top_p, so ties stay
  together and the top token always stays (`sampler.truncated_probs` thresholds the tempered logits the same way).
  """
  q = np.exp(_log_tempered(logits, np.array([temperature])))[0]  # [S, V]
  above = np.where(q[:, None, :] > q[:, :, None], q[:, None, :], 0.0).sum(-1)  # [S, V]: mass strictly above
  return ((above < top_p) | (q == q.max(-1, keepdims=True))) & np.isfinite(logits)


def _piece_success(logits: np.ndarray, kept: np.ndarray, temperatures: np.ndarray) -> np.ndarray:
  """P(PASS) [N] at temperatures [N] with the kept sets [S, V] held fixed: one smooth piece's formula, which
  extends continuously to the piece's ends (the one-sided limits there)."""
  z = np.where(kept[None], logits[None] / temperatures[:, None, None], -np.inf)  # [N, S, V]
  q = np.exp(z - z.max(-1, keepdims=True))
  return success(q / q.sum(-1, keepdims=True))


def kept_set_breakpoints(logits: np.ndarray, top_p: float, t_range: tuple[float, float]) -> np.ndarray:
  """Sorted T inside t_range at which some state's kept set changes.

  The tokens' order does not depend on T, and the mass S_i(T) of the i most likely tokens falls strictly as T
  rises (d log S_i / d(1/T) = E_top-i[log p] - E[log p] > 0), so each (state, i) crosses top_p at most once:
  token i + 1 joins the kept set just past that T (at the crossing itself S_i = top_p, and it is still out).
  """
  from scipy.optimize import brentq

  lo, hi = t_range
  roots = []
  for row in np.unique(logits, axis=0):  # the teacher's paths share their rows
    x = np.sort(row[np.isfinite(row)])[::-1]
    for i in range(1, len(x)):
      if x[i] == x[i - 1]:
        continue  # token i + 1 is tied with token i: the tie group joins at once, when its first member does

      def excess(t: float, i: int = i, x: np.ndarray = x) -> float:
        w = np.exp((x - x[0]) / t)
        return w[:i].sum() / w.sum() - top_p

      if excess(lo) > 0 > excess(hi):
        roots.append(brentq(excess, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps))
  return np.unique(roots)


def supremum(logits: np.ndarray, top_p: float, t_range: tuple[float, float] = (T_GRID[0], T_GRID[-1])) -> dict:
  """The supremum of P(PASS) over T in t_range at eval top-p, exactly, and the T reaching it.

  P(PASS) is smooth in T between kept-set breakpoints and jumps at them, so a grid misses a peak that sits at
  a jump (the teacher's does). Each piece is maximised on its closure with its kept sets held fixed (a dense
  evaluation, then a bounded scalar refinement around the best point), which takes in both one-sided limits
  at every breakpoint. A piece's value at its left end past a breakpoint is the limit as T falls to that
  breakpoint from above: not attained, since the token that makes it joins only past the breakpoint.

  Args:
    logits: [S = 9, V] a model's per-state logits (float; -inf for discarded tokens).
    top_p: the eval top-p (no top-k, as in the sweep).
    t_range: the closed range of T searched (default: the sweep's).

  Returns:
    {"value", "T", "attained"}: the supremum, its T (the lowest one on ties) and whether P(PASS) at T equals it.
  """
  from scipy.optimize import minimize_scalar

  x = np.asarray(logits, np.float64)
  lo, hi = float(t_range[0]), float(t_range[1])
  edges = [lo, *kept_set_breakpoints(x, top_p, (lo, hi)).tolist(), hi]
  best = {"value": -1.0}
  for a, b in zip(edges[:-1], edges[1:]):
    kept = kept_sets(x, 0.5 * (a + b), top_p)
    ts = np.linspace(a, b, PIECE_POINTS)
    vals = _piece_success(x, kept, ts)
    j = int(vals.argmax())
    value, t = float(vals[j]), float(ts[j])
    if 0 < j < len(ts) - 1:
      res = minimize_scalar(lambda u: -_piece_success(x, kept, np.array([u]))[0], bounds=(ts[j - 1], ts[j + 1]),
                            method="bounded", options={"xatol": 1e-12})
      if -res.fun > value:
        value, t = float(-res.fun), float(res.x)
    if value > best["value"]:  # pieces run in increasing T: ties keep the lower T
      best = {"value": value, "T": t, "attained": not (t == a and a != lo)}
  return best


def run(*, samples: int = 2 ** 17, seed: int = 0, steps: int = 1500) -> dict:
  """The whole toy: sample, train, sweep. Returns the JSON-able summary (see `main`)."""
  counts = rollout_counts(seed, samples)
  student = train_student(counts, steps=steps)
  models = jnp.stack([teacher_logits(), jnp.log(ideal_student()), student])  # [3 = MODELS, 9, V]
  grid = np.asarray(sweep(models, jnp.asarray(T_GRID, jnp.float32), jnp.asarray(TOP_P_GRID, jnp.float32)),
                    np.float64)  # [3, P, T]
  best = grid.argmax(-1)  # [3, P]: the lowest T among equal maxima
  out: dict = {"eval_top_p": TOP_P_EVAL, "t_train": T_TRAIN, "top_p_train": TOP_P_TRAIN, "samples": samples,
               "seed": seed, "steps": steps, "t_eval_range": [float(T_GRID[0]), float(T_GRID[-1])], "grid": []}
  tables = np.asarray(models, np.float64)
  for i, p in enumerate(TOP_P_GRID):
    entry = {"top_p": p}
    for j, name in enumerate(MODELS):
      entry[f"{name}_best"] = float(grid[j, i, best[j, i]])
      entry[f"{name}_best_T"] = float(T_GRID[best[j, i]])
      sup = supremum(tables[j], p)
      entry.update({f"{name}_sup": sup["value"], f"{name}_sup_T": sup["T"], f"{name}_sup_attained": sup["attained"]})
    out["grid"].append(entry)
    if p == TOP_P_EVAL:
      out.update({k: v for k, v in entry.items() if k != "top_p"})
  row = TOP_P_GRID.index(TOP_P_EVAL)
  shown = (T_GRID * 100).round().astype(int) % 10 == 0  # the table's T_eval column: 0.1, 0.2, ...
  out["curve"] = {"T": T_GRID[shown].tolist(), **{name: grid[j, row, shown].round(6).tolist()
                                                  for j, name in enumerate(MODELS)}}
  out["decomposition"] = decomposition(student)
  out["states"] = list(STATES)
  out["visits"] = counts.sum(-1).tolist()
  out["student_probs"] = np.asarray(jax.nn.softmax(student, axis=-1), np.float64).round(6).tolist()
  return out


def decomposition(student: jax.Array) -> dict:
  """Eq. 15 loss terms and Eq. 30-31 entropy terms per state type, for the student at init (θ0 = the teacher,
  "base") and trained ("ssd"), at the training truncation's support S_s -> {type: {model: {term: float}}}."""
  idx = jnp.asarray(TYPE_STATE)  # root, fork_A, lock1_A
  teacher = teacher_logits()[idx]
  pair = jnp.stack([teacher, student[idx]])  # [2 (base, ssd), 3, V]
  trunc = {"temperature": T_TRAIN, "top_p": TOP_P_TRAIN}
  loss = ssd_loss_terms(jnp.stack([teacher, teacher]), pair, **trunc)
  ent = entropy_terms(pair, support_logits=jnp.stack([teacher, teacher]), **trunc)
  keys = ("kept_mass", "support_compression", "reshaping", "alignment", "constant", "loss")
  terms = {**{k: loss[k] for k in keys}, **{f"H_{k}": ent[k] for k in ("gate", "head", "tail", "entropy")}}
  # + 0.0 turns -0.0 (a kept mass of 1 gives -log 1 = -0.0) into 0.0 for the table
  return {kind: {model: {k: float(v[m, i]) + 0.0 for k, v in terms.items()} for m, model in enumerate(("base", "ssd"))}
          for i, kind in enumerate(TYPES)}


def _fmt(p: np.ndarray) -> str:
  return " ".join(f"{x:5.3f}" for x in p)


def report(out: dict) -> str:
  """The readable table printed by `main` (everything but the final JSON line)."""
  lines = [f"SSD toy (App. C.4): T_train {out['t_train']}, top-p {out['top_p_train']}, {out['samples']} rollouts, "
           f"seed {out['seed']}, {out['steps']} steps", "",
           f"P(success) vs T_eval at eval top-p {out['eval_top_p']} (ideal = q_s of Eq. 7):",
           "  T_eval  " + "  ".join(f"{m:>7s}" for m in MODELS)]
  curve = out["curve"]
  lines += [f"  {t:6.2f}  " + "  ".join(f"{curve[m][i]:7.4f}" for m in MODELS) for i, t in enumerate(curve["T"])]
  lo, hi = out["t_eval_range"]
  lines += ["", f"best over T_eval ({lo:.2f}..{hi:.2f} step 0.01), value (T):",
            "  top-p  " + "".join(f"{m:>17s}" for m in MODELS) + "  student - teacher"]
  lines += [f"  {g['top_p']:.2f}   " + "".join(f"  {g[m + '_best']:.4f} ({g[m + '_best_T']:.2f})" for m in MODELS)
            + f"  {g['student_best'] - g['teacher_best']:+.4f}" for g in out["grid"]]
  lines += ["", f"supremum over T_eval in [{lo:.2f}, {hi:.2f}], exact (every kept-set breakpoint and the smooth pieces "
            "between them; * = a limit as T falls to the printed T, not attained), value (T):",
            "  top-p  " + "".join(f"{m:>21s}" for m in MODELS) + "  student - teacher"]
  lines += [f"  {g['top_p']:.2f}   " + "".join(
      f"  {g[m + '_sup']:.6f} ({g[m + '_sup_T']:.4f}){' ' if g[m + '_sup_attained'] else '*'}" for m in MODELS)
            + f"  {g['student_sup'] - g['teacher_sup']:+.6f}" for g in out["grid"]]
  lines += [""] + [f"{m} at eval top-p {out['eval_top_p']}: sup P(success) {out[m + '_sup']:.6f} "
                    + ("at" if out[m + "_sup_attained"] else "as T falls to") + f" T_eval {out[m + '_sup_T']:.6f} "
                    f"(the 0.01 grid's best: {out[m + '_best']:.6f} at {out[m + '_best_T']:.2f})"
                    for m in ("teacher", "student")]
  cols = ("kept_mass", "support_compression", "reshaping", "alignment", "constant", "loss", "H_gate", "H_head",
          "H_tail", "H_entropy")
  lines += ["", f"Eq. 15 loss terms and Eq. 30-31 entropy terms (nats) at S_s of T_train {out['t_train']} / top-p "
            f"{out['top_p_train']}; base = the student at init (the teacher), ssd = trained; compression + "
            "reshaping + alignment + constant = loss, H_gate + H_head + H_tail = H_entropy:",
            "  state model " + " ".join(f"{c.replace('support_', ''):>11s}" for c in cols)]
  lines += [f"  {kind:5s} {model:5s} " + " ".join(f"{terms[c]:11.4f}" for c in cols)
            for kind, models in out["decomposition"].items() for model, terms in models.items()]
  ideal = np.asarray(ideal_student())
  lines += ["", "distributions (tok0 .. tok15):"]
  for i, kind in enumerate(TYPES):
    lines += [f"  {kind + ' teacher p0':17s} {_fmt(type_probs()[i])}",
              f"  {kind + ' ideal q_s':17s} {_fmt(ideal[TYPE_STATE[i]])}"]
  for name, probs, n in zip(out["states"], out["student_probs"], out["visits"]):
    lines.append(f"  {'student ' + name:17s} {_fmt(np.asarray(probs))}  ({n} targets)")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
  """CLI: prints the table, then one JSON line with teacher_best(_T), student_best(_T) (the 0.01 grid's best),
  teacher_sup(_T, _attained), student_sup(_T, _attained) (the exact supremum), the grid and more."""
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--samples", type=int, default=2 ** 17, help="teacher rollouts")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--steps", type=int, default=1500, help="optimizer steps")
  args = ap.parse_args(argv)
  start = time.perf_counter()
  out = run(samples=args.samples, seed=args.seed, steps=args.steps)
  out["seconds"] = round(time.perf_counter() - start, 2)
  print(report(out))
  print(f"\n({out['seconds']} s)")
  print(json.dumps(out))


if __name__ == "__main__":
  main()
