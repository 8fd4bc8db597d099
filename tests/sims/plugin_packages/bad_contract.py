"""A plugin that imports but breaks the contract: a mutable config without agg, no theory, no reference."""

from dataclasses import dataclass

from sims.registry import ObjectiveSpec


@dataclass
class Mutable:
    beta: float = 1.0


def loss(logp, old_logp, adv, mask, *, config):
    return -(adv * logp).sum(), {}


BAD = ObjectiveSpec("bad_contract", loss, Mutable, "token", "breaks the contract", "", None)
