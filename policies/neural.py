r"""GRUPolicy: a tiny neural autoregressive policy with a hand-written GRU cell.

State h_0 = prompt embedding (or zeros); x_t = E[o_{t-1}] with o_0 = BOS (index V);
h_t = GRU(x_t, h_{t-1}); π(· | o_<t) = softmax(h_t W_out + b_out). The GRU cell follows
PyTorch's ``nn.GRUCell`` equations:

.. math::
    r = σ(x W_{xr} + b_{xr} + h W_{hr} + b_{hr}),\quad
    z = σ(x W_{xz} + b_{xz} + h W_{hz} + b_{hz}),\\
    n = \tanh(x W_{xn} + b_{xn} + r ⊙ (h W_{hn} + b_{hn})),\quad h' = (1 - z) ⊙ n + z ⊙ h.

It is written from matrix products, not ``nn.GRU``/``nn.GRUCell``, because ``torch.func.vmap``
has no batching rule for ``aten::gru`` (pytorch#134606) and falls back to a slow loop for the
cell. The parameters are a dict of tensors and ``log_prob_fn(params, tokens, prompts)`` is a
pure function, so per-sample gradients come from ``torch.func.vmap(torch.func.grad(...))``.
The gradient space of this policy is the flat parameter vector (``flat_params``; order of
``PARAM_NAMES``). Unlike the table policies there is no closed-form score.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from policies.table import (DEFAULT_MAX_SEQUENCES, all_token_arrays, check_count, check_eos, check_horizon,
                            check_prompt, check_prompts, eos_mask, inverse_cdf)

PARAM_NAMES = ("embed", "h0", "w_x", "w_h", "b_x", "b_h", "w_out", "b_out")


def gru_cell(x: Tensor, h: Tensor, w_x: Tensor, w_h: Tensor, b_x: Tensor, b_h: Tensor) -> Tensor:
    """One GRU step (``nn.GRUCell`` equations; gate order r, z, n). x [..., E], h [..., H]."""
    gx = x @ w_x + b_x  # (..., 3H)
    gh = h @ w_h + b_h
    hidden = h.shape[-1]
    r = torch.sigmoid(gx[..., :hidden] + gh[..., :hidden])
    z = torch.sigmoid(gx[..., hidden:2 * hidden] + gh[..., hidden:2 * hidden])
    n = torch.tanh(gx[..., 2 * hidden:] + r * gh[..., 2 * hidden:])
    return (1 - z) * n + z * h


def _initial_state(params: dict[str, Tensor], n: int, prompts: Tensor | None) -> Tensor:
    h0 = params["h0"]  # (P, H); P = 1 for an unconditioned policy
    return h0[prompts] if prompts is not None else h0[0].expand(n, -1)


def next_token_log_probs(params: dict[str, Tensor], tokens: Tensor, prompts: Tensor | None = None) -> Tensor:
    """``[N, T, V]`` log π(· | o_<t, prompt) at every position — pure in ``params``."""
    n, horizon = tokens.shape
    vocab = params["w_out"].shape[-1]
    h = _initial_state(params, n, prompts)
    prev = torch.full_like(tokens[:, 0], vocab)
    out = []
    for t in range(horizon):
        h = gru_cell(params["embed"][prev], h, params["w_x"], params["w_h"], params["b_x"], params["b_h"])
        out.append(torch.log_softmax(h @ params["w_out"] + params["b_out"], -1))  # (N, V)
        prev = tokens[:, t]
    return torch.stack(out, 1)


def log_prob_fn(params: dict[str, Tensor], tokens: Tensor, prompts: Tensor | None = None) -> Tensor:
    """``[N, T]`` log π(o_t | o_<t, prompt) — a pure function of ``params`` (vmap/grad-safe)."""
    return next_token_log_probs(params, tokens, prompts).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


class GRUPolicy:
    """Tiny GRU policy (see the module doc).

    Args:
        params: dict with ``embed [V + 1, E]``, ``h0 [P, H]`` (P = 1 unless conditioned on
            prompts), ``w_x [E, 3H]``, ``w_h [H, 3H]``, ``b_x [3H]``, ``b_h [3H]``,
            ``w_out [H, V]``, ``b_out [V]``; all finite, one floating dtype and device.
        horizon: T.
        eos: token id that ends a sequence, or ``None``.
        prompted: whether ``h0`` rows are per-prompt initial states (then P = ``h0.shape[0]``).
    """

    def __init__(self, params: dict[str, Tensor], *, horizon: int, eos: int | None = None,
                 prompted: bool = False) -> None:
        check_horizon(horizon)
        if set(params) != set(PARAM_NAMES):
            raise ValueError(f"params has keys {sorted(params)}; allowed: exactly {list(PARAM_NAMES)}")
        for name in PARAM_NAMES:
            x = params[name]
            if not isinstance(x, Tensor) or not x.is_floating_point() or not bool(torch.isfinite(x).all()):
                raise ValueError(f"params[{name!r}] must be a finite floating tensor")
        v = params["w_out"].shape[-1]
        e, h = params["w_x"].shape[0], params["w_h"].shape[0]
        expected = {"embed": (v + 1, e), "w_x": (e, 3 * h), "w_h": (h, 3 * h), "b_x": (3 * h,),
                    "b_h": (3 * h,), "w_out": (h, v), "b_out": (v,)}
        for name, shape in expected.items():
            if tuple(params[name].shape) != shape:
                raise ValueError(f"params[{name!r}] has shape {tuple(params[name].shape)}; allowed: {shape}")
        if params["h0"].dim() != 2 or params["h0"].shape[1] != h or (not prompted and params["h0"].shape[0] != 1):
            raise ValueError(f"params['h0'] has shape {tuple(params['h0'].shape)}; allowed: "
                             f"(P, {h}) with P = 1 unless prompted=True")
        if v < 2:
            raise ValueError(f"vocabulary V={v} is invalid; allowed: V >= 2")
        check_eos(eos, v)
        self.params = dict(params)
        self.eos = eos
        self._horizon = horizon
        self._prompted = prompted

    @classmethod
    def random(cls, horizon: int, vocab: int, *, generator: torch.Generator, hidden: int = 16,
               embed: int = 8, n_prompts: int | None = None, eos: int | None = None,
               scale: float = 1.0, dtype=torch.float64, device="cpu") -> "GRUPolicy":
        """Weights ~ N(0, scale²/fan_in) from ``generator``; output bias ~ N(0, scale²)."""
        check_horizon(horizon)
        for name, value in (("vocab", vocab), ("hidden", hidden), ("embed", embed)):
            check_count(name, value)
        p = 1 if n_prompts is None else n_prompts
        check_count("n_prompts", p)

        def draw(*shape, fan_in=1):
            return scale / math.sqrt(fan_in) * torch.randn(shape, generator=generator, dtype=dtype)

        params = {"embed": draw(vocab + 1, embed), "h0": draw(p, hidden),
                  "w_x": draw(embed, 3 * hidden, fan_in=embed), "w_h": draw(hidden, 3 * hidden, fan_in=hidden),
                  "b_x": draw(3 * hidden) * 0.1, "b_h": draw(3 * hidden) * 0.1,
                  "w_out": draw(hidden, vocab, fan_in=hidden), "b_out": draw(vocab)}
        params = {k: v.to(device) for k, v in params.items()}
        return cls(params, horizon=horizon, eos=eos, prompted=n_prompts is not None)

    # ------------------------------------------------------------------ shape and prompts
    @property
    def horizon(self) -> int:
        return self._horizon

    @property
    def vocab(self) -> int:
        return self.params["w_out"].shape[-1]

    @property
    def n_prompts(self) -> int | None:
        return self.params["h0"].shape[0] if self._prompted else None

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

    def replica_score_moments(self, weights: Tensor, tokens: Tensor, prompts: Tensor | None,
                              n_rep: int) -> tuple[Tensor, Tensor]:
        """See ``policies.neural.replica_score_moments`` (``vmap(grad)`` over replicas)."""
        return replica_score_moments(self, weights, tokens, prompts, n_rep)

    def flat_params(self) -> Tensor:
        """All parameters as one vector (the gradient space of this policy)."""
        return torch.cat([self.params[k].reshape(-1) for k in PARAM_NAMES])

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """Inverse of ``flat_params``."""
        out, start = {}, 0
        for k in PARAM_NAMES:
            size = self.params[k].numel()
            out[k] = flat[start:start + size].reshape(self.params[k].shape)
            start += size
        return out

    def with_flat_params(self, flat: Tensor) -> "GRUPolicy":
        return GRUPolicy(self.unflatten(flat), horizon=self.horizon, eos=self.eos, prompted=self._prompted)

    def _prompts(self, prompts: Tensor | None, n: int) -> Tensor | None:
        return check_prompts(prompts, n, self.n_prompts, self.device)

    # ------------------------------------------------------------------ policy contract
    def mask(self, tokens: Tensor) -> Tensor:
        """``[N, T]`` mask of the valid prefix (up to and including the first EOS)."""
        return eos_mask(tokens, self.eos, self.dtype)

    def log_prob(self, tokens: Tensor, prompts: Tensor | None = None) -> Tensor:
        """``[N, T]`` log π(o_t | o_<t) (padding included; mask it)."""
        return log_prob_fn(self.params, tokens, self._prompts(prompts, tokens.shape[0]))

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator,
               prompts: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(tokens [n, T], mask [n, T])``: T inverse-CDF steps, uniforms from ``generator`` (CPU)."""
        check_count("n", n)
        prompts = self._prompts(prompts, n)
        p = self.params
        u = torch.rand(self.horizon, n, generator=generator, dtype=self.dtype).to(self.device)
        h = _initial_state(p, n, prompts)
        prev = torch.full((n,), self.vocab, dtype=torch.int64, device=self.device)
        tokens = torch.empty(n, self.horizon, dtype=torch.int64, device=self.device)
        for t in range(self.horizon):
            h = gru_cell(p["embed"][prev], h, p["w_x"], p["w_h"], p["b_x"], p["b_h"])
            prev = inverse_cdf(torch.softmax(h @ p["w_out"] + p["b_out"], -1), u[t].unsqueeze(-1)).squeeze(-1)
            tokens[:, t] = prev
        return tokens, self.mask(tokens)

    def enumerate(self, *, prompt: int | None = None, max_sequences: int = DEFAULT_MAX_SEQUENCES,
                  start: int = 0, stop: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """All V^T token arrays (or the block ``start..stop-1``): ``(tokens, mask, prob)``;
        refuses above ``max_sequences``."""
        tokens = all_token_arrays(self.horizon, self.vocab, max_sequences, self.device, start, stop)
        prompts = None
        if self.n_prompts is not None or prompt is not None:
            check_prompt(prompt, self.n_prompts)
            prompts = torch.full((tokens.shape[0],), prompt, dtype=torch.int64, device=self.device)
        with torch.no_grad():
            prob = torch.exp(log_prob_fn(self.params, tokens, prompts).sum(-1))
        return tokens, self.mask(tokens), prob

    def score_sum(self, weights: Tensor, tokens: Tensor, prompts: Tensor | None = None) -> Tensor:
        """Σ_it w_it ∇_θ log π(o_it) as a flat parameter vector (one autograd call)."""
        params = {k: v.detach().requires_grad_(True) for k, v in self.params.items()}
        lp = log_prob_fn(params, tokens, self._prompts(prompts, tokens.shape[0]))
        grads = torch.autograd.grad((weights.to(lp.dtype) * lp).sum(), [params[k] for k in PARAM_NAMES],
                                    allow_unused=True)
        return torch.cat([(g if g is not None else torch.zeros_like(params[k])).reshape(-1)
                          for g, k in zip(grads, PARAM_NAMES)])

    def per_group_scores(self, weights: Tensor, tokens: Tensor, prompts: Tensor | None, n_groups: int) -> Tensor:
        """``[n_groups, D]``: Σ over each consecutive block of rows of w_it ∇_θ log π(o_it), by
        ``torch.func.vmap(torch.func.grad(...))`` over blocks (the per-replica gradients)."""
        n, horizon = tokens.shape
        b = n // n_groups
        prompts = self._prompts(prompts, n)

        def block(params, tok, w, pr):
            return (w * log_prob_fn(params, tok, pr)).sum()

        grad = torch.func.grad(block)
        pr = None if prompts is None else prompts.reshape(n_groups, b)
        per = torch.func.vmap(grad, in_dims=(None, 0, 0, None if pr is None else 0))(
            self.params, tokens.reshape(n_groups, b, horizon), weights.reshape(n_groups, b, horizon).to(self.dtype), pr)
        return torch.cat([per[k].reshape(n_groups, -1) for k in PARAM_NAMES], -1)


def replica_score_moments(policy: GRUPolicy, weights: Tensor, tokens: Tensor,
                          prompts: Tensor | None, n_rep: int) -> tuple[Tensor, Tensor]:
    """Σ_r g_r and Σ_r g_r ⊙ g_r (float64, flat) of the per-replica gradients
    g_r = Σ_{i∈r, t} w_it ∇_θ log π(o_it), from ``vmap(grad)`` over replicas."""
    g = policy.per_group_scores(weights, tokens, prompts, n_rep).to(torch.float64)
    return g.sum(0), (g * g).sum(0)
