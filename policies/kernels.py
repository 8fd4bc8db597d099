r"""Fused CPU kernels (numba) for the table policies, with their torch reference implementations.

Eager torch spends one pass over memory per operation, about 1-2 ns per element on the
2-core CPU; the Monte Carlo engine's policy-side work (sampling, log-probs, the replica score
moments) is a few arithmetic operations per token, so fusing it into one loop per task is
what makes millions of sequences per second possible. Each kernel here has a torch
counterpart that computes the same thing (the CUDA path, and the reference the tests compare
the kernel with, exactly or to float64 rounding):

* ``counter_uniforms`` / ``sample_table_cpu``: uniforms from a *counter-based* generator, so
  any sequence's uniforms can be computed without the ones before it — the kernel draws
  sequences in parallel and still gives the same tokens for the same seed, whatever the
  thread count. Uniform k of a draw with seed s is SplitMix64's output
  ``mix(s + (k + 1)·γ)``, γ = 0x9E3779B97F4A7C15 (Steele, Lea, Flood 2014, "Fast splittable
  pseudorandom number generators", OOPSLA; it passes BigCrush), mapped to
  u = (top b bits + ½)·2^-b with b = 23 (float32) or 52 (float64), so 0 < u < 1 exactly.
  Token = #{v < V-1 : cdf_v < u} (inverse CDF, ``search_cdf``).
* ``gather_rows_cpu``: ``table[ctx, token]`` (the log-probabilities of sampled tokens);
  ``gather_pair``: three tables at once (the engine's ℓ, ℓ^old and ρ).
* ``replica_moments_cpu``: Σ_r g_r and Σ_r g_r ⊙ g_r of the per-replica scores, the
  closed form of ``policies.table.replica_score_moments`` with a per-thread scratch histogram
  reset as it is read (so no ``[R, C, V]`` tensor is zeroed or written).

The kernels take contiguous or strided (also stride-0, i.e. expanded) CPU arrays. numba
compiles each on first use (1-2 s per kernel and dtype; cached on disk afterwards).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment (the golden ratio, 2^64/φ)
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
BITS = {torch.float32: 23, torch.float64: 52}  # uniform resolution 2^-BITS (exact in the dtype)

_G = np.uint64(GAMMA)
_U1 = np.uint64(_M1)
_U2 = np.uint64(_M2)


def draw_seed(generator: torch.Generator) -> int:
    """One 63-bit seed from ``generator`` (advances it, so successive draws get new streams)."""
    return int(torch.randint(0, 2**63 - 1, (), generator=generator, device=generator.device))


# ----------------------------------------------------------------------------- torch reference


def _to_signed(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


def _shr(z: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 bit patterns (torch's ``>>`` is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def counter_uniforms(seed: int, shape: tuple[int, ...], dtype, device) -> Tensor:
    """Uniforms u_k, k = 0..numel-1 in row-major order, of the counter-based generator above,
    computed with int64 torch operations (two's-complement wrap-around) on any device."""
    bits = BITS[dtype]
    n = int(np.prod(shape))
    z = torch.arange(1, n + 1, dtype=torch.int64, device=device) * _to_signed(GAMMA) + _to_signed(seed)
    z = (z ^ _shr(z, 30)) * _to_signed(_M1)
    z = (z ^ _shr(z, 27)) * _to_signed(_M2)
    z = z ^ _shr(z, 31)
    top = _shr(z, 64 - bits).to(torch.float64)
    return ((top + 0.5) * 2.0 ** -bits).to(dtype).reshape(shape)


# ----------------------------------------------------------------------------- numba kernels


@njit(inline="always")
def _uniform(seed, k, scale, shift):
    z = seed + np.uint64(k + 1) * _G
    z = (z ^ (z >> np.uint64(30))) * _U1
    z = (z ^ (z >> np.uint64(27))) * _U2
    z = z ^ (z >> np.uint64(31))
    return (np.float64(z >> shift) + 0.5) * scale


LINEAR_SEARCH_MAX_V = 128  # up to this vocabulary a vectorised count beats a binary search


@njit(inline="always")
def _search(cdf_row, u):
    """#{v < V-1 : cdf_v < u} over the non-decreasing ``cdf_row`` (float64) whose last entry is
    +inf (``_padded``): a vectorised count of all V entries (the +inf is never counted, and a
    trip count of V = 32 leaves no scalar remainder: 2.3 against 3.6 ms per million tokens for
    the V - 1 entries, and 14 ms for a binary search, whose branches mispredict) up to V =
    ``LINEAR_SEARCH_MAX_V``, a binary search of the first V - 1 entries above."""
    last = cdf_row.shape[0] - 1
    if last < LINEAR_SEARCH_MAX_V:
        count = 0
        for v in range(last + 1):
            count += cdf_row[v] < u
        return count
    lo, hi = 0, last
    while lo < hi:
        mid = (lo + hi) >> 1
        if cdf_row[mid] < u:
            lo = mid + 1
        else:
            hi = mid
    return lo


# The uniforms of a sequence are drawn into a scratch row first and searched in a second loop:
# interleaved, the generator's integer chain and the search's compares do not overlap (5.9 against
# 3.3 ms per million tokens at V = 32 on the 2-core CPU, the same tokens). With ``new`` non-empty
# the kernels also gather the flattened ``[P·R·V]`` tables ``new``, ``old``, ``ratio`` and, when it
# is non-empty, ``extra`` at each drawn token's cell into ``lp``, ``lo``, ``rho`` and ``aux``
# (``sample_table(score=...)``; a ``[k, P·R, V]`` stack of cell values is split by ``_first_and_second``).

@njit(inline="always")
def _gather_cell(i, t, row, v, vocab, new, old, ratio, extra, lp, lo, rho, aux):
    cell = row * vocab + v
    lp[i, t] = new[cell]
    lo[i, t] = old[cell]
    rho[i, t] = ratio[cell]
    if extra.shape[0] != 0:  # a second cell value (a loop over k cell values is 30% slower)
        aux[i, t] = extra[cell]


@njit(parallel=True, cache=True)
def _sample_positions(cdf, prompts, seed, scale, shift, out, new, old, ratio, extra, lp, lo, rho, aux):
    n, horizon = out.shape
    n_rows, vocab = cdf.shape[1], cdf.shape[2]
    score = new.shape[0] != 0
    for i in prange(n):
        table = cdf[prompts[i]]
        u = np.empty(horizon)
        for t in range(horizon):
            u[t] = _uniform(seed, i * horizon + t, scale, shift)  # exact in cdf's dtype too
        for t in range(horizon):
            out[i, t] = _search(table[t], u[t])
        if score:
            base = prompts[i] * n_rows
            for t in range(horizon):
                _gather_cell(i, t, base + t, out[i, t], vocab, new, old, ratio, extra, lp, lo, rho, aux)


@njit(parallel=True, cache=True)
def _sample_markov(cdf, prompts, seed, scale, shift, bos, out, new, old, ratio, extra, lp, lo, rho, aux):
    n, horizon = out.shape
    n_rows, vocab = cdf.shape[1], cdf.shape[2]
    score = new.shape[0] != 0
    for i in prange(n):
        table = cdf[prompts[i]]
        u = np.empty(horizon)
        for t in range(horizon):
            u[t] = _uniform(seed, t * n + i, scale, shift)
        prev = bos
        for t in range(horizon):
            prev = _search(table[prev], u[t])
            out[i, t] = prev
        if score:
            base = prompts[i] * n_rows
            prev = bos
            for t in range(horizon):
                _gather_cell(i, t, base + prev, out[i, t], vocab, new, old, ratio, extra, lp, lo, rho, aux)
                prev = out[i, t]


@njit(parallel=True, cache=True)
def _gather_rows(table, ctx, tokens, out):
    n, horizon = tokens.shape
    for i in prange(n):
        for t in range(horizon):
            out[i, t] = table[ctx[i, t], tokens[i, t]]


@njit(parallel=True, cache=True)
def _gather_pair(new, old, ratio, extra, ctx, tokens, lp, lo, rho, aux):
    n, horizon = tokens.shape
    vocab = new.shape[1]
    new, old = new.ravel(), old.ravel()
    step = 1 if ctx.shape[0] > 1 else 0  # ctx [N, T], or [1, T] shared by every row
    for i in prange(n):
        ci = i * step
        for t in range(horizon):
            _gather_cell(i, t, ctx[ci, t], tokens[i, t], vocab, new, old, ratio, extra, lp, lo, rho, aux)


@njit(parallel=True, cache=True)
def _replica_moments(w, ctx, tokens, n_rep, n_ctx, vocab, n_blocks):
    n, horizon = tokens.shape
    per_rep = n // n_rep
    size = n_ctx * vocab
    s_h = np.zeros((n_blocks, size))
    s_h2 = np.zeros((n_blocks, size))
    s_wh = np.zeros((n_blocks, size))
    s_w = np.zeros((n_blocks, n_ctx))
    s_w2 = np.zeros((n_blocks, n_ctx))
    reps_per_block = (n_rep + n_blocks - 1) // n_blocks
    step = 1 if ctx.shape[0] > 1 else 0  # ctx [N, T], or [1, T] shared by every row
    dense_rows = n_ctx <= per_rep * horizon  # W_r read row by row: fewer rows than tokens
    for blk in prange(n_blocks):
        hist = np.zeros(size)  # H_r, reset as it is read
        w_row = np.zeros(n_ctx)  # W_r, reset as it is read
        sh, sh2, swh, sw, sw2 = s_h[blk], s_h2[blk], s_wh[blk], s_w[blk], s_w2[blk]
        for r in range(blk * reps_per_block, min(n_rep, (blk + 1) * reps_per_block)):
            lo, hi = r * per_rep, (r + 1) * per_rep
            for i in range(lo, hi):
                for t in range(horizon):
                    c = ctx[i * step, t]
                    x = np.float64(w[i, t])
                    hist[c * vocab + tokens[i, t]] += x
                    w_row[c] += x
            for i in range(lo, hi):  # first visit of a cell adds H_r, H_r², W_r H_r; later ones 0
                for t in range(horizon):
                    c = ctx[i * step, t]
                    cell = c * vocab + tokens[i, t]
                    h = hist[cell]
                    sh[cell] += h
                    sh2[cell] += h * h
                    swh[cell] += w_row[c] * h
                    hist[cell] = 0.0
            if dense_rows:
                for c in range(n_ctx):
                    x = w_row[c]
                    sw[c] += x
                    sw2[c] += x * x
                    w_row[c] = 0.0
            else:
                for i in range(lo, hi):
                    for t in range(horizon):
                        c = ctx[i * step, t]
                        x = w_row[c]
                        sw[c] += x
                        sw2[c] += x * x
                        w_row[c] = 0.0
    return s_h.sum(0), s_h2.sum(0), s_wh.sum(0), s_w.sum(0), s_w2.sum(0)


# ----------------------------------------------------------------------------- torch-facing functions


def _np(x: Tensor) -> np.ndarray:
    return x.detach().numpy()


def check_tokens(tokens: Tensor, vocab: int) -> None:
    """``tokens`` must be an integer tensor with values in [0, V) (the kernels index with them)."""
    if not isinstance(tokens, Tensor) or tokens.is_floating_point() or tokens.dtype == torch.bool:
        raise ValueError(f"tokens must be an integer tensor, got {getattr(tokens, 'dtype', type(tokens).__name__)}")
    if tokens.numel():
        lo, hi = torch.aminmax(tokens)
        if int(lo) < 0 or int(hi) >= vocab:
            raise ValueError(f"tokens has values in [{int(lo)}, {int(hi)}]; allowed: token ids in [0, {vocab})")


def _shared_rows(ctx: Tensor) -> Tensor:
    """``ctx [N, T]``, or its first row ``[1, T]`` when every row is the same view (an expanded
    ``[T]`` arange: a tabular policy's contexts), which the kernels read for every row."""
    return ctx[:1] if ctx.dim() == 2 and ctx.shape[0] > 1 and ctx.stride(0) == 0 else ctx


def _prompt_index(prompts: Tensor | None, n: int, device) -> Tensor:
    """Per-sequence index into the leading (prompt) axis of a ``[P, R, V]`` table; zeros (an
    expanded view) for an unconditioned policy viewed as P = 1."""
    if prompts is None:
        return torch.zeros(1, dtype=torch.int64, device=device).expand(n)
    return prompts.to(torch.int64)


def sample_table(cdf: Tensor, prompts: Tensor | None, n: int, horizon: int, seed: int, *,
                 markov_bos: int | None = None, score: tuple[Tensor, Tensor, Tensor] | None = None,
                 score_out: tuple[Tensor, Tensor, Tensor] | None = None):
    """Tokens ``[n, T]`` (int64) by inverse CDF of the counter uniforms with ``seed``.

    ``cdf`` is ``[P, R, V]`` (P = 1 without prompts; its last column is ignored, so rounding in
    the cumulative sum cannot push u past the last token). Positional (``markov_bos=None``):
    token t of sequence i uses row t and uniform k = i·T + t. Markov: token t uses the row of
    token t - 1 (row ``markov_bos`` for t = 0) and uniform k = t·n + i. The numba kernel on the
    CPU, ``sample_table_torch`` elsewhere: the same tokens for the same ``cdf`` and seed.

    ``score = (new, old, ratio)``, two ``[P·R, V]`` tables and float64 cell values ``[P·R, V]`` or
    ``[k, P·R, V]`` with k = 1 or 2 (CPU only), returns ``(tokens, lp, lo, rho)`` with each gathered
    at every drawn token's (row, token) cell in the same pass (``rho`` ``[n, T]`` or ``[k, n, T]``):
    ``gather_pair(new, old, ratio, contexts, tokens)`` without a second pass over the tokens;
    ``score_out``, three contiguous CPU tensors of those shapes and the tables' dtypes, receives
    them (a caller streaming chunks reuses its buffers: fresh ones cost a page fault per 4 KiB,
    about as much as the sampling itself).
    """
    if score is not None:
        if cdf.device.type != "cpu":
            raise ValueError(f"score= is a CPU kernel; the tables are on {cdf.device}")
        return sample_table_cpu(cdf, prompts, n, horizon, seed, markov_bos=markov_bos, score=score,
                                score_out=score_out)
    if cdf.device.type == "cpu":
        return sample_table_cpu(cdf, prompts, n, horizon, seed, markov_bos=markov_bos)
    return sample_table_torch(cdf, prompts, n, horizon, seed, markov_bos=markov_bos)


def sample_table_cpu(cdf, prompts, n, horizon, seed, *, markov_bos=None, score=None, score_out=None):
    """``sample_table`` by the numba kernels."""
    out = torch.empty(n, horizon, dtype=torch.int64)
    idx = _np(_prompt_index(prompts, n, "cpu"))
    bits = BITS[cdf.dtype]
    stream = (np.uint64(seed), 2.0 ** -bits, np.uint64(64 - bits))  # seed, scale, shift of _uniform
    if score is None:  # empty tables and outputs: the kernel gathers nothing
        tables = (torch.empty(0, dtype=cdf.dtype), torch.empty(0, dtype=cdf.dtype), torch.empty(1, 0, dtype=torch.float64))
        gathered = (torch.empty(0, 0, dtype=cdf.dtype), torch.empty(0, 0, dtype=cdf.dtype),
                    torch.empty(0, 0, 0, dtype=torch.float64))
        kernel_out = (*gathered[:2], gathered[2].reshape(1, 0, 0))
    else:
        cells = (cdf.shape[0] * cdf.shape[1], cdf.shape[2])
        if (tuple(score[0].shape) != cells or tuple(score[1].shape) != cells or tuple(score[2].shape[-2:]) != cells
                or score[2].dim() not in (2, 3)
                or (score[2].dim() == 3 and score[2].shape[0] not in (1, 2))):
            raise ValueError(f"score tables have shapes {[tuple(x.shape) for x in score]}; allowed: "
                             f"[P·R, V] = {list(cells)}, and [P·R, V] or [k, P·R, V] cell values, k = 1 or 2")
        lead = tuple(score[2].shape[:-2])
        tables = (*(x.detach().contiguous().reshape(-1) for x in score[:2]),
                  score[2].detach().to(torch.float64).contiguous().reshape(-1, cells[0] * cells[1]))
        shapes = ((n, horizon), (n, horizon), (*lead, n, horizon))
        dtypes = (score[0].dtype, score[1].dtype, torch.float64)
        gathered = (tuple(torch.empty(shp, dtype=dt) for shp, dt in zip(shapes, dtypes)) if score_out is None
                    else score_out)
        for x, shp, dt in zip(gathered, shapes, dtypes):
            if x.shape != shp or x.dtype != dt or not x.is_contiguous() or x.device.type != "cpu":
                raise ValueError(f"score_out has a {x.dtype} tensor of shape {tuple(x.shape)}; allowed: "
                                 f"contiguous CPU tensors of shapes {[list(s) for s in shapes]}, the tables' dtypes")
        kernel_out = (*gathered[:2], gathered[2].reshape(-1, n, horizon))
    cdf = _np(_padded(cdf))
    arrays = (*(_np(x) for x in tables[:2]), *_first_and_second(tables[2]), *(x.numpy() for x in kernel_out[:2]),
              *_first_and_second(kernel_out[2]))
    if markov_bos is None:
        _sample_positions(cdf, idx, *stream, out.numpy(), *arrays)
    else:
        _sample_markov(cdf, idx, *stream, markov_bos, out.numpy(), *arrays)
    return out if score is None else (out, *gathered)


def _first_and_second(stack: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """A ``[k, ...]`` stack (k = 1 or 2) as the kernels' pair of arrays: the first, and the second
    or an empty array of one dimension fewer (the kernels then skip it)."""
    first = _np(stack[0])
    return first, (_np(stack[1]) if stack.shape[0] > 1 else np.empty((0,) * first.ndim, first.dtype))


def _padded(cdf: Tensor) -> Tensor:
    """``cdf`` in float64 (exact; u is exact in float64 too, so the comparisons are unchanged) with
    its last column, which the search ignores, set to +inf (``_search`` counts all V entries)."""
    out = cdf.to(torch.float64, copy=True)
    out[..., -1] = torch.inf
    return out


def sample_table_torch(cdf, prompts, n, horizon, seed, *, markov_bos=None) -> Tensor:
    """``sample_table`` with torch operations (any device; the reference of the kernels)."""
    idx = _prompt_index(prompts, n, cdf.device)
    if markov_bos is None and prompts is None:  # one [T, V] table: search it row by row
        u = counter_uniforms(seed, (n, horizon), cdf.dtype, cdf.device)
        return search_cdf(cdf[0], u.T).T.contiguous()
    if markov_bos is None:
        u = counter_uniforms(seed, (n, horizon, 1), cdf.dtype, cdf.device)
        return search_cdf(cdf[idx], u).squeeze(-1)
    u = counter_uniforms(seed, (horizon, n, 1), cdf.dtype, cdf.device)
    tokens = torch.empty(n, horizon, dtype=torch.int64, device=cdf.device)
    prev = torch.full((n,), markov_bos, dtype=torch.int64, device=cdf.device)
    for t in range(horizon):
        prev = search_cdf(cdf[idx, prev].unsqueeze(1), u[t].unsqueeze(1)).reshape(n)
        tokens[:, t] = prev
    return tokens


def search_cdf(cdf: Tensor, u: Tensor) -> Tensor:
    """Tokens #{v < V-1 : cdf_v < u} for rows ``cdf [..., V]`` and uniforms ``u [..., k]`` as
    ``[..., k]`` (``torch.searchsorted``; the kernels' ``_search``). The last column is ignored,
    so rounding in the cumulative sum can never let u fall past the last token."""
    return torch.searchsorted(cdf[..., :-1].contiguous(), u.contiguous())


def gather_rows(table: Tensor, ctx: Tensor, tokens: Tensor) -> Tensor:
    """``table[ctx, tokens]`` as ``[N, T]`` for ``table [C, V]`` and ``ctx, tokens [N, T]`` (either
    may be an expanded view); tokens are checked to lie in [0, V). Differentiable in ``table``
    (the torch path is taken when autograd records it)."""
    check_tokens(tokens, table.shape[-1])
    if table.device.type != "cpu" or (table.requires_grad and torch.is_grad_enabled()):
        return gather_rows_torch(table, ctx, tokens)
    out = torch.empty(tokens.shape, dtype=table.dtype)
    _gather_rows(_np(table), _np(ctx), _np(tokens), out.numpy())
    return out


def gather_rows_torch(table: Tensor, ctx: Tensor, tokens: Tensor) -> Tensor:
    """``gather_rows`` with torch operations (the reference of the kernel)."""
    return table.reshape(-1).take(ctx * table.shape[-1] + tokens)


def gather_pair(new: Tensor, old: Tensor, ratio: Tensor, ctx: Tensor,
                tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(new[ctx, tokens], old[ctx, tokens], ratio[..., ctx, tokens])`` for two ``[C, V]`` tables,
    float64 cell values ``ratio [C, V]`` or ``[k, C, V]`` (gathered as ``[N, T]`` or ``[k, N, T]``)
    and ``ctx, tokens [N, T]`` (either may be an expanded view), in one pass: ``gather_rows`` of
    each. Tokens are checked to lie in [0, V)."""
    check_tokens(tokens, new.shape[-1])
    if new.device.type != "cpu":
        return gather_pair_torch(new, old, ratio, ctx, tokens)
    values = ratio.to(torch.float64).contiguous()
    lead = tuple(values.shape[:-2])
    if lead not in ((), (1,), (2,)):
        raise ValueError(f"ratio has shape {tuple(ratio.shape)}; allowed: [C, V] or [k, C, V] with k = 1 or 2")
    out = (torch.empty(tokens.shape, dtype=new.dtype), torch.empty(tokens.shape, dtype=old.dtype),
           torch.empty(*lead, *tokens.shape, dtype=torch.float64))
    _gather_pair(_np(new.contiguous()), _np(old.contiguous()), *_first_and_second(values.reshape(-1, new.numel())),
                 _np(_shared_rows(ctx)), _np(tokens), out[0].numpy(), out[1].numpy(),
                 *_first_and_second(out[2].reshape(-1, *tokens.shape)))
    return out


def gather_pair_torch(new, old, ratio, ctx, tokens) -> tuple[Tensor, Tensor, Tensor]:
    """``gather_pair`` with torch operations (the reference of the kernel)."""
    values = ratio.to(torch.float64)
    gathered = (gather_rows_torch(values, ctx, tokens) if values.dim() == 2
                else torch.stack([gather_rows_torch(v, ctx, tokens) for v in values]))
    return gather_rows_torch(new, ctx, tokens), gather_rows_torch(old, ctx, tokens), gathered


def replica_moments(weights: Tensor, ctx: Tensor, tokens: Tensor, n_rep: int,
                    probs: Tensor) -> tuple[Tensor, Tensor]:
    r"""Σ_r g_r and Σ_r g_r ⊙ g_r (float64, ``[C·V]``) of g_r = Σ_{i∈r,t} w_it (e_{o_it} - p_{c_it})
    for ``probs [C, V]``, replica r being the r-th block of N / n_rep rows.

    With H_r[c, v] = Σ_{i∈r, t: c_it = c, o_it = v} w_it and W_r[c] = Σ_v H_r[c, v],
    g_r[c] = H_r[c] - W_r[c] p_c, so per coordinate Σ_r g_r = Σ_r H_r - (Σ_r W_r) p and
    Σ_r g_r² = Σ_r H_r² - 2 p ⊙ Σ_r W_r H_r + p² ⊙ Σ_r W_r². Weights are summed in float64.
    """
    check_tokens(tokens, probs.shape[-1])
    n = tokens.shape[0]
    if isinstance(n_rep, bool) or not isinstance(n_rep, int) or n_rep < 1 or n % n_rep:
        raise ValueError(f"n_rep={n_rep!r} is invalid; allowed: an int >= 1 dividing N={n} (the rows)")
    if weights.device.type == "cpu":
        return replica_moments_cpu(weights, ctx, tokens, n_rep, probs)
    return replica_moments_torch(weights, ctx, tokens, n_rep, probs)


def _combine(probs, s_h, s_h2, s_wh, s_w, s_w2):
    vocab = probs.shape[-1]
    p = probs.detach().to(torch.float64).reshape(-1)
    s_w, s_w2 = s_w.repeat_interleave(vocab), s_w2.repeat_interleave(vocab)
    return s_h - s_w * p, s_h2 - 2 * p * s_wh + p * p * s_w2


def replica_moments_cpu(weights, ctx, tokens, n_rep, probs) -> tuple[Tensor, Tensor]:
    """``replica_moments`` by the numba kernel (per-thread scratch histograms, reset as read)."""
    n_ctx, vocab = probs.shape
    n_blocks = max(1, min(n_rep, 4 * numba.get_num_threads()))
    sums = _replica_moments(_np(weights), _np(_shared_rows(ctx)), _np(tokens), n_rep, n_ctx, vocab, n_blocks)
    return _combine(probs, *(torch.from_numpy(x) for x in sums))


def replica_moments_torch(weights, ctx, tokens, n_rep, probs) -> tuple[Tensor, Tensor]:
    """``replica_moments`` with torch operations (the reference of the kernel): Σ_r H_r² =
    Σ_{tokens at (c, v)} w_it H_{r(i)}[c, v] and Σ_r W_r H_r = Σ_{tokens at (c, v)} w_it W_{r(i)}[c],
    each one gather of the replica's histogram and one weighted histogram."""
    n_ctx, vocab = probs.shape
    n = tokens.shape[0]
    dev = tokens.device
    rep = torch.arange(n_rep, device=dev).repeat_interleave(n // n_rep)[:, None]
    rep_ctx = (rep * n_ctx + ctx).reshape(-1)
    cell = (ctx * vocab + tokens).reshape(-1)
    rep_cell = rep_ctx * vocab + tokens.reshape(-1)
    w = weights.detach().to(torch.float64).reshape(-1)

    def hist(size, index, values):
        return torch.zeros(size, dtype=torch.float64, device=dev).index_add_(0, index, values)

    h_r = hist(n_rep * n_ctx * vocab, rep_cell, w)
    w_r = hist(n_rep * n_ctx, rep_ctx, w)
    size = n_ctx * vocab
    w_rows = w_r.reshape(n_rep, n_ctx)
    return _combine(probs, hist(size, cell, w), hist(size, cell, w * h_r.take(rep_cell)),
                    hist(size, cell, w * w_r.take(rep_ctx)), w_rows.sum(0), (w_rows * w_rows).sum(0))
