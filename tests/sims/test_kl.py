"""KL estimators: values, gradient factors, the in-reward form, and their expected gradients on a
categorical policy computed exactly by enumeration."""

from __future__ import annotations

import math

import pytest
import torch

from sims.kl import KLConfig, kl_in_reward, kl_penalty, kl_values

X = torch.tensor([[0.0, 1.0, -1.0]], dtype=torch.float64)  # x = logp - ref_logp


@pytest.mark.parametrize(("estimator", "expected"), [
    ("k1", [0.0, 1.0, -1.0]),
    ("k2", [0.0, 0.5, 0.5]),
    ("k3", [0.0, math.exp(-1) - 1 + 1, math.e - 1 - 1]),  # e^{-x} - 1 + x
])
def test_kl_values_reference(estimator, expected):
    got = kl_values(X - 1.0, torch.full_like(X, -1.0), estimator=estimator)
    torch.testing.assert_close(got, torch.tensor([expected], dtype=torch.float64), atol=1e-12, rtol=0)


@pytest.mark.parametrize(("estimator", "factor"), [
    ("k1", lambda x: torch.ones_like(x)),
    ("k2", lambda x: x),
    ("k3", lambda x: 1 - torch.exp(-x)),
])
def test_kl_penalty_gradient_factor(estimator, factor):
    # token-sum aggregation: ∂loss/∂ℓ_t = k'(x_t)
    ref = torch.full_like(X, -2.0)
    logp = (X + ref).requires_grad_(True)
    loss, diag = kl_penalty(logp, ref, torch.ones_like(X), config=KLConfig(estimator=estimator, agg="token-sum"))
    (grad,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(grad, factor(X), atol=1e-12, rtol=0)
    assert diag["kl_k1"].item() == pytest.approx(0.0)
    assert diag["kl_k2"].item() == pytest.approx(1 / 3)


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_is_corrected_kl_penalty_gradient(estimator):
    # token-sum, samples from π_old: L = Σ ρ·k(x) with ρ = e^{ℓ - ℓ_old} not detached, so
    # ∂L/∂ℓ = ρ·(k(x) + k'(x)); for k3, k + k' = x (the k1 value): ∇(ρ·k3) = ρ·k1·∇ℓ
    ref = torch.full_like(X, -2.0)
    logp = (X + ref).requires_grad_(True)
    old = logp.detach() - 0.25
    cfg = KLConfig(estimator=estimator, agg="token-sum", is_correction=True)
    loss, _ = kl_penalty(logp, ref, torch.ones_like(X), config=cfg, old_logp=old)
    (grad,) = torch.autograd.grad(loss, logp)
    rho = torch.exp(torch.tensor(0.25, dtype=X.dtype))
    k = kl_values(X, torch.zeros_like(X), estimator=estimator)
    dk = {"k1": torch.ones_like(X), "k2": X, "k3": 1 - torch.exp(-X)}[estimator]
    torch.testing.assert_close(grad, rho * (k + dk), atol=1e-12, rtol=0)
    if estimator == "k3":
        torch.testing.assert_close(grad, rho * X, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="old_logp=None is invalid with is_correction=True"):
        kl_penalty(logp, ref, torch.ones_like(X), config=cfg)


def test_kl_in_reward_reference():
    # k3 of old - ref = [0, 1, -1] summed over the 2 valid tokens of each row; β = 0.5
    old = torch.tensor([[-1.0, -1.0], [-2.0, -3.0]], dtype=torch.float64)
    ref = torch.tensor([[-1.0, -2.0], [-1.0, -3.0]], dtype=torch.float64)
    k3 = lambda x: math.exp(-x) - 1 + x  # noqa: E731
    got = kl_in_reward(torch.tensor([[1.0, 0.0]], dtype=torch.float64), old, ref, torch.ones(2, 2),
                       estimator="k3", beta=0.5)
    torch.testing.assert_close(got, torch.tensor([[1.0 - 0.5 * (k3(0) + k3(1)), -0.5 * (k3(-1) + k3(0))]],
                                                 dtype=torch.float64), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="beta=-0.1 is invalid"):
        kl_in_reward(torch.ones(2), old, ref, torch.ones(2, 2), estimator="k1", beta=-0.1)
    with pytest.raises(ValueError, match="estimator='k4' is invalid"):
        kl_in_reward(torch.ones(2), old, ref, torch.ones(2, 2), estimator="k4", beta=0.1)


def _expected_grad(estimator, theta, log_p):
    """E_{a~q}[∇_θ k(log q_a - log p_a)] by enumerating the categorical q = softmax(θ)."""
    theta = theta.clone().requires_grad_(True)
    log_q = torch.log_softmax(theta, -1)
    q = log_q.exp().detach()
    per_action = kl_values(log_q, log_p, estimator=estimator)  # (V,)
    total = torch.zeros((), dtype=theta.dtype)
    for a in range(theta.shape[0]):
        (g,) = torch.autograd.grad(per_action[a], theta, retain_graph=True)
        total = total + q[a] * g
    return total


def _grad_kl(theta, log_p, forward):
    theta = theta.clone().requires_grad_(True)
    log_q = torch.log_softmax(theta, -1)
    kl = (log_p.exp() * (log_p - log_q)).sum() if forward else (log_q.exp() * (log_q - log_p)).sum()
    (g,) = torch.autograd.grad(kl, theta)
    return g


def test_expected_kl_gradients_on_a_categorical():
    # Schulman 2020 / papers.md §8: E_q[∇k1] = 0, E_q[∇k2] = ∇KL(q‖p), E_q[∇k3] = ∇KL(p‖q).
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(5, generator=gen, dtype=torch.float64)
    log_p = torch.log_softmax(torch.randn(5, generator=gen, dtype=torch.float64), -1)
    reverse, forward = _grad_kl(theta, log_p, False), _grad_kl(theta, log_p, True)
    torch.testing.assert_close(_expected_grad("k1", theta, log_p), torch.zeros(5, dtype=torch.float64),
                               atol=1e-12, rtol=0)
    torch.testing.assert_close(_expected_grad("k2", theta, log_p), reverse, atol=1e-12, rtol=0)
    torch.testing.assert_close(_expected_grad("k3", theta, log_p), forward, atol=1e-12, rtol=0)
    # power: k3's expected gradient is not the reverse-KL gradient
    assert not torch.allclose(_expected_grad("k3", theta, log_p), reverse, atol=1e-3)
