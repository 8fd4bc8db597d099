"""``perturb``: a new policy at a controlled per-token divergence from an old one.

The new policy moves the old one's parameters along a random direction d (from the
generator): θ_new = θ_old + α·d, with α found by bisection so that the mean per-token
divergence equals the requested value:

* table policies (tabular, Markov): the exact average over the T positions of
  E_{c_t ~ old}[D(π_old(·|c_t) ‖ π_new(·|c_t))] (``policies.table.mean_token_divergence``);
* ``GRUPolicy``: the same average with the contexts o_<t drawn from a fixed sample of
  ``n_states`` old-policy sequences (from the generator) and D computed over the full
  vocabulary at each state — a Monte Carlo average over states, exact given that sample.

D is ``kl`` = KL(π_old ‖ π_new) or ``chi2`` = χ²(π_new ‖ π_old) = E_old[(π_new/π_old)²] - 1,
so that for a tabular policy without EOS E_old[R²] = Π_t (1 + χ²_t).
"""

from __future__ import annotations

from typing import Callable

import torch

from policies._bisect import bisect_crossing
from policies.neural import GRUPolicy, next_token_log_probs
from policies.table import TablePolicy, divergence_rows, mean_token_divergence

BISECTION_STEPS = 200


def _check_target(name: str, value) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and 0 < value < float("inf")
    if not ok:
        raise ValueError(f"{name}={value!r} is invalid; allowed: a finite number > 0")


def perturb(policy, *, generator: torch.Generator, kl: float | None = None, chi2: float | None = None,
            max_scale: float = 1e3, n_states: int = 4096):
    """A policy of the same family at mean per-token ``kl`` or ``chi2`` from ``policy`` (give one).

    Raises ValueError when neither or both are given, when a value is not a finite number > 0,
    or when the divergence is unreachable along the drawn direction (it saturates below the
    target by ``max_scale``).
    """
    if (kl is None) == (chi2 is None):
        raise ValueError(f"kl={kl!r}, chi2={chi2!r} is invalid; allowed: exactly one of kl= or chi2=")
    kind, target = ("kl", kl) if kl is not None else ("chi2", chi2)
    _check_target(kind, target)
    shifted, divergence = _family(policy, kind, generator, n_states)
    reachable = divergence(max_scale)
    if not reachable >= target:
        raise ValueError(
            f"{kind}={target!r} is unreachable: along the drawn direction the divergence reaches "
            f"{reachable:.4g} at scale {max_scale:g}; allowed: {kind} < {reachable:.4g} (or another generator)"
        )
    return shifted(bisect_crossing(divergence, target, 0.0, max_scale, BISECTION_STEPS))


def _family(policy, kind: str, generator: torch.Generator,
            n_states: int) -> tuple[Callable[[float], object], Callable[[float], float]]:
    """(α ↦ shifted policy, α ↦ mean per-token divergence) for the policy's family."""
    if isinstance(policy, TablePolicy):
        d = torch.randn(policy.logits.shape, generator=generator, dtype=policy.logits.dtype).to(policy.logits.device)

        def shifted(alpha: float):
            return policy.with_logits(policy.logits + alpha * d)

        return shifted, lambda alpha: mean_token_divergence(policy, shifted(alpha), kind)
    if isinstance(policy, GRUPolicy):
        flat = policy.flat_params()
        d = torch.randn(flat.shape, generator=generator, dtype=flat.dtype).to(flat.device)
        prompts = None if policy.n_prompts is None else torch.arange(n_states) % policy.n_prompts
        tokens, _ = policy.sample(n_states, generator=generator, prompts=prompts)
        with torch.no_grad():
            old_lp = next_token_log_probs(policy.params, tokens, prompts)

        def shifted(alpha: float):
            return policy.with_flat_params(flat + alpha * d)

        def divergence(alpha: float) -> float:
            with torch.no_grad():
                new_lp = next_token_log_probs(shifted(alpha).params, tokens, prompts)
            return float(divergence_rows(old_lp, new_lp, kind).mean())

        return shifted, divergence
    raise ValueError(f"policy of type {type(policy).__name__} is invalid; allowed: a TablePolicy "
                     "(TabularPolicy, MarkovPolicy) or a GRUPolicy")
