"""TOPR (arXiv:2503.14286) in torch, as a trainer would write it: per-sequence advantage, a
detached taper min(R, 1) for negative advantages only, summed over tokens, mean over sequences."""

import torch


def topr_loss(logp, old_logp, adv, mask):
    m = mask.to(logp.dtype)
    a = (adv * m).sum(-1) / m.sum(-1)                           # Ā_i, one advantage per sequence
    log_r = ((logp - old_logp) * m).sum(-1)                     # log R_i
    taper = torch.where(a >= 0, torch.ones_like(log_r), torch.exp(log_r.clamp(max=0.0)))  # 1 or min(R, 1)
    per_token = -(taper.detach() * a)[:, None] * logp
    return (per_token * m).sum(-1).mean()                       # seq-mean-token-sum
