"""Pure-NumPy versions of every public op: the oracle for the tests and the
baseline for the benchmarks. Written for clarity; loops run over kernel offsets
at most, never over pixels.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from fastconv import _validation as v


def _pad(x, g, H, W):
    """Zero-pad (N, C, H, W) to the extent the geometry's windows cover."""
    span_h = g.dilation_h * (g.kernel_h - 1) + 1
    span_w = g.dilation_w * (g.kernel_w - 1) + 1
    bottom = max(0, (g.out_h - 1) * g.stride_h + span_h - H - g.pad_top)
    right = max(0, (g.out_w - 1) * g.stride_w + span_w - W - g.pad_left)
    return np.pad(x, ((0, 0), (0, 0), (g.pad_top, bottom), (g.pad_left, right)))


def _windows(x, g):
    """View of shape (N, C, Ho, Wo, kh, kw): the input under every window."""
    xp = _pad(x, g, *x.shape[2:])
    span = (g.dilation_h * (g.kernel_h - 1) + 1, g.dilation_w * (g.kernel_w - 1) + 1)
    win = sliding_window_view(xp, span, axis=(2, 3))
    return win[:, :, ::g.stride_h, ::g.stride_w, ::g.dilation_h, ::g.dilation_w][:, :, :g.out_h, :g.out_w]


def _scatter_windows(win_grad, g, H, W):
    """Adjoint of `_windows`: sum (N, C, Ho, Wo, kh, kw) back onto (N, C, H, W)."""
    N, C = win_grad.shape[:2]
    xp = _pad(np.zeros((N, C, H, W), win_grad.dtype), g, H, W)
    for i in range(g.kernel_h):
        for j in range(g.kernel_w):
            top, left = i * g.dilation_h, j * g.dilation_w
            xp[:, :, top: top + g.stride_h * (g.out_h - 1) + 1: g.stride_h,
               left: left + g.stride_w * (g.out_w - 1) + 1: g.stride_w] += win_grad[..., i, j]
    return xp[:, :, g.pad_top: g.pad_top + H, g.pad_left: g.pad_left + W].copy()


def im2col(x, kernel_size, stride=1, padding=0, dilation=1):
    """`fastconv.im2col` in plain NumPy: same arguments, same results."""
    x = v.float_array(x, "x", ndim=4)
    g = v.conv_geometry(x.shape[2:], kernel_size, stride, padding, dilation)
    win = _windows(x, g)                                     # (N, C, Ho, Wo, kh, kw)
    N, C = x.shape[:2]
    return np.ascontiguousarray(win.transpose(0, 1, 4, 5, 2, 3)).reshape(
        N, C * g.kernel_h * g.kernel_w, g.out_h * g.out_w)


def col2im(cols, output_size, kernel_size, stride=1, padding=0, dilation=1):
    """`fastconv.col2im` in plain NumPy: same arguments, same results."""
    cols = v.float_array(cols, "cols", ndim=3)
    H, W = v.pair(output_size, "output_size", minimum=1)
    g = v.conv_geometry((H, W), kernel_size, stride, padding, dilation)
    N = cols.shape[0]
    C = cols.shape[1] // (g.kernel_h * g.kernel_w)
    win_grad = cols.reshape(N, C, g.kernel_h, g.kernel_w, g.out_h, g.out_w).transpose(0, 1, 4, 5, 2, 3)
    return _scatter_windows(win_grad, g, H, W)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algorithm="auto"):
    """`fastconv.conv2d` in plain NumPy: same arguments, same results."""
    x, weight, bias, g, groups = v.conv2d_args(x, weight, bias, stride, padding, dilation, groups)
    N, C = x.shape[:2]
    K = weight.shape[0]
    win = _windows(x, g).reshape(N, groups, C // groups, g.out_h, g.out_w, g.kernel_h, g.kernel_w)
    w = weight.reshape(groups, K // groups, C // groups, g.kernel_h, g.kernel_w)
    out = np.einsum("ngchwij,gkcij->ngkhw", win, w, optimize=True).reshape(N, K, g.out_h, g.out_w)
    if bias is not None:
        out = out + bias[:, None, None]
    return np.ascontiguousarray(out, dtype=x.dtype)


def conv2d_backward(grad_output, x, weight, stride=1, padding=0, dilation=1, groups=1, *, algorithm="auto"):
    """`fastconv.conv2d_backward` in plain NumPy: same arguments, same results."""
    x, weight, _, g, groups = v.conv2d_args(x, weight, None, stride, padding, dilation, groups)
    N, C, H, W = x.shape
    K = weight.shape[0]
    gout = v.grad_output_array(grad_output, (N, K, g.out_h, g.out_w), x.dtype)
    gout_g = gout.reshape(N, groups, K // groups, g.out_h, g.out_w)
    win = _windows(x, g).reshape(N, groups, C // groups, g.out_h, g.out_w, g.kernel_h, g.kernel_w)
    w = weight.reshape(groups, K // groups, C // groups, g.kernel_h, g.kernel_w)
    grad_w = np.einsum("ngchwij,ngkhw->gkcij", win, gout_g, optimize=True).reshape(weight.shape)
    win_grad = np.einsum("gkcij,ngkhw->ngchwij", w, gout_g, optimize=True)
    grad_x = _scatter_windows(win_grad.reshape(N, C, g.out_h, g.out_w, g.kernel_h, g.kernel_w), g, H, W)
    grad_b = gout.sum(axis=(0, 2, 3))
    return grad_x.astype(x.dtype, copy=False), grad_w.astype(x.dtype, copy=False), grad_b


def _conv1d_as_2d(stride, padding, dilation):
    # int, or a 1-element tuple/list/array (or 0-d array): the value inside
    one = lambda a: np.asarray(a).reshape(-1)[0] if isinstance(a, (tuple, list, np.ndarray)) else a  # noqa: E731
    padding = padding if isinstance(padding, str) else (0, one(padding))
    return (1, one(stride)), padding, (1, one(dilation))


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algorithm="auto"):
    """`fastconv.conv1d` in plain NumPy: same arguments, same results."""
    s, p, d = _conv1d_as_2d(stride, padding, dilation)
    x = v.float_array(x, "x", ndim=3)
    weight = v.float_array(weight, "weight", ndim=3, dtype=x.dtype)
    return conv2d(x[:, :, None], weight[:, :, None], bias, s, p, d, groups)[:, :, 0]


def conv1d_backward(grad_output, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    algorithm="auto"):
    """`fastconv.conv1d_backward` in plain NumPy: same arguments, same results."""
    s, p, d = _conv1d_as_2d(stride, padding, dilation)
    x = v.float_array(x, "x", ndim=3)
    weight = v.float_array(weight, "weight", ndim=3, dtype=x.dtype)
    gx, gw, gb = conv2d_backward(np.asarray(grad_output)[:, :, None], x[:, :, None], weight[:, :, None], s, p, d,
                                 groups)
    return gx[:, :, 0], gw[:, :, 0], gb


def convolve2d(in1, in2, mode="full"):
    """True 2-D convolution (scipy.signal.convolve2d, zero boundary), by sliding windows."""
    in1 = v.float_array(in1, "in1", ndim=2)
    in2 = v.float_array(in2, "in2", ndim=2, dtype=in1.dtype)
    (H1, W1), (H2, W2) = in1.shape, in2.shape
    if mode == "valid" and (H2 > H1 or W2 > W1):
        in1, in2 = in2, in1
        (H1, W1), (H2, W2) = in1.shape, in2.shape
    padded = np.pad(in1, ((H2 - 1, H2 - 1), (W2 - 1, W2 - 1)))
    full = np.einsum("rtij,ij->rt", sliding_window_view(padded, (H2, W2)), in2[::-1, ::-1])
    if mode == "same":
        r, c = (H2 - 1) // 2, (W2 - 1) // 2
        full = full[r: r + H1, c: c + W1]
    elif mode == "valid":
        full = full[H2 - 1: H1, W2 - 1: W1]
    return np.ascontiguousarray(full, dtype=in1.dtype)


def convolve(a, v_, mode="full"):
    """True 1-D convolution (numpy.convolve), by sliding windows."""
    a = v.float_array(a, "a", ndim=1)
    v_ = v.float_array(v_, "v", ndim=1, dtype=a.dtype)
    if v_.size > a.size:
        a, v_ = v_, a
    full = convolve2d(a[None], v_[None])[0]
    n, m = a.size, v_.size
    start, length = {"full": (0, n + m - 1), "same": ((m - 1) // 2, n), "valid": (m - 1, n - m + 1)}[mode]
    return full[start: start + length].copy()
# ---------------------------------------------------------------------------
# Pooling

def _pool_input(x):
    xb, unbatched = v.pool_input(x)
    return xb, unbatched


def _padded_windows(x, g, fill):
    """(N, C, Ho, Wo, kh, kw) view of `x` padded with `fill`, and the same view of a
    mask that is True on the input elements (False on the padding)."""
    N, C, H, W = x.shape
    span_h = g.dilation_h * (g.kernel_h - 1) + 1
    span_w = g.dilation_w * (g.kernel_w - 1) + 1
    bottom = max(0, (g.out_h - 1) * g.stride_h + span_h - H - g.pad_top)
    right = max(0, (g.out_w - 1) * g.stride_w + span_w - W - g.pad_left)
    widths = ((0, 0), (0, 0), (g.pad_top, bottom), (g.pad_left, right))
    xp = np.pad(x, widths, constant_values=fill)
    mask = np.pad(np.ones((1, 1, H, W), bool), widths, constant_values=False)

    def windows(a):
        win = sliding_window_view(a, (span_h, span_w), axis=(2, 3))
        return win[:, :, ::g.stride_h, ::g.stride_w, ::g.dilation_h, ::g.dilation_w][:, :, :g.out_h, :g.out_w]

    return windows(xp), windows(mask)


def _window_flat_index(g, W):
    """(Ho, Wo, kh, kw): flat input position ih*W + iw under each window element."""
    ih = (np.arange(g.out_h)[:, None] * g.stride_h - g.pad_top + np.arange(g.kernel_h) * g.dilation_h)
    iw = (np.arange(g.out_w)[:, None] * g.stride_w - g.pad_left + np.arange(g.kernel_w) * g.dilation_w)
    return ih[:, None, :, None] * W + iw[None, :, None, :]


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """`fastconv.max_pool2d` in plain NumPy: same arguments, same results."""
    xb, unbatched = _pool_input(x)
    N, C, H, W = xb.shape
    g = v.pool_geometry((H, W), kernel_size, stride, padding, dilation, ceil_mode)
    win, inside = _padded_windows(xb, g, -np.inf)
    k = g.kernel_h * g.kernel_w
    win = win.reshape(win.shape[:4] + (k,))
    out = win.max(axis=-1, initial=-np.inf)                     # NaN propagates
    if not return_indices:
        out = np.ascontiguousarray(out)
        return out[0] if unbatched else out
    inside = inside.reshape(inside.shape[:4] + (k,))
    # torch's choice of index: the first maximum among the input elements, or the last NaN.
    first_max = np.argmax((win == out[..., None]) & inside, axis=-1)
    last_nan = k - 1 - np.argmax(np.isnan(win)[..., ::-1], axis=-1)
    pick = np.where(np.isnan(out), last_nan, first_max)
    flat = np.broadcast_to(_window_flat_index(g, W).reshape(g.out_h, g.out_w, k), win.shape)
    indices = np.take_along_axis(flat, pick[..., None], axis=-1)[..., 0].astype(np.int64)
    out = np.ascontiguousarray(out)
    if unbatched:
        out, indices = out[0], indices[0]
    return out, indices


def max_pool2d_backward(grad_output, indices, input_shape):
    """`fastconv.max_pool2d_backward` in plain NumPy: same arguments, same results."""
    gob, shape, unbatched = v.pool_grad_output(grad_output, input_shape)
    idx = v.index_array(indices, gob.shape[1:] if unbatched else gob.shape).reshape(gob.shape)
    N, C, H, W = shape
    if idx.size and (idx.min() < 0 or idx.max() >= H * W):
        raise ValueError(f"indices has values outside [0, H*W) = [0, {H * W})")
    grad = np.zeros((N * C, H * W), dtype=gob.dtype)
    planes = np.repeat(np.arange(N * C), gob.shape[2] * gob.shape[3])
    np.add.at(grad, (planes, idx.reshape(-1)), gob.reshape(-1))
    grad = grad.reshape(shape)
    return grad[0] if unbatched else grad


def _avg_divisor(g, H, W, count_include_pad, divisor_override):
    """(Ho, Wo) divisors, torch's rule: windows clipped to the padded input, or to the input."""
    if divisor_override is not None:
        return np.full((g.out_h, g.out_w), v.divisor_of(divisor_override), dtype=np.int64)

    def counts(out, k, s, p, n):
        start = np.arange(out) * s - p
        end = np.minimum(start + k, n + p)
        if not count_include_pad:
            start, end = np.maximum(start, 0), np.minimum(end, n)
        return end - start

    return np.outer(counts(g.out_h, g.kernel_h, g.stride_h, g.pad_top, H),
                    counts(g.out_w, g.kernel_w, g.stride_w, g.pad_left, W))


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """`fastconv.avg_pool2d` in plain NumPy: same arguments, same results."""
    xb, unbatched = _pool_input(x)
    N, C, H, W = xb.shape
    count_include_pad = v._flag(count_include_pad, "count_include_pad")
    g = v.pool_geometry((H, W), kernel_size, stride, padding, 1, ceil_mode)
    win, _ = _padded_windows(xb, g, 0)
    out = win.sum(axis=(-2, -1)) / _avg_divisor(g, H, W, count_include_pad, divisor_override)
    out = np.ascontiguousarray(out, dtype=xb.dtype)
    return out[0] if unbatched else out


def avg_pool2d_backward(grad_output, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, divisor_override=None):
    """`fastconv.avg_pool2d_backward` in plain NumPy: same arguments, same results."""
    gob, shape, unbatched = v.pool_grad_output(grad_output, input_shape)
    N, C, H, W = shape
    count_include_pad = v._flag(count_include_pad, "count_include_pad")
    g = v.pool_geometry((H, W), kernel_size, stride, padding, 1, ceil_mode)
    if gob.shape[2:] != (g.out_h, g.out_w):
        raise ValueError(f"grad_output has {gob.shape[2:]} outputs per plane, expected {(g.out_h, g.out_w)}")
    share = gob / _avg_divisor(g, H, W, count_include_pad, divisor_override)
    win_grad = np.broadcast_to(share[..., None, None], share.shape + (g.kernel_h, g.kernel_w))
    grad = _scatter_windows(win_grad, g, H, W).astype(gob.dtype, copy=False)
    return grad[0] if unbatched else grad


def sum_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False):
    """`fastconv.sum_pool2d` in plain NumPy: same arguments, same results."""
    return avg_pool2d(x, kernel_size, stride, padding, ceil_mode, True, 1)


def sum_pool2d_backward(grad_output, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False):
    """`fastconv.sum_pool2d_backward` in plain NumPy: same arguments, same results."""
    return avg_pool2d_backward(grad_output, input_shape, kernel_size, stride, padding, ceil_mode, True, 1)


def global_avg_pool2d(x, keepdims=True):
    """`fastconv.global_avg_pool2d` in plain NumPy: same arguments, same results."""
    x = v.float_array(x, "x")
    return x.mean(axis=(-2, -1), keepdims=keepdims, dtype=x.dtype)


def global_avg_pool2d_backward(grad_output, input_shape):
    """`fastconv.global_avg_pool2d_backward` in plain NumPy: same arguments, same results."""
    go = v.float_array(grad_output, "grad_output")
    shape = v.input_shape_of(input_shape)
    share = go.reshape(shape[:-2] + (1, 1)) / (shape[-2] * shape[-1])
    return np.ascontiguousarray(np.broadcast_to(share, shape), dtype=go.dtype)


def global_max_pool2d(x, keepdims=True, return_indices=False):
    """`fastconv.global_max_pool2d` in plain NumPy: same arguments, same results."""
    x = v.float_array(x, "x")
    H, W = x.shape[-2:]
    out, indices = max_pool2d(x, (H, W), return_indices=True)
    if not keepdims:
        out, indices = out[..., 0, 0], indices[..., 0, 0]
    return (out, indices) if return_indices else out


def global_max_pool2d_backward(grad_output, indices, input_shape):
    """`fastconv.global_max_pool2d_backward` in plain NumPy: same arguments, same results."""
    go = v.float_array(grad_output, "grad_output")
    shape = v.input_shape_of(input_shape)
    lead = shape[:-2] + (1, 1)
    return max_pool2d_backward(go.reshape(lead), np.asarray(indices).reshape(lead), shape)


def _scatter_canvas(x_shape, out_shape, kernel, g, dtype):
    """Zeros (N, K, rows, cols) for conv_transpose2d's scatter: every tap's products of
    x's pixels land in it, and the output is its window at (pad_top, pad_left)."""
    N, _, H, W = x_shape
    K, Ho, Wo = out_shape[1:]
    rows = max((H - 1) * g.stride_h + g.dilation_h * (kernel[0] - 1) + 1, g.pad_top + Ho)
    cols = max((W - 1) * g.stride_w + g.dilation_w * (kernel[1] - 1) + 1, g.pad_left + Wo)
    return np.zeros((N, K, rows, cols), dtype=dtype)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                     algorithm="auto"):
    """`fastconv.conv_transpose2d` in plain NumPy: same arguments (`algorithm` is
    ignored), same results."""
    from fastconv.convolution_transpose import _args
    x, weight, bias, groups, out_shape, g = _args(x, weight, bias, stride, padding, output_padding,
                                                  groups, dilation)
    N, C, H, W = x.shape
    K, Ho, Wo = out_shape[1:]
    kh, kw = weight.shape[2:]
    full = _scatter_canvas(x.shape, out_shape, (kh, kw), g, np.float64)
    xg = x.reshape(N, groups, C // groups, H, W)
    wg = weight.reshape(groups, C // groups, K // groups, kh, kw)
    for i in range(kh):
        for j in range(kw):
            contrib = np.einsum("ngchw,gck->ngkhw", xg, wg[:, :, :, i, j]).reshape(N, K, H, W)
            full[:, :, i * g.dilation_h:i * g.dilation_h + (H - 1) * g.stride_h + 1:g.stride_h,
                 j * g.dilation_w:j * g.dilation_w + (W - 1) * g.stride_w + 1:g.stride_w] += contrib
    out = full[:, :, g.pad_top:g.pad_top + Ho, g.pad_left:g.pad_left + Wo]
    if bias is not None:
        out = out + bias[:, None, None]
    return np.ascontiguousarray(out, dtype=x.dtype)


def conv_transpose2d_backward(grad_output, x, weight, stride=1, padding=0, output_padding=0, groups=1,
                              dilation=1):
    """`fastconv.conv_transpose2d_backward` in plain NumPy: same arguments, same results."""
    from fastconv.convolution_transpose import _args
    x, weight, _, groups, out_shape, g = _args(x, weight, None, stride, padding, output_padding,
                                               groups, dilation)
    gout = v.grad_output_array(grad_output, out_shape, x.dtype)
    if x.shape[1] == 0:     # no input channels: the forward was its bias alone
        return np.zeros(x.shape, x.dtype), np.zeros_like(weight), gout.sum(axis=(0, 2, 3))
    H, W = x.shape[2:]
    args = ((g.stride_h, g.stride_w), (g.pad_top, g.pad_left), (g.dilation_h, g.dilation_w), groups)
    grad_x = conv2d(gout, weight, None, *args)[:, :, :H, :W]
    grad_w = _conv_transpose2d_grad_weight(gout, x, weight, g, groups)
    return np.ascontiguousarray(grad_x), grad_w, gout.sum(axis=(0, 2, 3))


def _conv_transpose2d_grad_weight(gout, x, weight, g, groups):
    """conv_transpose2d's weight gradient as the adjoint of the forward's scatter: each
    tap's products of x's pixels with the output gradient where that tap put them
    (zeros around the output for its padding)."""
    N, C, H, W = x.shape
    K, Ho, Wo = gout.shape[1:]
    kh, kw = weight.shape[2:]
    full = _scatter_canvas(x.shape, gout.shape, (kh, kw), g, x.dtype)
    full[:, :, g.pad_top:g.pad_top + Ho, g.pad_left:g.pad_left + Wo] = gout
    sn, sk, sr, sc = full.strides
    # taps[n, k, h, w, i, j] = full[n, k, h*stride + i*dilation, w*stride + j*dilation]
    taps = np.lib.stride_tricks.as_strided(
        full, (N, groups, K // groups, H, W, kh, kw),
        (sn, sk * (K // groups), sk, sr * g.stride_h, sc * g.stride_w, sr * g.dilation_h, sc * g.dilation_w),
        writeable=False)
    grad_w = np.einsum("ngchw,ngkhwij->gckij", x.reshape(N, groups, C // groups, H, W), taps, optimize=True)
    return grad_w.reshape(weight.shape).astype(x.dtype, copy=False)


def batch_norm2d(x, running_mean=None, running_var=None, weight=None, bias=None, training=False,
                 momentum=0.1, eps=1e-5):
    """`fastconv.batch_norm2d` in plain NumPy: same arguments, same results."""
    x = v.float_array(x, "x", ndim=4)
    xd = x.astype(np.float64)
    if training:
        M = x.shape[0] * x.shape[2] * x.shape[3]
        if M <= 1:
            raise ValueError("training needs more than 1 value per channel")
        mean = xd.mean(axis=(0, 2, 3))
        var = xd.var(axis=(0, 2, 3))
        if running_mean is not None:
            running_mean[...] = (1 - momentum) * running_mean + momentum * mean
        if running_var is not None:
            running_var[...] = (1 - momentum) * running_var + momentum * var * M / (M - 1)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("running_mean and running_var are required when training=False")
        mean, var = np.asarray(running_mean, np.float64), np.asarray(running_var, np.float64)
    out = (xd - mean[:, None, None]) / np.sqrt(var[:, None, None] + eps)
    if weight is not None:
        out = out * np.asarray(weight)[:, None, None]
    if bias is not None:
        out = out + np.asarray(bias)[:, None, None]
    return out.astype(x.dtype)


def batch_norm2d_backward(grad_output, x, weight=None, eps=1e-5, *, training=True, running_mean=None,
                          running_var=None):
    """`fastconv.batch_norm2d_backward` in plain NumPy: same arguments, same results."""
    x = v.float_array(x, "x", ndim=4)
    xd, gd = x.astype(np.float64), np.asarray(grad_output, np.float64)
    axes = (0, 2, 3)
    if training:
        mean, var = xd.mean(axis=axes), xd.var(axis=axes)
    else:
        mean, var = np.asarray(running_mean, np.float64), np.asarray(running_var, np.float64)
    invstd = 1 / np.sqrt(var + eps)
    xhat = (xd - mean[:, None, None]) * invstd[:, None, None]
    w = np.ones(x.shape[1]) if weight is None else np.asarray(weight, np.float64)
    grad_b = gd.sum(axis=axes)
    grad_w = (gd * xhat).sum(axis=axes)
    g_xhat = gd * w[:, None, None]
    if training:
        grad_x = invstd[:, None, None] * (g_xhat - g_xhat.mean(axis=axes)[:, None, None]
                                          - xhat * (g_xhat * xhat).mean(axis=axes)[:, None, None])
    else:
        grad_x = g_xhat * invstd[:, None, None]
    return grad_x.astype(x.dtype), grad_w.astype(x.dtype), grad_b.astype(x.dtype)


def _adaptive_matrix(n, out):
    """(out, n) averaging matrix of torch's adaptive windows."""
    a = np.zeros((out, n))
    for i in range(out):
        start, end = (i * n) // out, -(-((i + 1) * n) // out)
        a[i, start:end] = 1.0 / (end - start)
    return a


def _adaptive_size(output_size, H, W):
    from fastconv.adaptive_pooling import _output_hw
    return _output_hw(output_size, (H, W))


def adaptive_avg_pool2d(x, output_size):
    """`fastconv.adaptive_avg_pool2d` in plain NumPy: same arguments, same results."""
    xb, unbatched = _pool_input(x)
    H, W = xb.shape[2:]
    Ho, Wo = _adaptive_size(output_size, H, W)
    out = np.einsum("ih,nchw,jw->ncij", _adaptive_matrix(H, Ho), xb, _adaptive_matrix(W, Wo))
    out = out.astype(xb.dtype)
    return out[0] if unbatched else out


def adaptive_avg_pool2d_backward(grad_output, input_shape):
    """`fastconv.adaptive_avg_pool2d_backward` in plain NumPy: same arguments, same results."""
    gob, shape, unbatched = v.pool_grad_output(grad_output, input_shape)
    H, W = shape[2:]
    Ho, Wo = gob.shape[2:]
    grad = np.einsum("ih,ncij,jw->nchw", _adaptive_matrix(H, Ho), gob, _adaptive_matrix(W, Wo))
    grad = grad.astype(gob.dtype).reshape(shape)
    return grad[0] if unbatched else grad


def adaptive_max_pool2d(x, output_size, return_indices=False):
    """`fastconv.adaptive_max_pool2d` in plain NumPy: same arguments, same results."""
    xb, unbatched = _pool_input(x)
    N, C, H, W = xb.shape
    Ho, Wo = _adaptive_size(output_size, H, W)
    out = np.empty((N, C, Ho, Wo), dtype=xb.dtype)
    indices = np.empty((N, C, Ho, Wo), dtype=np.int64)
    flat = xb.reshape(N * C, H * W)
    for i in range(Ho):
        h0, h1 = (i * H) // Ho, -(-((i + 1) * H) // Ho)
        for j in range(Wo):
            w0, w1 = (j * W) // Wo, -(-((j + 1) * W) // Wo)
            pos = (np.arange(h0, h1)[:, None] * W + np.arange(w0, w1)).reshape(-1)
            win = flat[:, pos]
            best = np.argmax(win, axis=1)
            nan = np.isnan(win)
            last_nan = win.shape[1] - 1 - np.argmax(nan[:, ::-1], axis=1)
            best = np.where(nan.any(axis=1), last_nan, best)
            indices[:, :, i, j] = pos[best].reshape(N, C)
            out[:, :, i, j] = win[np.arange(N * C), best].reshape(N, C)
    if unbatched:
        out, indices = out[0], indices[0]
    return (out, indices) if return_indices else out


def adaptive_max_pool2d_backward(grad_output, indices, input_shape):
    """`fastconv.adaptive_max_pool2d_backward` in plain NumPy: same arguments, same results."""
    return max_pool2d_backward(grad_output, indices, input_shape)
