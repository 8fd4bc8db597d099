r"""How the checker's tensors reach the loss under test: as a trainer passes them.

The checks build float64 batches (``inputs``) and call ``evaluate(fn, batch)``; ``adapt(fn, feed)``
turns the user's function into the callable those checks expect, feeding it the way real trainer
code receives its inputs:

* **no ``requires_grad`` on constants** (default): ``old_logp``, ``adv`` (and ``rollout_logp``) come
  from no-grad passes in verl, TRL and OpenRLHF, and no trainer detaches them. They reach the loss
  as plain tensors; an undetached ratio still shows in the gradient weights (``w = -∂L/∂logp``).
  ``strict_constants=True`` feeds them with ``requires_grad`` so the contract can test that their
  gradient is zero (``pgverify check --strict-constants``);
* **dtype** (``float64`` default, ``float32``, ``bfloat16``): every floating input is cast to it
  (the cast is differentiable, so the weights come back to float64); the checker rounds its
  batches to that dtype first, so the spec sees exactly the values the loss sees;
* **mask dtype** (``bool`` default, ``int`` = int64, ``float`` = the loss dtype);
* **advantage shape**: ``token`` (``[B, T]``, default) or ``sequence`` (``[B]``, as TRL passes
  them; the checker then draws one advantage per sequence);
* **argument names**: the loss is called by keyword when its parameters are not pgverify's names:
  verl's ``(old_log_prob, log_prob, advantages, response_mask, ...)``, TRL's
  ``per_token_logps``/``completion_mask`` and the like are recognised (``ALIASES``), and
  ``arg_names`` maps any other name explicitly (``--arg logp=my_name``);
* **global normalisers** for micro-batch checks: ``global_tokens`` (valid tokens in the whole
  batch) and ``global_sequences`` (sequences in it), passed under the loss's own names
  (TRL ``num_items_in_batch``, verl ``batch_num_tokens`` / ``global_batch_size``);
* **the global RNG** (torch, numpy, ``random``) is re-seeded with ``rng_seed`` before every call,
  so a loss that draws from it (verl's Clip-Cov ``torch.randperm``) is a function of its inputs
  for the search; ``checks.determinism`` tests separately whether it depends on the RNG at all.
"""

from __future__ import annotations

import functools
import inspect
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor

from sims.check.target import UsageError, callable_name

__all__ = ["Feed", "adapt", "ALIASES", "TENSORS", "NORMALISERS", "DTYPES", "MASK_DTYPES", "ADV_SHAPES",
           "resolve_names", "default_rtol"]

TENSORS = ("logp", "old_logp", "adv", "mask", "rollout_logp")
NORMALISERS = ("global_tokens", "global_sequences")
DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}
MASK_DTYPES = ("bool", "int", "float")
ADV_SHAPES = ("token", "sequence")

#: Parameter names trainers use for each of pgverify's inputs (lower case; matched exactly).
ALIASES: dict[str, tuple[str, ...]] = {
    "logp": ("logp", "log_prob", "log_probs", "logprobs", "per_token_logps", "new_log_probs", "new_logp",
             "cur_log_probs", "action_log_probs"),
    "old_logp": ("old_logp", "old_log_prob", "old_log_probs", "old_logprobs", "old_per_token_logps",
                 "old_action_log_probs", "ref_logp", "ref_log_prob", "ref_log_probs", "ref_per_token_logps",
                 "log_probs_base", "base_action_log_probs"),
    "adv": ("adv", "advantages", "advantage", "advs"),
    "mask": ("mask", "response_mask", "action_mask", "completion_mask", "loss_mask", "eos_mask"),
    "rollout_logp": ("rollout_logp", "rollout_log_prob", "rollout_log_probs", "rollout_per_token_logps",
                     "sampling_per_token_logps", "vllm_log_probs", "behavior_log_probs", "sampling_logp"),
    "global_tokens": ("global_tokens", "num_items_in_batch", "batch_num_tokens", "global_num_tokens",
                      "num_tokens"),
    "global_sequences": ("global_sequences", "global_batch_size", "num_sequences", "batch_num_seqs"),
}

#: The name recorded for an input the loss does not take (a KL penalty's advantages).
NOT_TAKEN = ""

#: Default tolerance of weight comparisons per dtype: about 100 units in the last place of a
#: weight of order 1 (float64 keeps the historical 1e-6, far above its 2.2e-16 resolution).
_RTOL = {torch.float64: 1e-6, torch.float32: 1e-4, torch.bfloat16: 5e-2}


def default_rtol(dtype: torch.dtype) -> float:
    """The spec-weight tolerance for a loss computed in ``dtype`` (``--rtol`` overrides it)."""
    return _RTOL[dtype]


@dataclass(frozen=True)
class Feed:
    """How inputs are fed to the loss (see the module docstring).

    Attributes:
        dtype: floating dtype of every tensor input.
        mask_dtype: ``bool``, ``int`` or ``float``.
        adv_shape: ``token`` ([B, T]) or ``sequence`` ([B]).
        strict_constants: feed old_logp/adv/rollout_logp with ``requires_grad`` (the strict contract).
        names: pgverify input -> the loss's parameter name, for inputs passed by keyword; empty
            means positional ``(logp, old_logp, adv, mask[, rollout_logp])``.
        rng_seed: the global RNGs are seeded with this before every call.
    """

    dtype: torch.dtype = torch.float64
    mask_dtype: str = "bool"
    adv_shape: str = "token"
    strict_constants: bool = False
    names: Mapping[str, str] = field(default_factory=dict)
    rng_seed: int = 0

    def __post_init__(self) -> None:
        if self.dtype not in _RTOL:
            raise ValueError(f"dtype={self.dtype!r} is invalid; allowed: {', '.join(DTYPES)}")
        if self.mask_dtype not in MASK_DTYPES:
            raise ValueError(f"mask_dtype={self.mask_dtype!r} is invalid; allowed: {', '.join(MASK_DTYPES)}")
        if self.adv_shape not in ADV_SHAPES:
            raise ValueError(f"adv_shape={self.adv_shape!r} is invalid; allowed: {', '.join(ADV_SHAPES)}")
        unknown = sorted(set(self.names) - set(TENSORS) - set(NORMALISERS))
        if unknown:
            raise ValueError(f"names={unknown!r} is invalid; allowed keys: {', '.join(TENSORS + NORMALISERS)}")

    @property
    def takes_rollout(self) -> bool:
        return "rollout_logp" in self.names

    @property
    def takes_normalisers(self) -> bool:
        """True when the loss takes at least one global normaliser."""
        return any(n in self.names for n in NORMALISERS)

    def describe(self, constants: str = "old_logp and adv") -> str:
        """One line for the card: how the loss was fed (``constants``: how its constant inputs are
        named; a KL penalty's is ``ref_logp``)."""
        core = ("logp", "old_logp", "adv", "mask")
        by_name = ", ".join(f"{k} -> {v or '(not taken)'}" for k, v in self.names.items())
        if any(k in self.names for k in core):
            call = f"by keyword: {by_name}"
        else:
            call = "positionally (logp, old_logp, adv, mask)" + (f", and by keyword {by_name}" if by_name else "")
        const = ("with requires_grad (strict)" if self.strict_constants
                 else "without requires_grad (as trainers pass them)")
        return (f"{str(self.dtype).replace('torch.', '')} inputs, {self.mask_dtype} mask, advantages per "
                f"{self.adv_shape}; {constants} {const}; called {call}; global RNG seeded "
                f"with {self.rng_seed} before every call")


@functools.cache
def _has_cuda() -> bool:
    return torch.cuda.is_available()


def seed_global_rngs(seed: int) -> None:
    """Seed torch's, numpy's and Python's global generators (before each call of the target).

    torch's CPU generator is seeded directly, and the CUDA generators only where CUDA exists:
    ``torch.manual_seed`` also queues a lazy CUDA seeding that records a stack trace, about 1 ms
    per call on a CPU-only machine, which was half the time of a check."""
    torch.default_generator.manual_seed(seed)
    if _has_cuda():
        torch.cuda.manual_seed_all(seed)
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)


def _signature_names(fn: Callable[..., Any]) -> list[str] | None:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY, p.POSITIONAL_ONLY)]


#: For a penalty spec (a KL term), the second input is the reference policy and the third the
#: policy that sampled the tokens (an IS-corrected KL): trainers' names for those two.
PENALTY_ALIASES: dict[str, tuple[str, ...]] = {
    "old_logp": ("ref_logp", "ref_log_prob", "ref_log_probs", "ref_per_token_logps", "log_probs_base",
                 "base_action_log_probs", "reference_log_probs"),
    "rollout_logp": ("old_logp", "old_log_prob", "old_log_probs", "old_per_token_logps", "old_action_log_probs",
                     "sampling_logp", "sampling_per_token_logps") + ALIASES["rollout_logp"],
}


#: For an objective composed with a KL penalty to a reference policy (``OBJECTIVE+kl``), the third
#: input is the reference policy.
REFERENCE_ALIASES: dict[str, tuple[str, ...]] = {
    "old_logp": tuple(a for a in ALIASES["old_logp"] if a not in PENALTY_ALIASES["old_logp"]),
    "rollout_logp": PENALTY_ALIASES["old_logp"],
}


def aliases_for(spec: Any) -> dict[str, tuple[str, ...]]:
    """The alias table for a spec (``sims.check.specs.Spec`` or None): what the second and the
    third tensor mean depends on it (π_old and the rollout policy; the reference and the sampling
    policy of a KL term; π_old and the reference of an objective with a KL penalty)."""
    if spec is None:
        return ALIASES
    if spec.is_penalty:
        return ALIASES | PENALTY_ALIASES
    if getattr(spec, "penalty", None) is not None and spec.penalty.reference == "third":
        return ALIASES | REFERENCE_ALIASES
    return ALIASES


def resolve_names(fn: Callable[..., Any], explicit: Mapping[str, str] | None = None, *,
                  aliases: Mapping[str, tuple[str, ...]] = ALIASES) -> dict[str, str]:
    """pgverify input -> the loss's parameter name.

    Explicit entries (``--arg logp=NAME``) win; otherwise each input is looked up among the loss's
    parameter names by ``aliases`` (default ``ALIASES``; ``aliases_for(spec)`` gives a spec's table:
    for a KL term the reference policy second and the sampling policy third); a loss with log-probs, a second log-prob and a mask but no
    advantages (a KL penalty) gets no advantages (``NOT_TAKEN``). When the loss's first four
    parameters are pgverify's own names, or nothing matches, inputs are passed positionally (an empty mapping for
    the four
    tensors; rollout and normaliser names are still returned when the loss has them).
    Raises ``UsageError`` for an explicit name the loss does not take, or when only some of the
    four tensors can be matched.
    """
    explicit = dict(explicit or {})
    for key in explicit:
        if key not in TENSORS + NORMALISERS:
            raise UsageError(f"--arg {key!r} is not an input of pgverify; allowed: "
                             f"{', '.join(TENSORS + NORMALISERS)}")
    params = _signature_names(fn)
    takes_kwargs = False
    try:
        takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        pass
    if params is None:
        return explicit
    for key, name in explicit.items():
        if name not in params and not takes_kwargs:
            raise UsageError(f"--arg {key}={name}: {callable_name(fn)} has no parameter {name!r}; "
                             f"allowed: {', '.join(params)}")
    lowered = {p.lower(): p for p in params}
    found = dict(explicit)
    for key, names in aliases.items():
        if key in found:
            continue
        for alias in names:
            if alias in lowered and lowered[alias] not in found.values():
                found[key] = lowered[alias]
                break
    core = ("logp", "old_logp", "adv", "mask")
    if list(params[:4]) == list(core) and not any(k in explicit for k in core):
        positional = {k: v for k, v in found.items() if k not in core}
        _check_positional(fn, positional)
        return positional
    matched = [k for k in core if k in found]
    if not matched:
        positional = {k: v for k, v in found.items() if k not in core}
        _check_positional(fn, positional)
        return positional
    if matched == ["logp", "old_logp", "mask"]:  # a penalty term (a KL to a reference) takes no advantages
        found["adv"] = NOT_TAKEN
        return found
    if len(matched) < 4:
        missing = [k for k in core if k not in found]
        raise UsageError(f"{callable_name(fn)} has the wrong signature: cannot tell which parameter receives "
                         f"{', '.join(missing)} "
                         f"(its parameters: {', '.join(params)}); allowed: name them, e.g. --arg "
                         f"{missing[0]}=PARAMETER")
    return found


def _check_positional(fn: Callable[..., Any], keywords: Mapping[str, str]) -> None:
    """UsageError unless ``fn`` can be called as ``fn(logp, old_logp, adv, mask, **keywords)``."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(*range(4), **{name: None for name in keywords.values()})
    except TypeError as exc:
        raise UsageError(f"{callable_name(fn)}{sig} has the wrong signature ({exc}); allowed: "
                         "fn(logp, old_logp, adv, mask, **settings), or a trainer's names by keyword "
                         "(--arg logp=NAME ...)") from exc


def _mask_as(mask: Tensor, kind: str, dtype: torch.dtype) -> Tensor:
    valid = mask > 0
    if kind == "bool":
        return valid
    if kind == "int":
        return valid.to(torch.int64)
    return valid.to(dtype)


def adapt(fn: Callable[..., Any], feed: Feed) -> Callable[..., Any]:
    """The checker's view of ``fn``: ``call(logp, old_logp, adv, mask, rollout_logp=None, *,
    global_tokens=None, global_sequences=None)`` on float64 tensors, feeding ``fn`` as ``feed``
    says. ``rollout_logp`` and the normalisers are passed only when ``fn`` takes them: a missing
    ``rollout_logp`` is ``old_logp`` (no mismatch), missing normalisers are the batch's own counts."""

    def call(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, rollout_logp: Tensor | None = None,
             *, global_tokens: int | None = None, global_sequences: int | None = None) -> Any:
        const = (lambda x: x) if feed.strict_constants else (lambda x: x.detach())
        # the checker works in float64; a probe in a lower precision (the region map's underflow
        # test) keeps its own dtype
        dtype = feed.dtype if logp.dtype == torch.float64 else logp.dtype
        values: dict[str, Any] = {
            "logp": logp.to(dtype),
            "old_logp": const(old_logp).to(dtype),
            "adv": const(adv if feed.adv_shape == "token" else adv[:, 0]).to(dtype),
            "mask": _mask_as(mask, feed.mask_dtype, dtype),
        }
        if feed.takes_rollout:  # no rollout policy in the batch: the rollout policy is π_old itself
            values["rollout_logp"] = const(old_logp if rollout_logp is None else rollout_logp).to(dtype)
        # unless a micro-batch check says otherwise, the batch is the whole (global) batch
        if "global_tokens" in feed.names:
            values["global_tokens"] = int((mask > 0).sum()) if global_tokens is None else global_tokens
        if "global_sequences" in feed.names:
            values["global_sequences"] = int(mask.shape[0]) if global_sequences is None else global_sequences
        seed_global_rngs(feed.rng_seed)
        core = ("logp", "old_logp", "adv", "mask")
        if any(k in feed.names for k in core):
            return fn(**{feed.names[k]: v for k, v in values.items() if feed.names[k] != NOT_TAKEN})
        args = [values[k] for k in core]
        kwargs = {feed.names[k]: v for k, v in values.items() if k not in core}
        return fn(*args, **kwargs)

    call.__wrapped_target__ = fn  # type: ignore[attr-defined]
    call.feed = feed  # type: ignore[attr-defined]
    return call
