"""Objective plugins (sims/plugins.py): a package registered through a real entry point (a
``*.dist-info/entry_points.txt`` on sys.path, which importlib.metadata discovers as it would an
installed package) appears in ``pgverify list``, passes the theory <-> torch battery and is taken
by name by specs and algorithms; a plugin that fails to import or breaks the contract is reported
by name with the reason and the others still load."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import pytest

from sims import plugins, registry

ENTRY_POINTS = """[pgverify.objectives]
topr = tests.sims.plugin_packages.tiny_topr:TOPR
topr_untapered = tests.sims.plugin_packages.tiny_topr:WRONG
broken = tests.sims.plugin_packages.broken_import:ANYTHING
bad = tests.sims.plugin_packages.bad_contract:BAD
"""


@pytest.fixture
def installed(tmp_path, monkeypatch):
    dist = tmp_path / "tiny_pgverify_plugins-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-pgverify-plugins\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    errors = plugins.refresh()
    yield errors
    monkeypatch.undo()
    plugins.refresh()
    assert "topr_token" not in registry.OBJECTIVES


def test_good_plugins_load_and_bad_ones_are_reported_by_name(installed):
    assert "topr_token" in registry.OBJECTIVES and "topr_untapered" in registry.OBJECTIVES
    by_name = {e.entry_point: e for e in installed}
    assert set(by_name) == {"broken", "bad"}
    assert "failed to import" in by_name["broken"].reason and "a_module_that_does_not_exist" in by_name["broken"].reason
    bad = by_name["bad"].reason
    assert "not a frozen dataclass" in bad and "theory is None" in bad and "reference is empty" in bad
    assert "bad_contract" not in registry.OBJECTIVES


def test_list_shows_plugins_and_their_errors(installed):
    from sims.cli import main

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["list"]) == 0
    text = out.getvalue()
    assert "topr_token" in text and "plugin: topr = tests.sims.plugin_packages.tiny_topr:TOPR" in text
    assert "Plugins that could not be loaded" in text and "broken = " in text and "bad = " in text
    assert "cispo" in text  # the built-ins are still there
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["list", "--json"]) == 0
    listing = json.loads(out.getvalue())
    assert {e["entry_point"] for e in listing["plugin_errors"]} == {"broken", "bad"}


def test_plugin_passes_the_battery_and_a_planted_bug_fails_it(installed):
    from sims.check import check_objective

    good = check_objective("topr_token", examples=12)
    assert good.passed, good.card()
    bad = check_objective("topr_untapered", examples=12)
    assert not bad.passed
    assert dict((c, ok) for c, ok, _ in bad.results)["weights"] is False


def test_plugin_is_taken_by_name_by_specs_and_algorithms(installed):
    import torch

    from sims.advantages import NoConfig
    from sims.algorithms import Algorithm, algorithm_loss
    from sims.check.specs import make_spec

    spec = make_spec("topr_token", {"agg": "token-mean"}, group_size=2)
    assert spec.config.agg == "token-mean"
    cfg = registry.OBJECTIVES["topr_token"].config_cls()
    alg = Algorithm(name="topr", advantage="group_mean", advantage_config=NoConfig(), objective="topr_token",
                    objective_config=cfg)
    logp = -torch.rand(4, 3, dtype=torch.float64)
    loss, _ = algorithm_loss(alg, logp, logp.detach(), torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64),
                             torch.ones(4, 3, dtype=torch.float64))
    assert torch.isfinite(loss)


def test_pytest_fixture_runs_the_battery(installed, pytestconfig):
    from sims.check import pytest_plugin

    class Request:
        config = pytestconfig

    check = pytest_plugin.pgverify_objective.__wrapped__(Request())
    with pytest.raises(AssertionError, match="weights"):  # the passing case is the battery test above
        check("topr_untapered")
