"""Zero-gradient, bounded and unbounded regions of w over (ratio, sign of A), as derived."""

from __future__ import annotations

import sympy as sp

from theory import cispo, gspo, ppo_clip, sapo
from theory.regions import predicted_zero, weight_regions


def _cells(table):
    return {(r.sign, r.lo, r.hi): r for r in table}


def test_ppo_and_dapo_clip_higher_regions():
    # DAPO: the gradient is exactly 0 when (A > 0, ρ > 1 + ε_high) or (A < 0, ρ < 1 - ε_low)
    for eps_high in (0.2, 0.28):
        table = weight_regions(ppo_clip.PPO_CLIP, {"eps_low": 0.2, "eps_high": eps_high, "dual_clip_c": None})
        hi = sp.nsimplify(1 + eps_high)
        cells = _cells(table)
        assert cells[(1, hi, sp.oo)].zero and cells[(-1, 0, sp.Rational(4, 5))].zero
        assert not cells[(1, 0, sp.Rational(4, 5))].zero and not cells[(-1, hi, sp.oo)].zero
        assert not cells[(-1, hi, sp.oo)].bounded  # A < 0: -Aρ grows without bound (verl #783)
        assert cells[(1, sp.Rational(4, 5), hi)].right == hi  # largest surviving weight (1+ε_h)·A
    # clip-higher reach from papers.md §1: π_old = 0.01 can grow to 0.01·(1 + ε_high) before
    # its gradient vanishes: 0.012 at ε = 0.2, 0.0128 at ε_high = 0.28
    assert [round(0.01 * (1 + e), 6) for e in (0.2, 0.28)] == [0.012, 0.0128]


def test_dual_clip_bounds_negative_advantages():
    table = weight_regions(ppo_clip.PPO_CLIP, {"eps_low": 0.2, "eps_high": 0.2, "dual_clip_c": 3.0})
    cells = _cells(table)
    assert cells[(-1, 3, sp.oo)].zero  # loss constant -c·A above c
    assert cells[(-1, sp.Rational(6, 5), 3)].bounded and cells[(-1, sp.Rational(6, 5), 3)].right == -3
    assert all(r.bounded for r in table)


def test_cispo_never_drops_a_gradient_and_is_bounded():
    for params in ({"eps_low": None, "eps_high": 4.0}, {"eps_low": 0.2, "eps_high": 0.2}):
        table = weight_regions(cispo.CISPO, params)
        assert not any(r.zero for r in table)
        assert all(r.bounded for r in table)
        cap = sp.nsimplify(1 + params["eps_high"])
        assert {r.right for r in table if r.sign == 1 and r.hi is sp.oo} == {cap}


def test_sapo_never_zero_bounded_and_vanishing_far_from_one():
    table = weight_regions(sapo.SAPO, {"tau_pos": 1.0, "tau_neg": 1.05})
    assert not any(r.zero for r in table) and all(r.bounded for r in table)
    assert all(r.left == 0 and r.right == 0 for r in table)


def test_gspo_regions_on_the_sequence_ratio():
    table = weight_regions(gspo.GSPO, {"eps_low": 0.05, "eps_high": 0.1})
    assert predicted_zero(table, 1.2, +1) and predicted_zero(table, 0.9, -1)
    assert not predicted_zero(table, 1.0, +1) and not predicted_zero(table, 1.2, -1)
    assert not _cells(table)[(-1, sp.Rational(11, 10), sp.oo)].bounded


def test_gmpo_regions_in_log_space():
    table = weight_regions(gspo.GMPO, {"eps_low": 0.4, "eps_high": 0.4})
    assert predicted_zero(table, 1.6, +1) and predicted_zero(table, 0.6, -1)
    assert not predicted_zero(table, 1.4, +1) and not predicted_zero(table, 1.6, -1)


def test_sgs_cispo_never_zero_and_bounded():
    lold = sp.Symbol("lold1", negative=True)
    params = {"eps_low": None, "eps_high": 4.0, "k": 10.0, "tau": 0.5, "p_mode": "token",
              "stop_grad_s": True}
    table = weight_regions(cispo.SGS_CISPO, params, {lold: -1})
    assert not any(r.zero for r in table) and all(r.bounded for r in table)
