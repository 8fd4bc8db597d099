r"""Monte Carlo at LLM response lengths: T up to 4096, V up to 32,768, memory flat in the sample size.

Shared by ``bias_variance``, ``gspo_weight`` and ``sgs`` (their "long" parts). Two setups, both
``policies.class_markov.ClassMarkovPolicy`` pairs (π_old, π_θ) built by ``policy_pair``:

* ``independent``: S = 1 — every token drawn from one distribution, so the token log-ratios
  log ρ_t are i.i.d. and Var(log G) = Var(log ρ)/T holds by construction;
* ``dependent``: S = 4 sticky classes — a row puts ``stay`` of its mass on tokens of its own
  class, so the chain stays in a class for about 1/(1 − stay) tokens, and π_θ moves the rows of
  half the classes ten times more than the others (amplitudes 1 and 0.1). The mean of log ρ_t
  then depends on the class, which persists: log ρ_t is autocorrelated over ~1/(1 − stay)
  positions and Var(log R) grows faster than T up to that length.

Every row is peaked like an LM's next-token distribution: its top token (in the row's class)
has probability ``top_prob``, the rest share the remainder with log-normal weights.
π_θ = π_old moved along a random direction (``perturb``'s construction) scaled so that the
stationary per-token KL(π_old‖π_θ) equals κ exactly (``stationary_kl``, by bisection).

Ratios are formed in log space: a sequence's log R = Σ_t log ρ_t is summed in float64 by a fused
sample-and-sum kernel that keeps no token (``ClassMarkovPolicy.sequence_sums``); ESS, the extreme
fraction and E[G] are computed from log R (``log_space_stats``). The gradient variances of the
estimators (``paired_variances``) sample each block of sequences once and evaluate every
estimator on the same tokens (common random numbers); per batch of sequences they keep one
parameter-sized sum per estimator, so memory does not grow with the sample. The exact second
moment E_old[R²] of both setups comes from a transfer matrix (``log_second_moment``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from scipy.special import logsumexp

from policies._bisect import bisect_crossing
from policies.class_markov import ClassMarkovPolicy, score_moments, score_sq_norms
from policies.kernels import draw_seed, gather_rows
from policies.table import divergence_rows
from sims._checks import require
from sims.experiments._common import LEVEL, MC_BATCHES, Estimate, seeded
from sims.registry import get_objective

TOKENS_PER_PASS = 1 << 20  # tokens whose [rows, T] tensors are alive at once (memory, not numbers)
BISECTION_STEPS = 60
EXTREME = math.log(1e3)  # |log R| beyond this: a weight outside [1e-3, 1e3]


@dataclass(frozen=True)
class LongSetup:
    """One policy family of the long study (see the module doc).

    Attributes:
        name: the setup's label in tables and summaries (``independent`` / ``dependent``).
        vocab: V.
        n_states: S (1: independent positions).
        stay: mass a row puts on tokens of its own class (S > 1).
        top_prob: probability of each row's top token.
        amplitudes: per-class scale of the perturbation direction (cycled over the S classes).
    """

    name: str
    vocab: int = 32_768
    n_states: int = 1
    stay: float = 0.995
    top_prob: float = 0.8
    amplitudes: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        require(isinstance(self.vocab, int) and self.vocab >= 4, "vocab", self.vocab, "an int >= 4")
        require(isinstance(self.n_states, int) and 1 <= self.n_states <= self.vocab // 2, "n_states",
                self.n_states, "an int in [1, V/2]")
        require(0 < self.top_prob < 1, "top_prob", self.top_prob, "0 < top_prob < 1")
        require(self.n_states == 1 or self.top_prob < self.stay < 1, "stay", self.stay, "top_prob < stay < 1")
        require(len(self.amplitudes) >= 1 and all(a > 0 for a in self.amplitudes), "amplitudes",
                self.amplitudes, "one or more values > 0")


def default_setups(vocab: int = 32_768) -> tuple[LongSetup, LongSetup]:
    """The two setups of the module doc at vocabulary ``vocab``."""
    return (LongSetup("independent", vocab=vocab),
            LongSetup("dependent", vocab=vocab, n_states=4, amplitudes=(1.0, 0.1)))


def base_logits(setup: LongSetup, seed: int) -> torch.Tensor:
    """``[S + 1, V]`` log-probabilities of π_old: row r < S puts ``top_prob`` on one random token of
    class r, ``stay − top_prob`` on the other class-r tokens and 1 − stay on the rest, each share
    spread with log-normal weights e^z, z ~ N(0, 1); the begin row S is the equal mixture of the S rows
    (``with_begin_mixture``: a response starts in a random class; S = 1: the same distribution at
    every position)."""
    v, s = setup.vocab, setup.n_states
    gen = seeded(seed, 7_001)
    classes = torch.arange(v) % s
    rows = []
    for r in range(s):
        z = torch.randn(v, generator=gen, dtype=torch.float64)
        own = torch.nonzero(classes == r).reshape(-1)
        top = int(own[torch.randint(len(own), (), generator=gen)])
        own_mass = 1.0 if s == 1 else setup.stay
        p = torch.zeros(v, dtype=torch.float64)
        rest_own = (classes == r) & (torch.arange(v) != top)
        p[rest_own] = (own_mass - setup.top_prob) * torch.softmax(z[rest_own], 0)
        if s > 1:
            p[classes != r] = (1.0 - own_mass) * torch.softmax(z[classes != r], 0)
        p[top] = setup.top_prob
        rows.append(p.log())
    return with_begin_mixture(torch.stack(rows + [rows[0]]))


def with_begin_mixture(logits: torch.Tensor) -> torch.Tensor:
    """``logits [S + 1, V]`` with the begin row replaced by log((1/S) Σ_s softmax(logits_s))."""
    s = logits.shape[0] - 1
    out = logits.clone()
    out[s] = torch.logsumexp(torch.log_softmax(logits[:s], -1), 0) - math.log(s)
    return out


def stationary_kl(old: ClassMarkovPolicy, new: ClassMarkovPolicy) -> float:
    """Σ_s π_s KL(π_old(·|s) ‖ π_θ(·|s)) over the old chain's stationary classes π (the per-token
    KL of a long sequence; the begin row is ignored)."""
    d = divergence_rows(old.log_probs()[:-1], new.log_probs()[:-1], "kl")
    return float(old.stationary_classes() @ d)


def policy_pair(setup: LongSetup, kl: float, horizon: int, seed: int) -> tuple[ClassMarkovPolicy, ClassMarkovPolicy]:
    """(π_old, π_θ) at stationary per-token KL ``kl``: the class rows move, θ_s = θ_old,s + α·a_s·d_s with
    d ~ N(0, 1) per logit and a_s the class amplitude; the begin row stays the equal mixture of the rows; α by bisection (``BISECTION_STEPS``
    halvings of a bracket [0, 2^k]: α to 2^-60 of the bracket)."""
    require(kl > 0, "kl", kl, "kl > 0")
    logits = base_logits(setup, seed)
    d = torch.randn(logits.shape, generator=seeded(seed, 7_002), dtype=torch.float64)
    amp = torch.tensor([setup.amplitudes[r % len(setup.amplitudes)] for r in range(setup.n_states)] +
                       [setup.amplitudes[0]], dtype=torch.float64)
    d = d * amp[:, None]
    old = ClassMarkovPolicy(logits, horizon=horizon)

    def moved(alpha: float) -> ClassMarkovPolicy:
        return old.with_logits(with_begin_mixture(logits + alpha * d))

    pi, lp_old = old.stationary_classes(), old.log_probs()[:-1]

    def kl_at(alpha: float) -> float:  # stationary_kl(old, moved(alpha)) without building the policy
        return float(pi @ divergence_rows(lp_old, torch.log_softmax(logits[:-1] + alpha * d[:-1], -1), "kl"))

    hi = 1.0
    while kl_at(hi) < kl:
        hi *= 2.0
        require(hi < 1e4, "kl", kl, "a divergence reachable along the drawn direction")
    return old, moved(bisect_crossing(kl_at, kl, 0.0, hi, BISECTION_STEPS))


def log_second_moment(old: ClassMarkovPolicy, new: ClassMarkovPolicy) -> float:
    r"""log E_old[R²] of the sequence ratio over T = ``old.horizon`` positions, exactly:
    E_old[R²] = e_begin · M^(T−1) · m with M[r, s] = Σ_{v ≡ s} π_θ(v|r)²/π_old(v|r) (the class
    chain's transfer matrix of the squared ratio) and m[r] = Σ_v π_θ(v|r)²/π_old(v|r); the vector
    is renormalised each step and its log scale accumulated, so nothing overflows at T = 4096.
    For S = 1 this is T·log(1 + χ²) (papers.md §11.1: E[R²] = Π_t (1 + χ²_t))."""
    tilt = torch.exp(2 * new.log_probs() - old.log_probs())  # [S + 1, V]
    s = old.n_states
    classes = torch.arange(old.vocab) % s
    trans = torch.zeros(old.n_rows, old.n_rows, dtype=torch.float64).index_add_(1, classes, tilt)  # col S stays 0
    vec = torch.zeros(old.n_rows, dtype=torch.float64)
    vec[s] = 1.0
    log_scale = 0.0
    for _ in range(old.horizon - 1):
        vec = vec @ trans
        norm = float(vec.sum())
        vec, log_scale = vec / norm, log_scale + math.log(norm)
    return log_scale + math.log(float(vec @ tilt.sum(-1)))


def sequence_log_ratios(old: ClassMarkovPolicy, new: ClassMarkovPolicy, n: int, seed: int,
                        tokens_per_pass: int = TOKENS_PER_PASS) -> tuple[np.ndarray, np.ndarray]:
    """(log R [n], log π_old(o) [n]) of ``n`` sequences from π_old (the stream with ``seed``), in
    passes of ``tokens_per_pass // T`` sequences: no token is kept, so memory is O(n); the values do
    not depend on the pass size (each sequence's uniforms are fixed by its index)."""
    require(isinstance(n, int) and n >= 1, "n", n, "an int >= 1")
    rows = max(1, tokens_per_pass // old.horizon)
    lp_new, lp_old = new.log_probs(), old.log_probs()
    stream = draw_seed(torch.Generator().manual_seed(int(seed)))
    out = np.empty((n, 2))
    for start in range(0, n, rows):
        k = min(rows, n - start)
        out[start:start + k] = old.sequence_sums(stream, start, k, lp_new, lp_old).numpy()
    return out[:, 0] - out[:, 1], out[:, 1]


def ess_fraction(log_w: np.ndarray) -> float:
    """Kish ESS / n = (Σ w)² / (n Σ w²) from log weights (logsumexp: no overflow or underflow)."""
    return float(math.exp(2 * logsumexp(log_w) - logsumexp(2 * log_w) - math.log(log_w.size)))


def log_space_stats(log_r: np.ndarray, horizon: int) -> dict[str, Estimate]:
    """From sequence log-ratios: the fraction of R outside [1e-3, 1e3], the ESS fraction (point;
    its interval from the two halves' spread is not claimed), E[G] = E[exp(log R / T)], P(G > R)
    (= P(log R < 0) for T > 1), Var(log G)·T and Var(log R)."""
    from sims.experiments._common import mean_interval, variance_interval

    log_g = log_r / horizon
    var_log_g = variance_interval(log_g)
    return {
        "extreme weight fraction": mean_interval((np.abs(log_r) > EXTREME).astype(float)),
        "ESS fraction": Estimate.exact(ess_fraction(log_r)),
        "E[G]": mean_interval(np.exp(log_g)),
        "P(G > R)": mean_interval((log_r < 0).astype(float) if horizon > 1 else np.zeros(log_r.size)),
        "T·Var(log G)": _scale(var_log_g, horizon),
        "Var(G)": variance_interval(np.exp(log_g)),
    }


def _scale(e: Estimate, c: float) -> Estimate:
    halves = None if e.halves is None else tuple(_scale(h, c) for h in e.halves)
    return Estimate(e.value * c, e.low * c, e.high * c, halves)


@dataclass(frozen=True)
class EvenCount:
    """R(o) = 1[#{t : o_t even} >= threshold] (binary, not additive over positions)."""

    threshold: int

    def __call__(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (((tokens % 2 == 0).to(mask.dtype) * mask).sum(-1) >= self.threshold).to(mask.dtype)


def median_reward(old: ClassMarkovPolicy) -> EvenCount:
    """``EvenCount`` with the threshold ⌈E_old #even⌉ (exact, from the row marginals): pass rate near 1/2."""
    even = torch.softmax(old.logits, -1)[:, 0::2].sum(-1)  # [S + 1]
    return EvenCount(math.ceil(float((old.row_marginals() @ even).sum())))


def _weights(spec, cfg, logp, old_logp, adv, mask) -> torch.Tensor:
    """The per-token gradient weight w_it of one registered objective under its own aggregation
    (the Monte Carlo engine's step 2: token-sum autograd weight × the per-sequence normaliser,
    one prompt of one sample per replica)."""
    from sims.engines.montecarlo import _normaliser, _token_sum

    x = logp.clone().requires_grad_(True)
    loss, _ = spec.loss_fn(x, old_logp, adv, mask, config=_token_sum(cfg))
    (grad,) = torch.autograd.grad(loss, x)
    n = logp.shape[0]
    return -grad * _normaliser(cfg.agg, mask, n, 1, 1, logp.shape[1])[:, None]


def _active(adv: torch.Tensor, ratio: torch.Tensor, eps_low, eps_high: float) -> torch.Tensor:
    """Where the unclipped branch of min(r·A, clip(r)·A) is taken (its gradient flows): A > 0 and
    r < 1 + ε_high, or A < 0 and r > 1 − ε_low (always, without a lower bound)."""
    low = -math.inf if eps_low is None else 1.0 - eps_low
    return torch.where(adv > 0, ratio < 1.0 + eps_high, torch.where(adv < 0, ratio > low, torch.zeros_like(ratio, dtype=torch.bool)))


def closed_form_weights(objective: str, cfg, logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """w_it of the long study's estimators in closed form (no mask: every position is valid), for
    one sequence per replica under the aggregations of ``default_long_estimators``:

    * ``reinforce`` (token IS, no cap): w = ρ_t·A;
    * ``cispo``: w = clip(ρ_t, 1 − ε_low, 1 + ε_high)·A;
    * ``ppo_clip``: w = ρ_t·A where the unclipped branch is taken (``_active``), else 0;
    * ``gspo``: w = G·A where the unclipped branch of the sequence ratio G = exp(mean_t log ρ_t) is taken;
    * ``seq_is``: w = R·A, R = exp(Σ_t log ρ_t).

    ``paired_variances`` uses them (the registered objectives' validation and diagnostics cost ~20
    passes per call at T = 4096) and checks them against the registered code on a block of every
    grid point (``weight_error``)."""
    log_rho = logp - old_logp
    a = adv[:, :1]
    if objective == "reinforce":
        return log_rho.exp() * a
    if objective == "cispo":
        lo = None if cfg.eps_low is None else 1.0 - cfg.eps_low
        return log_rho.exp().clamp(min=lo, max=1.0 + cfg.eps_high) * a
    if objective == "ppo_clip":
        rho = log_rho.exp()
        return rho * a * _active(a, rho, cfg.eps_low, cfg.eps_high)
    if objective == "gspo":
        g = log_rho.mean(-1, keepdim=True).exp()
        return (g * a * _active(a, g, cfg.eps_low, cfg.eps_high)).expand_as(log_rho)
    if objective == "seq_is":
        return (log_rho.sum(-1, keepdim=True).exp() * a).expand_as(log_rho)
    raise ValueError(f"objective={objective!r} is invalid; allowed: reinforce, cispo, ppo_clip, gspo, seq_is")


def weight_error(objective: str, cfg, logp, old_logp, adv, mask) -> float:
    """max |w_closed − w_registered| / max(max |w_registered|, 1e-300) on one block (the check of
    ``closed_form_weights`` against the registered objective's autograd weights)."""
    ref = _weights(get_objective(objective), cfg, logp, old_logp, adv, mask)
    got = closed_form_weights(objective, cfg, logp, old_logp, adv)
    return float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-300))


class _Tables:
    """A policy's row probabilities and log-probabilities, computed once (the logits are fixed)."""

    def __init__(self, policy: ClassMarkovPolicy) -> None:
        self.policy = policy
        self.log_probs = policy.log_probs().to(torch.float64)
        self.probs = self.log_probs.exp()

    def log_prob(self, tokens: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """``policy.log_prob(tokens)`` for ``ctx = policy.contexts(tokens)``."""
        return gather_rows(self.log_probs, ctx, tokens)

    def score_sum(self, w: torch.Tensor, tokens: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """``policy.score_sum(w, tokens)`` (Σ_it w_it (e_{o_it} − p_{c_it})) for the given ``ctx``."""
        v = self.probs.shape[-1]
        hist = torch.zeros(self.probs.numel(), dtype=torch.float64).index_add_(0, (ctx * v + tokens).reshape(-1),
                                                                                w.reshape(-1).to(torch.float64))
        w_row = torch.zeros(self.probs.shape[0], dtype=torch.float64).index_add_(0, ctx.reshape(-1),
                                                                                 w.reshape(-1).to(torch.float64))
        return hist.reshape(self.probs.shape) - w_row[:, None] * self.probs

    def sq_norms(self, w: torch.Tensor, tokens: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        return score_sq_norms(self.policy, w, tokens, probs=self.probs, ctx=ctx)

    def moments(self, w: torch.Tensor, tokens: torch.Tensor, ctx: torch.Tensor,
                blocks: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(Σ_i g_i [per block], [n] ‖g_i‖²) (``score_moments``)."""
        return score_moments(self.policy, w, tokens, probs=self.probs, ctx=ctx, blocks=blocks)


def paired_variances(old: ClassMarkovPolicy, new: ClassMarkovPolicy, reward, estimators, n: int, seed: int,
                     tokens_per_pass: int = TOKENS_PER_PASS) -> dict[str, np.ndarray]:
    """Per batch (``MC_BATCHES`` batches of n / MC_BATCHES sequences from π_old, the stream with
    ``seed``) the variance trace tr Cov(ĝ) of each estimator's one-sequence gradient
    ĝ = Σ_t w_t ∇θ log π_θ(o_t) (A = R, no baseline), all estimators on the same sequences:
    v_j = (Σ_i ‖ĝ_i‖² − m‖ḡ_j‖²)/(m − 1). Returns {label: [MC_BATCHES] array}. Sequences are drawn in
    passes of whole batches, at most ``tokens_per_pass`` tokens (or one batch) per pass, each batch a
    block of one ``score_moments`` call; the values do not depend on the pass size (a batch's sums are
    formed within its block either way). ``estimators``: (label, registered objective, config) triples, weights by
    ``closed_form_weights`` (the caller checks them with ``weight_error``)."""
    require(isinstance(n, int) and n >= 2 * MC_BATCHES and n % MC_BATCHES == 0, "n", n,
            f"a multiple of {MC_BATCHES}, >= {2 * MC_BATCHES}")
    m = n // MC_BATCHES
    per_pass = max(1, min(MC_BATCHES, (tokens_per_pass // old.horizon) // m))  # whole batches per pass
    out = {label: np.empty(MC_BATCHES) for label, *_ in estimators}
    stream = draw_seed(torch.Generator().manual_seed(int(seed)))
    t_new, t_old = _Tables(new), _Tables(old)
    for j0 in range(0, MC_BATCHES, per_pass):
        nb = min(per_pass, MC_BATCHES - j0)
        tokens = old.sample_block(stream, j0 * m, nb * m)
        ctx = old.contexts(tokens)
        mask = old.mask(tokens)
        adv = reward(tokens, mask).reshape(-1, 1).expand(mask.shape)
        logp, old_logp = t_new.log_prob(tokens, ctx), t_old.log_prob(tokens, ctx)
        for label, objective, cfg in estimators:
            g, sq = t_new.moments(closed_form_weights(objective, cfg, logp, old_logp, adv), tokens, ctx, blocks=nb)
            means = g.reshape(nb, -1) / m
            sum_sq = sq.reshape(nb, m).sum(-1)
            out[label][j0:j0 + nb] = ((sum_sq - m * (means * means).sum(-1)) / (m - 1)).numpy()
    return out


def log_ratio_interval(a: np.ndarray, b: np.ndarray, level: float = LEVEL, *, halves: bool = True) -> Estimate:
    """log(mean a / mean b) for paired batch values (a_j, b_j), j = 1..J, with a delta-method
    t-interval (J − 1 degrees of freedom): se² = (s²_a/ā² + s²_b/b̄² − 2 s_ab/(ā b̄)) / J. With
    J >= 4 its ``halves`` are the same over the first and the second half of the batches."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    require(a.shape == b.shape and a.size >= 2, "batches", (a.shape, b.shape), "two equal-length arrays, >= 2")
    ma, mb = a.mean(), b.mean()
    cov = np.cov(a, b, ddof=1)
    var = (cov[0, 0] / ma ** 2 + cov[1, 1] / mb ** 2 - 2 * cov[0, 1] / (ma * mb)) / a.size
    value = float(math.log(ma / mb))
    half = float(stats.t.ppf(0.5 + level / 2, a.size - 1) * math.sqrt(max(var, 0.0)))
    split = None
    if halves and a.size >= 4:
        h = a.size // 2
        split = (log_ratio_interval(a[:h], b[:h], level, halves=False),
                 log_ratio_interval(a[h:], b[h:], level, halves=False))
    return Estimate(value, value - half, value + half, split)


@dataclass(frozen=True)
class Tilted:
    """The squared-ratio tilt of a pair (``tilted``): E_old[R² F(o)] = exp(log_const) · E_q[F(o) / h(c(o_T))]."""

    q: ClassMarkovPolicy
    log_const: float
    h: torch.Tensor  # [S], the Perron vector of the class transfer matrix (max 1)


def tilted(old: ClassMarkovPolicy, new: ClassMarkovPolicy) -> Tilted:
    r"""Importance sampling for the sequence ratio's second moment (a Doob h-transform).

    With K(r, v) = π_θ(v|r)²/π_old(v|r), E_old[R² F(o)] = Σ_o Π_t K(r_t, o_t) F(o). Let M[r, s] =
    Σ_{v ≡ s} K(r, v), h > 0 the Perron vector of its class block (M h = λ h on the classes) and
    q(v | r) = K(r, v) h(c(v)) / (M h)(r), a stochastic kernel (another ``ClassMarkovPolicy``).
    Then Π_t K(r_t, o_t) = Π_t q(o_t | r_t) · (M h)(r_1) λ^(T−1) / h(c(o_T)) — the product telescopes —
    so E_old[R² F] = (M h)(begin) λ^(T−1) E_q[F / h(c(o_T))]: an expectation under q whose weight
    1/h(c(o_T)) is bounded by max h / min h, where sampling from π_old would need the rare
    sequences with huge R (at T = 4096 the sample variance of R·A·∇log π is e^40 below the truth).
    For S = 1, h = 1, λ = 1 + χ² and q ∝ π_θ²/π_old: E_old[R² F] = (1 + χ²)^T E_q[F]."""
    s = old.n_states
    log_k = 2 * new.log_probs() - old.log_probs()  # [S + 1, V]
    classes = torch.arange(old.vocab) % s
    m = torch.zeros(old.n_rows, s, dtype=torch.float64).index_add_(1, classes, log_k.exp())
    vals, vecs = np.linalg.eig(m[:s].numpy())
    top = int(np.argmax(vals.real))
    h = np.abs(vecs[:, top].real)
    h = torch.from_numpy(h / h.max())
    lam = float(vals[top].real)
    mh = m @ h  # [S + 1]
    q_logits = log_k + h.log()[classes][None, :] - mh.log()[:, None]
    q = ClassMarkovPolicy(q_logits, horizon=old.horizon)
    return Tilted(q, float(mh[s].log()) + (old.horizon - 1) * math.log(lam), h)


def seq_is_second_moment(old: ClassMarkovPolicy, new: ClassMarkovPolicy, reward, n: int, seed: int,
                         tokens_per_pass: int = TOKENS_PER_PASS) -> tuple[float, Estimate]:
    """(log_const, E_q[F / h]) for E_old‖ĝ_seq‖² = E_old[R² A² ‖∇θ log π_θ(o)‖²] (``tilted``): F =
    A²‖s(o)‖² of ``n`` sequences from q (``score_sq_norms`` with weight A on every token), drawn in
    passes; the mean with its t-interval over the n sequences (and halves)."""
    from sims.experiments._common import mean_interval

    tl = tilted(old, new)
    rows = max(1, tokens_per_pass // old.horizon)
    stream = draw_seed(torch.Generator().manual_seed(int(seed)))
    t_new = _Tables(new)
    vals = np.empty(n)
    for start in range(0, n, rows):
        k = min(rows, n - start)
        tokens = tl.q.sample_block(stream, start, k)
        mask = old.mask(tokens)
        a = reward(tokens, mask).reshape(-1, 1) * mask
        norms = t_new.sq_norms(a, tokens, new.contexts(tokens))
        vals[start:start + k] = (norms / tl.h[tokens[:, -1] % old.n_states]).numpy()
    return tl.log_const, mean_interval(vals)


def on_policy_gradient_sq(new: ClassMarkovPolicy, reward, n: int, seed: int,
                          tokens_per_pass: int = TOKENS_PER_PASS) -> float:
    """‖∇J‖² estimated without bias from ``MC_BATCHES`` batch means ḡ_j of A·∇log π_θ(o), o ~ π_θ:
    (‖Σ_j ḡ_j‖² − Σ_j ‖ḡ_j‖²) / (J(J − 1)) (a U-statistic: E⟨ḡ_i, ḡ_j⟩ = ‖∇J‖² for i ≠ j)."""
    m = n // MC_BATCHES
    rows = max(1, min(m, tokens_per_pass // new.horizon))
    stream = draw_seed(torch.Generator().manual_seed(int(seed)))
    t_new = _Tables(new)
    means = []
    for j in range(MC_BATCHES):
        g = torch.zeros(new.logits.shape, dtype=torch.float64)
        for start in range(j * m, (j + 1) * m, rows):
            k = min(rows, (j + 1) * m - start)
            tokens = new.sample_block(stream, start, k)
            mask = new.mask(tokens)
            g += t_new.score_sum(reward(tokens, mask).reshape(-1, 1) * mask, tokens, new.contexts(tokens))
        means.append((g / m).reshape(-1))
    total = torch.stack(means).sum(0)
    return float((total @ total - sum(float(x @ x) for x in means)) / (MC_BATCHES * (MC_BATCHES - 1)))


def log_var_ratio_vs_exact(batches: np.ndarray, log_const: float, moment: Estimate, grad_sq: float,
                           level: float = LEVEL, *, halves: bool = True) -> Estimate:
    """log(tr Cov_e / tr Cov_seq) with tr Cov_e = mean of the ``batches`` (paired MC under π_old) and
    tr Cov_seq = exp(log_const)·moment − ‖∇J‖² (``seq_is_second_moment``, ``on_policy_gradient_sq``):
    independent samples, so se² = se²(log v_e) + se²(log E_q); a normal interval. ‖∇J‖²'s own
    uncertainty is not propagated (it is ≤ 1e-3 of the second moment beyond T = 64 here; the
    summary reports the share)."""
    b = np.asarray(batches, np.float64)
    ve = float(b.mean())
    se_e = float(b.std(ddof=1) / math.sqrt(b.size)) / ve
    log_seq = log_const + math.log(moment.value) + math.log1p(-grad_sq * math.exp(-log_const) / moment.value)
    z = float(stats.norm.ppf(0.5 + level / 2))
    z_m = float(stats.norm.ppf(0.5 + LEVEL / 2))  # the moment's interval is at LEVEL
    se_m = (moment.high - moment.low) / (2 * z_m) / moment.value  # its half-width back to its se, relative
    value = math.log(ve) - log_seq
    half = z * math.sqrt(se_e ** 2 + se_m ** 2)
    split = None
    def usable(m: Estimate) -> bool:  # a half whose second moment leaves a positive variance
        return m.value > 0 and grad_sq * math.exp(-min(log_const, 700.0)) / m.value < 1

    if halves and b.size >= 4 and moment.halves is not None and all(usable(mh) for mh in moment.halves):
        h = b.size // 2
        split = tuple(log_var_ratio_vs_exact(part, log_const, mh, grad_sq, level, halves=False)
                      for part, mh in zip((b[:h], b[h:]), moment.halves))
    return Estimate(value, value - half, value + half, split)
