"""The compiled batch_norm2d and adaptive pooling kernels at their edges: batch 0 and 1,
non-contiguous and read-only inputs, NaN, float32 statistics of large values, planes
split into several parallel segments, and results independent of the thread count."""
import numpy as np
import pytest
from conftest import DTYPES, TORCH, assert_close

import fastconv
from fastconv import reference


def channel_vectors(C, dtype, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(C).astype(dtype), (rng.random(C) + 0.5).astype(dtype),
            rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype))


def read_only(*arrays):
    for a in arrays:
        a.setflags(write=False)
    return arrays


def check_batch_norm(x, dtype, training, momentum=0.1):
    """fastconv against the reference (forward, running statistics, backward)."""
    C = x.shape[1]
    rm, rv, w, b = channel_vectors(C, dtype)
    rm_ref, rv_ref = rm.copy(), rv.copy()
    out = fastconv.batch_norm2d(x, rm, rv, w, b, training=training, momentum=momentum)
    assert_close(out, reference.batch_norm2d(x, rm_ref, rv_ref, w, b, training=training, momentum=momentum))
    assert_close(rm, rm_ref)
    assert_close(rv, rv_ref)
    gy = np.random.default_rng(2).standard_normal(x.shape).astype(dtype)
    stats = {} if training else {"running_mean": rm, "running_var": rv}
    got = fastconv.batch_norm2d_backward(gy, x, w, training=training, **stats)
    want = reference.batch_norm2d_backward(gy, x, w, training=training, **stats)
    for g, e in zip(got, want):
        assert g.dtype == dtype
        assert_close(g, e)


# Several segments per plane (8192 values each), a large batch of one channel,
# batch 1, a small C with a large N.
@pytest.mark.parametrize("shape", [(2, 3, 97, 101), (257, 1, 3, 5), (1, 5, 9, 7), (64, 3, 2, 3)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_shapes(shape, training, dtype):
    x = (2 * np.random.default_rng(0).standard_normal(shape) - 3).astype(dtype)
    check_batch_norm(x, dtype, training)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_non_contiguous_and_read_only(dtype):
    rng = np.random.default_rng(3)
    base = rng.standard_normal((3, 8, 9, 12)).astype(dtype)
    x = base[:, ::2, :, ::2]            # not contiguous
    xt = base.transpose(0, 1, 3, 2)     # a transposed view
    rm, rv, w, b = channel_vectors(4, dtype)
    read_only(base, w, b)
    for training in (True, False):
        check_batch_norm(x, dtype, training)
        check_batch_norm(xt, dtype, training)
    rm_ro, rv_ro = read_only(rm.copy(), rv.copy())
    out = fastconv.batch_norm2d(x, rm_ro, rv_ro, w, b)      # eval only reads the statistics
    assert_close(out, reference.batch_norm2d(np.ascontiguousarray(x), rm, rv, w, b))
    gy = rng.standard_normal((3, 4, 9, 6)).astype(dtype)[:, :, :, ::-1]
    read_only(gy)
    got = fastconv.batch_norm2d_backward(gy, x, w, training=False, running_mean=rm_ro, running_var=rv_ro)
    want = reference.batch_norm2d_backward(gy, x, w, training=False, running_mean=rm, running_var=rv)
    for g, e in zip(got, want):
        assert_close(g, e)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_leaves_inputs_alone(dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 2, 5, 5)).astype(dtype)
    gy = rng.standard_normal(x.shape).astype(dtype)
    rm, rv, w, b = channel_vectors(2, dtype)
    copies = [a.copy() for a in (x, gy, w, b)]
    rm_id, rv_id = id(rm), id(rv)
    fastconv.batch_norm2d(x, rm, rv, w, b, training=True)
    fastconv.batch_norm2d_backward(gy, x, w)
    for a, c in zip((x, gy, w, b), copies):
        np.testing.assert_array_equal(a, c)
    # the running statistics are updated in place, as torch does
    rm0, rv0 = channel_vectors(2, dtype)[:2]
    assert id(rm) == rm_id and id(rv) == rv_id
    assert not np.array_equal(rm, rm0) and not np.array_equal(rv, rv0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_batch_zero(dtype):
    rm, rv, w, b = channel_vectors(3, dtype)
    x = np.zeros((0, 3, 4, 5), dtype)
    out = fastconv.batch_norm2d(x, rm, rv, w, b)
    assert out.shape == x.shape and out.dtype == dtype
    gx, gw, gb = fastconv.batch_norm2d_backward(x, x, w, training=False, running_mean=rm, running_var=rv)
    assert gx.shape == x.shape
    np.testing.assert_array_equal(gw, 0)
    np.testing.assert_array_equal(gb, 0)
    with pytest.raises(ValueError, match="value per channel"):
        fastconv.batch_norm2d(x, rm, rv, training=True)
    with pytest.raises(ValueError, match="value per channel"):
        fastconv.batch_norm2d_backward(x, x, w)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_nan_stays_in_its_channel(dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 4, 4)).astype(dtype)
    x[1, 1, 2, 3] = np.nan
    rm, rv, w, b = channel_vectors(3, dtype)
    out = fastconv.batch_norm2d(x, rm.copy(), rv.copy(), w, b, training=True)
    assert np.isnan(out[:, 1]).all()
    assert np.isfinite(out[:, [0, 2]]).all()
    ev = fastconv.batch_norm2d(x, rm, rv, w, b)
    assert np.isnan(ev).sum() == 1 and np.isnan(ev[1, 1, 2, 3])
    gx, gw, gb = fastconv.batch_norm2d_backward(np.ones_like(x), x, w)
    assert np.isnan(gx[:, 1]).all() and np.isfinite(gx[:, [0, 2]]).all()
    assert np.isnan(gw[1]) and np.isfinite(gw[[0, 2]]).all()


def test_batch_norm_float32_variance_of_large_values():
    """Mean 1e4 times the standard deviation: sums of squares would cancel in float32
    (and lose digits in float64); the shifted float64 sums do not."""
    rng = np.random.default_rng(6)
    x = (1e4 + rng.standard_normal((4, 2, 50, 50))).astype(np.float32)
    xd = x.astype(np.float64)
    M = 4 * 50 * 50
    var = xd.var(axis=(0, 2, 3))
    rm, rv = np.zeros(2, np.float32), np.zeros(2, np.float32)
    out = fastconv.batch_norm2d(x, rm, rv, training=True, momentum=1.0)
    np.testing.assert_allclose(rv, var * M / (M - 1), rtol=1e-6)
    np.testing.assert_allclose(rm, xd.mean(axis=(0, 2, 3)), rtol=1e-7)
    want = (xd - xd.mean(axis=(0, 2, 3))[:, None, None]) / np.sqrt(var + 1e-5)[:, None, None]
    np.testing.assert_allclose(out, want, atol=2e-5)
    # float64: mean 1e8 times the standard deviation
    x64 = 1e8 + rng.standard_normal((3, 2, 40, 40))
    rm, rv = np.zeros(2), np.zeros(2)
    fastconv.batch_norm2d(x64, rm, rv, training=True, momentum=1.0)
    d = x64 - x64.mean(axis=(0, 2, 3))[:, None, None]
    np.testing.assert_allclose(rv, np.square(d).sum(axis=(0, 2, 3)) / (x64[:, 0].size - 1), rtol=1e-9)
    # the backward's sum(g * (x - mean)) as well
    gy = rng.standard_normal(x.shape).astype(np.float32)
    _, gw, _ = fastconv.batch_norm2d_backward(gy, x)
    want_gw = (gy * (xd - xd.mean(axis=(0, 2, 3))[:, None, None])).sum(axis=(0, 2, 3)) / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(gw, want_gw, rtol=1e-5)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(3, 2, 90, 100), (2500, 37, 2, 2)])   # large planes; small ones, gathered
def test_batch_norm_same_result_at_any_thread_count(training, shape):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(np.float32)
    gy = rng.standard_normal(x.shape).astype(np.float32)
    rm, rv, w, b = channel_vectors(shape[1], np.float32)
    results = []
    for n in (1, 2, 3):
        with fastconv.threads(n):
            stats = (rm.copy(), rv.copy())
            results.append([fastconv.batch_norm2d(x, *stats, w, b, training=training), *stats,
                            *fastconv.batch_norm2d_backward(gy, x, w, training=training, running_mean=rm,
                                                            running_var=rv)])
    for other in results[1:]:
        for a, e in zip(other, results[0]):
            np.testing.assert_array_equal(a, e)


def test_batch_norm_against_torch_on_split_planes():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    x = (3 * rng.standard_normal((2, 3, 95, 90)) + 1).astype(np.float32)
    rm, rv, w, b = channel_vectors(3, np.float32)
    tm, tv = torch.tensor(rm), torch.tensor(rv)
    out = fastconv.batch_norm2d(x, rm, rv, w, b, training=True)
    xt = torch.tensor(x, requires_grad=True)
    wt, bt = torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)
    y = torch.nn.functional.batch_norm(xt, tm, tv, wt, bt, training=True)
    assert_close(out, y.detach().numpy())
    assert_close(rm, tm.numpy())
    assert_close(rv, tv.numpy())
    gy = rng.standard_normal(x.shape).astype(np.float32)
    y.backward(torch.tensor(gy))
    gx, gw, gb = fastconv.batch_norm2d_backward(gy, x, w)
    assert_close(gx, xt.grad.numpy())
    np.testing.assert_allclose(gw, wt.grad.numpy(), rtol=1e-4)
    np.testing.assert_allclose(gb, bt.grad.numpy(), rtol=1e-4)


# ---------------------------------------------------------------------------
# Adaptive pooling

def check_adaptive(x, size, torch=None, avg_reference=True):
    """fastconv against the reference (and torch) for both poolings, forward and backward.
    (The reference's averages are matrix products, which spread a NaN or an infinity
    beyond its windows: `avg_reference=False` skips them.)"""
    xc = np.ascontiguousarray(x)
    avg = fastconv.adaptive_avg_pool2d(x, size)
    mx, idx = fastconv.adaptive_max_pool2d(x, size, return_indices=True)
    if avg_reference:
        assert_close(avg, reference.adaptive_avg_pool2d(xc, size))
    ref_mx, ref_idx = reference.adaptive_max_pool2d(xc, size, return_indices=True)
    np.testing.assert_array_equal(mx, ref_mx)
    np.testing.assert_array_equal(idx, ref_idx)
    gy = np.random.default_rng(9).standard_normal(avg.shape).astype(x.dtype)
    g_avg = fastconv.adaptive_avg_pool2d_backward(gy, x.shape)
    assert_close(g_avg, reference.adaptive_avg_pool2d_backward(gy, x.shape))
    if torch is not None and x.size:
        F = torch.nn.functional
        xt = torch.tensor(xc, requires_grad=True)
        y = F.adaptive_avg_pool2d(xt, size)
        np.testing.assert_allclose(avg, y.detach().numpy(), rtol=1e-4, atol=1e-4)   # NaN where torch has NaN
        y.backward(torch.tensor(gy))
        assert_close(g_avg, xt.grad.numpy())
        tm, ti = F.adaptive_max_pool2d(torch.tensor(xc), size, return_indices=True)
        np.testing.assert_array_equal(mx, tm.numpy())
        np.testing.assert_array_equal(idx, ti.numpy())
    return avg, mx, idx


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, size", [((1, 1, 37, 41), (5, 3)), ((2, 3, 10, 9), (3, 1)), ((2, 3, 10, 9), (1, 1)),
                                         ((1, 2, 3, 4), (8, 7)), ((3, 2, 6, 6), (6, 6)), ((1, 1, 1, 9), (1, 4))])
def test_adaptive_shapes(shape, size, dtype):
    x = np.random.default_rng(10).standard_normal(shape).astype(dtype)
    check_adaptive(x, size, torch=pytest.importorskip("torch"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_adaptive_ties_nan_and_infinities(dtype):
    """Many ties (first maximum wins), -inf windows, and NaNs (the last one wins)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    x = rng.integers(0, 3, (2, 3, 11, 13)).astype(dtype)
    check_adaptive(x, (4, 5), torch=torch)
    x[0, 0] = -np.inf
    x[0, 1, rng.integers(0, 11, 12), rng.integers(0, 13, 12)] = np.nan
    x[1, 2, 3:5, 4:7] = np.nan
    avg, mx, _ = check_adaptive(x, (4, 5), torch=torch, avg_reference=False)
    assert np.isneginf(mx[0, 0]).all() and np.isneginf(avg[0, 0]).all()
    assert np.isnan(mx[0, 1]).any() and np.isnan(mx[1, 2]).any() and not np.isnan(mx[1, :2]).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_adaptive_non_contiguous_read_only_and_untouched(dtype):
    rng = np.random.default_rng(12)
    base = rng.standard_normal((2, 6, 14, 10)).astype(dtype)
    x = base[:, ::2, ::-1, 1:]
    read_only(base)
    check_adaptive(x, (4, 3))
    gy = rng.standard_normal((2, 3, 3, 8)).astype(dtype)[:, :, :, ::2]
    read_only(gy)
    g0 = gy.copy()
    got = fastconv.adaptive_avg_pool2d_backward(gy, x.shape)
    assert_close(got, reference.adaptive_avg_pool2d_backward(np.ascontiguousarray(gy), x.shape))
    _, idx = fastconv.adaptive_max_pool2d(x, (3, 4), return_indices=True)
    assert_close(fastconv.adaptive_max_pool2d_backward(gy, idx, x.shape),
                 reference.adaptive_max_pool2d_backward(np.ascontiguousarray(gy), idx, x.shape))
    np.testing.assert_array_equal(gy, g0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adaptive_batch_zero_and_one(dtype):
    x = np.zeros((0, 3, 5, 5), dtype)
    assert fastconv.adaptive_avg_pool2d(x, 2).shape == (0, 3, 2, 2)
    out, idx = fastconv.adaptive_max_pool2d(x, 2, return_indices=True)
    assert out.shape == idx.shape == (0, 3, 2, 2)
    assert fastconv.adaptive_avg_pool2d_backward(np.zeros((0, 3, 2, 2), dtype), x.shape).shape == x.shape
    check_adaptive(np.random.default_rng(13).standard_normal((1, 2, 9, 5)).astype(dtype), (4, 2))
    grad = fastconv.adaptive_avg_pool2d_backward(np.ones((1, 2, 0, 3), dtype), (1, 2, 4, 4))
    np.testing.assert_array_equal(grad, 0)


def test_adaptive_same_result_at_any_thread_count():
    x = np.random.default_rng(14).standard_normal((3, 5, 23, 19)).astype(np.float32)
    gy = np.random.default_rng(15).standard_normal((3, 5, 6, 4)).astype(np.float32)
    results = []
    for n in (1, 2, 3):
        with fastconv.threads(n):
            results.append([fastconv.adaptive_avg_pool2d(x, (6, 4)), *fastconv.adaptive_max_pool2d(x, (6, 4), True),
                            fastconv.adaptive_avg_pool2d_backward(gy, x.shape)])
    for other in results[1:]:
        for a, e in zip(other, results[0]):
            np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hw", [(1, 1), (1, 3), (1, 7), (2, 4), (3, 3), (4, 4), (5, 5), (7, 7), (5, 13), (16, 32), (23, 23)])
def test_adaptive_average_to_one_pixel(hw, dtype):
    """Output 1x1 runs global pooling's kernel: planes shorter than, equal to and past
    one, two and four vectors of lanes and 512 values, a NaN and an infinity kept in
    their planes, the same bits as global_avg_pool2d; in every build (the AVX build
    sums groups of planes, the portable one plane by plane), the same bits at every
    thread count and for every plane count of the last group, batched and unbatched
    (and torch's values, where it is installed)."""
    from fastconv._kernels import runnable_builds

    rng = np.random.default_rng(13)
    x = rng.standard_normal((5, 3) + hw).astype(dtype)
    x[0, 1, 0, 0], x[2, 2, -1, -1] = np.nan, np.inf
    avg, _, _ = check_adaptive(x, 1, torch=TORCH, avg_reference=False)
    finite = np.isfinite(x).all(axis=(2, 3))
    assert_close(avg[finite], reference.adaptive_avg_pool2d(x, 1)[finite])
    assert np.isnan(avg[0, 1]).all() and np.isposinf(avg[2, 2]).all() and np.isfinite(avg[finite]).all()
    np.testing.assert_array_equal(avg, fastconv.global_avg_pool2d(x))
    np.testing.assert_array_equal(fastconv.adaptive_avg_pool2d(x[1], (1, 1)), avg[1])
    planes = x.reshape(15, -1)
    for build in runnable_builds("adaptive_pool"):
        whole = np.empty(15, dtype)
        build.global_avg_pool2d(planes, whole, 2)
        assert_close(whole.reshape(5, 3)[finite], reference.adaptive_avg_pool2d(x, 1)[finite][:, 0, 0])
        for n in (1, 3):      # the kernel itself: the op gives small work one thread
            for count in (1, 7, 9, 15):      # groups of 4 or 8 planes, the last one short
                out = np.empty(count, dtype)
                build.global_avg_pool2d(planes[:count], out, n)
                np.testing.assert_array_equal(out, whole[:count])
