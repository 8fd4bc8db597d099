"""TabularPolicy: tokens independent across positions, logits ``[T, V]`` (or ``[P, T, V]``).

π(o) = Π_t softmax(logits_t)(o_t): the row of token t is its position. Closed forms exist
for everything (``theory.importance``), so it checks the engines against theory. Enumeration,
the EOS mask and the closed-form score come from ``policies.table.TablePolicy``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from policies.table import DEFAULT_MAX_SEQUENCES, TablePolicy, check_horizon

__all__ = ["TabularPolicy", "DEFAULT_MAX_SEQUENCES"]


class TabularPolicy(TablePolicy):
    """Position-wise independent categorical policy.

    Args:
        logits: ``[T, V]`` floating tensor (finite), or ``[P, T, V]`` for a policy conditioned
            on a prompt id; device and dtype are taken from it.
        eos: token id that ends a sequence (kept as its last valid token), or ``None``.
    """

    def __init__(self, logits: Tensor, *, eos: int | None = None) -> None:
        super().__init__(logits, eos=eos, rows_name="T")

    @classmethod
    def random(cls, horizon: int, vocab: int, *, generator: torch.Generator, scale: float = 1.0,
               eos: int | None = None, n_prompts: int | None = None, dtype=torch.float64,
               device="cpu") -> "TabularPolicy":
        """Logits ~ scale·N(0, 1), drawn from ``generator`` (on the CPU, then moved)."""
        check_horizon(horizon)
        shape = (horizon, vocab) if n_prompts is None else (n_prompts, horizon, vocab)
        logits = scale * torch.randn(shape, generator=generator, dtype=dtype)
        return cls(logits.to(device), eos=eos)

    @property
    def horizon(self) -> int:
        return self.n_rows

    def with_logits(self, logits: Tensor) -> "TabularPolicy":
        return TabularPolicy(logits, eos=self.eos)

    def rows(self, tokens: Tensor) -> Tensor:
        """Token t is drawn from row t."""
        return torch.arange(self.horizon, device=tokens.device).expand(tokens.shape)

    def row_marginals(self) -> Tensor:
        """Position t uses row t with probability one: the identity ``[T, T]`` (per prompt)."""
        eye = torch.eye(self.horizon, dtype=self.logits.dtype, device=self.logits.device)
        return eye if self.n_prompts is None else eye.expand(self.n_prompts, -1, -1)

    samples_with_table_kernel = True

    def sample(self, n: int, *, generator: torch.Generator,
               prompts: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(tokens [n, T], mask [n, T])`` by inverse-CDF sampling with one uniform per token.

        One seed is drawn from ``generator``; token t of sequence i uses uniform i·T + t of the
        counter-based generator with that seed (``policies.kernels.sample_table``: a numba
        kernel on the CPU, the same tokens with torch operations elsewhere).
        """
        return super().sample(n, generator=generator, prompts=prompts)
