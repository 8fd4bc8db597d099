"""The long-sequence Monte Carlo (sims.experiments._long): log-space ratios against direct float64
products, the exact squared-ratio tilt and transfer matrix against enumeration, chunking that does
not change a number, and the interval helpers."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from sims.experiments import _long
from sims.experiments.bias_variance import _SEQ, _SUM
from sims.objectives import PpoClipConfig, ReinforceConfig, SeqIsConfig

SMALL = _long.LongSetup("dependent", vocab=6, n_states=2, stay=0.9, top_prob=0.5, amplitudes=(1.0, 0.1))


def test_pair_has_the_requested_stationary_kl_for_both_setups():
    for setup in (_long.LongSetup("independent", vocab=64), dataclasses.replace(SMALL, vocab=64)):
        old, new = _long.policy_pair(setup, 0.02, 8, seed=1)
        assert _long.stationary_kl(old, new) == pytest.approx(0.02, rel=1e-9)


def test_log_space_ratio_equals_the_direct_product_in_float64():
    old, new = _long.policy_pair(SMALL, 0.05, 5, seed=0)
    log_r, log_p = _long.sequence_log_ratios(old, new, 50, seed=3)
    stream = _long.draw_seed(torch.Generator().manual_seed(3))
    tokens = old.sample_block(stream, 0, 50)
    direct = (new.log_prob(tokens).exp() / old.log_prob(tokens).exp()).prod(-1)
    assert np.allclose(np.exp(log_r), direct.numpy(), rtol=1e-12, atol=0)
    assert np.allclose(log_p, old.log_prob(tokens).sum(-1).numpy(), rtol=0, atol=1e-12)


def test_second_moment_and_tilt_equal_enumeration():
    old, new = _long.policy_pair(SMALL, 0.1, 4, seed=2)
    tokens, mask, prob = old.enumerate()
    log_r = (new.log_prob(tokens) - old.log_prob(tokens)).sum(-1)
    assert math.exp(_long.log_second_moment(old, new)) == pytest.approx(float(prob @ (2 * log_r).exp()), rel=1e-12)
    # E_old[R² F] = exp(log_const)·E_q[F/h(c(o_T))] for F = A²‖∇ log π_θ(o)‖², both sides enumerated
    reward = _long.EvenCount(2)
    a = reward(tokens, mask).reshape(-1, 1) * mask
    f = _long.score_sq_norms(new, a, tokens)
    lhs = float(prob @ ((2 * log_r).exp() * f))
    tl = _long.tilted(old, new)
    q_prob = tl.q.log_prob(tokens).sum(-1).exp()
    rhs = math.exp(tl.log_const) * float(q_prob @ (f / tl.h[tokens[:, -1] % old.n_states]))
    assert rhs == pytest.approx(lhs, rel=1e-11)
    assert float(q_prob.sum()) == pytest.approx(1.0, abs=1e-12)


def test_chunking_does_not_change_the_numbers():
    old, new = _long.policy_pair(dataclasses.replace(SMALL, vocab=16), 0.05, 12, seed=4)
    a = _long.sequence_log_ratios(old, new, 60, seed=5, tokens_per_pass=12 * 7)
    b = _long.sequence_log_ratios(old, new, 60, seed=5)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    ests = (("seq", "seq_is", SeqIsConfig(agg=_SEQ)), ("tok", "reinforce", ReinforceConfig(agg=_SUM, is_level="token")),
            ("ppo", "ppo_clip", PpoClipConfig(agg=_SUM)))
    reward = _long.median_reward(old)
    small = _long.paired_variances(old, new, reward, ests, 40, seed=6, tokens_per_pass=12)
    whole = _long.paired_variances(old, new, reward, ests, 40, seed=6)
    for label in small:
        assert np.allclose(small[label], whole[label], rtol=1e-12, atol=0)


def test_paired_variance_of_sequence_is_agrees_with_the_exact_tilt_where_both_are_reliable():
    # short T, small divergence: R is light-tailed, so the plain sample variance under π_old and the
    # tilt estimate the same tr Cov; the 99.9% interval of their log ratio must cover 0 (false-failure
    # rate 0.1% at nominal coverage; the ‖∇J‖² term's own noise is not in the interval, it is < 1% here)
    old, new = _long.policy_pair(dataclasses.replace(SMALL, vocab=16), 0.01, 3, seed=7)
    reward = _long.median_reward(old)
    seq = (("seq", "seq_is", SeqIsConfig(agg=_SEQ)),)
    batches = _long.paired_variances(old, new, reward, seq, 4000, seed=8)["seq"]
    log_c, moment = _long.seq_is_second_moment(old, new, reward, 4000, seed=9)
    grad_sq = _long.on_policy_gradient_sq(new, reward, 4000, seed=10)
    ratio = _long.log_var_ratio_vs_exact(batches, log_c, moment, grad_sq, level=0.999)
    assert ratio.low <= 0.0 <= ratio.high, ratio
    # and a 4× smaller variance must be rejected as equal
    assert not (ratio.low <= math.log(4) <= ratio.high)


def test_log_ratio_interval_and_its_halves():
    rng = np.random.default_rng(0)
    b = rng.uniform(1, 2, 20)
    e = _long.log_ratio_interval(2 * b, b)
    assert e.value == pytest.approx(math.log(2), abs=1e-12) and e.high - e.low < 1e-9  # perfectly paired
    e = _long.log_ratio_interval(rng.uniform(1, 2, 20), b)
    assert e.low < e.value < e.high and len(e.halves) == 2


def test_ess_fraction_in_log_space():
    assert _long.ess_fraction(np.zeros(10)) == pytest.approx(1.0)
    assert _long.ess_fraction(np.array([0.0, -1e4, -1e4])) == pytest.approx(1 / 3)
    assert _long.ess_fraction(np.array([800.0, 0.0])) == pytest.approx(0.5)  # no overflow at e^800


def test_closed_form_weights_equal_the_registered_objectives():
    from sims.experiments.bias_variance import default_long_estimators

    g = torch.Generator().manual_seed(0)
    old_logp = -torch.rand(40, 7, generator=g, dtype=torch.float64) * 3 - 1.5
    logp = old_logp + 0.4 * torch.randn(40, 7, generator=g, dtype=torch.float64)  # ρ across 1 ± 0.2
    logp[:10] = old_logp[:10] + 1e-4 * torch.randn(10, 7, generator=g, dtype=torch.float64)  # G inside GSPO's clip
    adv = torch.tensor([1.0, -1.0, 0.0, 2.0], dtype=torch.float64).repeat(10).reshape(-1, 1).expand(40, 7)
    mask = torch.ones(40, 7, dtype=torch.float64)
    for _, obj, cfg in default_long_estimators() + (("seq", "seq_is", SeqIsConfig(agg=_SEQ)),):
        assert _long.weight_error(obj, cfg, logp, old_logp, adv, mask) < 1e-12, obj
    # and a wrong clip is caught
    wrong = dataclasses.replace(default_long_estimators()[1][2], eps_high=0.3)
    ref = _long._weights(_long.get_objective("ppo_clip"), default_long_estimators()[1][2], logp, old_logp, adv, mask)
    assert float((_long.closed_form_weights("ppo_clip", wrong, logp, old_logp, adv) - ref).abs().max()) > 1e-3
