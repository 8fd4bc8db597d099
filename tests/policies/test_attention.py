"""The fused attention kernels against their torch reference (float64): values and all five
gradients, under vmap with batched and unbatched inputs, independent of numba's thread count."""

from __future__ import annotations

import numba
import pytest
import torch

from policies.attention import attend, attend_torch


def inputs(n_rows, length, heads, width, n_prefix, n_own, repeats, *, seed=0, dtype=torch.float64, lead=()):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*lead, *shape, generator=g, dtype=dtype).requires_grad_(True)

    groups = n_rows // repeats
    return [rand(n_rows, length, heads, width), rand(groups, n_prefix, heads, width),
            rand(groups, n_prefix, heads, width), rand(n_rows, n_own, heads, width), rand(n_rows, n_own, heads, width)]


CASES = [  # (N, l, H, D, Lp, Lo, repeats)
    (12, 3, 2, 4, 3, 3, 4),  # training: a group's prefix, the response positions at once
    (8, 1, 2, 4, 3, 4, 2),  # a sampling step: one query after cached own keys
    (5, 4, 1, 3, 0, 4, 1),  # no prefix (the prompt pass)
    (6, 2, 3, 2, 2, 5, 6),  # one group, queries after cached keys
]


@pytest.mark.parametrize("case", CASES)
def test_kernel_equals_the_torch_reference_in_value_and_gradient(case):
    *shape, repeats = case
    xs = inputs(*shape, repeats)
    out, ref = attend(*xs, repeats), attend_torch(*xs, repeats)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-13)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    for a, b in zip(torch.autograd.grad((w * out).sum(), xs), torch.autograd.grad((w * ref).sum(), xs)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)


def test_future_keys_do_not_matter_and_a_prefix_key_does():
    xs = inputs(4, 2, 1, 3, 2, 3, 2)
    with torch.no_grad():
        base = attend(*xs, 2)
        ko = xs[3].clone()
        ko[:, -1] += 5.0  # the last own key is visible to the last query only
        moved = attend(xs[0], xs[1], xs[2], ko, xs[4], 2)
        torch.testing.assert_close(moved[:, 0], base[:, 0], rtol=0, atol=0)
        assert (moved[:, 1] - base[:, 1]).abs().max() > 1e-3
        kp = xs[1].clone()
        kp[0] += 1.0  # group 0's prefix: its sequences 0 and 1 change, the others do not
        shifted = attend(xs[0], kp, xs[2], xs[3], xs[4], 2)
        assert (shifted[:2] - base[:2]).abs().max() > 1e-3
        torch.testing.assert_close(shifted[2:], base[2:], rtol=0, atol=0)


@pytest.mark.parametrize("batched", [(0, 0, 0, 0, 0), (0, None, None, 0, 0), (None, 0, 0, None, 0)])
def test_vmap_over_a_seed_axis_equals_the_loop(batched):
    n, length, heads, width, n_prefix, n_own, repeats = CASES[0]
    lead = inputs(n, length, heads, width, n_prefix, n_own, repeats, seed=2, lead=(3,))
    one = inputs(n, length, heads, width, n_prefix, n_own, repeats, seed=3)
    xs = [a if dim == 0 else b for a, b, dim in zip(lead, one, batched)]
    out = torch.func.vmap(attend, in_dims=(*batched, None))(*xs, repeats)
    ref = torch.stack([attend_torch(*[x[s] if dim == 0 else x for x, dim in zip(xs, batched)], repeats)
                       for s in range(3)])
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-13)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(4), dtype=out.dtype)
    for a, b in zip(torch.autograd.grad((w * out).sum(), xs), torch.autograd.grad((w * ref).sum(), xs)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)


def test_float32_kernel_is_close_to_the_float64_reference():
    xs = inputs(*CASES[0][:-1], CASES[0][-1], dtype=torch.float32)
    out = attend(*xs, 4)
    ref = attend_torch(*[x.detach().double() for x in xs], 4)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="numba has a single thread here")
def test_results_do_not_depend_on_numbas_thread_count():
    xs = inputs(64, 3, 2, 16, 3, 3, 8, seed=5)
    before = numba.get_num_threads()
    try:
        runs = []
        for threads in (1, 2):
            numba.set_num_threads(threads)
            out = attend(*xs, 8)
            runs.append([out.detach(), *torch.autograd.grad(out.sum(), xs)])
    finally:
        numba.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_shapes_that_do_not_fit_are_refused():
    xs = inputs(*CASES[0][:-1], 4)
    with pytest.raises(ValueError, match="repeats=3"):
        attend(*xs, 3)
    with pytest.raises(ValueError, match="Lo >= l"):
        attend(xs[0], xs[1], xs[2], xs[3][:, :2], xs[4][:, :2], 4)
    with pytest.raises(ValueError, match="one dtype"):
        attend(xs[0], xs[1].float(), xs[2], xs[3], xs[4], 4)
