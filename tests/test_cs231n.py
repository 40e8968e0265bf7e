"""fastconv.compat.cs231n against the course semantics, written here as naive
loops from the documented formulas, and against torch."""
import numpy as np
import pytest
from conftest import DTYPES, TORCH, assert_close, numerical_gradient, requires_torch

import fastconv
from fastconv.compat import cs231n
from fastconv.compat.cs231n import (
    col2im_cython,
    conv_backward_fast,
    conv_forward_fast,
    conv_relu_backward,
    conv_relu_forward,
    conv_relu_pool_backward,
    conv_relu_pool_forward,
    im2col_cython,
    max_pool_backward_fast,
    max_pool_forward_fast,
)

# ---------------------------------------------------------------------------
# The course semantics, naively

def pad(x, p):
    return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))


def conv_forward_naive(x, w, b, conv_param):
    """out[n, f, i, j] = b[f] + sum_{c, di, dj} xpad[n, c, i*s + di, j*s + dj] * w[f, c, di, dj]."""
    s, p = conv_param["stride"], conv_param["pad"]
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho, Wo = 1 + (H + 2 * p - HH) // s, 1 + (W + 2 * p - WW) // s
    xp = pad(x, p)
    out = np.zeros((N, F, Ho, Wo), np.result_type(x, w))
    for n in range(N):
        for f in range(F):
            for i in range(Ho):
                for j in range(Wo):
                    out[n, f, i, j] = np.sum(xp[n, :, i * s:i * s + HH, j * s:j * s + WW] * w[f]) + b[f]
    return out


def conv_backward_naive(dout, x, w, conv_param):
    s, p = conv_param["stride"], conv_param["pad"]
    F, _, HH, WW = w.shape
    N, _, Ho, Wo = dout.shape
    xp = pad(x, p)
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for n in range(N):
        for f in range(F):
            for i in range(Ho):
                for j in range(Wo):
                    dxp[n, :, i * s:i * s + HH, j * s:j * s + WW] += w[f] * dout[n, f, i, j]
                    dw[f] += xp[n, :, i * s:i * s + HH, j * s:j * s + WW] * dout[n, f, i, j]
    dx = dxp[:, :, p:p + x.shape[2], p:p + x.shape[3]]
    return dx, dw, dout.sum(axis=(0, 2, 3))


def max_pool_forward_naive(x, pool_param):
    """out[n, c, i, j] = max of x[n, c, i*s : i*s + ph, j*s : j*s + pw]."""
    ph, pw, s = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    N, C, H, W = x.shape
    out = np.zeros((N, C, 1 + (H - ph) // s, 1 + (W - pw) // s), x.dtype)
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            out[:, :, i, j] = x[:, :, i * s:i * s + ph, j * s:j * s + pw].max(axis=(2, 3))
    return out


def max_pool_backward_naive(dout, x, pool_param):
    """Each window's gradient goes to its maximum (the first one, scanning row by row)."""
    ph, pw, s = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    dx = np.zeros_like(x)
    N, C, Ho, Wo = dout.shape
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    window = x[n, c, i * s:i * s + ph, j * s:j * s + pw]
                    a, b = np.unravel_index(np.argmax(window), window.shape)
                    dx[n, c, i * s + a, j * s + b] += dout[n, c, i, j]
    return dx


def im2col_naive(x, fh, fw, p, s):
    """cols[(c*fh + i)*fw + j, (y*Wo + x)*N + n] = xpad[n, c, y*s + i, x*s + j]."""
    N, C, H, W = x.shape
    Ho, Wo = 1 + (H + 2 * p - fh) // s, 1 + (W + 2 * p - fw) // s
    xp = pad(x, p)
    cols = np.zeros((C * fh * fw, N * Ho * Wo), x.dtype)
    for c in range(C):
        for i in range(fh):
            for j in range(fw):
                for y in range(Ho):
                    for xx in range(Wo):
                        for n in range(N):
                            cols[(c * fh + i) * fw + j, (y * Wo + xx) * N + n] = xp[n, c, y * s + i, xx * s + j]
    return cols


def col2im_naive(cols, N, C, H, W, fh, fw, p, s):
    """The adjoint of im2col_naive: every column entry added back to its pixel; padding dropped."""
    Ho, Wo = 1 + (H + 2 * p - fh) // s, 1 + (W + 2 * p - fw) // s
    xp = np.zeros((N, C, H + 2 * p, W + 2 * p), cols.dtype)
    for c in range(C):
        for i in range(fh):
            for j in range(fw):
                for y in range(Ho):
                    for xx in range(Wo):
                        for n in range(N):
                            xp[n, c, y * s + i, xx * s + j] += cols[(c * fh + i) * fw + j, (y * Wo + xx) * N + n]
    return xp[:, :, p:p + H, p:p + W]


# ---------------------------------------------------------------------------

# (x shape, w shape, stride, pad): first the shapes the course code accepts
# ((H + 2*pad - HH) % stride == 0, square filters), then the ones it rejects.
CONV_CASES = [
    ((2, 3, 8, 8), (4, 3, 3, 3), 1, 1),
    ((2, 3, 7, 9), (5, 3, 3, 3), 2, 1),
    ((1, 2, 5, 5), (3, 2, 1, 1), 1, 0),
    ((3, 1, 6, 6), (2, 1, 2, 2), 2, 0),
    ((2, 3, 8, 8), (4, 3, 3, 3), 2, 0),          # windows that do not tile
    ((2, 2, 7, 6), (3, 2, 3, 2), 1, 1),          # non-square filter
    ((1, 3, 9, 10), (2, 3, 5, 3), 3, 2),
    ((0, 2, 5, 5), (3, 2, 3, 3), 1, 1),          # empty batch
]
POOL_CASES = [  # (x shape, pool_height, pool_width, stride)
    ((2, 3, 8, 8), 2, 2, 2),
    ((1, 2, 6, 9), 3, 3, 3),
    ((2, 2, 7, 7), 3, 3, 2),                     # 3x3 stride 2 (overlapping)
    ((2, 3, 8, 6), 2, 3, 2),                     # non-square window
    ((1, 2, 9, 7), 2, 2, 2),                     # windows that do not tile
    ((2, 1, 5, 6), 1, 2, 1),
]


def make_conv(rng, case, dtype):
    xs, ws, s, p = case
    return (rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype),
            rng.standard_normal(ws[0]).astype(dtype), {"stride": s, "pad": p})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_matches_course_semantics(rng, case, dtype):
    x, w, b, conv_param = make_conv(rng, case, dtype)
    out_naive = conv_forward_naive(x, w, b, conv_param)
    dout = rng.standard_normal(out_naive.shape).astype(dtype)
    expected = conv_backward_naive(dout, x, w, conv_param)
    pairs = [(cs231n.conv_forward_fast, cs231n.conv_backward_fast),
             (cs231n.conv_forward_im2col, cs231n.conv_backward_im2col),
             (cs231n.conv_forward_strides, cs231n.conv_backward_strides)]
    for forward, _ in pairs:
        out, cache = forward(x, w, b, conv_param)
        assert out.dtype == dtype
        assert_close(out, out_naive)
        for _, backward in pairs:          # every cache works with every backward
            grads = backward(dout, cache)
            assert len(grads) == 3
            for got, want in zip(grads, expected):
                assert got.dtype == dtype
                assert_close(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool_matches_course_semantics(rng, case, dtype):
    shape, ph, pw, s = case
    x = rng.standard_normal(shape).astype(dtype)
    pool_param = {"pool_height": ph, "pool_width": pw, "stride": s}
    out_naive = max_pool_forward_naive(x, pool_param)
    dout = rng.standard_normal(out_naive.shape).astype(dtype)
    dx_naive = max_pool_backward_naive(dout, x, pool_param)
    pairs = [(cs231n.max_pool_forward_fast, cs231n.max_pool_backward_fast),
             (cs231n.max_pool_forward_reshape, cs231n.max_pool_backward_reshape),
             (cs231n.max_pool_forward_im2col, cs231n.max_pool_backward_im2col)]
    for forward, _ in pairs:
        out, cache = forward(x, pool_param)
        assert out.dtype == dtype
        assert_close(out, out_naive)
        for _, backward in pairs:
            dx = backward(dout, cache)
            assert dx.dtype == dtype
            assert_close(dx, dx_naive)


def test_max_pool_ties_go_to_the_first_maximum():
    x = np.zeros((1, 1, 2, 2))
    out, cache = max_pool_forward_fast(x, {"pool_height": 2, "pool_width": 2, "stride": 2})
    assert_close(max_pool_backward_fast(np.ones((1, 1, 1, 1)), cache), [[[[1, 0], [0, 0]]]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_sandwiches(rng, dtype):
    x, w, b, conv_param = make_conv(rng, ((2, 3, 8, 8), (4, 3, 3, 3), 1, 1), dtype)
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    a = conv_forward_naive(x, w, b, conv_param)
    r = np.maximum(a, 0)
    out, cache = conv_relu_forward(x, w, b, conv_param)
    assert out.dtype == dtype
    assert_close(out, r)
    dout = rng.standard_normal(r.shape).astype(dtype)
    for got, want in zip(conv_relu_backward(dout, cache), conv_backward_naive(dout * (a > 0), x, w, conv_param)):
        assert got.dtype == dtype
        assert_close(got, want)

    out, cache = conv_relu_pool_forward(x, w, b, conv_param, pool_param)
    assert_close(out, max_pool_forward_naive(r, pool_param))
    dout = rng.standard_normal(out.shape).astype(dtype)
    dr = max_pool_backward_naive(dout, r, pool_param)
    for got, want in zip(conv_relu_pool_backward(dout, cache), conv_backward_naive(dr * (a > 0), x, w, conv_param)):
        assert got.dtype == dtype
        assert_close(got, want)


def test_conv_relu_pool_numerical_gradient(rng):
    """The course notebook's check: analytic against numerical gradients."""
    x, w, b, conv_param = make_conv(rng, ((2, 3, 8, 8), (3, 3, 3, 3), 1, 1), np.float64)
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    out, cache = conv_relu_pool_forward(x, w, b, conv_param, pool_param)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = conv_relu_pool_backward(dout, cache)
    f = lambda: float(np.sum(conv_relu_pool_forward(x, w, b, conv_param, pool_param)[0] * dout))
    with fastconv.threads(1):  # hundreds of tiny calls: no use for a thread team
        for analytic, value in ((dx, x), (dw, w), (db, b)):
            np.testing.assert_allclose(analytic, numerical_gradient(f, value), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, fh, fw, p, s", [
    ((2, 3, 5, 5), 3, 3, 1, 1),
    ((3, 2, 6, 7), 2, 2, 0, 2),
    ((1, 2, 7, 6), 3, 2, 1, 2),     # non-square field (the course's row index was wrong here)
    ((2, 1, 4, 4), 4, 4, 0, 1),
])
def test_im2col_and_col2im_match_course_layout(rng, shape, fh, fw, p, s, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    cols = im2col_cython(x, fh, fw, p, s)
    assert cols.dtype == dtype and cols.flags.c_contiguous
    assert_close(cols, im2col_naive(x, fh, fw, p, s))
    c = rng.standard_normal(cols.shape).astype(dtype)
    back = col2im_cython(c, *shape, fh, fw, p, s)
    assert back.dtype == dtype
    assert_close(back, col2im_naive(c, *shape, fh, fw, p, s))


def test_conv_im2col_identity(rng):
    """conv == w.reshape(F, -1) @ im2col_cython(x), reshaped (K, Ho, Wo, N) -> (N, K, Ho, Wo)."""
    x, w, b, conv_param = make_conv(rng, ((3, 2, 6, 6), (4, 2, 3, 3), 1, 1), np.float64)
    cols = im2col_cython(x, 3, 3, 1, 1)
    res = (w.reshape(4, -1) @ cols + b[:, None]).reshape(4, 6, 6, 3).transpose(3, 0, 1, 2)
    assert_close(conv_forward_fast(x, w, b, conv_param)[0], res)


def test_dtypes_follow_the_input(rng):
    x32 = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w64, b64 = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)    # course weights are float64
    out, cache = conv_forward_fast(x32, w64, b64, {"stride": 1, "pad": 1})
    assert out.dtype == np.float32
    assert_close(out, conv_forward_naive(x32.astype(np.float64), w64, b64, {"stride": 1, "pad": 1}).astype(np.float32))
    assert all(g.dtype == np.float32 for g in conv_backward_fast(np.ones(out.shape), cache))
    ints = np.arange(2 * 1 * 4 * 4).reshape(2, 1, 4, 4)
    out, cache = max_pool_forward_fast(ints, {"pool_height": 2, "pool_width": 2, "stride": 2})
    assert out.dtype == np.float64 and max_pool_backward_fast(np.ones(out.shape, np.float32), cache).dtype == np.float64
    assert im2col_cython(ints, 2, 2, 0, 2).dtype == np.float64


def test_star_import_and_bad_input():
    namespace = {}
    exec("from fastconv.compat.cs231n import *", namespace)
    for name in ("conv_forward_fast", "conv_backward_fast", "conv_forward_im2col", "conv_backward_im2col",
                 "conv_forward_strides", "conv_backward_strides", "max_pool_forward_fast",
                 "max_pool_backward_fast", "max_pool_forward_reshape", "max_pool_backward_reshape",
                 "max_pool_forward_im2col", "max_pool_backward_im2col", "conv_relu_forward", "conv_relu_backward",
                 "conv_relu_pool_forward", "conv_relu_pool_backward", "im2col_cython", "col2im_cython"):
        assert callable(namespace[name]), name
    with pytest.raises(ValueError, match="cols must have shape"):
        col2im_cython(np.zeros((27, 10)), 2, 3, 5, 5, 3, 3, 1, 1)
    with pytest.raises(ValueError, match="kernel_size"):
        conv_forward_fast(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 3, 3)), np.zeros(1), {"stride": 1, "pad": 0})
    with pytest.raises(KeyError):
        conv_forward_fast(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3)), np.zeros(1), {"stride": 1})


@requires_torch
class TestAgainstTorch:
    torch = TORCH

    @pytest.mark.parametrize("case", CONV_CASES[:-1])
    def test_conv(self, rng, case):
        F = self.torch.nn.functional
        x, w, b, conv_param = make_conv(rng, case, np.float64)
        out, cache = conv_forward_fast(x, w, b, conv_param)
        tx, tw, tb = (self.torch.from_numpy(a).requires_grad_(True) for a in (x, w, b))
        tout = F.conv2d(tx, tw, tb, stride=conv_param["stride"], padding=conv_param["pad"])
        assert_close(out, tout.detach().numpy())
        dout = rng.standard_normal(out.shape)
        tout.backward(self.torch.from_numpy(dout))
        for got, t in zip(conv_backward_fast(dout, cache), (tx, tw, tb)):
            assert_close(got, t.grad.numpy())

    @pytest.mark.parametrize("case", POOL_CASES)
    def test_max_pool(self, rng, case):
        F = self.torch.nn.functional
        shape, ph, pw, s = case
        x = rng.standard_normal(shape)
        out, cache = max_pool_forward_fast(x, {"pool_height": ph, "pool_width": pw, "stride": s})
        tx = self.torch.from_numpy(x).requires_grad_(True)
        tout = F.max_pool2d(tx, (ph, pw), stride=s)
        assert_close(out, tout.detach().numpy())
        dout = rng.standard_normal(out.shape)
        tout.backward(self.torch.from_numpy(dout))
        assert_close(max_pool_backward_fast(dout, cache), tx.grad.numpy())

    def test_im2col_is_unfold_with_the_batch_innermost(self, rng):
        x = rng.standard_normal((3, 2, 7, 6))
        unfold = self.torch.nn.functional.unfold(self.torch.from_numpy(x), (3, 2), padding=1, stride=2).numpy()
        assert_close(im2col_cython(x, 3, 2, 1, 2), unfold.transpose(1, 2, 0).reshape(unfold.shape[1], -1))
