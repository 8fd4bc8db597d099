"""Contract checks: each passes on a correct loss and fails, with the reason, on a violation."""

from __future__ import annotations

import torch

from sims.check.contract import check_constants, check_extremes, check_returns, extreme_batches
from sims.check.inputs import Layout
from tests.sims.check import correct, planted

LAYOUT = Layout(group_size=2, max_groups=2, max_width=4)
FAST = {"examples": 20, "seed": 0}


def test_correct_losses_keep_the_contract():
    for fn in (correct.cispo, correct.gspo, correct.reinforce):
        assert check_returns(fn, LAYOUT, **FAST).passed
        assert check_constants(fn, LAYOUT, **FAST).passed
        assert check_extremes(fn, LAYOUT).passed


def test_returns_flags_nan_shape_and_a_detached_loss():
    def nan_loss(logp, old_logp, adv, mask):
        return (logp * mask).sum() * float("nan")

    def per_token(logp, old_logp, adv, mask):
        return -(adv * logp * mask)

    def detached(logp, old_logp, adv, mask):
        return -(adv * logp.detach() * mask).sum()

    def bad_diagnostics(logp, old_logp, adv, mask):
        return -(adv * logp * mask).sum(), {"clipfrac": float("inf")}

    for fn, reason in ((nan_loss, "not finite"), (per_token, "shape"), (detached, "does not depend on logp"),
                       (bad_diagnostics, "diagnostic 'clipfrac' = inf")):
        r = check_returns(fn, LAYOUT, **FAST)
        assert not r.passed and reason in r.detail, (fn.__name__, r.detail)


def test_constants_flags_an_undetached_ratio_and_advantage():
    r = check_constants(planted.cispo_ratio_not_detached, LAYOUT, **FAST)
    assert not r.passed and "d loss / d old_logp" in r.detail and "detach it" in r.detail

    def adv_leaks(logp, old_logp, adv, mask):
        return -(adv * adv * logp * mask).sum()

    r = check_constants(adv_leaks, LAYOUT, **FAST)
    assert not r.passed and "d loss / d adv" in r.detail


def test_extremes_cover_the_documented_cases_and_flag_exp_of_sums():
    cases = extreme_batches(Layout(group_size=2, max_width=5))
    ratios = torch.cat([torch.exp(b.logp - b.old_logp)[b.mask > 0] for b in cases.values()])
    assert float(ratios.max()) > 0.99e6 and float(ratios.min()) < 1.01e-6
    assert any(min(b.lengths) == 1 and max(b.lengths) == 5 for b in cases.values())
    assert any(max(b.lengths) == 1 for b in cases.values())
    r = check_extremes(planted.seq_ratio_exp_of_sums, LAYOUT)
    assert not r.passed and "log-probs -300" in r.detail
