"""The public symbolic API (theory/api.py): breakpoints found from the weight, the on-policy
scale, the advantage level, and the re-exports of ``theory``."""

from __future__ import annotations

import sympy as sp

import theory
from theory import (
    RHO,
    Sequence,
    auto_breakpoints,
    clip,
    make_entry,
    objective,
    on_policy_scale,
    ratio_weight,
    sg,
)
from theory.api import advantage_level, one_token_weight
from theory.ppo_clip import PPO_CLIP


def test_theory_reexports_the_api():
    for name in ("Sequence", "sg", "clip", "sigmoid", "seq_ratio", "geo_ratio", "objective", "make_entry"):
        assert hasattr(theory, name), name


def test_auto_breakpoints_of_ppo_clip_are_its_clip_bounds():
    w = one_token_weight(PPO_CLIP, {"eps_low": sp.Rational(1, 5), "eps_high": sp.Rational(7, 25), "dual_clip_c": 3})
    assert auto_breakpoints(w) == [sp.Rational(4, 5), sp.Rational(32, 25), 3]


def test_auto_breakpoints_of_a_smooth_weight_are_none():
    entry = make_entry(lambda seq, p: [-seq.ratio(t) * seq.adv[t] for t in range(seq.n)])
    assert auto_breakpoints(ratio_weight(entry, {})) == []


@objective(params={"c": 2.0}, reference="test")
def scaled(seq, p):
    return [-sg(p["c"] * clip(seq.ratio(t), None, 3)) * seq.adv[t] * seq.logp[t] for t in range(seq.n)]


def test_on_policy_scale_is_the_reinforce_multiple_and_none_for_a_penalty():
    assert on_policy_scale(make_entry(scaled), {"c": 2.0}) == 2
    penalty = make_entry(lambda seq, p: [-(l * a) + (l - o) ** 2 for l, o, a in zip(seq.logp, seq.old_logp, seq.adv)])
    assert on_policy_scale(penalty, {}) == 1  # the penalty's weight vanishes at rho = 1
    bonus = make_entry(lambda seq, p: [-(l * a) - l for l, a in zip(seq.logp, seq.adv)])
    assert on_policy_scale(bonus, {}) is None  # weight A + 1 is not proportional to A


def test_advantage_level_tells_a_sequence_advantage_from_a_token_one():
    token = make_entry(lambda seq, p: [-a * l for a, l in zip(seq.adv, seq.logp)])
    seq_level = make_entry(lambda seq, p: [-seq.mean_adv * l for l in seq.logp])
    assert advantage_level(token, {}) == "token"
    assert advantage_level(seq_level, {}) == "sequence"


def test_declared_defaults_are_symbols_in_the_weight():
    entry = make_entry(scaled)
    w = ratio_weight(entry, {"c": sp.Symbol("c", real=True)})
    assert w.has(sp.Symbol("c", real=True)) and w.has(RHO)
    assert Sequence.make(2).n == 2
