"""TOPR's surrogate as its paper writes it, for ``pgverify derive`` / ``check --theory`` / ``compare``.

Tapered Off-Policy REINFORCE (Le Roux, Bellemare et al. 2025, arXiv:2503.14286, sec. 3): trajectories
with a non-negative reward get plain REINFORCE, negative ones the sequence ratio truncated to
[0, 1], both as a stop-gradient weight:

    ∇J = Σ_{A(τ) >= 0} μ(τ) A(τ) ∇log π(τ) + Σ_{A(τ) < 0} μ(τ) [π(τ)/μ(τ)]_0^1 A(τ) ∇log π(τ).
"""

import sympy as sp

from theory import objective, seq_ratio, sg


@objective(params={}, reference="Le Roux et al. 2025, TOPR, arXiv:2503.14286, sec. 3 (the TOPR gradient)")
def losses(seq, p):
    a = seq.mean_adv  # one advantage per trajectory
    taper = sp.Piecewise((1, a >= 0), (sp.Min(seq_ratio(seq), 1), True))
    return [-sg(taper) * a * seq.logp[t] for t in range(seq.n)]
