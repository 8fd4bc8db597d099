"""pgverify theory: sympy derivations of each objective's gradient weight and the closed forms
the claims need.

The public symbolic API (``theory.api``) is re-exported here, so a user's derivation reads::

    from theory import Sequence, sg, clip, sigmoid, objective

    @objective(params={"eps_high": 0.28}, reference="MiniMax 2025, arXiv:2506.13585, eq. 4")
    def losses(seq, p):
        return [-sg(clip(seq.ratio(t), None, 1 + p["eps_high"])) * seq.adv[t] * seq.logp[t]
                for t in range(seq.n)]
"""

from theory.api import (
    ADV,
    RHO,
    Derivation,
    Region,
    Sequence,
    TheoryEntry,
    TheoryError,
    advantage_level,
    auto_breakpoints,
    clip,
    derive_weights,
    geo_ratio,
    make_entry,
    objective,
    on_policy_scale,
    ratio_weight,
    remove_sg,
    seq_ratio,
    sg,
    sigmoid,
    symbols,
    validate,
    weight_regions,
)

__all__ = ["Sequence", "sg", "clip", "sigmoid", "remove_sg", "seq_ratio", "geo_ratio", "objective", "Derivation",
           "TheoryError", "TheoryEntry", "make_entry", "symbols", "validate", "derive_weights", "ratio_weight",
           "weight_regions", "Region", "RHO", "ADV", "advantage_level", "on_policy_scale", "auto_breakpoints"]
