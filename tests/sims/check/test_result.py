"""CheckResult validation and the counterexample search (Hypothesis ``find`` with a fixed budget)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import strategies as st

from sims.check.inputs import assemble
from sims.check.result import SHRINK_BUDGET, CheckResult, search


def test_check_result_kinds_and_passed_agree():
    assert CheckResult("x", "spec", True, "ok").as_dict() == {
        "name": "x", "kind": "spec", "passed": True, "detail": "ok", "data": {}}
    with pytest.raises(ValueError, match="kind='other' is invalid"):
        CheckResult("x", "other", True, "")
    with pytest.raises(ValueError, match="passed=None is invalid for kind='spec'"):
        CheckResult("x", "spec", None, "")
    with pytest.raises(ValueError, match="passed=True is invalid for kind='profile'"):
        CheckResult("x", "profile", True, "")


def test_search_finds_and_shrinks_to_the_boundary():
    found = search(st.integers(0, 10_000), lambda x: "too big" if x > 500 else None, examples=100, seed=0)
    assert found.failed and found.example == 501 and found.reason == "too big"


def test_search_reports_no_failure_after_every_example():
    found = search(st.integers(0, 10), lambda x: None, examples=30, seed=0)
    assert not found.failed and found.example is None and 1 <= found.tried <= 30


def test_search_is_reproducible_and_depends_on_the_seed():
    strategy = st.lists(st.floats(-1, 1), min_size=3, max_size=3)
    seen: dict[int, list] = {0: [], 1: []}
    for seed in (0, 0, 1):
        calls: list = []
        search(strategy, lambda x, c=calls: c.append(x), examples=20, seed=seed)
        if seen[seed]:
            assert calls == seen[seed]  # same seed, same inputs
        seen[seed] = calls
    assert seen[0] != seen[1]


def test_search_stops_shrinking_within_the_budget():
    calls = []

    def failure(x):
        calls.append(x)
        return "fails" if sum(x) > 0 else None

    found = search(st.lists(st.integers(-1000, 1000), min_size=60, max_size=60), failure, examples=50, seed=3)
    assert found.failed and sum(found.example) > 0
    assert len(calls) <= 50 + SHRINK_BUDGET + 1


def test_search_simplifies_a_failing_batch_to_one_group_and_one_token():
    # st.just: Hypothesis cannot shrink it, so only the structural simplification can
    adv = torch.zeros(6, 5, dtype=torch.float64)
    adv[4] = 1.0  # row 4 = group 2 (K = 2)
    logp = -torch.ones(6, 5, dtype=torch.float64)
    batch = assemble(logp, logp.clone(), adv, [5, 4, 3, 5, 2, 1], 2)

    def failure(b):
        return "large advantage" if float(b.adv[:, 0].max()) > 0.5 else None

    found = search(st.just(batch), failure, examples=5, seed=0)
    assert found.failed and found.example.lengths == [1, 1] and found.example.logp.shape == (2, 1)
    assert float(found.example.adv[0, 0]) == 1.0
    assert search(st.just(batch), failure, examples=5, seed=0, simplify=lambda c: []).example is batch
