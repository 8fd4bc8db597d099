"""Specs: registry objectives (and ``kl``) with their configs; bad names and fields are UsageErrors."""

from __future__ import annotations

import pytest
import torch

from sims.check.specs import SPEC_NAMES, make_spec
from sims.check.target import UsageError
from sims.kl import kl_penalty
from sims.registry import OBJECTIVES
from tests.batches import make_batch


def test_every_registry_objective_and_kl_is_a_spec():
    assert set(SPEC_NAMES) == set(OBJECTIVES) | {"kl"}


def test_spec_loss_is_the_registry_loss():
    b = make_batch(3, 2, 4, 5, per_token_adv=True)
    spec = make_spec("cispo", {"eps_high": 0.5}, group_size=4)
    assert spec.config.group_size == 4 and spec.config.eps_high == 0.5
    expected = OBJECTIVES["cispo"].loss_fn(b.logp, b.old_logp, b.adv, b.mask, config=spec.config)[0]
    assert torch.equal(spec.loss(b.logp, b.old_logp, b.adv, b.mask), expected)
    assert spec.advantage_level == OBJECTIVES["cispo"].advantage_level
    assert "eps_high=0.5" in spec.describe()


def test_kl_spec_reads_the_second_argument_as_the_reference():
    b = make_batch(4, 1, 4, 3, per_token_adv=False)
    spec = make_spec("kl", {"estimator": "k2"})
    assert spec.is_penalty
    expected = kl_penalty(b.logp, b.old_logp, b.mask, config=spec.config)[0]
    assert torch.equal(spec.loss(b.logp, b.old_logp, b.adv, b.mask), expected)


def test_spec_group_size_is_filled_only_when_not_given():
    assert make_spec("ppo_clip", {"group_size": 2}, group_size=4).config.group_size == 2


@pytest.mark.parametrize("name, params, message", [
    ("nope", {}, "--spec 'nope' is unknown; allowed: reinforce"),
    ("cispo", {"eps": 1.0}, "--spec-param 'eps' is not a field of cispo's config"),
    ("cispo", {"eps_high": -2.0}, "--spec-param for cispo: eps_high=-2.0 is invalid"),
    ("ppo_clip", {"agg": "seq-mean-token-sum-norm"}, "max_len is required"),
    ("kl", {"estimator": "k9"}, "--spec-param for kl"),
])
def test_make_spec_usage_errors(name, params, message):
    with pytest.raises(UsageError, match=message):
        make_spec(name, params)
