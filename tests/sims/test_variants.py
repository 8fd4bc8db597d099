"""User variants (sims/variants.py): a derivation as the spec of ``pgverify check --theory``, a
user's torch loss as a registry objective that honours ``config.agg``, and their bad inputs."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest
import torch

from sims.check import Layout, UsageError, load_target, run_checks
from sims.registry import OBJECTIVES
from sims.variants import load_theory, registered, theory_spec, user_objective

TOPR_THEORY = "examples/topr_theory.py:losses"
TOPR_LOSS = "examples/topr.py:topr_loss"

NO_SG = textwrap.dedent('''
    import sympy as sp
    from theory import objective, seq_ratio

    @objective(params={}, reference="TOPR with the stop-gradient forgotten (a planted bug)")
    def losses(seq, p):
        a = seq.mean_adv
        taper = sp.Piecewise((1, a >= 0), (sp.Min(seq_ratio(seq), 1), True))
        return [-taper * a * seq.logp[t] for t in range(seq.n)]
''')


def _spec_checks(theory_target, loss_target=TOPR_LOSS, examples=10):
    spec = theory_spec(theory_target, {"agg": "seq-mean-token-sum"}, group_size=2)
    return run_checks(load_target(loss_target), spec=spec, layout=Layout(group_size=2), examples=examples,
                      kinds=("spec",))


def test_correct_derivation_is_the_spec_the_torch_loss_passes():
    report = _spec_checks(TOPR_THEORY)
    assert report.passed, report.card()


def test_missing_stop_gradient_is_caught_with_a_shrunk_counterexample(tmp_path):
    from sims.check.spec_check import check_spec_weights

    path = tmp_path / "topr_no_sg.py"
    path.write_text(NO_SG)
    spec = theory_spec(f"{path}:losses", {"agg": "seq-mean-token-sum"}, group_size=2)
    weights = check_spec_weights(load_target(TOPR_LOSS), spec, Layout(group_size=2), examples=15, seed=0)
    assert not weights.passed
    assert "smallest failing input found" in weights.detail and "then shrunk" in weights.detail
    assert "expected w" in weights.detail and "actual   w" in weights.detail


def test_theory_advantage_level_is_detected():
    assert load_theory(TOPR_THEORY).advantage_level == "sequence"


@pytest.mark.parametrize(("source", "message"), [
    ("def losses(seq, p):\n    return [0]\n", "returned a list of length 1 for a sequence of n = 2 tokens"),
    ("def losses(seq, p):\n    return seq.logp[0]\n", "allowed: a list of"),
    ("import sympy as sp\ndef losses(seq, p):\n    return [sp.Symbol('q') * l for l in seq.logp]\n",
     "symbols ['q']"),
    ("def losses(seq, p):\n    return [-p['eps'] * l for l in seq.logp]\n", "params['eps'], which is not set"),
    ("def losses(seq):\n    return []\n", "cannot be called as losses(seq, params)"),
])
def test_bad_derivations_are_usage_errors(tmp_path, source, message):
    path = tmp_path / "bad.py"
    path.write_text(source)
    with pytest.raises(UsageError, match="theory") as info:
        load_theory(f"{path}:losses")
    assert message in str(info.value)


def test_unknown_setting_is_a_usage_error():
    with pytest.raises(UsageError, match="'eps' is not a setting .* none"):
        load_theory(TOPR_THEORY, {"eps": 0.2})


def test_user_loss_reweighs_to_any_aggregation_like_the_registry():
    """A user's CISPO computed with token-mean, registered, gives the registry cispo's weights
    under every other aggregation the engines ask for."""
    def my_cispo(logp, old_logp, adv, mask):
        w = torch.exp(logp - old_logp).clamp(max=5.0).detach()
        return (-(w * adv * logp) * mask).sum() / mask.sum()

    spec = user_objective("mine", my_cispo, declared_agg="token-mean")
    ref = OBJECTIVES["cispo"]
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(4, 5, generator=g, dtype=torch.float64) * 3
    old = logp - (torch.rand(4, 5, generator=g, dtype=torch.float64) - 0.5)
    adv = torch.randn(4, 5, generator=g, dtype=torch.float64)
    mask = (torch.arange(5)[None] < torch.tensor([[5], [3], [1], [4]])).to(torch.float64)
    with registered({"mine": spec}):
        for agg in ("token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "prompt-token-mean"):
            cfg = dataclasses.replace(ref.config_cls(), agg=agg, group_size=2)
            grads = []
            for fn, c in ((spec.loss_fn, spec.config_cls(agg=agg, group_size=2)), (ref.loss_fn, cfg)):
                x = logp.clone().requires_grad_(True)
                grads.append(torch.autograd.grad(fn(x, old, adv, mask, config=c)[0], x)[0])
            torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-14)
    assert "mine" not in OBJECTIVES


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "prompt-token-mean", "seq-mean-token-sum-norm"])
def test_theory_spec_weights_equal_the_derived_batch_weights(agg):
    """The spec derives each distinct row once and applies the derived normaliser: the same
    numbers as ``theory.weights.batch_weights`` on the whole batch (repeated rows included)."""
    from theory.weights import batch_weights

    params = {"agg": agg, "max_len": 4} if agg.endswith("norm") else {"agg": agg}
    spec = theory_spec("examples/topr_theory.py:losses", params, group_size=2)
    g = torch.Generator().manual_seed(1)
    logp = -torch.rand(4, 4, generator=g, dtype=torch.float64) * 2
    logp[1] = logp[0]  # a repeated row
    old = logp - (torch.rand(4, 4, generator=g, dtype=torch.float64) - 0.5)
    old[1] = old[0]
    adv = torch.tensor([[1.0], [1.0], [-2.0], [-0.5]], dtype=torch.float64).expand(4, 4).clone()
    mask = (torch.arange(4)[None] < torch.tensor([[4], [4], [2], [3]])).to(torch.float64)
    got = spec.weights(logp, old, adv, mask, spec.config).numpy()
    want = batch_weights(load_theory("examples/topr_theory.py:losses").entry, logp, old, adv, mask, spec.config)
    assert abs(got - want).max() <= 1e-14


@pytest.mark.parametrize(("extra", "message"), [
    (["--theory", "examples/topr_theory.py:losses", "--spec", "cispo"], "--theory and --spec are both given"),
    (["--theory", "examples/topr_theory.py:losses", "--spec-param", "eps=0.1"], "'eps' is not a setting"),
    (["--theory", "examples/topr_theory.py:nope"], "has no attribute 'nope'"),
])
def test_check_theory_bad_input_exits_2(extra, message, capsys):
    from sims.cli import main

    assert main(["check", TOPR_LOSS, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pgverify check: error:") and message in err


def test_check_theory_with_a_wrong_count_exits_2(tmp_path, capsys):
    from sims.cli import main

    path = tmp_path / "short.py"
    path.write_text("def losses(seq, p):\n    return [-seq.adv[0] * seq.logp[0]]\n")
    assert main(["check", TOPR_LOSS, "--theory", f"{path}:losses"]) == 2
    assert "one loss per token" in capsys.readouterr().err
