"""The direct backward on the forward's tiles: grad_weight as register tiles reducing over
pixels into per-thread partial sums (conv_direct_grad.h), and grad_x at every stride as
stride_h * stride_w phases, each a stride-1 forward convolution stored through a strided
view of grad_x. Every compiled build the CPU runs, both dtypes, against the reference,
finite differences and torch."""
import numpy as np
import pytest
from conftest import DTYPES, TORCH, assert_close, numerical_gradient, requires_torch

import fastconv
from fastconv import _direct, reference
from fastconv import _validation as v
from fastconv._kernels import runnable_builds

# (N, C, H, W, K, kernel, stride, padding, dilation, groups)
CASES = [
    (2, 3, 9, 9, 5, 3, 1, 1, 1, 1),
    (2, 3, 9, 10, 5, 3, 2, 1, 1, 1),
    (1, 4, 13, 11, 33, 5, 3, 2, 2, 1),             # a partial block of output channels
    (2, 3, 31, 29, 7, 11, 4, 0, 1, 1),             # C4-like
    (3, 6, 11, 10, 40, (3, 2), (2, 3), 1, 1, 2),   # groups, unequal strides
    (2, 8, 7, 7, 8, 1, 2, 0, 1, 4),                # 1x1 stride 2: phases no tap lands on
    (1, 2, 5, 6, 3, 1, 3, 0, 1, 1),
    (2, 4, 10, 9, 4, 3, 4, (0, 2), (1, 2), 4),     # depthwise, stride past the kernel
    (1, 3, 17, 17, 6, 3, 2, 3, 3, 1),              # dilation 3 at stride 2
    (2, 4, 12, 12, 8, 4, 2, 1, 2, 2),              # even kernel, dilation 2 at stride 2
    (1, 2, 23, 29, 3, (3, 7), (5, 6), (2, 3), 1, 1),
    (1, 5, 6, 7, 70, 2, 1, 0, 1, 1),               # Kg = 70: two whole blocks and a part
    (1, 1, 1, 1, 2, 1, 1, 0, 1, 1),
    (0, 3, 9, 9, 5, 3, 2, 1, 1, 1),                # empty batch
    (1, 2, 3, 3, 4, 3, 4, 1, 1, 1),                # one output pixel
]


@pytest.fixture(params=runnable_builds("conv_direct"), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def build(request, monkeypatch):
    monkeypatch.setattr(_direct, "kernel", request.param)
    return request.param


def _problem(rng, case, dtype):
    N, C, H, W, K, k, s, p, d, groups = case
    k = (k, k) if isinstance(k, int) else k
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C // groups) + k).astype(dtype)
    _, _, _, g, _ = v.conv2d_args(x, w, None, s, p, d, groups)
    go = rng.standard_normal((N, K, g.out_h, g.out_w)).astype(dtype)
    return x, w, go, g, dict(stride=s, padding=p, dilation=d, groups=groups)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_grad_weight_tiles_match_reference(build, rng, case, dtype, threads):
    x, w, go, g, kw = _problem(rng, case, dtype)
    got = _direct._grad_weight_tiles(go, x, w, g, kw["groups"], threads)
    assert got.shape == w.shape and got.dtype == dtype and got.flags.c_contiguous
    assert_close(got, reference.conv2d_backward(go, x, w, **kw)[1])


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_grad_x_phases_write_every_element(build, rng, case, dtype, threads):
    x, w, go, g, kw = _problem(rng, case, dtype)
    grad_x = np.full_like(x, np.nan)
    _direct._grad_x_phases(go, w, grad_x, g, kw["groups"], threads)
    assert_close(grad_x, reference.conv2d_backward(go, x, w, **kw)[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_direct_backward_matches_reference(build, rng, case, dtype):
    x, w, go, g, kw = _problem(rng, case, dtype)
    got = fastconv.conv2d_backward(go, x, w, algorithm="direct", **kw)
    for a, want in zip(got, reference.conv2d_backward(go, x, w, **kw)):
        assert a.dtype == dtype and a.flags.c_contiguous
        assert_close(a, want)


@pytest.mark.parametrize("stride", [1, 2, 3, 4])
@pytest.mark.parametrize("case", [
    (1, 3, 9, 10, 4, 3, 1, 1, 1, 1),
    (2, 2, 11, 9, 3, 5, 1, 2, 2, 1),
    (1, 4, 8, 9, 4, (2, 3), 1, (1, 0), 1, 2),
])
def test_gradients_match_finite_differences(case, stride):
    rng = np.random.default_rng(7)
    x, w, go, g, kw = _problem(rng, case[:6] + (stride,) + case[7:], np.float64)

    def loss():
        return float(np.sum(fastconv.conv2d(x, w, algorithm="direct", **kw) * go))

    gx, gw, _ = fastconv.conv2d_backward(go, x, w, algorithm="direct", **kw)
    with fastconv.threads(1):
        np.testing.assert_allclose(gx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(gw, numerical_gradient(loss, w), rtol=1e-6, atol=1e-7)


def test_phases_cover_the_input_once():
    # every input position is in exactly one phase per dimension, whatever the geometry
    for size in range(1, 12):
        for stride in range(1, 5):
            for pad in range(0, 4):
                seen = []
                for r in range(stride):
                    _, first, count, _, _ = _direct._phase(size, stride, 1, 3, pad, r)
                    seen += list(range(first, size, stride))[:count]
                    assert count == len(range(first, size, stride))
                assert sorted(seen) == list(range(size))


@requires_torch
@pytest.mark.parametrize("case", CASES[:12])
def test_direct_backward_matches_torch(rng, case):
    torch = TORCH
    x, w, go, g, kw = _problem(rng, case, np.float64)
    tx, tw = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    torch.nn.functional.conv2d(tx, tw, **kw).backward(torch.from_numpy(go))
    gx, gw, _ = fastconv.conv2d_backward(go, x, w, algorithm="direct", **kw)
    assert_close(gx, tx.grad.numpy())
    assert_close(gw, tw.grad.numpy())
