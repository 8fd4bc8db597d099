"""User variants as first-class objectives: a derivation file, a torch loss file, or a plugin.

* ``load_theory(target, params)``: a user's derivation ``losses(seq, params)`` (``theory.api``)
  loaded from ``path.py:function``, checked (one expression per token, known symbols, known
  parameters) and turned into a ``TheoryEntry`` with its numeric settings.
* ``theory_spec(...)``: that derivation as a ``pgverify check`` spec (``sims.check.specs.Spec``
  whose weights come from the derivation, ``theory.weights.batch_weights``).
* ``user_objective(...)``: a user's torch loss ``fn(logp, old_logp, adv, mask, **params)`` as an
  ``ObjectiveSpec`` whose ``loss_fn`` honours ``config.agg`` like every registry objective: the
  loss is declared to aggregate with ``declared_agg`` (``--agg``; ``pgverify check`` verifies
  that), its per-token weights are read by autograd and re-normalised to the aggregation asked for.
* ``registered(specs)``: a context manager that adds objectives to ``sims.registry.OBJECTIVES``
  for its duration, so every engine, experiment and algorithm takes them by name.

Every problem with what was asked is a ``sims.check.target.UsageError`` (exit code 2).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch

from sims.aggregation import AggConfig, token_weights
from sims.check.target import UsageError, bind_params, callable_name, load_target
from sims.registry import OBJECTIVES, ObjectiveSpec

__all__ = ["LoadedTheory", "load_theory", "theory_config", "theory_spec", "user_objective", "registered",
           "UserLossConfig"]


@dataclass(frozen=True)
class LoadedTheory:
    """A user's derivation, checked.

    Attributes:
        target: how it was named (``path.py:function``).
        entry: its ``TheoryEntry`` (``theory.api.make_entry``).
        params: its settings (the declared defaults updated by ``--param``), numeric values as floats.
        advantage_level: ``"token"`` or ``"sequence"`` (declared, else detected).
    """

    target: str
    entry: Any
    params: dict[str, Any]
    advantage_level: str


def load_theory(target: str, params: Mapping[str, Any] | None = None) -> LoadedTheory:
    """The derivation named by ``target`` with ``params``; ``UsageError`` for any problem with it."""
    from theory.api import (
        TheoryError,
        advantage_level,
        check_params,
        describe_signature,
        make_entry,
        validate,
    )

    fn = load_target(target)
    params = dict(params or {})
    try:
        describe_signature(fn)
        meta = getattr(fn, "derivation", None)
        declared = dict(meta.params) if meta is not None else None
        entry = make_entry(fn, name=target, params=params)
        check_params(entry, params, declared)
        merged = {**(declared or {}), **params}
        for key, value in merged.items():
            if isinstance(value, dict):
                raise TheoryError(f"--param {key} is a nested mapping; allowed: NAME=VALUE")
        validate(entry, merged)
        level = (meta.advantage_level if meta is not None and meta.advantage_level else
                 advantage_level(entry, merged))
    except TheoryError as exc:
        raise UsageError(f"theory {target!r}: {exc}") from exc
    return LoadedTheory(target, entry, merged, level)


def theory_config(theory: LoadedTheory, *, agg: str = "token-mean", max_len: int | None = None,
                  group_size: int | None = None) -> Any:
    """A frozen config instance with the derivation's settings and the aggregation fields (what
    ``theory.weights.batch_weights`` reads)."""
    fields = [(k, Any, dataclasses.field(default=v)) for k, v in theory.params.items()]
    cls = dataclasses.make_dataclass("TheoryConfig", [*fields, ("agg", str, dataclasses.field(default=agg)),
                                                      ("max_len", Any, dataclasses.field(default=max_len)),
                                                      ("group_size", Any, dataclasses.field(default=group_size))],
                                     frozen=True)
    try:
        return cls(**AggConfig(agg=agg, max_len=max_len, group_size=group_size).__dict__)
    except ValueError as exc:
        raise UsageError(f"theory {theory.target!r}: {exc}") from exc


def theory_spec(target: str, spec_params: Mapping[str, Any] | None = None, *, group_size: int | None = None):
    """``pgverify check --theory TARGET --spec-param k=v``: the derivation as the spec. ``spec_params``
    are the derivation's settings plus ``agg`` (default ``token-mean``) and ``max_len``."""
    from sims.check.specs import Spec
    from theory.weights import _normalisers, batch_weights

    params = dict(spec_params or {})
    agg = params.pop("agg", "token-mean")
    max_len = params.pop("max_len", None)
    params.pop("group_size", None)
    theory = load_theory(target, params)
    if agg == "seq-mean-token-sum-norm" and max_len is None:
        raise UsageError("--spec-param max_len is required with agg='seq-mean-token-sum-norm'; allowed: a positive "
                         "int (the generation budget)")
    config = theory_config(theory, agg=agg, max_len=max_len, group_size=group_size)
    entry = theory.entry

    per_sequence = dataclasses.replace(config, agg="token-sum", max_len=None, group_size=None)

    def weights(logp, old_logp, adv, mask, cfg) -> torch.Tensor:
        """c_i·w_t: the derived per-sequence weights (each distinct row derived once: the region
        map feeds K identical rows) times the derived normaliser of ``cfg.agg`` on this batch."""
        arrays = [x.detach().cpu().to(torch.float64).numpy() for x in (logp, old_logp, adv, mask)]
        t = arrays[0].shape[1]
        rows, inverse = np.unique(np.concatenate(arrays, axis=1), axis=0, return_inverse=True)
        w = batch_weights(entry, *(rows[:, i * t:(i + 1) * t] for i in range(4)), per_sequence)
        lengths = tuple(int(n) for n in (arrays[3] > 0).sum(1))
        c = np.asarray(_normalisers(cfg.agg, lengths, cfg.group_size or 1, cfg.max_len))
        return torch.as_tensor(w[inverse.reshape(-1)] * c[:, None], dtype=logp.dtype, device=logp.device)

    return Spec(f"theory {target}", config, theory.advantage_level, weights=weights)


@dataclass(frozen=True)
class UserLossConfig(AggConfig):
    """Config of a user's torch loss in the registry: only the aggregation fields (its own settings
    are bound with ``--param``). ``agg`` is the aggregation the engine asks for."""


def _reweigh(w: torch.Tensor, mask: torch.Tensor, declared: str, wanted: AggConfig, max_len: int | None) -> torch.Tensor:
    """Weights under ``declared`` aggregation -> under ``wanted``: × c_wanted / c_declared, per token."""
    m = mask.to(w.dtype)
    c_have = token_weights(m, agg=declared, max_len=max_len, group_size=wanted.group_size or 1)
    c_want = token_weights(m, agg=wanted.agg, max_len=wanted.max_len, group_size=wanted.group_size)
    return torch.where(m > 0, w * c_want / torch.where(c_have > 0, c_have, 1.0), 0.0)


def user_objective(name: str, fn: Callable[..., Any], *, declared_agg: str, max_len: int | None = None,
                   summary: str = "", reference: str = "user target", theory: Any = None,
                   advantage_level: str = "token") -> ObjectiveSpec:
    """An ``ObjectiveSpec`` for a user's torch loss ``fn(logp, old_logp, adv, mask) -> loss |
    (loss, diagnostics)`` (settings bound) that aggregates with ``declared_agg``.

    ``loss_fn(..., config)`` computes ``fn``'s weights ``w = −∂loss/∂logp`` by autograd (a
    first-order view: what every engine, experiment and optimiser here uses), converts them to
    ``config``'s aggregation and returns the surrogate ``−Σ sg(w')·logp``, whose gradient is ``−w'``;
    diagnostics carry the user's loss value as ``user_loss``."""
    AggConfig(agg=declared_agg, max_len=max_len)  # validates the name

    def loss_fn(logp, old_logp, adv, mask, *, config):
        x = logp.detach().clone().requires_grad_(True)
        out = fn(x, old_logp.detach(), adv.detach(), mask)
        loss = out[0] if isinstance(out, tuple) else out
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise ValueError(f"{callable_name(fn)} returned {type(loss).__name__}; allowed: a 0-d tensor loss")
        (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
        w = torch.zeros_like(x) if grad is None else -grad
        w = _reweigh(w.detach(), mask, declared_agg, config, max_len or config.max_len)
        return -(w * logp).sum(), {"user_loss": loss.detach()}

    return ObjectiveSpec(name, loss_fn, UserLossConfig, advantage_level,
                         summary or f"user loss {callable_name(fn)} (declared aggregation {declared_agg})",
                         reference, theory)


def load_user_objective(target: str, params: Mapping[str, Any] | None, *, declared_agg: str,
                        theory: LoadedTheory | None = None, name: str | None = None,
                        max_len: int | None = None) -> ObjectiveSpec:
    """``user_objective`` for ``path.py:function`` with ``params`` bound (``UsageError`` on problems)."""
    fn = bind_params(load_target(target), params)
    level = theory.advantage_level if theory is not None else "token"
    return user_objective(name or target, fn, declared_agg=declared_agg, max_len=max_len,
                          theory=None if theory is None else theory.entry, advantage_level=level,
                          reference=f"user target {target}" + (f", theory {theory.target}" if theory else ""))


@contextlib.contextmanager
def registered(specs: Mapping[str, ObjectiveSpec]) -> Iterator[None]:
    """Add ``specs`` to ``OBJECTIVES`` for the duration (a name already registered is refused)."""
    clash = sorted(set(specs) & set(OBJECTIVES))
    if clash:
        raise UsageError(f"objective name {clash[0]!r} is already registered; allowed: a new name")
    OBJECTIVES.update(specs)
    try:
        yield
    finally:
        for name in specs:
            OBJECTIVES.pop(name, None)
