"""Numeric gradient weights of a whole batch, from the symbolic derivations.

``batch_weights(entry, logp, old_logp, adv, mask, config)`` returns ``w [B, T]`` with
``w_it = c_i · w_t(sequence i)``: the derived per-sequence weights (``theory._core``) times the
derived aggregation normaliser (``theory.aggregation``). The torch code must satisfy
``∂loss/∂logp = -w``; ``tests/theory`` checks it.
"""

from __future__ import annotations

import functools

import numpy as np

from theory._core import TheoryEntry, sequence_weights
from theory.aggregation import derive_normalisers


@functools.lru_cache(maxsize=4096)
def _normalisers(mode: str, lengths: tuple[int, ...], group_size: int, max_len: int | None):
    return tuple(float(c) for c in derive_normalisers(mode, lengths, group_size=group_size,
                                                      max_len_value=max_len))


def batch_weights(entry: TheoryEntry, logp, old_logp, adv, mask, config, **inputs) -> np.ndarray:
    """The derived gradient weight ``w [B, T]`` (0 on padding) for arrays of shape ``[B, T]``.

    Accepts numpy arrays or CPU tensors (converted with ``np.asarray``); ``config`` is the
    objective's config (its ``agg``, ``max_len`` and ``group_size`` choose the normaliser);
    ``inputs`` are the ``[B, T]`` arrays named in ``entry.inputs`` (e.g. ``rollout_logp``).
    """
    logp, old_logp, adv, mask = (np.asarray(x, dtype=np.float64) for x in (logp, old_logp, adv, mask))
    inputs = {k: np.asarray(v, dtype=np.float64) for k, v in inputs.items()}
    valid = [np.flatnonzero(row) for row in mask]
    lengths = tuple(len(v) for v in valid)
    group_size = config.group_size or 1
    c = _normalisers(config.agg, lengths, group_size, config.max_len)
    out = np.zeros_like(logp)
    for i, idx in enumerate(valid):
        row_inputs = {k: v[i, idx] for k, v in inputs.items()}
        out[i, idx] = c[i] * sequence_weights(entry, logp[i, idx], old_logp[i, idx], adv[i, idx], config,
                                              **row_inputs)
    return out
