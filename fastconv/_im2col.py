"""The `im2col` convolution algorithm: conv2d and its gradients as column bands and BLAS GEMMs.

Called by `fastconv.convolution` with checked, C-contiguous arrays and a
normalised geometry. OpenMP threads take (image, band of output rows) tasks
(fastconv/_kernels/conv_gemm.pyx); each builds the band's column matrix in its
own cache-sized slice of a workspace and multiplies it with single-threaded
BLAS. Extra memory is `num_threads` bands, whatever the batch size.

Small output planes (at most `TAP_PLANE` pixels, e.g. ResNet-18's last stages at
64x64 inputs) run by kernel taps instead: a band of one image there is a GEMM a
few columns wide that streams all the weights for each image, and most of its
column matrix is padding. Each tap that reaches the input is one GEMM over the
whole batch (the input pixels under the tap's window, channels last, times the
tap's K x C weights), added into the output pixels it reaches: only products of
real pixels, in GEMMs as tall as the batch times the plane. Extra memory is the
channels-last copies of the input and output (or their gradients) and the weights
re-laid tap by tap. The products it leaves out are padding's zeros times weights
(or output gradients): where one of those is inf or NaN the reference has NaN
there, so such a call (seen in the output, or in the gradients it reads) runs by
bands.
"""
import numpy as np

from fastconv import _memory
from fastconv import _validation as v
from fastconv._kernels import conv_gemm as kernel
from fastconv._threads import blas

#: Target size of one thread's column band: about half of a 2 MiB L2 cache, so
#: the band is still cached when BLAS reads it.
BAND_BYTES = 1 << 20

#: BLAS dimensions are 32-bit ints; an output plane is a GEMM's leading dimension.
_BLAS_INT_MAX = 2**31 - 1


def _band_rows(col_rows, g, itemsize):
    """Output rows per band: as many as fit in BAND_BYTES, but at least enough
    that bands two apart never scatter into the same input rows (backward)."""
    rows = max(1, BAND_BYTES // max(1, col_rows * g.out_w * itemsize))
    span_h = g.dilation_h * (g.kernel_h - 1) + 1
    rows = max(rows, -(-(span_h - g.stride_h) // g.stride_h))
    return min(rows, g.out_h)


def _check_blas_limits(g):
    if g.out_h * g.out_w > _BLAS_INT_MAX:
        raise ValueError(f"x, padding and dilation give an output plane {g.out_h}x{g.out_w}, more than "
                         f"2**31 - 1 elements, beyond BLAS's 32-bit dimensions (algorithm='im2col')")


def pointwise(g):
    """Whether `g` is a 1x1, stride-1, unpadded convolution: a plain GEMM on the input."""
    return (g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_top, g.pad_left) == (1, 1, 1, 1, 0, 0)


def _workspace(num_threads, col_rows, band_rows, g, dtype):
    """Per-thread column bands; a pointwise (1x1) convolution reads its input directly."""
    size = 0 if pointwise(g) else col_rows * band_rows * g.out_w
    return np.empty((num_threads, size), dtype=dtype)


#: Output planes of at most this many pixels run tap by tap over the whole batch (see
#: the module's docstring): at batch 32, 3x3 kernels, 2 threads, 3.4x faster than the
#: bands forward and 6.4x backward on 2x2 planes of 512 channels, 1.3x and 1.6x on 4x4
#: planes of 256 (`python -m fastconv bench --sections nets` times ResNet-18 on them).
TAP_PLANE = 16

#: ... and kernels of at most this many taps (one Python-level GEMM each).
MAX_TAPS = 49


def by_taps(g, groups, batch=1):
    """Whether `g` runs tap by tap: a dense, not pointwise convolution with an output
    plane of at most TAP_PLANE pixels and at most MAX_TAPS taps, its GEMMs (as tall as
    `batch` times the plane) within BLAS's 32-bit dimensions."""
    return (groups == 1 and g.out_h * g.out_w <= TAP_PLANE and g.kernel_h * g.kernel_w <= MAX_TAPS
            and batch * g.out_h * g.out_w <= _BLAS_INT_MAX and not pointwise(g))


def _reach(out, size, stride, dilation, pad, tap):
    """(output slice, input slice) along one axis of the outputs whose window's `tap`
    falls inside the input, or None."""
    offset = tap * dilation - pad            # input index of output 0's tap
    lo = 0 if offset >= 0 else -(offset // stride)     # ceil(-offset / stride)
    hi = min(out, (size - 1 - offset) // stride + 1) if size - 1 - offset >= 0 else 0
    if lo >= hi:
        return None
    start = lo * stride + offset
    return slice(lo, hi), slice(start, start + (hi - lo - 1) * stride + 1, stride)


def _tap_windows(g, H, W):
    """[(tap index, (output rows, output cols), (input rows, input cols))] of the taps
    that reach the input."""
    windows = []
    for i in range(g.kernel_h):
        rows = _reach(g.out_h, H, g.stride_h, g.dilation_h, g.pad_top, i)
        for j in range(g.kernel_w):
            cols = _reach(g.out_w, W, g.stride_w, g.dilation_w, g.pad_left, j)
            if rows is not None and cols is not None:
                windows.append((i * g.kernel_w + j, (rows[0], cols[0]), (rows[1], cols[1])))
    return windows


def _rows(a, window):
    """The pixels of channels-last `a` (N, H, W, C) under `window`, as a C-contiguous
    (pixels, C) matrix (a view where the window is the whole plane)."""
    part = a[:, window[0], window[1], :]
    return np.ascontiguousarray(part).reshape(-1, a.shape[3])


def _by_taps_weight(weight, num_threads):
    """(K, kh*kw, C): [:, tap, :] is the tap's K x C weights (rows strided, as BLAS takes)."""
    K, C = weight.shape[:2]
    taps = np.empty((K, weight.shape[2] * weight.shape[3], C), dtype=weight.dtype)
    kernel.swap_last_axes(weight.reshape(taps.shape[0], C, taps.shape[1]), taps, num_threads)
    return taps


def _forward_by_taps(x, weight, g, num_threads):
    """The output, or None where the products left out may not be zeros."""
    N, C, H, W = x.shape
    K = weight.shape[0]
    out = np.zeros((N, g.out_h, g.out_w, K), dtype=x.dtype)
    if N and C and K:
        xt = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        taps = _by_taps_weight(weight, num_threads)
        blas.pin_single_threaded()
        part = np.empty(N * g.out_h * g.out_w * K, dtype=x.dtype)
        windows = _tap_windows(g, H, W)
        for tap, out_window, in_window in windows:
            a = _rows(xt, in_window)
            product = part[:a.shape[0] * K].reshape(a.shape[0], K)
            kernel.matmul(a, taps[:, tap, :], product, trans_b=True, num_threads=num_threads)
            target = out[:, out_window[0], out_window[1], :]
            target += product.reshape(target.shape)
        # A non-finite weight of a tap that reaches the input makes some output
        # non-finite; one of a tap that never does, only the reference's 0 * w.
        unreached = sorted(set(range(taps.shape[1])) - {w[0] for w in windows})
        if not (np.isfinite(out).all() and np.isfinite(taps[:, unreached, :]).all()):
            return None
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def forward(x, weight, bias, g, groups, num_threads):
    """(N, K, Ho, Wo) = conv2d(x, weight) + bias."""
    N, K = x.shape[0], weight.shape[0]
    v.allocatable((N, K, g.out_h, g.out_w), x.dtype, "output")
    out = _forward_by_taps(x, weight, g, num_threads) if by_taps(g, groups, N) else None
    if out is not None:
        if bias is not None:
            out += bias[:, None, None]
        return out
    col_rows = x.shape[1] * g.kernel_h * g.kernel_w
    out = _memory.empty((N, K, g.out_h, g.out_w), x.dtype)
    _check_blas_limits(g)
    band_rows = _band_rows(col_rows, g, x.dtype.itemsize)
    workspace = _workspace(num_threads, col_rows, band_rows, g, x.dtype)
    blas.pin_single_threaded()
    kernel.conv2d_forward(x, weight.reshape(groups, K // groups, col_rows // groups),
                          out.reshape(N, K, g.out_h * g.out_w), workspace, g.struct(), band_rows, num_threads)
    if bias is not None:
        out += bias[:, None, None]
    return out


def _backward_by_taps(grad_output, x, weight, g, num_threads, with_grad_x):
    """The gradients, or None where the products left out (padding's zeros times
    grad_output) may not be zeros."""
    if not np.isfinite(grad_output).all():
        return None
    N, C, H, W = x.shape
    K = weight.shape[0]
    windows = _tap_windows(g, H, W) if N and C and K else []
    grad_taps = np.empty((K, g.kernel_h * g.kernel_w, C), dtype=x.dtype)
    for tap in set(range(grad_taps.shape[1])) - {w[0] for w in windows}:
        grad_taps[:, tap, :] = 0         # a tap that never reaches the input
    grad_xt = np.zeros((N, H, W, C), dtype=x.dtype) if with_grad_x else None
    if windows:
        xt = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        gt = np.ascontiguousarray(grad_output.transpose(0, 2, 3, 1))
        taps = _by_taps_weight(weight, num_threads) if with_grad_x else None
        part = np.empty(N * H * W * C, dtype=x.dtype) if with_grad_x else None
        blas.pin_single_threaded()
        for tap, out_window, in_window in windows:
            a, go = _rows(xt, in_window), _rows(gt, out_window)
            kernel.matmul(go, a, grad_taps[:, tap, :], trans_a=True, num_threads=num_threads)
            if with_grad_x:
                product = part[:a.size].reshape(a.shape)
                kernel.matmul(go, taps[:, tap, :], product, num_threads=num_threads)
                target = grad_xt[:, in_window[0], in_window[1], :]
                target += product.reshape(target.shape)
    grad_w = np.empty(weight.shape, dtype=x.dtype)
    kernel.swap_last_axes(grad_taps, grad_w.reshape(K, C, grad_taps.shape[1]), num_threads)
    grad_x = np.ascontiguousarray(grad_xt.transpose(0, 3, 1, 2)) if with_grad_x else None
    return grad_x, grad_w, grad_output.sum(axis=(0, 2, 3))


def backward(grad_output, x, weight, g, groups, num_threads, with_grad_x=True):
    """(grad_x, grad_weight, grad_bias) of conv2d; grad_x is None without `with_grad_x`."""
    N, K = x.shape[0], weight.shape[0]
    grads = _backward_by_taps(grad_output, x, weight, g, num_threads, with_grad_x) if by_taps(g, groups, N) else None
    if grads is not None:
        return grads
    _check_blas_limits(g)
    col_rows = x.shape[1] * g.kernel_h * g.kernel_w
    band_rows = _band_rows(col_rows, g, x.dtype.itemsize)
    workspace = _workspace(num_threads, col_rows, band_rows, g, x.dtype)
    grad_x = np.zeros_like(x) if with_grad_x else np.empty((N, 1, 1, 1), dtype=x.dtype)  # never written
    grad_w_parts = np.zeros((num_threads, groups, K // groups, col_rows // groups), dtype=x.dtype)
    blas.pin_single_threaded()
    kernel.conv2d_backward(x, weight.reshape(groups, K // groups, col_rows // groups),
                           grad_output.reshape(N, K, g.out_h * g.out_w), grad_x, grad_w_parts, workspace,
                           g.struct(), band_rows, num_threads, with_grad_x)
    grad_w = grad_w_parts.sum(axis=0).reshape(weight.shape)
    return (grad_x if with_grad_x else None), grad_w, grad_output.sum(axis=(0, 2, 3))


def grad_weight(grad_output, x, weight, g, groups, num_threads):
    """conv2d's weight gradient (K, C/groups, kh, kw), from the same bands without grad_x."""
    return backward(grad_output, x, weight, g, groups, num_threads, with_grad_x=False)[1]
