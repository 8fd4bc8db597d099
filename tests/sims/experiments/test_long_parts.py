"""The long parts of bias_variance, gspo_weight and sgs on their tiny sweeps: every summary record
names its setup and grid point, intervals are ordered, and the exact pieces hold."""

from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.slow

SETUPS = {"independent", "dependent"}


def _ordered(e) -> bool:
    return e.low <= e.value <= e.high and all(math.isfinite(x) for x in (e.value, e.low, e.high))


def test_bias_variance_long_effects_name_setup_and_grid_point(tiny_experiments):
    s = tiny_experiments["bias_variance"].summary
    cfg = tiny_experiments["bias_variance"].config
    eff = s["long_effects"]
    assert {e["setup"] for e in eff} == SETUPS == set(s["long_setups"])
    assert len(eff) == 2 * len(cfg.long_horizons) * len(cfg.long_kls) * len(cfg.long_estimators)
    assert all(_ordered(e["log_var_ratio"]) and e["vs"] == "sequence IS" for e in eff)
    assert all(e["log_var_ratio"].halves is not None for e in eff)
    assert max(s["long_weight_check"].values()) < 1e-12  # closed-form weights = the registered objectives'
    # the independent setup's log(1 + Var R) is exactly T·log(1 + χ²): linear in T
    ind = {r["T"]: r["log1p_var_R"] for r in s["long_ratio"] if r["setup"] == "independent"}
    t0, t1 = sorted(ind)
    assert ind[t1] / ind[t0] == pytest.approx(t1 / t0, rel=1e-9)


def test_gspo_weight_long_records(tiny_experiments):
    s = tiny_experiments["gspo_weight"].summary
    cfg = tiny_experiments["gspo_weight"].config
    for key in ("long_t_var_log_g", "long_E_G", "long_p_g_above_r", "long_var_g"):
        recs = s[key]
        assert {r["setup"] for r in recs} == SETUPS
        assert len(recs) == 2 * len(cfg.long_kls) * len(cfg.long_horizons)
        assert all(_ordered(r["estimate"]) for r in recs)
    assert all(r["estimate"].value <= 1.0 for r in s["long_E_G"])  # E[G] < 1 up to Monte Carlo noise at tiny n
    dep = s["long_one_over_t_departure"]
    assert {d["setup"] for d in dep} == SETUPS and all(_ordered(d["log_ratio"]) for d in dep)


def test_sgs_policy_spread_records(tiny_experiments):
    s = tiny_experiments["sgs"].summary
    recs = s["policy_spread"]
    assert {r["setup"] for r in recs} == SETUPS
    assert {r["p_mode"] for r in recs} == {"sequence", "geometric"}
    assert all(_ordered(r["spread"]) and r["spread"].low >= 0 for r in recs)


def test_spread_interval_is_distribution_free_and_rejects_a_wrong_spread():
    import numpy as np

    from sims.experiments.sgs import spread_interval

    x = np.random.default_rng(0).uniform(0, 1, 4000)
    e = spread_interval(x)
    assert e.low <= 0.9 <= e.high  # the true 5–95% spread of U(0, 1); fails with probability <= 5%·(seeded)
    assert not (e.low <= 0.8 <= e.high)
    assert spread_interval(np.full(200, 0.3)).high == 0.0
