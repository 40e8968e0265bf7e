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
real pixels, in GEMMs as tall as the batch times the plane, all of them one job of
the task pool (`kernel.matmul_groups`). Extra memory is the
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


def by_taps(g, groups, x_shape):
    """Whether `g` on an input of shape `x_shape` (N, C, H, W) runs tap by tap: a dense,
    not pointwise convolution with an output plane of at most TAP_PLANE pixels and at
    most MAX_TAPS taps, its GEMMs (as tall as the batch times the plane) within BLAS's
    32-bit dimensions; and, for kernels of several taps, an input plane of at most
    twice the taps' products (output pixels times taps): the taps copy the whole plane
    channels last (and back, for grad_x), which at a large stride or dilation, where
    they skip most of it, cost more than the bands (a 3x3 at stride 8 on 27x27 planes:
    forward 2x, backward 2.9x, grad_x 4.9x the bands' time)."""
    N, _, H, W = x_shape
    out, taps = g.out_h * g.out_w, g.kernel_h * g.kernel_w
    return (groups == 1 and out <= TAP_PLANE and taps <= MAX_TAPS and N * out <= _BLAS_INT_MAX
            and not pointwise(g) and (taps == 1 or H * W <= 2 * out * taps))


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


#: Values of the rows one batch chunk gathers (every tap's pixels, channels last, for
#: the larger of C and K): larger batches run tap by tap in chunks of images.
TAPS_VALUES = 1 << 22


def _batch_chunks(N, windows, channels):
    """[(first image, end)] of the chunks of the batch whose gathered rows fit TAPS_VALUES."""
    per_image = channels * sum(_pixels(w) for w in windows)
    step = max(1, TAPS_VALUES // max(1, per_image))
    return [(n, min(N, n + step)) for n in range(0, N, step)]


def _pixels(window):
    """Output pixels (= input pixels) under one tap's window."""
    rows, cols = window[1]
    return len(range(rows.start, rows.stop)) * len(range(cols.start, cols.stop))


def _channels_last(x, windows):
    """x (N, C, H, W) (or grad_output) as (N, H, W, C): a copy where several windows read
    it, a view (the window's pixels copied from it alone) where one does (a 1x1 kernel
    at stride > 1 reads a fraction of x)."""
    xt = x.transpose(0, 2, 3, 1)
    if len(windows) == 1:
        return xt
    out = _memory.scratch(xt.shape, x.dtype)
    out[...] = xt
    return out


def _gather(a, windows, side):
    """The pixels of channels-last `a` (N, H, W, C) under each window's `side` (1: its
    output pixels, 2: its input pixels), one (pixels, C) block per window, stacked:
    ((rows, C) array, offsets: block i is rows [offsets[i], offsets[i + 1]))."""
    N, C = a.shape[0], a.shape[3]
    offsets = np.cumsum([0] + [N * _pixels(w) for w in windows])
    out = _memory.scratch((offsets[-1], C), a.dtype)
    for w, lo, hi in zip(windows, offsets, offsets[1:]):
        part = a[:, w[side][0], w[side][1], :]
        out[lo:hi].reshape(part.shape)[...] = part
    return out, offsets


def _products(a, b, c, blocks, shape, trans_a=False, trans_b=False, beta=0, num_threads=1):
    """One job of GEMMs (`kernel.matmul_groups`), one per (tap, first row, end) in `blocks`:
    `shape(tap, lo, hi)` gives its (m, n, k, a_offset, lda, b_offset, ldb, c_offset, ldc)."""
    table = np.array([shape(tap, lo, hi) for tap, lo, hi in blocks], dtype=np.int64).reshape(-1, 9)
    with blas.single_threaded():
        kernel.matmul_groups(a.reshape(-1), b.reshape(-1), c.reshape(-1), table, trans_a, trans_b, beta,
                             num_threads)


def taps_weight(weight, num_threads):
    """(K, kh*kw, C): [:, tap, :] is the tap's K x C weights (rows strided, as BLAS takes).
    The forward and the backward of a layer's training step share it (`taps=`): the
    weights do not change in between, and at 3x3x512x512 it costs 0.3-0.7 ms a call."""
    K, C = weight.shape[:2]
    taps = _memory.scratch((K, weight.shape[2] * weight.shape[3], C), weight.dtype, kept=True)
    kernel.swap_last_axes(weight.reshape(taps.shape[0], C, taps.shape[1]), taps, num_threads)
    return taps


def _forward_by_taps(x, weight, g, num_threads, taps=None):
    """The output, or None where the products left out may not be zeros. `taps`:
    `taps_weight(weight)`, else computed here. Every tap's GEMM runs in one job."""
    N, C, H, W = x.shape
    K = weight.shape[0]
    out = _memory.scratch((N, g.out_h, g.out_w, K), x.dtype)
    out.fill(0)
    if N and C and K:
        windows = _tap_windows(g, H, W)
        xt = _channels_last(x, windows)
        if taps is None:
            taps = taps_weight(weight, num_threads)
        T = taps.shape[1]
        for n0, n1 in _batch_chunks(N, windows, max(C, K)):
            a, offsets = _gather(xt[n0:n1], windows, 2)
            product = _memory.scratch((offsets[-1], K), x.dtype)
            blocks = [(w[0], lo, hi) for w, lo, hi in zip(windows, offsets, offsets[1:])]
            _products(a, taps, product, blocks,
                      lambda tap, lo, hi: (hi - lo, K, C, lo * C, C, tap * C, T * C, lo * K, K),
                      trans_b=True, num_threads=num_threads)
            for w, lo, hi in zip(windows, offsets, offsets[1:]):
                target = out[n0:n1, w[1][0], w[1][1], :]
                target += product[lo:hi].reshape(target.shape)
        # A non-finite weight of a tap that reaches the input makes some output
        # non-finite; one of a tap that never does, only the reference's 0 * w.
        unreached = sorted(set(range(T)) - {w[0] for w in windows})
        if not (np.isfinite(out).all() and np.isfinite(taps[:, unreached, :]).all()):
            return None
    result = _memory.empty((N, K, g.out_h, g.out_w), x.dtype)
    result[...] = out.transpose(0, 3, 1, 2)
    return result


def forward(x, weight, bias, g, groups, num_threads, taps=None):
    """(N, K, Ho, Wo) = conv2d(x, weight) + bias. `taps`: `taps_weight(weight)` where the
    call runs by taps (`by_taps`), else computed here."""
    N, K = x.shape[0], weight.shape[0]
    v.allocatable((N, K, g.out_h, g.out_w), x.dtype, "output")
    out = _forward_by_taps(x, weight, g, num_threads, taps) if by_taps(g, groups, x.shape) else None
    if out is not None:
        if bias is not None:
            out += bias[:, None, None]
        return out
    col_rows = x.shape[1] * g.kernel_h * g.kernel_w
    out = _memory.empty((N, K, g.out_h, g.out_w), x.dtype)
    _check_blas_limits(g)
    band_rows = _band_rows(col_rows, g, x.dtype.itemsize)
    workspace = _workspace(num_threads, col_rows, band_rows, g, x.dtype)
    with blas.single_threaded():
        kernel.conv2d_forward(x, weight.reshape(groups, K // groups, col_rows // groups),
                              out.reshape(N, K, g.out_h * g.out_w), workspace, g.struct(), band_rows, num_threads)
    if bias is not None:
        out += bias[:, None, None]
    return out


def _add_input_gradient(go, offsets, windows, taps, grad_xt, num_threads):
    """grad_xt (images, H, W, C) += each tap's gathered output gradients (`go`, blocks at
    `offsets`, `_gather`'s) times its K x C weights, at the input pixels under its window."""
    K, T, C = taps.shape
    product = _memory.scratch((offsets[-1], C), go.dtype)
    blocks = [(w[0], lo, hi) for w, lo, hi in zip(windows, offsets, offsets[1:])]
    _products(go, taps, product, blocks, lambda tap, lo, hi: (hi - lo, C, K, lo * K, K, tap * C, T * C, lo * C, C),
              num_threads=num_threads)
    for w, lo, hi in zip(windows, offsets, offsets[1:]):
        target = grad_xt[:, w[2][0], w[2][1], :]
        target += product[lo:hi].reshape(target.shape)


def _input_gradient_arrays(x_shape, windows, dtype):
    """(grad_x, grad_xt): the input gradient and the channels-last array the taps add
    into. One window (a 1x1 kernel at stride > 1): grad_xt is a view of grad_x, zero off
    the window; else a zeroed (N, H, W, C) array, which the caller copies into grad_x."""
    N, C, H, W = x_shape
    grad_x = _memory.empty(x_shape, dtype)
    if len(windows) == 1:
        grad_x.fill(0)
        return grad_x, grad_x.transpose(0, 2, 3, 1)
    grad_xt = _memory.scratch((N, H, W, C), dtype)
    grad_xt.fill(0)
    return grad_x, grad_xt


def _grad_x_by_taps(grad_output, weight, x_shape, g, num_threads, taps=None):
    """conv2d's input gradient tap by tap. Unlike the forward's and the weight
    gradient's, it leaves out no product that reaches an input pixel (the bands' col2im
    drops the padding's too), so every call can run so."""
    N, C, H, W = x_shape
    K = weight.shape[0]
    windows = _tap_windows(g, H, W) if N and C and K else []
    if not windows:
        return np.zeros(x_shape, dtype=grad_output.dtype)
    grad_x, grad_xt = _input_gradient_arrays(x_shape, windows, grad_output.dtype)
    gt = _channels_last(grad_output, windows)
    if taps is None:
        taps = taps_weight(weight, num_threads)
    for n0, n1 in _batch_chunks(N, windows, max(C, K)):
        go, offsets = _gather(gt[n0:n1], windows, 1)
        _add_input_gradient(go, offsets, windows, taps, grad_xt[n0:n1], num_threads)
    if len(windows) != 1:
        grad_x[...] = grad_xt.transpose(0, 3, 1, 2)
    return grad_x


def _grad_weight_by_taps(grad_output, x, weight, g, num_threads):
    """conv2d's weight gradient tap by tap, or None where the products left out
    (padding's zeros times grad_output) may not be zeros."""
    if not np.isfinite(grad_output).all():
        return None
    N, C, H, W = x.shape
    K = weight.shape[0]
    windows = _tap_windows(g, H, W) if N and C and K else []
    grad_taps = _memory.scratch((K, g.kernel_h * g.kernel_w, C), x.dtype)
    for tap in set(range(grad_taps.shape[1])) - {w[0] for w in windows}:
        grad_taps[:, tap, :] = 0         # a tap that never reaches the input
    if windows:
        xt = _channels_last(x, windows)
        gt = _channels_last(grad_output, windows)
        T = grad_taps.shape[1]
        for n0, n1 in _batch_chunks(N, windows, max(C, K)):
            a, offsets = _gather(xt[n0:n1], windows, 2)
            go, _ = _gather(gt[n0:n1], windows, 1)
            blocks = [(w[0], lo, hi) for w, lo, hi in zip(windows, offsets, offsets[1:])]
            _products(go, a, grad_taps, blocks,
                      lambda tap, lo, hi: (K, C, hi - lo, lo * K, K, lo * C, C, tap * C, T * C),
                      trans_a=True, beta=0 if n0 == 0 else 1, num_threads=num_threads)
    grad_w = np.empty(weight.shape, dtype=x.dtype)
    kernel.swap_last_axes(grad_taps, grad_w.reshape(K, C, grad_taps.shape[1]), num_threads)
    return grad_w


def backward(grad_output, x, weight, g, groups, num_threads, with_grad_x=True, taps=None):
    """(grad_x, grad_weight) of conv2d; grad_x is None without `with_grad_x`. `taps`: as
    in `forward`. Small output planes (`by_taps`): each gradient by its own taps' GEMMs,
    as `grad_x` and `grad_weight` run them (one loop over the batch for both, sharing
    the gathered grad_output, took 0.95-1.15x as long on ResNet-18's 3x3 layers of 4x4
    and 2x2 outputs, 0.88x on its 1x1 projection to (32, 512, 2, 2))."""
    N, K = x.shape[0], weight.shape[0]
    if by_taps(g, groups, x.shape):
        grad_w = _grad_weight_by_taps(grad_output, x, weight, g, num_threads)
        if grad_w is not None:
            return (_grad_x_by_taps(grad_output, weight, x.shape, g, num_threads, taps) if with_grad_x else None,
                    grad_w)
    _check_blas_limits(g)
    col_rows = x.shape[1] * g.kernel_h * g.kernel_w
    band_rows = _band_rows(col_rows, g, x.dtype.itemsize)
    workspace = _workspace(num_threads, col_rows, band_rows, g, x.dtype)
    grad_x = np.zeros_like(x) if with_grad_x else np.empty((N, 1, 1, 1), dtype=x.dtype)  # never written
    grad_w_parts = np.zeros((num_threads, groups, K // groups, col_rows // groups), dtype=x.dtype)
    with blas.single_threaded():
        kernel.conv2d_backward(x, weight.reshape(groups, K // groups, col_rows // groups),
                               grad_output.reshape(N, K, g.out_h * g.out_w), grad_x, grad_w_parts, workspace,
                               g.struct(), band_rows, num_threads, with_grad_x)
    grad_w = grad_w_parts.sum(axis=0).reshape(weight.shape)
    return (grad_x if with_grad_x else None), grad_w


def grad_x(grad_output, weight, x_shape, g, groups, num_threads, taps=None):
    """conv2d's input gradient alone, of shape x_shape (conv_transpose2d's forward): for
    each band of grad_output's rows, weight^T @ band in the thread's column band, summed
    into grad_x by col2im (even bands, then odd ones, as `backward`'s); small output
    planes tap by tap (`by_taps`; `taps`: as in `forward`)."""
    N, C = x_shape[:2]
    K = weight.shape[0]
    if by_taps(g, groups, x_shape):
        return _grad_x_by_taps(grad_output, weight, x_shape, g, num_threads, taps)
    _check_blas_limits(g)
    col_rows = C * g.kernel_h * g.kernel_w
    band_rows = _band_rows(col_rows, g, grad_output.dtype.itemsize)
    workspace = _workspace(num_threads, col_rows, band_rows, g, grad_output.dtype)
    out = _memory.empty(x_shape, grad_output.dtype)     # a released result's block, as the others'
    out.fill(0)                                         # col2im adds into it
    with blas.single_threaded():
        kernel.conv2d_grad_x(weight.reshape(groups, K // groups, col_rows // groups),
                             grad_output.reshape(N, K, g.out_h * g.out_w), out, workspace, g.struct(), band_rows,
                             num_threads)
    return out


def grad_weight(grad_output, x, weight, g, groups, num_threads):
    """conv2d's weight gradient (K, C/groups, kh, kw), from the same bands without grad_x."""
    return backward(grad_output, x, weight, g, groups, num_threads, with_grad_x=False)[1]
