r"""Rewards and tasks: G prompts, binary or continuous rewards, chosen per-prompt pass rates.

A reward function maps ``(tokens [N, T], mask [N, T])`` — plus ``prompts [N]`` for a
prompt-conditioned policy — to ``[N]`` rewards (``call_reward`` checks the result). Provided:

* ``TokenCount``: the number of valid tokens equal to ``token`` — continuous (count / T) or
  binary (count >= ``threshold``); a pattern count. Longer sequences have more chances, so
  under EOS it is correlated with length.
* ``TargetMatch``: binary, 1 when the sequence starts with the prompt's target string —
  a target match; its exact pass rate is the target prefix's probability.
* ``LengthBonus``: another reward plus ``slope · |o| / T`` — correlated with length by design.

``exact_pass_rate`` gives P(R = 1) exactly for every policy family (a forward recursion for
``TokenCount`` on table policies, the prefix probability for ``TargetMatch``, enumeration
otherwise). ``calibrate`` builds a prompt-conditioned copy of a table policy in which prompt g
has exactly the chosen pass rate: its logits are the base logits plus β_g·D, with D the
reward's favoured-token direction and β_g found by bisection. ``reward_length_covariance``
checks exactly whether a reward is independent of length (covariance 0) on a given policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from policies._bisect import bisect_crossing
from policies.table import TablePolicy

RewardFn = Callable[..., Tensor]  # (tokens [N, T], mask [N, T][, prompts [N]]) -> rewards [N]

BISECTION_STEPS = 100


def call_reward(reward_fn: RewardFn, tokens: Tensor, mask: Tensor, prompts: Tensor | None) -> Tensor:
    """``reward_fn(tokens, mask)``, or ``reward_fn(tokens, mask, prompts)`` with prompt ids;
    checks that it returns one finite reward per sequence."""
    r = reward_fn(tokens, mask) if prompts is None else reward_fn(tokens, mask, prompts)
    if not isinstance(r, Tensor) or r.shape != tokens.shape[:1]:
        raise ValueError(f"reward_fn must return a [N] tensor, got {getattr(r, 'shape', type(r).__name__)}")
    if not bool(torch.isfinite(r).all()):
        raise ValueError("reward_fn returned non-finite rewards; allowed: finite values")
    return r


def _check_token(name: str, value, vocab: int | None = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if ok and vocab is not None:
        ok = value < vocab
    if not ok:
        bound = "" if vocab is None else f" < {vocab}"
        raise ValueError(f"{name}={value!r} is invalid; allowed: a token id (int >= 0{bound})")


@dataclass(frozen=True)
class TokenCount:
    """Pattern count: c(o) = #{t valid : o_t = token}. R = c(o) / T, or 1[c(o) >= threshold].

    Attributes:
        token: the counted token id.
        threshold: ``None`` for the continuous reward, else an int >= 1 (binary reward).
    """

    token: int
    threshold: int | None = None

    def __post_init__(self) -> None:
        _check_token("token", self.token)
        if self.threshold is not None and (isinstance(self.threshold, bool) or not (
                isinstance(self.threshold, int) and self.threshold >= 1)):
            raise ValueError(f"threshold={self.threshold!r} is invalid; allowed: None or an int >= 1")

    @property
    def binary(self) -> bool:
        return self.threshold is not None

    def __call__(self, tokens: Tensor, mask: Tensor, prompts: Tensor | None = None) -> Tensor:
        count = ((tokens == self.token) & (mask > 0)).sum(-1)
        if self.threshold is None:
            return count.to(torch.float64) / tokens.shape[1]
        return (count >= self.threshold).to(torch.float64)

    def direction(self, policy: TablePolicy) -> Tensor:
        """D: +1 on the counted token's logit in every row (raising it raises the pass rate)."""
        d = torch.zeros_like(policy.logits)
        d[..., self.token] = 1.0
        return d


@dataclass(frozen=True)
class TargetMatch:
    """Target match: R = 1 when the first L tokens equal the prompt's target (all valid).

    Attributes:
        targets: one target string (a tuple of token ids) per prompt, or a single one used for
            every prompt; all of the same length L >= 1. A target may end with EOS; EOS before its
            last token makes it unreachable.
    """

    targets: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        lengths = {len(t) for t in self.targets} if self.targets else set()
        if not self.targets or len(lengths) != 1 or 0 in lengths:
            raise ValueError(f"targets={self.targets!r} is invalid; allowed: one or more token tuples "
                             "of the same length L >= 1")
        for target in self.targets:
            for tok in target:
                _check_token("targets", tok)

    def _target_rows(self, prompts: Tensor | None, n: int, device) -> Tensor:
        table = torch.tensor(self.targets, dtype=torch.int64, device=device)  # (P or 1, L)
        if table.shape[0] == 1:
            return table.expand(n, -1)
        if prompts is None:
            raise ValueError("TargetMatch has one target per prompt; allowed: call it with prompts")
        if int(prompts.max()) >= table.shape[0]:
            raise ValueError(f"prompts has ids >= {table.shape[0]} targets; allowed: one target per prompt")
        return table[prompts]

    def __call__(self, tokens: Tensor, mask: Tensor, prompts: Tensor | None = None) -> Tensor:
        length = len(self.targets[0])
        if length > tokens.shape[1]:
            raise ValueError(f"target length L={length} exceeds the horizon T={tokens.shape[1]}")
        target = self._target_rows(prompts, tokens.shape[0], tokens.device)
        hit = ((tokens[:, :length] == target) & (mask[:, :length] > 0)).all(-1)
        return hit.to(torch.float64)

    def direction(self, policy: TablePolicy) -> Tensor:
        """D: +1 on each target token's logit in the row it is drawn from along the target."""
        if policy.n_prompts is not None:
            raise ValueError("direction needs an unconditioned base policy (no prompt dimension)")
        if len(self.targets) != 1:
            raise ValueError("calibrate a TargetMatch with one target; per-prompt targets are "
                             "built by calibrating each target separately")
        target = torch.tensor(self.targets[0], dtype=torch.int64, device=policy.logits.device)
        arr = torch.zeros(1, policy.horizon, dtype=torch.int64, device=target.device)
        arr[0, :len(target)] = target
        rows = policy.contexts(arr)[0, :len(target)]
        d = torch.zeros_like(policy.logits)
        d[rows, target] += 1.0
        return d


@dataclass(frozen=True)
class LengthBonus:
    """R = base(o) + slope · |o| / T: a reward correlated with length by construction."""

    base: RewardFn
    slope: float

    def __post_init__(self) -> None:
        if not callable(self.base):
            raise ValueError(f"base={self.base!r} is invalid; allowed: a reward function")
        ok = isinstance(self.slope, (int, float)) and not isinstance(self.slope, bool)
        if not (ok and self.slope == self.slope and abs(self.slope) != float("inf")):
            raise ValueError(f"slope={self.slope!r} is invalid; allowed: a finite number")

    def __call__(self, tokens: Tensor, mask: Tensor, prompts: Tensor | None = None) -> Tensor:
        base = self.base(tokens, mask) if prompts is None else self.base(tokens, mask, prompts)
        return base + self.slope * mask.sum(-1).to(torch.float64) / tokens.shape[1]


# ---------------------------------------------------------------------------- exact pass rates


def exact_pass_rate(policy, reward: RewardFn, *, prompt: int | None = None,
                    max_sequences: int | None = None) -> float:
    """P_π(R(o) = 1) for a binary reward, exactly.

    ``TokenCount`` on a table policy: a forward recursion over (row, count, ended);
    ``TargetMatch``: the probability of the target prefix; anything else: enumeration
    (refused above ``max_sequences``).
    """
    if isinstance(reward, TokenCount) and isinstance(policy, TablePolicy):
        if not reward.binary:
            raise ValueError("reward has no threshold; allowed: a binary reward (TokenCount with threshold)")
        table = policy if prompt is None else policy.for_prompt(prompt)
        return _token_count_pass_rate(table, reward.token, reward.threshold)
    if isinstance(reward, TargetMatch):
        return _target_pass_rate(policy, reward, prompt)
    kw = {} if max_sequences is None else {"max_sequences": max_sequences}
    tokens, mask, prob = policy.enumerate(prompt=prompt, **kw)
    prompts = None if prompt is None else torch.full_like(tokens[:, 0], prompt)
    r = call_reward(reward, tokens, mask, prompts).to(prob.dtype)
    if not bool(((r == 0) | (r == 1)).all()):
        raise ValueError("reward is not binary on this policy; allowed: rewards in {0, 1}")
    return float((prob * r).sum())


def _token_count_pass_rate(policy: TablePolicy, token: int, threshold: int) -> float:
    """P(#valid ``token`` >= threshold) by a forward recursion over the policy's rows.

    State: the row the next token is drawn from, the count so far (capped at ``threshold``) and
    whether EOS has been emitted (then the count is final). The row of position t + 1 depends
    only on (t, o_t) in both table families (tabular: t + 1; Markov: o_t); it is read off
    ``contexts`` once.
    """
    probs = torch.softmax(policy.logits, -1).to(torch.float64).cpu()  # (R, V)
    n_rows, vocab = probs.shape
    _check_token("token", token, vocab)
    horizon = policy.horizon
    probe = torch.zeros(horizon * vocab, horizon, dtype=torch.int64)
    t_idx = torch.arange(horizon).repeat_interleave(vocab)
    probe[torch.arange(horizon * vocab), t_idx] = torch.arange(vocab).repeat(horizon)
    ctx = policy.contexts(probe.to(policy.device)).cpu()
    first_row = int(ctx[0, 0])
    next_row = torch.stack([ctx[t * vocab:(t + 1) * vocab, t + 1] for t in range(horizon - 1)]) \
        if horizon > 1 else torch.zeros(0, vocab, dtype=torch.int64)  # (T - 1, V)
    shift = torch.zeros(vocab, dtype=torch.bool)
    shift[token] = True
    keep = torch.ones(vocab, dtype=torch.bool)
    if policy.eos is not None:
        keep[policy.eos] = False
    alive = torch.zeros(n_rows, threshold + 1, dtype=torch.float64)  # P(row, count, not ended)
    alive[first_row, 0] = 1.0
    done = torch.zeros(threshold + 1, dtype=torch.float64)  # P(count, ended or horizon reached)
    for t in range(horizon):
        mass = torch.einsum("rc,rv->cv", alive, probs)  # (C, V): next token v, count c before it
        counted = torch.zeros_like(mass)
        counted[:, ~shift] = mass[:, ~shift]
        counted[1:, shift] += mass[:-1, shift]
        counted[-1, shift] += mass[-1, shift]  # the cap: count >= threshold stays there
        done += counted[:, ~keep].sum(-1)
        if t + 1 == horizon:
            done += counted[:, keep].sum(-1)
            break
        alive = torch.zeros_like(alive).index_add_(0, next_row[t][keep], counted[:, keep].T)
    return float(done[threshold])


def _target_pass_rate(policy, reward: TargetMatch, prompt: int | None) -> float:
    length = len(reward.targets[0])
    if length > policy.horizon:
        raise ValueError(f"target length L={length} exceeds the horizon T={policy.horizon}")
    prompts = None if prompt is None else torch.tensor([prompt])
    target = reward._target_rows(prompts, 1, "cpu")[0]
    if policy.eos is not None and bool((target[:-1] == policy.eos).any()):
        return 0.0
    arr = torch.zeros(1, policy.horizon, dtype=torch.int64)
    arr[0, :length] = target
    lp = policy.log_prob(arr.to(policy.device), None if prompts is None else prompts.to(policy.device))
    return float(lp[0, :length].sum().exp())


# ---------------------------------------------------------------------------- calibration


def calibrate(policy: TablePolicy, reward, pass_rates, *, max_scale: float = 50.0) -> TablePolicy:
    """A prompt-conditioned copy of ``policy`` whose prompt g has exact pass rate ``pass_rates[g]``.

    Prompt g's logits are ``policy.logits + β_g · reward.direction(policy)``, β_g in
    [-max_scale, max_scale] found by bisection on ``exact_pass_rate`` (which increases with β
    along the reward's favoured direction). Raises ValueError if a rate is outside (0, 1) or
    not reachable within the scale.
    """
    if not isinstance(policy, TablePolicy) or policy.n_prompts is not None:
        raise ValueError("policy must be an unconditioned TablePolicy (tabular or Markov); "
                         "calibrate adds the prompt dimension")
    if not hasattr(reward, "direction"):
        raise ValueError(f"reward={reward!r} has no favoured direction; allowed: TokenCount "
                         "(with threshold) or TargetMatch")
    rates = list(pass_rates)
    if not rates:
        raise ValueError("pass_rates is empty; allowed: one rate in (0, 1) per prompt")
    for rate in rates:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < 1:
            raise ValueError(f"pass_rates has {rate!r}; allowed: rates strictly between 0 and 1")
    d = reward.direction(policy)

    def rate_at(beta: float) -> float:
        return exact_pass_rate(policy.with_logits(policy.logits + beta * d), reward)

    low_rate, high_rate = rate_at(-max_scale), rate_at(max_scale)
    rows = []
    for rate in rates:
        if not low_rate < rate < high_rate:
            raise ValueError(f"pass rate {rate!r} is unreachable: within |β| <= {max_scale:g} the pass "
                             f"rate spans ({low_rate:.4g}, {high_rate:.4g}); allowed: a rate in that range")
        beta = bisect_crossing(rate_at, rate, -max_scale, max_scale, BISECTION_STEPS)
        rows.append(policy.logits + beta * d)
    return policy.with_logits(torch.stack(rows))


def reward_length_covariance(policy, reward: RewardFn, *, prompt: int | None = None,
                             max_sequences: int | None = None) -> float:
    """Cov_π(R(o), |o|) by enumeration: 0 when the reward carries no length signal."""
    kw = {} if max_sequences is None else {"max_sequences": max_sequences}
    tokens, mask, prob = policy.enumerate(prompt=prompt, **kw)
    prompts = None if prompt is None else torch.full_like(tokens[:, 0], prompt)
    r = call_reward(reward, tokens, mask, prompts).to(prob.dtype)
    length = mask.sum(-1).to(prob.dtype)
    return float((prob * r * length).sum() - (prob * r).sum() * (prob * length).sum())
