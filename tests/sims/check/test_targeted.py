"""The targeted family for sequence-level gates: its rows, its batches, and that it finds gates."""

from __future__ import annotations

import pytest
import torch

from sims.check.inputs import Layout
from sims.check.spec_check import weight_mismatch
from sims.check.specs import make_spec
from sims.check.targeted import (ADV_MAGNITUDES, BASES, MEAN_LOG_RATIOS, first_failure, gate_rows,
                                 sequence_gate_batches, simplify_targeted)
from tests.sims.check import correct

LAYOUTS = [Layout(group_size=2, max_groups=2, max_width=4), Layout(), Layout(group_size=1, max_groups=1, max_width=2),
           Layout(group_size=3, max_groups=1, max_width=6)]


def opsm_ppo(logp, old_logp, adv, mask, delta=0.5):
    """PPO clip (token-mean) with TRL's off-policy sequence mask (DeepSeek-V3.2 OPSM): drop the
    sequences with A < 0 whose mean per-token KL mean(old_logp - logp) exceeds δ."""
    kl = ((old_logp - logp).detach() * mask).sum(-1) / mask.sum(-1)
    keep = ((adv[:, 0] >= 0) | (kl <= delta)).to(logp.dtype)[:, None]
    return (correct._ppo_per_token(logp, old_logp, adv) * mask * keep).sum() / mask.sum()


def seq_mask_reinforce(logp, old_logp, adv, mask, bound=1.0):
    """REINFORCE with a sequence mask on the mean log-ratio (verl's seq-mask-tis style): sequences
    with |mean(logp - old_logp)| > bound get no gradient."""
    mean_d = ((logp - old_logp).detach() * mask).sum(-1) / mask.sum(-1)
    keep = (mean_d.abs() <= bound).to(logp.dtype)[:, None]
    return -(adv * logp * mask * keep).sum() / logp.shape[0]


def test_rows_sweep_every_mean_with_each_sign_of_a_in_both_patterns():
    rows = gate_rows(4)
    assert len(rows) == len(MEAN_LOG_RATIOS) * 2 * 2 * 2
    seen = {(round(r.mean_log_ratio, 12), r.adv > 0, r.log_ratios[0] == 0.0 and len(r.log_ratios) > 1) for r in rows}
    for m in MEAN_LOG_RATIOS:
        for mean in (m, -m):
            for positive in (True, False):
                assert (round(mean, 12), positive, False) in seen and (round(mean, 12), positive, True) in seen
    for r in rows:
        assert 1 <= len(r.log_ratios) <= 4 and abs(r.adv) in ADV_MAGNITUDES
        assert r.mean_log_ratio == pytest.approx(sum(r.log_ratios) / len(r.log_ratios), abs=1e-15)
    assert {len(r.log_ratios) for r in rows} == {1, 2, 3, 4}  # lengths vary
    # a width of 1 leaves only the constant pattern
    assert all(len(r.log_ratios) == 1 for r in gate_rows(1)) and len(gate_rows(1)) == len(MEAN_LOG_RATIOS) * 4
    with pytest.raises(ValueError, match="max_width=0 is invalid"):
        gate_rows(0)


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_batches_respect_the_layout_and_the_input_domains(layout):
    cases = sequence_gate_batches(layout)
    rows = gate_rows(layout.max_width)
    assert sum(b.logp.shape[0] for b in cases) >= len(rows)
    for b in cases:
        assert b.logp.shape[0] == layout.group_size * layout.max_groups and b.group_size == layout.group_size
        assert b.logp.shape[1] <= layout.max_width and b.logp.dtype == torch.float64
        valid = b.mask > 0
        assert (b.logp[valid] <= 0).all() and (b.old_logp[valid] <= 0).all()
        top = torch.maximum(b.logp, b.old_logp)[valid]
        assert all(any(abs(x - base) < 1e-12 for base in BASES) for x in top.tolist())
        for i, n in enumerate(b.lengths):  # one advantage per row
            assert (b.adv[i, :n] == b.adv[i, 0]).all() and (b.adv[i, n:] == 0).all()
    # the first batch's rows are the family's first rows: log-ratios exactly as built
    b, first = cases[0], rows[:cases[0].logp.shape[0]]
    for i, r in enumerate(first):
        d = (b.logp - b.old_logp)[i, :len(r.log_ratios)]
        assert d.tolist() == pytest.approx(list(r.log_ratios), abs=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS[:3], ids=str)
def test_the_family_finds_a_trl_off_policy_mask_and_passes_the_correct_loss(layout):
    spec = make_spec("ppo_clip", group_size=layout.group_size)
    cases = sequence_gate_batches(layout)
    assert first_failure(cases, lambda b: weight_mismatch(correct.ppo_clip, spec, b)) is None
    hit = first_failure(cases, lambda b: weight_mismatch(opsm_ppo, spec, b))
    assert hit is not None
    small = simplify_targeted(hit[1], lambda b: weight_mismatch(opsm_ppo, spec, b))
    assert small.n_groups == 1 and weight_mismatch(opsm_ppo, spec, small) is not None
    # the dropped row: A < 0 and mean KL > 0.5
    kl = ((small.old_logp - small.logp) * small.mask).sum(-1) / small.mask.sum(-1)
    assert ((small.adv[:, 0] < 0) & (kl > 0.5)).any()


def test_the_family_finds_a_mean_log_ratio_sequence_mask():
    layout = Layout(group_size=2, max_groups=2, max_width=4)
    spec = make_spec("reinforce", group_size=2)
    cases = sequence_gate_batches(layout)
    assert first_failure(cases, lambda b: weight_mismatch(correct.reinforce, spec, b)) is None
    assert first_failure(cases, lambda b: weight_mismatch(seq_mask_reinforce, spec, b)) is not None
    # a bound above the family's largest mean (3) is out of its reach: the family is no proof
    assert first_failure(cases, lambda b: weight_mismatch(lambda *a: seq_mask_reinforce(*a, bound=3.5), spec, b)) is None


def test_one_token_rows_cannot_show_opsm_under_ppo():
    """With T = 1 the OPSM-dropped tokens (A < 0, ρ < e^-0.5) are already in PPO's clip zone
    (ρ < 0.8): the masked loss has PPO's weights there, and the family rightly finds nothing."""
    layout = Layout(group_size=2, max_groups=2, max_width=1)
    spec = make_spec("ppo_clip", group_size=2)
    assert first_failure(sequence_gate_batches(layout), lambda b: weight_mismatch(opsm_ppo, spec, b)) is None
