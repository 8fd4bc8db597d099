r"""Softmax-table policies: every token is drawn from one row of a logit table.

A ``TablePolicy`` holds ``logits`` of shape ``[R, V]`` (one row per *context*), or
``[P, R, V]`` when it is conditioned on a prompt id in ``[0, P)``. Token t of a sequence is
drawn from ``softmax(logits[prompt, row_t])``, where the row index ``row_t`` depends on the
family: the position t (``TabularPolicy``) or the previous token (``MarkovPolicy``). Two facts
follow for every family, and the engines rely on them:

* the score is closed form, ∂ log softmax(θ_c)(o)/∂θ_c = e_o - p_c, so
  Σ_it w_it ∇ log π(o_it) is a weighted histogram over (row, token) minus
  Σ_c (Σ_{it: c_it = c} w_it) p_c — no per-sample ``[N, T, V]`` tensor (``score_sum``);
* all T positions are sampled, including those after EOS (padding). Each row sums to one, so
  summing ``prob · f(valid prefix)`` over all V^T token arrays is the expectation of ``f``
  over sequences (``enumerate``).

Variable length: with an ``eos`` token the sequence ends at the first EOS (inclusive) and the
mask marks that valid prefix.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from policies.kernels import draw_seed, gather_pair, gather_rows, replica_moments, sample_table, search_cdf

DEFAULT_MAX_SEQUENCES = 1 << 22


def check_horizon(horizon: Any) -> None:
    """``horizon`` (T) must be an int >= 1."""
    if isinstance(horizon, bool) or not (isinstance(horizon, int) and horizon >= 1):
        raise ValueError(f"horizon={horizon!r} is invalid; allowed: an int T >= 1")


def check_count(name: str, n: Any) -> None:
    """``n`` must be an int >= 1."""
    if isinstance(n, bool) or not (isinstance(n, int) and n >= 1):
        raise ValueError(f"{name}={n!r} is invalid; allowed: an int >= 1")


def check_eos(eos, vocab: int) -> None:
    """``eos`` must be ``None`` or a token id in [0, V)."""
    if eos is not None and (isinstance(eos, bool) or not (isinstance(eos, int) and 0 <= eos < vocab)):
        raise ValueError(f"eos={eos!r} is invalid; allowed: None or an int in [0, {vocab})")


def check_prompt(prompt, n_prompts: int | None) -> None:
    """One prompt id: an int in [0, P) for a prompt-conditioned policy."""
    if n_prompts is None or isinstance(prompt, bool) or not (isinstance(prompt, int) and 0 <= prompt < n_prompts):
        raise ValueError(f"prompt={prompt!r} is invalid; allowed: an int in [0, {n_prompts}) for a "
                         "prompt-conditioned policy")


def check_prompts(prompts: Tensor | None, n: int, n_prompts: int | None, device) -> Tensor | None:
    """``prompts`` against a policy with ``n_prompts`` (P or None): ``[n]`` ints in [0, P) iff P
    is set; returned on ``device``."""
    if n_prompts is None:
        if prompts is not None:
            raise ValueError("prompts were given to a policy without a prompt dimension; "
                             "allowed: prompts=None (or build the policy with prompts)")
        return None
    if prompts is None:
        raise ValueError(f"prompts=None is invalid for a policy conditioned on P={n_prompts} prompts; "
                         "allowed: an int tensor [N] with values in [0, P)")
    if not isinstance(prompts, Tensor) or prompts.shape != (n,) or prompts.is_floating_point():
        raise ValueError(f"prompts must be an int tensor of shape ({n},), got "
                         f"{getattr(prompts, 'shape', type(prompts).__name__)}")
    if n and not bool(((prompts >= 0) & (prompts < n_prompts)).all()):
        raise ValueError(f"prompts has values outside [0, {n_prompts}); allowed: prompt ids in [0, P)")
    return prompts.to(device)


def eos_mask(tokens: Tensor, eos: int | None, dtype) -> Tensor:
    """``[N, T]`` mask of the valid prefix: up to and including the first ``eos``."""
    if eos is None:
        return torch.ones(tokens.shape, dtype=dtype, device=tokens.device)
    is_eos = (tokens == eos).to(torch.int64)
    ended_before = torch.cumsum(is_eos, -1) - is_eos  # EOS strictly before t
    return (ended_before == 0).to(dtype)


def all_token_arrays(horizon: int, vocab: int, max_sequences: int, device, start: int = 0,
                     stop: int | None = None) -> Tensor:
    """Token arrays ``start..stop-1`` (default: all ``vocab**horizon``) in lexicographic order,
    ``[stop - start, T]``; a ValueError naming the cap when V^T exceeds ``max_sequences``."""
    total = vocab**horizon
    if total > max_sequences:
        raise ValueError(
            f"V^T = {vocab}^{horizon} = {total} sequences exceeds max_sequences="
            f"{max_sequences}; allowed: V^T <= max_sequences (raise the cap or use Monte Carlo)"
        )
    stop = total if stop is None else stop
    if not 0 <= start < stop <= total:
        raise ValueError(f"start={start!r}, stop={stop!r} is invalid; allowed: 0 <= start < stop <= V^T = {total}")
    idx = torch.arange(start, stop, device=device)
    powers = vocab ** torch.arange(horizon - 1, -1, -1, device=device)
    return (idx[:, None] // powers[None, :]) % vocab


def inverse_cdf(probs_rows: Tensor, u: Tensor) -> Tensor:
    """Tokens ``#{v < V-1 : cdf_v < u}`` for rows ``probs_rows [..., V]`` and uniforms ``u [..., k]``
    (k draws per row) as ``[..., k]`` (``policies.kernels.search_cdf`` of the cumulative sum)."""
    return search_cdf(torch.cumsum(probs_rows, -1), u)


class TablePolicy:
    """Base class: a softmax table ``logits [R, V]`` or ``[P, R, V]`` (see the module doc).

    Subclasses define ``horizon``, ``rows(tokens) -> [N, T]`` (the row each token is drawn
    from, within its prompt's table), ``row_marginals()`` (the probability that position t is
    drawn from each row, under this policy), ``with_logits`` and ``sample``.
    """

    def __init__(self, logits: Tensor, *, eos: int | None = None, rows_name: str = "R") -> None:
        if not isinstance(logits, Tensor) or logits.dim() not in (2, 3) or not logits.is_floating_point():
            raise ValueError(
                f"logits must be a floating [{rows_name}, V] or [P, {rows_name}, V] tensor, "
                f"got {getattr(logits, 'shape', logits)!r}"
            )
        r, v = logits.shape[-2:]
        if r < 1 or v < 2 or (logits.dim() == 3 and logits.shape[0] < 1):
            raise ValueError(
                f"logits has shape {tuple(logits.shape)}; allowed: {rows_name} >= 1, V >= 2 (and P >= 1)"
            )
        if not bool(torch.isfinite(logits).all()):
            raise ValueError("logits has non-finite values; allowed: finite logits")
        check_eos(eos, v)
        self.logits = logits
        self.eos = eos

    # ------------------------------------------------------------------ shape and prompts
    @property
    def vocab(self) -> int:
        return self.logits.shape[-1]

    @property
    def n_rows(self) -> int:
        return self.logits.shape[-2]

    @property
    def n_prompts(self) -> int | None:
        """P for a prompt-conditioned policy, ``None`` otherwise."""
        return self.logits.shape[0] if self.logits.dim() == 3 else None

    @property
    def horizon(self) -> int:  # pragma: no cover - defined by every subclass
        raise NotImplementedError

    def rows(self, tokens: Tensor) -> Tensor:  # pragma: no cover - defined by every subclass
        raise NotImplementedError

    def with_logits(self, logits: Tensor) -> "TablePolicy":  # pragma: no cover
        raise NotImplementedError

    def _prompts(self, prompts: Tensor | None, n: int) -> Tensor | None:
        return check_prompts(prompts, n, self.n_prompts, self.logits.device)

    def contexts(self, tokens: Tensor, prompts: Tensor | None = None) -> Tensor:
        """``[N, T]`` index of the table row (in ``logits.reshape(-1, V)``) each token is drawn from."""
        rows = self.rows(tokens)
        prompts = check_prompts(prompts, tokens.shape[0], self.n_prompts, tokens.device)
        return rows if prompts is None else rows + prompts[:, None] * self.n_rows

    def for_prompt(self, prompt: int) -> "TablePolicy":
        """The unconditioned policy of one prompt (its slice of the table)."""
        check_prompt(prompt, self.n_prompts)
        return self.with_logits(self.logits[prompt])

    @property
    def dtype(self):
        return self.logits.dtype

    @property
    def device(self):
        return self.logits.device

    @property
    def score_shape(self) -> torch.Size:
        """Shape of the gradient space (the logits)."""
        return self.logits.shape

    def replica_score_moments(self, weights: Tensor, tokens: Tensor, prompts: Tensor | None,
                              n_rep: int) -> tuple[Tensor, Tensor]:
        """See ``policies.table.replica_score_moments`` (closed form)."""
        return replica_score_moments(self, weights, tokens, prompts, n_rep)

    # ------------------------------------------------------------------ probabilities
    def cdf_table(self) -> Tensor:
        """Cumulative row probabilities as ``[P, R, V]`` (P = 1 for an unconditioned policy), the
        table ``policies.kernels.sample_table`` draws from."""
        cdf = torch.cumsum(torch.softmax(self.logits, -1), -1)
        return cdf if self.n_prompts is not None else cdf.unsqueeze(0)

    def log_probs(self) -> Tensor:
        """Log-probabilities of every token in every row (same shape as ``logits``)."""
        return torch.log_softmax(self.logits, -1)

    def mask(self, tokens: Tensor) -> Tensor:
        """``[N, T]`` mask of the valid prefix (up to and including the first EOS)."""
        return eos_mask(tokens, self.eos, self.logits.dtype)

    def log_prob(self, tokens: Tensor, prompts: Tensor | None = None) -> Tensor:
        """``[N, T]`` log π(o_t | context) of ``tokens [N, T]`` (padding included; mask it)."""
        return gather_rows(self.log_probs().reshape(-1, self.vocab), self.contexts(tokens, prompts), tokens)

    def score_sum(self, weights: Tensor, tokens: Tensor, prompts: Tensor | None = None) -> Tensor:
        """Σ_i Σ_t w_it ∇_logits log π(o_it) = Σ_it w_it (e_{o_it} - p_{c_it}), shaped like ``logits``.

        ``weights`` is ``[N, T]`` (zero on padding): one weighted histogram over (row, token)
        and one over rows, times the row probabilities.
        """
        v = self.vocab
        ctx = self.contexts(tokens, prompts)
        n_ctx = self.logits.numel() // v
        hist = torch.zeros(n_ctx * v, dtype=weights.dtype, device=weights.device)
        hist.index_add_(0, (ctx * v + tokens).reshape(-1), weights.reshape(-1))
        w_row = torch.zeros(n_ctx, dtype=weights.dtype, device=weights.device)
        w_row.index_add_(0, ctx.reshape(-1), weights.reshape(-1))
        probs = torch.softmax(self.logits, -1).reshape(n_ctx, v).to(weights.dtype)
        return (hist.reshape(n_ctx, v) - w_row[:, None] * probs).reshape(self.logits.shape)

    def enumerate(self, *, prompt: int | None = None, max_sequences: int = DEFAULT_MAX_SEQUENCES,
                  start: int = 0, stop: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """All V^T token arrays of one prompt: ``(tokens [V^T, T], mask, prob [V^T])``, or the
        block ``start..stop-1`` of them (lexicographic order).

        Refuses (ValueError) above ``max_sequences``. A prompt-conditioned policy needs ``prompt``.
        """
        if self.n_prompts is not None or prompt is not None:
            return self.for_prompt(prompt).enumerate(max_sequences=max_sequences, start=start, stop=stop)
        tokens = all_token_arrays(self.horizon, self.vocab, max_sequences, self.logits.device, start, stop)
        prob = torch.exp(self.log_prob(tokens).sum(-1))
        return tokens, self.mask(tokens), prob

    def row_marginals(self) -> Tensor:  # pragma: no cover - defined by every subclass
        """``[T, R]`` (or ``[P, T, R]``): probability that position t is drawn from row r."""
        raise NotImplementedError

    samples_with_table_kernel: bool = False
    """Set by a family whose ``sample`` is ``policies.kernels.sample_table`` with ``sampling_bos``
    (tabular, Markov), so that ``sample_scored`` may gather the log-probabilities in the sampling
    kernel; a subclass of it that overrides ``sample`` or ``rows`` falls back (``_table_sampled``)."""
    sampling_bos: int | None = None
    """How ``policies.kernels.sample_table`` draws this family: ``None`` positionally (token t from
    row t), else the row of the first token of a Markov chain (token t from the row of token t-1)."""

    def sample(self, n: int, *, generator: torch.Generator,
               prompts: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(tokens [n, T], mask [n, T])`` by inverse-CDF sampling, one uniform per token, from one
        seed drawn from ``generator`` (``policies.kernels.sample_table``; each family's docstring
        says which uniform each token uses). Only for a family that sets
        ``samples_with_table_kernel``; any other defines its own."""
        if not self.samples_with_table_kernel:  # pragma: no cover - a family without a sampler
            raise NotImplementedError(f"{type(self).__name__} defines no sample()")
        tokens, _ = self._draw(n, generator, prompts)
        return tokens, self.mask(tokens)

    def _draw(self, n: int, generator: torch.Generator, prompts: Tensor | None, score=None,
              score_out=None) -> tuple[Tensor, list[Tensor]]:
        """``(tokens, gathered)`` of ``policies.kernels.sample_table`` with one seed drawn from
        ``generator``: with ``score`` tables (and ``score_out``), ``gathered`` are those tables at
        the drawn tokens' cells, else empty."""
        check_count("n", n)
        prompts = self._prompts(prompts, n)
        drawn = sample_table(self.cdf_table(), prompts, n, self.horizon, draw_seed(generator),
                             markov_bos=self.sampling_bos, score=score, score_out=score_out)
        return (drawn, []) if score is None else (drawn[0], list(drawn[1:]))

    def _table_sampled(self) -> bool:
        """Whether this policy samples exactly as the family that set ``samples_with_table_kernel``
        (the same ``sample`` and ``rows``), so the scored kernel draws the same tokens."""
        cls = type(self)
        owner = next((c for c in cls.__mro__ if "samples_with_table_kernel" in c.__dict__), TablePolicy)
        return bool(owner.samples_with_table_kernel) and cls.sample is owner.sample and cls.rows is owner.rows

    def sample_scored(self, new: "TablePolicy", n: int, *, generator: torch.Generator,
                      prompts: Tensor | None = None, cell_values: CellValues | None = None,
                      out: tuple[Tensor, Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(tokens, mask, ℓ, ℓ^old, ρ)``: the tokens and mask of ``self.sample(n, generator=...,
        prompts=...)`` (the same ones for the same generator state) and ``score_pair(new, self,
        tokens, prompts, cell_values)`` — this policy is the old one — gathered as each token is
        drawn on the CPU (one pass over the tokens; elsewhere, and for a family with its own
        sampler, ``sample`` then ``score_pair``). ``out``: three tensors that receive ℓ, ℓ^old, ρ on
        the CPU path (``policies.kernels.sample_table``'s ``score_out``), else ignored."""
        if self.device.type != "cpu" or not self._table_sampled():
            tokens, mask = self.sample(n, generator=generator, prompts=prompts)
            return tokens, mask, *score_pair(new, self, tokens, prompts, cell_values)
        tokens, scores = self._draw(n, generator, prompts, score=_pair_tables(new, self, cell_values), score_out=out)
        return tokens, self.mask(tokens), *scores


def divergence_rows(p_lp: Tensor, q_lp: Tensor, kind: str) -> Tensor:
    """Row-wise D(p ‖ q) from log-probabilities: ``kl`` = Σ p log(p/q), ``chi2`` = Σ q²/p - 1
    (the χ² of the ratio q/p under p, so that E_p[(q/p)²] = 1 + χ²)."""
    if kind == "kl":
        return (p_lp.exp() * (p_lp - q_lp)).sum(-1)
    return torch.exp(2 * q_lp - p_lp).sum(-1) - 1.0


def mean_token_divergence(old: TablePolicy, new: TablePolicy, kind: str) -> float:
    """Average over the T positions (and over prompts) of E_old[D(π_old(·|c_t) ‖ π_new(·|c_t))].

    The context c_t is distributed as under the old policy (``row_marginals``). For a tabular
    policy this is the plain mean of the per-position divergences; with ``kind="chi2"`` and
    no EOS, E_old[R²] = Π_t (1 + χ²_t) for the sequence ratio R.
    """
    d = divergence_rows(old.log_probs(), new.log_probs(), kind)  # [R] or [P, R]
    occupancy = old.row_marginals().mean(-2)  # [R] or [P, R]
    return float((occupancy * d).sum(-1).mean())


def score_pair(new: TablePolicy, old: TablePolicy, tokens: Tensor, prompts: Tensor | None = None,
               cell_values: CellValues | None = None) -> tuple[Tensor, Tensor, Tensor]:
    r"""``(ℓ, ℓ^old, ρ)``, each ``[N, T]``, of ``tokens`` under two table policies of one family
    and shape: ℓ = ``new.log_prob(tokens, prompts)``, ℓ^old = ``old.log_prob(...)`` (each in its
    policy's dtype) and ρ = e^(ℓ - ℓ^old) in float64 (with the difference taken in float64).
    With ``cell_values`` — ``fn(ℓ, ℓ^old)`` elementwise in float64, giving one or more values per
    token (``[..]`` or ``[k, ..]``) — the third is ``[1 + k, N, T]``: ρ, then those values, gathered
    from the same cells.

    Both policies draw token t from the same row c_t, so ρ depends only on the cell (c_t, o_t):
    it is gathered from the ratio table e^(log π_new - log π_old) over the R·V cells (one
    exponential per cell instead of one per token), and the three are gathered in one pass
    (``policies.kernels.gather_pair``).
    """
    return gather_pair(*_pair_tables(new, old, cell_values), new.contexts(tokens, prompts), tokens)


CellValues = Callable[[Tensor, Tensor], Tensor]


def _pair_tables(new: TablePolicy, old: TablePolicy,
                 cell_values: CellValues | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``[C, V]`` tables of log π_new, log π_old and e^(log π_new - log π_old) (float64) over the
    C = P·R contexts of two table policies of one family and shape (a ValueError otherwise); with
    ``cell_values``, the third is ``[1 + k, C, V]``: the ratio, then ``cell_values`` of the
    float64 log-probability tables."""
    if type(new) is not type(old) or new.logits.shape != old.logits.shape or new.horizon != old.horizon:
        raise ValueError(f"two table policies of one family and shape are needed, got "
                         f"{type(new).__name__} {tuple(new.logits.shape)} (T={new.horizon}) and "
                         f"{type(old).__name__} {tuple(old.logits.shape)} (T={old.horizon})")
    v = new.vocab
    new_lp, old_lp = new.log_probs().reshape(-1, v), old.log_probs().reshape(-1, v)
    lp64, lo64 = new_lp.to(torch.float64), old_lp.to(torch.float64)
    ratio = torch.exp(lp64 - lo64)
    if cell_values is not None:
        extra = cell_values(lp64, lo64).to(torch.float64)
        ratio = torch.cat([ratio[None], extra.reshape(-1, *ratio.shape)])
    return new_lp, old_lp, ratio


def replica_score_moments(policy: TablePolicy, weights: Tensor, tokens: Tensor,
                          prompts: Tensor | None, n_rep: int) -> tuple[Tensor, Tensor]:
    r"""Σ_r g_r and Σ_r g_r ⊙ g_r (float64, flattened like ``logits``) of the per-replica scores
    g_r = Σ_{i∈r, t} w_it (e_{o_it} - p_{c_it}), where replica r is the r-th block of
    ``N / n_rep`` consecutive rows — without materialising g_r (``policies.kernels.replica_moments``:
    O(N·T) work, a numba kernel on the CPU).
    """
    probs = torch.softmax(policy.logits, -1).reshape(-1, policy.vocab)
    return replica_moments(weights, policy.contexts(tokens, prompts), tokens, n_rep, probs)
