"""Rule 11 of the ledger: the quick sweep (what CI runs) contains every point at which the full
sweep decides a part — fewer samples, same points. Each experiment that decides parts at fixed
points states them in ``decision_points(config)``."""

from __future__ import annotations

import pytest

from sims.experiments import EXPERIMENTS, config_for

WITH_POINTS = [name for name, m in EXPERIMENTS.items() if hasattr(m, "decision_points")]


def test_the_experiments_that_decide_at_fixed_points_state_them():
    assert {"difficulty", "length_bias", "survival", "kl_estimators"} <= set(WITH_POINTS)


@pytest.mark.parametrize("name", WITH_POINTS)
def test_quick_and_full_decide_at_the_same_points(name):
    m = EXPERIMENTS[name]
    assert m.decision_points(config_for(name, "quick")) == m.decision_points(config_for(name, "full"))


def test_a_quick_sweep_missing_a_decision_point_is_caught():
    import dataclasses

    from sims.experiments import difficulty

    full = config_for("difficulty", "full")
    short = dataclasses.replace(full, mc_pass_rates=(0.1, 0.5))  # the old quick sweep: no p = 0.9
    assert difficulty.decision_points(short) != difficulty.decision_points(full)
