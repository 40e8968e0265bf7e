"""fastconv._memory.empty, the memory of large results: plain arrays on huge-page
boundaries, and the ops whose large results it allocates, against the reference."""
import numpy as np
import pytest
from conftest import DTYPES, assert_close, assert_within_winograd_bound

import fastconv
from fastconv import _memory, reference

LARGE_SHAPES = [(1500, 1501), (32, 64, 56, 56), (_memory.LARGE // 4,)]


@pytest.mark.parametrize("dtype", DTYPES + [np.int64])
@pytest.mark.parametrize("shape", LARGE_SHAPES)
def test_large_results_start_on_a_huge_page(shape, dtype):
    a = _memory.empty(shape, dtype)
    assert type(a) is np.ndarray and a.shape == shape and a.dtype == dtype
    assert a.flags.c_contiguous and a.flags.writeable and a.flags.aligned
    assert a.ctypes.data % _memory.HUGE_PAGE == 0
    a[...] = 7
    assert (a == 7).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (3, 5), (0, 4, 7), (1, 1, 1, 1), "just below LARGE"])
def test_small_results_are_plain_np_empty(shape, dtype):
    dtype = np.dtype(dtype)
    if shape == "just below LARGE":
        shape = (_memory.LARGE // dtype.itemsize - 1,)
    a = _memory.empty(shape, dtype)
    assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
    assert a.flags.owndata and a.base is None                  # np.empty's own array


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_large_results(dtype, training):
    rng = np.random.default_rng(0)
    shape = (16, 64, 56, 56)
    x, g = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    w, b = rng.standard_normal(64).astype(dtype), rng.standard_normal(64).astype(dtype)
    rm, rv = np.zeros(64, dtype), np.ones(64, dtype)
    got = fastconv.batch_norm2d(x, rm.copy(), rv.copy(), w, b, training=training)
    assert got.ctypes.data % _memory.HUGE_PAGE == 0
    assert_close(got, reference.batch_norm2d(x, rm.copy(), rv.copy(), w, b, training=training))
    got = fastconv.batch_norm2d_backward(g, x, w, training=training, running_mean=rm, running_var=rv)
    want = reference.batch_norm2d_backward(g, x, w, training=training, running_mean=rm, running_var=rv)
    for a, e in zip(got, want):
        assert_close(a, e)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", ["im2col", "direct", "winograd"])
def test_conv2d_large_results(dtype, algorithm):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 16, 96, 96)).astype(dtype)
    w = rng.standard_normal((128, 16, 3, 3)).astype(dtype)
    bias = rng.standard_normal(128).astype(dtype)
    check = assert_within_winograd_bound if algorithm == "winograd" else assert_close
    got = fastconv.conv2d(x, w, bias, padding=1, algorithm=algorithm)
    check(got, reference.conv2d(x, w, bias, padding=1))
    # grad_x as large as the input
    go, xb = rng.standard_normal((2, 16, 96, 96)).astype(dtype), rng.standard_normal((2, 128, 96, 96)).astype(dtype)
    wb = w.transpose(1, 0, 2, 3).copy()
    got = fastconv.conv2d_backward(go, xb, wb, padding=1, algorithm=algorithm)[0]
    check(got, reference.conv2d_backward(go, xb, wb, padding=1)[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_convolve2d_large_results(dtype):
    rng = np.random.default_rng(2)
    image, kernel = rng.standard_normal((1500, 1501)).astype(dtype), rng.standard_normal((5, 5)).astype(dtype)
    got = fastconv.convolve2d(image, kernel, "same")
    assert got.ctypes.data % _memory.HUGE_PAGE == 0
    assert_close(got, reference.convolve2d(image, kernel, "same"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_pooling_large_results(dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 64, 96, 96)).astype(dtype)
    y, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    want_y, want_idx = reference.max_pool2d(x, 2, return_indices=True)
    assert_close(y, want_y)
    np.testing.assert_array_equal(idx, want_idx)
    g = rng.standard_normal(y.shape).astype(dtype)
    for backward, want in [(lambda: fastconv.max_pool2d_backward(g, idx, x.shape),
                            reference.max_pool2d_backward(g, idx, x.shape)),
                           (lambda: fastconv.avg_pool2d_backward(g, x.shape, 2),
                            reference.avg_pool2d_backward(g, x.shape, 2)),
                           (lambda: fastconv.global_avg_pool2d_backward(g[:, :, :1, :1], x.shape),
                            reference.global_avg_pool2d_backward(g[:, :, :1, :1], x.shape))]:
        assert_close(backward(), want)
