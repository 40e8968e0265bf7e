"""Adaptive average and max pooling: against the reference and torch."""
import numpy as np
import pytest
from conftest import DTYPES, assert_close

import fastconv
from fastconv import reference

CASES = [((2, 3, 5, 6), 3), ((2, 3, 5, 6), (2, None)), ((1, 2, 5, 6), (7, 9)), ((2, 2, 7, 4), (5, 1)),
         ((0, 2, 4, 4), 2), ((3, 4, 4), (2, 3)), ((1, 1, 1, 1), 3), ((1, 2, 8, 8), 4)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, size", CASES)
def test_against_reference_and_torch(shape, size, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    x0 = x.copy()
    avg = fastconv.adaptive_avg_pool2d(x, size)
    mx, idx = fastconv.adaptive_max_pool2d(x, size, return_indices=True)
    assert avg.dtype == mx.dtype == dtype and idx.dtype == np.int64
    assert_close(avg, reference.adaptive_avg_pool2d(x, size))
    ref_mx, ref_idx = reference.adaptive_max_pool2d(x, size, return_indices=True)
    assert_close(mx, ref_mx)
    np.testing.assert_array_equal(idx, ref_idx)
    gy = rng.standard_normal(avg.shape).astype(dtype)
    g_avg = fastconv.adaptive_avg_pool2d_backward(gy, x.shape)
    g_max = fastconv.adaptive_max_pool2d_backward(gy, idx, x.shape)
    assert_close(g_avg, reference.adaptive_avg_pool2d_backward(gy, x.shape))
    assert_close(g_max, reference.adaptive_max_pool2d_backward(gy, idx, x.shape))
    np.testing.assert_array_equal(x, x0)
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    xt = torch.tensor(x, requires_grad=True)
    y = F.adaptive_avg_pool2d(xt, size)
    assert_close(avg, y.detach().numpy())
    if x.size:
        y.backward(torch.tensor(gy))
        assert_close(g_avg, xt.grad.numpy())
        xt.grad = None
        tm, ti = F.adaptive_max_pool2d(xt, size, return_indices=True)
        assert_close(mx, tm.detach().numpy())
        np.testing.assert_array_equal(idx, ti.numpy())
        tm.backward(torch.tensor(gy))
        assert_close(g_max, xt.grad.numpy())


def test_nan_propagates():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 1, 1] = np.nan
    out, idx = fastconv.adaptive_max_pool2d(x, 2, return_indices=True)
    assert np.isnan(out[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 5


def test_output_size_as_an_array():
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 5))
    for op in (fastconv.adaptive_avg_pool2d, fastconv.adaptive_max_pool2d):
        np.testing.assert_array_equal(op(x, np.array([2, 3])), op(x, (2, 3)))
        np.testing.assert_array_equal(op(x, np.int64(2)), op(x, 2))


def test_bad_arguments():
    x = np.zeros((1, 2, 4, 4))
    with pytest.raises(ValueError, match="output_size"):
        fastconv.adaptive_avg_pool2d(x, (1, 2, 3))
    with pytest.raises(ValueError, match="output_size"):
        fastconv.adaptive_max_pool2d(x, -1)
    with pytest.raises(TypeError, match="output_size"):
        fastconv.adaptive_avg_pool2d(x, 1.5)
    with pytest.raises(TypeError, match="return_indices"):
        fastconv.adaptive_max_pool2d(x, 2, return_indices=1)
    with pytest.raises(ValueError, match="x"):
        fastconv.adaptive_avg_pool2d(x[0, 0], 2)
    with pytest.raises(ValueError, match="indices"):
        fastconv.adaptive_max_pool2d_backward(np.zeros((1, 2, 2, 2)), np.full((1, 2, 2, 2), 99), x.shape)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("special", ["none", "nan", "inf", "-inf", "zeros"])
def test_every_build_finds_torchs_plane_max(rng, dtype, special):
    """Global max (and adaptive max to 1x1) by each build: planes of 1 to 70 values, so
    shorter than a vector, whole vectors, an overlapping last vector and the portable
    lanes' tails; ties keep the first maximum, a NaN makes the plane NaN (the last NaN's
    index), an infinity wins, and a zero maximum keeps the first zero's sign."""
    from fastconv._kernels import runnable_builds

    for L in range(1, 71):
        x = rng.integers(-3, 4, size=(24, L)).astype(dtype)
        if special == "zeros":
            x = -np.abs(x)
            x[rng.random(x.shape) < 0.3] = 0.0
            x[rng.random(x.shape) < 0.5] *= -1.0     # -0.0 where a zero is negated
        elif special != "none":
            value = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}[special]
            x[rng.random(x.shape) < 2.0 / L] = value
        want, want_idx = reference.global_max_pool2d(x.reshape(24, 1, 1, L), keepdims=False, return_indices=True)
        want, want_idx = want[:, 0], want_idx[:, 0]
        first = x[np.arange(24), want_idx]       # torch's value: the first maximum's, sign of a zero included
        for kernel in runnable_builds("adaptive_pool"):
            mx, idx = np.empty(24, dtype), np.empty(24, np.int64)
            kernel.global_max_pool2d(x, mx, idx, True, 2)
            np.testing.assert_array_equal(idx, want_idx, err_msg=f"L={L} {kernel.__name__}")
            np.testing.assert_array_equal(mx, want)
            np.testing.assert_array_equal(np.signbit(mx), np.signbit(first))
            kernel.global_max_pool2d(x, mx, idx, False, 1)
            np.testing.assert_array_equal(mx, want)
            np.testing.assert_array_equal(np.signbit(mx), np.signbit(first))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, size", [((2, 3, 14, 14), 5), ((3, 5, 13, 13), 6), ((1, 2, 7, 7), 1),
                                         ((2, 2, 5, 31), (9, 4)), ((1, 1, 1, 1), 3)])
def test_every_build_returns_the_same_max(rng, shape, size, dtype):
    """The AVX build of the max (where the CPU runs it) returns exactly the portable build's
    values and indices: ties (first maximum), NaN (the last one wins), infinities, -0.0."""
    from fastconv._kernels import runnable_builds

    x = rng.integers(-3, 4, size=shape).astype(dtype)
    x.flat[::7] = -np.inf
    x.flat[::11] = -0.0
    x[0, 0].flat[::5] = np.nan
    ref_mx, ref_idx = reference.adaptive_max_pool2d(x, size, return_indices=True)
    for kernel in runnable_builds("adaptive_pool"):
        mx, idx = np.empty_like(ref_mx), np.empty(ref_mx.shape, np.int64)
        P, (H, W) = shape[0] * shape[1], shape[2:]
        kernel.adaptive_max_pool2d(x.reshape(P, H, W), mx.reshape(P, *mx.shape[2:]), idx.reshape(P, *mx.shape[2:]), 2)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(mx, ref_mx)
        np.testing.assert_array_equal(np.signbit(mx), np.signbit(ref_mx))
