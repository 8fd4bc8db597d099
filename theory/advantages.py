r"""Group advantages: closed forms for binary rewards and the identities behind the estimators.

A prompt with pass rate p gets K samples; r ∈ {0, 1}. The policy gradient of the prompt's
success probability p with respect to a parameter that moves p is ∇p; the score of one sample
is ∂_p log P(r) = r/p - (1 - r)/(1 - p).

>>> grpo_prompt_weight()
1/(sqrt(p)*sqrt(1 - p))
>>> sp.simplify(sp.diff(grpo_ascended_objective(), P) - grpo_prompt_weight())
0
"""

from __future__ import annotations

import itertools

import sympy as sp

P = sp.Symbol("p", positive=True)
G = sp.Symbol("G", positive=True, integer=True)


def _score(r: int, p=P) -> sp.Expr:
    """∂_p log P(r) for a Bernoulli(p) sample."""
    return sp.diff(sp.log(p if r else 1 - p), p)


def grpo_prompt_weight() -> sp.Expr:
    """Population-limit GRPO: A = (r - p)/sqrt(p(1 - p)); E[A·∂_p log P(r)] = 1/sqrt(p(1-p)),
    derived by summing over r ∈ {0, 1}. The prompt's ∇p is multiplied by this weight."""
    sigma = sp.sqrt(P * (1 - P))
    return sp.simplify(sum((P if r else 1 - P) * (r - P) / sigma * _score(r) for r in (0, 1)))


def grpo_ascended_objective() -> sp.Expr:
    """The objective whose gradient GRPO follows per prompt: 2·arcsin(√p) (instead of p)."""
    return 2 * sp.asin(sp.sqrt(P))


def max_standardized_advantage(std: str = "population") -> sp.Expr:
    """|A| of the lone success in a group of G binary rewards (1 success, G - 1 failures), which
    is the largest standardized advantage a binary group can produce (see
    ``standardized_advantage_by_successes``): sqrt(G - 1) (population std) or (G - 1)/sqrt(G)
    (sample std; Samuelson's bound for any real rewards).

    >>> max_standardized_advantage("population"), max_standardized_advantage("sample")
    (sqrt(G - 1), (G - 1)/sqrt(G))
    """
    mean = 1 / G
    ss = (1 - mean) ** 2 + (G - 1) * mean**2  # Σ (r - mean)²
    var = ss / G if std == "population" else ss / (G - 1)
    return sp.simplify((1 - mean) / sp.sqrt(sp.factor(var)))


def standardized_advantage_by_successes() -> sp.Expr:
    """Population z-score of a success when m of G samples succeed: sqrt((G - m)/m), decreasing
    in m, so m = 1 gives the maximum.

    >>> standardized_advantage_by_successes()
    sqrt(G - m)/sqrt(m)
    """
    m = sp.Symbol("m", positive=True)
    q = m / G
    return sp.simplify((1 - q) / sp.sqrt(q * (1 - q)))


def rloo_identity() -> sp.Expr:
    """r_i - mean_{j≠i} r_j - G/(G-1)·(r_i - mean_j r_j), with S = Σ_j r_j: 0.

    >>> rloo_identity()
    0
    """
    r_i, s = sp.symbols("r_i S", real=True)
    return sp.simplify(r_i - (s - r_i) / (G - 1) - G / (G - 1) * (r_i - s / G))


def mean_baseline_scale(k: int = 3) -> sp.Expr:
    """E[(r_1 - mean_j r_j)·∂_p log P(r_1)] for K i.i.d. Bernoulli(p) samples, by exact
    enumeration of the 2^K outcomes, divided by the true ∇p = 1: (K - 1)/K.

    >>> mean_baseline_scale(3)
    2/3
    """
    total = 0
    for rs in itertools.product((0, 1), repeat=k):
        prob = sp.Mul(*[P if r else 1 - P for r in rs])
        total += prob * (rs[0] - sp.Rational(sum(rs), k)) * _score(rs[0])
    return sp.simplify(total)


def rloo_scale(k: int = 3) -> sp.Expr:
    """The same expectation with the leave-one-out baseline: 1 (unbiased).

    >>> rloo_scale(3)
    1
    """
    total = 0
    for rs in itertools.product((0, 1), repeat=k):
        prob = sp.Mul(*[P if r else 1 - P for r in rs])
        total += prob * (rs[0] - sp.Rational(sum(rs[1:]), k - 1)) * _score(rs[0])
    return sp.simplify(total)


def zero_signal_fraction(k: int | sp.Symbol = G) -> sp.Expr:
    """P(all K rewards equal) = p^K + (1 - p)^K: the groups dynamic sampling drops.

    >>> [round(float(zero_signal_fraction(16).subs(P, p)), 4) for p in (0.9, 0.95)]
    [0.1853, 0.4401]
    """
    return P**k + (1 - P) ** k


def zero_signal_fraction_by_enumeration(k: int = 4) -> sp.Expr:
    """The same probability, summed over the 2^K outcomes whose rewards are all equal."""
    total = 0
    for rs in itertools.product((0, 1), repeat=k):
        if len(set(rs)) == 1:
            total += sp.Mul(*[P if r else 1 - P for r in rs])
    return sp.expand(total)
