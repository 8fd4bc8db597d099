r"""The public symbolic API: write your objective's surrogate the way your paper does, get its
gradient weight, its regions and its on-policy reduction.

A *derivation* is a function ``losses(seq, params) -> [L_1, ..., L_n]``: the per-token losses of
one sequence of ``n`` tokens (a sequence-level loss is broadcast over its tokens, as GSPO's), with

* ``seq``: a ``Sequence`` — per-token symbols ``seq.logp[t]`` (ℓ_t), ``seq.old_logp[t]``
  (ℓ^old_t), ``seq.adv[t]`` (A_t), the ratio ``seq.ratio(t)`` (ρ_t = e^{ℓ_t − ℓ^old_t}),
  ``seq_ratio(seq)`` (R = Π_t ρ_t), ``geo_ratio(seq)`` (s = R^{1/n}), ``seq.mean_adv`` (Ā),
  ``seq.mean(xs)``;
* ``params``: the objective's settings, each a sympy Symbol named after it (numeric settings) or
  the value itself (strings, booleans, ``None``);
* the building blocks ``sg`` (stop-gradient), ``clip(x, lo, hi)``, ``sigmoid``, ``sympy.Min`` /
  ``Max`` / ``Piecewise``.

The derived weight is ``w_t = −∂(Σ_s L_s)/∂ℓ_t`` with every ``sg`` removed afterwards
(``derive_weights``); the torch code must satisfy ``∂loss/∂logp = −c·w`` with ``c`` the
aggregation's normaliser (``theory.aggregation``). ``objective`` attaches defaults and metadata.

>>> @objective(params={"eps": 0.2}, reference="example")
... def capped(seq, p):
...     return [-sg(clip(seq.ratio(t), None, 1 + p["eps"])) * seq.adv[t] * seq.logp[t] for t in range(seq.n)]
>>> entry = make_entry(capped)
>>> ratio_weight(entry, symbols(entry, capped.params))
A*Min(rho, eps + 1)
>>> on_policy_scale(entry, {"eps": 0.2})
1
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import sympy as sp

from theory._core import (
    ADV,
    AGG_FIELDS,
    RHO,
    Sequence,
    TheoryEntry,
    clip,
    derive_weights,
    ratio_weight,
    remove_sg,
    sg,
    sigmoid,
)
from theory.regions import Region, weight_regions

__all__ = [
    "Sequence", "sg", "clip", "sigmoid", "remove_sg", "seq_ratio", "geo_ratio", "objective", "Derivation",
    "TheoryError", "make_entry", "symbols", "validate", "derive_weights", "ratio_weight", "weight_regions",
    "Region", "RHO", "ADV", "advantage_level", "on_policy_scale", "auto_breakpoints", "TheoryEntry",
]


class TheoryError(ValueError):
    """A derivation that cannot be used (wrong return, unknown parameter, stray symbol)."""


def seq_ratio(seq: Sequence) -> sp.Expr:
    """R = Π_t ρ_t = exp(Σ_t (ℓ_t − ℓ^old_t)), the sequence importance ratio."""
    return sp.exp(seq.log_seq_ratio)


def geo_ratio(seq: Sequence) -> sp.Expr:
    """s = R^{1/n} = exp((1/n) Σ_t (ℓ_t − ℓ^old_t)), GSPO's geometric-mean ratio."""
    return sp.exp(seq.log_seq_ratio / seq.n)


@dataclass(frozen=True)
class Derivation:
    """What ``objective`` attaches to a derivation (``fn.derivation``).

    Attributes:
        params: the default settings (name -> value); ``--param`` overrides them.
        reference: the paper and equation.
        advantage_level: ``"token"``, ``"sequence"`` (uses Ā) or ``None`` (detected: ``advantage_level``).
        breakpoints: ``fn(params) -> [ratios]`` where the weight changes form; ``None``: found from
            the derived weight's Min/Max/Heaviside/Piecewise arguments (``auto_breakpoints``).
    """

    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    reference: str = ""
    advantage_level: str | None = None
    breakpoints: Callable[[dict[str, Any]], list[Any]] | None = None


def objective(*, params: Mapping[str, Any] | None = None, reference: str = "", advantage_level: str | None = None,
              breakpoints: Callable[[dict[str, Any]], list[Any]] | None = None):
    """Decorator: attach default ``params`` and metadata to ``losses(seq, params)`` (``Derivation``);
    the function itself is returned, with ``.derivation`` and ``.params`` set."""
    if advantage_level not in (None, "token", "sequence"):
        raise TheoryError(f"advantage_level={advantage_level!r} is invalid; allowed: None, 'token', 'sequence'")

    def wrap(fn):
        fn.derivation = Derivation(dict(params or {}), reference, advantage_level, breakpoints)
        fn.params = dict(params or {})
        return fn
    return wrap


def _meta(fn) -> Derivation:
    return getattr(fn, "derivation", None) or Derivation()


def _is_symbolic(value: Any) -> bool:
    return isinstance(value, (int, float, sp.Expr)) and not isinstance(value, bool)


def symbols(entry: TheoryEntry, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with every numeric value replaced by a real Symbol of its name (for display)."""
    return {k: (sp.Symbol(k, real=True) if _is_symbolic(v) and k not in entry.discrete else v)
            for k, v in params.items()}


def _rational(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (sp.nsimplify(v, rational=True) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
            for k, v in params.items()}


class _Params(dict):
    """The params mapping handed to a derivation: a missing key is a ``TheoryError`` naming it."""

    def __missing__(self, key):
        raise TheoryError(f"the derivation reads params[{key!r}], which is not set; allowed: set it with "
                          f"--param {key}=VALUE (given: {', '.join(self) or 'none'})")


def _branches(e: sp.Expr) -> list[sp.Expr]:
    """``e`` with every Min/Max replaced, in every combination, by one of its arguments."""
    nested = sorted(e.atoms(sp.Min, sp.Max), key=sp.count_ops)
    if not nested:
        return [e]
    m = nested[0]
    return [b for a in m.args for b in _branches(e.xreplace({m: a}))]


def auto_breakpoints(w: sp.Expr) -> list[sp.Expr]:
    """Ratios ρ > 0 where the one-token weight ``w(ρ, A)`` can change form: the zeros in ρ of the
    arguments of Heaviside, of the differences of Min/Max arguments and of Piecewise conditions,
    at A = ±1 (nested Min/Max solved branch by branch, a root kept when it is a root of the
    original expression). Only finite real positive solutions that sympy finds are kept.

    >>> auto_breakpoints(sp.Min(RHO, 2) * ADV + sp.Heaviside(RHO - sp.Rational(1, 2)))
    [1/2, 2]
    """
    exprs: list[sp.Expr] = []
    for atom in w.atoms(sp.Heaviside):
        exprs.append(atom.args[0])
    for atom in w.atoms(sp.Min, sp.Max):
        args = atom.args
        exprs += [args[i] - args[j] for i in range(len(args)) for j in range(i + 1, len(args))]
    for atom in w.atoms(sp.Piecewise):
        for _, cond in atom.args:
            for rel in (cond.atoms(sp.core.relational.Relational) if not isinstance(cond, bool) else ()):
                exprs.append(rel.lhs - rel.rhs)
    out: set[sp.Expr] = set()
    for e in exprs:
        for a in (1, -1):
            f = e.subs(ADV, a)
            if RHO not in f.free_symbols:
                continue
            for branch in _branches(f):
                try:
                    sols = sp.solve(sp.Eq(branch, 0), RHO)
                except (NotImplementedError, TypeError, ValueError):
                    continue
                for s in sols:
                    if not (s.is_number and s.is_real and s.is_finite and s > 0):
                        continue
                    value = f.subs(RHO, s)
                    if value.is_number and abs(float(value)) < 1e-12:
                        out.add(sp.nsimplify(s))
    return sorted(out, key=float)


def one_token_weight(entry: TheoryEntry, params: Mapping[str, Any]) -> sp.Expr:
    """``ratio_weight`` without its final ``simplify`` (fast; for breakpoints and numbers): the
    one-token weight with ℓ = ℓ_old + log ρ, A as ``ADV``."""
    seq = Sequence.make(1)
    (w,) = derive_weights(entry, seq, dict(params))
    return w.subs(seq.adv[0], ADV).subs(seq.logp[0], seq.old_logp[0] + sp.log(RHO))


def make_entry(fn: Callable[..., list[sp.Expr]], name: str | None = None,
               params: Mapping[str, Any] | None = None) -> TheoryEntry:
    """A ``TheoryEntry`` for the derivation ``fn`` (settings: ``fn.params`` updated by ``params``).

    Discrete settings (strings, booleans, ``None``) are passed as values; numeric ones as symbols.
    The breakpoints are the declared ones, else ``auto_breakpoints`` of the one-token weight."""
    meta = _meta(fn)
    merged = {**meta.params, **(params or {})}
    discrete = tuple(k for k, v in merged.items() if not _is_symbolic(v))

    def token_losses(seq: Sequence, p: dict[str, Any]) -> list[sp.Expr]:
        return fn(seq, _Params(p))

    label = name or getattr(fn, "__name__", "derivation")
    if meta.breakpoints is not None:
        breaks = meta.breakpoints
    else:
        def breaks(p: dict[str, Any]) -> list[sp.Expr]:
            probe = TheoryEntry(label, token_losses, discrete, meta.reference)
            return auto_breakpoints(one_token_weight(probe, p))
    return TheoryEntry(label, token_losses, discrete, meta.reference or "user derivation", breakpoints=breaks)


def validate(entry: TheoryEntry, params: Mapping[str, Any], lengths: tuple[int, ...] = (1, 2, 3)) -> None:
    """``TheoryError`` unless the derivation returns, for every n in ``lengths``, a list of n sympy
    expressions in the sequence's symbols and the parameter symbols only."""
    p = symbols(entry, params)
    allowed_params = {v for v in p.values() if isinstance(v, sp.Symbol)}
    for n in lengths:
        seq = Sequence.make(n)
        try:
            out = entry.token_losses(seq, p)
        except TheoryError:
            raise
        except Exception as exc:  # the derivation's own failure: say which and why
            raise TheoryError(f"the derivation raised {type(exc).__name__}: {exc} (for a sequence of n = {n} "
                              "tokens)") from exc
        if not isinstance(out, (list, tuple)) or len(out) != n:
            got = f"a {type(out).__name__}" + (f" of length {len(out)}" if isinstance(out, (list, tuple)) else "")
            raise TheoryError(f"the derivation returned {got} for a sequence of n = {n} tokens; allowed: a list of "
                              f"n = {n} sympy expressions, one loss per token (broadcast a sequence-level loss: "
                              "[L] * seq.n)")
        known = set(seq.logp) | set(seq.old_logp) | set(seq.adv) | allowed_params
        for t, loss in enumerate(out):
            try:
                expr = sp.sympify(loss)
            except (sp.SympifyError, TypeError) as exc:
                raise TheoryError(f"token {t + 1}'s loss {loss!r} is not a sympy expression") from exc
            stray = expr.free_symbols - known
            if stray:
                raise TheoryError(f"token {t + 1}'s loss uses symbols {sorted(map(str, stray))} that are neither "
                                  f"the sequence's nor a parameter; allowed: seq.logp/old_logp/adv and params "
                                  f"{sorted(map(str, allowed_params)) or 'none'}")


def advantage_level(entry: TheoryEntry, params: Mapping[str, Any]) -> str:
    """``"sequence"`` when the n = 2 surrogate is unchanged by swapping A_1 and A_2 (it reads the
    advantages only through a symmetric function such as Ā), else ``"token"``."""
    seq = Sequence.make(2)
    p = symbols(entry, params)
    total = remove_sg(sp.Add(*entry.token_losses(seq, p)))
    a1, a2 = seq.adv
    swapped = total.subs({a1: a2, a2: a1}, simultaneous=True)
    return "sequence" if sp.simplify(total - swapped) == 0 else "token"


def on_policy_scale(entry: TheoryEntry, params: Mapping[str, Any]) -> sp.Expr | None:
    """c with w(ρ = 1, A) = c·A for every A (the weight at θ = θ_old is REINFORCE's times c), or
    ``None`` when the on-policy weight is not proportional to A (e.g. a penalty with weight at A = 0)."""
    w = ratio_weight(entry, _rational(params)).subs(RHO, 1)
    c = sp.simplify(w.subs(ADV, 1))
    for a in (2, -1, -3, sp.Rational(1, 2)):
        if sp.simplify(w.subs(ADV, a) - c * a) != 0:
            return None
    return c


def describe_signature(fn: Callable[..., Any]) -> str:
    """``name(seq, params)`` check of a derivation's signature; ``TheoryError`` otherwise."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise TheoryError(f"{fn!r} has no inspectable signature") from exc
    try:
        sig.bind(None, None)
    except TypeError as exc:
        raise TheoryError(f"{getattr(fn, '__name__', fn)}{sig} cannot be called as losses(seq, params); allowed: "
                          "def losses(seq, params) -> list of sympy expressions") from exc
    return f"{getattr(fn, '__name__', 'losses')}{sig}"


def check_params(entry: TheoryEntry, params: Mapping[str, Any], declared: Mapping[str, Any] | None) -> None:
    """``TheoryError`` when ``params`` sets a name the derivation does not declare (``declared``: its
    ``objective(params=...)``; None for an undecorated derivation, which takes any name) or an
    aggregation field."""
    for key in params:
        if key in AGG_FIELDS:
            raise TheoryError(f"--param {key} is an aggregation field, not a setting of the derivation; allowed: "
                              "--agg for the aggregation")
        if declared is not None and key not in declared:
            raise TheoryError(f"--param {key!r} is not a setting of the derivation {entry.name}; allowed: "
                              f"{', '.join(declared) or 'none (it declares no settings)'}")


def regions_at(entry: TheoryEntry, params: Mapping[str, Any]) -> list[Region]:
    """``theory.regions.weight_regions`` at the numeric ``params``."""
    return weight_regions(entry, dict(params))
