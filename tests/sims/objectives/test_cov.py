"""Reference values of KL-Cov and Clip-Cov on the literal 2x3 batch of ``reference`` (derived by
hand). These objectives are batch-coupled (no sympy twin; tests/theory skips them by name).

On the batch: mean A = (3 - 2)/5 = 0.2, mean ℓ = -5.8/5 = -1.16, so C = (A - 0.2)(ℓ + 1.16) =
[[0.128, -0.672, 0.128], [-1.032, 0.408]] (note the tie C(0,0) = C(0,2)). N = 5, token-mean.
Unclipped loss -A·ρ = [[-1, -1.5, -0.5], [2, 0.9]], ∂/∂ℓ = the same values."""

from __future__ import annotations

import math

import pytest
import torch

from sims import objectives as O
from tests.sims.objectives.reference import batch, check

C = [[0.128, -0.672, 0.128], [-1.032, 0.408, 0.0]]
PEN = 0.1 * math.log(10 / 9)  # κ·|ℓ - ℓ_old| at (1, 1), where ℓ - ℓ_old = ln 0.9 < 0


def test_the_covariance_is_as_stated():
    logp, _, adv, mask = batch()
    torch.testing.assert_close(O.token_covariance(logp, adv, mask) * mask,
                               torch.tensor(C, dtype=torch.float64), atol=1e-12, rtol=0)


def test_kl_cov_reference_values():
    # k = max(1, ⌊2e-4·5⌋) = 1: the largest C is (1, 1) = 0.408; its loss gains κ|ln 0.9|
    # loss = (-1 - 1.5 - 0.5 + 2 + 0.9 + PEN)/5; ∂(1,1) = 0.9 + κ·sign(ln 0.9) = 0.8
    diag = check(O.kl_cov, O.KlCovConfig(), (-0.1 + PEN) / 5, [[-0.2, -0.3, -0.1], [0.4, 0.16, 0.0]])
    assert diag["cov_selected_frac"].item() == pytest.approx(1 / 5)


def test_kl_cov_ties_go_to_the_earlier_token():
    # k = ⌊0.4·5⌋ = 2: (1, 1), then the tie C(0,0) = C(0,2) = 0.128 goes to (0, 0), whose
    # |ℓ - ℓ_old| = 0 (penalty 0, gradient sign(0) = 0); (0, 2) would have moved ∂ from -0.1 to -0.12
    diag = check(O.kl_cov, O.KlCovConfig(kl_cov_ratio=0.4), (-0.1 + PEN) / 5,
                 [[-0.2, -0.3, -0.1], [0.4, 0.16, 0.0]])
    assert diag["cov_selected_frac"].item() == pytest.approx(2 / 5)


def test_kl_cov_coefficient_scales_the_penalty():
    # κ = 1: ∂(1,1) = 0.9 - 1 = -0.1, /5 = -0.02
    check(O.kl_cov, O.KlCovConfig(ppo_kl_coef=1.0), (-0.1 + 10 * PEN) / 5,
          [[-0.2, -0.3, -0.1], [0.4, -0.02, 0.0]])


# ------------------------------------------------------------------ Clip-Cov

WINDOW = dict(clip_cov_lb=0.1, clip_cov_ub=0.5)  # candidates: (0,0), (0,2), (1,1); (0,1) is PPO-clipped
PPO = [[-1.0, -1.2, -0.5], [2.0, 0.9]]  # PPO clip 0.8..1.2 per-token loss; ∂ = [[-1, 0, -0.5], [2, 0.9]]
PPO_GRAD = [[-1.0, 0.0, -0.5], [2.0, 0.9]]
CANDIDATES = [(0, 0), (0, 2), (1, 1)]  # row-major order, as torch.nonzero lists them


def _expected(selected):
    loss = sum(PPO[i][t] for i in range(2) for t in range(len(PPO[i])) if (i, t) not in selected) / 5
    grad = [[0.0 if (i, t) in selected else PPO_GRAD[i][t] / 5 for t in range(3 if i == 0 else 2)]
            for i in range(2)]
    grad[1].append(0.0)
    return loss, grad


def test_clip_cov_default_window_has_no_candidate_and_is_ppo():
    # lb = 1 > every C: nothing detached, and no random draw: the global RNG is untouched
    state = torch.random.get_rng_state()
    diag = check(O.clip_cov, O.ClipCovConfig(), 0.04, [[-0.2, 0.0, -0.1], [0.4, 0.18, 0.0]])
    assert torch.equal(torch.random.get_rng_state(), state)
    assert diag["cov_selected_frac"].item() == 0.0 and diag["clip_frac"].item() == pytest.approx(1 / 5)


def test_clip_cov_all_candidates_reference_values():
    # (0,0), (0,2), (1,1) detached: loss = (-1.2 + 2)/5 = 0.16; only (1, 0) keeps its gradient 2/5
    loss, grad = _expected(set(CANDIDATES))
    assert loss == pytest.approx(0.16)
    diag = check(O.clip_cov, O.ClipCovConfig(**WINDOW, selection="all_candidates"), loss, grad)
    assert diag["cov_selected_frac"].item() == pytest.approx(3 / 5)


@pytest.mark.parametrize("ratio", [2e-4, 0.4])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_clip_cov_random_draw_is_verls_randperm_on_the_global_rng(ratio, seed):
    # verl: idx = nonzero(candidates); perm = torch.randperm(len(idx)); keep idx[perm[:k]],
    # k = max(1, ⌊ratio·5⌋) = 1 or 2. Same global seed -> same tokens.
    k = max(1, int(ratio * 5))
    torch.manual_seed(seed)
    selected = {CANDIDATES[j] for j in torch.randperm(3)[:k].tolist()}
    torch.manual_seed(seed)
    check(O.clip_cov, O.ClipCovConfig(**WINDOW, clip_cov_ratio=ratio), *_expected(selected))


def test_clip_cov_random_with_k_at_least_the_candidates_is_all_candidates():
    torch.manual_seed(5)
    check(O.clip_cov, O.ClipCovConfig(**WINDOW, clip_cov_ratio=1.0), *_expected(set(CANDIDATES)))


@pytest.mark.parametrize(("kw", "field"), [
    (dict(clip_cov_ratio=0.0), "clip_cov_ratio"), (dict(clip_cov_ratio=1.5), "clip_cov_ratio"),
    (dict(clip_cov_lb=5.0), "clip_cov_lb"), (dict(selection="topk"), "selection"),
    (dict(eps_high=0.0), "eps_high"),
])
def test_clip_cov_config_rejects_bad_values(kw, field):
    with pytest.raises(ValueError, match=field):
        O.ClipCovConfig(**kw)


@pytest.mark.parametrize(("kw", "field"), [(dict(kl_cov_ratio=0.0), "kl_cov_ratio"),
                                           (dict(ppo_kl_coef=0.0), "ppo_kl_coef")])
def test_kl_cov_config_rejects_bad_values(kw, field):
    with pytest.raises(ValueError, match=field):
        O.KlCovConfig(**kw)
