"""sims.engines.weights: the fused gradient-weight kernels against the registered torch objectives.

The reference is autograd of the registered objective with its own aggregation (``w = -∂loss/∂logp``),
in float64. Every implementation (the numba kernel computing ρ = e^d, the numba kernel reading ρ
as the engine's table path gives it, and the torch path) must equal it to 1e-12
relative to the batch's largest weight, with exactly the same zero pattern, on:

* a Hypothesis battery per fused objective (``BATTERY_EXAMPLES`` examples): random batches
  (``tests.batches``) and random configs (every config field, every aggregation; the strategies
  of ``tests/theory/test_battery.py``);
* every zero region of every objective on a fixed batch that is checked to populate it (a
  region the batch missed fails the test), plus the zero-advantage region.

Then the engine: ``mc_gradient`` with the fused and the autograd path give the same result
(float64 policy: the same to 1e-12; float32: to float32 rounding), and reports its path.
Deterministic (seeded) except Hypothesis, whose failures replay.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.perturb import perturb
from policies.tabular import TabularPolicy
from sims import objectives as O
from sims.advantages import NoConfig, StdConfig
from sims.aggregation import AGGREGATIONS
from sims.engines.montecarlo import MCConfig, _normaliser, mc_gradient, select_weights
from sims.engines.weights import (
    FUSED,
    NOT_FUSED,
    fused_for,
    fused_token_stats_cpu,
    fused_token_stats_torch,
)
from sims.objectives.dppo import binary_kl
from sims.registry import OBJECTIVES, require_callable_by
from tests.batches import batch_params, make_batch
from tests.theory.test_battery import configs

REL_TOL = 1e-12
BATTERY_EXAMPLES = 50  # per objective (both implementations each); the zero regions are covered below


def _numba_with_ratios(entry, cfg, logp, old_logp, adv, mask, scale):
    """The numba kernels reading ρ = e^(ℓ - ℓ^old) as given (the engine's table-policy path)."""
    rho = torch.exp(logp.double() - old_logp.double())
    return fused_token_stats_cpu(entry, cfg, logp, old_logp, adv, mask, scale, rho)


def _numba_with_cell_values(entry, cfg, logp, old_logp, adv, mask, scale):
    """The numba kernels reading ρ and the objective's cell values as given (``entry.cell_values``
    per token, as the engine gathers them from a table policy's cells)."""
    lp, lo = logp.double(), old_logp.double()
    aux = None if entry.cell_values is None else entry.cell_values(lp, lo)
    return fused_token_stats_cpu(entry, cfg, logp, old_logp, adv, mask, scale, torch.exp(lp - lo), aux=aux)


IMPLEMENTATIONS = {"numba": fused_token_stats_cpu, "numba, ρ given": _numba_with_ratios,
                   "numba, ρ and cell values given": _numba_with_cell_values, "torch": fused_token_stats_torch}


def _autograd_weight(spec, cfg, logp, old_logp, adv, mask):
    lp = logp.clone().requires_grad_(True)
    loss, _ = spec.loss_fn(lp, old_logp, adv, mask, config=cfg)
    return -torch.autograd.grad(loss, lp)[0]


def _scale(cfg, mask, group_size):
    """c_i of the config's aggregation for one batch (the engine's normaliser, one replica)."""
    b = mask.shape[0]
    return _normaliser(cfg.agg, mask, 1, b // group_size, group_size, cfg.max_len or mask.shape[1])


def _assert_fused_equals_autograd(name, cfg, logp, old_logp, adv, mask, group_size):
    spec = OBJECTIVES[name]
    ref = _autograd_weight(spec, cfg, logp, old_logp, adv, mask)
    valid = mask > 0
    for impl, fn in IMPLEMENTATIONS.items():
        w, n_zero, n_valid, log_r = fn(FUSED[name], cfg, logp, old_logp, adv, mask, _scale(cfg, mask, group_size))
        scale = max(float(ref.abs().max()), np.finfo(np.float64).tiny)
        np.testing.assert_allclose(w.numpy(), ref.numpy(), rtol=REL_TOL, atol=REL_TOL * scale, err_msg=impl)
        assert torch.equal((w == 0) & valid, (ref == 0) & valid), impl  # the same zero pattern
        assert torch.equal(n_zero, ((ref == 0) & valid).sum(-1)) and torch.equal(n_valid, valid.sum(-1)), impl
        torch.testing.assert_close(log_r, ((logp - old_logp) * mask).sum(-1), rtol=1e-12, atol=1e-12)
        assert bool((w[~valid] == 0).all()), impl
    return ref


# ----------------------------------------------------------------------------- the registry


def test_every_registry_objective_is_fused_or_says_why_not():
    assert set(FUSED) | set(NOT_FUSED) == set(OBJECTIVES) and not set(FUSED) & set(NOT_FUSED)
    for name in NOT_FUSED:  # the only objectives without a kernel are those the engine refuses
        with pytest.raises(ValueError, match="objective="):
            require_callable_by(OBJECTIVES[name], "the Monte Carlo engine", independent_batches=True)
    for name, spec in OBJECTIVES.items():
        entry, reason = fused_for(spec, spec.config_cls())
        assert (entry is not None) == (name in FUSED) and (entry is None) == bool(reason)


def test_user_variants_and_plugins_are_not_fused():
    spec = OBJECTIVES["cispo"]
    assert fused_for(dataclasses.replace(spec), O.CispoConfig())[0] is FUSED["cispo"]  # a copy: same function
    wrapped = dataclasses.replace(spec, loss_fn=lambda *args, **kw: spec.loss_fn(*args, **kw))
    entry, reason = fused_for(wrapped, O.CispoConfig())  # a user variant under the registered name
    assert entry is None and "another loss function than the registered one" in reason

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class MyCispoConfig(O.CispoConfig):
        pass

    entry, reason = fused_for(spec, MyCispoConfig())
    assert entry is None and "MyCispoConfig is not exactly CispoConfig" in reason
    plugin = dataclasses.replace(spec, name="my_objective")
    assert fused_for(plugin, O.CispoConfig())[0] is None


# ----------------------------------------------------------------------------- the battery


@pytest.mark.parametrize("name", list(FUSED))
@settings(max_examples=BATTERY_EXAMPLES)
@given(data=st.data(), params=batch_params)
def test_fused_weights_equal_the_registered_objectives_autograd(name, data, params):
    spec = OBJECTIVES[name]
    seed, n_groups, group_size, width = params
    b = make_batch(seed, n_groups, group_size, width, per_token_adv=spec.advantage_level == "token")
    cfg = dataclasses.replace(data.draw(configs(name)), max_len=b.max_len, group_size=b.group_size)
    _assert_fused_equals_autograd(name, cfg, b.logp, b.old_logp, b.adv, b.mask, group_size)


# ----------------------------------------------------------------------------- every zero region


def _quantities(logp, old_logp, adv, mask):
    """The per-token quantities the zero regions are stated in, as ``[B, T]`` arrays."""
    m = mask
    n = m.sum(-1, keepdim=True)
    d = logp - old_logp
    return {
        "A": adv, "A_bar": ((adv * m).sum(-1, keepdim=True) / n).expand_as(d), "rho": torch.exp(d), "d": d,
        "s": torch.exp((d * m).sum(-1, keepdim=True) / n).expand_as(d),
        "R": torch.exp((d * m).sum(-1, keepdim=True)).expand_as(d),
        "opsm_kl": (((old_logp - logp) * m).sum(-1, keepdim=True) / n).expand_as(d),
        "dp": torch.exp(logp) - torch.exp(old_logp), "D": binary_kl(logp, old_logp),
    }


# (objective, config fields, region label, predicate on the quantities): every region where the
# weight is exactly 0 by the objective's docstring (theory.regions), each with a config that has it
ZERO_REGIONS = [
    ("reinforce", {"is_level": "token", "is_mode": "mask", "is_cap": 1.3}, "MIS token: rho > C", lambda q: q["rho"] > 1.3),
    ("reinforce", {"is_level": "sequence", "is_mode": "mask", "is_cap": 1.3}, "MIS sequence: R > C",
     lambda q: q["R"] > 1.3),
    ("ppo_clip", {"eps_low": 0.2, "eps_high": 0.2}, "A > 0, rho > 1 + eps_high",
     lambda q: (q["A"] > 0) & (q["rho"] > 1.2)),
    ("ppo_clip", {"eps_low": 0.2, "eps_high": 0.2}, "A < 0, rho < 1 - eps_low",
     lambda q: (q["A"] < 0) & (q["rho"] < 0.8)),
    ("ppo_clip", {"eps_low": 0.2, "eps_high": 0.2, "dual_clip_c": 1.6}, "dual-clip: A < 0, rho > c",
     lambda q: (q["A"] < 0) & (q["rho"] > 1.6)),
    ("ppo_clip", {"eps_low": 0.2, "eps_high": 0.2, "opsm_delta": 0.1}, "OPSM: A < 0, mean(old - logp) > delta",
     lambda q: (q["A"] < 0) & (q["opsm_kl"] > 0.1)),
    ("gspo", {"eps_low": 0.05, "eps_high": 0.05}, "A_bar > 0, s > 1 + eps_high",
     lambda q: (q["A_bar"] > 0) & (q["s"] > 1.05)),
    ("gspo", {"eps_low": 0.05, "eps_high": 0.05}, "A_bar < 0, s < 1 - eps_low",
     lambda q: (q["A_bar"] < 0) & (q["s"] < 0.95)),
    ("gspo", {"eps_low": 0.05, "eps_high": 0.05, "dual_clip_c": 1.2}, "dual-clip: A_bar < 0, s > c",
     lambda q: (q["A_bar"] < 0) & (q["s"] > 1.2)),
    ("gspo_token", {"eps_low": 0.05, "eps_high": 0.05}, "A > 0, s > 1 + eps_high",
     lambda q: (q["A"] > 0) & (q["s"] > 1.05)),
    ("gspo_token", {"eps_low": 0.05, "eps_high": 0.05}, "A < 0, s < 1 - eps_low",
     lambda q: (q["A"] < 0) & (q["s"] < 0.95)),
    ("gspo_token", {"eps_low": 0.05, "eps_high": 0.05, "dual_clip_c": 1.2}, "dual-clip: A < 0, s > c",
     lambda q: (q["A"] < 0) & (q["s"] > 1.2)),
    ("gmpo", {"eps_low": 0.4, "eps_high": 0.4}, "A_bar > 0, d > eps_high",
     lambda q: (q["A_bar"] > 0) & (q["d"] > 0.4)),
    ("gmpo", {"eps_low": 0.4, "eps_high": 0.4}, "A_bar < 0, d < -eps_low",
     lambda q: (q["A_bar"] < 0) & (q["d"] < -0.4)),
    ("dppo_tv", {"delta_low": 0.05, "delta_high": 0.05}, "A > 0, p - p_old > delta_high",
     lambda q: (q["A"] > 0) & (q["dp"] > 0.05)),
    ("dppo_tv", {"delta_low": 0.05, "delta_high": 0.05}, "A <= 0, p - p_old < -delta_low",
     lambda q: (q["A"] <= 0) & (q["dp"] < -0.05)),
    ("dppo_kl", {"delta_low": 0.01, "delta_high": 0.01}, "A > 0, D > delta_high, p > p_old",
     lambda q: (q["A"] > 0) & (q["D"] > 0.01) & (q["dp"] > 0)),
    ("dppo_kl", {"delta_low": 0.01, "delta_high": 0.01}, "A <= 0, D > delta_low, p < p_old",
     lambda q: (q["A"] <= 0) & (q["D"] > 0.01) & (q["dp"] < 0)),
] + [(name, {}, "A = 0", lambda q: q["A"] == 0) for name in FUSED if name != "dro"]  # DRO: w(A=0) = -beta*d
_CLAMPED = {"log_ratio_min": -0.5, "log_ratio_max": 0.5}  # the "for stability" log-ratio clamp
ZERO_REGIONS += [
    (name, _CLAMPED, "log-ratio clamp: d outside [min, max]", lambda q: (q["d"] < -0.5) | (q["d"] > 0.5))
    for name in ("ppo_clip", "sapo")
] + [
    (name, {**_CLAMPED, "eps_low": None, "eps_high": 3.0}, "log-ratio clamp: log s outside [min, max]",
     lambda q: q["s"].log().abs() > 0.5)
    for name in ("gspo", "gspo_token")
]


def _region_batch(name):
    """A fixed batch, log-ratios in [-1.5, 1.5], with the advantages of sequences 0 and 1 set to 0."""
    spec = OBJECTIVES[name]
    b = make_batch(7, 8, 4, 6, per_token_adv=spec.advantage_level == "token", log_ratio_scale=1.5)
    adv = b.adv.clone()
    adv[:2] = 0.0
    return b, adv


@pytest.mark.parametrize(("name", "fields", "label", "region"), ZERO_REGIONS,
                         ids=[f"{n}: {label}" for n, _, label, _ in ZERO_REGIONS])
def test_every_zero_region_is_exactly_zero_in_both_paths(name, fields, label, region):
    known = {f.name for f in dataclasses.fields(OBJECTIVES[name].config_cls)}
    if not set(fields) <= known:
        pytest.skip(f"{OBJECTIVES[name].config_cls.__name__} has no field {sorted(set(fields) - known)}")
    b, adv = _region_batch(name)
    for agg in AGGREGATIONS:
        cfg = OBJECTIVES[name].config_cls(agg=agg, max_len=b.max_len, group_size=b.group_size, **fields)
        ref = _assert_fused_equals_autograd(name, cfg, b.logp, b.old_logp, adv, b.mask, b.group_size)
        inside = region(_quantities(b.logp, b.old_logp, adv, b.mask)) & (b.mask > 0)
        assert int(inside.sum()) >= 2, f"the batch has no token in the region {label}"  # the test has power
        assert bool((ref[inside] == 0).all())
        assert bool((ref[(b.mask > 0) & ~inside] != 0).any())  # and not every weight is 0


def test_dro_has_weight_at_zero_advantage():
    # DRO's proximal term: w = A - beta*d, so at A = 0 the fused weight is -beta*d, not 0
    b, adv = _region_batch("dro")
    cfg = O.DroConfig(beta=0.5, agg="token-sum")
    ref = _assert_fused_equals_autograd("dro", cfg, b.logp, b.old_logp, adv, b.mask, b.group_size)
    torch.testing.assert_close(ref[:2], (-0.5 * (b.logp - b.old_logp) * b.mask)[:2], rtol=1e-12, atol=1e-12)


def test_binary_kl_edge_cases_match():
    # p_old = 1 (0·log 0 = 0) and p = 1 > p_old (D = +inf: dropped where A > 0, kept where A <= 0)
    logp = torch.tensor([[-0.5, 0.0, -1.0, 0.0]], dtype=torch.float64)
    old = torch.tensor([[0.0, -0.3, -1.2, -0.3]], dtype=torch.float64)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]], dtype=torch.float64)
    mask = torch.ones(1, 4, dtype=torch.float64)
    cfg = O.DppoConfig(agg="token-sum")
    ref = _assert_fused_equals_autograd("dppo_kl", cfg, logp, old, adv, mask, 1)
    assert ref[0, 1] == 0 and ref[0, 3] != 0


# ----------------------------------------------------------------------------- the engine

_ENGINE_CASES = [
    ("reinforce", O.ReinforceConfig(is_level="token", is_mode="mask", is_cap=1.1, agg="token-mean")),
    ("seq_is", O.SeqIsConfig(cap=1.2)),
    ("ppo_clip", O.PpoClipConfig(dual_clip_c=1.2, opsm_delta=0.02, agg="prompt-token-mean")),
    ("gspo", O.GspoConfig(eps_low=0.01, eps_high=0.01, dual_clip_c=1.05)),
    ("gspo_token", O.GspoConfig(eps_low=0.01, eps_high=0.01, agg="seq-mean-token-sum-norm")),
    ("gmpo", O.GmpoConfig(eps_low=0.1, eps_high=0.1)),
    ("cispo", O.CispoConfig.verl(0.1, 0.1, agg="token-sum")),
    ("sapo", O.SapoConfig()),
    ("sgs_cispo", O.SgsCispoConfig(p_mode="geometric", stop_grad_s=False, agg="seq-mean-token-sum")),
    ("dro", O.DroConfig(beta=0.5)),
    ("dppo_tv", O.DppoConfig(delta_low=0.05, delta_high=0.05)),
    ("dppo_kl", O.DppoConfig(delta_low=0.01, delta_high=0.01)),
]


def _engine_pair(dtype):
    g = torch.Generator().manual_seed(0)
    old = TabularPolicy(TabularPolicy.random(4, 3, generator=g, eos=2).logits.to(dtype))
    return old, perturb(old, kl=0.1, generator=g)


def _reward(tokens, mask):
    return (tokens[:, 0] == 1).to(torch.float64)


def test_engine_cases_cover_every_fused_objective():
    assert [name for name, _ in _ENGINE_CASES] == list(FUSED)


@pytest.mark.parametrize(("name", "config"), _ENGINE_CASES, ids=[n for n, _ in _ENGINE_CASES])
def test_engine_fused_and_autograd_paths_agree_float64(name, config):
    old, new = _engine_pair(torch.float64)
    mc = MCConfig(n_replicas=40, n_groups=2, group_size=3, chunk=10, n_batches=4, seed=1)
    fused = mc_gradient(new, old, _reward, name, config, "grpo", StdConfig(), mc)
    ref = mc_gradient(new, old, _reward, name, config, "grpo", StdConfig(), dataclasses.replace(mc, weights="autograd"))
    assert fused.weight_path == "fused" and name in fused.weight_note
    assert ref.weight_path == "autograd" and "forced" in ref.weight_note
    torch.testing.assert_close(fused.mean, ref.mean, rtol=1e-12, atol=1e-12 * float(ref.mean.abs().max()))
    for key in ("var_trace", "snr", "zero_weight_frac", "ess_frac"):
        a, b = getattr(fused, key), getattr(ref, key)
        assert a.estimate == pytest.approx(b.estimate, rel=1e-10, abs=1e-12), key
    assert fused.zero_weight_frac == ref.zero_weight_frac  # exact zeros in the same places


@pytest.mark.parametrize("name, config", [("cispo", O.CispoConfig.verl(0.2, 0.2)), ("sapo", O.SapoConfig())])
def test_engine_fused_path_on_a_prompted_markov_policy_agrees_with_autograd(name, config):
    # the fused table path gathers ℓ, ℓ^old and ρ while sampling, from the Markov rows of each prompt
    from policies.markov import MarkovPolicy
    g = torch.Generator().manual_seed(3)
    old = MarkovPolicy.random(4, 3, generator=g, eos=2, n_prompts=2)
    new = perturb(old, kl=0.1, generator=g)
    mc = MCConfig(n_replicas=40, n_groups=2, group_size=3, chunk=5, n_batches=4, seed=4)
    reward = lambda tokens, mask, prompts: (tokens[:, 0] == prompts).to(torch.float64)
    fused = mc_gradient(new, old, reward, name, config, "grpo", StdConfig(), mc)
    ref = mc_gradient(new, old, reward, name, config, "grpo", StdConfig(), dataclasses.replace(mc, weights="autograd"))
    assert fused.weight_path == "fused"
    torch.testing.assert_close(fused.mean, ref.mean, rtol=1e-12, atol=1e-12 * float(ref.mean.abs().max()))
    assert fused.ess_frac.estimate == pytest.approx(ref.ess_frac.estimate, rel=1e-12)


@pytest.mark.parametrize("name, config", [("dppo_tv", O.DppoConfig(delta_low=0.05, delta_high=0.05)),
                                          ("dppo_kl", O.DppoConfig(delta_low=0.01, delta_high=0.01))])
def test_engine_reads_dppo_trust_regions_from_the_cell_table(name, config):
    # DPPO's p - p_old and binary KL are per-cell values gathered while sampling (``aux``)
    assert FUSED[name].cell_values is not None
    old, new = _engine_pair(torch.float64)
    mc = MCConfig(n_replicas=40, n_groups=2, group_size=3, chunk=10, n_batches=4, seed=5)
    fused = mc_gradient(new, old, _reward, name, config, "grpo", StdConfig(), mc)
    ref = mc_gradient(new, old, _reward, name, config, "grpo", StdConfig(), dataclasses.replace(mc, weights="autograd"))
    torch.testing.assert_close(fused.mean, ref.mean, rtol=1e-12, atol=1e-12 * float(ref.mean.abs().max()))
    assert fused.zero_weight_frac == ref.zero_weight_frac


def test_engine_with_a_shorter_last_chunk_per_batch_agrees_with_autograd():
    # 15 replicas per batch in chunks of 4: three full chunks and one of 3, each with its own buffers
    old, new = _engine_pair(torch.float64)
    mc = MCConfig(n_replicas=60, n_groups=2, group_size=3, chunk=4, n_batches=4, seed=6)
    config = O.CispoConfig.verl(0.2, 0.2)
    fused = mc_gradient(new, old, _reward, "cispo", config, "grpo", StdConfig(), mc)
    ref = mc_gradient(new, old, _reward, "cispo", config, "grpo", StdConfig(), dataclasses.replace(mc, weights="autograd"))
    torch.testing.assert_close(fused.mean, ref.mean, rtol=1e-12, atol=1e-12 * float(ref.mean.abs().max()))
    assert fused.var_trace.estimate == pytest.approx(ref.var_trace.estimate, rel=1e-10)


@pytest.mark.parametrize("name", ["dppo_tv", "dppo_kl"])
def test_engine_float32_dppo_paths_agree_to_float32_rounding(name):
    # float64 cell values against float32 autograd: a token within float32 rounding of δ may flip
    old, new = _engine_pair(torch.float32)
    config = O.DppoConfig(delta_low=0.05, delta_high=0.05)
    mc = MCConfig(n_replicas=200, group_size=4, chunk=50, n_batches=4, seed=7)
    fused = mc_gradient(new, old, _reward, name, config, "grpo", StdConfig(), mc)
    ref = mc_gradient(new, old, _reward, name, config, "grpo", StdConfig(), dataclasses.replace(mc, weights="autograd"))
    assert fused.zero_weight_frac.estimate == pytest.approx(ref.zero_weight_frac.estimate, abs=0.01)
    torch.testing.assert_close(fused.mean, ref.mean, rtol=1e-3, atol=1e-3 * float(ref.mean.abs().max()))


def test_chunk_buffers_are_validated():
    b = make_batch(0, 1, 3, 4, per_token_adv=False)  # float64
    scale = torch.ones(3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"rho has shape \(1, 4\); allowed: None or logp's shape \(3, 4\)"):
        fused_token_stats_cpu(FUSED["cispo"], O.CispoConfig(), b.logp, b.old_logp, b.adv, b.mask, scale,
                              torch.ones(1, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"out is a torch.float32 tensor of shape \(3, 4\); allowed: a contiguous CPU \[3, 4\]"):
        fused_token_stats_cpu(FUSED["cispo"], O.CispoConfig(), b.logp, b.old_logp, b.adv, b.mask, scale,
                              out=torch.empty(3, 4, dtype=torch.float32))


def test_engine_float32_paths_agree_to_float32_rounding():
    # the fused kernel computes in float64 and rounds once; autograd computes in float32
    old, new = _engine_pair(torch.float32)
    config = O.CispoConfig.verl(0.2, 0.2)
    mc = MCConfig(n_replicas=200, group_size=4, chunk=50, n_batches=4, seed=2)
    fused = mc_gradient(new, old, _reward, "cispo", config, "grpo", StdConfig(), mc)
    ref = mc_gradient(new, old, _reward, "cispo", config, "grpo", StdConfig(), dataclasses.replace(mc, weights="autograd"))
    torch.testing.assert_close(fused.mean, ref.mean, rtol=1e-5, atol=1e-6 * float(ref.mean.abs().max()))
    assert fused.var_trace.estimate == pytest.approx(ref.var_trace.estimate, rel=1e-5)


def test_engine_user_variant_takes_the_autograd_path_and_fused_mode_refuses_it():
    old, new = _engine_pair(torch.float64)
    variant = dataclasses.replace(OBJECTIVES["cispo"], name="my_cispo")
    mc = MCConfig(n_replicas=40, group_size=3, chunk=10, n_batches=4)
    res = mc_gradient(new, old, _reward, variant, O.CispoConfig(), "rloo", NoConfig(), mc)
    assert res.weight_path == "autograd" and "no fused kernel for objective 'my_cispo'" in res.weight_note
    registered = mc_gradient(new, old, _reward, "cispo", O.CispoConfig(), "rloo", NoConfig(), mc)
    torch.testing.assert_close(res.mean, registered.mean, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="weights='fused' is invalid; allowed: 'auto' or 'autograd'"):
        mc_gradient(new, old, _reward, variant, O.CispoConfig(), "rloo", NoConfig(),
                    dataclasses.replace(mc, weights="fused"))


def test_weights_mode_is_validated():
    with pytest.raises(ValueError, match="weights='numba' is invalid; allowed: one of auto, fused, autograd"):
        MCConfig(weights="numba")
    with pytest.raises(ValueError, match="weights='x' is invalid"):
        select_weights(OBJECTIVES["cispo"], O.CispoConfig(), "x")


def test_advantages_expanded_along_t_read_as_one_per_sequence():
    # the engine passes one advantage per sequence as an expanded [N, T] view
    b = make_batch(3, 2, 3, 5, per_token_adv=False)
    expanded = b.adv[:, :1].expand_as(b.adv)
    cfg = O.PpoClipConfig(agg="token-sum")
    scale = torch.ones(b.adv.shape[0], dtype=torch.float64)
    dense = fused_token_stats_cpu(FUSED["ppo_clip"], cfg, b.logp, b.old_logp, expanded.contiguous(), b.mask, scale)
    view = fused_token_stats_cpu(FUSED["ppo_clip"], cfg, b.logp, b.old_logp, expanded, b.mask, scale)
    assert expanded.stride(1) == 0 and all(torch.equal(x, y) for x, y in zip(dense, view))
