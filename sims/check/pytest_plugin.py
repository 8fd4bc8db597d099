"""pytest plugin: the ``pgverify_check`` fixture (registered through the ``pytest11`` entry point).

::

    def test_my_loss(pgverify_check):
        pgverify_check(my_loss, "cispo", eps_high=0.28)   # contract + spec + properties
        pgverify_check(my_other_loss)                      # contract + properties, no spec

    def test_my_plugin(pgverify_objective):
        pgverify_objective("topr")                         # the theory <-> torch battery (sims.check.battery)

The fixture calls ``sims.check.assert_passes`` with the number of random examples and the seed
from the ini options ``pgverify_examples`` (default 100) and ``pgverify_seed`` (default 0), or the
command-line ``--pgverify-examples`` / ``--pgverify-seed``; a failure is an ``AssertionError``
whose message is the report card. Nothing is imported from pgverify until the fixture is used.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

DEFAULT_EXAMPLES = 100  # equals sims.check.runner.DEFAULT_EXAMPLES (tested); not imported: keeps startup light


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pgverify")
    group.addoption("--pgverify-examples", type=int, default=None, metavar="N",
                    help="random inputs per randomised check in the pgverify_check fixture")
    group.addoption("--pgverify-seed", type=int, default=None, metavar="S",
                    help="seed of the pgverify_check fixture's input search")
    parser.addini("pgverify_examples", f"pgverify_check: random inputs per check (default {DEFAULT_EXAMPLES})",
                  default=str(DEFAULT_EXAMPLES))
    parser.addini("pgverify_seed", "pgverify_check: seed of the input search (default 0)", default="0")


def _setting(config: pytest.Config, name: str) -> int:
    value = config.getoption(f"--pgverify-{name}")
    text = str(value) if value is not None else config.getini(f"pgverify_{name}")
    try:
        number = int(text)
    except ValueError:
        raise pytest.UsageError(f"pgverify_{name} = {text!r} is not an integer; allowed: an integer >= "
                                f"{1 if name == 'examples' else 0}") from None
    if number < (1 if name == "examples" else 0):
        raise pytest.UsageError(f"pgverify_{name} = {number} is out of range; allowed: an integer >= "
                                f"{1 if name == 'examples' else 0}")
    return number


@pytest.fixture
def pgverify_check(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``check(fn, spec=None, **spec_params) -> CheckReport``: assert every check passes."""
    from sims.check.api import assert_passes

    examples, seed = _setting(request.config, "examples"), _setting(request.config, "seed")

    def check(fn: Callable[..., Any], spec: str | None = None, **spec_params: Any) -> Any:
        return assert_passes(fn, spec, spec_params=spec_params, examples=examples, seed=seed)

    return check


@pytest.fixture
def pgverify_objective(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``check(objective, configs=None) -> BatteryReport``: assert that a registered objective (a
    plugin's included) or an ``ObjectiveSpec`` passes the theory <-> torch battery, with
    ``pgverify_examples`` random batches and ``pgverify_seed``."""
    from sims.check.battery import check_objective

    examples, seed = _setting(request.config, "examples"), _setting(request.config, "seed")

    def check(objective: Any, configs: Any = None) -> Any:
        report = check_objective(objective, examples=examples, seed=seed, configs=configs)
        if not report.passed:
            raise AssertionError(report.card())
        return report

    return check
