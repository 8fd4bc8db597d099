r"""Many seeds of one RL configuration in lockstep on the tiny transformer LM (``policies.transformer``).

The parameters of S seeds are stacked along a leading seed axis. One training step samples G
prompts × K responses per seed with that seed's own generator, then takes ``n_updates`` optimiser
steps on the registered algorithm's loss over the same batch (π_old fixed), exactly as
``sims.experiments.dynamics.train`` does for the tabular policy. Three pieces make it one batched
computation instead of S Python loops:

* the model: ``policies.transformer``'s pure ``response_log_probs`` / ``sample_tokens`` called on
  the stacked parameters, so the seed axis is the leading batch axis of every matrix product
  (``torch.bmm`` over seeds) — the value of ``torch.func.vmap`` of the per-seed function (tested
  to float64 rounding, values and gradients), without vmap's per-operation dispatch (7.6 ms of a
  51 ms step at S = 32, G8 × K8); each prompt is computed once per group (``repeats`` = K) and
  the attention runs in ``policies.attention``'s fused kernels. Autograd goes back through the
  stacked forward (each seed's loss reaches only its own slice);
* the loss (``stacked_loss``): the S per-seed losses of ``sims.algorithms.algorithm_loss`` as one
  call of the registered advantage and objective on the seeds' rows side by side. This is exact
  because every part it uses is row-local — group advantages per group; per-token losses of
  ``ppo_clip``, ``gspo``, ``cispo`` and ``sgs_cispo`` per row — and each of those per-token losses is
  positively homogeneous of degree 1 in the advantage (L(c·A) = c·L(A) for c > 0), so each
  seed's aggregation normaliser (with its dynamic-sampling drops) is carried by the advantage as a
  per-row factor c_i (``row_weights``) and the aggregation becomes a plain token sum. Tested
  against ``algorithm_loss`` seed by seed (``tests/sims/experiments/test_lm_train.py``);
* the optimiser (``optimiser_step``): Adam (torch.optim.Adam's update, per-seed step counts) and
  plain SGD on the stacked tensors; a seed whose batch has no group left by the filter takes no
  step (``algorithm_loss`` refuses such a batch).

``per_seed_step`` is the reference: the same step as a Python loop over seeds with the
unbatched model, ``algorithm_loss`` and ``torch.optim``. The SFT-like warm start
(``warm_start``) is cached on disk by config hash (``sims.cache.default_cache_dir``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from policies.table import eos_mask
from policies.transformer import (
    LMShape,
    init_params,
    log_prob_fn,
    response_log_probs,
    sample_tokens,
)
from sims._checks import require, require_choice
from sims.advantages import broadcast_to_tokens
from sims.algorithms import Algorithm, algorithm_loss
from sims.kl import kl_values
from sims.registry import get_advantage, get_objective, require_callable_by

STACKED_OBJECTIVES = ("ppo_clip", "gspo", "cispo", "sgs_cispo")  # row-local and homogeneous in A
OPTIMISERS = ("adam", "sgd")


# ---------------------------------------------------------------------------- optimisers
@dataclass(frozen=True)
class Optimiser:
    """``adam`` (torch.optim.Adam defaults: betas (0.9, 0.999), eps 1e-8) or plain ``sgd``, at ``lr``."""

    name: str = "adam"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        require_choice("optimiser", self.name, OPTIMISERS)
        require(isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0, "lr", self.lr,
                "a finite lr > 0")

    def torch_optimizer(self, params: list[Tensor]) -> torch.optim.Optimizer:
        """The per-seed reference optimiser (``torch.optim``)."""
        if self.name == "adam":
            return torch.optim.Adam(params, lr=self.lr, betas=self.betas, eps=self.eps)
        return torch.optim.SGD(params, lr=self.lr)


def flatten(params: dict[str, Tensor]) -> Tensor:
    """``[S, P]``: stacked ``params`` (leading seed axis S) as one row of P numbers per seed, in
    the dict's order (the layout ``unflatten`` reads)."""
    return torch.cat([v.reshape(v.shape[0], -1) for v in params.values()], 1)


def unflatten(flat: Tensor, like: dict[str, Tensor]) -> dict[str, Tensor]:
    """The dict of ``like``'s keys and shapes as views into ``flat [S, P]`` (inverse of ``flatten``;
    gradients through the views reach ``flat``)."""
    sizes = [v[0].numel() for v in like.values()]
    return {k: z.reshape(v.shape) for (k, v), z in zip(like.items(), flat.split(sizes, 1))}


def init_state(opt: Optimiser, params: dict[str, Tensor]) -> dict[str, Any]:
    """Optimiser state of stacked ``params`` (leading seed axis S): Adam's moments as ``[S, P]``
    (``flatten``'s layout) and per-seed step counts; nothing for SGD."""
    if opt.name == "sgd":
        return {}
    flat = flatten(params)
    return {"m": torch.zeros_like(flat), "v": torch.zeros_like(flat),
            "t": torch.zeros(flat.shape[0], dtype=torch.int64)}


def optimiser_step(opt: Optimiser, params: Tensor, grads: Tensor, state: dict[str, Any],
                   active: Tensor) -> tuple[Tensor, dict[str, Any]]:
    r"""One step of every seed whose ``active[s]`` is True on ``params, grads [S, P]`` (the others
    keep params and state); all parameters of a seed in one row.

    SGD: θ ← θ − lr·g. Adam (as ``torch.optim.Adam``): m ← lerp(m, g, 1 − β₁), v ← β₂v + (1 − β₂)g²,
    θ ← θ − (lr / (1 − β₁ᵗ))·m / (√v / √(1 − β₂ᵗ) + ε), with t the seed's own step count. On the
    CPU Adam is one fused pass (``_adam_rows``, numba; 5-7x faster than the dozen tensor operations
    of ``adam_torch``, its reference).
    """
    if opt.name == "sgd":
        keep = active.reshape(-1, 1).to(params.device)
        return torch.where(keep, params - opt.lr * grads, params), state
    b1, b2 = opt.betas
    t = state["t"] + active.to(torch.int64).cpu()
    t_safe = t.clamp(min=1).to(torch.float64)
    step_size = opt.lr / (1 - b1 ** t_safe)
    bc2_sqrt = (1 - b2 ** t_safe).sqrt()
    if params.device.type != "cpu" or params.dtype not in (torch.float32, torch.float64):
        new, m, v = adam_torch(params, grads, state["m"], state["v"], step_size, bc2_sqrt, active, opt)
        return new, {"m": m, "v": v, "t": t}
    new, m, v = (torch.empty_like(params) for _ in range(3))
    arrays = [x.detach().contiguous().numpy() for x in (params, grads, state["m"], state["v"])]
    scalar = arrays[0].dtype.type  # the parameters' precision, as torch's ops
    _adam_rows(*arrays,
               step_size.to(params.dtype).numpy(), bc2_sqrt.to(params.dtype).numpy(), active.cpu().numpy(),
               scalar(1 - b1), scalar(b2), scalar(1 - b2), scalar(opt.eps), new.numpy(), m.numpy(), v.numpy())
    return new, {"m": m, "v": v, "t": t}


def adam_torch(params: Tensor, grads: Tensor, m: Tensor, v: Tensor, step_size: Tensor, bc2_sqrt: Tensor,
               active: Tensor, opt: Optimiser) -> tuple[Tensor, Tensor, Tensor]:
    """``optimiser_step``'s Adam update in tensor operations (the reference, and the non-CPU path):
    ``(params, m, v)`` after the step, rows with ``active`` False unchanged; ``step_size`` and
    ``bc2_sqrt [S]`` are lr/(1 − β₁ᵗ) and √(1 − β₂ᵗ)."""
    b1, b2 = opt.betas
    keep = active.reshape(-1, 1).to(params.device)
    step = step_size.to(params.dtype).to(params.device).reshape(-1, 1)
    bc2 = bc2_sqrt.to(params.dtype).to(params.device).reshape(-1, 1)
    m_new = m.lerp(grads, 1 - b1)
    v_new = v * b2 + (1 - b2) * grads * grads
    p_new = params - step * (m_new / (v_new.sqrt() / bc2 + opt.eps))
    return (torch.where(keep, p_new, params), torch.where(keep, m_new, m), torch.where(keep, v_new, v))


@njit(parallel=True, cache=True)
def _adam_rows(p, g, m, v, step_size, bc2_sqrt, active, w1, b2, w2, eps, p_out, m_out, v_out):
    """``adam_torch`` in one pass per seed row (same formula and operation order, in the arrays'
    precision: ``w1`` = 1 − β₁, ``w2`` = 1 − β₂ and the other scalars of the parameters' dtype)."""
    for s in prange(p.shape[0]):
        if not active[s]:
            p_out[s] = p[s]
            m_out[s] = m[s]
            v_out[s] = v[s]
            continue
        step, bc2 = step_size[s], bc2_sqrt[s]
        for k in range(p.shape[1]):
            gk = g[s, k]
            mk = m[s, k] + w1 * (gk - m[s, k])
            vk = v[s, k] * b2 + w2 * gk * gk
            m_out[s, k] = mk
            v_out[s, k] = vk
            p_out[s, k] = p[s, k] - step * (mk / (np.sqrt(vk) / bc2 + eps))


# ---------------------------------------------------------------------------- the stacked loss
def check_stackable(algorithm: Algorithm) -> None:
    """``stacked_loss`` supports the objectives in ``STACKED_OBJECTIVES``, no filter or dynamic
    sampling, and a KL term in the loss; anything else is refused (ValueError)."""
    require(algorithm.objective in STACKED_OBJECTIVES, "algorithm.objective", algorithm.objective,
            "one of " + ", ".join(STACKED_OBJECTIVES) + " (row-local, homogeneous in the advantage)")
    require(algorithm.group_filter in (None, "dynamic_sampling"), "algorithm.group_filter", algorithm.group_filter,
            "None or 'dynamic_sampling'")
    require(algorithm.kl is None or algorithm.kl.placement == "loss", "algorithm.kl.placement",
            None if algorithm.kl is None else algorithm.kl.placement, "'loss' (or no KL term)")


def kept_groups(algorithm: Algorithm, rewards: Tensor) -> Tensor:
    """``[S, G]`` True for the groups the algorithm's filter keeps (all without a filter)."""
    if algorithm.group_filter is None:
        return torch.ones(rewards.shape[:2], dtype=torch.bool, device=rewards.device)
    spread = rewards.max(-1).values - rewards.min(-1).values
    return spread > algorithm.group_filter_config.atol


def row_weights(mask: Tensor, keep_rows: Tensor, *, agg: str, group_size: int, max_len: int | None) -> Tensor:
    r"""``[S, B]`` per-row normaliser c_i of each seed's aggregation over its kept rows (0 on
    dropped rows): ``sims.aggregation.token_weights`` of the kept rows, which is constant along a row.

    token-mean 1/N_s; seq-mean-token-mean 1/(B'_s T_i); seq-mean-token-sum 1/B'_s;
    seq-mean-token-sum-norm 1/(B'_s·max_len); prompt-token-mean 1/(G'_s N_g); token-sum 1;
    with B'_s, G'_s the kept rows and groups of seed s, N_s its kept valid tokens, N_g group g's.
    """
    k = keep_rows.to(mask.dtype)
    lengths = mask.sum(-1)  # (S, B)
    n_rows = k.sum(-1, keepdim=True)
    safe = n_rows.clamp(min=1)
    if agg == "token-sum":
        c = torch.ones_like(lengths)
    elif agg == "token-mean":
        c = (1 / (k * lengths).sum(-1, keepdim=True).clamp(min=1)).expand_as(lengths)
    elif agg == "seq-mean-token-mean":
        c = 1 / (safe * lengths)
    elif agg == "seq-mean-token-sum":
        c = (1 / safe).expand_as(lengths)
    elif agg == "seq-mean-token-sum-norm":
        require(max_len is not None, "max_len", max_len, "the generation budget for seq-mean-token-sum-norm")
        c = (1 / (safe * max_len)).expand_as(lengths)
    elif agg == "prompt-token-mean":
        s, b = lengths.shape
        group_tokens = lengths.reshape(s, b // group_size, group_size).sum(-1)  # (S, G)
        n_groups = (n_rows / group_size).clamp(min=1)
        c = (1 / (n_groups * group_tokens)).repeat_interleave(group_size, -1)
    else:
        raise ValueError(f"agg={agg!r} is not supported by stacked_loss")
    return c * k


def stacked_loss(algorithm: Algorithm, logp: Tensor, old_logp: Tensor, rewards: Tensor, mask: Tensor, *,
                 ref_logp: Tensor | None = None, max_len: int | None = None) -> tuple[Tensor, Tensor]:
    """Σ_s of ``algorithm_loss`` on seed s's slice, and ``active [S]`` (seeds with a kept group).

    ``logp, old_logp, mask, ref_logp``: ``[S, G·K, T]``; ``rewards [S, G, K]``. See the module doc
    for why one call on the seeds' rows side by side is exact; a seed whose groups are all dropped
    contributes 0 (``algorithm_loss`` raises for it) and is inactive.
    """
    check_stackable(algorithm)
    s, b, t = logp.shape
    _, g, k = rewards.shape
    keep = kept_groups(algorithm, rewards)  # (S, G)
    keep_rows = keep.repeat_interleave(k, -1)  # (S, B)
    c = row_weights(mask, keep_rows, agg=algorithm.agg, group_size=k, max_len=max_len)  # (S, B)
    adv = get_advantage(algorithm.advantage).fn(rewards.reshape(s * g, k), config=algorithm.advantage_config)
    adv = adv.to(logp.dtype) * c.reshape(s * g, k).to(logp.dtype)
    flat = (lambda x: x.reshape(s * b, t))
    m = flat(mask)
    adv_tokens = broadcast_to_tokens(adv, m)
    config = dataclasses.replace(algorithm.objective_config, agg="token-sum", group_size=k)
    spec = get_objective(algorithm.objective)
    require_callable_by(spec, "stacked_loss", independent_batches=False)
    loss, _ = spec.loss_fn(flat(logp), flat(old_logp), adv_tokens, m, config=config)
    if algorithm.kl is not None:
        require(ref_logp is not None, "ref_logp", ref_logp, f"a tensor: algorithm {algorithm.name!r} has a KL term")
        kl = kl_values(flat(logp), flat(ref_logp), estimator=algorithm.kl.estimator)
        loss = loss + algorithm.kl.coef * (kl * m * c.reshape(-1, 1)).sum()
    return loss, keep.any(-1)


# ---------------------------------------------------------------------------- one training step
@dataclass(frozen=True)
class StepSpec:
    """What one training step needs besides the parameters.

    Attributes:
        shape: the LM's ``LMShape``; prompt_tokens: ``[P, Lp]``; eos: EOS id or None.
        reward: ``reward(tokens, mask, prompts) -> [N]``; group_size: K samples per prompt;
        n_updates: optimiser steps per sampled batch; algorithm; optimiser.
        entropy_bonus: β >= 0; the loss of each seed gains −β·H̄, H̄ = Σ_it m_it H(π(·|prefix_it)) / Σ m
            (the exact entropy per valid token at the sampled prefixes): the usual PPO entropy bonus,
            used to build a variant that keeps entropy by construction (a power check).
    """

    shape: LMShape
    prompt_tokens: Tensor
    eos: int | None
    reward: Any
    group_size: int
    n_updates: int
    algorithm: Algorithm
    optimiser: Optimiser
    entropy_bonus: float = 0.0

    def __post_init__(self) -> None:
        require(self.entropy_bonus >= 0, "entropy_bonus", self.entropy_bonus, "a number >= 0")

    @property
    def prompt_ids(self) -> Tensor:
        return torch.arange(self.prompt_tokens.shape[0]).repeat_interleave(self.group_size)


def draw_uniforms(generators: list[torch.Generator], n: int, horizon: int, dtype, device) -> Tensor:
    """``[S, n, T]``: seed s's uniforms from its own generator (CPU), as ``TransformerPolicy.sample``."""
    return torch.stack([torch.rand(n, horizon, generator=g, dtype=dtype) for g in generators]).to(device)


def stacked_sample(params: dict[str, Tensor], prompt_rows: Tensor, u: Tensor, n_heads: int,
                   repeats: int = 1) -> Tensor:
    """``[S, n, T]`` tokens of every seed: ``sample_tokens`` on the stacked parameters (prompt row g
    serves the ``repeats`` consecutive sequences g·repeats ..)."""
    with torch.no_grad():
        return sample_tokens(params, prompt_rows, u, n_heads, repeats)


def token_entropy(logp_full: Tensor, mask: Tensor) -> Tensor:
    """``[S]`` entropy per valid token: Σ_it m_it H(π(·|prefix_it)) / Σ_it m_it, from ``[S, B, T, V]``
    log-probabilities."""
    h = -(logp_full.exp() * logp_full).sum(-1)
    return (h * mask).sum((1, 2)) / mask.sum((1, 2))


def stacked_step(spec: StepSpec, params: dict[str, Tensor], state: dict[str, Any], generators: list[torch.Generator],
                 ref_params: dict[str, Tensor] | None = None) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, Tensor]]:
    """One training step of every seed (module doc). Returns the new params (views into one
    ``[S, P]`` tensor, ``unflatten``) and state and the batch: ``tokens [S, B, T]``, ``mask``,
    ``rewards [S, G, K]``, ``logp_full [S, B, T, V]`` (π_old, detached), ``zero_grad_frac [S]``
    (valid tokens with gradient weight exactly 0 in the last update), ``active [S]``.

    The model sees each prompt once per group (``repeats`` = K of ``sample_tokens`` and
    ``response_log_probs``); the gradient is taken with respect to the flat ``[S, P]`` parameters,
    so the optimiser steps all of them at once."""
    n_heads, k = spec.shape.n_heads, spec.group_size
    ids = spec.prompt_ids.to(spec.prompt_tokens.device)
    prompts = spec.prompt_tokens
    flat = flatten(params)
    u = draw_uniforms(generators, ids.shape[0], spec.shape.horizon, flat.dtype, flat.device)
    tokens = stacked_sample(params, prompts, u, n_heads, k)
    mask = eos_mask(tokens, spec.eos, flat.dtype)
    s, b, t = tokens.shape
    rewards = spec.reward(tokens.reshape(s * b, t), mask.reshape(s * b, t), ids.repeat(s)).reshape(
        s, -1, k).to(flat.dtype)
    ref_logp = None
    if spec.algorithm.kl is not None:
        with torch.no_grad():
            ref_logp = log_prob_fn(ref_params, prompts.repeat(s, 1), tokens.reshape(s * b, t), n_heads,
                                   k).reshape(s, b, t)
    old_logp = logp_full = None
    zero = active = None
    for update in range(spec.n_updates):
        leaf = flat.detach().requires_grad_(True)
        full = response_log_probs(unflatten(leaf, params), prompts, tokens, n_heads, k)
        logp = full.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        if update == 0:
            logp_full, old_logp = full.detach(), logp.detach()
        loss, active = stacked_loss(spec.algorithm, logp, old_logp, rewards, mask, ref_logp=ref_logp,
                                    max_len=spec.shape.horizon)
        if spec.entropy_bonus > 0:
            loss = loss - spec.entropy_bonus * token_entropy(full, mask).sum()
        grad, grad_logp = torch.autograd.grad(loss, [leaf, logp])
        zero = (((grad_logp == 0) & (mask > 0)).sum((1, 2)) / mask.sum((1, 2))).detach()
        flat, state = optimiser_step(spec.optimiser, flat, grad, state, active)
        if not bool(active.any()):
            break
    zero = torch.where(active, zero, torch.ones_like(zero))
    return unflatten(flat, params), state, {"tokens": tokens, "mask": mask, "rewards": rewards,
                                            "logp_full": logp_full, "zero_grad_frac": zero, "active": active}


def per_seed_step(spec: StepSpec, params: list[dict[str, Tensor]], optimizers: list[torch.optim.Optimizer],
                  generators: list[torch.Generator], ref_params: dict[str, Tensor] | None = None) -> list[Tensor]:
    """The reference: ``stacked_step`` as a Python loop over seeds — unbatched ``sample_tokens`` and
    ``log_prob_fn`` (the same model functions, prompts once per group), ``sims.algorithms.algorithm_loss``
    and ``torch.optim`` (``params[s]`` are leaf tensors updated in place by ``optimizers[s]``).
    Returns each seed's sampled tokens."""
    n_heads, k = spec.shape.n_heads, spec.group_size
    ids = spec.prompt_ids.to(spec.prompt_tokens.device)
    prompts = spec.prompt_tokens
    out = []
    for p, opt, gen in zip(params, optimizers, generators):
        p0 = next(iter(p.values()))
        u = torch.rand(ids.shape[0], spec.shape.horizon, generator=gen, dtype=p0.dtype).to(p0.device)
        with torch.no_grad():
            tokens = sample_tokens(p, prompts, u, n_heads, k)
            ref_logp = None if ref_params is None else log_prob_fn(ref_params, prompts, tokens, n_heads, k)
        mask = eos_mask(tokens, spec.eos, p0.dtype)
        rewards = spec.reward(tokens, mask, ids).reshape(-1, k).to(p0.dtype)
        old_logp = None
        for _ in range(spec.n_updates):
            logp = log_prob_fn(p, prompts, tokens, n_heads, k)
            if old_logp is None:  # π_old: the first update's forward, as stacked_step
                old_logp = logp.detach()
            try:
                loss, _ = algorithm_loss(spec.algorithm, logp, old_logp, rewards, mask, ref_logp=ref_logp,
                                         max_len=spec.shape.horizon)
            except ValueError:  # every group dropped by the filter: no update
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
        out.append(tokens)
    return out


def stack(params: dict[str, Tensor], n_seeds: int) -> dict[str, Tensor]:
    """``n_seeds`` copies of ``params`` along a new leading axis."""
    return {k: v.detach().unsqueeze(0).expand(n_seeds, *v.shape).clone() for k, v in params.items()}


# ---------------------------------------------------------------------------- the SFT-like warm start
@dataclass(frozen=True)
class WarmStart:
    """Supervised warm-up on noisy demonstrations (an SFT-like start with a spread of pass rates).

    Prompt g's ``n_demo`` demonstrations are correct answers (uniform over its answer set,
    ``task.demonstration``) with fraction ``correct[g]``, else uniformly random token arrays; the
    LM is fitted to them by ``steps`` full-batch Adam steps on the mean token cross-entropy of the
    valid tokens, from ``init_params`` with ``seed``.
    """

    correct: tuple[float, ...]
    n_demo: int = 32
    steps: int = 200
    lr: float = 1e-2
    seed: int = 0

    def __post_init__(self) -> None:
        require(all(0 <= q <= 1 for q in self.correct) and len(self.correct) >= 1, "correct", self.correct,
                "fractions in [0, 1], one per prompt")
        for name in ("n_demo", "steps"):
            require(isinstance(getattr(self, name), int) and getattr(self, name) >= 1, name, getattr(self, name),
                    "an int >= 1")


def demonstrations(task, warm: WarmStart) -> tuple[Tensor, Tensor]:
    """``(prompt ids [P·n_demo], tokens [P·n_demo, T])`` of the warm-up data (module doc of ``WarmStart``)."""
    require(len(warm.correct) == task.n_prompts, "correct", len(warm.correct), f"{task.n_prompts} fractions (one per prompt)")
    gen = torch.Generator().manual_seed(warm.seed + 7)
    ids, rows = [], []
    for g, q in enumerate(warm.correct):
        n_good = round(q * warm.n_demo)
        for i in range(warm.n_demo):
            rows.append(task.demonstration(g, gen) if i < n_good else
                        torch.randint(0, task.vocab, (task.horizon,), generator=gen))
            ids.append(g)
    return torch.tensor(ids), torch.stack(rows)


def _cache_key(task, shape: LMShape, warm: WarmStart, dtype) -> str:
    root = Path(__file__).resolve().parents[2]
    sources = ("policies/transformer.py", "policies/attention.py", "policies/lm_tasks.py",
               "sims/experiments/_lm_train.py")
    code = "".join((root / f).read_text() for f in sources)
    text = repr((task, task.prompt_tokens.tolist(), shape, warm, str(dtype))) + code
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def warm_start(task, shape: LMShape, warm: WarmStart, *, dtype=torch.float64, cache_dir=None) -> dict[str, Tensor]:
    """The warmed-up parameters (CPU, ``dtype``), read from the cache when present (key: task,
    shape, warm-up config, dtype and the source of the modules involved), else fitted and cached.
    ``cache_dir``: default ``sims.cache.default_cache_dir() / "lm_warmup"``; an unreadable or
    unwritable cache only costs the fit."""
    from sims.cache import default_cache_dir
    from sims.outputs import write_json_atomic

    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "lm_warmup"
    path = directory / f"warm-{_cache_key(task, shape, warm, dtype)}.json"
    try:
        data = json.loads(path.read_text())
        return {k: torch.tensor(v, dtype=dtype) for k, v in data.items()}
    except (OSError, ValueError):
        pass
    params = fit_warm_start(task, shape, warm, dtype=dtype)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {k: v.tolist() for k, v in params.items()})
    except OSError:
        pass
    return params


def fit_warm_start(task, shape: LMShape, warm: WarmStart, *, dtype=torch.float64) -> dict[str, Tensor]:
    """Fit the LM to the demonstrations (``WarmStart``), uncached."""
    ids, tokens = demonstrations(task, warm)
    rows = task.prompt_tokens[ids]
    mask = eos_mask(tokens, task.eos, dtype)
    params = {k: v.requires_grad_(True) for k, v in
              init_params(shape, generator=torch.Generator().manual_seed(warm.seed), dtype=dtype).items()}
    opt = torch.optim.Adam(list(params.values()), lr=warm.lr)
    for _ in range(warm.steps):
        opt.zero_grad()
        loss = -(log_prob_fn(params, rows, tokens, shape.n_heads) * mask).sum() / mask.sum()
        loss.backward()
        opt.step()
    return {k: v.detach() for k, v in params.items()}


# ---------------------------------------------------------------------------- benchmark
def bench_lockstep(device: str = "cpu", *, quick: bool = False) -> dict[str, Any]:
    """Seed-steps per second of ``stacked_step`` (S seeds in lockstep) and of ``per_seed_step`` (the
    Python loop over seeds) on the same work, in one run: the sum-mod-4 task (V = 16, T = 4), the
    experiment's LM (1 layer, d_model 32, 2 heads, float32), SGS-CISPO with Adam, 2 updates per batch,
    S = 32 seeds; at the experiment's batch (G = 8 prompts × K = 8) and at a small one (2 × 4), where
    the loop is bound by per-call overhead.

    Both paths start from the same parameters and generator streams (the same tokens at the first
    step; in float32 the two Adam implementations' rounding can separate them later) and take one
    untimed warm-up step; then ``rounds`` rounds each time one lockstep step
    and one loop step back to back, so a change in the machine's speed (this VM's moves by up to
    1.7x within minutes) reaches both alike. Returns ``{"lm_lockstep_G8xK8": {...},
    "lm_lockstep_G2xK4": {...}}``, each with both rates (over all rounds), their ratio, and the
    smallest and largest ratio of a single round."""
    from policies.lm_tasks import SumModTask
    from sims.experiments.dynamics import algorithms

    rounds = 1 if quick else 8
    n_seeds = 32
    task = SumModTask(vocab=16, modulus=4, horizon=4, n_prompts=8, seed=0)
    shape = LMShape(vocab=16, prompt_len=2, horizon=4, d_model=32, n_heads=2, d_ff=64)
    p0 = init_params(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float32, device=device)
    out: dict[str, Any] = {}
    for label, n_prompts, k in (("G8xK8", 8, 8), ("G2xK4", 2, 4)):
        spec = StepSpec(shape, task.prompt_tokens[:n_prompts].to(device), None, task.reward, k, 2,
                        algorithms()["sgs_cispo[sequence]"], Optimiser("adam", 1e-3))
        gens = [torch.Generator().manual_seed(s) for s in range(n_seeds)]
        params, state = stack(p0, n_seeds), init_state(spec.optimiser, stack(p0, n_seeds))
        loop_gens = [torch.Generator().manual_seed(s) for s in range(n_seeds)]
        refs = [{k2: v.clone().requires_grad_(True) for k2, v in p0.items()} for _ in range(n_seeds)]
        opts = [spec.optimiser.torch_optimizer(list(r.values())) for r in refs]
        params, state, _ = stacked_step(spec, params, state, gens)
        per_seed_step(spec, refs, opts, loop_gens)
        vec, loop = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            params, state, _ = stacked_step(spec, params, state, gens)
            vec.append(time.perf_counter() - start)
            start = time.perf_counter()
            per_seed_step(spec, refs, opts, loop_gens)
            loop.append(time.perf_counter() - start)
        ratios = [b / a for a, b in zip(vec, loop)]
        out[f"lm_lockstep_{label}"] = {"vectorised_seed_steps_per_s": n_seeds * rounds / sum(vec),
                                       "loop_seed_steps_per_s": n_seeds * rounds / sum(loop),
                                       "vectorised_over_loop": sum(loop) / sum(vec),
                                       "round_ratio_min": min(ratios), "round_ratio_max": max(ratios)}
    return out
