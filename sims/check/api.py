"""The checks as plain functions, for users' own test suites.

::

    from sims.check import assert_matches_spec, assert_passes

    def test_my_cispo_matches_the_registry():
        assert_matches_spec(my_cispo_loss, "cispo", eps_high=0.28)

    def test_my_loss_has_the_basic_properties():
        assert_passes(my_loss)            # contract + property battery, no spec

Each raises ``AssertionError`` whose message is the report card (every check with its evidence,
the smallest failing input for a failed randomised check), and returns the ``CheckReport`` when
everything passed. Bad arguments (unknown spec or config field, a signature that is not
``fn(logp, old_logp, adv, mask)``) raise ``UsageError``, a ``ValueError``. The pytest plugin
(``sims.check.pytest_plugin``) wraps them in the ``pgverify_check`` fixture.
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Mapping

from sims.check.inputs import Layout
from sims.check.result import KINDS
from sims.check.runner import DEFAULT_EXAMPLES, CheckReport, run_checks
from sims.check.feed import DTYPES, Feed, aliases_for, resolve_names
from sims.check.specs import make_spec
from sims.check.target import UsageError, bind_params, callable_name

__all__ = ["check", "assert_matches_spec", "assert_passes"]


def check(fn: Callable[..., Any], spec: str | None = None, *, spec_params: Mapping[str, Any] | None = None,
          params: Mapping[str, Any] | None = None, kinds: Collection[str] = KINDS,
          group_size: int = Layout.group_size, examples: int = DEFAULT_EXAMPLES, seed: int = 0,
          rtol: float | None = None, dtype: str = "float64", mask_dtype: str = "bool", adv_shape: str = "token",
          strict_constants: bool = False, args: Mapping[str, str] | None = None) -> CheckReport:
    """Run ``pgverify check`` on a callable and return its report (never raises on a failed check).

    Args:
        fn: the loss, ``fn(logp, old_logp, adv, mask) -> loss | (loss, diagnostics)``, or with a
            trainer's argument names (``sims.check.feed.ALIASES``; others through ``args``).
        spec: a registry objective name or ``"kl"``; None for no spec checks.
        spec_params: the spec's config fields (``--spec-param``); ``group_size`` defaults to ours.
        params: ``fn``'s own keyword settings (``--param``).
        kinds: sections to run (``contract``, ``spec``, ``property``, ``profile``).
        group_size: K, rows per group in the generated batches.
        examples: random inputs per randomised check.
        seed: seed of the input search (same seed, same inputs, same report).
        rtol: tolerance of the spec weight comparison; None: the dtype's default.
        dtype, mask_dtype, adv_shape, strict_constants: how inputs are fed (``sims.check.feed.Feed``).
        args: pgverify input -> ``fn``'s parameter name (``--arg``).
    """
    if dtype not in DTYPES:
        raise UsageError(f"dtype {dtype!r} is invalid; allowed: {', '.join(DTYPES)}")
    bound = bind_params(fn, params)
    made = None if spec is None else make_spec(spec, spec_params, group_size=group_size)
    try:
        feed = Feed(dtype=DTYPES[dtype], mask_dtype=mask_dtype, adv_shape=adv_shape,
                    strict_constants=strict_constants,
                    names=resolve_names(bound, args, aliases=aliases_for(made)))
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return run_checks(bound, target=callable_name(fn), spec=made, layout=Layout(group_size=group_size),
                      examples=examples, seed=seed, rtol=rtol, kinds=kinds, feed=feed)


def assert_matches_spec(fn: Callable[..., Any], spec: str, *, examples: int = DEFAULT_EXAMPLES, seed: int = 0,
                        group_size: int = Layout.group_size, rtol: float | None = None,
                        **spec_params: Any) -> CheckReport:
    """Assert that ``fn`` keeps the contract and has ``spec``'s gradient weights and regions.

    ``spec_params`` are the spec's config fields, e.g. ``assert_matches_spec(fn, "cispo",
    eps_high=0.28)``. Runs the contract and spec sections (not the property battery: a spec match
    implies the spec's properties). Raises ``AssertionError`` with the report card on a failure.
    """
    report = check(fn, spec, spec_params=spec_params, kinds=("contract", "spec"), group_size=group_size,
                   examples=examples, seed=seed, rtol=rtol)
    return _assert(report)


def assert_passes(fn: Callable[..., Any], spec: str | None = None, *, spec_params: Mapping[str, Any] | None = None,
                  examples: int = DEFAULT_EXAMPLES, seed: int = 0, group_size: int = Layout.group_size,
                  rtol: float | None = None) -> CheckReport:
    """Assert that every contract, spec (if ``spec``) and property check passes (no profile).

    Raises ``AssertionError`` with the report card on a failure.
    """
    report = check(fn, spec, spec_params=spec_params, kinds=("contract", "spec", "property"),
                   group_size=group_size, examples=examples, seed=seed, rtol=rtol)
    return _assert(report)


def _assert(report: CheckReport) -> CheckReport:
    if not report.passed:
        summary = (f"pgverify check {report.target}: {len(report.failed)} of {len(report.checks)} checks failed: "
                   + "; ".join(r.name for r in report.failed))
        raise AssertionError(summary + "\n\n" + report.card())
    return report
