"""Symbolic building blocks: stop-gradient, clip, and the derivation of gradient weights.

An objective's theory entry writes, for one sequence of ``n`` tokens, the per-token losses
``L_1..L_n`` the way the paper writes them (stop-gradient as ``sg``, clip as ``Min``/``Max``,
sequence-level losses broadcast over the tokens). ``derive_weights`` differentiates them:

    w_t = -∂(Σ_s L_s)/∂ℓ_t,   then sg(x) -> x,

so that with the aggregation's per-sequence normaliser ``c_i`` (``theory.aggregation``) the
gradient weight of token t of sequence i is ``c_i · w_t``. ``sims`` is never imported here: the
derivations are independent of the code they check.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import sympy as sp
from sympy.printing.numpy import NumPyPrinter


class sg(sp.Function):
    """Stop-gradient: ``sg(x)`` has the value of ``x`` and derivative 0.

    >>> x = sp.Symbol("x", real=True)
    >>> sp.diff(sg(x**2) * x, x)
    sg(x**2)
    >>> remove_sg(sp.diff(sg(x**2) * x, x))
    x**2
    """

    def fdiff(self, argindex=1):
        return sp.S.Zero

    def _eval_is_extended_real(self):
        return self.args[0].is_extended_real

    def _eval_is_positive(self):
        return self.args[0].is_positive


def remove_sg(expr: sp.Expr) -> sp.Expr:
    """Replace every ``sg(x)`` by ``x`` (after differentiation, values are all that matter)."""
    return expr.replace(sg, lambda arg: arg)


def clip(x: sp.Expr, lo: sp.Expr | None, hi: sp.Expr | None) -> sp.Expr:
    """clip(x, lo, hi) = Min(Max(x, lo), hi); a ``None`` bound is absent.

    >>> r = sp.Symbol("r", positive=True)
    >>> clip(r, None, 2)
    Min(2, r)
    """
    out = x if lo is None else sp.Max(x, lo)
    return out if hi is None else sp.Min(out, hi)


def sigmoid(x: sp.Expr) -> sp.Expr:
    """σ(x) = 1/(1 + e^{-x})."""
    return 1 / (1 + sp.exp(-x))


@dataclass(frozen=True)
class Sequence:
    """Symbols of one sequence of ``n`` tokens: log-probs ℓ_t, old log-probs, advantages, and the
    rollout engine's log-probs ℓ^roll_t (read only by entries with ``"rollout_logp"`` in
    ``TheoryEntry.inputs``)."""

    n: int
    logp: tuple[sp.Symbol, ...]
    old_logp: tuple[sp.Symbol, ...]
    adv: tuple[sp.Symbol, ...]
    rollout_logp: tuple[sp.Symbol, ...] = ()

    @classmethod
    def make(cls, n: int) -> "Sequence":
        return cls(
            n,
            tuple(sp.symbols(f"l1:{n + 1}", negative=True)),
            tuple(sp.symbols(f"lold1:{n + 1}", negative=True)),
            tuple(sp.symbols(f"A1:{n + 1}", real=True)),
            tuple(sp.symbols(f"lroll1:{n + 1}", negative=True)),
        )

    def mean(self, xs) -> sp.Expr:
        """(1/n) Σ_t x_t."""
        return sp.Add(*xs) / self.n

    def ratio(self, t: int) -> sp.Expr:
        """ρ_t = exp(ℓ_t - ℓold_t)."""
        return sp.exp(self.logp[t] - self.old_logp[t])

    @property
    def log_seq_ratio(self) -> sp.Expr:
        """log R = Σ_t (ℓ_t - ℓold_t)."""
        return sp.Add(*[l - o for l, o in zip(self.logp, self.old_logp)])

    @property
    def mean_adv(self) -> sp.Expr:
        """Ā = (1/n) Σ_t A_t."""
        return sp.Add(*self.adv) / self.n


AGG_FIELDS = ("agg", "max_len", "group_size")


@dataclass(frozen=True)
class TheoryEntry:
    """The theory of one objective.

    Attributes:
        name: the registry name of the objective it describes.
        token_losses: ``fn(seq, params) -> [L_1..L_n]``; ``params`` maps each config field to
            a sympy Symbol (numeric value), ``None`` (absent option) or the value itself (for the
            fields in ``discrete``).
        discrete: config fields that change the form of the expression (strings, booleans).
        reference: the paper, with equation.
        breakpoints: ``fn(params) -> [ratio values]`` where the weight may change form (clip
            bounds); ``theory.regions`` derives the weight between them.
        region_ratio: which ratio the regions are over: ``"token"`` (ρ_t), ``"sequence"``
            (the geometric-mean sequence ratio s_i, for GSPO) or ``"log"`` (ρ_t, with the
            breakpoints given as log-ratios, for GMPO's log-space clip).
        inputs: extra per-token inputs the losses read (``("rollout_logp",)``: ``seq.rollout_logp``);
            their values are passed to ``sequence_weights`` by keyword.
    """

    name: str
    token_losses: Callable[[Sequence, dict[str, Any]], list[sp.Expr]]
    discrete: tuple[str, ...]
    reference: str
    breakpoints: Callable[[dict[str, Any]], list[sp.Expr]] = lambda p: []
    region_ratio: str = "token"
    inputs: tuple[str, ...] = ()


def _structure(entry: TheoryEntry, config: Any) -> tuple[tuple[str, Any], ...]:
    """The hashable form of a config: which fields are symbols, absent, or discrete values."""
    out = []
    for f in dataclasses.fields(config):
        if f.name in AGG_FIELDS:
            continue
        value = getattr(config, f.name)
        if f.name in entry.discrete or value is None:
            out.append((f.name, value))
        else:
            out.append((f.name, "symbol"))
    return tuple(out)


def _params(structure) -> dict[str, Any]:
    return {name: (sp.Symbol(name, real=True) if v == "symbol" else v) for name, v in structure}


def derive_weights(entry: TheoryEntry, seq: Sequence, params: dict[str, Any]) -> list[sp.Expr]:
    """w_t = -∂(Σ_s L_s)/∂ℓ_t for t = 1..n, with stop-gradients removed afterwards.

    >>> from theory.cispo import CISPO
    >>> derive_weights(CISPO, Sequence.make(2), {"eps_low": None, "eps_high": 1})
    [A1*Min(2, exp(l1 - lold1)), A2*Min(2, exp(l2 - lold2))]
    """
    total = sp.Add(*entry.token_losses(seq, params))
    return [remove_sg(-sp.diff(total, l)) for l in seq.logp]


class _Printer(NumPyPrinter):
    """Prints Heaviside(x) as numpy.heaviside(x, 1/2): H(0) = 1/2 is sympy's convention, and it
    matches torch, whose ``maximum``/``minimum`` split the gradient evenly on ties."""

    def _print_Heaviside(self, expr):
        return f"numpy.heaviside({self._print(expr.args[0])}, 0.5)"


def lambdify(args, expr):
    """``sympy.lambdify`` to numpy with the Heaviside convention above."""
    return sp.lambdify(args, expr, modules=["numpy", {"functools": functools}], printer=_Printer)


@functools.lru_cache(maxsize=None)
def _weight_function(entry: TheoryEntry, n: int, structure) -> tuple[Callable, tuple[str, ...]]:
    seq = Sequence.make(n)
    params = _params(structure)
    weights = derive_weights(entry, seq, params)
    symbols = [params[name] for name, v in structure if v == "symbol"]
    extra = [x for name in entry.inputs for x in getattr(seq, name)]
    args = [*seq.logp, *seq.old_logp, *seq.adv, *extra, *symbols]
    fn = lambdify(args, weights)
    return fn, tuple(name for name, v in structure if v == "symbol")


def sequence_weights(entry: TheoryEntry, logp, old_logp, adv, config, **inputs) -> np.ndarray:
    """Numeric w_t (before the aggregation normaliser) for one sequence, from the derivation.

    Args:
        logp, old_logp, adv: 1-D float arrays of the sequence's valid tokens.
        config: the objective's config (any dataclass with the objective's fields).
        inputs: the arrays named in ``entry.inputs`` (e.g. ``rollout_logp=...``), same length.
    """
    n = len(logp)
    missing = set(entry.inputs) - set(inputs)
    if missing:
        raise ValueError(f"{entry.name} needs inputs {sorted(missing)}; allowed: keyword arrays {entry.inputs}")
    fn, names = _weight_function(entry, n, _structure(entry, config))
    values = [float(getattr(config, name)) for name in names]
    extra = [float(x) for name in entry.inputs for x in inputs[name]]
    out = fn(*map(float, logp), *map(float, old_logp), *map(float, adv), *extra, *values)
    return np.asarray(out, dtype=np.float64).reshape(n)


RHO = sp.Symbol("rho", positive=True)
ADV = sp.Symbol("A", real=True)


def ratio_weight(entry: TheoryEntry, params: dict[str, Any]) -> sp.Expr:
    """The gradient weight of a one-token sequence as a function of its ratio ρ and advantage A.

    Derived from ``entry.token_losses`` with n = 1, then ℓ = ℓ_old + log ρ substituted, so it
    is exactly the per-token weight (before the aggregation normaliser) that the code uses.
    """
    seq = Sequence.make(1)
    (w,) = derive_weights(entry, seq, params)
    w = w.subs(seq.adv[0], ADV).subs(seq.logp[0], seq.old_logp[0] + sp.log(RHO))
    return sp.simplify(w)


def stops_gradient(entry: TheoryEntry, config: Any, n: int = 2) -> bool:
    """True when the surrogate has a stop-gradient around something that depends on ℓ, so its
    gradient is deliberately *not* the derivative of its value (CISPO, TIS, GSPO-token, SGS).

    >>> from theory.cispo import CISPO
    >>> from types import SimpleNamespace
    >>> import dataclasses
    >>> @dataclasses.dataclass
    ... class C:
    ...     eps_low: float | None = None
    ...     eps_high: float = 4.0
    >>> stops_gradient(CISPO, C())
    True
    """
    seq = Sequence.make(n)
    losses = entry.token_losses(seq, _params(_structure(entry, config)))
    logps = set(seq.logp)
    return any(atom.args[0].free_symbols & logps for loss in losses for atom in loss.atoms(sg))
