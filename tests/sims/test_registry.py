"""The common battery: every registered objective, under every aggregation, must

* return a finite 0-d loss with a finite gradient;
* have exactly zero gradient through ``old_logp`` and ``adv``;
* be unchanged by extra padding (loss and gradient), with zero gradient on padding;
* be unchanged by permuting the batch (groups, and samples within groups);
* on-policy (logp == old_logp) have REINFORCE's gradient, for the ratio objectives;
* return detached, finite 0-d diagnostics.

Inputs come from ``tests.batches`` (bounded domains, Hypothesis-drawn seeds, float64); objectives
with extra inputs (``spec.inputs``: ``rollout_logp``) get them drawn, padded and permuted with the
rest. torch's global RNG is seeded before every call (Clip-Cov's random draw reads it, as verl's
does); a property an objective violates by design (``spec.exempt_properties``) is skipped by name.
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch
from hypothesis import given

from sims import objectives as O
from sims.aggregation import AGGREGATIONS
from sims.registry import OBJECTIVES, get_objective
from tests.batches import batch_params, make_batch

TOL = dict(atol=1e-10, rtol=1e-10)  # float64; the two paths differ only by summation order
ON_POLICY_REDUCES_TO_REINFORCE = ("ppo_clip", "cispo", "gspo", "gspo_token", "gmpo", "sapo", "dro", "dppo_tv",
                                  "dppo_kl", "kl_cov")


def _config(name, agg, batch):
    cfg = OBJECTIVES[name].config_cls()
    return dataclasses.replace(cfg, agg=agg, max_len=batch.max_len, group_size=batch.group_size)


def _batch(spec, params, **kw):
    seed, n_groups, group_size, width = params
    return make_batch(seed, n_groups, group_size, width,
                      per_token_adv=spec.advantage_level == "token", rollout=bool(spec.inputs), **kw)


def _extra(spec, b, rows=None):
    """The batch's extra inputs for ``spec`` (``rollout_logp``), optionally permuted by ``rows``."""
    return {k: getattr(b, k) if rows is None else getattr(b, k)[rows] for k in spec.inputs}


def _exempt(spec, prop):
    reasons = dict(spec.exempt_properties)
    if prop in reasons:
        pytest.skip(f"{spec.name}: {prop} does not apply by design: {reasons[prop]}")


def _case(name, agg, params):
    """The spec, a random batch and the default config with aggregation ``agg``."""
    spec = OBJECTIVES[name]
    b = _batch(spec, params)
    return spec, b, _config(name, agg, b)


def _run(spec, cfg, logp, old_logp, adv, mask, **extra):
    logp = logp.clone().requires_grad_(True)
    torch.manual_seed(0)  # Clip-Cov's draw uses the global RNG: the same state on every call
    loss, diag = spec.loss_fn(logp, old_logp, adv, mask, config=cfg, **extra)
    (grad,) = torch.autograd.grad(loss, logp)
    return loss.detach(), grad, diag


CASES = [(name, agg) for name in OBJECTIVES for agg in AGGREGATIONS]


@pytest.mark.parametrize(("name", "agg"), CASES)
@given(params=batch_params)
def test_all_objectives_finite_loss_and_gradient(name, agg, params):
    spec, b, cfg = _case(name, agg, params)
    loss, grad, diag = _run(spec, cfg, b.logp, b.old_logp, b.adv, b.mask, **_extra(spec, b))
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert torch.isfinite(grad).all()
    assert (grad[b.mask == 0] == 0).all()
    for key, value in diag.items():
        assert isinstance(value, torch.Tensor) and value.dim() == 0, key
        assert not value.requires_grad and value.grad_fn is None, key
        assert torch.isfinite(value), key


@pytest.mark.parametrize(("name", "agg"), CASES)
@given(params=batch_params)
def test_all_objectives_stop_gradient_old_logp_and_adv(name, agg, params):
    spec, b, cfg = _case(name, agg, params)
    logp = b.logp.clone().requires_grad_(True)
    old_logp = b.old_logp.clone().requires_grad_(True)
    adv = b.adv.clone().requires_grad_(True)
    extra = {k: v.clone().requires_grad_(True) for k, v in _extra(spec, b).items()}
    loss, _ = spec.loss_fn(logp, old_logp, adv, b.mask, config=cfg, **extra)
    grads = torch.autograd.grad(loss, (old_logp, adv, *extra.values()), allow_unused=True)
    for g in grads:
        assert g is None or (g == 0).all()


@pytest.mark.parametrize(("name", "agg"), CASES)
@given(params=batch_params)
def test_all_objectives_padding_invariant(name, agg, params):
    spec, b, cfg = _case(name, agg, params)
    loss, grad, _ = _run(spec, cfg, b.logp, b.old_logp, b.adv, b.mask, **_extra(spec, b))
    pad = 3
    gen = torch.Generator().manual_seed(params[0])
    filler = lambda: -torch.rand(b.logp.shape[0], pad, generator=gen, dtype=b.logp.dtype)  # noqa: E731
    padded = [torch.cat([x, filler()], dim=1) for x in (b.logp, b.old_logp, b.adv)]
    extra = {k: torch.cat([v, filler()], dim=1) for k, v in _extra(spec, b).items()}
    mask = torch.cat([b.mask, torch.zeros(b.mask.shape[0], pad, dtype=b.mask.dtype)], dim=1)
    loss_p, grad_p, _ = _run(spec, cfg, *padded, mask, **extra)
    torch.testing.assert_close(loss_p, loss, **TOL)
    torch.testing.assert_close(grad_p[:, : b.max_len], grad, **TOL)
    assert (grad_p[:, b.max_len:] == 0).all()


@pytest.mark.parametrize(("name", "agg"), CASES)
@given(params=batch_params)
def test_all_objectives_batch_permutation_invariant(name, agg, params):
    spec, b, cfg = _case(name, agg, params)
    _exempt(spec, "batch-permutation invariance")
    loss, grad, _ = _run(spec, cfg, b.logp, b.old_logp, b.adv, b.mask, **_extra(spec, b))
    gen = torch.Generator().manual_seed(params[0] + 1)
    n_groups, k = b.logp.shape[0] // b.group_size, b.group_size
    # permute the groups, and the samples inside every group (prompt-token-mean needs groups intact)
    perm = torch.cat([g * k + torch.randperm(k, generator=gen)
                      for g in torch.randperm(n_groups, generator=gen).tolist()])
    loss_p, grad_p, _ = _run(spec, cfg, b.logp[perm], b.old_logp[perm], b.adv[perm], b.mask[perm],
                             **_extra(spec, b, perm))
    torch.testing.assert_close(loss_p, loss, **TOL)
    torch.testing.assert_close(grad_p, grad[perm], **TOL)


@pytest.mark.parametrize("agg", list(AGGREGATIONS))
@pytest.mark.parametrize("name", ON_POLICY_REDUCES_TO_REINFORCE)
@given(params=batch_params)
def test_on_policy_gradient_equals_reinforce(name, agg, params):
    # θ = θ_old: every ratio is 1, so clip, gate and geometric mean all have REINFORCE's weight c·A
    # (A per sequence, as outcome rewards give).
    seed, n_groups, group_size, width = params
    b = make_batch(seed, n_groups, group_size, width, per_token_adv=False)
    cfg = _config(name, agg, b)
    _, grad, _ = _run(OBJECTIVES[name], cfg, b.logp, b.logp, b.adv, b.mask)
    ref_cfg = O.ReinforceConfig(agg=agg, max_len=b.max_len, group_size=b.group_size)
    _, grad_ref, _ = _run(OBJECTIVES["reinforce"], ref_cfg, b.logp, b.logp, b.adv, b.mask)
    torch.testing.assert_close(grad, grad_ref, **TOL)


@given(params=batch_params)
def test_on_policy_seq_is_equals_sequence_reinforce(params):
    # seq_is differentiates R_i, not a mean: ∂R_i/∂ℓ_it = R_i. On-policy (R = 1) its default
    # (mean over sequences) gradient is (1/B) Σ_i A_i ∇log P(o_i) = REINFORCE, seq-mean-token-sum.
    seed, n_groups, group_size, width = params
    b = make_batch(seed, n_groups, group_size, width, per_token_adv=False)
    _, grad, _ = _run(OBJECTIVES["seq_is"], O.SeqIsConfig(), b.logp, b.logp, b.adv, b.mask)
    ref_cfg = O.ReinforceConfig(agg="seq-mean-token-sum")
    _, grad_ref, _ = _run(OBJECTIVES["reinforce"], ref_cfg, b.logp, b.logp, b.adv, b.mask)
    torch.testing.assert_close(grad, grad_ref, **TOL)


@pytest.mark.parametrize("agg", list(AGGREGATIONS))
@given(params=batch_params)
def test_gspo_token_equals_gspo_for_sequence_advantages(agg, params):
    # GSPO paper: with A_it = A_i, GSPO-token and GSPO agree in value, clipping and gradient.
    seed, n_groups, group_size, width = params
    b = make_batch(seed, n_groups, group_size, width, per_token_adv=False, log_ratio_scale=0.3)
    cfg = dataclasses.replace(O.GspoConfig(eps_low=0.05, eps_high=0.05), agg=agg,
                              max_len=b.max_len, group_size=b.group_size)
    loss_s, grad_s, _ = _run(OBJECTIVES["gspo"], cfg, b.logp, b.old_logp, b.adv, b.mask)
    loss_t, grad_t, _ = _run(OBJECTIVES["gspo_token"], cfg, b.logp, b.old_logp, b.adv, b.mask)
    torch.testing.assert_close(loss_t, loss_s, **TOL)
    torch.testing.assert_close(grad_t, grad_s, **TOL)


def test_gspo_token_differs_from_gspo_for_token_advantages():
    # the equivalence needs per-sequence advantages: with token-varying A the gradients differ
    b = make_batch(7, 2, 2, 5, per_token_adv=True)
    b_mask = torch.ones_like(b.mask)
    cfg = O.GspoConfig(eps_low=0.9, eps_high=9.0)
    _, grad_s, _ = _run(OBJECTIVES["gspo"], cfg, b.logp, b.old_logp, b.adv, b_mask)
    _, grad_t, _ = _run(OBJECTIVES["gspo_token"], cfg, b.logp, b.old_logp, b.adv, b_mask)
    assert not torch.allclose(grad_s, grad_t)


def test_off_policy_objectives_differ_from_reinforce():
    # power check for the on-policy test: away from θ_old the weights do differ from REINFORCE's
    b = make_batch(3, 2, 2, 4, per_token_adv=False)
    ref = _run(OBJECTIVES["reinforce"], O.ReinforceConfig(agg="token-mean"), b.logp, b.old_logp,
               b.adv, b.mask)[1]
    for name in ON_POLICY_REDUCES_TO_REINFORCE + ("seq_is",):
        cfg = dataclasses.replace(OBJECTIVES[name].config_cls(), agg="token-mean")
        grad = _run(OBJECTIVES[name], cfg, b.logp, b.old_logp, b.adv, b.mask)[1]
        assert not torch.allclose(grad, ref), name


# ------------------------------------------------------------------ registry contract


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_registry_entry_is_complete(name):
    spec = OBJECTIVES[name]
    assert spec.name == name and get_objective(name) is spec
    params = inspect.signature(spec.loss_fn).parameters
    assert list(params)[:4] == ["logp", "old_logp", "adv", "mask"]
    assert params["config"].kind is inspect.Parameter.KEYWORD_ONLY
    cfg = spec.config_cls()
    assert dataclasses.is_dataclass(cfg) and hash(cfg) is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.agg = "token-sum"
    doc = inspect.getdoc(spec.loss_fn)
    for section in ("References:", "Returns:", "Examples:", ".. math::"):
        assert section in doc, f"{name} docstring lacks {section}"
    assert spec.advantage_level in ("token", "sequence")
    assert "agg" in {f.name for f in dataclasses.fields(cfg)}
    for extra in spec.inputs:  # required, keyword-only, documented
        assert params[extra].kind is inspect.Parameter.KEYWORD_ONLY
        assert params[extra].default is inspect.Parameter.empty
        assert extra in doc
    assert (spec.theory is None) == (spec.batch_coupled is not None)
    # the pass/fail property names of sims.check.properties
    names = {"padding invariance", "batch-permutation invariance", "group locality",
             "zero advantage, zero weight", "advantage scale equivariance", "on-policy reduction to REINFORCE"}
    for prop, reason in spec.exempt_properties:
        assert prop in names and reason, prop


def test_generic_callers_refuse_what_they_cannot_call():
    from sims.registry import require_callable_by

    with pytest.raises(ValueError, match="cannot supply rollout_logp"):
        require_callable_by(OBJECTIVES["ppo_clip_rollout_is"], "x", independent_batches=False)
    with pytest.raises(ValueError, match="batch-coupled"):
        require_callable_by(OBJECTIVES["clip_cov"], "x", independent_batches=True)
    require_callable_by(OBJECTIVES["clip_cov"], "x", independent_batches=False)
    require_callable_by(OBJECTIVES["ppo_clip"], "x", independent_batches=True)
