"""``pgverify compare`` (sims/compare.py, sims/comparison.py): a user's variant in a temporary
file, with its derivation, side by side with registry baselines in every experiment that applies
(tiny sweeps), and bad input refused with exit code 2 before any work."""

from __future__ import annotations

import io
import json
import shutil
import textwrap
from contextlib import redirect_stderr, redirect_stdout

import pandas as pd
import pytest

from sims.cli import main

LOSS = textwrap.dedent('''
    import torch

    def topr(logp, old_logp, adv, mask, cap=1.0):
        m = mask.to(logp.dtype)
        a = (adv * m).sum(-1) / m.sum(-1)
        log_r = ((logp - old_logp) * m).sum(-1)
        taper = torch.where(a >= 0, torch.ones_like(log_r), torch.exp(log_r.clamp(max=0.0)) * cap)
        return ((-(taper.detach() * a)[:, None] * logp) * m).sum(-1).mean()
''')


def _run(*argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["compare", *argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    (tmp / "my_topr.py").write_text(LOSS)
    shutil.copy("examples/topr_theory.py", tmp / "my_theory.py")
    out = tmp / "report"
    code, stdout, err = _run(f"{tmp}/my_topr.py:topr", "cispo", "--theory", f"{tmp}/my_theory.py:losses",
                             "--agg", "seq-mean-token-sum", "--scale", "tiny", "--out", str(out))
    assert code == 0, err
    assert "wrote" in stdout
    return out


def test_the_variant_is_in_every_applicable_table_and_figure(report):
    text = (report / "REPORT.md").read_text()
    label = "topr (yours)"
    results = json.loads((report / "results.json").read_text())
    for name in ("bias_variance", "sequence_weight", "survival", "length_bias", "difficulty", "dynamics"):
        assert label in results[name]["objectives"], name  # TOPR applies everywhere (it reads R for A < 0)
        table = pd.read_csv(report / f"{name}.csv")
        column = next(c for c in ("estimator", "objective", "algorithm") if c in table.columns)
        assert table[column].astype(str).str.startswith(label).any(), name
        assert (report / f"{name}.png").exists(), name
        assert "cispo" in json.dumps(results[name]), name  # the baseline beside it
    coverage = text.split("## Where each objective appears")[1].split("##")[0]
    assert f"| {label}" in coverage and "cispo" in coverage
    prov = json.loads((report / "provenance.json").read_text())
    assert prov["theory"]["target"].endswith("my_theory.py:losses") and prov["scale"] == "tiny"


def test_what_does_not_apply_says_why(report):
    results = json.loads((report / "results.json").read_text())
    notes = results["sequence_weight"]["notes"]
    assert any(n.startswith("cispo: not applicable: its token weight reads only its own token") for n in notes)


def test_the_symbolic_survival_curve_comes_from_the_users_derivation(report):
    table = pd.read_csv(report / "survival.csv")
    mine = table[table.objective == "topr (yours)"]
    assert mine.w_symbolic.notna().all()
    assert (mine.w_torch - mine.w_symbolic).abs().max() < 1e-12


@pytest.mark.parametrize(("argv", "message"), [
    (["nonexistent_objective", "cispo"], "objective 'nonexistent_objective' is unknown"),
    (["cispo"], "at least two objectives"),
    (["cispo", "ppo_clip", "--theory", "examples/topr_theory.py:losses"], "--theory needs exactly one user target"),
    (["cispo", "ppo_clip", "--agg", "mean"], "--agg 'mean' is invalid"),
    (["cispo", "ppo_clip", "--advantage", "nope"], "--advantage"),
    (["examples/topr.py:topr_loss", "cispo", "--param", "cap=2"], "--param 'cap' is not a parameter"),
    (["examples/topr.py:topr_loss", "cispo", "--theory", "examples/topr_theory.py:losses", "--theory-param",
      "eps=1"], "'eps' is not a setting"),
    (["examples/topr.py:topr_loss", "cispo", "--theory", "examples/topr.py:topr_loss"], "theory"),
    (["cispo", "ppo_clip", "--quick", "--scale", "tiny"], "disagree"),
])
def test_bad_input_exits_2_before_any_work(tmp_path, argv, message):
    code, out, err = _run(*argv, "--out", str(tmp_path / "never"))
    assert code == 2 and message in err, err
    assert not (tmp_path / "never").exists()


def test_out_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    code, _, err = _run("cispo", "ppo_clip", "--out", str(target))
    assert code == 2 and "is a file" in err and target.read_text() == "keep me"
