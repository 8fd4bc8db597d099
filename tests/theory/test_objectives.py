"""Exact (or random-point) checks of each objective's derived weight against the formula its
paper states, and of the identities between objectives."""

from __future__ import annotations

import math
import random

import sympy as sp

from theory import cispo, gspo, ppo_clip, reinforce, sapo
from theory._core import ADV, RHO, Sequence, derive_weights, ratio_weight, sigmoid

E_L, E_H, C = sp.symbols("eps_low eps_high C", positive=True)
A_POS = sp.Symbol("a", positive=True)


def test_reinforce_weight_is_advantage():
    w = ratio_weight(reinforce.REINFORCE, {"is_level": None, "is_mode": "truncate", "is_cap": C})
    assert sp.simplify(w - ADV) == 0


def test_tis_and_mis_weights():
    tis = ratio_weight(reinforce.REINFORCE, {"is_level": "token", "is_mode": "truncate", "is_cap": C})
    assert sp.simplify(tis - ADV * sp.Min(RHO, C)) == 0
    mis = ratio_weight(reinforce.REINFORCE, {"is_level": "token", "is_mode": "mask", "is_cap": C})
    assert sp.simplify(mis - ADV * sp.Piecewise((RHO, RHO <= C), (0, True))) == 0


def test_seq_is_weight_is_sequence_ratio_times_length():
    # broadcast over n tokens: w_t = n·min(R, C)·Ā; untruncated n·R·Ā
    seq = Sequence.make(3)
    (w, *_) = derive_weights(reinforce.SEQ_IS, seq, {"cap": None})
    expected = 3 * sp.exp(seq.log_seq_ratio) * seq.mean_adv
    assert sp.simplify(w - expected) == 0


def test_cispo_weight_is_clipped_ratio_times_advantage():
    w = ratio_weight(cispo.CISPO, {"eps_low": E_L, "eps_high": E_H})
    assert sp.simplify(w - ADV * sp.Min(sp.Max(RHO, 1 - E_L), 1 + E_H)) == 0
    assert cispo.on_policy_minus_reinforce() == 0


def test_sgs_cispo_weight_with_stop_gradient():
    seq = Sequence.make(1)
    k, tau = sp.symbols("k tau", positive=True)
    (w,) = derive_weights(cispo.SGS_CISPO, seq, {"eps_low": None, "eps_high": E_H, "k": k, "tau": tau,
                                                 "p_mode": "token", "stop_grad_s": True})
    a, l, lo = seq.adv[0], seq.logp[0], seq.old_logp[0]
    s = sp.Piecewise((1 - sigmoid(k * (sp.exp(l) - tau)), a > 0), (1, True))
    assert sp.simplify(w - s * sp.Min(sp.exp(l - lo), 1 + E_H) * a) == 0


def test_sapo_weight_is_soft_gate():
    tp, tn = sp.symbols("tau_pos tau_neg", positive=True)
    w = ratio_weight(sapo.SAPO, {"tau_pos": tp, "tau_neg": tn}).subs(ADV, A_POS)
    sig = sigmoid(tp * (RHO - 1))
    # sympy writes the derived weight as A·ρ/cosh²(τ(ρ-1)/2), which is 4σ(1-σ)·A·ρ
    assert sp.simplify((w - A_POS * RHO * 4 * sig * (1 - sig)).rewrite(sp.exp)) == 0


def test_ppo_weight_at_random_points():
    # A·ρ·1[not clipped]: zero iff (A > 0, ρ > 1 + ε_h) or (A < 0, ρ < 1 - ε_l)
    w = ratio_weight(ppo_clip.PPO_CLIP, {"eps_low": E_L, "eps_high": E_H, "dual_clip_c": None})
    fn = sp.lambdify((RHO, ADV, E_L, E_H), w, modules="sympy")
    rng = random.Random(0)
    for _ in range(200):
        rho, a = rng.uniform(0.05, 3.0), rng.uniform(-3, 3)
        el, eh = rng.uniform(0.05, 0.9), rng.uniform(0.05, 2.0)
        clipped = (a > 0 and rho > 1 + eh) or (a < 0 and rho < 1 - el)
        expected = 0.0 if clipped else a * rho
        assert math.isclose(float(fn(rho, a, el, eh)), expected, rel_tol=1e-12, abs_tol=1e-15)


def test_gspo_identities():
    assert gspo.grad_seq_ratio(4) == [0, 0, 0, 0]
    assert gspo.gspo_token_minus_gspo(3) == [0, 0, 0]
    assert gspo.gmpo_minus_gspo_unclipped(4) == (0, 0)
    assert gspo.on_policy_gspo_minus_grpo(3) == [0, 0, 0]


def test_gspo_token_differs_from_gspo_for_token_advantages():
    # power: the equivalence needs A_t = A; with distinct advantages the weights differ
    seq = Sequence.make(2)
    p = {"eps_low": None, "eps_high": E_H}
    w_seq = derive_weights(gspo.GSPO, seq, p)
    w_tok = derive_weights(gspo.GSPO_TOKEN, seq, p)
    point = {seq.logp[0]: -1, seq.logp[1]: -2, seq.old_logp[0]: -1, seq.old_logp[1]: -2,
             seq.adv[0]: 1, seq.adv[1]: 3, E_H: 10}
    assert sp.N(w_tok[0].subs(point)) != sp.N(w_seq[0].subs(point))
