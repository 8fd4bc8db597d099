"""MarkovPolicy: each token is drawn from a row chosen by the previous token.

logits ``[V + 1, V]`` (or ``[P, V + 1, V]`` with a prompt id): row ``v < V`` is the
distribution after token v, row ``V`` the distribution of the first token (begin of sequence).
π(o) = Π_t softmax(logits[o_{t-1}])(o_t) with o_0 = BOS. Tokens are correlated across
positions, unlike ``TabularPolicy``, yet the score is still closed form and the state
marginals follow from a forward recursion (``row_marginals``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from policies.table import TablePolicy, check_count, check_horizon


class MarkovPolicy(TablePolicy):
    """First-order Markov chain over tokens with a begin-of-sequence row.

    Args:
        logits: ``[V + 1, V]`` (row V is the first token's distribution), or ``[P, V + 1, V]``
            for a policy conditioned on a prompt id.
        horizon: T, the number of positions sampled.
        eos: token id that ends a sequence, or ``None``.
    """

    def __init__(self, logits: Tensor, *, horizon: int, eos: int | None = None) -> None:
        super().__init__(logits, eos=eos, rows_name="V + 1")
        check_horizon(horizon)
        if self.n_rows != self.vocab + 1:
            raise ValueError(f"logits has shape {tuple(logits.shape)}; allowed: [V + 1, V] or "
                             "[P, V + 1, V] (one row per previous token plus the BOS row)")
        self._horizon = horizon

    @classmethod
    def random(cls, horizon: int, vocab: int, *, generator: torch.Generator, scale: float = 1.0,
               eos: int | None = None, n_prompts: int | None = None, dtype=torch.float64,
               device="cpu") -> "MarkovPolicy":
        """Logits ~ scale·N(0, 1), drawn from ``generator`` (on the CPU, then moved)."""
        check_horizon(horizon)
        check_count("vocab", vocab)
        shape = (vocab + 1, vocab) if n_prompts is None else (n_prompts, vocab + 1, vocab)
        logits = scale * torch.randn(shape, generator=generator, dtype=dtype)
        return cls(logits.to(device), horizon=horizon, eos=eos)

    @property
    def horizon(self) -> int:
        return self._horizon

    @property
    def sampling_bos(self) -> int:
        """Token 0 is drawn from row V (BOS), token t from the row of token t - 1."""
        return self.vocab

    def with_logits(self, logits: Tensor) -> "MarkovPolicy":
        return MarkovPolicy(logits, horizon=self.horizon, eos=self.eos)

    def rows(self, tokens: Tensor) -> Tensor:
        """Token t is drawn from the row of token t - 1; the first from the BOS row V."""
        bos = torch.full_like(tokens[:, :1], self.vocab)
        return torch.cat([bos, tokens[:, :-1]], -1)

    def row_marginals(self) -> Tensor:
        """``[T, V + 1]`` (per prompt): μ_0 = δ_BOS, μ_{t+1}(v) = Σ_s μ_t(s) π(v | s)."""
        probs = torch.softmax(self.logits, -1)  # ([P,] V+1, V)
        mu = torch.zeros(*probs.shape[:-2], self.n_rows, dtype=probs.dtype, device=probs.device)
        mu[..., self.vocab] = 1.0
        out = []
        for _ in range(self.horizon):
            out.append(mu)
            nxt = (mu.unsqueeze(-2) @ probs).squeeze(-2)  # ([P,] V)
            mu = torch.cat([nxt, torch.zeros_like(nxt[..., :1])], -1)
        return torch.stack(out, -2)

    samples_with_table_kernel = True

    def sample(self, n: int, *, generator: torch.Generator,
               prompts: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(tokens [n, T], mask [n, T])``: T sequential inverse-CDF steps, one uniform per token.

        One seed is drawn from ``generator``; token t of sequence i uses uniform t·n + i of the
        counter-based generator with that seed (``policies.kernels.sample_table``: a numba
        kernel on the CPU, the same tokens with torch operations elsewhere).
        """
        return super().sample(n, generator=generator, prompts=prompts)
