"""Specifications a loss can be checked against (``pgverify check --spec NAME --spec-param k=v``).

A spec is a registry objective (``sims.registry.OBJECTIVES``) with its config, or ``kl``: the KL
penalty ``sims.kl.kl_penalty`` with the second argument read as the reference log-prob (a KL
term's own check: ``fn(logp, ref_logp, adv, mask)``, ``adv`` ignored). Its gradient weights
``w = -∂loss/∂logp`` are the reference; the registry objectives' weights are themselves checked
against the sympy derivations (``tests/theory/test_battery.py``) to 1e-10.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from torch import Tensor

from sims.check.feed import seed_global_rngs
from sims.check.target import UsageError
from sims.kl import KLConfig, kl_penalty
from sims.registry import OBJECTIVES

__all__ = ["Spec", "SPEC_NAMES", "make_spec"]

KL_SPEC = "kl"
SPEC_NAMES = (*OBJECTIVES, KL_SPEC)


@dataclass(frozen=True)
class Spec:
    """A specification: a loss with known gradient weights.

    Attributes:
        name: registry objective name, or ``"kl"``.
        config: its frozen config (the registry default updated by the spec parameters).
        advantage_level: ``"token"`` (A may vary within a sequence), ``"sequence"`` (the spec uses
            the per-sequence mean advantage) or ``"none"`` (a penalty that ignores A).
    """

    name: str
    config: Any
    advantage_level: str
    inputs: tuple[str, ...] = ()
    exempt: tuple[tuple[str, str], ...] = ()

    @property
    def is_penalty(self) -> bool:
        """True for a penalty term (no advantage): advantage properties do not apply."""
        return self.advantage_level == "none"

    @property
    def needs_rollout(self) -> bool:
        """True when the spec reads the rollout policy's log-probs (training/rollout correction)."""
        return "rollout_logp" in self.inputs

    @property
    def labels(self) -> tuple[str, str]:
        """How the second input and the ratio are named on the card: a KL penalty's second input is
        the reference policy (π/π_ref), not π_old."""
        return ("ref_logp", "π/π_ref") if self.is_penalty else ("old_logp", "ratio")

    def loss(self, logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor,
             rollout_logp: Tensor | None = None) -> Tensor:
        """The spec's loss on a batch (the user-variant signature; ``rollout_logp`` defaults to
        ``old_logp``, no training/rollout mismatch, when the spec reads it)."""
        if self.name == KL_SPEC:
            return kl_penalty(logp, old_logp, mask, config=self.config)[0]
        extra = {"rollout_logp": old_logp if rollout_logp is None else rollout_logp} if self.needs_rollout else {}
        seed_global_rngs(0)  # as the feed does before each call of the target (Clip-Cov's random pick)
        return OBJECTIVES[self.name].loss_fn(logp, old_logp, adv, mask, config=self.config, **extra)[0]

    def describe(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self.config, f.name)!r}" for f in dataclasses.fields(self.config))
        return f"{self.name}({fields})"


def _config_cls(name: str) -> type:
    return KLConfig if name == KL_SPEC else OBJECTIVES[name].config_cls


def make_spec(name: str, params: Mapping[str, Any] | None = None, *, group_size: int | None = None) -> Spec:
    """The spec ``name`` with config fields ``params`` (values already parsed).

    ``group_size`` fills the config's ``group_size`` when the spec does not set it (the checker's
    batches come in groups of that many rows). Raises ``UsageError`` for an unknown spec or field,
    a bad value (the config's own ``ValueError`` message) or a missing ``max_len`` under
    ``seq-mean-token-sum-norm``.
    """
    if name not in SPEC_NAMES:
        raise UsageError(f"--spec {name!r} is unknown; allowed: {', '.join(SPEC_NAMES)}")
    cls = _config_cls(name)
    params = dict(params or {})
    fields = [f.name for f in dataclasses.fields(cls)]
    for key in params:
        if key not in fields:
            raise UsageError(f"--spec-param {key!r} is not a field of {name}'s config {cls.__name__}; "
                             f"allowed: {', '.join(fields)}")
    if params.get("group_size") is None and group_size is not None and "group_size" in fields:
        params["group_size"] = group_size
    try:
        config = cls(**params)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--spec-param for {name}: {exc}") from exc
    if getattr(config, "agg", None) == "seq-mean-token-sum-norm" and config.max_len is None:
        raise UsageError(f"--spec-param max_len is required by {name} with agg='seq-mean-token-sum-norm'; "
                         "allowed: a positive int (the generation budget)")
    if name == KL_SPEC:
        return Spec(name, config, "none")
    entry = OBJECTIVES[name]
    return Spec(name, config, entry.advantage_level, tuple(getattr(entry, "inputs", ())),
                tuple(getattr(entry, "exempt_properties", ())))

