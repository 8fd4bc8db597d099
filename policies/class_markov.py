r"""ClassMarkovPolicy: a Markov chain over S token classes, for long sequences over a large vocabulary.

logits ``[S + 1, V]``: row ``s < S`` is the next-token distribution after a token of class s,
where the class of token v is c(v) = v mod S, and row ``S`` is the first token's distribution
(begin of sequence). So π(o) = Π_t softmax(logits[r_t])(o_t) with r_1 = S and r_t = c(o_{t−1}).

* S = 1 with the begin row equal to row 0 is a stationary *independent* policy: every token is
  drawn from the same distribution, so the token log-ratios of two such policies are i.i.d.;
* S > 1 makes the tokens — and the token log-ratios log ρ_t = ℓ_new(o_t | r_t) − ℓ_old(o_t | r_t)
  — dependent across positions through the class chain r_t. With "sticky" rows (most mass on
  tokens of the row's own class) the chain stays in a class for many tokens, so log ρ_t is
  autocorrelated over that many positions;
* S = V is the ordinary first-order ``MarkovPolicy`` (its row v is the row after token v).

The table has (S + 1)·V entries whatever T is (V = 32,768 with S = 4 is 164k entries), so T = 4096
costs nothing in parameters. It is a ``TablePolicy``: closed-form score, enumeration, ``perturb``
and the Monte Carlo engine work unchanged. Sampling is one counter-based uniform per token
(``policies.kernels``): token t of sequence i uses uniform i·T + t, so the tokens of sequences
[start, start + n) can be drawn without the ones before them (``sample_block``), and drawing a
sample in blocks gives exactly the tokens of one draw. ``sequence_sums`` samples and accumulates
per-sequence sums of log-probabilities in one fused pass, storing no token: memory O(n), not O(n·T).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from policies.kernels import (
    BITS,
    _uniform,
    check_tokens,
    counter_uniforms,
    draw_seed,
    search_cdf,
)
from policies.table import TablePolicy, check_count, check_horizon


def guide_table(cdf: np.ndarray) -> np.ndarray:
    """``[R, V]`` int64 guide of the rows of ``cdf [R, V]`` (Chen & Asau 1974, indexed search):
    g[r, k] = #{v < V − 1 : cdf[r, v] < k / V}, a lower bound of the inverse-CDF token of every
    u ≥ k / V, so the search for u starts at g[r, ⌊u·V⌋] and steps up (about two steps on average)."""
    n_rows, vocab = cdf.shape
    grid = np.arange(vocab, dtype=np.float64) / vocab
    return np.stack([np.searchsorted(cdf[r, :-1], grid, side="left") for r in range(n_rows)]).astype(np.int64)


@njit(inline="always")
def _guided(cdf_row, guide_row, u):
    """#{v < V − 1 : cdf_v < u} (the same token as ``policies.kernels._search``), by indexed search."""
    last = cdf_row.shape[0] - 1
    v = guide_row[min(np.int64(u * (last + 1)), last)]
    while v < last and cdf_row[v] < u:
        v += 1
    return v


LANES = 16  # sequences advanced together per thread: their table reads overlap in memory


@njit(parallel=True, cache=True)
def _class_markov_kernel(cdf, guide, lp_a, lp_b, n_states, seed, scale, shift, start, n, horizon, tokens, sums,
                         store):
    """Sample sequences start .. start + n − 1 (token t of sequence i: uniform i·T + t). With ``store``
    write the tokens to ``tokens [n, T]``, otherwise (Σ_t lp_a[r_t, o_t], Σ_t lp_b[r_t, o_t]) to
    ``sums [n, 2]`` (the other output is not touched). ``LANES`` sequences advance position by position together: each token is a
    few dependent table reads, and interleaving independent sequences lets their reads overlap."""
    n_blocks = (n + LANES - 1) // LANES
    for blk in prange(n_blocks):
        lo = blk * LANES
        width = min(LANES, n - lo)
        row = np.full(LANES, n_states, dtype=np.int64)
        sa = np.zeros(LANES)
        sb = np.zeros(LANES)
        for t in range(horizon):
            for j in range(width):
                r = row[j]
                tok = _guided(cdf[r], guide[r], _uniform(seed, (start + lo + j) * horizon + t, scale, shift))
                if store:
                    tokens[lo + j, t] = tok
                else:
                    sa[j] += lp_a[r, tok]
                    sb[j] += lp_b[r, tok]
                row[j] = tok % n_states
        if not store:
            for j in range(width):
                sums[lo + j, 0] = sa[j]
                sums[lo + j, 1] = sb[j]


class ClassMarkovPolicy(TablePolicy):
    """Markov chain over the token classes v mod S (see the module doc).

    Args:
        logits: ``[S + 1, V]`` floating tensor (finite); row S is the begin-of-sequence row.
        horizon: T, the number of positions sampled.
        eos: token id that ends a sequence, or ``None``.
    """

    def __init__(self, logits: Tensor, *, horizon: int, eos: int | None = None) -> None:
        super().__init__(logits, eos=eos, rows_name="S + 1")
        check_horizon(horizon)
        if logits.dim() != 2 or self.n_rows < 2:
            raise ValueError(f"logits has shape {tuple(logits.shape)}; allowed: [S + 1, V] with S >= 1 "
                             "(one row per token class plus the begin row; no prompt dimension)")
        self._horizon = horizon

    @property
    def horizon(self) -> int:
        return self._horizon

    @property
    def n_states(self) -> int:
        """S, the number of token classes (rows other than the begin row)."""
        return self.n_rows - 1

    def with_logits(self, logits: Tensor) -> ClassMarkovPolicy:
        return ClassMarkovPolicy(logits, horizon=self.horizon, eos=self.eos)

    def with_horizon(self, horizon: int) -> ClassMarkovPolicy:
        """The same table sampled for ``horizon`` positions (sharing the sampling tables already built)."""
        out = ClassMarkovPolicy(self.logits, horizon=horizon, eos=self.eos)
        out._cached = getattr(self, "_cached", None)
        return out

    def rows(self, tokens: Tensor) -> Tensor:
        """Token t is drawn from the row of class c(o_{t−1}) = o_{t−1} mod S; the first from row S."""
        bos = torch.full_like(tokens[:, :1], self.n_states)
        return torch.cat([bos, tokens[:, :-1] % self.n_states], -1)

    def class_transitions(self) -> Tensor:
        """``[S + 1, S]``: row r's probability that the next token has class s (Σ_{v ≡ s} p_r(v))."""
        probs = torch.softmax(self.logits, -1)
        out = torch.zeros(self.n_rows, self.n_states, dtype=probs.dtype, device=probs.device)
        classes = torch.arange(self.vocab, device=probs.device) % self.n_states
        return out.index_add_(1, classes, probs)

    def row_marginals(self) -> Tensor:
        """``[T, S + 1]``: μ_1 = δ_S (the begin row), μ_{t+1}[:S] = μ_t · class_transitions()."""
        trans = self.class_transitions()
        mu = torch.zeros(self.n_rows, dtype=trans.dtype, device=trans.device)
        mu[self.n_states] = 1.0
        out = []
        for _ in range(self.horizon):
            out.append(mu)
            mu = torch.cat([mu @ trans, torch.zeros_like(mu[:1])])
        return torch.stack(out)

    def stationary_classes(self) -> Tensor:
        """``[S]`` stationary distribution π of the class chain: π·(P − I) = 0 with Σ π = 1, for P the
        ``[S, S]`` class-to-class block of ``class_transitions`` (solved directly; a ValueError if
        the solution is not a probability vector, i.e. the chain has no unique stationary law)."""
        trans = self.class_transitions()[: self.n_states]
        a = (trans - torch.eye(self.n_states, dtype=trans.dtype, device=trans.device)).T.clone()
        a[-1] = 1.0
        b = torch.zeros(self.n_states, dtype=trans.dtype, device=trans.device)
        b[-1] = 1.0
        pi = torch.linalg.solve(a, b)
        if not bool((pi >= -1e-12).all()):
            raise ValueError("the class chain has no unique stationary distribution; allowed: an irreducible chain")
        return pi.clamp_min(0.0)

    def sample(self, n: int, *, generator: torch.Generator,
               prompts: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(tokens [n, T], mask [n, T])``: one seed from ``generator``, then ``sample_block(seed, 0, n)``."""
        check_count("n", n)
        self._prompts(prompts, n)  # no prompt dimension: prompts must be None
        tokens = self.sample_block(draw_seed(generator), 0, n)
        return tokens, self.mask(tokens)

    def sample_block(self, seed: int, start: int, n: int) -> Tensor:
        """Tokens ``[n, T]`` of sequences ``start .. start + n − 1`` of the stream with ``seed``
        (token t of sequence i uses uniform i·T + t): the numba kernel on the CPU,
        ``sample_block_torch`` elsewhere — the same tokens."""
        check_count("n", n)
        if self.device.type != "cpu":
            return self.sample_block_torch(seed, start, n)
        out = torch.empty(n, self.horizon, dtype=torch.int64)
        zero = np.zeros((1, 1))
        _class_markov_kernel(*self._tables(), zero, zero, self.n_states, *self._stream(seed), np.int64(start), n,
                             self.horizon, out.numpy(), np.empty((1, 2)), True)
        return out

    def sample_block_torch(self, seed: int, start: int, n: int) -> Tensor:
        """``sample_block`` with torch operations, position by position (the kernel's reference)."""
        t_len = self.horizon
        u = counter_uniforms(seed, ((start + n) * t_len,), self.dtype, self.device)[start * t_len:].reshape(n, t_len)
        cdf = self.cdf_table()[0]
        tokens = torch.empty(n, t_len, dtype=torch.int64, device=self.device)
        row = torch.full((n,), self.n_states, dtype=torch.int64, device=self.device)
        for t in range(t_len):
            tokens[:, t] = search_cdf(cdf[row], u[:, t : t + 1]).reshape(n)
            row = tokens[:, t] % self.n_states
        return tokens

    def sequence_sums(self, seed: int, start: int, n: int, log_probs_a: Tensor,
                      log_probs_b: Tensor) -> Tensor:
        """``[n, 2]`` float64: (Σ_t a[r_t, o_t], Σ_t b[r_t, o_t]) for sequences ``start .. start + n − 1``
        of ``sample_block(seed, start, n)``, for two ``[S + 1, V]`` tables (e.g. log π_new and
        log π_old): sampled and summed in one pass, no token stored (CPU; summed in order t = 1..T)."""
        check_count("n", n)
        for name, table in (("log_probs_a", log_probs_a), ("log_probs_b", log_probs_b)):
            if not isinstance(table, Tensor) or table.shape != self.logits.shape:
                raise ValueError(f"{name} must be a tensor of shape {tuple(self.logits.shape)}, got "
                                 f"{getattr(table, 'shape', type(table).__name__)}")
        if self.device.type != "cpu":
            raise ValueError(f"device={self.device} is invalid for sequence_sums; allowed: cpu")
        out = np.empty((n, 2))
        _class_markov_kernel(*self._tables(), log_probs_a.detach().to(torch.float64).contiguous().numpy(),
                             log_probs_b.detach().to(torch.float64).contiguous().numpy(), self.n_states,
                             *self._stream(seed), np.int64(start), n, self.horizon, np.empty((1, 1), dtype=np.int64),
                             out, False)
        return torch.from_numpy(out)

    def _tables(self) -> tuple[np.ndarray, np.ndarray]:
        """(cdf, guide) of the rows in float64, computed once per policy (the logits are fixed)."""
        if getattr(self, "_cached", None) is None:
            cdf = self.cdf_table()[0].to(torch.float64).contiguous().numpy()
            self._cached = (cdf, guide_table(cdf))
        return self._cached

    def _stream(self, seed: int):
        bits = BITS[self.dtype]
        return np.uint64(seed), 2.0 ** -bits, np.uint64(64 - bits)


@njit(parallel=True, cache=True)
def _score_sq_norms(w, ctx, tokens, probs, p_sq, n_blocks, out, hist_sum, w_sum):
    """out[i] = ‖g_i‖² of g_i = Σ_t w_it (e_{o_it} − p_{c_it}); per block, hist_sum[blk] += Σ_i H_i and
    w_sum[blk] += Σ_i W_i (see ``score_sq_norms``)."""
    n, horizon = tokens.shape
    n_ctx, vocab = probs.shape
    per = (n + n_blocks - 1) // n_blocks
    for blk in prange(n_blocks):
        hist = np.zeros(n_ctx * vocab)  # H_i, reset as it is read
        w_row = np.zeros(n_ctx)  # W_i, reset as it is read
        for i in range(blk * per, min(n, (blk + 1) * per)):
            for t in range(horizon):
                x = np.float64(w[i, t])
                hist[ctx[i, t] * vocab + tokens[i, t]] += x
                w_row[ctx[i, t]] += x
                hist_sum[blk, ctx[i, t] * vocab + tokens[i, t]] += x
                w_sum[blk, ctx[i, t]] += x
            acc = 0.0
            for t in range(horizon):  # each (c, v) cell once: later visits read the reset 0
                c = ctx[i, t]
                cell = c * vocab + tokens[i, t]
                h = hist[cell]
                acc += h * h - 2.0 * w_row[c] * h * probs[c, tokens[i, t]]
                hist[cell] = 0.0
            for t in range(horizon):  # each row once
                c = ctx[i, t]
                acc += w_row[c] * w_row[c] * p_sq[c]
                w_row[c] = 0.0
            out[i] = acc


def score_sq_norms(policy: TablePolicy, weights: Tensor, tokens: Tensor, *, probs: Tensor | None = None,
                   ctx: Tensor | None = None) -> Tensor:
    """``[N]`` float64: ‖g_i‖² of each sequence's score (``score_moments``, first output)."""
    return score_moments(policy, weights, tokens, probs=probs, ctx=ctx)[1]


def score_moments(policy: TablePolicy, weights: Tensor, tokens: Tensor, *, probs: Tensor | None = None,
                  ctx: Tensor | None = None, blocks: int | None = None) -> tuple[Tensor, Tensor]:
    r"""(Σ_i g_i shaped like ``logits``, ``[N]`` ‖g_i‖²), float64, for each sequence's score
    g_i = Σ_t w_it ∇_logits log π(o_it) of a table policy without prompts, g_i[c] = H_i[c] − W_i[c]·p_c
    (``TablePolicy.score_sum`` of one row):

    ‖g_i‖² = Σ_{c,v} H_i[c,v]² − 2 Σ_c W_i[c] Σ_v H_i[c,v] p_c[v] + Σ_c W_i[c]² ‖p_c‖²,

    in O(T) per sequence with a scratch histogram reset as it is read (no ``[N, C·V]`` tensor),
    a numba kernel (CPU). The reference is ``score_sum`` of each row (and of all rows). ``probs``
    (``[C, V]`` float64 row probabilities) and ``ctx`` (``policy.contexts(tokens)``) may be passed when
    the caller has them already (they are not recomputed; the caller vouches that they match).
    With ``blocks`` = B dividing N, the first output is ``[B, *logits.shape]``: Σ_i g_i over each of
    B consecutive blocks of N / B sequences (one kernel call for B batches)."""
    if policy.n_prompts is not None:
        raise ValueError("score_moments takes a policy without prompts; allowed: n_prompts=None")
    check_tokens(tokens, policy.vocab)
    if not isinstance(weights, Tensor) or weights.shape != tokens.shape:
        raise ValueError(f"weights must be a tensor of the tokens' shape {tuple(tokens.shape)}, got "
                         f"{getattr(weights, 'shape', type(weights).__name__)}")
    if probs is None:
        probs = torch.softmax(policy.logits.detach(), -1).to(torch.float64).reshape(-1, policy.vocab)
    out = np.empty(tokens.shape[0])
    ctx = (policy.contexts(tokens) if ctx is None else ctx).contiguous()
    if blocks is not None and (isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1
                               or tokens.shape[0] % blocks):
        raise ValueError(f"blocks={blocks!r} is invalid; allowed: None or an int >= 1 dividing N={tokens.shape[0]}")
    n_blocks = blocks or max(1, min(tokens.shape[0], 2 * numba.get_num_threads()))
    hist_sum = np.zeros((n_blocks, probs.numel()))
    w_sum = np.zeros((n_blocks, probs.shape[0]))
    _score_sq_norms(weights.detach().to(torch.float64).contiguous().numpy(), ctx.numpy(),
                    tokens.contiguous().numpy(), probs.contiguous().numpy(), (probs * probs).sum(-1).numpy(),
                    n_blocks, out, hist_sum, w_sum)
    per_block = (torch.from_numpy(hist_sum).reshape(n_blocks, *probs.shape)
                 - torch.from_numpy(w_sum)[:, :, None] * probs)
    if blocks is not None:
        return per_block.reshape(blocks, *policy.logits.shape), torch.from_numpy(out)
    return per_block.sum(0).reshape(policy.logits.shape), torch.from_numpy(out)
