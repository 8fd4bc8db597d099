r"""Monte Carlo engine: M independent replicas of a batch estimator, streamed.

A replica is one batch of G prompts x K samples drawn from the old policy; its estimator is
advantages (a registered estimator, per group) + a registered objective with its aggregation.
For each chunk of replicas:

1. sample all sequences at once and compute rewards and advantages. With a fused kernel and two
   table policies, the sampling kernel also gathers ℓ, ℓ^old and the token ratio ρ = e^(ℓ - ℓ^old)
   from the policies' tables as it draws each token (``TablePolicy.sample_scored``: the same
   tokens), so no token pays for an exponential; the engine's own per-token intermediates (ℓ,
   ℓ^old, ρ, w) live in buffers reused from chunk to chunk (``_Buffers``);
2. every token's unnormalised weight is the weight under ``agg="token-sum"`` (every
   aggregation is linear with a normaliser c_i that is constant within a sequence —
   ``theory.aggregation`` derives it — so the weight under ``agg`` is c_i times the token-sum
   weight); c_i is computed per replica. For a registry objective the fused kernel of
   ``sims.engines.weights`` computes the scaled weights, zero-weight counts and log ratios in
   one pass (the *fused* path); otherwise — a user variant or plugin, or with
   ``MCConfig(weights="autograd")`` — one autograd call of the objective with
   ``agg="token-sum"`` gives the weights and one fused pass (``sims.engines.kernels.token_stats``)
   scales them and counts (the *autograd* path, the reference the kernels are tested against).
   ``MCResult.weight_path`` says which ran;
3. the policy turns the weights into Σ_r g_r and Σ_r g_r ⊙ g_r for the per-replica gradients
   g_r = Σ_{i∈r,t} w_it ∇θ log π(o_it) (``replica_score_moments``). Table policies (tabular,
   Markov) do it in closed form — with H_r the weighted (row, token) histogram of replica r
   and W_r its row sums, g_r = H_r - W_r p, so both sums are histograms and products of
   them; no per-sample autograd and no ``[N, T, V]`` tensor (a numba kernel on the CPU,
   ``policies.kernels``). The GRU uses ``torch.func.vmap(torch.func.grad(...))`` over replicas;
4. those sums are accumulated in float64, so memory does not grow with M. The variance trace
   and the squared error follow from them: Σ_r ‖g_r‖² = Σ (Σ_r g_r²) and
   Σ_r ‖g_r - ∇J‖² = Σ_r ‖g_r‖² - 2⟨Σ_r g_r, ∇J⟩ + n‖∇J‖².

Intervals use ``n_batches`` batch means (replicas are i.i.d., so batch means are i.i.d. too):
statistics that are themselves means (variance trace, MSE, zero-weight fraction, ESS) get a
t-interval over their batch values; the bias norm ‖E ĝ − ∇J‖ inverts a moment-matched noncentral
χ² (``_norm_interval``: a norm is not smooth at 0, where a jackknife undercovers); the cosine
combines a t-interval of the projection on ∇J with that norm interval of the rest (Bonferroni,
``_cosine_interval``); the SNR gets a delete-one-batch jackknife (bias-corrected point,
t-interval with the jackknife standard error). Only ``n_batches`` batch means of the parameter
size are kept. Every reported number
carries an interval; ``tests/sims/engines/test_coverage.py`` measures each one's coverage.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from scipy import optimize, special, stats
from torch import Tensor

from policies.table import TablePolicy
from policies.tasks import RewardFn, call_reward
from sims._checks import check_policy_pair, require
from sims.engines.kernels import token_stats
from sims.engines.weights import FusedObjective, fused_for, fused_token_stats
from sims.registry import (
    ObjectiveSpec,
    get_advantage,
    get_objective,
    require_callable_by,
)

GROUP_LOCAL_ADVANTAGES = ("raw", "group_mean", "drgrpo", "grpo", "rloo", "nsr", "psr")
WEIGHT_MODES = ("auto", "fused", "autograd")


@dataclass(frozen=True, kw_only=True)
class MCConfig:
    """Config of ``mc_gradient``.

    Attributes:
        n_replicas: M, the number of independent batches (a multiple of ``n_batches``).
        n_groups: G prompts per batch (all with the same policy here).
        group_size: K samples per prompt.
        chunk: replicas processed together (memory ~ chunk·G·K·T).
        n_batches: batch means used for the intervals (>= 2).
        level: confidence level of the intervals.
        seed: seed of the sampling generator.
        max_len: the generation budget for ``seq-mean-token-sum-norm`` (defaults to T).
        weights: how the gradient weights are computed: ``"auto"`` (the fused kernel of
            ``sims.engines.weights`` when the objective and config have one, else autograd),
            ``"fused"`` (the kernel; a ``ValueError`` saying why when there is none) or
            ``"autograd"`` (always the registered objective's autograd: the reference).
    """

    n_replicas: int = 20_000
    n_groups: int = 1
    group_size: int = 8
    chunk: int = 1_000
    n_batches: int = 20
    level: float = 0.95
    seed: int = 0
    max_len: int | None = None
    weights: str = "auto"

    def __post_init__(self) -> None:
        for name in ("n_replicas", "n_groups", "group_size", "chunk", "n_batches"):
            value = getattr(self, name)
            require(isinstance(value, int) and value >= 1, name, value, "an int >= 1")
        require(self.n_batches >= 2, "n_batches", self.n_batches, "n_batches >= 2")
        require(self.n_replicas % self.n_batches == 0 and self.n_replicas >= 2 * self.n_batches,
                "n_replicas", self.n_replicas,
                f"a multiple of n_batches={self.n_batches} with at least 2 replicas per batch")
        require(0 < self.level < 1, "level", self.level, "0 < level < 1")
        require(self.weights in WEIGHT_MODES, "weights", self.weights, "one of " + ", ".join(WEIGHT_MODES))


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval."""

    estimate: float
    low: float
    high: float
    halves: "tuple[Interval, Interval] | None" = field(default=None, compare=False, repr=False)
    """The same interval over the first and the second half of the batches (independent), where it
    is a batch-means t-interval; the claims ledger re-decides its verdicts on each half."""

    def __repr__(self) -> str:
        return f"{self.estimate:.6g} [{self.low:.6g}, {self.high:.6g}]"


@dataclass(frozen=True)
class MCResult:
    """What ``mc_gradient`` measured. Gradients are ascent directions in the policy's parameter space
    (``score_shape``).

    Attributes:
        mean: mean of the per-replica gradients; ``mean_se`` its per-coordinate standard error.
        var_trace: tr Cov(ĝ) of one replica's estimator.
        bias_norm, cosine, mse: ‖E ĝ - ∇J‖, cos(E ĝ, ∇J), E‖ĝ - ∇J‖² (with ``truth`` given).
        snr: ‖E ĝ‖² / tr Cov(ĝ).
        zero_weight_frac: fraction of valid tokens whose gradient weight is exactly 0.
        ess_frac: Kish effective sample size / n of the sequence importance ratios in a batch.
        n_sequences: sequences sampled in all.
        weight_path: ``"fused"`` or ``"autograd"``, how the gradient weights were computed;
            ``weight_note`` says why (the kernel used, or why there was none).
    """

    mean: Tensor
    mean_se: Tensor
    var_trace: Interval
    snr: Interval
    zero_weight_frac: Interval
    ess_frac: Interval
    bias_norm: Interval | None
    cosine: Interval | None
    mse: Interval | None
    n_sequences: int
    weight_path: str
    weight_note: str


def _normaliser(agg: str, mask: Tensor, n_rep: int, g: int, k: int, max_len: int) -> Tensor:
    """c_i [R·B] of each sequence within its replica (closed forms of ``theory.aggregation``)."""
    lengths = mask.sum(-1)  # (R·B,)
    b = g * k
    if agg == "token-mean":
        per_rep = lengths.reshape(n_rep, b).sum(-1)
        return (1.0 / per_rep).repeat_interleave(b)
    if agg == "seq-mean-token-mean":
        return 1.0 / (b * lengths)
    if agg == "seq-mean-token-sum":
        return torch.full_like(lengths, 1.0 / b)
    if agg == "seq-mean-token-sum-norm":
        return torch.full_like(lengths, 1.0 / (b * max_len))
    if agg == "prompt-token-mean":
        per_group = lengths.reshape(n_rep * g, k).sum(-1)
        return (1.0 / (g * per_group)).repeat_interleave(k)
    return torch.ones_like(lengths)  # token-sum


def _interval(batch_values: np.ndarray, level: float, *, halves: bool = True) -> Interval:
    """t-interval over the batch values; with >= 4 batches also over each half of them."""
    n = len(batch_values)
    est = float(batch_values.mean())
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * batch_values.std(ddof=1) / math.sqrt(n))
    split = None
    if halves and n >= 4:
        split = (_interval(batch_values[: n // 2], level, halves=False), _interval(batch_values[n // 2:], level, halves=False))
    return Interval(est, est - half, est + half, split)


def _norm_interval(batch_means: Tensor, level: float) -> Interval:
    r"""Interval for θ = ‖μ‖ from ``n`` i.i.d. batch means d_j ≈ N(μ, Σ_b) (``[n, D]``).

    With d̄ = μ + ε, ε ~ N(0, C), C = Σ_b/n, the statistic T = ‖d̄‖² has mean θ² + tr C and
    variance 2 tr C² + 4 μᵀCμ. T is matched (two moments) by a·χ'²_f(θ²/a), a scaled noncentral
    χ² with a(θ) = (tr C² + 2kθ²)/(tr C + 2θ²), f = tr C/a, where μᵀCμ ≤ kθ² with k = λ_max(C)
    (the worst direction for μ: conservative when the bias is not along the dominant noise
    direction). tr C and k are plug-in estimates from the batch Gram matrix, tr C² the estimate
    unbiased under normality, clamped to its possible range [tr C²/D, (tr C)²]. The interval
    inverts p(θ) = P(T' ≤ T_obs | θ) (``scipy.special.chndtr``, the CDF of ``scipy.stats.ncx2``): low solves p = 1 − α'/2 (0 when
    p(0) ≤ 1 − α'/2), high solves p = α'/2, the point p = 1/2 (median-unbiased); α' = 2·Φ(−t)
    with t the Student-t_{n−1} quantile of ``level``, so for large θ it is the t-interval over
    batches. It replaces a jackknife of ‖d̄‖, which undercovers near θ = 0 (0.88 at θ = 0:
    ``tests/sims/engines/test_coverage.py``) because ‖·‖ is not smooth there.
    """
    d = batch_means.detach().to(torch.float64).cpu().numpy()
    n, dim = d.shape
    dbar = d.mean(0)
    x = d - dbar
    gram = x @ x.T  # [n, n]: everything below is a function of it, so any D costs the same
    m = n - 1
    tr_c = float(np.trace(gram)) / m / n
    t_obs = float(dbar @ dbar)
    if tr_c == 0.0:
        v = math.sqrt(t_obs)
        return Interval(v, v, v)
    plug = float((gram * gram).sum()) / m ** 2 / n ** 2
    tr_c2 = (m * m / ((m - 1) * (m + 2)) * (plug - tr_c * tr_c / m)) if m > 1 else plug
    tr_c2 = min(max(tr_c2, tr_c * tr_c / dim), tr_c * tr_c)
    k = max(float(np.linalg.eigvalsh(gram)[-1]) / m / n, tr_c2 / tr_c)
    alpha = 2 * float(stats.norm.sf(stats.t.ppf(0.5 + level / 2, m)))

    def p_below(theta: float) -> float:
        a = (tr_c2 + 2 * k * theta ** 2) / (tr_c + 2 * theta ** 2)
        if theta == 0.0:
            return float(special.chdtr(tr_c / a, t_obs / a))
        return float(special.chndtr(t_obs / a, tr_c / a, theta ** 2 / a))  # = stats.ncx2.cdf, 200x faster

    def solve(p: float) -> float:
        if p_below(0.0) <= p:
            return 0.0
        hi = math.sqrt(t_obs) + 10 * math.sqrt(tr_c + math.sqrt(t_obs * k))
        while p_below(hi) > p:
            hi *= 2
        return float(optimize.brentq(lambda th: p_below(th) - p, 0.0, hi, xtol=1e-12 * hi))

    return Interval(solve(0.5), solve(1 - alpha / 2), solve(alpha / 2))


def _cosine_interval(batch_means: Tensor, direction: Tensor, level: float) -> Interval:
    r"""Interval for cos(μ, t) from ``n`` i.i.d. batch means of μ (``[n, D]``) and a fixed ``direction`` t.

    With u = t/‖t‖, a = ⟨μ, u⟩ and ρ = ‖μ − a u‖, cos = a/√(a² + ρ²) is increasing in a and, for
    a > 0, decreasing in ρ. a gets a t-interval over the batch projections and ρ the
    ``_norm_interval`` of the projected-out batch means, each at level 1 − (1 − ``level``)/2, so
    both hold together with probability ≥ ``level`` (Bonferroni); the cosine's interval is its
    range over that box. A jackknife of the cosine undercovers near cos = 1 (0.91 with an
    unbiased estimator: ``tests/sims/engines/test_coverage.py``), where ρ is near 0.
    """
    u = direction.to(torch.float64) / direction.norm()
    proj = batch_means.to(torch.float64) @ u
    each = 1 - (1 - level) / 2
    a = _interval(proj.numpy(), each)
    rho = _norm_interval(batch_means.to(torch.float64) - proj[:, None] * u, each)

    def cos(x: float, r: float) -> float:
        return 0.0 if x == 0.0 == r else x / math.hypot(x, r)

    low = cos(a.low, rho.high if a.low > 0 else rho.low)
    high = cos(a.high, rho.low if a.high > 0 else rho.high)
    return Interval(cos(a.estimate, rho.estimate), low, high)


def _jackknife(batch_means: Tensor, fn: Callable[[Tensor], float], level: float) -> Interval:
    """Delete-one-batch jackknife of ``fn(mean)``: bias-corrected point and t-interval."""
    n = batch_means.shape[0]
    full = fn(batch_means.mean(0))
    loo = np.array([fn((batch_means.sum(0) - batch_means[j]) / (n - 1)) for j in range(n)])
    point = n * full - (n - 1) * loo.mean()
    se = math.sqrt((n - 1) / n * ((loo - loo.mean()) ** 2).sum())
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * se)
    return Interval(float(point), float(point - half), float(point + half))


def mc_gradient(new_policy, old_policy, reward_fn: RewardFn, objective: str | ObjectiveSpec, config: Any,
                advantage: str, advantage_config: Any, mc: MCConfig, *,
                truth: Tensor | None = None) -> MCResult:
    """Bias, variance and MSE of a batch estimator by Monte Carlo (see the module docstring).

    The policies are any of ``policies`` (tabular, Markov: closed-form scores; GRU: ``vmap``).
    For a prompt-conditioned policy the G groups of a replica use prompts 0..G-1 (so
    ``n_groups`` must equal the policy's P) and ``reward_fn(tokens, mask, prompts)`` is
    called with the prompt ids; otherwise ``reward_fn(tokens, mask)``. ``truth`` (e.g.
    ``sims.engines.exact.exact_objective(new_policy, reward_fn)[1]``) enables the bias, cosine and
    MSE. Sampling uses only ``torch.Generator().manual_seed(mc.seed)``. ``objective`` is a
    registry name or an ``ObjectiveSpec`` (a user variant or plugin: the autograd path).
    """
    spec, est = _check_task(new_policy, old_policy, objective, advantage, mc.n_groups)
    fused, note = select_weights(spec, config, mc.weights)
    shape = new_policy.score_shape
    if truth is not None:
        require(isinstance(truth, Tensor) and truth.shape == shape, "truth",
                tuple(getattr(truth, "shape", ())), f"a tensor of the policy's score shape {tuple(shape)}")
    g, k = mc.n_groups, mc.group_size
    max_len = mc.max_len or new_policy.horizon
    token_sum = _token_sum(config)
    gen = torch.Generator().manual_seed(mc.seed)
    truth64 = None if truth is None else truth.detach().to("cpu", torch.float64).reshape(-1)
    per_batch = mc.n_replicas // mc.n_batches
    dim = shape.numel()
    means = torch.zeros(mc.n_batches, dim, dtype=torch.float64)
    total_sq = torch.zeros(dim, dtype=torch.float64)
    scalars = {key: np.zeros(mc.n_batches) for key in ("var_trace", "zero", "ess", "sq_err")}
    buffers = _Buffers()
    for j in range(mc.n_batches):
        s1 = torch.zeros(dim, dtype=torch.float64)
        s2 = torch.zeros(dim, dtype=torch.float64)
        done = 0
        while done < per_batch:
            n_rep = min(mc.chunk, per_batch - done)
            c1, c2, zero, ess = _chunk(new_policy, old_policy, reward_fn, spec, token_sum, est,
                                       advantage_config, config.agg, n_rep, g, k, max_len, gen,
                                       fused=fused, buffers=buffers)
            s1 += c1
            s2 += c2
            scalars["zero"][j] += zero
            scalars["ess"][j] += ess
            done += n_rep
        means[j] = s1 / per_batch
        total_sq += s2
        sum_sq = float(s2.sum())  # Σ_r ‖g_r‖²
        scalars["var_trace"][j] = (sum_sq - per_batch * float(means[j] @ means[j])) / (per_batch - 1)
        if truth64 is not None:  # Σ_r ‖g_r - ∇J‖² = Σ‖g_r‖² - 2⟨Σ g_r, ∇J⟩ + n‖∇J‖²
            scalars["sq_err"][j] = sum_sq - 2 * float(s1 @ truth64) + per_batch * float(truth64 @ truth64)
    for key in ("zero", "ess", "sq_err"):
        scalars[key] /= per_batch
    level = mc.level
    var_trace = _interval(scalars["var_trace"], level)
    mean = means.mean(0)
    m = mc.n_replicas
    mean_se = ((total_sq - m * mean * mean).clamp_min(0) / (m - 1) / m).sqrt()  # per coordinate
    bias = cos = mse = None
    if truth64 is not None:
        bias = _norm_interval(means - truth64, level)
        cos = _cosine_interval(means, truth64, level)
        mse = _interval(scalars["sq_err"], level)
    snr = _jackknife(means, lambda m: float(m @ m) / var_trace.estimate, level)
    return MCResult(
        mean=mean.reshape(shape), mean_se=mean_se.reshape(shape), var_trace=var_trace, snr=snr,
        zero_weight_frac=_interval(scalars["zero"], level), ess_frac=_interval(scalars["ess"], level),
        bias_norm=bias, cosine=cos, mse=mse, n_sequences=mc.n_replicas * g * k,
        weight_path="autograd" if fused is None else "fused", weight_note=note,
    )


STAGES = ("sample", "reward and advantages", "log-probs", "gradient weights and counts", "replica moments",
          "zero fraction and ESS")


def select_weights(spec: ObjectiveSpec, config: Any, mode: str) -> tuple[FusedObjective | None, str]:
    """``(kernel entry or None for autograd, note)`` for ``MCConfig.weights = mode``: the note
    names the kernel, or says why the autograd path runs. ``mode="fused"`` without a kernel is a
    ``ValueError`` with the reason."""
    require(mode in WEIGHT_MODES, "weights", mode, "one of " + ", ".join(WEIGHT_MODES))
    if mode == "autograd":
        return None, "autograd: forced (weights='autograd')"
    entry, reason = fused_for(spec, config)
    require(entry is not None or mode == "auto", "weights", mode,
            f"'auto' or 'autograd': there is no fused kernel here ({reason})")
    if entry is None:
        return None, f"autograd: {reason}"
    return entry, f"fused: sims.engines.weights kernel for {entry.name!r} ({entry.configs})"


def _token_sum(config: Any) -> Any:
    """The objective's config with ``agg="token-sum"``: its autograd weight times c_i is the
    weight under the config's own aggregation (module docstring, step 2)."""
    return dataclasses.replace(config, agg="token-sum", max_len=None, group_size=None)


def _check_task(new_policy, old_policy, objective, advantage: str, n_groups: int):
    """The objective's spec (registered by name, or given) and the advantage's, once the task
    is checked."""
    require(advantage in GROUP_LOCAL_ADVANTAGES, "advantage", advantage,
            "one of " + ", ".join(GROUP_LOCAL_ADVANTAGES) + " (per-group estimators)")
    spec = objective if isinstance(objective, ObjectiveSpec) else get_objective(objective)
    est = get_advantage(advantage)
    # replicas are concatenated into one call: no extra inputs to give, no batch-coupled selection
    require_callable_by(spec, "the Monte Carlo engine", independent_batches=True)
    check_policy_pair(new_policy, old_policy)
    require(old_policy.n_prompts in (None, n_groups), "n_groups", n_groups,
            f"the policy's number of prompts P={old_policy.n_prompts} (group g uses prompt g)")
    return spec, est


class _Buffers:
    """The chunk step's reusable CPU buffers, by name: the engine's own per-token intermediates
    (ℓ, ℓ^old, ρ, w), never the tokens or the mask a reward function sees. A fresh ``[N, T]``
    tensor per chunk costs a page fault per 4 KiB once glibc has returned the last chunk's memory
    (about 1,400 faults per chunk of 256k tokens, as much time as sampling them)."""

    def __init__(self) -> None:
        self._held: dict[tuple, Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """The buffer for ``(name, shape, dtype)``: a batch's last, shorter chunk has its own."""
        key = (name, tuple(shape), dtype)
        held = self._held.get(key)
        if held is None:
            held = self._held[key] = torch.empty(shape, dtype=dtype)
        return held


def _table_pair(new_policy, old_policy) -> bool:
    """Two table policies of one family: the old one's ``sample_scored`` gathers ℓ, ℓ^old and the
    token ratios ρ from their tables as it samples (``policies.table.TablePolicy.sample_scored``),
    which the fused kernels read instead of computing e^d per token."""
    return isinstance(old_policy, TablePolicy) and type(new_policy) is type(old_policy)


def _chunk(new_policy, old_policy, reward_fn, spec, token_sum, est, advantage_config, agg,
           n_rep, g, k, max_len, gen, lap: Callable[[str], None] = lambda stage: None, *,
           fused: FusedObjective | None = None, buffers: _Buffers | None = None):
    """(Σ_r g_r, Σ_r g_r², summed zero-weight fraction, summed ESS fraction) of one chunk.
    ``lap(stage)`` is called as each of ``STAGES`` ends (``profile_chunk`` times them). The
    weights come from ``fused`` (a ``sims.engines.weights`` kernel) or, when it is ``None``, from
    autograd of ``spec.loss_fn`` with the token-sum config ``token_sum``. ``buffers`` (one per
    run) holds the CPU intermediates from one chunk to the next."""
    buffers = _Buffers() if buffers is None else buffers
    b = g * k
    dtype = new_policy.dtype  # compute in the policy's dtype, accumulate in float64
    dev = new_policy.device
    prompts = None
    if old_policy.n_prompts is not None:
        prompts = torch.arange(g, device=dev).repeat_interleave(k).repeat(n_rep)  # (R·B,)
    cpu = dev.type == "cpu"
    scored = fused is not None and cpu and _table_pair(new_policy, old_policy)  # the torch path computes ρ
    n, horizon = n_rep * b, old_policy.horizon
    aux = None
    if scored:  # ℓ, ℓ^old and ρ (and the kernel's cell values) gathered as the tokens are drawn
        values = fused.cell_values
        lead = () if values is None else (2,)
        out = (buffers.get("logp", (n, horizon), new_policy.dtype),
               buffers.get("old_logp", (n, horizon), old_policy.dtype),
               buffers.get("rho", (*lead, n, horizon), torch.float64))
        with torch.no_grad():
            tokens, mask, logp, old_logp, rho = old_policy.sample_scored(
                new_policy, n, generator=gen, prompts=prompts, cell_values=values, out=out)
        if values is not None:
            rho, aux = rho[0], rho[1]
    else:
        tokens, mask = old_policy.sample(n_rep * b, generator=gen, prompts=prompts)  # (R·B, T)
    lap(STAGES[0])
    rewards = call_reward(reward_fn, tokens, mask, prompts).to(dtype).reshape(n_rep * g, k)
    mask = mask.to(dtype)
    adv = est.fn(rewards, config=advantage_config).reshape(-1, 1).expand(mask.shape)  # (R·B, T)
    lap(STAGES[1])
    if not scored:
        with torch.no_grad():
            logp, old_logp, rho = new_policy.log_prob(tokens, prompts), old_policy.log_prob(tokens, prompts), None
    old_logp = old_logp.to(dtype)
    lap(STAGES[2])
    scale = _normaliser(agg, mask, n_rep, g, k, max_len)
    if fused is None:
        logp.requires_grad_(True)
        loss, _ = spec.loss_fn(logp, old_logp, adv, mask, config=token_sum)
        (grad,) = torch.autograd.grad(loss, logp)
        w, n_zero, n_valid, log_r = token_stats(grad, scale, mask, logp, old_logp)  # w: (R·B, T)
    else:
        w_out = buffers.get("w", (n, horizon), logp.dtype) if cpu else None
        w, n_zero, n_valid, log_r = fused_token_stats(fused, token_sum, logp, old_logp, adv, mask, scale, rho,
                                                      out=w_out, aux=aux)
    lap(STAGES[3])
    s1, s2 = new_policy.replica_score_moments(w, tokens, prompts, n_rep)
    lap(STAGES[4])
    zero = n_zero.reshape(n_rep, b).sum(-1) / n_valid.reshape(n_rep, b).sum(-1)
    log_r = log_r.reshape(n_rep, b)
    r = torch.exp(log_r - log_r.max(-1, keepdim=True).values)
    ess = r.sum(-1) ** 2 / (r * r).sum(-1) / b
    out = s1.cpu(), s2.cpu(), float(zero.sum()), float(ess.sum())
    lap(STAGES[5])
    return out


def profile_chunk(new_policy, old_policy, reward_fn: RewardFn, objective: str | ObjectiveSpec, config: Any,
                  advantage: str, advantage_config: Any, *, n_rep: int, n_groups: int = 1,
                  group_size: int = 8, repeats: int = 10, seed: int = 0,
                  weights: str = "auto") -> dict[str, float]:
    """Seconds per million tokens spent in each of ``STAGES`` by ``mc_gradient``'s chunk step
    (the same code, timed between stages; CUDA is synchronised at each lap), the median over
    ``repeats`` chunks of ``n_rep`` replicas after one warm-up chunk. ``weights`` as
    ``MCConfig.weights``."""
    for name, value in (("n_rep", n_rep), ("n_groups", n_groups), ("group_size", group_size), ("repeats", repeats)):
        require(isinstance(value, int) and not isinstance(value, bool) and value >= 1, name, value, "an int >= 1")
    spec, est = _check_task(new_policy, old_policy, objective, advantage, n_groups)
    fused, _ = select_weights(spec, config, weights)
    token_sum = _token_sum(config)
    gen = torch.Generator().manual_seed(seed)
    cuda = new_policy.device.type == "cuda"
    laps: dict[str, list[float]] = {stage: [] for stage in STAGES}
    clock = [0.0]

    def lap(stage: str) -> None:
        if cuda:
            torch.cuda.synchronize(new_policy.device)
        now = time.perf_counter()
        laps[stage].append(now - clock[0])
        clock[0] = now

    args = (new_policy, old_policy, reward_fn, spec, token_sum, est, advantage_config, config.agg,
            n_rep, n_groups, group_size, new_policy.horizon, gen)
    buffers = _Buffers()
    _chunk(*args, fused=fused, buffers=buffers)  # warm-up (kernel compilation, allocator)
    for _ in range(repeats):
        clock[0] = time.perf_counter()
        _chunk(*args, lap=lap, fused=fused, buffers=buffers)
    tokens = n_rep * n_groups * group_size * new_policy.horizon
    return {stage: float(np.median(laps[stage])) / tokens * 1e6 for stage in STAGES}
