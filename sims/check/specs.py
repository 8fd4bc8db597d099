"""Specifications a loss can be checked against (``pgverify check --spec NAME --spec-param k=v``).

A spec is a registry objective (``sims.registry.OBJECTIVES``) with its config, or ``kl``: the KL
penalty ``sims.kl.kl_penalty`` with the second argument read as the reference log-prob (a KL
term's own check: ``fn(logp, ref_logp, mask)``, advantages ignored; with ``is_correction=true``
the off-policy KL ``fn(logp, ref_logp, mask, old_logp)`` gets the sampling policy's log-probs as
its third tensor, fed in the rollout slot). Its gradient weights
``w = -∂loss/∂logp`` are the reference; the registry objectives' weights are themselves checked
against the sympy derivations (``tests/theory/test_battery.py``) to 1e-10.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from torch import Tensor

from sims.check.feed import seed_global_rngs
from sims.check.target import UsageError
from sims.kl import KLConfig, kl_penalty
from sims.registry import OBJECTIVES

__all__ = ["Spec", "SPEC_NAMES", "make_spec"]

KL_SPEC = "kl"
SPEC_NAMES = (*OBJECTIVES, KL_SPEC)
COMPOSE = "+"
_ADVANTAGE_FREE = ("zero advantage, zero weight", "advantage scale equivariance", "on-policy reduction to REINFORCE")
PENALTY_FIELDS = ("coef", "reference")


def _penalty(name: str, params: dict[str, Any], group_size: int | None) -> "Penalty":
    """The ``Penalty`` of ``OBJECTIVE+kl`` from its ``kl.*`` spec parameters: ``kl.coef`` (β,
    required), ``kl.reference`` (``third`` default, or ``old``) and any ``KLConfig`` field."""
    if "coef" not in params:
        raise UsageError(f"--spec {name} needs --spec-param kl.coef=BETA; allowed: a number >= 0")
    coef, reference = params.pop("coef"), params.pop("reference", "third")
    if not isinstance(coef, (int, float)) or isinstance(coef, bool) or not coef >= 0:
        raise UsageError(f"--spec-param kl.coef={coef!r} is invalid; allowed: a number >= 0")
    if reference not in ("third", "old"):
        raise UsageError(f"--spec-param kl.reference={reference!r} is invalid; allowed: third (a reference policy "
                         "fed as the third tensor) or old (the penalty is to old_logp)")
    fields = [f.name for f in dataclasses.fields(KLConfig)]
    for key in params:
        if key not in fields:
            raise UsageError(f"--spec-param kl.{key} is not a field of KLConfig; allowed: "
                             f"{', '.join('kl.' + f for f in (*PENALTY_FIELDS, *fields))}")
    if params.get("group_size") is None and group_size is not None:
        params["group_size"] = group_size
    try:
        config = KLConfig(**params)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--spec-param kl.*: {exc}") from exc
    if config.is_correction:
        raise UsageError("--spec-param kl.is_correction=true is not supported in a composition; allowed: check "
                         "the IS-corrected KL term on its own with --spec kl")
    return Penalty(float(coef), config, reference)


@dataclass(frozen=True)
class Spec:
    """A specification: a loss with known gradient weights.

    Attributes:
        name: registry objective name, or ``"kl"``.
        config: its frozen config (the registry default updated by the spec parameters).
        advantage_level: ``"token"`` (A may vary within a sequence), ``"sequence"`` (the spec uses
            the per-sequence mean advantage) or ``"none"`` (a penalty that ignores A).
        weights: for a user's derivation (``--theory``, ``sims.variants.theory_spec``),
            ``fn(logp, old_logp, adv, mask, config) -> w [B, T]``, the derived weights; the spec's
            loss is then the surrogate ``−Σ sg(w)·logp``, whose weights are exactly ``w``.
    """

    name: str
    config: Any
    advantage_level: str
    inputs: tuple[str, ...] = ()
    exempt: tuple[tuple[str, str], ...] = ()
    penalty: Penalty | None = None
    weights: Callable[..., Tensor] | None = None

    @property
    def is_penalty(self) -> bool:
        """True for a penalty term (no advantage): advantage properties do not apply."""
        return self.advantage_level == "none"

    @property
    def base(self) -> str:
        """The registry objective (or ``kl``) without a composed penalty."""
        return self.name.split(COMPOSE, 1)[0]

    @property
    def needs_rollout(self) -> bool:
        """True when the spec reads the rollout policy's log-probs (training/rollout correction)."""
        return "rollout_logp" in self.inputs

    @property
    def labels(self) -> tuple[str, str, str]:
        """How the second input, the ratio and the third input are named on the card: a KL
        penalty's second input is the reference policy (π/π_ref), not π_old, and its third (an
        IS-corrected KL) the policy that sampled the tokens."""
        if self.is_penalty:
            return ("ref_logp", "π/π_ref", "sampling_logp")
        if self.penalty is not None and self.penalty.reference == "third":
            return ("old_logp", "ratio", "ref_logp")
        return ("old_logp", "ratio", "rollout_logp")

    def loss(self, logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor,
             rollout_logp: Tensor | None = None) -> Tensor:
        """The spec's loss on a batch (the user-variant signature; ``rollout_logp`` defaults to
        ``old_logp``, no training/rollout mismatch, when the spec reads it)."""
        if self.weights is not None:
            return -(self.weights(logp, old_logp, adv, mask, self.config) * logp).sum()
        if self.name == KL_SPEC:  # the second input is the reference; the third, if any, the sampling policy
            # no third policy in the batch: it is the second, as the feed does for the loss under test
            sampling = {"old_logp": old_logp if rollout_logp is None else rollout_logp} \
                if self.config.is_correction else {}
            return kl_penalty(logp, old_logp, mask, config=self.config, **sampling)[0]
        base_inputs = OBJECTIVES[self.base].inputs
        third = old_logp if rollout_logp is None else rollout_logp
        extra = {"rollout_logp": third} if "rollout_logp" in base_inputs else {}
        seed_global_rngs(0)  # as the feed does before each call of the target (Clip-Cov's random pick)
        loss = OBJECTIVES[self.base].loss_fn(logp, old_logp, adv, mask, config=self.config, **extra)[0]
        if self.penalty is None:
            return loss
        ref = old_logp if self.penalty.reference == "old" else third
        return loss + self.penalty.coef * kl_penalty(logp, ref, mask, config=self.penalty.config)[0]

    def describe(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self.config, f.name)!r}" for f in dataclasses.fields(self.config))
        text = f"{self.base}({fields})"
        if self.penalty is not None:
            text += f" + {self.penalty.describe()}"
        return text


@dataclass(frozen=True)
class Penalty:
    """A KL penalty composed with an objective: ``coef · kl_penalty(logp, ref, mask)``.

    Attributes:
        coef: β (>= 0).
        config: the ``KLConfig`` (estimator, aggregation).
        reference: ``"old"`` (the penalty is to π_old itself, as DRO's ½β(ℓ − ℓ_old)² = β·k2) or
            ``"third"`` (to a reference policy fed as the third tensor, as GRPO's β·k3 to π_ref).
    """

    coef: float
    config: KLConfig
    reference: str = "third"

    def describe(self) -> str:
        target = "old_logp" if self.reference == "old" else "ref_logp"
        return f"{self.coef:g} x kl({self.config.estimator}, agg={self.config.agg}, to {target})"


def _config_cls(name: str) -> type:  # noqa: D103
    return KLConfig if name == KL_SPEC else OBJECTIVES[name].config_cls


def make_spec(name: str, params: Mapping[str, Any] | None = None, *, group_size: int | None = None) -> Spec:
    """The spec ``name`` with config fields ``params`` (values already parsed).

    ``group_size`` fills the config's ``group_size`` when the spec does not set it (the checker's
    batches come in groups of that many rows). Raises ``UsageError`` for an unknown spec or field,
    a bad value (the config's own ``ValueError`` message) or a missing ``max_len`` under
    ``seq-mean-token-sum-norm``.
    """
    params = dict(params or {})
    if isinstance(params.get("kl"), dict):  # dotted kl.FIELD=VALUE parsed as a nested mapping
        params |= {f"kl.{k}": v for k, v in params.pop("kl").items()}
    base, plus, extra = name.partition(COMPOSE)
    if plus:
        if extra != KL_SPEC or base not in OBJECTIVES:
            raise UsageError(f"--spec {name!r} is unknown; allowed: {', '.join(SPEC_NAMES)}, or OBJECTIVE+kl "
                             "(an objective plus a KL penalty)")
        penalty = _penalty(name, {k[len("kl."):]: params.pop(k) for k in list(params) if k.startswith("kl.")},
                           group_size)
        spec = make_spec(base, params, group_size=group_size)
        inputs = tuple(dict.fromkeys(spec.inputs + (("rollout_logp",) if penalty.reference == "third" else ())))
        exempt = dict(spec.exempt) | {p: f"the KL penalty of {name!r} does not scale with A" for p in _ADVANTAGE_FREE}
        return dataclasses.replace(spec, name=name, inputs=inputs, exempt=tuple(exempt.items()), penalty=penalty)
    if name not in OBJECTIVES and name != KL_SPEC:  # OBJECTIVES, not SPEC_NAMES: plugins loaded later count
        raise UsageError(f"--spec {name!r} is unknown; allowed: {', '.join((*OBJECTIVES, KL_SPEC))}, or OBJECTIVE+kl "
                         "(an objective plus a KL penalty)")
    cls = _config_cls(name)
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
        return Spec(name, config, "none", ("rollout_logp",) if config.is_correction else ())
    entry = OBJECTIVES[name]
    return Spec(name, config, entry.advantage_level, tuple(getattr(entry, "inputs", ())),
                tuple(getattr(entry, "exempt_properties", ())))

