"""The ``pgverify_check`` fixture, loaded through the ``pytest11`` entry point (as in users' suites);
``pgverify_examples`` is set to 30 in this project's pyproject.toml."""

from __future__ import annotations

import types

import pytest

from sims.check import pytest_plugin
from sims.check.runner import DEFAULT_EXAMPLES
from tests.sims.check import correct, planted


def test_the_fixture_passes_a_correct_loss(pgverify_check):
    report = pgverify_check(correct.cispo, "cispo", eps_high=4.0)
    assert report.passed and report.settings["examples"] == 30


def test_the_fixture_fails_a_planted_bug(pgverify_check):
    with pytest.raises(AssertionError, match="padding invariance"):
        pgverify_check(planted.token_mean_padded_width)


def _config(option, ini):
    return types.SimpleNamespace(getoption=lambda name: option, getini=lambda name: ini)


def test_settings_come_from_the_option_then_the_ini_and_are_validated():
    assert pytest_plugin._setting(_config(7, "30"), "examples") == 7
    assert pytest_plugin._setting(_config(None, "30"), "examples") == 30
    with pytest.raises(pytest.UsageError, match="pgverify_examples = 'many' is not an integer"):
        pytest_plugin._setting(_config(None, "many"), "examples")
    with pytest.raises(pytest.UsageError, match="pgverify_examples = 0 is out of range"):
        pytest_plugin._setting(_config(0, "30"), "examples")
    assert pytest_plugin.DEFAULT_EXAMPLES == DEFAULT_EXAMPLES
