r"""TransformerPolicy: a tiny causal transformer language model, written functionally.

The model reads a prompt of ``Lp`` tokens, a separator ``SEP = V`` and the response so far, and
predicts the next response token (pre-LayerNorm GPT blocks, learned positions):

.. math::
    x_0 = E[\text{input}] + P_{0..L-1},\qquad
    x \leftarrow x + \mathrm{Attn}(\mathrm{LN}_1 x),\qquad x \leftarrow x + \mathrm{MLP}(\mathrm{LN}_2 x),\\
    \pi(\cdot \mid \text{prompt}, o_{<t}) = \mathrm{softmax}(\mathrm{LN}_f(x)_{L_p + t}\,W_{out} + b_{out}),

with input = ``[prompt_1..prompt_Lp, SEP, o_1..o_{T-1}]`` (length ``Lp + T``), causal multi-head
self-attention (softmax(q kᵀ/√d_h) with future positions masked) and a GELU MLP of width
``d_ff``. Every function below is pure in a ``params`` dict of tensors (no ``nn.Module`` state), so
``torch.func.grad``, ``torch.func.vmap`` over a stacked seed axis and ``torch.func.functional_call``-
style use work unchanged. The full forward (``forward_logits``: ``log_prob``, ``score_sum``) is
written from matrix products and ``torch.nn.functional.layer_norm``; the cached forward (sampling
and the grouped log-probs of the lockstep trainer) runs its attention in ``policies.attention``'s
fused CPU kernels, an autograd.Function with its own vmap rule (first-order gradients only).
Parameters may also carry a leading seed axis S themselves (``response_log_probs``): then every
product is one batched product over the seeds — the value of vmap over them, without its
per-operation dispatch.

The policy contract is the other families' (``policies.tabular``, ``policies.neural``): ``sample``
(inverse-CDF sampling with one uniform per token drawn from an explicit CPU generator, so the
tokens do not depend on the device or thread count), ``log_prob``, ``mask`` (valid prefix up to and
including the first EOS; tokens after it are padding, still sampled), ``score_sum`` (Σ w ∇θ log π as
a flat vector, by ``torch.func.grad``) and ``enumerate`` for small V^T. Prompts are ids into a table
``prompt_tokens [P, Lp]``, so ``prompts`` is the same ``[N]`` int tensor as for the table policies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from policies.attention import attend
from policies.table import (
    DEFAULT_MAX_SEQUENCES,
    all_token_arrays,
    check_count,
    check_eos,
    check_horizon,
    check_prompt,
    check_prompts,
    eos_mask,
)

__all__ = [
    "LMShape",
    "TransformerPolicy",
    "forward_cached",
    "forward_logits",
    "init_params",
    "inverse_cdf_tokens",
    "log_prob_fn",
    "param_names",
    "response_log_probs",
    "sample_tokens",
    "sample_tokens_uncached",
]


@dataclass(frozen=True)
class LMShape:
    """Architecture of the tiny LM.

    Attributes:
        vocab: V output tokens (the input vocabulary adds SEP = V); V >= 2.
        prompt_len: Lp >= 1 prompt tokens; horizon: T >= 1 response tokens.
        d_model: width (divisible by ``n_heads``); n_heads; n_layers >= 1; d_ff: MLP width.
    """

    vocab: int
    prompt_len: int
    horizon: int
    d_model: int = 32
    n_heads: int = 2
    n_layers: int = 1
    d_ff: int = 64

    def __post_init__(self) -> None:
        for name in ("vocab", "prompt_len", "horizon", "d_model", "n_heads", "n_layers", "d_ff"):
            check_count(name, getattr(self, name))
        if self.vocab < 2:
            raise ValueError(f"vocab={self.vocab!r} is invalid; allowed: V >= 2")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                             "allowed: d_model a multiple of n_heads")

    @property
    def context(self) -> int:
        """Input length Lp + T (prompt, separator, response without its last token)."""
        return self.prompt_len + self.horizon


def param_names(shape: LMShape) -> tuple[str, ...]:
    """The keys of ``params`` in their flattening order."""
    per_layer = ("ln1_w", "ln1_b", "w_qkv", "b_qkv", "w_o", "b_o", "ln2_w", "ln2_b", "w_1", "b_1", "w_2", "b_2")
    return ("tok_emb", "pos_emb", *(f"l{i}.{n}" for i in range(shape.n_layers) for n in per_layer),
            "lnf_w", "lnf_b", "w_out", "b_out")


def param_shapes(shape: LMShape) -> dict[str, tuple[int, ...]]:
    """Shape of every parameter."""
    d, f = shape.d_model, shape.d_ff
    out = {"tok_emb": (shape.vocab + 1, d), "pos_emb": (shape.context, d)}
    for i in range(shape.n_layers):
        out |= {f"l{i}.ln1_w": (d,), f"l{i}.ln1_b": (d,), f"l{i}.w_qkv": (d, 3 * d), f"l{i}.b_qkv": (3 * d,),
                f"l{i}.w_o": (d, d), f"l{i}.b_o": (d,), f"l{i}.ln2_w": (d,), f"l{i}.ln2_b": (d,),
                f"l{i}.w_1": (d, f), f"l{i}.b_1": (f,), f"l{i}.w_2": (f, d), f"l{i}.b_2": (d,)}
    return out | {"lnf_w": (d,), "lnf_b": (d,), "w_out": (d, shape.vocab), "b_out": (shape.vocab,)}


def init_params(shape: LMShape, *, generator: torch.Generator, dtype=torch.float64, device="cpu",
                scale: float = 1.0) -> dict[str, Tensor]:
    """Initial weights from ``generator`` (drawn on the CPU, then moved): embeddings ~ N(0, scale²),
    projection matrices ~ N(0, scale²/fan_in), LayerNorm weights 1, biases 0."""
    params = {}
    for name, shp in param_shapes(shape).items():
        leaf = name.split(".")[-1]
        if leaf.startswith("ln") and leaf.endswith("_w"):
            x = torch.ones(shp, dtype=dtype)
        elif leaf.startswith(("b", "ln")):
            x = torch.zeros(shp, dtype=dtype)
        elif name in ("tok_emb", "pos_emb"):
            x = scale * torch.randn(shp, generator=generator, dtype=dtype)
        else:
            x = scale / math.sqrt(shp[0]) * torch.randn(shp, generator=generator, dtype=dtype)
        params[name] = x.to(device)
    return params


def _seed_shape(w: Tensor, x: Tensor) -> tuple[int, ...]:
    """Shape that broadcasts a per-seed vector ``w [S, k]`` against ``x [S, ..., k]``."""
    return (w.shape[0],) + (1,) * (x.dim() - 2) + (w.shape[-1],)


def _linear(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """``x @ w + b`` over the last axis; with a seed axis (``w [S, i, o]``, ``b [S, o]``,
    ``x [S, ..., i]``) one batched matrix product over the seeds."""
    if w.dim() == 2:
        return x @ w + b
    y = torch.bmm(x.reshape(x.shape[0], -1, x.shape[-1]), w) + b.unsqueeze(1)
    return y.reshape(*x.shape[:-1], w.shape[-1])


def _layer_norm(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """LayerNorm over the last axis (eps 1e-5) with gain ``w`` and bias ``b`` (per seed with a seed axis)."""
    if w.dim() == 1:
        return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, 1e-5)
    x_hat = torch.nn.functional.layer_norm(x, (x.shape[-1],), None, None, 1e-5)
    return torch.addcmul(b.reshape(_seed_shape(b, x)), x_hat, w.reshape(_seed_shape(w, x)))


def _softmax(z: Tensor) -> Tensor:
    """softmax over the last axis, exp(z − max z) / Σ exp(z − max z) with the max a detached shift
    (softmax is invariant to it, so values and gradients are torch.softmax's to rounding). Over the
    attention's few keys this is about 2x faster forward and backward than ``torch.softmax`` on the
    CPU, whose kernel vectorises along the (here tiny) last axis. Rows need one finite entry."""
    e = (z - z.amax(-1, keepdim=True).detach()).exp()
    return e / e.sum(-1, keepdim=True)


def _embed(params: dict[str, Tensor], inputs: Tensor, start: int) -> Tensor:
    """Token plus position embeddings of ``inputs [..., l]`` at positions ``start .. start + l − 1``
    (``F.embedding``, whose backward is a scatter-add 4x faster than that of indexing); with a seed
    axis, ``inputs [S, ..., l]`` read seed s's table."""
    emb, pos = params["tok_emb"], params["pos_emb"][..., start:start + inputs.shape[-1], :]
    if emb.dim() == 2:
        return torch.nn.functional.embedding(inputs, emb) + pos
    s, rows = emb.shape[:2]
    offset = (torch.arange(s, device=inputs.device) * rows).reshape((s,) + (1,) * (inputs.dim() - 1))
    x = torch.nn.functional.embedding(inputs + offset, emb.reshape(s * rows, -1))
    return x + pos.reshape(s, *(1,) * (inputs.dim() - 2), *pos.shape[1:])


def _layer_params(params: dict[str, Tensor], i: int) -> dict[str, Tensor]:
    return {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith(f"l{i}.")}


def _n_layers(params: dict[str, Tensor]) -> int:
    return sum(1 for k in params if k.endswith(".w_qkv"))


def _mlp(x: Tensor, p: dict[str, Tensor]) -> Tensor:
    h = torch.nn.functional.gelu(_linear(_layer_norm(x, p["ln2_w"], p["ln2_b"]), p["w_1"], p["b_1"]))
    return x + _linear(h, p["w_2"], p["b_2"])


def _head(params: dict[str, Tensor], x: Tensor) -> Tensor:
    return _linear(_layer_norm(x, params["lnf_w"], params["lnf_b"]), params["w_out"], params["b_out"])


def _attention(x: Tensor, w_qkv: Tensor, b_qkv: Tensor, w_o: Tensor, b_o: Tensor, n_heads: int) -> Tensor:
    """Causal multi-head self-attention on ``x [..., L, d]`` (torch matrix products; the reference
    full forward)."""
    *lead, length, d = x.shape
    dh = d // n_heads
    qkv = _linear(x, w_qkv, b_qkv).reshape(*lead, length, 3, n_heads, dh)
    q, k, v = (z.transpose(-3, -2) for z in qkv.unbind(-3))  # (..., h, L, dh)
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
    future = torch.ones(length, length, dtype=torch.bool, device=x.device).triu(1)
    out = _softmax(scores.masked_fill(future, float("-inf"))) @ v  # (..., h, L, dh)
    return _linear(out.transpose(-3, -2).reshape(*lead, length, d), w_o, b_o)


def forward_logits(params: dict[str, Tensor], inputs: Tensor, n_heads: int) -> Tensor:
    """``[N, L, V]`` next-token logits of input token arrays ``inputs [N, L]`` (L <= Lp + T); with a
    seed axis on ``params``, ``inputs [S, N, L]`` and ``[S, N, L, V]`` logits."""
    x = _embed(params, inputs, 0)
    for i in range(_n_layers(params)):
        p = _layer_params(params, i)
        x = x + _attention(_layer_norm(x, p["ln1_w"], p["ln1_b"]), p["w_qkv"], p["b_qkv"], p["w_o"], p["b_o"], n_heads)
        x = _mlp(x, p)
    return _head(params, x)


def _inputs(prompt_tokens: Tensor, tokens: Tensor, sep: int) -> Tensor:
    """``[prompt, SEP, tokens[..., :-1]]``: the inputs whose outputs predict ``tokens`` (prompt rows
    broadcast over a seed axis of ``tokens``)."""
    rows = prompt_tokens.expand(*tokens.shape[:-1], -1)
    return torch.cat([rows, torch.full_like(rows[..., :1], sep), tokens[..., :-1]], -1)


def _check_repeats(prompt_tokens: Tensor, n: int, repeats: int) -> None:
    if not isinstance(repeats, int) or repeats < 1 or prompt_tokens.shape[0] * repeats != n:
        raise ValueError(f"repeats={repeats!r} with {prompt_tokens.shape[0]} prompt rows does not give the {n} "
                         "sequences; allowed: an int >= 1 with prompt rows × repeats = sequences")


def response_log_probs(params: dict[str, Tensor], prompt_tokens: Tensor, tokens: Tensor, n_heads: int,
                       repeats: int = 1) -> Tensor:
    """``[N, T, V]`` log π(· | prompt, o_<t) at every response position.

    ``prompt_tokens [N / repeats, Lp]``: row g is the prompt of the ``repeats`` consecutive
    sequences g·repeats .. (g+1)·repeats − 1 (a GRPO group). With ``repeats`` = 1, one causal
    forward of every sequence; with ``repeats`` > 1 the prompt and SEP positions are computed once
    per row and their keys and values shared by its sequences (``forward_cached``) — the same
    values to rounding, with Lp + 1 of the Lp + T positions done once per group instead of per
    sequence.

    Seed axis: with every parameter stacked along a leading axis S, ``tokens [S, N, T]`` (seed s's
    responses under its parameters; the prompt rows are shared) and ``[S, N, T, V]`` out: the value
    of ``torch.func.vmap`` over the seeds (tested), with one batched operation per step instead of
    vmap's per-operation dispatch.
    """
    _check_repeats(prompt_tokens, tokens.shape[-2], repeats)
    vocab = params["w_out"].shape[-1]
    if repeats == 1:
        logits = forward_logits(params, _inputs(prompt_tokens, tokens, vocab), n_heads)
        return torch.log_softmax(logits[..., prompt_tokens.shape[-1]:, :], -1)
    first, caches, start = _prompt_pass(params, prompt_tokens, repeats, n_heads)
    logits = first.unsqueeze(-2)
    if tokens.shape[-1] > 1:
        rest, _ = forward_cached(params, tokens[..., :-1], start, caches, n_heads)
        logits = torch.cat([logits, rest], -2)
    return torch.log_softmax(logits, -1)


def log_prob_fn(params: dict[str, Tensor], prompt_tokens: Tensor, tokens: Tensor, n_heads: int,
                repeats: int = 1) -> Tensor:
    """``[N, T]`` log π(o_t | prompt, o_<t) — pure in ``params`` (grad- and vmap-safe); ``repeats``
    and the seed axis as in ``response_log_probs``."""
    full = response_log_probs(params, prompt_tokens, tokens, n_heads, repeats)
    return full.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def inverse_cdf_tokens(probs: Tensor, u: Tensor) -> Tensor:
    """Token ``#{v < V-1 : cdf_v < u}`` for ``probs [..., V]`` and uniforms ``u [...]`` (the
    convention of ``policies.kernels.search_cdf``; pure torch, so it runs under vmap)."""
    cdf = torch.cumsum(probs, -1)[..., :-1]
    return (cdf < u.unsqueeze(-1)).sum(-1)


def _rows(z: Tensor) -> Tensor:
    """``z [..., P, h, dh]`` with its leading axes (seed, rows) folded into one."""
    return z.reshape(math.prod(z.shape[:-3]), *z.shape[-3:])


def _attention_cached(x: Tensor, w_qkv: Tensor, b_qkv: Tensor, w_o: Tensor, b_o: Tensor, n_heads: int,
                      cache: tuple | None) -> tuple[Tensor, tuple]:
    """``_attention`` of ``l`` new positions ``x [..., N, l, d]`` that follow the positions in ``cache``
    (or none): ``(kp, vp, ko, vo, repeats)``, the keys and values ``[..., N / repeats, Lp, h, dh]`` of a
    prefix shared by each group of ``repeats`` consecutive rows and the rows' own ``[..., N, Lo, h, dh]``.
    New position i attends to the prefix, the own cached positions and new positions <= i
    (``policies.attention.attend``: fused kernels on the CPU; a seed axis is folded into the rows,
    seed-major, so row n still belongs to group n // repeats). Returns the output and the cache
    with the new keys and values appended to the own ones."""
    *lead, length, d = x.shape
    dh = d // n_heads
    q, k, v = _linear(x, w_qkv, b_qkv).reshape(*lead, length, 3, n_heads, dh).unbind(-3)
    if cache is None:
        kp = vp = x.new_zeros(*lead, 0, n_heads, dh)
        repeats = 1
    else:
        kp, vp, ko, vo, repeats = cache
        k, v = (torch.cat([old, new], -3) if old.shape[-3] else new for old, new in ((ko, k), (vo, v)))
    out = attend(_rows(q), _rows(kp), _rows(vp), _rows(k), _rows(v), repeats)
    return _linear(out.reshape(*lead, length, d), w_o, b_o), (kp, vp, k, v, repeats)


def forward_cached(params: dict[str, Tensor], inputs: Tensor, start: int, caches: list | None,
                   n_heads: int) -> tuple[Tensor, list]:
    """``forward_logits`` of the positions ``start .. start + l - 1`` (``inputs [..., N, l]``) given
    the caches of the positions before them (one per layer, ``_attention_cached``; None when
    ``start`` = 0); returns ``[..., N, l, V]`` logits and the extended caches. Equal to the last
    ``l`` positions of ``forward_logits`` of the whole prefix (to rounding; tested)."""
    x = _embed(params, inputs, start)
    out_caches = []
    for i in range(_n_layers(params)):
        p = _layer_params(params, i)
        a, cache = _attention_cached(_layer_norm(x, p["ln1_w"], p["ln1_b"]), p["w_qkv"], p["b_qkv"], p["w_o"],
                                     p["b_o"], n_heads, None if caches is None else caches[i])
        out_caches.append(cache)
        x = _mlp(x + a, p)
    return _head(params, x), out_caches


def _prompt_pass(params: dict[str, Tensor], prompt_tokens: Tensor, repeats: int,
                 n_heads: int) -> tuple[Tensor, list, int]:
    """The prompt and SEP positions of every prompt row, once: ``(logits [..., N, V] of the first
    response token, caches, Lp + 1)`` for the N = rows·repeats sequences (row g serves sequences
    g·repeats .. (g+1)·repeats − 1), the prompt's keys and values the caches' shared prefix."""
    vocab = params["w_out"].shape[-1]
    seq = torch.cat([prompt_tokens, torch.full_like(prompt_tokens[..., :1], vocab)], -1)
    seq = seq.expand(*params["w_out"].shape[:-2], *seq.shape)  # with a seed axis, every seed's prompts
    logits, caches = forward_cached(params, seq, 0, None, n_heads)
    k0 = caches[0][2]
    own = k0.new_zeros(*k0.shape[:-4], prompt_tokens.shape[0] * repeats, 0, *k0.shape[-2:])
    caches = [(k, v, own, own, repeats) for _, _, k, v, _ in caches]  # the prompt's keys: the group's prefix
    return logits[..., -1, :].repeat_interleave(repeats, -2), caches, seq.shape[-1]


def sample_tokens(params: dict[str, Tensor], prompt_tokens: Tensor, u: Tensor, n_heads: int,
                  repeats: int = 1) -> Tensor:
    """``[N, T]`` tokens drawn autoregressively with uniforms ``u [N, T]``: token t is
    ``inverse_cdf_tokens(π(· | prompt, o_<t), u[:, t])``. Pure (vmappable over a seed axis; or with
    stacked ``params``, ``u [S, N, T]`` and ``[S, N, T]`` tokens). One forward of the prompt and SEP
    per prompt row (``prompt_tokens [N / repeats, Lp]``, rows as in ``response_log_probs``), then one
    position per token with cached keys and values (``forward_cached``); ``sample_tokens_uncached``
    is the reference."""
    _check_repeats(prompt_tokens, u.shape[-2], repeats)
    logits, caches, start = _prompt_pass(params, prompt_tokens, repeats, n_heads)
    out = []
    for t in range(u.shape[-1]):
        tok = inverse_cdf_tokens(torch.softmax(logits, -1), u[..., t])
        out.append(tok)
        if t + 1 < u.shape[-1]:
            logits, caches = forward_cached(params, tok.unsqueeze(-1), start + t, caches, n_heads)
            logits = logits[..., -1, :]
    return torch.stack(out, -1)


def sample_tokens_uncached(params: dict[str, Tensor], prompt_tokens: Tensor, u: Tensor, n_heads: int) -> Tensor:
    """``sample_tokens`` by a full forward of the growing prefix at every step (the reference)."""
    vocab = params["w_out"].shape[-1]
    seq = torch.cat([prompt_tokens, torch.full_like(prompt_tokens[..., :1], vocab)], -1)
    out = []
    for t in range(u.shape[-1]):
        probs = torch.softmax(forward_logits(params, seq, n_heads)[:, -1], -1)
        tok = inverse_cdf_tokens(probs, u[:, t])
        out.append(tok)
        seq = torch.cat([seq, tok.unsqueeze(-1)], -1)
    return torch.stack(out, -1)


class TransformerPolicy:
    """Tiny causal transformer policy (see the module doc).

    Args:
        params: dict with exactly the keys ``param_names(shape)`` and shapes ``param_shapes(shape)``,
            finite, one floating dtype and device.
        shape: the ``LMShape``.
        prompt_tokens: ``[P, Lp]`` int tensor of prompt token strings (ids in [0, V)).
        eos: token id that ends a response, or ``None``.
    """

    def __init__(self, params: dict[str, Tensor], *, shape: LMShape, prompt_tokens: Tensor,
                 eos: int | None = None) -> None:
        expected = param_shapes(shape)
        if set(params) != set(expected):
            raise ValueError(f"params has keys {sorted(params)}; allowed: exactly {sorted(expected)}")
        for name, shp in expected.items():
            x = params[name]
            if not isinstance(x, Tensor) or not x.is_floating_point() or tuple(x.shape) != shp:
                raise ValueError(f"params[{name!r}] must be a floating tensor of shape {shp}, got "
                                 f"{getattr(x, 'shape', type(x).__name__)}")
            if not bool(torch.isfinite(x).all()):
                raise ValueError(f"params[{name!r}] has non-finite values; allowed: finite values")
        if (not isinstance(prompt_tokens, Tensor) or prompt_tokens.is_floating_point() or prompt_tokens.dim() != 2
                or prompt_tokens.shape[1] != shape.prompt_len or prompt_tokens.shape[0] < 1):
            raise ValueError(f"prompt_tokens must be an int tensor [P, {shape.prompt_len}] with P >= 1, got "
                             f"{getattr(prompt_tokens, 'shape', type(prompt_tokens).__name__)}")
        if not bool(((prompt_tokens >= 0) & (prompt_tokens < shape.vocab)).all()):
            raise ValueError(f"prompt_tokens has ids outside [0, {shape.vocab}); allowed: token ids in [0, V)")
        check_eos(eos, shape.vocab)
        self.params = dict(params)
        self.shape = shape
        self.prompt_tokens = prompt_tokens.to(params["w_out"].device)
        self.eos = eos

    @classmethod
    def random(cls, shape: LMShape, prompt_tokens: Tensor, *, generator: torch.Generator, eos: int | None = None,
               dtype=torch.float64, device="cpu", scale: float = 1.0) -> TransformerPolicy:
        """Weights from ``init_params`` with ``generator``."""
        return cls(init_params(shape, generator=generator, dtype=dtype, device=device, scale=scale), shape=shape,
                   prompt_tokens=prompt_tokens, eos=eos)

    def with_params(self, params: dict[str, Tensor]) -> TransformerPolicy:
        return TransformerPolicy(params, shape=self.shape, prompt_tokens=self.prompt_tokens, eos=self.eos)

    # ------------------------------------------------------------------ shape and prompts
    @property
    def horizon(self) -> int:
        return self.shape.horizon

    @property
    def vocab(self) -> int:
        return self.shape.vocab

    @property
    def n_prompts(self) -> int:
        return self.prompt_tokens.shape[0]

    @property
    def dtype(self):
        return self.params["w_out"].dtype

    @property
    def device(self):
        return self.params["w_out"].device

    @property
    def score_shape(self) -> torch.Size:
        """Shape of the gradient space (the flat parameter vector)."""
        return torch.Size([sum(v.numel() for v in self.params.values())])

    def flat_params(self) -> Tensor:
        """All parameters as one vector, in ``param_names`` order (the gradient space)."""
        return torch.cat([self.params[k].reshape(-1) for k in param_names(self.shape)])

    def _prompt_rows(self, prompts: Tensor | None, n: int) -> Tensor:
        return self.prompt_tokens[check_prompts(prompts, n, self.n_prompts, self.device)]

    # ------------------------------------------------------------------ policy contract
    def mask(self, tokens: Tensor) -> Tensor:
        """``[N, T]`` mask of the valid prefix (up to and including the first EOS)."""
        return eos_mask(tokens, self.eos, self.dtype)

    def log_prob(self, tokens: Tensor, prompts: Tensor | None = None) -> Tensor:
        """``[N, T]`` log π(o_t | prompt, o_<t) (padding included; mask it)."""
        return log_prob_fn(self.params, self._prompt_rows(prompts, tokens.shape[0]), tokens, self.shape.n_heads)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator, prompts: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(tokens [n, T], mask [n, T])``: uniforms ``u [n, T]`` from ``generator`` (CPU, this
        dtype), then ``sample_tokens``."""
        check_count("n", n)
        rows = self._prompt_rows(prompts, n)
        u = torch.rand(n, self.horizon, generator=generator, dtype=self.dtype).to(self.device)
        tokens = sample_tokens(self.params, rows, u, self.shape.n_heads)
        return tokens, self.mask(tokens)

    def enumerate(self, *, prompt: int | None = None, max_sequences: int = DEFAULT_MAX_SEQUENCES,
                  start: int = 0, stop: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """All V^T token arrays of one prompt (or the block ``start..stop-1``): ``(tokens, mask,
        prob)``; refuses above ``max_sequences``."""
        check_prompt(prompt, self.n_prompts)
        check_horizon(self.horizon)
        tokens = all_token_arrays(self.horizon, self.vocab, max_sequences, self.device, start, stop)
        prompts = torch.full((tokens.shape[0],), prompt, dtype=torch.int64, device=self.device)
        with torch.no_grad():
            prob = torch.exp(self.log_prob(tokens, prompts).sum(-1))
        return tokens, self.mask(tokens), prob

    def score_sum(self, weights: Tensor, tokens: Tensor, prompts: Tensor | None = None) -> Tensor:
        """Σ_it w_it ∇_θ log π(o_it) as a flat vector (``param_names`` order), by ``torch.func.grad``."""
        rows = self._prompt_rows(prompts, tokens.shape[0])
        n_heads = self.shape.n_heads

        def objective(params):
            return (weights.to(self.dtype) * log_prob_fn(params, rows, tokens, n_heads)).sum()

        grads = torch.func.grad(objective)({k: v.detach() for k, v in self.params.items()})
        return torch.cat([grads[k].reshape(-1) for k in param_names(self.shape)])
