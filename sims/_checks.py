"""Input validation shared by objectives, aggregations and estimators.

Every public function validates its tensors here and raises ``ValueError`` naming the field,
the offending value and what is allowed, so that bad input never surfaces as a NaN later.
Validation reads tensor values (one host sync per call); it is not meant to run under
``torch.func.vmap``.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import Tensor


def require(ok: bool, field: str, value: Any, allowed: str) -> None:
    """Raise ``ValueError(f"{field}={value!r} is invalid; allowed: {allowed}")`` unless ``ok``.

    >>> require(True, "k", 1.0, "k >= 0")
    >>> require(False, "k", -1.0, "k >= 0")
    Traceback (most recent call last):
    ...
    ValueError: k=-1.0 is invalid; allowed: k >= 0
    """
    if not ok:
        raise ValueError(f"{field}={value!r} is invalid; allowed: {allowed}")


def require_choice(field: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices`` (listed in the message)."""
    choices = tuple(choices)
    require(value in choices, field, value, "one of " + ", ".join(repr(c) for c in choices))


def require_finite_number(field: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is a real, finite int or float (not bool)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    require(ok and value == value and abs(value) != float("inf"), field, value, "a finite number")


def check_float_tensor(name: str, x: Any) -> None:
    """A floating-point tensor whose every element is finite."""
    _finite_max(name, x)


def _finite_max(name: str, x: Any) -> float | None:
    """``check_float_tensor``, returning the largest element (``None`` when empty) from the same
    single reduction pass."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype, got {x.dtype}")
    if not x.numel():
        return None
    lo, hi = torch.aminmax(x.detach())  # min and max propagate NaN and are ±inf iff some element is
    if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
        bad = (~torch.isfinite(x)).nonzero()[0].tolist()
        value = x[tuple(bad)].item()
        raise ValueError(
            f"{name} has a non-finite value {value} at index {tuple(bad)}; "
            "allowed: finite values everywhere (use a finite filler such as 0 on padding)"
        )
    return float(hi)


def check_mask(mask: Any, shape: torch.Size | None = None) -> None:
    """A ``[B, T]`` mask of zeros and ones with at least one valid token in every sequence."""
    if not isinstance(mask, Tensor):
        raise ValueError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if shape is not None and mask.shape != shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)}; allowed: {tuple(shape)} (same as logp)")
    if mask.dim() != 2:
        raise ValueError(f"mask has shape {tuple(mask.shape)}; allowed: 2-D [B, T]")
    if mask.numel() and not _is_binary(mask):
        raise ValueError("mask has values other than 0 and 1; allowed: 0 (padding) or 1 (valid token)")
    has_valid = mask.detach().amax(-1) > 0  # one pass: a binary row's max is 1 iff it has a valid token
    if not bool(has_valid.all()):
        if not bool(has_valid.any()):
            raise ValueError("mask is all zero; allowed: at least one valid token in every sequence")
        empty = (~has_valid).nonzero()[:, 0].tolist()
        raise ValueError(
            f"mask rows {empty} have no valid token; allowed: at least one valid token in every "
            "sequence (drop empty sequences before computing the loss)"
        )


def check_token_inputs(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor) -> None:
    """Validate the core objective inputs: same ``[B, T]`` shape, finite floats, log-probs <= 0."""
    check_token_tensors(mask, logp=logp, old_logp=old_logp, adv=adv)


def check_token_tensors(mask: Tensor, **tensors: Tensor) -> None:
    """Validate named ``[B, T]`` tensors: the first fixes the shape; all are finite floats of
    that shape; names ending in ``logp`` hold log-probabilities (<= 0 on valid tokens)."""
    (first_name, first), *_ = tensors.items()
    largest = {first_name: _finite_max(first_name, first)}  # one pass per tensor, reused below
    if first.dim() != 2 or first.shape[0] < 1 or first.shape[1] < 1:
        raise ValueError(
            f"{first_name} has shape {tuple(first.shape)}; allowed: 2-D [B, T] with B, T >= 1"
        )
    for name, x in tensors.items():
        if name not in largest:
            largest[name] = _finite_max(name, x)
        if x.shape != first.shape:
            raise ValueError(
                f"{name} has shape {tuple(x.shape)}; allowed: {tuple(first.shape)} (same as {first_name})"
            )
    check_mask(mask, first.shape)
    for name, x in tensors.items():
        if name.endswith("logp"):
            check_log_probs(name, x, mask, largest[name])


def check_log_probs(name: str, x: Tensor, mask: Tensor, largest: float | None) -> None:
    """Log-probabilities must be <= 0 on valid tokens. ``largest`` is ``x``'s maximum (``None``
    when empty, from ``_finite_max``), so the common case, every element <= 0, needs no pass."""
    if largest is None or largest <= 0:
        return
    bad = (x.detach() > 0) & (mask != 0)
    if bool(bad.any()):
        idx = tuple(bad.nonzero()[0].tolist())
        raise ValueError(
            f"{name} has value {x[idx].item()} > 0 at index {idx}; allowed: log-probabilities <= 0"
        )


def check_policy_pair(new_policy, old_policy) -> None:
    """The two policies of an estimator share family, parameter shape, T, EOS and prompts."""
    same = (type(new_policy) is type(old_policy) and new_policy.score_shape == old_policy.score_shape
            and new_policy.horizon == old_policy.horizon and new_policy.eos == old_policy.eos
            and new_policy.n_prompts == old_policy.n_prompts)
    require(same, "old_policy",
            f"{type(old_policy).__name__}(shape={tuple(old_policy.score_shape)}, T={old_policy.horizon}, "
            f"eos={old_policy.eos}, P={old_policy.n_prompts})",
            f"the new policy's family, shape {tuple(new_policy.score_shape)}, T={new_policy.horizon}, "
            f"eos={new_policy.eos} and P={new_policy.n_prompts}")


def _is_binary(mask: Tensor) -> bool:
    """Every element is 0 or 1 (for any dtype; bool masks are binary by construction)."""
    if mask.dtype == torch.bool:
        return True
    lo, hi = torch.aminmax(mask.detach())
    if not bool((lo >= 0) & (hi <= 1)):
        return False
    # in [0, 1] a value is 0 or 1 exactly when its fractional part is 0
    return not mask.is_floating_point() or not bool(mask.detach().frac().any())


def float_mask(mask: Tensor, like: Tensor) -> Tensor:
    """The mask as a tensor of ``like``'s dtype and device."""
    return mask.to(dtype=like.dtype, device=like.device)
