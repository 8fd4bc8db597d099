r"""The aggregation normaliser, derived: ``c_it = ∂ agg(L)/∂L_it``.

Each aggregation is written as a sympy expression over the per-token losses of a concrete
batch (lengths, groups) and differentiated. Every mode is linear in ``L`` and gives each token
of sequence i the same factor, in closed form:

====================== ==================
mode                   c_i
====================== ==================
token-mean             1/N
seq-mean-token-mean    1/(B·T_i)
seq-mean-token-sum     1/B
seq-mean-token-sum-norm 1/(B·max_len)
prompt-token-mean      1/(G·N_g)
token-sum              1
====================== ==================

(N = total valid tokens, T_i = valid tokens of sequence i, N_g = valid tokens of its group.)
"""

from __future__ import annotations

from typing import Sequence as Seq

import sympy as sp

B, G, N, T_i, N_g, max_len = sp.symbols("B G N T_i N_g max_len", positive=True)

NORMALISERS: dict[str, sp.Expr] = {
    "token-mean": 1 / N,
    "seq-mean-token-mean": 1 / (B * T_i),
    "seq-mean-token-sum": 1 / B,
    "seq-mean-token-sum-norm": 1 / (B * max_len),
    "prompt-token-mean": 1 / (G * N_g),
    "token-sum": sp.S.One,
}


def aggregate_expr(mode: str, losses: Seq[Seq[sp.Expr]], *, group_size: int = 1,
                   max_len_value: int | None = None) -> sp.Expr:
    """The aggregation of per-token losses ``losses[i][t]`` (valid tokens only), as sympy.

    >>> L = [[sp.Symbol("a"), sp.Symbol("b")], [sp.Symbol("c")]]
    >>> aggregate_expr("seq-mean-token-mean", L)
    a/4 + b/4 + c/2
    """
    n_seq = len(losses)
    seq_sums = [sp.Add(*row) for row in losses]
    n_tok = sum(len(row) for row in losses)
    if mode == "token-mean":
        return sp.Add(*seq_sums) / n_tok
    if mode == "seq-mean-token-mean":
        return sp.Add(*[s / len(row) for s, row in zip(seq_sums, losses)]) / n_seq
    if mode == "seq-mean-token-sum":
        return sp.Add(*seq_sums) / n_seq
    if mode == "seq-mean-token-sum-norm":
        return sp.Add(*seq_sums) / (n_seq * max_len_value)
    if mode == "prompt-token-mean":
        groups = [range(g, g + group_size) for g in range(0, n_seq, group_size)]
        per_group = [sp.Add(*[seq_sums[i] for i in idx]) / sum(len(losses[i]) for i in idx)
                     for idx in groups]
        return sp.Add(*per_group) / len(groups)
    if mode == "token-sum":
        return sp.Add(*seq_sums)
    raise ValueError(f"agg={mode!r} is invalid; allowed: one of {', '.join(map(repr, NORMALISERS))}")


def derive_normalisers(mode: str, lengths: Seq[int], *, group_size: int = 1,
                       max_len_value: int | None = None) -> list[sp.Expr]:
    """c_i = ∂ agg/∂L_it for each sequence i (the same for all its tokens), derived by sympy.

    >>> derive_normalisers("prompt-token-mean", [3, 1, 2, 2], group_size=2)
    [1/8, 1/8, 1/8, 1/8]
    """
    losses = [[sp.Symbol(f"L_{i}_{t}") for t in range(n)] for i, n in enumerate(lengths)]
    expr = aggregate_expr(mode, losses, group_size=group_size, max_len_value=max_len_value)
    out = []
    for row in losses:
        derivs = {sp.diff(expr, s) for s in row}
        if len(derivs) != 1:  # pragma: no cover - every mode here is constant within a sequence
            raise AssertionError(f"{mode}: normaliser varies within a sequence")
        out.append(derivs.pop())
    return out


def closed_form_normalisers(mode: str, lengths: Seq[int], *, group_size: int = 1,
                            max_len_value: int | None = None) -> list[sp.Expr]:
    """``NORMALISERS[mode]`` evaluated for a concrete batch (for checking ``derive_normalisers``)."""
    n_seq = len(lengths)
    out = []
    for i, n in enumerate(lengths):
        g = i // group_size
        n_g = sum(lengths[g * group_size:(g + 1) * group_size])
        subs = {B: n_seq, G: n_seq // group_size, N: sum(lengths), T_i: n, N_g: n_g}
        if max_len_value is not None:
            subs[max_len] = max_len_value
        out.append(NORMALISERS[mode].subs(subs))
    return out
