"""Run every check on one loss and collect the report card (``pgverify check``'s engine)."""

from __future__ import annotations

import importlib.metadata
import platform
import textwrap
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Collection

from sims.check.contract import check_constants, check_extremes, check_returns
from sims.check.inputs import Layout, VariantError
from sims.check.profile import bias_variance_profile
from sims.check.properties import PROPERTIES, batch_scaling, check_padding, check_permutation, scale_pattern
from sims.check.regions import format_map, region_map
from sims.check.result import KINDS, CheckResult
from sims.check.spec_check import SPEC_RTOL, check_spec_regions, check_spec_weights
from sims.check.specs import Spec
from sims.report import jsonable

__all__ = ["CheckReport", "run_checks", "DEFAULT_EXAMPLES"]

DEFAULT_EXAMPLES = 100
SECTIONS = (("contract", "CONTRACT"), ("spec", "SPEC"), ("property", "PROPERTIES"), ("profile", "PROFILE"))


@dataclass(frozen=True)
class CheckReport:
    """Every check's result for one loss.

    ``passed`` is True when every contract, spec and property check passed (profile entries
    describe and never fail); ``as_dict`` is the ``--json`` document.
    """

    target: str
    spec: str | None
    results: tuple[CheckResult, ...]
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def checks(self) -> list[CheckResult]:
        return [r for r in self.results if r.kind != "profile"]

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.checks if not r.passed]

    @property
    def passed(self) -> bool:
        return not self.failed

    def result(self, name: str) -> CheckResult:
        """The result named ``name`` (KeyError listing the names otherwise)."""
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"no check named {name!r}; allowed: {', '.join(r.name for r in self.results)}")

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` document (strict JSON: non-finite numbers as strings, tuples as lists)."""
        return jsonable({"passed": self.passed, "target": self.target, "spec": self.spec,
                "checks": [r.as_dict() for r in self.checks],
                "profile": [r.as_dict() for r in self.results if r.kind == "profile"],
                "seconds": round(self.seconds, 3), "settings": self.settings})

    def card(self) -> str:
        """The human-readable report card."""
        s = self.settings
        lines = [f"pgverify check {self.target}" + (f"  (spec: {self.spec})" if self.spec else ""),
                 f"inputs: float64 batches of G <= {s.get('max_groups')} groups x K = {s.get('group_size')} rows, "
                 f"T <= {s.get('max_width')}; {s.get('examples')} examples per randomised check; seed {s.get('seed')}"]
        for kind, title in SECTIONS:
            entries = [r for r in self.results if r.kind == kind]
            if not entries:
                continue
            lines += ["", title]
            for r in entries:
                if kind == "profile":
                    lines.append(f"  {r.name}:")
                    lines.append(textwrap.indent(r.detail, " " * 4))
                    continue
                lines.append(f"  {'PASS' if r.passed else 'FAIL'}  {r.name}")
                detail = r.detail if not r.passed else r.detail.splitlines()[0]
                lines.append(textwrap.indent(detail, " " * 8))
        n = len(self.checks)
        verdict = (f"PASSED: all {n} checks passed" if self.passed else
                   f"FAILED: {len(self.failed)} of {n} checks failed: " + "; ".join(r.name for r in self.failed))
        lines += ["", f"{verdict} ({self.seconds:.1f} s)"]
        return "\n".join(lines) + "\n"


def run_checks(fn: Callable[..., Any], *, target: str = "<callable>", spec: Spec | None = None,
               layout: Layout = Layout(), examples: int = DEFAULT_EXAMPLES, seed: int = 0,
               rtol: float = SPEC_RTOL, kinds: Collection[str] = KINDS,
               progress: Callable[[str], None] | None = None) -> CheckReport:
    """Run the contract, spec (if ``spec``) and property checks, and the profile (if ``profile``).

    Args:
        fn: the loss, ``fn(logp, old_logp, adv, mask) -> loss | (loss, diagnostics)``, its settings bound.
        target: how it was named (for the card).
        spec: the specification to compare with (``sims.check.specs.make_spec``), or None.
        layout: the shape of the random batches.
        examples: random inputs per randomised check (Hypothesis ``max_examples``).
        seed: seed of the input search; the same seed gives the same inputs and card.
        rtol: tolerance of the spec weight comparison.
        kinds: which sections to run, of ``contract``, ``spec`` (needs ``spec``), ``property`` and
            ``profile`` (the characterisations and the bias/variance table: the slowest part).
        progress: called with each step's name (e.g. to print it).
    """
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"kinds={unknown!r} is invalid; allowed: a subset of {', '.join(KINDS)}")
    if set(kinds) == {"spec"} and spec is None:
        raise ValueError("kinds=('spec',) needs a spec; allowed: spec=make_spec(...) or other kinds")
    start = time.perf_counter()
    say = progress or (lambda _msg: None)
    results: list[CheckResult] = []

    def run(label: str, make: Callable[[], CheckResult | list[CheckResult]]) -> None:
        say(label)
        out = make()
        results.extend(out if isinstance(out, list) else [out])

    kw = lambda offset: {"examples": examples, "seed": seed + offset}  # noqa: E731  (fixed per check)
    returns = check_returns(fn, layout, **kw(0))  # always: every other check needs a loss to call
    if "contract" in kinds:
        results.append(returns)
        run("contract: constants", lambda: check_constants(fn, layout, **kw(1)))
        run("contract: extremes", lambda: check_extremes(fn, layout))
    if "spec" in kinds and spec is not None:
        run("spec: weights", lambda: check_spec_weights(fn, spec, layout, rtol=rtol, **kw(2)))
        run("spec: regions", lambda: check_spec_regions(fn, spec, layout))
    if "property" in kinds:
        penalty = spec is not None and spec.is_penalty
        for i, prop in enumerate((check_padding, check_permutation) if penalty else PROPERTIES):
            run(f"property: {prop.__name__}", lambda p=prop, i=i: p(fn, layout, **kw(3 + i)))
        if penalty:
            results.append(CheckResult("advantage properties", "profile", None,
                                       f"not applicable: spec {spec.name!r} is a penalty term that ignores A"))
    if not returns.passed and "contract" not in kinds:
        results.insert(0, returns)  # the reason nothing else could be trusted
    if "profile" in kinds and returns.passed:
        run("profile: scale pattern", lambda: _guard("on-policy scale and aggregation", lambda: scale_pattern(fn, layout)))
        run("profile: batch scaling", lambda: _guard("batch-size scaling", lambda: batch_scaling(fn, layout)))
        run("profile: regions", lambda: _guard("zero-weight regions and ratio bounds", lambda: CheckResult(
            "zero-weight regions and ratio bounds", "profile", None, format_map(region_map(fn, layout.group_size)))))
        if spec is None or not spec.is_penalty:
            run("profile: bias and variance", lambda: _guard("bias and variance profile",
                                                             lambda: bias_variance_profile(fn, spec=spec)))
    settings = {"group_size": layout.group_size, "max_groups": layout.max_groups, "max_width": layout.max_width,
                "examples": examples, "seed": seed, "rtol": rtol, "kinds": [k for k in KINDS if k in kinds],
                "versions": _versions()}
    return CheckReport(target, None if spec is None else spec.describe(), tuple(results),
                       time.perf_counter() - start, settings)


def _versions() -> dict[str, str]:
    """Provenance: the versions the numbers depend on."""
    out = {"python": platform.python_version()}
    for package in ("pgverify", "torch", "hypothesis", "numpy"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def _guard(name: str, make: Callable[[], Any]) -> CheckResult | list[CheckResult]:
    """A profile entry, or a note saying why it could not be computed (the loss raised)."""
    try:
        return make()
    except VariantError as exc:
        return CheckResult(name, "profile", None, f"not available: the loss {exc}")
