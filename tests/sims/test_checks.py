"""Bad input gets a ValueError naming the field, the value and what is allowed — for every
registered objective, and for every config."""

from __future__ import annotations

import math
import re

import pytest
import torch

from sims import objectives as O
from sims.aggregation import aggregate
from sims.registry import OBJECTIVES, get_advantage, get_aggregation, get_group_filter, get_objective

NAMES = list(OBJECTIVES)


def _inputs(b=2, t=3):
    logp = -torch.rand(b, t, dtype=torch.float64) - 0.1
    return logp, logp - 0.05, torch.ones(b, t, dtype=torch.float64), torch.ones(b, t, dtype=torch.float64)


def _call(name, logp, old, adv, mask, **cfg):
    spec = OBJECTIVES[name]
    # extra inputs (rollout_logp) valid and of the mask's shape: the error must come from the four
    extra = {k: -0.5 * torch.ones(mask.shape, dtype=torch.float64) for k in spec.inputs}
    return spec.loss_fn(logp, old, adv, mask, config=spec.config_cls(**cfg), **extra)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("field", ["old_logp", "adv", "mask"])
def test_mismatched_shapes_raise(name, field):
    args = dict(zip(("logp", "old_logp", "adv", "mask"), _inputs()))
    args[field] = args[field][:, :2]
    with pytest.raises(ValueError, match=rf"{field} has shape \(2, 2\); allowed: \(2, 3\)"):
        _call(name, *args.values())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("field", ["logp", "old_logp", "adv"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_inputs_raise(name, field, bad):
    args = dict(zip(("logp", "old_logp", "adv", "mask"), _inputs()))
    args[field] = args[field].clone()
    args[field][1, 2] = bad
    with pytest.raises(ValueError, match=rf"{field} has a non-finite value {bad} at index \(1, 2\)"):
        _call(name, *args.values())


@pytest.mark.parametrize("name", NAMES)
def test_all_zero_mask_raises(name):
    logp, old, adv, mask = _inputs()
    with pytest.raises(ValueError, match="mask is all zero"):
        _call(name, logp, old, adv, torch.zeros_like(mask))


@pytest.mark.parametrize("name", NAMES)
def test_empty_sequence_raises(name):
    logp, old, adv, mask = _inputs()
    mask[1] = 0
    with pytest.raises(ValueError, match=r"mask rows \[1\] have no valid token"):
        _call(name, logp, old, adv, mask)


@pytest.mark.parametrize("name", NAMES)
def test_non_binary_mask_raises(name):
    logp, old, adv, mask = _inputs()
    mask[0, 0] = 0.5
    with pytest.raises(ValueError, match="mask has values other than 0 and 1"):
        _call(name, logp, old, adv, mask)


@pytest.mark.parametrize("name", NAMES)
def test_positive_log_prob_raises(name):
    logp, old, adv, mask = _inputs()
    logp[0, 1] = 0.5
    with pytest.raises(ValueError, match=r"logp has value 0.5 > 0 at index \(0, 1\)"):
        _call(name, logp, old, adv, mask)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_rank_and_type_raise(name):
    logp, old, adv, mask = _inputs()
    with pytest.raises(ValueError, match="logp has shape"):
        _call(name, logp[0], old[0], adv[0], mask[0])
    with pytest.raises(ValueError, match="logp must be a torch.Tensor"):
        _call(name, logp.tolist(), old, adv, mask)
    with pytest.raises(ValueError, match="adv must have a floating dtype"):
        _call(name, logp, old, adv.long(), mask)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_aggregation_raises(name):
    with pytest.raises(ValueError, match=r"agg='mean' is invalid; allowed: one of 'token-mean'"):
        OBJECTIVES[name].config_cls(agg="mean")


@pytest.mark.parametrize("name", NAMES)
def test_norm_aggregation_needs_max_len(name):
    logp, old, adv, mask = _inputs()
    with pytest.raises(ValueError, match="max_len=None is invalid"):
        _call(name, logp, old, adv, mask, agg="seq-mean-token-sum-norm")
    with pytest.raises(ValueError, match=r"max_len=2 is invalid; allowed: >= the longest sequence"):
        _call(name, logp, old, adv, mask, agg="seq-mean-token-sum-norm", max_len=2)


@pytest.mark.parametrize("name", NAMES)
def test_prompt_aggregation_needs_group_size(name):
    logp, old, adv, mask = _inputs(b=4)
    with pytest.raises(ValueError, match="group_size=None is invalid"):
        _call(name, logp, old, adv, mask, agg="prompt-token-mean")
    with pytest.raises(ValueError, match=r"group_size=3 is invalid; allowed: a positive divisor of the batch size B=4"):
        _call(name, logp, old, adv, mask, agg="prompt-token-mean", group_size=3)


def test_unknown_names_raise():
    for getter, field in ((get_objective, "objective"), (get_advantage, "advantage"),
                          (get_aggregation, "agg"), (get_group_filter, "group_filter")):
        with pytest.raises(ValueError, match=rf"{field}='nope' is invalid; allowed: one of"):
            getter("nope")


BAD_CONFIGS = [
    (O.PpoClipConfig, dict(eps_low=1.5), "eps_low=1.5"),
    (O.PpoClipConfig, dict(eps_low=0.0), "eps_low=0.0"),
    (O.PpoClipConfig, dict(eps_low=-0.1), "eps_low=-0.1"),
    (O.PpoClipConfig, dict(eps_high=-0.1), "eps_high=-0.1"),
    (O.PpoClipConfig, dict(eps_high=math.inf), "eps_high=inf"),
    (O.PpoClipConfig, dict(eps_high=math.nan), "eps_high=nan"),
    (O.PpoClipConfig, dict(dual_clip_c=0.5), "dual_clip_c=0.5"),
    (O.GspoConfig, dict(eps_low=1.0), "eps_low=1.0"),
    (O.GspoConfig, dict(eps_high=0.0), "eps_high=0.0"),
    (O.GmpoConfig, dict(eps_low=-0.4), "eps_low=-0.4"),
    (O.CispoConfig, dict(eps_high=-1.5), "eps_high=-1.5"),
    (O.CispoConfig, dict(eps_low=0.2, eps_high=-0.5), "eps_high=-0.5"),
    (O.CispoConfig, dict(eps_low=2.0), "eps_low=2.0"),
    (O.SapoConfig, dict(tau_pos=0.0), "tau_pos=0.0"),
    (O.SapoConfig, dict(tau_neg=-1.0), "tau_neg=-1.0"),
    (O.SgsCispoConfig, dict(k=-1.0), "k=-1.0"),
    (O.SgsCispoConfig, dict(k=math.inf), "k=inf"),
    (O.SgsCispoConfig, dict(tau=0.0), "tau=0.0"),
    (O.SgsCispoConfig, dict(tau=1.0), "tau=1.0"),
    (O.SgsCispoConfig, dict(tau=1.5), "tau=1.5"),
    (O.SgsCispoConfig, dict(p_mode="mean"), "p_mode='mean'"),
    (O.SgsCispoConfig, dict(stop_grad_s="yes"), "stop_grad_s='yes'"),
    (O.ReinforceConfig, dict(is_level="batch"), "is_level='batch'"),
    (O.ReinforceConfig, dict(is_mode="clip"), "is_mode='clip'"),
    (O.ReinforceConfig, dict(is_cap=0.0), "is_cap=0.0"),
    (O.SeqIsConfig, dict(cap=-2.0), "cap=-2.0"),
    (O.PpoClipConfig, dict(max_len=0), "max_len=0"),
    (O.PpoClipConfig, dict(group_size=2.5), "group_size=2.5"),
]


@pytest.mark.parametrize(("cls", "kwargs", "message"), BAD_CONFIGS)
def test_bad_config_values_raise(cls, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message) + r" is invalid; allowed: "):
        cls(**kwargs)


def test_aggregate_validates_its_inputs():
    with pytest.raises(ValueError, match="loss_mat has a non-finite value nan"):
        aggregate(torch.tensor([[math.nan]]), torch.ones(1, 1), agg="token-mean")
    with pytest.raises(ValueError, match="agg='sum' is invalid"):
        aggregate(torch.ones(1, 1), torch.ones(1, 1), agg="sum")
