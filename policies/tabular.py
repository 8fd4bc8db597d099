"""TabularPolicy: tokens independent across positions, logits ``[T, V]``.

π(o) = Π_t softmax(logits_t)(o_t). With an ``eos`` token the sequence ends at the first EOS
(inclusive) and the mask marks the valid prefix. All T positions are still sampled
independently; positions after EOS are padding. Because the padding positions' probabilities
sum to one, summing ``prob · f(valid prefix)`` over all V^T token arrays is exactly the
expectation of ``f`` over sequences — which is what ``enumerate`` provides.

The score is closed form: ∂ log softmax(θ_t)(o_t)/∂θ_t = e_{o_t} - p_t, so the gradient of
Σ_it w_it ℓ_it with respect to the logits is a weighted token histogram minus a rank-one term
(``score_sum``); no per-sample ``[N, T, V]`` tensor is built.
"""

from __future__ import annotations

import torch
from torch import Tensor

DEFAULT_MAX_SEQUENCES = 1 << 22


class TabularPolicy:
    """Position-wise independent categorical policy.

    Args:
        logits: ``[T, V]`` floating tensor (finite); device and dtype are taken from it.
        eos: token id that ends a sequence (kept as its last valid token), or ``None``.
    """

    def __init__(self, logits: Tensor, *, eos: int | None = None) -> None:
        if not isinstance(logits, Tensor) or logits.dim() != 2 or not logits.is_floating_point():
            raise ValueError(f"logits must be a floating [T, V] tensor, got {getattr(logits, 'shape', logits)!r}")
        t, v = logits.shape
        if t < 1 or v < 2:
            raise ValueError(f"logits has shape {tuple(logits.shape)}; allowed: T >= 1 and V >= 2")
        if not bool(torch.isfinite(logits).all()):
            raise ValueError("logits has non-finite values; allowed: finite logits")
        if eos is not None and not (isinstance(eos, int) and 0 <= eos < v):
            raise ValueError(f"eos={eos!r} is invalid; allowed: None or an int in [0, {v})")
        self.logits = logits
        self.eos = eos

    @classmethod
    def random(cls, horizon: int, vocab: int, *, generator: torch.Generator, scale: float = 1.0,
               eos: int | None = None, dtype=torch.float64, device="cpu") -> "TabularPolicy":
        """Logits ~ scale·N(0, 1), drawn from ``generator``."""
        if not (isinstance(horizon, int) and horizon >= 1):
            raise ValueError(f"horizon={horizon!r} is invalid; allowed: an int T >= 1")
        logits = scale * torch.randn(horizon, vocab, generator=generator, dtype=dtype)
        return cls(logits.to(device), eos=eos)

    @property
    def horizon(self) -> int:
        return self.logits.shape[0]

    @property
    def vocab(self) -> int:
        return self.logits.shape[1]

    def log_probs(self) -> Tensor:
        """``[T, V]`` log-probabilities of every token at every position."""
        return torch.log_softmax(self.logits, -1)

    def mask(self, tokens: Tensor) -> Tensor:
        """``[B, T]`` mask of the valid prefix (up to and including the first EOS)."""
        if self.eos is None:
            return torch.ones(tokens.shape, dtype=self.logits.dtype, device=tokens.device)
        is_eos = (tokens == self.eos).to(torch.int64)
        ended_before = torch.cumsum(is_eos, -1) - is_eos  # EOS strictly before t
        return (ended_before == 0).to(self.logits.dtype)

    def log_prob(self, tokens: Tensor) -> Tensor:
        """``[B, T]`` log π(o_t) of ``tokens [B, T]`` (padding positions included; mask them)."""
        lp = self.log_probs()  # (T, V)
        return lp[torch.arange(self.horizon, device=tokens.device)[None, :], tokens]  # (B, T)

    def sample(self, n: int, *, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``(tokens [n, T], mask [n, T])`` by inverse-CDF sampling with one uniform per token."""
        if not (isinstance(n, int) and n >= 1):
            raise ValueError(f"n={n!r} is invalid; allowed: an int >= 1")
        cdf = torch.cumsum(torch.softmax(self.logits, -1), -1)  # (T, V)
        cdf[:, -1] = 1.0 + 1e-6  # guard the last bin against rounding in the cumulative sum
        u = torch.rand(self.horizon, n, generator=generator, dtype=cdf.dtype, device="cpu").to(cdf.device)
        tokens = torch.searchsorted(cdf.contiguous(), u.contiguous()).T.contiguous()  # (n, T)
        return tokens, self.mask(tokens)

    def enumerate(self, *, max_sequences: int = DEFAULT_MAX_SEQUENCES) -> tuple[Tensor, Tensor, Tensor]:
        """All V^T token arrays: ``(tokens [V^T, T], mask, prob [V^T])``; refuses above the cap."""
        total = self.vocab ** self.horizon
        if total > max_sequences:
            raise ValueError(
                f"V^T = {self.vocab}^{self.horizon} = {total} sequences exceeds max_sequences="
                f"{max_sequences}; allowed: V^T <= max_sequences (raise the cap or use Monte Carlo)"
            )
        idx = torch.arange(total, device=self.logits.device)
        powers = self.vocab ** torch.arange(self.horizon - 1, -1, -1, device=self.logits.device)
        tokens = (idx[:, None] // powers[None, :]) % self.vocab  # (N, T)
        prob = torch.exp(self.log_prob(tokens).sum(-1))
        return tokens, self.mask(tokens), prob

    def score_sum(self, weights: Tensor, tokens: Tensor) -> Tensor:
        """Σ_i Σ_t w_it ∇_logits log π(o_it) = Σ_it w_it (e_{o_it} - p_t) as ``[T, V]``.

        ``weights`` is ``[B, T]`` (zero on padding). One weighted histogram plus a rank-one term.
        """
        t, v = self.logits.shape
        flat = torch.arange(t, device=tokens.device)[None, :] * v + tokens  # (B, T)
        hist = torch.zeros(t * v, dtype=weights.dtype, device=weights.device)
        hist.index_add_(0, flat.reshape(-1), weights.reshape(-1))
        probs = torch.softmax(self.logits, -1).to(weights.dtype)
        return hist.reshape(t, v) - weights.sum(0)[:, None] * probs


def perturb(policy: TabularPolicy, *, kl: float, generator: torch.Generator,
            max_scale: float = 1e3) -> TabularPolicy:
    """A new policy at per-position KL(old ‖ new) averaged over positions equal to ``kl``.

    New logits = old logits + α·d with a random direction d ~ N(0, 1) (from ``generator``), α
    found by bisection (the KL is increasing in α along a fixed direction from 0).
    """
    if not (isinstance(kl, (int, float)) and kl > 0):
        raise ValueError(f"kl={kl!r} is invalid; allowed: kl > 0")
    direction = torch.randn(policy.logits.shape, generator=generator, dtype=policy.logits.dtype)
    direction = direction.to(policy.logits.device)
    old_lp = policy.log_probs()

    def mean_kl(alpha: float) -> float:
        new_lp = torch.log_softmax(policy.logits + alpha * direction, -1)
        return float((old_lp.exp() * (old_lp - new_lp)).sum(-1).mean())

    reachable = mean_kl(max_scale)
    if reachable < kl:
        raise ValueError(
            f"kl={kl!r} is unreachable: along the drawn direction the KL saturates near "
            f"{reachable:.4g}; allowed: kl < {reachable:.4g} (or another generator)"
        )
    lo, hi = 0.0, max_scale
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if mean_kl(mid) < kl else (lo, mid)
    return TabularPolicy(policy.logits + 0.5 * (lo + hi) * direction, eos=policy.eos)
