"""What a check returns, and the counterexample search every randomised check uses."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from hypothesis import HealthCheck, Phase, find, settings
from hypothesis.errors import Flaky, NoSuchExample
from hypothesis.strategies import SearchStrategy
from torch import Tensor

from sims.check.inputs import VariantError, simpler

__all__ = ["CheckResult", "Search", "search", "randomised_check", "max_mismatch", "KINDS"]

KINDS = ("contract", "spec", "property", "profile")
NOT_REPRODUCED = ("a failure was seen, but it did not reproduce on the same input: the loss is non-deterministic "
                  "(see the determinism check); this counts as a failure, never as a pass")
SHRINK_BUDGET = 100
SIMPLIFY_BUDGET = 60


@dataclass(frozen=True)
class CheckResult:
    """One line of the report card.

    Attributes:
        name: what was checked.
        kind: ``contract``, ``spec``, ``property`` (pass/fail) or ``profile`` (a measured
            description that passes or fails nothing; ``passed`` is None).
        passed: True/False, or None for a profile entry.
        detail: the evidence, readable (counterexample, numbers, table).
        data: the same evidence as JSON-ready values.
    """

    name: str
    kind: str
    passed: bool | None
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} is invalid; allowed: {', '.join(KINDS)}")
        if (self.kind == "profile") != (self.passed is None):
            raise ValueError(f"passed={self.passed!r} is invalid for kind={self.kind!r}; allowed: None for "
                             "a profile entry, True/False otherwise")

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "passed": self.passed, "detail": self.detail,
                "data": self.data}


@dataclass(frozen=True)
class Search:
    """Outcome of ``search``: examples tried, and the smallest failing example with its reason."""

    tried: int
    example: Any = None
    reason: str | None = None

    @property
    def failed(self) -> bool:
        return self.reason is not None


def search(strategy: SearchStrategy, failure: Callable[[Any], str | None], *, examples: int,
           seed: int, simplify: Callable[[Any], list[Any]] = simpler) -> Search:
    """Look for an input on which ``failure`` returns a reason, with Hypothesis.

    Up to ``examples`` inputs are generated (from ``seed``: the same seed, the same inputs); the
    first failing one is shrunk by Hypothesis within ``SHRINK_BUDGET`` further calls of ``failure``,
    then greedily by ``simplify`` (the first smaller variant that still fails replaces it, until
    none does; at most ``SIMPLIFY_BUDGET`` calls), and ``failure`` is called once more on the
    result for the reason shown.
    """
    tried = shrink_calls = 0
    smallest: list[Any] = []  # the last failing input seen (the shrinker only tries smaller ones)

    def fails(x: Any) -> bool:
        nonlocal tried, shrink_calls
        if smallest:  # shrinking, within a fixed budget of calls (not time): reproducible
            shrink_calls += 1
            if shrink_calls > SHRINK_BUDGET:
                raise _BudgetSpent
        else:
            tried += 1
        if failure(x) is None:
            return False
        smallest[:] = [x]
        return True

    # from Hypothesis' default profile, not the loaded one: a user's (or our CI's) profile must not
    # change which inputs are tried
    cfg = settings(settings.get_profile("default"), max_examples=examples, database=None, deadline=None,
                   derandomize=False, phases=[Phase.generate, Phase.shrink],
                   suppress_health_check=list(HealthCheck))
    try:
        example = find(strategy, fails, settings=cfg, random=random.Random(seed))
    except NoSuchExample:
        return Search(tried)
    except _BudgetSpent:
        example = smallest[0]
    except Flaky:  # a failure seen once did not reproduce on the same input: never a pass
        return Search(tried, smallest[0] if smallest else None, NOT_REPRODUCED)
    example = _simplify(example, failure, simplify)
    reason = failure(example)
    return Search(tried, example, NOT_REPRODUCED if reason is None else reason)


def _simplify(example: Any, failure: Callable[[Any], str | None], simplify: Callable[[Any], list[Any]]) -> Any:
    calls = 0
    while calls < SIMPLIFY_BUDGET:
        for candidate in simplify(example):
            calls += 1
            if failure(candidate) is not None:
                example = candidate
                break
            if calls >= SIMPLIFY_BUDGET:
                return example
        else:
            return example
    return example


def randomised_check(name: str, kind: str, strategy: SearchStrategy, failure: Callable[[Any], str | None], *,
                     examples: int, seed: int, claim: str,
                     show: Callable[[Any], str] = lambda b: b.describe()) -> CheckResult:
    """A pass/fail check by ``search``: passes with ``claim`` when no input fails; else fails with
    the reason and the smallest failing input, shown by ``show``. A ``VariantError`` (the loss
    raised or returned a non-loss) counts as a failure with its message."""
    def guarded(case: Any) -> str | None:
        try:
            return failure(case)
        except VariantError as exc:
            return str(exc)

    found = search(strategy, guarded, examples=examples, seed=seed)
    if found.failed:
        shown = "(no input kept)" if found.example is None else show(found.example)
        data: dict[str, Any] = {"tried": found.tried, "reason": found.reason}
        batch = found.example[0] if isinstance(found.example, tuple) and found.example else found.example
        if hasattr(batch, "as_json"):
            data["input"] = batch.as_json()  # the full tensors: the counterexample can be rebuilt exactly
        return CheckResult(name, kind, False, f"{found.reason}\nsmallest failing input found (of {found.tried} "
                           f"tried):\n{shown}", data)
    return CheckResult(name, kind, True, f"{found.tried} random batches: {claim}", {"tried": found.tried})


class _BudgetSpent(BaseException):
    """Raised inside Hypothesis to end shrinking (a BaseException, so it is not a test failure)."""


def max_mismatch(actual: Tensor, expected: Tensor, mask: Tensor) -> tuple[float, float]:
    """(max |actual - expected| over valid tokens, the scale max(|expected|, |actual|, tiny))."""
    valid = mask > 0
    err = float((actual - expected).abs()[valid].max()) if bool(valid.any()) else 0.0
    scale = max(float(expected.abs()[valid].max()), float(actual.abs()[valid].max()),
                float(torch.finfo(torch.float64).tiny))
    return err, scale

