"""Spec checks: the weight comparison's tolerance, its shrunk counterexample, and the region check."""

from __future__ import annotations

from sims.check.inputs import Layout, single_token_batch
from sims.check.spec_check import SPEC_RTOL, check_spec_regions, check_spec_weights, weight_mismatch
from sims.check.specs import make_spec
from tests.sims.check import correct, planted

LAYOUT = Layout(group_size=2, max_groups=2, max_width=4)


def _scaled(factor):
    def loss(logp, old_logp, adv, mask):
        return factor * correct.cispo(logp, old_logp, adv, mask)
    return loss


def test_the_tolerance_is_relative_1e_6():
    spec = make_spec("cispo", group_size=2)
    b = single_token_batch(0.4, 1.5, 2)
    assert weight_mismatch(_scaled(1 + 1e-8), spec, b) is None  # within SPEC_RTOL
    assert "max |w - w_spec|" in weight_mismatch(_scaled(1 + 1e-4), spec, b)  # outside
    assert SPEC_RTOL == 1e-6


def test_a_matching_loss_passes_and_a_wrong_scale_fails_with_a_small_counterexample():
    spec = make_spec("cispo", group_size=2)
    assert check_spec_weights(correct.cispo, spec, LAYOUT, examples=30, seed=0).passed
    r = check_spec_weights(_scaled(1.01), spec, LAYOUT, examples=30, seed=0)
    assert not r.passed
    assert "smallest failing input found" in r.detail and "expected w = " in r.detail and "actual   w = " in r.detail
    # shrunk: one group, one token per row (the smallest batch on which a scale shows)
    assert r.data["input"]["group_size"] == 2 and all(len(row) == 1 for row in r.data["input"]["logp"])


def test_the_region_check_sees_what_random_batches_miss():
    # without dual-clip, PPO differs from dual-clip PPO only at ρ > 3 with A < 0 (ratio scale <= e^3)
    spec = make_spec("ppo_clip", {"dual_clip_c": 3.0}, group_size=2)
    r = check_spec_regions(planted.ppo_without_dual_clip, spec, LAYOUT)
    assert not r.passed and "A < 0" in r.detail
    assert check_spec_regions(lambda *a: correct.ppo_clip(*a, dual_clip_c=3.0), spec, LAYOUT).passed


def opsm_ppo(logp, old_logp, adv, mask, delta=0.5):
    """GRPO-style PPO clip with TRL's off-policy sequence mask: sequences with A < 0 and mean
    per-token KL mean(old_logp - logp) > δ are dropped (not in the ppo_clip spec)."""
    kl = ((old_logp - logp).detach() * mask).sum(-1) / mask.sum(-1)
    keep = ((adv[:, 0] >= 0) | (kl <= delta)).to(logp.dtype)[:, None]
    return (correct._ppo_per_token(logp, old_logp, adv) * mask * keep).sum() / mask.sum()


def test_a_sequence_level_gate_is_found_at_every_seed():
    spec = make_spec("ppo_clip", group_size=2)
    results = [check_spec_weights(opsm_ppo, spec, LAYOUT, examples=30, seed=seed) for seed in range(10)]
    assert not any(r.passed for r in results)
    assert all("expected w = " in r.detail and "actual   w = " in r.detail for r in results)
    # the targeted family is what finds it where the random batches miss it (at some seeds)
    by_targeted = [r for r in results if "targeted input" in r.detail]
    assert by_targeted and all("random batches passed" in r.detail and r.data["targeted"] > 0 for r in by_targeted)
    for seed in range(3):
        ok = check_spec_weights(correct.ppo_clip, spec, LAYOUT, examples=30, seed=seed)
        assert ok.passed and "random + " in ok.detail and " targeted batches" in ok.detail


def test_the_region_check_ignores_underflow_and_compares_every_base():
    # SAPO's gate underflows beyond ρ ≈ 38: not a zero region, so the correct twin passes
    assert check_spec_regions(correct.sapo, make_spec("sapo", group_size=2), LAYOUT).passed
    # a ratio-only cap where the spec's gate depends on π (SGS-CISPO's S(P) for A > 0)
    r = check_spec_regions(correct.cispo, make_spec("sgs_cispo", group_size=2), LAYOUT)
    assert not r.passed and r.detail.startswith("base prob 0.9: A > 0: max |w/A|")
