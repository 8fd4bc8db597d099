"""``pgverify check`` on trainer code as it is: the feed (``sims.check.feed``) and what it makes checkable.

Each case is a trainer-style loss written as verl / TRL / OpenRLHF write theirs (no ``.detach()``,
bool or int masks, per-sequence advantages, their argument names, a ``+1e-8`` in a denominator,
float32 internals, the global RNG, global normalisers), with the check that must pass it and,
for every new detection, a loss that must fail it.
"""

from __future__ import annotations

import re
import types

import pytest
import torch

from sims.check.feed import NOT_TAKEN, Feed, adapt, aliases_for, resolve_names
from sims.check.inputs import Batch, Layout, evaluate
from sims.check.properties import check_microbatch, scale_pattern
from sims.check.runner import run_checks
from sims.check.specs import make_spec
from sims.check.target import UsageError, bind_params, parse_assignments

LAYOUT = Layout(group_size=2, max_groups=3, max_width=4)
FAST = {"layout": LAYOUT, "examples": 20, "seed": 0}


# ------------------------------------------------------------------ trainer-style losses


def verl_vanilla(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None):
    """verl's argument order and names; nothing detached; token-mean over a bool mask."""
    ratio = torch.exp(log_prob - old_log_prob)
    lo, hi = (0.2, 0.2) if config is None else (config.clip_ratio_low, config.clip_ratio_high)
    loss = torch.maximum(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - lo, 1 + hi))
    m = response_mask.to(loss.dtype)
    return (loss * m).sum() / m.sum()


def trl_grpo(per_token_logps, old_per_token_logps, advantages, completion_mask, epsilon=0.2):
    """TRL: advantages per sequence [B], an int mask, per-sequence token mean (GRPO)."""
    coef_1 = torch.exp(per_token_logps - old_per_token_logps)
    coef_2 = torch.clamp(coef_1, 1 - epsilon, 1 + epsilon)
    per_token = -torch.min(coef_1 * advantages.unsqueeze(1), coef_2 * advantages.unsqueeze(1))
    m = completion_mask.to(per_token.dtype)
    return ((per_token * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean()


def seq_mean_with_eps(logp, old_logp, adv, mask):
    """OpenRLHF's masked mean: a +1e-8 in the per-sequence denominator."""
    m = mask.to(logp.dtype)
    per_seq = (-adv * torch.exp(logp - old_logp) * m).sum(-1) / (m.sum(-1) + 1e-8)
    return per_seq.mean()


def k3_float32(log_probs, log_probs_base, action_mask):
    """OpenRLHF-style k3 KL computed in float32 whatever it is fed, per-sequence mean."""
    x = log_probs_base.float() - log_probs.float()
    k3 = x.exp() - 1 - x
    m = action_mask.float()
    return ((k3 * m).sum(-1) / (m.sum(-1) + 1e-8)).mean()


def draws_from_global_rng(logp, old_logp, adv, mask):
    """A loss that drops one random token, as verl's Clip-Cov picks tokens with torch.randperm."""
    m = mask.to(logp.dtype).clone()
    valid = m.nonzero()
    i, t = valid[torch.randperm(len(valid))[0]].tolist()
    m[i, t] = 0.0
    return (-adv * torch.exp(logp - old_logp) * m).sum() / mask.to(logp.dtype).sum()


def token_sum_global(logp, old_logp, adv, mask, num_items_in_batch):
    """TRL's DAPO loss under gradient accumulation: divide by the global token count."""
    m = mask.to(logp.dtype)
    return (-adv * torch.exp(logp - old_logp) * m).sum() / num_items_in_batch


def token_sum_local(logp, old_logp, adv, mask, num_items_in_batch):
    """The micro-batch bug: takes the global count and divides by the local one (verl's geo_mean class)."""
    m = mask.to(logp.dtype)
    return (-adv * torch.exp(logp - old_logp) * m).sum() / m.sum()


# ------------------------------------------------------------------ argument names and calls


def test_trainer_argument_names_are_recognised_and_called_by_keyword():
    names = resolve_names(verl_vanilla)
    assert names == {"logp": "log_prob", "old_logp": "old_log_prob", "adv": "advantages", "mask": "response_mask"}
    assert resolve_names(trl_grpo)["mask"] == "completion_mask"
    assert resolve_names(k3_float32)["adv"] == NOT_TAKEN  # a KL penalty takes no advantages
    assert resolve_names(token_sum_global) == {"global_tokens": "num_items_in_batch"}  # positional tensors
    ordinary = lambda logp, old_logp, adv, mask: (logp * mask).sum()  # noqa: E731
    assert resolve_names(ordinary) == {}
    custom = lambda a, b, c, d: (a * d).sum()  # noqa: E731
    assert resolve_names(custom, {"logp": "a", "old_logp": "b", "adv": "c", "mask": "d"})["logp"] == "a"
    with pytest.raises(UsageError, match="has no parameter 'zzz'"):
        resolve_names(custom, {"logp": "zzz"})
    with pytest.raises(UsageError, match="not an input of pgverify"):
        resolve_names(custom, {"reward": "a"})
    with pytest.raises(UsageError, match="wrong signature: cannot tell which parameter receives adv, mask"):
        resolve_names(lambda log_prob, old_log_prob: log_prob.sum())


def test_the_feed_casts_masks_dtypes_and_advantage_shapes_as_asked():
    seen = {}

    def spy(logp, old_logp, adv, mask):
        seen.update(logp=logp.dtype, old=old_logp.requires_grad, adv=tuple(adv.shape), mask=mask.dtype)
        return (logp * mask.to(logp.dtype)).sum()

    b = Batch(*(torch.full((2, 3), -0.5, dtype=torch.float64) for _ in range(3)), torch.ones(2, 3,
              dtype=torch.float64), 2)
    for feed, expected in ((Feed(), (torch.float64, False, (2, 3), torch.bool)),
                           (Feed(dtype=torch.bfloat16, mask_dtype="int", adv_shape="sequence"),
                            (torch.bfloat16, False, (2,), torch.int64)),
                           (Feed(dtype=torch.float32, mask_dtype="float"), (torch.float32, False, (2, 3), torch.float32))):
        _, w = evaluate(adapt(spy, feed), b)
        assert (seen["logp"], seen["old"], seen["adv"], seen["mask"]) == expected
        assert w.dtype == torch.float64  # weights come back in float64 through the cast
    with pytest.raises(ValueError, match="mask_dtype='half' is invalid"):
        Feed(mask_dtype="half")


# ------------------------------------------------------------------ no false alarms on trainer code


def test_an_undetached_trainer_loss_passes_by_default_and_fails_only_the_strict_contract():
    spec = make_spec("ppo_clip", group_size=2)
    report = run_checks(verl_vanilla, spec=spec, kinds=("contract", "spec", "property"), **FAST)
    assert report.passed, report.card()
    assert "contract: old_logp and adv are constants (zero gradient)" not in [r.name for r in report.results]

    def detach_nothing(logp, old_logp, adv, mask):  # gradient would leak into old_logp and adv
        return (-adv * torch.exp(logp - old_logp) * mask.to(logp.dtype)).sum() / mask.sum()

    strict = run_checks(detach_nothing, kinds=("contract",), feed=Feed(strict_constants=True), **FAST)
    assert strict.result("contract: old_logp and adv are constants (zero gradient)").passed is False


def test_per_sequence_advantages_and_int_masks_check_against_the_registry():
    spec = make_spec("ppo_clip", {"agg": "seq-mean-token-mean"}, group_size=2)
    feed = Feed(names=resolve_names(trl_grpo), adv_shape="sequence", mask_dtype="int")
    assert run_checks(trl_grpo, spec=spec, kinds=("contract", "spec"), feed=feed, **FAST).passed


def test_a_plus_1e8_denominator_is_identified_with_its_epsilon():
    (found, _) = scale_pattern(adapt(seq_mean_with_eps, Feed()), LAYOUT)
    assert found.data["aggregation"] == "seq-mean-token-mean"
    assert found.data["epsilon"] == pytest.approx(1e-8, rel=0.05) and "ε ≈ 1e-08" in found.detail

    def seq_mean_with_big_eps(logp, old_logp, adv, mask):  # ε = 0.1 is a different aggregation
        m = mask.to(logp.dtype)
        return ((-adv * torch.exp(logp - old_logp) * m).sum(-1) / (m.sum(-1) + 0.1)).mean()

    (other, _) = scale_pattern(adapt(seq_mean_with_big_eps, Feed()), LAYOUT)
    assert other.data["aggregation"] is None and "matches no registered aggregation" in other.detail


def test_a_float32_internal_kl_is_checkable_in_float32_and_flagged_at_float64_precision():
    spec = make_spec("kl", {"agg": "seq-mean-token-mean"}, group_size=2)
    kinds = ("contract", "spec", "property")
    in32 = run_checks(k3_float32, spec=spec, kinds=kinds, feed=Feed(dtype=torch.float32,
                                                                     names=resolve_names(k3_float32)), **FAST)
    assert in32.passed, in32.card()
    in64 = run_checks(k3_float32, spec=spec, kinds=("contract", "spec"), feed=Feed(names=resolve_names(k3_float32)),
                      **FAST)
    assert in64.result("spec: gradient weights equal kl's").passed is False  # float32 error > 1e-6 rtol
    assert "ref_logp" in in64.result("spec: gradient weights equal kl's").detail  # a penalty's reference policy


def test_bfloat16_inputs_pass_a_correct_loss_and_still_catch_a_wrong_clip():
    spec = make_spec("ppo_clip", {"agg": "seq-mean-token-mean"}, group_size=2)
    feed = Feed(dtype=torch.bfloat16, names=resolve_names(trl_grpo), adv_shape="sequence")
    assert run_checks(trl_grpo, spec=spec, kinds=("contract", "spec"), feed=feed, **FAST).passed
    wrong = bind_params(trl_grpo, {"epsilon": 0.28})
    report = run_checks(wrong, spec=spec, kinds=("contract", "spec"), feed=feed, **FAST)
    assert report.result("spec: zero-weight regions and ratio bounds equal ppo_clip's").passed is False


# ------------------------------------------------------------------ non-determinism


@pytest.mark.parametrize("seed", range(4))
def test_a_loss_using_the_global_rng_is_reported_non_deterministic_at_every_seed(seed):
    report = run_checks(draws_from_global_rng, kinds=("contract", "property"), layout=LAYOUT, examples=20, seed=seed)
    determinism = report.result("contract: deterministic (same inputs, same loss and weights)")
    assert determinism.passed is False and "global RNG" in determinism.detail
    assert not report.passed


def test_a_deterministic_loss_passes_the_determinism_check():
    report = run_checks(seq_mean_with_eps, kinds=("contract",), **FAST)
    assert report.result("contract: deterministic (same inputs, same loss and weights)").passed


def test_a_stateful_loss_is_non_deterministic_even_with_a_fixed_rng():
    calls = []

    def stateful(logp, old_logp, adv, mask):
        calls.append(1)
        return (-adv * logp * mask.to(logp.dtype)).sum() * (1 + 1e-3 * len(calls))

    report = run_checks(stateful, kinds=("contract",), **FAST)
    detail = report.result("contract: deterministic (same inputs, same loss and weights)").detail
    assert "seeded alike differ" in detail


# ------------------------------------------------------------------ micro-batches


def test_microbatch_property_passes_a_global_normaliser_and_fails_a_local_one():
    layout = Layout(group_size=2, max_groups=3, max_width=4)
    good = adapt(token_sum_global, Feed(names=resolve_names(token_sum_global)))
    bad = adapt(token_sum_local, Feed(names=resolve_names(token_sum_local)))
    assert check_microbatch(good, layout, examples=20, seed=0).passed
    failed = check_microbatch(bad, layout, examples=20, seed=0)
    assert failed.passed is False and "micro-batch" in failed.detail


def test_the_runner_runs_the_microbatch_property_only_for_losses_with_normalisers():
    with_norm = run_checks(token_sum_local, kinds=("contract", "property", "profile"), profile_table=False, **FAST)
    assert with_norm.result("micro-batches sum to the batch").passed is False
    without = run_checks(seq_mean_with_eps, kinds=("property", "profile"), profile_table=False, **FAST)
    assert without.result("micro-batches sum to the batch").kind == "profile"


# ------------------------------------------------------------------ configs


def test_dotted_params_build_a_config_namespace_or_use_a_factory():
    params = parse_assignments("--param", ["config.clip_ratio_low=0.2", "config.clip_ratio_high=0.28"], dotted=True)
    assert params == {"config": {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28}}
    bound = bind_params(verl_vanilla, params)
    assert isinstance(bound.keywords["config"], types.SimpleNamespace)
    spec = make_spec("ppo_clip", {"eps_high": 0.28}, group_size=2)
    assert run_checks(bound, spec=spec, kinds=("contract", "spec"), **FAST).passed

    made = []

    def factory(**fields):
        made.append(fields)
        return types.SimpleNamespace(**fields)

    bind_params(verl_vanilla, params, {"config": factory})
    assert made == [{"clip_ratio_low": 0.2, "clip_ratio_high": 0.28}]
    with pytest.raises(UsageError, match="given twice"):
        parse_assignments("--param", ["a.b=1", "a.b=2"], dotted=True)
    with pytest.raises(UsageError, match="already set to a value"):
        parse_assignments("--param", ["a=1", "a.b=2"], dotted=True)
    with pytest.raises(UsageError, match="factory config.*raised TypeError"):
        bind_params(verl_vanilla, params, {"config": lambda only: only})


def test_a_param_of_the_wrong_type_is_a_usage_error():
    with pytest.raises(UsageError, match="--param epsilon='abc' is a str; allowed: a float"):
        bind_params(trl_grpo, {"epsilon": "abc"})


# ------------------------------------------------------------------ KL penalties, as penalties


def trl_is_corrected_kl(per_token_logps, ref_per_token_logps, old_per_token_logps, completion_mask):
    """TRL's use_bias_correction_kl: k3 times coef_1 = π/π_old, coef_1 not detached."""
    x = ref_per_token_logps - per_token_logps
    k3 = (torch.exp(x) - x - 1) * torch.exp(per_token_logps - old_per_token_logps)
    m = completion_mask.to(k3.dtype)
    return ((k3 * m).sum(-1) / m.sum(-1).clamp(min=1)).mean()


def trl_kl_coef_detached(per_token_logps, ref_per_token_logps, old_per_token_logps, completion_mask):
    """The bug: coef_1 detached, so the score-function term ρ·k3·∇ℓ is lost (biased gradient)."""
    x = ref_per_token_logps - per_token_logps
    k3 = (torch.exp(x) - x - 1) * torch.exp(per_token_logps - old_per_token_logps).detach()
    m = completion_mask.to(k3.dtype)
    return ((k3 * m).sum(-1) / m.sum(-1).clamp(min=1)).mean()


def test_an_is_corrected_kl_gets_the_sampling_policy_as_its_third_tensor():
    spec = make_spec("kl", {"agg": "seq-mean-token-mean", "is_correction": True}, group_size=2)
    names = resolve_names(trl_is_corrected_kl, aliases=aliases_for(make_spec("kl")))
    assert names["old_logp"] == "ref_per_token_logps" and names["rollout_logp"] == "old_per_token_logps"
    good = run_checks(trl_is_corrected_kl, spec=spec, kinds=("contract", "spec", "property"), **FAST)
    assert good.passed, good.card()
    bad = run_checks(trl_kl_coef_detached, spec=spec, kinds=("contract", "spec"), **FAST)
    failed = bad.result("spec: gradient weights equal kl's")
    assert failed.passed is False and "sampling_logp" in failed.detail and "π/π_ref" in failed.detail


def test_a_penalty_region_map_is_over_pi_over_pi_ref_without_advantage_signs():
    spec = make_spec("kl", group_size=2)
    report = run_checks(k3_float32, spec=spec, kinds=("contract", "spec"), feed=Feed(
        dtype=torch.float32, names=resolve_names(k3_float32, aliases=aliases_for(spec))), **FAST)
    regions = report.result("spec: zero-weight regions and ratio bounds equal kl's").detail
    assert "π/π_ref" in regions and "A > 0" not in regions and "A < 0" not in regions and "w/A" not in regions


# ------------------------------------------------------------------ an objective composed with a KL penalty


def trl_grpo_with_kl(per_token_logps, old_per_token_logps, ref_per_token_logps, advantages, completion_mask,
                     beta=0.04):
    """TRL's GRPO loss with beta > 0: the clipped surrogate plus β·k3 to the reference policy."""
    coef_1 = torch.exp(per_token_logps - old_per_token_logps)
    coef_2 = torch.clamp(coef_1, 0.8, 1.2)
    per_token = -torch.min(coef_1 * advantages.unsqueeze(1), coef_2 * advantages.unsqueeze(1))
    x = ref_per_token_logps - per_token_logps
    per_token = per_token + beta * (torch.exp(x) - x - 1)
    m = completion_mask.to(per_token.dtype)
    return ((per_token * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean()


def test_an_objective_plus_a_kl_to_the_reference_is_checked_as_a_composition():
    params = {"agg": "seq-mean-token-mean", "kl.coef": 0.04, "kl.estimator": "k3", "kl.agg": "seq-mean-token-mean"}
    spec = make_spec("ppo_clip+kl", params, group_size=2)
    assert spec.inputs == ("rollout_logp",) and spec.labels[2] == "ref_logp"
    feed = Feed(names=resolve_names(trl_grpo_with_kl, aliases=aliases_for(spec)), adv_shape="sequence")
    assert feed.names["rollout_logp"] == "ref_per_token_logps" and feed.names["old_logp"] == "old_per_token_logps"
    good = run_checks(trl_grpo_with_kl, spec=spec, feed=feed, kinds=("contract", "spec", "property", "profile"),
                      profile_table=False, **FAST)
    assert good.passed, good.card()
    assert good.result("zero advantage, zero weight").kind == "profile"  # exempt by design, with the reason
    wrong_beta = bind_params(trl_grpo_with_kl, {"beta": 0.4})
    bad = run_checks(wrong_beta, spec=spec, feed=feed, kinds=("contract", "spec"), **FAST)
    assert bad.result("spec: gradient weights equal ppo_clip+kl's").passed is False


def test_dro_is_reinforce_plus_a_k2_penalty_to_the_old_policy():
    from tests.sims.check.correct import dro

    params = {"agg": "token-mean", "kl.coef": 0.1, "kl.estimator": "k2", "kl.agg": "token-mean", "kl.reference": "old"}
    spec = make_spec("reinforce+kl", params, group_size=2)
    assert run_checks(dro, spec=spec, kinds=("contract", "spec"), **FAST).passed
    with pytest.raises(UsageError, match="needs --spec-param kl.coef"):
        make_spec("reinforce+kl", {}, group_size=2)
    with pytest.raises(UsageError, match="kl.reference='ref' is invalid"):
        make_spec("reinforce+kl", {"kl.coef": 1, "kl.reference": "ref"}, group_size=2)
    with pytest.raises(UsageError, match=re.escape("--spec 'reinforce+k2' is unknown")):
        make_spec("reinforce+k2", {}, group_size=2)
