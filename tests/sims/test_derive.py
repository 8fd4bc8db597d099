"""``pgverify derive`` (sims/derive.py): the derived weight, regions, on-policy reduction and the
nearest registry objective of a user's derivation; bad input exits 2 with a message."""

from __future__ import annotations

import io
import json
import textwrap
from contextlib import redirect_stderr, redirect_stdout

import pytest

from sims.cli import main

CAPPED = textwrap.dedent('''
    from theory import clip, objective, sg

    @objective(params={"eps_high": 4.0}, reference="CISPO written by a user (MiniMax 2025, arXiv:2506.13585)")
    def losses(seq, p):
        return [-sg(clip(seq.ratio(t), None, 1 + p["eps_high"])) * seq.adv[t] * seq.logp[t] for t in range(seq.n)]
''')


def _run(*argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["derive", *argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def capped(tmp_path):
    path = tmp_path / "capped.py"
    path.write_text(CAPPED)
    return f"{path}:losses"


def test_topr_derivation():
    code, out, _ = _run("examples/topr_theory.py:losses")
    assert code == 0
    assert "w(rho, A) = Piecewise((A, A >= 0), (A*Min(1, rho), True))" in out
    assert "token 1's weight reads token 2" in out
    assert "on-policy (rho = 1): REINFORCE times 1" in out
    assert "nearest registry objective: reinforce" in out and "differs on: A<0:" in out


def test_a_users_cispo_is_the_registry_cispo(capped):
    code, out, _ = _run(capped, "--json")
    assert code == 0
    d = json.loads(out)
    assert d["weight"]["text"] == "A*Min(rho, eps_high + 1)" and "\\min" in d["weight"]["latex"]
    assert d["breakpoints"] == ["5"]
    assert [(r["sign"], r["ratio"], r["verdict"]) for r in d["regions"]] == [
        ("A>0", "ρ < 5", "bounded"), ("A>0", "ρ > 5", "bounded"), ("A<0", "ρ < 5", "bounded"),
        ("A<0", "ρ > 5", "bounded")]
    assert d["on_policy"] == {"reinforce": True, "scale": "1", "weight_at_rho_1": "A"}
    assert d["nearest"]["name"] == "cispo" and d["nearest"]["difference"] == "0"
    assert d["nearest"]["differs_on_grid"] == ["nowhere on the grid"]


def test_a_setting_moves_the_breakpoint_and_the_nearest_difference(capped):
    code, out, _ = _run(capped, "--param", "eps_high=0.28", "--json")
    d = json.loads(out)
    assert code == 0 and d["breakpoints"] == ["32/25"] and d["params"] == {"eps_high": 0.28}
    assert d["nearest"]["difference"] != "0"


@pytest.mark.parametrize(("argv", "message"), [
    (["missing.py:losses"], "does not exist"),
    (["examples/topr_theory.py:nothing"], "has no attribute 'nothing'"),
    (["examples/topr_theory.py:losses", "--param", "eps=0.2"], "'eps' is not a setting"),
    (["examples/topr_theory.py:losses", "--param", "eps"], "is not name=value"),
])
def test_bad_input_exits_2(argv, message):
    code, out, err = _run(*argv)
    assert code == 2 and out == ""
    assert err.startswith("pgverify derive: error:") and message in err


def test_a_theory_with_the_wrong_number_of_losses_exits_2(tmp_path):
    path = tmp_path / "one.py"
    path.write_text("def losses(seq, p):\n    return [seq.logp[0]]\n")
    code, _, err = _run(f"{path}:losses")
    assert code == 2 and "one loss per token" in err
