r"""Exact engine: expectations by enumerating every sequence of a small policy.

For a policy with V^T <= ``max_sequences`` token arrays (``policy.enumerate()``):

* ``exact_objective``: J = E_π[R(o)] and ∇J = Σ_o π(o) R(o) ∇log π(o) with respect to the
  policy's parameters;
* ``exact_estimator_mean``: the exact expectation, under the old policy, of the gradient
  direction a registered objective produces from **one** sequence (batch of one; advantage
  R(o) - baseline), evaluated at the new policy — bias against ∇J is exact;
* ``exact_group_estimator_mean``: the same for a group of K samples whose advantages come from
  a group estimator, for **binary** rewards: by exchangeability E[ĝ] = K·E[c_1 Σ_t w_1t ∇ℓ_1t],
  and w_1 depends on the other K - 1 samples only through the number m of their successes,
  m ~ Binomial(K - 1, p_old). Exact when the aggregation's normaliser does not depend on the
  other sequences' lengths (``seq-mean-token-mean``, ``seq-mean-token-sum``,
  ``seq-mean-token-sum-norm``, ``token-sum``; ``token-mean`` and ``prompt-token-mean`` only
  when every sequence has the same length). Elsewhere exactness is not available and the
  function refuses rather than approximate.

The gradient direction is the ascent direction Σ w ∇ℓ = -∇loss, in the policy's parameter
space (``policy.score_shape``: the logits of a table policy, the flat parameters of a GRU). Every
function works for all policy families; for a prompt-conditioned policy it takes the expectation
for one ``prompt`` (average over prompts for a task).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor

from policies.tasks import RewardFn, call_reward
from sims._checks import check_policy_pair, require
from sims.aggregation import token_weights
from sims.registry import get_advantage, get_objective, require_callable_by

# the aggregation a single sequence (or a group with equal lengths) is aggregated with
_SINGLE = {
    "token-mean": "seq-mean-token-mean",
    "prompt-token-mean": "seq-mean-token-mean",
    "seq-mean-token-mean": "seq-mean-token-mean",
    "seq-mean-token-sum": "seq-mean-token-sum",
    "seq-mean-token-sum-norm": "seq-mean-token-sum-norm",
    "token-sum": "seq-mean-token-sum",
}


BLOCK = 1 << 15  # sequences per enumeration block: keeps the [block, T] tensors in cache


def _blocks(policy, prompt: int | None, max_sequences: int | None):
    """Yield (tokens, mask, prob, prompts) over blocks of all token arrays of one prompt
    (prompts is None for an unprompted policy). Blocking changes no number, only speed."""
    kw = {} if max_sequences is None else {"max_sequences": max_sequences}
    total = policy.vocab ** policy.horizon
    for start in range(0, total, BLOCK):
        tokens, mask, prob = policy.enumerate(prompt=prompt, start=start, stop=min(total, start + BLOCK), **kw)
        prompts = None if prompt is None else torch.full_like(tokens[:, 0], prompt)
        yield tokens, mask, prob, prompts


def exact_objective(policy, reward_fn: RewardFn, *, prompt: int | None = None,
                    max_sequences: int | None = None) -> tuple[Tensor, Tensor]:
    """(J, ∇J): J = Σ_o π(o) R(o) and ∇J = Σ_o π(o) R(o) Σ_t m_t ∇ log π(o_t | o_<t) in the
    policy's parameter space (``policy.score_shape``). For a prompt-conditioned policy, of one
    ``prompt`` (the gradient is zero on the other prompts' parameters)."""
    value, grad = 0.0, 0.0
    for tokens, mask, prob, prompts in _blocks(policy, prompt, max_sequences):
        r = call_reward(reward_fn, tokens, mask, prompts).to(prob.dtype)
        value = value + (prob * r).sum()
        grad = grad + policy.score_sum((prob * r)[:, None] * mask, tokens, prompts)
    return value, grad


def _per_sequence_weights(objective: str, config: Any, logp: Tensor, old_logp: Tensor, adv: Tensor,
                          mask: Tensor) -> Tensor:
    """w [N, T] of N independent batch-of-one estimators, from one autograd call: with a
    ``seq-mean-*`` aggregation over N sequences the loss is (1/N) Σ_i loss_i."""
    spec = get_objective(objective)
    # N batch-of-one estimators in one call: no extra inputs to give, no batch-coupled selection
    require_callable_by(spec, "the exact engine", independent_batches=True)
    agg = _SINGLE[config.agg]
    cfg = dataclasses.replace(config, agg=agg, group_size=None)
    logp = logp.detach().clone().requires_grad_(True)
    loss, _ = spec.loss_fn(logp, old_logp, adv, mask, config=cfg)
    (grad,) = torch.autograd.grad(loss, logp)
    return -grad * logp.shape[0]


def exact_estimator_mean(new_policy, old_policy, reward_fn: RewardFn, objective: str, config: Any, *,
                         baseline: float = 0.0, prompt: int | None = None,
                         max_sequences: int | None = None) -> Tensor:
    """E_{o~old}[Σ_t w_t(o) ∇ℓ_t(o)] for one sequence with advantage R(o) - baseline, exactly.

    ``new_policy`` and ``old_policy`` must share T, V and EOS (the same token arrays).
    """
    check_policy_pair(new_policy, old_policy)
    total = 0.0
    for tokens, mask, prob_old, prompts in _blocks(old_policy, prompt, max_sequences):
        r = call_reward(reward_fn, tokens, mask, prompts).to(prob_old.dtype)
        adv = (r - baseline)[:, None] * mask
        w = _per_sequence_weights(objective, config, *_log_probs(new_policy, old_policy, tokens, prompts), adv, mask)
        total = total + new_policy.score_sum(prob_old[:, None] * w, tokens, prompts)
    return total


def _log_probs(new_policy, old_policy, tokens: Tensor, prompts: Tensor | None) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        return new_policy.log_prob(tokens, prompts), old_policy.log_prob(tokens, prompts)


def exact_group_estimator_mean(new_policy, old_policy, reward_fn: RewardFn, objective: str, config: Any,
                               advantage: str, advantage_config: Any, *, group_size: int,
                               prompt: int | None = None, max_sequences: int | None = None) -> Tensor:
    """E[ĝ] of a group estimator (K = ``group_size`` samples from ``old_policy``, advantages from
    the registered ``advantage`` estimator) for binary rewards, exactly (see the module doc)."""
    check_policy_pair(new_policy, old_policy)
    require(isinstance(group_size, int) and group_size >= 1, "group_size", group_size, "an int K >= 1")
    p_success, first_length, rewards = 0.0, None, []
    for tokens, mask, prob_old, prompts in _blocks(old_policy, prompt, max_sequences):  # pass 1
        r = call_reward(reward_fn, tokens, mask, prompts).to(prob_old.dtype)
        rewards.append(r)  # kept for pass 2: the reward function runs once per sequence
        require(bool(((r == 0) | (r == 1)).all()), "reward_fn", "non-binary rewards",
                "rewards in {0, 1} (exact group expectations condition on a binomial count)")
        lengths = mask.sum(-1)
        first_length = lengths[0] if first_length is None else first_length
        if config.agg in ("token-mean", "prompt-token-mean"):
            require(bool((lengths == first_length).all()), "agg", config.agg,
                    "an aggregation whose normaliser ignores the other sequences' lengths; with variable "
                    "lengths token-mean / prompt-token-mean have no exact group expectation here")
        p_success += float((prob_old * r).sum())
    estimator = get_advantage(advantage)
    k = group_size
    member_adv = []  # (P(m), A_1 if r_1 = 0, A_1 if r_1 = 1) for m successes among the others
    for m in range(k):
        weight_m = math.comb(k - 1, m) * p_success**m * (1 - p_success) ** (k - 1 - m)
        if weight_m == 0.0:
            continue
        others = [1.0] * m + [0.0] * (k - 1 - m)
        groups = torch.tensor([[0.0] + others, [1.0] + others], dtype=torch.float64)  # r_1 = 0, 1
        member_adv.append((weight_m, estimator.fn(groups, config=advantage_config)[:, 0]))
    total = 0.0
    for (tokens, mask, prob_old, prompts), r in zip(_blocks(old_policy, prompt, max_sequences), rewards):  # pass 2
        logp, old_logp = _log_probs(new_policy, old_policy, tokens, prompts)
        for weight_m, a1 in member_adv:
            a1 = a1.to(prob_old.dtype)
            adv = torch.where(r > 0.5, a1[1], a1[0])[:, None] * mask
            w = _per_sequence_weights(objective, config, logp, old_logp, adv, mask)
            total = total + weight_m * new_policy.score_sum(prob_old[:, None] * w, tokens, prompts)
    return _group_scale(config, k) * total


def _group_scale(config: Any, k: int) -> float:
    """K·c_group/c_single: K exchangeable members, each with the group aggregation's normaliser
    instead of the batch-of-one one (1 for the seq-mean and token-mean modes, K for token-sum).
    Derived from ``token_weights`` on length-1 sequences; the ratio does not depend on length
    for the modes accepted here."""
    kw = dict(agg=config.agg, max_len=config.max_len or 1)
    group = token_weights(torch.ones(k, 1, dtype=torch.float64), group_size=k, **kw)[0, 0]
    single = token_weights(torch.ones(1, 1, dtype=torch.float64), group_size=1, **kw)[0, 0]
    return float(k * group / single)
