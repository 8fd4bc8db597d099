"""Loading the target and binding its settings: every problem is a UsageError naming it."""

from __future__ import annotations

import textwrap

import pytest

from sims.check.feed import resolve_names
from sims.check.target import UsageError, bind_params, load_target, parse_assignments, parse_value


def _write(tmp_path, body: str, name: str = "variant.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_parse_value_reads_numbers_booleans_none_and_strings():
    assert [parse_value(v) for v in ("0.28", "8", "1e-4", "True", "false", "none", "seq-mean-token-mean")] == [
        0.28, 8, 1e-4, True, False, None, "seq-mean-token-mean"]


def test_parse_assignments():
    assert parse_assignments("--param", ["eps=0.2", "agg=token-mean"]) == {"eps": 0.2, "agg": "token-mean"}
    assert parse_assignments("--param", None) == {}
    with pytest.raises(UsageError, match="--param 'eps' is not name=value"):
        parse_assignments("--param", ["eps"])
    with pytest.raises(UsageError, match="given twice"):
        parse_assignments("--spec-param", ["a=1", "a=2"])
    with pytest.raises(UsageError, match="not name=value"):
        parse_assignments("--param", ["1x=2"])


def test_load_target_from_a_file_and_from_a_module(tmp_path):
    path = _write(tmp_path, """
        def loss(logp, old_logp, adv, mask):
            return -(adv * logp * mask).sum()
        class Holder:
            @staticmethod
            def nested(logp, old_logp, adv, mask):
                return logp.sum()
        """)
    assert load_target(f"{path}:loss").__name__ == "loss"
    assert load_target(f"{path}:Holder.nested").__name__ == "nested"
    assert load_target("sims.check.target:parse_value") is parse_value


@pytest.mark.parametrize("target, message", [
    ("no_colon", "is not MODULE:FUNCTION"),
    ("{dir}/missing.py:f", "does not exist"),
    ("{file}:absent", "has no attribute 'absent'"),
    ("{file}:CONSTANT", "is a int, not callable"),
    ("{broken}:f", "failed to import: ZeroDivisionError"),
    ("surely_not_a_module_xyz.sub:f", "cannot be imported"),
])
def test_load_target_usage_errors(tmp_path, target, message):
    file = _write(tmp_path, "CONSTANT = 3\n")
    broken = _write(tmp_path, "x = 1 / 0\n", "broken.py")
    with pytest.raises(UsageError, match=message):
        load_target(target.format(dir=tmp_path, file=file, broken=broken))


def test_bind_params_checks_the_signature_and_binds_settings():
    def loss(logp, old_logp, adv, mask, eps=0.2, agg="token-mean"):
        return eps, agg

    bound = bind_params(loss, {"eps": 1, "agg": "x"})
    assert bound(1, 2, 3, 4) == (1.0, "x") and isinstance(bound(1, 2, 3, 4)[0], float)
    assert bind_params(loss) is loss
    with pytest.raises(UsageError, match=r"--param 'tau' is not a parameter of .*loss.*allowed: eps, agg"):
        bind_params(loss, {"tau": 1.0})

    def two_args(logp, old_logp):
        return logp

    with pytest.raises(UsageError, match="wrong signature"):  # the call convention is resolved by feed
        resolve_names(bind_params(two_args))

    def needs_more(logp, old_logp, adv, mask, beta):
        return logp

    with pytest.raises(UsageError, match="wrong signature"):
        resolve_names(bind_params(needs_more))
    assert resolve_names(bind_params(needs_more, {"beta": 0.1})) == {}

    def takes_kwargs(logp, old_logp, adv, mask, **settings):
        return settings

    assert bind_params(takes_kwargs, {"anything": 2})(1, 2, 3, 4) == {"anything": 2}
