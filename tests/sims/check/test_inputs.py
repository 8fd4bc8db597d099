"""The checker's batches are valid inputs with the documented domains, and ``evaluate`` returns
``w = -∂loss/∂logp``."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

from sims.check.inputs import (PAD_FILLER, RATIO_SCALES, Layout, VariantError, batches, evaluate, loss_of,
                               single_token_batch)

LAYOUT = Layout(group_size=3, max_groups=2, max_width=5)


@settings(max_examples=60)
@given(batches(LAYOUT, per_token_adv=True))
def test_batches_are_valid(b):
    n, width = b.logp.shape
    assert n % 3 == 0 and 1 <= n // 3 <= 2 and 1 <= width <= 5 and b.logp.dtype == torch.float64
    valid = b.mask > 0
    assert all(1 <= length <= width for length in b.lengths) and max(b.lengths) <= width
    assert bool((b.logp[valid] <= 0).all()) and bool((b.old_logp[valid] <= 0).all())
    ratio = torch.exp(b.logp - b.old_logp)[valid]
    assert bool((ratio >= torch.exp(torch.tensor(-max(RATIO_SCALES), dtype=torch.float64)) - 1e-12).all())
    assert bool((b.adv.abs() <= 3).all()) and bool((b.adv[~valid] == 0).all())
    assert bool((b.logp[~valid] == PAD_FILLER).all())
    for i, length in enumerate(b.lengths):  # left-aligned
        assert b.mask[i, :length].sum() == length


@settings(max_examples=30)
@given(batches(LAYOUT, per_token_adv=False, on_policy=True))
def test_on_policy_batches_have_ratio_one_and_sequence_advantages(b):
    assert torch.equal(b.logp, b.old_logp)
    valid = b.mask > 0
    for i in range(b.logp.shape[0]):
        assert len(set(b.adv[i][valid[i]].tolist())) == 1


def test_evaluate_returns_minus_the_gradient():
    b = single_token_batch(0.5, 2.0, 3)

    def loss(logp, old_logp, adv, mask):
        return -(3.0 * adv * logp * mask).sum()

    value, w = evaluate(loss, b)
    assert torch.allclose(w, torch.full_like(w, 6.0)) and value == pytest.approx(-3 * 2 * 3 * float(b.logp[0, 0]))
    value, w = evaluate(lambda *a: (torch.tensor(1.5, dtype=torch.float64), {}), b)
    assert value == 1.5 and not w.any()  # no gradient reaches logp: weight 0


@pytest.mark.parametrize("out, message", [
    ((torch.tensor(1.0), {}, 3), "tuple of 3 items"),
    (1.0, "returned float"),
    (torch.ones(2), "shape \\(2,\\)"),
    (torch.tensor(1), "torch.int64"),
])
def test_loss_of_rejects_what_is_not_a_loss(out, message):
    with pytest.raises(VariantError, match=message):
        loss_of(out)


def test_evaluate_turns_the_loss_errors_into_variant_errors():
    def broken(logp, old_logp, adv, mask):
        raise RuntimeError("boom")

    with pytest.raises(VariantError, match="raised RuntimeError: boom"):
        evaluate(broken, single_token_batch(0.0, 1.0, 2))


def test_layout_rejects_bad_fields():
    with pytest.raises(ValueError, match="max_width=0 is invalid"):
        Layout(max_width=0)
