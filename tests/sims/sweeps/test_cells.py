"""Cells: the grid's order and keys, random streams from the config (common random numbers across
estimators), the quantities against the engines and a known-unbiased estimator, failures returned."""

from __future__ import annotations

import torch

from sims.sweeps.cells import (
    SAMPLING_FIELDS,
    TASK_FIELDS,
    canonical_json,
    cell_key,
    expand,
    one_thread,
    policy_pair,
    reward_threshold,
    run_cell,
    run_cell_safely,
    stream_seed,
)
from sims.sweeps.spec import parse_spec
from tests.sims.sweeps.conftest import TINY


def _spec(text: str = TINY):
    return parse_spec(text)


def test_grid_order_configs_and_keys():
    cells = expand(_spec())
    assert [(c.config["objective"], c.config["seed"]) for c in cells] == [
        ("cispo", 0), ("cispo", 1), ("ppo_clip", 0), ("ppo_clip", 1)]
    assert [c.index for c in cells] == [0, 1, 2, 3]
    ppo = cells[2].config
    # the objective's own default aggregation ("default"), the sweep's T and K, the field from the spec
    assert ppo["objective_config"]["agg"] == "token-mean" and ppo["objective_config"]["eps_high"] == 0.28
    assert len({c.key for c in cells}) == 4
    assert cells[0].key == cell_key(dict(reversed(list(cells[0].config.items()))))  # key order is irrelevant
    assert cell_key(dict(cells[0].config, device="cuda")) != cells[0].key
    assert canonical_json({"b": 0.1, "a": [1, None]}) == '{"a":[1,null],"b":0.1}'


def test_seq_mean_token_sum_norm_gets_max_len_t():
    spec = _spec(TINY.replace("group_size = 2", 'group_size = 2\nagg = "seq-mean-token-sum-norm"'))
    assert {c.config["objective_config"]["max_len"] for c in expand(spec)} == {2}


def test_streams_depend_on_the_config_not_the_order():
    a, b = expand(_spec())[0].config, expand(_spec())[2].config  # cispo and ppo_clip, seed 0
    # common random numbers: the estimator is not part of the task's or the sampling stream
    for fields in (TASK_FIELDS, SAMPLING_FIELDS):
        assert stream_seed(a, fields, "x") == stream_seed(b, fields, "x")
    old_a, new_a = policy_pair(a)
    old_b, new_b = policy_pair(b)
    assert torch.equal(old_a.logits, old_b.logits) and torch.equal(new_a.logits, new_b.logits)
    other_seed = expand(_spec())[1].config
    assert not torch.equal(policy_pair(other_seed)[0].logits, old_a.logits)


def test_task_has_the_requested_divergence():
    from policies.table import mean_token_divergence

    config = expand(_spec())[0].config
    old, new = policy_pair(config)
    assert abs(mean_token_divergence(old, new, "kl") - 0.1) < 1e-9
    assert reward_threshold(2, 2) == 1 and reward_threshold(8, 3) == 2


UNBIASED = """\
quantities = ["bias", "variance"]
replicas = 40
horizon = 3
vocab = 2
divergence_value = 0.2
group_size = 1
agg = "seq-mean-token-mean"
[objectives.seq_is]
[objectives.reinforce]
is_level = "token"
is_cap = 1e300
[advantages.raw]
"""


def test_bias_is_zero_for_sequence_is_and_not_for_token_is():
    """Sequence IS with A = R is unbiased for ∇J (exact, float64 rounding); token IS is not: the
    case the bias quantity must reject."""
    seq_is, token_is = (run_cell(c.config) for c in expand(_spec(UNBIASED)))
    bias = {r["quantity"]: r["value"] for r in seq_is}
    assert bias["relative bias"] < 1e-12 and abs(bias["cosine"] - 1) < 1e-12
    assert {r["quantity"]: r["value"] for r in token_is}["relative bias"] > 1e-3


def test_monte_carlo_rows_are_the_engine_with_the_cell_stream():
    from policies.tasks import TokenCount
    from sims.engines.exact import exact_objective
    from sims.engines.montecarlo import mc_gradient
    from sims.experiments._common import mc_config
    from sims.registry import ADVANTAGES, OBJECTIVES

    c = expand(_spec())[2].config
    rows = {r["quantity"]: r for r in run_cell(c)}
    old, new = policy_pair(c)
    reward = TokenCount(0, threshold=reward_threshold(2, 2))
    truth = exact_objective(new, reward)[1]
    from sims.sweeps.cells import mc_config as cell_mc_config

    assert cell_mc_config(c) == mc_config(40, group_size=2, seed=stream_seed(c, SAMPLING_FIELDS, "sampling"))
    with one_thread():
        mc = mc_gradient(new, old, reward, "ppo_clip", OBJECTIVES["ppo_clip"].config_cls(**c["objective_config"]),
                         "grpo", ADVANTAGES["grpo"].config_cls(**c["advantage_config"]),
                         mc_config(40, group_size=2, seed=stream_seed(c, SAMPLING_FIELDS, "sampling")), truth=truth)
    assert rows["variance trace"]["value"] == mc.var_trace.estimate
    assert (rows["ESS fraction"]["low"], rows["ESS fraction"]["high"]) == (mc.ess_frac.low, mc.ess_frac.high)
    assert rows["zero-weight fraction"]["value"] == mc.zero_weight_frac.estimate
    assert rows["relative variance"]["value"] == mc.var_trace.estimate / float(truth.norm()) ** 2
    assert rows["dynamics J start"]["value"] == float(exact_objective(old, reward)[0])
    assert rows["dynamics KL to start"]["value"] >= 0
    for r in rows.values():
        assert r["low"] <= r["value"] <= r["high"]


def test_one_thread_restores_the_thread_counts():
    before = torch.get_num_threads()
    with one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_a_raising_cell_returns_its_error_and_traceback():
    c = expand(_spec())[0].config
    bad = dict(c, objective_config=dict(c["objective_config"], eps_high=-1.0))
    result = run_cell_safely(bad)
    assert result["ok"] is False and "eps_high=-1.0 is invalid" in result["error"]
    assert "Traceback" in result["traceback"] and "run_cell" in result["traceback"]
    good = run_cell_safely(c)
    assert good["ok"] is True and good["rows"] == run_cell(c)


def test_dynamics_moves_the_policy_towards_reward():
    """With A = R every rewarded sample raises its probability: after 5 steps J has grown and the
    policy has moved (KL > 0); a learning rate that is 100x smaller moves it less."""
    text = """\
quantities = ["dynamics"]
replicas = 40
horizon = 2
vocab = 2
divergence_value = 0.1
group_size = 4
[objectives.reinforce]
[advantages.raw]
[dynamics]
steps = 5
lr = 0.1
"""
    rows = {r["quantity"]: r["value"] for r in run_cell(expand(_spec(text))[0].config)}
    slow = {r["quantity"]: r["value"] for r in run_cell(expand(_spec(text.replace("lr = 0.1", "lr = 0.001")))[0].config)}
    assert rows["dynamics J end"] > rows["dynamics J start"] and rows["dynamics KL to start"] > 0
    assert slow["dynamics J start"] == rows["dynamics J start"]  # same task, same stream
    assert 0 < slow["dynamics KL to start"] < rows["dynamics KL to start"]


def test_adam_is_torch_adam():
    from sims.sweeps.cells import Adam

    gen = torch.Generator().manual_seed(0)
    ours = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    theirs = ours.clone().requires_grad_(True)
    adam, reference = Adam(ours, lr=0.05), torch.optim.Adam([theirs], lr=0.05)
    for _ in range(6):
        grad = torch.randn(3, 4, generator=gen, dtype=torch.float64)
        adam.step(grad)
        theirs.grad = grad.clone()
        reference.step()
    torch.testing.assert_close(ours, theirs.detach(), rtol=0, atol=1e-15)
