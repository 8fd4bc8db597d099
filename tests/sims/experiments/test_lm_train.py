"""The lockstep trainer against its per-seed references: the stacked loss against
``algorithm_loss`` seed by seed, the row weights against ``token_weights``, the fused Adam against
``torch.optim.Adam`` and ``adam_torch``, and whole lockstep training steps (the model on stacked
parameters) against the per-seed loop."""

from __future__ import annotations

import pytest
import torch

from policies.lm_tasks import ContainsTask, SumModTask
from policies.transformer import LMShape, init_params
from sims.aggregation import token_weights
from sims.algorithms import ALGORITHMS, algorithm_loss
from sims.experiments import _lm_train as L
from sims.experiments._common import seeded
from sims.experiments.dynamics import ABLATION, algorithms

ALGS = algorithms()
NAMES = ["grpo", "drgrpo", "dapo", "gspo", "cispo", "sgs_cispo[sequence]", "sgs_cispo[token, no sg]",
         "sgs_cispo[geometric]", ABLATION]


def _batch(seed=0, s=3, g=3, k=4, t=5):
    gen = torch.Generator().manual_seed(seed)
    old = -torch.rand(s, g * k, t, generator=gen, dtype=torch.float64) * 2
    logp = (old + 0.3 * torch.randn(s, g * k, t, generator=gen, dtype=torch.float64)).clamp(max=-1e-3)
    lengths = torch.randint(1, t + 1, (s, g * k), generator=gen)
    mask = (torch.arange(t) < lengths[..., None]).to(torch.float64)
    rewards = (torch.rand(s, g, k, generator=gen) < 0.5).to(torch.float64)
    rewards[0, 1] = 1.0  # an all-correct group (dropped by dynamic sampling)
    rewards[2] = 0.0  # a seed whose every group is dropped
    ref = old - 0.1
    return logp, old, rewards, mask, ref


@pytest.mark.parametrize("name", NAMES)
def test_stacked_loss_equals_algorithm_loss_seed_by_seed(name):
    alg = ALGS[name]
    logp, old, rewards, mask, ref = _batch()
    leaf = logp.clone().requires_grad_(True)
    loss, active = L.stacked_loss(alg, leaf, old, rewards, mask, ref_logp=ref, max_len=5)
    (grad,) = torch.autograd.grad(loss, leaf)
    total, expected_grad, expected_active = 0.0, torch.zeros_like(logp), []
    for s in range(3):
        x = logp[s].clone().requires_grad_(True)
        try:
            ls, _ = algorithm_loss(alg, x, old[s], rewards[s], mask[s], ref_logp=ref[s], max_len=5)
        except ValueError:  # every group dropped
            expected_active.append(False)
            continue
        expected_active.append(True)
        total = total + float(ls.detach())
        expected_grad[s] = torch.autograd.grad(ls, x)[0]
    assert active.tolist() == expected_active
    assert float(loss.detach()) == pytest.approx(total, abs=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm",
                                 "prompt-token-mean", "token-sum"])
def test_row_weights_are_token_weights_of_the_kept_rows(agg):
    _, _, _, mask, _ = _batch()
    keep = torch.tensor([[True, False, True], [True, True, True], [False, True, False]]).repeat_interleave(4, -1)
    c = L.row_weights(mask, keep, agg=agg, group_size=4, max_len=5)
    for s in range(3):
        expected = torch.zeros_like(mask[s])
        expected[keep[s]] = token_weights(mask[s][keep[s]], agg=agg, group_size=4, max_len=5)
        torch.testing.assert_close(c[s][:, None] * mask[s], expected, rtol=0, atol=1e-15)


def test_unsupported_compositions_are_refused():
    with pytest.raises(ValueError, match="objective"):
        L.check_stackable(ALGORITHMS["rloo"])  # reinforce: not in STACKED_OBJECTIVES
    with pytest.raises(ValueError, match="optimiser"):
        L.Optimiser("rmsprop")


def test_vectorised_adam_equals_torch_adam_and_inactive_seeds_do_not_move():
    gen = torch.Generator().manual_seed(3)
    params = {"a": torch.randn(3, 2, 4, generator=gen, dtype=torch.float64), "b": torch.randn(3, 5, generator=gen,
                                                                                            dtype=torch.float64)}
    opt = L.Optimiser("adam", 0.05)
    state = L.init_state(opt, params)
    refs = [{k: v[s].clone().requires_grad_(True) for k, v in params.items()} for s in range(3)]
    torch_opts = [opt.torch_optimizer(list(r.values())) for r in refs]
    flat = L.flatten(params)
    for step in range(5):
        grads = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in params.items()}
        active = torch.tensor([True, step % 2 == 0, False]) if step < 4 else torch.ones(3, dtype=torch.bool)
        flat, state = L.optimiser_step(opt, flat, L.flatten(grads), state, active)
        for s in range(3):
            if active[s]:
                for k in refs[s]:
                    refs[s][k].grad = grads[k][s].clone()
                torch_opts[s].step()
    out = L.unflatten(flat, params)
    for s in range(3):
        for k in params:
            torch.testing.assert_close(out[k][s], refs[s][k].detach(), rtol=0, atol=1e-14)
    assert state["t"].tolist() == [5, 3, 1]


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-15), (torch.float32, 1e-6)])
def test_fused_adam_kernel_equals_its_tensor_reference(dtype, atol):
    gen = torch.Generator().manual_seed(5)
    params, grads, m = (torch.randn(4, 50, generator=gen, dtype=dtype) for _ in range(3))
    v = torch.rand(4, 50, generator=gen, dtype=dtype)
    state = {"m": m, "v": v, "t": torch.tensor([0, 3, 7, 1])}
    active = torch.tensor([True, False, True, True])
    opt = L.Optimiser("adam", 0.01)
    new, out = L.optimiser_step(opt, params, grads, state, active)
    t = (state["t"] + active.long()).clamp(min=1).double()
    ref = L.adam_torch(params, grads, m, v, opt.lr / (1 - opt.betas[0] ** t), (1 - opt.betas[1] ** t).sqrt(), active,
                       opt)
    for a, b in zip((new, out["m"], out["v"]), ref):
        torch.testing.assert_close(a, b, rtol=0, atol=atol)
    assert torch.equal(new[1], params[1]) and torch.equal(out["v"][1], v[1])  # the inactive seed keeps all
    assert out["t"].tolist() == [1, 3, 8, 2]


def test_flatten_and_unflatten_are_inverse_views():
    gen = torch.Generator().manual_seed(4)
    params = {"a": torch.randn(2, 3, 4, generator=gen), "b": torch.randn(2, 5, generator=gen)}
    flat = L.flatten(params)
    assert flat.shape == (2, 17)
    torch.testing.assert_close(flat[1, :12], params["a"][1].reshape(-1), rtol=0, atol=0)
    views = L.unflatten(flat, params)
    assert all(torch.equal(views[k], params[k]) for k in params)
    flat[0, 12] = 7.0  # views, not copies
    assert views["b"][0, 0] == 7.0


@pytest.mark.parametrize("name, optimiser", [("dapo", "adam"), ("sgs_cispo[sequence]", "adam"), ("grpo", "sgd")])
def test_lockstep_training_equals_the_per_seed_loop(name, optimiser):
    task = ContainsTask(vocab=6, horizon=3, n_prompts=3, seed=0)
    shape = LMShape(vocab=6, prompt_len=2, horizon=3, d_model=8, n_heads=2, d_ff=16)
    p0 = init_params(shape, generator=torch.Generator().manual_seed(0))
    spec = L.StepSpec(shape, task.prompt_tokens, task.eos, task.reward, 4, 2, ALGS[name], L.Optimiser(optimiser, 0.05))
    params, state = L.stack(p0, 3), L.init_state(spec.optimiser, L.stack(p0, 3))
    gens_a = [seeded(1, s) for s in range(3)]
    gens_b = [seeded(1, s) for s in range(3)]
    refs = [{k: v.clone().requires_grad_(True) for k, v in p0.items()} for _ in range(3)]
    opts = [spec.optimiser.torch_optimizer(list(r.values())) for r in refs]
    for _ in range(3):
        params, state, batch = L.stacked_step(spec, params, state, gens_a, ref_params=p0)
        tokens = L.per_seed_step(spec, refs, opts, gens_b, ref_params=p0)
        assert all(torch.equal(batch["tokens"][s], tokens[s]) for s in range(3))
    for s in range(3):
        for k in p0:
            torch.testing.assert_close(params[k][s], refs[s][k].detach(), rtol=0, atol=1e-9)
    assert any(not torch.equal(params[k][0], p0[k]) for k in p0)  # it trained


def test_warm_start_spreads_pass_rates_and_is_cached(tmp_path):
    task = SumModTask(vocab=8, modulus=4, horizon=2, n_prompts=2, seed=0)
    shape = LMShape(vocab=8, prompt_len=2, horizon=2, d_model=16, n_heads=2, d_ff=32)
    warm = L.WarmStart(correct=(0.0, 1.0), n_demo=16, steps=60, lr=3e-2)
    ids, demos = L.demonstrations(task, warm)
    good = task.reward(demos, torch.ones(demos.shape), ids)
    assert good[ids == 1].min() == 1  # prompt 1: every demonstration correct
    a = L.warm_start(task, shape, warm, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("warm-*.json"))) == 1
    b = L.warm_start(task, shape, warm, cache_dir=tmp_path)
    assert all(torch.equal(a[k], b[k]) for k in a)
    from policies.transformer import TransformerPolicy
    pol = TransformerPolicy(a, shape=shape, prompt_tokens=task.prompt_tokens)
    rates = []
    for g in range(2):
        tokens, mask, prob = pol.enumerate(prompt=g)
        rates.append(float(prob @ task.reward(tokens, mask, torch.full((len(tokens),), g))))
    assert rates[1] > 0.9 and rates[0] < 0.6, rates  # untrained: 1/4 each
