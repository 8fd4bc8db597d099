"""Region maps of known losses: PPO's clip zones, CISPO's bound, IS's unbounded growth."""

from __future__ import annotations

import math

import pytest

from sims.check.regions import format_map, maps_agree, region_map
from tests.sims.check import correct, planted


def test_ppo_clip_zero_regions_are_the_clip_zones():
    pos, neg = region_map(correct.ppo_clip, 2)
    assert len(pos.zero) == 1 and pos.zero[0][0] == pytest.approx(1.2, rel=1e-8) and pos.zero[0][1] == math.inf
    assert len(neg.zero) == 1 and neg.zero[0][0] == 0.0 and neg.zero[0][1] == pytest.approx(0.8, rel=1e-8)
    assert not neg.bounded  # no dual clip: w = ρ·|A| grows without bound for A < 0
    # sup is max |w/A| on the grid; token-mean over K = 2 rows halves ρ: just below 1.2 / 2
    assert pos.bounded and 0.55 < pos.sup <= 0.6


def test_dual_clip_bounds_the_negative_side():
    _, neg = region_map(lambda *a: correct.ppo_clip(*a, dual_clip_c=3.0), 2)
    assert len(neg.zero) == 2 and neg.zero[1][0] == pytest.approx(3.0, rel=1e-8) and neg.bounded


def test_cispo_is_bounded_with_no_zero_region_and_seq_is_is_not():
    maps = region_map(correct.cispo, 2)
    # the cap 5, halved by the token-mean over K = 2 rows
    assert all(m.zero == () and m.bounded and m.sup == pytest.approx(2.5, rel=1e-12) for m in maps)
    assert "bounded (max |w/A| = 2.5 on" in format_map(maps)
    is_maps = region_map(correct.seq_is, 2)
    assert not is_maps[0].bounded and "unbounded (grows like ρ^1.00" in format_map(is_maps)


def test_maps_agree_names_the_first_difference():
    ppo = region_map(correct.ppo_clip, 2)
    assert maps_agree(ppo, ppo) is None
    assert "A > 0: zero weight: ρ > 1.2; spec: none" in maps_agree(ppo, region_map(correct.cispo, 2))
    wrong = region_map(planted.ppo_clip_ignores_sign, 2)
    assert maps_agree(wrong, ppo) is not None
