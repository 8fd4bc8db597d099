"""Random but reproducible objective inputs for the property tests.

All randomness comes from a ``torch.Generator`` seeded by a Hypothesis-drawn integer, so a
failing example replays exactly. Domains are bounded: log-probs in [-6, -0.01], log-ratios in
[-1, 1], advantages in [-3, 3], lengths 1..T (left-aligned, padding on the right).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st

DTYPE = torch.float64


@dataclass(frozen=True)
class Batch:
    logp: torch.Tensor  # (B, T)
    old_logp: torch.Tensor  # (B, T)
    adv: torch.Tensor  # (B, T)
    mask: torch.Tensor  # (B, T)
    group_size: int
    rollout_logp: torch.Tensor | None = None  # (B, T) the rollout engine's log-probs, if drawn

    @property
    def max_len(self) -> int:
        return self.logp.shape[1]


def make_batch(seed: int, n_groups: int, group_size: int, width: int, *, per_token_adv: bool,
               log_ratio_scale: float = 1.0, rollout: bool = False) -> Batch:
    """A random batch; with ``rollout``, also rollout log-probs = old_logp minus another log-ratio
    in [-1, 1]·scale (drawn last, so the other tensors do not depend on ``rollout``)."""
    g = torch.Generator().manual_seed(seed)
    b = n_groups * group_size
    logp = -(0.01 + 5.99 * torch.rand(b, width, generator=g, dtype=DTYPE))
    log_ratio = log_ratio_scale * (2 * torch.rand(b, width, generator=g, dtype=DTYPE) - 1)
    old_logp = torch.clamp(logp - log_ratio, max=0.0)
    lengths = torch.randint(1, width + 1, (b,), generator=g)
    mask = (torch.arange(width)[None, :] < lengths[:, None]).to(DTYPE)
    if per_token_adv:
        adv = 3 * (2 * torch.rand(b, width, generator=g, dtype=DTYPE) - 1)
    else:
        adv = (3 * (2 * torch.rand(b, 1, generator=g, dtype=DTYPE) - 1)).expand(b, width).clone()
    # padding holds finite filler values, as real padded batches do
    adv = adv * mask
    rollout_logp = None
    if rollout:
        log_w = log_ratio_scale * (2 * torch.rand(b, width, generator=g, dtype=DTYPE) - 1)
        rollout_logp = torch.clamp(old_logp - log_w, max=0.0)
    return Batch(logp, old_logp, adv, mask, group_size, rollout_logp)


batch_params = st.tuples(
    st.integers(0, 2**31 - 1),  # seed
    st.integers(1, 3),  # G
    st.integers(1, 3),  # K
    st.integers(1, 7),  # T
)
