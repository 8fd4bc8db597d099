"""The spec parser: the example and a full spec parse to what they say; every kind of bad input is a
SpecError naming the key, the value and what is allowed."""

from __future__ import annotations

import pytest

from sims.sweeps.cells import expand
from sims.sweeps.example import EXAMPLE
from sims.sweeps.spec import DynamicsSpec, SpecError, parse_spec
from tests.sims.sweeps.conftest import TINY


def test_example_parses_to_its_axes():
    spec = parse_spec(EXAMPLE)
    assert spec.quantities == ("bias", "variance", "zero_weight_frac", "ess")
    assert spec.horizon == (2, 4) and spec.vocab == (3,) and spec.seeds == (0, 1)
    assert [name for name, _ in spec.objectives] == ["cispo", "ppo_clip"]
    assert dict(spec.objectives)["cispo"] == {"eps_high": (0.2, 4.0)}
    assert [name for name, _ in spec.advantages] == ["grpo", "rloo"]
    assert spec.dynamics is None
    assert set(spec.swept) == {"seeds", "horizon", "objective", "advantage", "objectives.cispo.eps_high"}


def test_defaults_and_coercion():
    spec = parse_spec(TINY)
    assert spec.policy == ("tabular",) and spec.divergence == ("kl",) and spec.agg == ("default",)
    assert spec.logit_scale == (1.0,)
    assert dict(spec.objectives)["ppo_clip"] == {"eps_high": (0.28,)}
    assert spec.dynamics == DynamicsSpec(steps=2)
    # an int for a float field is the same value as the float; "none" is None for an optional field
    spec = parse_spec(TINY.replace("eps_high = 0.28", 'eps_high = 1\neps_low = "none"'))
    fields = dict(spec.objectives)["ppo_clip"]
    assert fields["eps_high"] == (1.0,) and isinstance(fields["eps_high"][0], float)
    assert fields["eps_low"] == (None,)


BAD = [
    # (edit of TINY, words the message must contain)
    (("quantities = [", 'colour = "red"\nquantities = ['), ["colour: unknown key", "allowed:", "quantities"]),
    (("replicas = 40", "replicas = 30"), ["replicas = 30", "multiple of 20"]),
    (("replicas = 40", "replicas = true"), ["replicas = True", "multiple of 20"]),
    (("horizon = 2", "horizon = 0"), ["horizon = 0", "[1, 4096]"]),
    (("vocab = 2", "vocab = [2, 2]"), ["vocab = [2, 2]", "without repeated values"]),
    (("seeds = [0, 1]", "seeds = []"), ["seeds = []", "zero cells"]),
    (("seeds = [0, 1]", "seeds = [-1]"), ["seeds = -1", "[0, 2147483647]"]),
    (("divergence_value = 0.1", 'divergence_value = "big"'), ["divergence_value = 'big'", "finite number > 0"]),
    (("group_size = 2", "group_size = 2\ndivergence = \"tv\""), ["divergence = 'tv'", "'kl', 'chi2'"]),
    (("group_size = 2", 'group_size = 2\nagg = "token-avg"'), ["agg = 'token-avg'", "'seq-mean-token-mean'"]),
    (("group_size = 2", 'group_size = 2\npolicy = "lstm"'), ["policy = 'lstm'", "'tabular'"]),
    (("[objectives.cispo]", "[objectives.cisp]"), ["objectives.cisp", "NAME one of", "cispo"]),
    (("[objectives.cispo]", "[objectives.kl_cov]"), ["objectives.kl_cov", "batch-coupled"]),
    (("[objectives.cispo]", "[objectives.ppo_clip_rollout_is]"), ["objectives.ppo_clip_rollout_is", "rollout_logp"]),
    (("eps_high = 0.28", "eps_hi = 0.28"), ["objectives.ppo_clip.eps_hi: unknown field", "eps_high"]),
    (("eps_high = 0.28", 'eps_high = "wide"'), ["objectives.ppo_clip.eps_high = 'wide'", "a float"]),
    (("eps_high = 0.28", 'agg = "token-mean"'), ["objectives.ppo_clip.agg", "top-level agg axis"]),
    (("[advantages.grpo]", "[advantages.batch_std]"), ["advantages.batch_std", "per-group estimator"]),
    (("[advantages.grpo]", "[advantages.grpo]\neps = -1.0"), ["advantages.grpo", "eps=-1.0 is invalid"]),
    (("[advantages.grpo]", "[advantages.rloo]\n"), []),  # control: rloo at K = 2 is fine
    (("group_size = 2", "group_size = 1"), ["advantages.grpo", "group_size = 1", "K >= 2"]),
    (("[advantages.grpo]", '[advantages.grpo]\nstd = "population"'), []),  # control: a valid config field
    (("eps_high = 0.28", "eps_high = -0.5"), ["objectives.ppo_clip", "eps_high=-0.5 is invalid"]),
    (("steps = 2", "steps = 0"), ["dynamics.steps = 0", "[1, 100000]"]),
    (("steps = 2", "rate = 2"), ["dynamics.rate: unknown key", "steps, updates, lr"]),
    (("quantities = [\"bias\", ", "quantities = [\"entropy\", \"bias\", "), ["quantities = 'entropy'", "'bias'"]),
    (("horizon = 2", "horizon = 40"), ["horizon = 40", "V^T <= 1048576"]),
    (("group_size = 2", 'group_size = 2\npolicy = "gru"'), ["policy = 'gru'", "dynamics"]),
    (("replicas = 40\n", ""), ["replicas is missing"]),
    (("[objectives.cispo]\n[objectives.ppo_clip]\neps_high = 0.28\n", ""), ["no [objectives.NAME] table", "zero cells"]),
    (("quantities = [", "quantities = [\n"), []),  # still valid: the control case
    (("seeds = [0, 1]", "seeds = [0, 1"), ["not valid TOML"]),
    (("group_size = 2", 'group_size = 2\nagg = ["default", "token-mean"]'), ["are the same", "'token-mean'"]),
]


def validate(text: str):
    """What the command checks before any work: the spec, then every cell's configs."""
    return expand(parse_spec(text))


@pytest.mark.parametrize("edit, words", BAD, ids=[w[0] if w else f"valid-{i}" for i, (_, w) in enumerate(BAD)])
def test_bad_specs_name_the_key_value_and_allowed(edit, words):
    old, new = edit
    assert old in TINY
    text = TINY.replace(old, new, 1)
    if not words:
        validate(text)  # must not raise: the controls show the edits above are what makes the others fail
        return
    with pytest.raises(SpecError) as exc:
        validate(text)
    for word in words:
        assert word in str(exc.value)


def test_dynamics_table_without_the_quantity_is_refused():
    text = TINY.replace('"ess", "dynamics"]', '"ess"]')
    with pytest.raises(SpecError, match=r"\[dynamics\] is given but quantities has no 'dynamics'"):
        parse_spec(text)
