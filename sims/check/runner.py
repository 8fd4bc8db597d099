"""Run every check on one loss and collect the report card (``pgverify check``'s engine)."""

from __future__ import annotations

import importlib.metadata
import platform
import textwrap
import time
import traceback
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Collection

import torch

from sims.check.contract import (
    check_constants,
    check_determinism,
    check_extremes,
    check_returns,
)
from sims.check.feed import Feed, adapt, aliases_for, default_rtol, resolve_names
from sims.check.inputs import Layout, VariantError
from sims.check.profile import ProfileCache, bias_variance_profile
from sims.check.properties import (
    PROPERTIES,
    PROPERTY_NAMES,
    batch_scaling,
    check_microbatch,
    check_padding,
    check_permutation,
    prop_rtol,
    scale_pattern,
)
from sims.check.regions import format_map, region_map
from sims.check.result import KINDS, CheckResult
from sims.check.spec_check import check_spec_regions, check_spec_weights
from sims.check.specs import Spec
from sims.report import jsonable

__all__ = ["CheckReport", "CheckInternalError", "run_checks", "DEFAULT_EXAMPLES"]

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

    def card(self, verbose: bool = False) -> str:
        """The human-readable report card (``verbose``: every passing check's full evidence too)."""
        s = self.settings
        lines = [f"pgverify check {self.target}" + (f"  (spec: {self.spec})" if self.spec else ""),
                 f"inputs: batches of G <= {s.get('max_groups')} groups x K = {s.get('group_size')} rows, "
                 f"T <= {s.get('max_width')}; {s.get('examples')} examples per randomised check; seed {s.get('seed')}; "
                 f"spec tolerance {s.get('rtol')}"]
        if s.get("feed"):
            lines.append(f"fed: {s['feed']}")
        raised: dict[str, str] = {}  # an exception of the loss, shown once: its first line -> check name
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
                first = r.detail.splitlines()[0] if r.detail else ""
                if not r.passed and first.startswith("raised ") and first in raised and not verbose:
                    lines.append(" " * 8 + f"the loss raised the same exception as in {raised[first]!r}")
                    continue
                if not r.passed and first.startswith("raised "):
                    raised[first] = r.name
                detail = r.detail if (verbose or not r.passed) else first
                lines.append(textwrap.indent(detail, " " * 8))
        n = len(self.checks)
        verdict = (f"PASSED: all {n} checks passed" if self.passed else
                   f"FAILED: {len(self.failed)} of {n} checks failed: " + "; ".join(r.name for r in self.failed))
        lines += ["", f"{verdict} ({self.seconds:.1f} s)"]
        return "\n".join(lines) + "\n"


class CheckInternalError(Exception):
    """pgverify itself failed while checking (not the loss under test): the CLI exits with 3.

    Attributes:
        report: the ``CheckReport`` of the checks that finished before the failure.
        traceback: the formatted traceback.
    """

    def __init__(self, report: "CheckReport", traceback_text: str, step: str) -> None:
        super().__init__(f"internal error of pgverify during {step!r}")
        self.report = report
        self.traceback = traceback_text
        self.step = step


def run_checks(fn: Callable[..., Any], *, target: str = "<callable>", spec: Spec | None = None,
               layout: Layout = Layout(), examples: int = DEFAULT_EXAMPLES, seed: int = 0,
               rtol: float | None = None, kinds: Collection[str] = KINDS,
               progress: Callable[[str], None] | None = None, feed: Feed | None = None,
               profile_table: bool = True, cache: ProfileCache | None = None) -> CheckReport:
    """Run the contract, spec (if ``spec``) and property checks, and the profile (if ``profile``).

    Args:
        fn: the loss, ``fn(logp, old_logp, adv, mask) -> loss | (loss, diagnostics)`` (or a trainer's
            own argument names, see ``feed``), its settings bound.
        target: how it was named (for the card).
        spec: the specification to compare with (``sims.check.specs.make_spec``), or None.
        layout: the shape of the random batches.
        examples: random inputs per randomised check (Hypothesis ``max_examples``).
        seed: seed of the input search; the same seed gives the same inputs and card.
        rtol: tolerance of the spec weight comparison; None: ``feed.default_rtol(feed.dtype)``.
        kinds: which sections to run, of ``contract``, ``spec`` (needs ``spec``), ``property`` and
            ``profile`` (the characterisations and the bias/variance table: the slowest part).
        progress: called with each step's name (e.g. to print it).
        feed: how inputs reach the loss (dtype, mask dtype, advantage shape, argument names,
            strict constants); None: the defaults, with argument names resolved from ``fn``.
        profile_table: include the exact bias/variance table (the profile's slowest entry).
        cache: where the registry's part of that table is cached (None: the default cache).

    Raises:
        CheckInternalError: pgverify itself failed; it carries the report of what ran.
    """
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"kinds={unknown!r} is invalid; allowed: a subset of {', '.join(KINDS)}")
    if set(kinds) == {"spec"} and spec is None:
        raise ValueError("kinds=('spec',) needs a spec; allowed: spec=make_spec(...) or other kinds")
    feed = Feed(names=resolve_names(fn, aliases=aliases_for(spec))) if feed is None else feed
    # the spec tolerance follows the dtype; an explicit rtol (a loss computing internally in a
    # lower precision than it is fed) loosens the invariance tolerance to match
    prop = prop_rtol(feed.dtype) if rtol is None else max(prop_rtol(feed.dtype), rtol)
    rtol = default_rtol(feed.dtype) if rtol is None else rtol
    layout = replace(layout, rollout=feed.takes_rollout or (spec is not None and spec.needs_rollout),
                     per_sequence_adv=feed.adv_shape == "sequence", round_to=feed.dtype,
                     labels=spec.labels if spec is not None else layout.labels)
    loss = adapt(fn, feed)
    start = time.perf_counter()
    say = progress or (lambda _msg: None)
    results: list[CheckResult] = []
    settings = {"group_size": layout.group_size, "max_groups": layout.max_groups, "max_width": layout.max_width,
                "examples": examples, "seed": seed, "rtol": rtol, "property_rtol": prop,
                "kinds": [k for k in KINDS if k in kinds],
                "feed": feed.describe("ref_logp" if layout.labels[0] == "ref_logp" else "old_logp and adv"),
                "dtype": str(feed.dtype).replace("torch.", ""), "mask_dtype": feed.mask_dtype,
                "adv_shape": feed.adv_shape, "strict_constants": feed.strict_constants,
                "arguments": dict(feed.names), "rollout": layout.rollout, "versions": _versions()}

    def report() -> CheckReport:
        return CheckReport(target, None if spec is None else spec.describe(), tuple(results),
                           time.perf_counter() - start, settings)

    def run(label: str, make: Callable[[], CheckResult | list[CheckResult]], keep: bool = True) -> Any:
        say(label)
        try:
            out = make()
        except Exception as exc:  # a failure of pgverify itself: keep what ran, with the traceback
            raise CheckInternalError(report(), traceback.format_exc(), label) from exc
        if keep:
            results.extend(out if isinstance(out, list) else [out])
        return out

    kw = lambda offset: {"examples": examples, "seed": seed + offset}  # noqa: E731  (fixed per check)
    # always: every other check needs a loss to call
    returned = run("contract: returns", lambda: check_returns(loss, layout, **kw(0)), keep=False)
    if "contract" in kinds:
        results.append(returned)
        if feed.strict_constants:
            strict = adapt(fn, replace(feed, strict_constants=True))
            run("contract: constants", lambda: check_constants(strict, layout, **kw(1)))
        run("contract: extremes", lambda: check_extremes(loss, layout))
        if returned.passed:
            run("contract: determinism", lambda: check_determinism(
                lambda rng: adapt(fn, replace(feed, rng_seed=rng)), layout, **kw(9)))
    if "spec" in kinds and spec is not None:
        run("spec: weights", lambda: check_spec_weights(loss, spec, layout, rtol=rtol, **kw(2)))
        run("spec: regions", lambda: check_spec_regions(loss, spec, layout, rtol=max(rtol, 1e-6)))
    if "property" in kinds:
        penalty = spec is not None and spec.is_penalty
        exempt = dict(spec.exempt) if spec is not None else {}
        chosen = (check_padding, check_permutation) if penalty else PROPERTIES
        for i, check in enumerate(chosen):
            name = PROPERTY_NAMES[check]
            if name in exempt:
                results.append(CheckResult(name, "profile", None, f"not applicable to spec {spec.name!r} by "
                                           f"design: {exempt[name]}"))
                continue
            run(f"property: {name}", lambda p=check, i=i: p(loss, layout, rtol=prop, **kw(3 + i)))
        if feed.takes_normalisers:
            run("property: micro-batches", lambda: check_microbatch(loss, layout, rtol=max(prop, rtol * 1e-3),
                                                                    **kw(10)))
        elif "profile" in kinds:
            results.append(CheckResult("micro-batches sum to the batch", "profile", None,
                                       "not run: the loss takes no global normaliser (global_tokens / "
                                       "global_sequences, or a trainer's num_items_in_batch, batch_num_tokens, "
                                       "global_batch_size; --arg global_tokens=NAME)"))
        if penalty:
            results.append(CheckResult("advantage properties", "profile", None,
                                       f"not applicable: spec {spec.name!r} is a penalty term that ignores A"))
    if not returned.passed and "contract" not in kinds:
        results.insert(0, returned)  # the reason nothing else could be trusted
    if "contract" in kinds and "profile" in kinds and not feed.strict_constants:
        results.append(CheckResult("constant inputs", "profile", None,
                                   "old_logp and adv were fed without requires_grad, as trainers pass them from "
                                   "no-grad passes (an undetached ratio still shows in the weights); "
                                   "--strict-constants also checks that their gradient is zero"))
    if "profile" in kinds and returned.passed:
        run("profile: scale pattern", lambda: _guard("on-policy scale and aggregation",
                                                     lambda: scale_pattern(loss, layout, rtol)))
        run("profile: batch scaling", lambda: _guard("batch-size scaling", lambda: batch_scaling(loss, layout)))
        run("profile: regions", lambda: _guard("zero-weight regions and ratio bounds", lambda: CheckResult(
            "zero-weight regions and ratio bounds", "profile", None,
            format_map(region_map(loss, layout.group_size, detect_underflow=layout.round_to == torch.float64),
                       penalty=spec is not None and spec.is_penalty))))
        if (spec is None or not spec.is_penalty) and profile_table:
            run("profile: bias and variance", lambda: _guard("bias and variance profile",
                                                             lambda: bias_variance_profile(loss, spec=spec,
                                                                                           cache=cache)))
        elif not profile_table:
            results.append(CheckResult("bias and variance profile", "profile", None,
                                       "not run (--no-profile-table)"))
    return report()


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
