"""fastconv.compat.cs231n against the course semantics, written here as naive
loops from the documented formulas (and NumPy transcriptions of the course's
reference versions), against numerical gradients and against torch."""
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


def get_im2col_indices_naive(x_shape, fh, fw, p, s):
    """The course's im2col.py index arrays, transcribed."""
    N, C, H, W = x_shape
    Ho, Wo = (H + 2 * p - fh) // s + 1, (W + 2 * p - fw) // s + 1
    i0 = np.tile(np.repeat(np.arange(fh), fw), C)
    i1 = s * np.repeat(np.arange(Ho), Wo)
    j0 = np.tile(np.arange(fw), fh * C)
    j1 = s * np.tile(np.arange(Wo), Ho)
    i = i0.reshape(-1, 1) + i1.reshape(1, -1)
    j = j0.reshape(-1, 1) + j1.reshape(1, -1)
    k = np.repeat(np.arange(C), fh * fw).reshape(-1, 1)
    return k, i, j


def col2im_6d_naive(cols, N, C, H, W, HH, WW, p, s):
    """x_padded[n, c, y*s + i, x*s + j] += cols[c, i, j, n, y, x]; padding dropped."""
    _, _, _, _, Ho, Wo = cols.shape
    xp = np.zeros((N, C, H + 2 * p, W + 2 * p), cols.dtype)
    for c in range(C):
        for i in range(HH):
            for j in range(WW):
                for n in range(N):
                    for y in range(Ho):
                        for xx in range(Wo):
                            xp[n, c, y * s + i, xx * s + j] += cols[c, i, j, n, y, xx]
    return xp[:, :, p:p + H, p:p + W]


def batchnorm_forward_naive(x, gamma, beta, bn_param):
    """The course's batchnorm_forward (its skeleton, with the training-time
    formulas of the assignment), transcribed."""
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    N, D = x.shape
    running_mean = bn_param.get("running_mean", np.zeros(D, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.zeros(D, dtype=x.dtype))
    if mode == "train":
        sample_mean = x.mean(axis=0)
        sample_var = x.var(axis=0)
        x_hat = (x - sample_mean) / np.sqrt(sample_var + eps)
        out = gamma * x_hat + beta
        cache = (x, x_hat, sample_mean, sample_var, gamma, eps)
        running_mean = momentum * running_mean + (1 - momentum) * sample_mean
        running_var = momentum * running_var + (1 - momentum) * sample_var
    elif mode == "test":
        out = gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta
        cache = None
    else:
        raise ValueError(f'Invalid forward batchnorm mode "{mode}"')
    bn_param["running_mean"] = running_mean
    bn_param["running_var"] = running_var
    return out, cache


def batchnorm_backward_naive(dout, cache):
    """The computational graph of batch norm, node by node (the course's first derivation)."""
    x, x_hat, mean, var, gamma, eps = cache
    N = x.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = (dout * x_hat).sum(axis=0)
    dx_hat = dout * gamma
    inv = 1 / np.sqrt(var + eps)
    xmu = x - mean
    dvar = np.sum(dx_hat * xmu, axis=0) * -0.5 * inv ** 3
    dmean = np.sum(-dx_hat * inv, axis=0) + dvar * np.mean(-2 * xmu, axis=0)
    dx = dx_hat * inv + dvar * 2 * xmu / N + dmean / N
    return dx, dgamma, dbeta


def spatial_batchnorm_forward_naive(x, gamma, beta, bn_param):
    """The course's spatial batch norm: batch norm of the (N*H*W, C) matrix."""
    N, C, H, W = x.shape
    out, cache = batchnorm_forward_naive(x.transpose(0, 2, 3, 1).reshape(-1, C), gamma, beta, bn_param)
    return out.reshape(N, H, W, C).transpose(0, 3, 1, 2), cache


def spatial_batchnorm_backward_naive(dout, cache):
    N, C, H, W = dout.shape
    dx, dgamma, dbeta = batchnorm_backward_naive(dout.transpose(0, 2, 3, 1).reshape(-1, C), cache)
    return dx.reshape(N, H, W, C).transpose(0, 3, 1, 2), dgamma, dbeta


def affine_forward_naive(x, w, b):
    return x.reshape(x.shape[0], -1).dot(w) + b


def affine_backward_naive(dout, x, w):
    return dout.dot(w.T).reshape(x.shape), x.reshape(x.shape[0], -1).T.dot(dout), dout.sum(axis=0)


def relu_backward_naive(dout, x):
    dx = dout.copy()
    dx[x <= 0] = 0
    return dx


def softmax_loss_naive(x, y):
    shifted = x - np.max(x, axis=1, keepdims=True)
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    N = x.shape[0]
    loss = -np.sum(log_probs[np.arange(N), y]) / N
    dx = np.exp(log_probs)
    dx[np.arange(N), y] -= 1
    return loss, dx / N


def svm_loss_naive(x, y):
    N = x.shape[0]
    correct = x[np.arange(N), y]
    margins = np.maximum(0, x - correct[:, None] + 1.0)
    margins[np.arange(N), y] = 0
    dx = np.zeros_like(x)
    dx[margins > 0] = 1
    dx[np.arange(N), y] -= np.sum(margins > 0, axis=1)
    return np.sum(margins) / N, dx / N


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
                 "conv_relu_pool_forward", "conv_relu_pool_backward", "im2col_cython", "col2im_cython",
                 "col2im_6d_cython", "get_im2col_indices", "im2col_indices", "col2im_indices",
                 "affine_forward", "affine_backward", "relu_forward", "relu_backward", "batchnorm_forward",
                 "batchnorm_backward", "batchnorm_backward_alt", "spatial_batchnorm_forward",
                 "spatial_batchnorm_backward", "softmax_loss", "svm_loss", "affine_relu_forward",
                 "affine_relu_backward", "conv_bn_relu_forward", "conv_bn_relu_backward"):
        assert callable(namespace[name]), name
    with pytest.raises(ValueError, match="cols must have shape"):
        col2im_cython(np.zeros((27, 10)), 2, 3, 5, 5, 3, 3, 1, 1)
    with pytest.raises(ValueError, match="kernel_size"):
        conv_forward_fast(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 3, 3)), np.zeros(1), {"stride": 1, "pad": 0})
    with pytest.raises(KeyError):
        conv_forward_fast(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3)), np.zeros(1), {"stride": 1})



# ---------------------------------------------------------------------------
# The rest of assignment 2: fast_layers' column helpers, layers and layer_utils

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, fh, fw, p, s", [
    ((2, 3, 5, 5), 3, 3, 1, 1),
    ((3, 2, 6, 7), 2, 2, 0, 2),
    ((1, 2, 7, 6), 3, 2, 1, 2),
    ((2, 1, 4, 4), 4, 4, 0, 1),
])
def test_im2col_indices_match_the_course(rng, shape, fh, fw, p, s, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    k, i, j = cs231n.get_im2col_indices(shape, fh, fw, p, s)
    for got, want in zip((k, i, j), get_im2col_indices_naive(shape, fh, fw, p, s)):
        assert got.shape == want.shape and np.array_equal(got, want)
    # the course's im2col_indices / col2im_indices: fancy indexing and np.add.at
    fancy = pad(x, p)[:, k, i, j].transpose(1, 2, 0).reshape(shape[1] * fh * fw, -1)
    cols = cs231n.im2col_indices(x, fh, fw, p, s)
    assert cols.dtype == dtype
    assert_close(cols, fancy)
    c = rng.standard_normal(cols.shape).astype(dtype)
    summed = np.zeros(pad(x, p).shape, dtype)
    np.add.at(summed, (slice(None), k, i, j), c.reshape(shape[1] * fh * fw, -1, shape[0]).transpose(2, 0, 1))
    back = cs231n.col2im_indices(c, shape, fh, fw, p, s)
    assert back.dtype == dtype
    assert_close(back, summed[:, :, p:p + shape[2], p:p + shape[3]])


def test_im2col_indices_defaults_are_the_courses(rng):
    x = rng.standard_normal((2, 2, 5, 5))
    assert_close(cs231n.im2col_indices(x, 3, 3), im2col_naive(x, 3, 3, 1, 1))
    cols = rng.standard_normal((18, 50))
    assert_close(cs231n.col2im_indices(cols, x.shape), col2im_naive(cols, 2, 2, 5, 5, 3, 3, 1, 1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES[:-1])
def test_col2im_6d_cython(rng, case, dtype):
    (N, C, H, W), (F, _, HH, WW), s, p = case
    Ho, Wo = 1 + (H + 2 * p - HH) // s, 1 + (W + 2 * p - WW) // s
    cols = rng.standard_normal((C, HH, WW, N, Ho, Wo)).astype(dtype)
    dx = cs231n.col2im_6d_cython(cols, N, C, H, W, HH, WW, p, s)
    assert dx.dtype == dtype and dx.shape == (N, C, H, W)
    assert_close(dx, col2im_6d_naive(cols, N, C, H, W, HH, WW, p, s))
    # as conv_backward_strides uses it: the input gradient of a convolution
    x, w, b, conv_param = make_conv(rng, case, dtype)
    dout = rng.standard_normal((N, F, Ho, Wo)).astype(dtype)
    dx_cols = w.reshape(F, -1).T.dot(dout.transpose(1, 0, 2, 3).reshape(F, -1)).reshape(C, HH, WW, N, Ho, Wo)
    assert_close(cs231n.col2im_6d_cython(dx_cols, N, C, H, W, HH, WW, p, s),
                 conv_backward_naive(dout, x, w, conv_param)[0])
    with pytest.raises(ValueError, match="cols must have shape"):
        cs231n.col2im_6d_cython(cols[:, :, :, :, :-1], N, C, H, W, HH, WW, p, s)


@pytest.mark.parametrize("dtype", DTYPES)
def test_affine_relu_and_losses_match_the_course(rng, dtype):
    x = rng.standard_normal((4, 3, 2, 2)).astype(dtype)
    w, b = rng.standard_normal((12, 5)).astype(dtype), rng.standard_normal(5).astype(dtype)
    out, cache = cs231n.affine_forward(x, w, b)
    assert out.dtype == dtype
    assert_close(out, affine_forward_naive(x, w, b))
    dout = rng.standard_normal(out.shape).astype(dtype)
    for got, want in zip(cs231n.affine_backward(dout, cache), affine_backward_naive(dout, x, w)):
        assert got.dtype == dtype
        assert_close(got, want)
    r, cache = cs231n.relu_forward(out)
    assert_close(r, np.maximum(out, 0))
    assert_close(cs231n.relu_backward(dout, cache), relu_backward_naive(dout, out))
    out, cache = cs231n.affine_relu_forward(x, w, b)
    assert_close(out, np.maximum(affine_forward_naive(x, w, b), 0))
    a = affine_forward_naive(x, w, b)
    for got, want in zip(cs231n.affine_relu_backward(dout, cache),
                         affine_backward_naive(relu_backward_naive(dout, a), x, w)):
        assert_close(got, want)
    y = rng.integers(0, 5, size=4)
    for ours, naive_loss in ((cs231n.softmax_loss, softmax_loss_naive), (cs231n.svm_loss, svm_loss_naive)):
        loss, dx = ours(out, y)
        want_loss, want_dx = naive_loss(out, y)
        np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
        assert dx.dtype == dtype
        assert_close(dx, want_dx)


def _bn_cases(rng, dtype, shape):
    C = shape[1]
    return (rng.normal(2.0, 3.0, shape).astype(dtype), rng.standard_normal(C).astype(dtype),
            rng.standard_normal(C).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spatial", [False, True])
def test_batchnorm_train_and_test_match_the_course(rng, dtype, spatial):
    shape = (6, 3, 4, 5) if spatial else (20, 7)
    ours_fwd, ours_bwd = ((cs231n.spatial_batchnorm_forward, cs231n.spatial_batchnorm_backward) if spatial
                          else (cs231n.batchnorm_forward, cs231n.batchnorm_backward))
    naive_fwd, naive_bwd = ((spatial_batchnorm_forward_naive, spatial_batchnorm_backward_naive) if spatial
                            else (batchnorm_forward_naive, batchnorm_backward_naive))
    ours_param, naive_param = {"mode": "train"}, {"mode": "train"}
    for _ in range(3):       # the running statistics accumulate as the course's
        x, gamma, beta = _bn_cases(rng, dtype, shape)
        before = ours_param.get("running_mean")
        out, cache = ours_fwd(x, gamma, beta, ours_param)
        want, naive_cache = naive_fwd(x, gamma, beta, naive_param)
        assert out.dtype == dtype and out.shape == x.shape
        assert_close(out, want)
        for key in ("running_mean", "running_var"):
            assert ours_param[key].dtype == naive_param[key].dtype == dtype
            assert_close(ours_param[key], naive_param[key])
        assert ours_param["running_mean"] is not before      # stored back as a new array
        dout = rng.standard_normal(x.shape).astype(dtype)
        for got, want in zip(ours_bwd(dout, cache), naive_bwd(dout, naive_cache)):
            assert got.dtype == dtype
            assert_close(got, want)
    if not spatial:
        for got, want in zip(cs231n.batchnorm_backward_alt(dout, cache), naive_bwd(dout, naive_cache)):
            assert_close(got, want)
    # test mode: the running statistics, unchanged
    ours_param["mode"] = naive_param["mode"] = "test"
    kept = {k: ours_param[k].copy() for k in ("running_mean", "running_var")}
    x, gamma, beta = _bn_cases(rng, dtype, shape)
    out, _ = ours_fwd(x, gamma, beta, ours_param)
    assert_close(out, naive_fwd(x, gamma, beta, naive_param)[0])
    for key, value in kept.items():
        assert np.array_equal(ours_param[key], value)


def test_batchnorm_param_defaults_and_errors(rng):
    x, gamma, beta = _bn_cases(rng, np.float64, (10, 4))
    bn_param = {"mode": "test"}       # no running statistics yet: zeros, as in the course
    out, _ = cs231n.batchnorm_forward(x, gamma, beta, bn_param)
    assert_close(out, gamma * x / np.sqrt(1e-5) + beta)
    assert np.array_equal(bn_param["running_mean"], np.zeros(4))
    bn_param = {"mode": "train", "momentum": 0.5, "eps": 1e-3}
    cs231n.batchnorm_forward(x, gamma, beta, bn_param)
    assert_close(bn_param["running_mean"], 0.5 * x.mean(axis=0))
    assert_close(bn_param["running_var"], 0.5 * x.var(axis=0))
    with pytest.raises(ValueError, match="Invalid forward batchnorm mode"):
        cs231n.batchnorm_forward(x, gamma, beta, {"mode": "eval"})
    with pytest.raises(KeyError):
        cs231n.spatial_batchnorm_forward(x.reshape(10, 4, 1, 1), gamma, beta, {})
    with pytest.raises(ValueError, match="gamma must have shape"):
        cs231n.spatial_batchnorm_forward(x.reshape(10, 4, 1, 1), gamma[:3], beta, {"mode": "train"})


@pytest.mark.parametrize("spatial", [False, True])
@pytest.mark.parametrize("mode", ["train", "test"])
def test_batchnorm_numerical_gradient(rng, spatial, mode):
    shape = (3, 2, 3, 2) if spatial else (5, 3)
    fwd, bwd = ((cs231n.spatial_batchnorm_forward, cs231n.spatial_batchnorm_backward) if spatial
                else (cs231n.batchnorm_forward, cs231n.batchnorm_backward))
    x, gamma, beta = _bn_cases(rng, np.float64, shape)
    C = shape[1]
    stats = {"running_mean": rng.standard_normal(C), "running_var": rng.random(C) + 0.5}
    dout = rng.standard_normal(shape)
    out, cache = fwd(x, gamma, beta, {"mode": mode, **stats})
    dx, dgamma, dbeta = bwd(dout, cache)
    f = lambda: float(np.sum(fwd(x, gamma, beta, {"mode": mode, **stats})[0] * dout))
    with fastconv.threads(1):
        for analytic, value in ((dx, x), (dgamma, gamma), (dbeta, beta)):
            np.testing.assert_allclose(analytic, numerical_gradient(f, value), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_bn_relu(rng, dtype):
    x, w, b, conv_param = make_conv(rng, ((3, 2, 6, 6), (4, 2, 3, 3), 1, 1), dtype)
    gamma, beta = rng.standard_normal(4).astype(dtype), rng.standard_normal(4).astype(dtype)
    ours_param, naive_param = {"mode": "train"}, {"mode": "train"}
    out, cache = cs231n.conv_bn_relu_forward(x, w, b, gamma, beta, conv_param, ours_param)
    a = conv_forward_naive(x, w, b, conv_param)
    an, bn_cache = spatial_batchnorm_forward_naive(a, gamma, beta, naive_param)
    assert out.dtype == dtype
    assert_close(out, np.maximum(an, 0))
    assert_close(ours_param["running_var"], naive_param["running_var"])
    dout = rng.standard_normal(out.shape).astype(dtype)
    da, dgamma, dbeta = spatial_batchnorm_backward_naive(relu_backward_naive(dout, an), bn_cache)
    want = (*conv_backward_naive(da, x, w, conv_param), dgamma, dbeta)
    got = cs231n.conv_bn_relu_backward(dout, cache)
    assert len(got) == 5
    for g, want_g in zip(got, want):
        assert g.dtype == dtype
        assert_close(g, want_g)


def test_conv_bn_relu_numerical_gradient(rng):
    x, w, b, conv_param = make_conv(rng, ((2, 2, 5, 5), (3, 2, 3, 3), 1, 1), np.float64)
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    out, cache = cs231n.conv_bn_relu_forward(x, w, b, gamma, beta, conv_param, {"mode": "train"})
    dout = rng.standard_normal(out.shape)
    grads = cs231n.conv_bn_relu_backward(dout, cache)
    f = lambda: float(np.sum(cs231n.conv_bn_relu_forward(x, w, b, gamma, beta, conv_param,
                                                         {"mode": "train"})[0] * dout))
    with fastconv.threads(1):
        for analytic, value in zip(grads, (x, w, b, gamma, beta)):
            np.testing.assert_allclose(analytic, numerical_gradient(f, value), rtol=1e-5, atol=1e-6)


def max_pool_forward_reshape_original(x, pool_param):
    """The original fast_layers.max_pool_forward_reshape and its cache, transcribed."""
    N, C, H, W = x.shape
    ph, pw = pool_param["pool_height"], pool_param["pool_width"]
    x_reshaped = x.reshape(N, C, H // ph, ph, W // pw, pw)
    out = x_reshaped.max(axis=3).max(axis=4)
    return out, ("reshape", (x, x_reshaped, out))


def max_pool_forward_im2col_original(x, pool_param):
    """The original fast_layers.max_pool_forward_im2col and its cache, transcribed."""
    N, C, H, W = x.shape
    ph, pw, s = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    Ho, Wo = (H - ph) // s + 1, (W - pw) // s + 1
    x_cols = im2col_naive(x.reshape(N * C, 1, H, W), ph, pw, 0, s)
    x_cols_argmax = np.argmax(x_cols, axis=0)
    out = x_cols[x_cols_argmax, np.arange(x_cols.shape[1])].reshape(Ho, Wo, N, C).transpose(2, 3, 0, 1)
    return out, ("im2col", (x, x_cols, x_cols_argmax, pool_param))


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_backward_takes_the_original_caches(rng, dtype):
    x = rng.standard_normal((2, 3, 6, 8)).astype(dtype)
    for pool_param, original in (({"pool_height": 2, "pool_width": 2, "stride": 2}, max_pool_forward_reshape_original),
                                 ({"pool_height": 3, "pool_width": 2, "stride": 1}, max_pool_forward_im2col_original),
                                 ({"pool_height": 2, "pool_width": 2, "stride": 2}, max_pool_forward_im2col_original)):
        out, cache = original(x, pool_param)
        assert_close(out, max_pool_forward_naive(x, pool_param))
        dout = rng.standard_normal(out.shape).astype(dtype)
        want = max_pool_backward_naive(dout, x, pool_param)
        for backward in (cs231n.max_pool_backward_fast, cs231n.max_pool_backward_reshape,
                         cs231n.max_pool_backward_im2col):
            dx = backward(dout, cache)
            assert dx.dtype == dtype
            assert_close(dx, want)
        # inside a sandwich cache as well
        conv_cache = conv_forward_fast(x, rng.standard_normal((3, 3, 1, 1)).astype(dtype), np.zeros(3, dtype),
                                       {"stride": 1, "pad": 0})[1]
        relu_in = np.abs(x) + 1
        got = conv_relu_pool_backward(dout, (conv_cache, relu_in, cache))
        assert_close(got[0], conv_backward_naive(want, x, conv_cache[1], {"stride": 1, "pad": 0})[0])


def test_max_pool_backward_names_what_it_needs(rng):
    x = rng.standard_normal((1, 1, 4, 4))
    dout = np.ones((1, 1, 2, 2))
    for bad in (("reshape", (x, x)), ("im2col", (x,)), ("unknown", x), (x, x), x):
        with pytest.raises(ValueError, match="cache"):
            max_pool_backward_fast(dout, bad)


THREE_LAYER_CONVNET = """
from fastconv.compat.cs231n import *
import numpy as np


class ThreeLayerConvNet:
    # conv - relu - 2x2 max pool - affine - relu - affine - softmax, as in the course's classifiers/cnn.py

    def __init__(self, input_dim=(3, 32, 32), num_filters=32, filter_size=7, hidden_dim=100,
                 num_classes=10, weight_scale=1e-3, reg=0.0, dtype=np.float32, seed=0):
        rng = np.random.default_rng(seed)
        C, H, W = input_dim
        self.reg, self.dtype = reg, dtype
        self.params = {
            "W1": weight_scale * rng.standard_normal((num_filters, C, filter_size, filter_size)),
            "b1": np.zeros(num_filters),
            "W2": weight_scale * rng.standard_normal((num_filters * (H // 2) * (W // 2), hidden_dim)),
            "b2": np.zeros(hidden_dim),
            "W3": weight_scale * rng.standard_normal((hidden_dim, num_classes)),
            "b3": np.zeros(num_classes),
        }
        for k, v in self.params.items():
            self.params[k] = v.astype(dtype)

    def loss(self, X, y=None):
        W1, b1 = self.params["W1"], self.params["b1"]
        W2, b2 = self.params["W2"], self.params["b2"]
        W3, b3 = self.params["W3"], self.params["b3"]
        filter_size = W1.shape[2]
        conv_param = {"stride": 1, "pad": (filter_size - 1) // 2}
        pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
        out1, cache1 = conv_relu_pool_forward(X, W1, b1, conv_param, pool_param)
        out2, cache2 = affine_relu_forward(out1, W2, b2)
        scores, cache3 = affine_forward(out2, W3, b3)
        if y is None:
            return scores
        loss, dscores = softmax_loss(scores, y)
        loss += 0.5 * self.reg * sum(np.sum(self.params[k] ** 2) for k in ("W1", "W2", "W3"))
        grads = {}
        dout2, grads["W3"], grads["b3"] = affine_backward(dscores, cache3)
        dout1, grads["W2"], grads["b2"] = affine_relu_backward(dout2, cache2)
        _, grads["W1"], grads["b1"] = conv_relu_pool_backward(dout1, cache1)
        for k in ("W1", "W2", "W3"):
            grads[k] += self.reg * self.params[k]
        return loss, grads
"""


def test_three_layer_convnet_runs_on_the_star_import(rng):
    namespace = {}
    exec(THREE_LAYER_CONVNET, namespace)
    model = namespace["ThreeLayerConvNet"](input_dim=(2, 8, 8), num_filters=3, filter_size=3, hidden_dim=7,
                                           num_classes=4, weight_scale=0.5, reg=0.1, dtype=np.float64)
    X = rng.standard_normal((3, 2, 8, 8))
    y = np.array([0, 3, 1])
    p = model.params
    # the loss against the naive course layers
    a = conv_forward_naive(X, p["W1"], p["b1"], {"stride": 1, "pad": 1})
    h1 = max_pool_forward_naive(np.maximum(a, 0), {"pool_height": 2, "pool_width": 2, "stride": 2})
    scores = affine_forward_naive(np.maximum(affine_forward_naive(h1, p["W2"], p["b2"]), 0), p["W3"], p["b3"])
    assert_close(model.loss(X), scores)
    reg = 0.05 * sum(np.sum(p[k] ** 2) for k in ("W1", "W2", "W3"))
    loss, grads = model.loss(X, y)
    np.testing.assert_allclose(loss, softmax_loss_naive(scores, y)[0] + reg, rtol=1e-10)
    with fastconv.threads(1):
        for name, value in p.items():     # the course's gradient check
            numeric = numerical_gradient(lambda: model.loss(X, y)[0], value)
            np.testing.assert_allclose(grads[name], numeric, rtol=1e-5, atol=1e-7, err_msg=name)
    model32 = namespace["ThreeLayerConvNet"](input_dim=(2, 8, 8), num_filters=3, filter_size=3, hidden_dim=7,
                                             num_classes=4)
    loss32, grads32 = model32.loss(X.astype(np.float32), y)
    assert all(g.dtype == np.float32 for g in grads32.values())


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


@pytest.mark.parametrize("call, error, name", [
    (lambda: cs231n.conv_forward_fast(np.ones((1, 1, 3, 3)) * 1j, np.ones((1, 1, 3, 3)), np.zeros(1),
                                      {"stride": 1, "pad": 0}), TypeError, "x must be an array of real"),
    (lambda: cs231n.conv_forward_fast(np.ones((1, 1, 3, 3)), np.ones((1, 1, 3, 3)).astype(object), np.zeros(1),
                                      {"stride": 1, "pad": 0}), TypeError, "w must be an array of real"),
    (lambda: cs231n.max_pool_forward_fast(np.array([["a"]]), {"pool_height": 1, "pool_width": 1, "stride": 1}),
     TypeError, "x must be an array of real"),
    (lambda: cs231n.svm_loss(np.array([[1.0, 2, 3], [3, 2, 1]]), np.array([-1, 0])), ValueError, r"labels must lie"),
    (lambda: cs231n.svm_loss(np.ones((2, 3)), np.array([0.0, 1.0])), ValueError, "labels must be 2 integers"),
    (lambda: cs231n.affine_forward(np.zeros((3, 4)), np.ones((5, 2)), np.zeros(2)), ValueError, r"w must have shape \(4, M\)"),
    (lambda: cs231n.affine_forward(np.zeros((3, 4)), np.ones((4, 2)), np.zeros(3)), ValueError, r"b must have shape \(2,\)"),
    (lambda: cs231n.affine_backward(np.ones(2), cs231n.affine_forward(np.zeros((3, 4)), np.ones((4, 2)), np.zeros(2))[1]),
     ValueError, r"dout must have shape \(3, 2\)"),
    (lambda: cs231n.relu_backward(np.ones(4), np.ones((2, 3))), ValueError, r"dout must have shape \(2, 3\)"),
    (lambda: cs231n.batchnorm_forward(np.zeros((0, 3)), np.ones(3), np.zeros(3), {"mode": "train"}), ValueError,
     "at least one example"),
    (lambda: cs231n.im2col_cython(np.ones((2, 6, 6)), 3, 3, 1, 1), ValueError, "x must be 4-D"),
    (lambda: cs231n.col2im_cython(np.ones((9, 4)), 2.0, 1, 3, 3, 3, 3, 1, 1), TypeError, "N must be an int"),
    (lambda: cs231n.col2im_6d_cython(np.ones((1, 3, 3, 1, 3, 3)), 1, True, 3, 3, 3, 3, 1, 1), TypeError,
     "C must be an int"),
    (lambda: cs231n.get_im2col_indices((2, -3, 6, 6), 3, 3), ValueError, "x_shape"),
    (lambda: cs231n.get_im2col_indices((6, 6), 3, 3), ValueError, r"x_shape must be \(N, C, H, W\)"),
])
def test_bad_input_is_named_not_cast_or_wrapped(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_affine_and_batchnorm_of_empty_or_featureless_batches():
    out, cache = cs231n.affine_forward(np.zeros((0, 2, 2)), np.ones((4, 3)), np.zeros(3))
    assert out.shape == (0, 3)
    dx, dw, db = cs231n.affine_backward(np.zeros((0, 3)), cache)
    assert dx.shape == (0, 2, 2) and dw.shape == (4, 3) and db.shape == (3,)
    out, cache = cs231n.batchnorm_forward(np.ones((4, 0)), np.ones(0), np.zeros(0), {"mode": "train"})
    assert [a.shape for a in cs231n.batchnorm_backward(np.zeros((4, 0)), cache)] == [(4, 0), (0,), (0,)]


def test_parameter_dicts_and_legacy_caches_are_checked():
    x = np.ones((1, 1, 4, 4))
    with pytest.raises(TypeError, match="conv_param must be a dict"):
        cs231n.conv_forward_fast(x, np.ones((1, 1, 3, 3)), np.zeros(1), None)
    with pytest.raises(TypeError, match="pool_param must be a dict"):
        cs231n.max_pool_backward_fast(np.ones((1, 1, 2, 2)), ("im2col", (x, None, None, None)))
    with pytest.raises(ValueError, match=r"must hold \(x, x_reshaped, out\)"):
        cs231n.max_pool_backward_fast(np.ones((1, 1, 2, 2)), ("reshape", (x, np.zeros(3), None)))
    with pytest.raises(KeyError, match="pad"):           # a missing key, as in the course
        cs231n.conv_forward_fast(x, np.ones((1, 1, 3, 3)), np.zeros(1), {"stride": 1})
