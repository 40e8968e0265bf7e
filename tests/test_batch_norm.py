"""batch_norm2d and its backward: against the reference and torch, running statistics."""
import numpy as np
import pytest
from conftest import DTYPES, assert_close

import fastconv
from fastconv import reference


def make(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    C = shape[1]
    x = (3 * rng.standard_normal(shape) + 5).astype(dtype)
    return (x, rng.standard_normal(C).astype(dtype), (rng.random(C) + 0.5).astype(dtype),
            rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype))


# planes below FC_BN_SMALL_PLANE (64) values (gathered by channel) and at or above it
SHAPES = [(3, 4, 5, 6), (1, 3, 7, 1), (2, 1, 1, 2), (4, 2, 3, 3), (2, 3, 9, 8), (5, 6, 1, 1), (6, 37, 3, 3)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(40, 3, 2, 2), (3, 2, 8, 8), (200, 2, 1, 1)])
def test_small_planes_keep_the_precision_of_large_means(shape, dtype):
    # |mean| >> std: the statistics must not lose the spread to cancellation
    rng = np.random.default_rng(2)
    x = (1e4 + 1e-2 * rng.standard_normal(shape)).astype(dtype)
    xd = x.astype(np.float64)
    want_mean, want_var = xd.mean(axis=(0, 2, 3)), xd.var(axis=(0, 2, 3))
    rm, rv = np.zeros(shape[1], dtype), np.ones(shape[1], dtype)
    fastconv.batch_norm2d(x, rm, rv, training=True, momentum=1.0)
    M = shape[0] * shape[2] * shape[3]
    np.testing.assert_allclose(rm, want_mean, rtol=1e-6)
    np.testing.assert_allclose(rv, want_var * M / (M - 1), rtol=1e-3)
    gy = rng.standard_normal(shape).astype(dtype)
    got = fastconv.batch_norm2d_backward(gy, x, None, training=True)
    for a, want in zip(got, reference.batch_norm2d_backward(gy.astype(np.float64), xd, None, training=True)):
        np.testing.assert_allclose(a, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_against_reference_and_torch(shape, dtype, training, affine):
    x, rm, rv, w, b = make(shape, dtype)
    if not affine:
        w = b = None
    x0 = x.copy()
    rm_ref, rv_ref = rm.copy(), rv.copy()
    rm_t, rv_t = rm.copy(), rv.copy()
    out = fastconv.batch_norm2d(x, rm, rv, w, b, training=training, momentum=0.2)
    assert out.dtype == dtype
    np.testing.assert_array_equal(x, x0)
    assert_close(out, reference.batch_norm2d(x, rm_ref, rv_ref, w, b, training=training, momentum=0.2))
    assert_close(rm, rm_ref)
    assert_close(rv, rv_ref)
    gy = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    stats = {} if training else {"running_mean": rm_t, "running_var": rv_t}
    grads = fastconv.batch_norm2d_backward(gy, x, w, training=training, **stats)
    for got, want in zip(grads, reference.batch_norm2d_backward(gy, x, w, training=training, **stats)):
        assert got.dtype == dtype
        assert_close(got, want)
    torch = pytest.importorskip("torch")
    tm, tv = torch.tensor(rm_t), torch.tensor(rv_t)
    xt = torch.tensor(x, requires_grad=True)
    wt, bt = (None, None) if not affine else (torch.tensor(w, requires_grad=True),
                                              torch.tensor(b, requires_grad=True))
    y = torch.nn.functional.batch_norm(xt, tm, tv, wt, bt, training=training, momentum=0.2)
    assert_close(out, y.detach().numpy())
    assert_close(rm, tm.numpy())
    assert_close(rv, tv.numpy())
    y.backward(torch.tensor(gy))
    assert_close(grads[0], xt.grad.numpy())
    if affine:
        assert_close(grads[1], wt.grad.numpy())
        assert_close(grads[2], bt.grad.numpy())


def test_training_without_running_stats_and_empty_eval():
    x, rm, rv, _w, _b = make((2, 3, 4, 4), np.float64)
    assert_close(fastconv.batch_norm2d(x, training=True), reference.batch_norm2d(x, training=True))
    empty = np.zeros((0, 3, 4, 4))
    assert fastconv.batch_norm2d(empty, rm, rv).shape == empty.shape


def test_bad_arguments():
    x, rm, rv, _w, _b = make((2, 3, 4, 4), np.float64)
    with pytest.raises(ValueError, match="running_mean"):
        fastconv.batch_norm2d(x)
    with pytest.raises(ValueError, match="running_mean"):
        fastconv.batch_norm2d(x, rm[:2], rv)
    with pytest.raises(TypeError, match="running_var"):
        fastconv.batch_norm2d(x, rm, rv.astype(np.float32), training=True)
    with pytest.raises(TypeError, match="running_mean"):
        fastconv.batch_norm2d(x, list(rm), rv, training=True)
    with pytest.raises(ValueError, match="value per channel"):
        fastconv.batch_norm2d(x[:1, :, :1, :1], training=True)
    with pytest.raises(ValueError, match="eps"):
        fastconv.batch_norm2d(x, rm, rv, eps=-1.0)
    with pytest.raises(TypeError, match="training"):
        fastconv.batch_norm2d(x, rm, rv, training="yes")
    with pytest.raises(ValueError, match="x"):
        fastconv.batch_norm2d(x[0], rm, rv)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 3, 2, 2), (2, 3, 16, 16)])
def test_nan_reaches_the_running_statistics(shape, dtype):
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    x[1, 1, 0, 0] = np.nan
    stats = {}
    for lib in (fastconv, reference):
        rm, rv = np.zeros(3, dtype), np.ones(3, dtype)
        y = lib.batch_norm2d(x, rm, rv, training=True)
        stats[lib] = (y, rm, rv)
    for got, want in zip(stats[fastconv], stats[reference]):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(stats[fastconv][2][1]) and not np.isnan(stats[fastconv][2][[0, 2]]).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_channels(dtype):
    x = np.zeros((2, 0, 3, 3), dtype)
    for training in (True, False):
        kw = {} if training else dict(running_mean=np.zeros(0, dtype), running_var=np.ones(0, dtype))
        assert fastconv.batch_norm2d(x, training=training, **kw).shape == x.shape
        grads = fastconv.batch_norm2d_backward(x, x, training=training, **kw)
        assert [g.shape for g in grads] == [x.shape, (0,), (0,)]
