"""The derived aggregation normalisers equal the closed forms, and the torch aggregation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sims.aggregation import token_weights
from theory.aggregation import NORMALISERS, closed_form_normalisers, derive_normalisers


@pytest.mark.parametrize("mode", list(NORMALISERS))
@given(k=st.integers(1, 3), n_groups=st.integers(1, 3), data=st.data())
def test_derived_normalisers_match_closed_forms_and_code(mode, k, n_groups, data):
    lengths = data.draw(st.lists(st.integers(1, 6), min_size=k * n_groups, max_size=k * n_groups))
    max_len = max(lengths) + data.draw(st.integers(0, 3))
    kw = dict(group_size=k, max_len_value=max_len)
    derived = derive_normalisers(mode, lengths, **kw)
    assert derived == closed_form_normalisers(mode, lengths, **kw)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.float64)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    code = token_weights(mask, agg=mode, max_len=max_len, group_size=k)
    expected = torch.tensor([float(c) for c in derived], dtype=torch.float64)[:, None] * mask
    torch.testing.assert_close(code, expected, atol=1e-15, rtol=0)
