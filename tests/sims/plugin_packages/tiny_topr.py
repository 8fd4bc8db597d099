"""A tiny objective plugin (what a paper's repository would ship): token-level TOPR as ROLL's
``pg_variant="topr"`` writes it, −A·ℓ for A >= 0 and −sg(min(ρ, 1))·A·ℓ for A < 0
(Le Roux et al. 2025, arXiv:2503.14286), with its torch code, frozen config and derivation.
``WRONG`` has the same derivation but torch code that forgets the taper (fails the battery)."""

from dataclasses import dataclass

import sympy as sp
import torch

from sims.aggregation import AggConfig, aggregate
from sims.registry import ObjectiveSpec
from theory import make_entry, sg


@dataclass(frozen=True)
class ToprTokenConfig(AggConfig):
    """Only the aggregation fields: TOPR has no setting."""


def topr_token(logp, old_logp, adv, mask, *, config):
    taper = torch.where(adv >= 0, torch.ones_like(logp), torch.exp((logp - old_logp).clamp(max=0.0)))
    per_token = -taper.detach() * adv.detach() * logp
    return aggregate(per_token, mask, agg=config.agg, max_len=config.max_len, group_size=config.group_size), {}


def untapered(logp, old_logp, adv, mask, *, config):
    per_token = -adv.detach() * logp
    return aggregate(per_token, mask, agg=config.agg, max_len=config.max_len, group_size=config.group_size), {}


def topr_token_losses(seq, p):
    out = []
    for t in range(seq.n):
        a = seq.adv[t]
        taper = sp.Piecewise((1, a >= 0), (sp.Min(seq.ratio(t), 1), True))
        out.append(-sg(taper) * a * seq.logp[t])
    return out


THEORY = make_entry(topr_token_losses, name="topr_token")
TOPR = ObjectiveSpec("topr_token", topr_token, ToprTokenConfig, "token",
                     "TOPR, token level: plain REINFORCE for A >= 0, sg(min(ratio, 1)) for A < 0",
                     "Le Roux et al. 2025, arXiv:2503.14286 (TOPR); ROLL pg_variant=topr", THEORY)
WRONG = ObjectiveSpec("topr_untapered", untapered, ToprTokenConfig, "token",
                      "TOPR's derivation with torch code that forgot the taper (a planted bug)",
                      "tests: planted bug", THEORY)
