"""2-D convolution (cross-correlation) forward and backward.

`_choose_algorithm` is `"auto"` (fastconv._autotune). `direct` lives in
fastconv._direct. `im2col` is here (fastconv/_kernels/conv_gemm.pyx): OpenMP
threads take (image, band of output rows) tasks; each builds the band's column
matrix in its own cache-sized slice of a workspace and multiplies it with
single-threaded BLAS. Extra memory is `num_threads` bands, whatever the batch size.
"""
import numpy as np

from fastconv import _autotune, _direct, _winograd
from fastconv import _validation as v
from fastconv._kernels import conv_gemm as _kernel
from fastconv._threads import blas, num_threads_for_macs

#: Target size of one thread's column band: about half of a 2 MiB L2 cache, so
#: the band is still cached when BLAS reads it.
BAND_BYTES = 1 << 20

#: The algorithms that run every geometry; ALL_ALGORITHMS adds those restricted to some.
ALGORITHMS = ("auto", "im2col", "direct")
ALL_ALGORITHMS = ALGORITHMS + ("winograd",)


def _choose_algorithm(x_shape, weight_shape, geometry, groups, dtype, backward=False):
    """The algorithm `"auto"` runs: the one measured fastest on this CPU for the call's
    shape class, or without calibration a fixed rule (fastconv._autotune)."""
    return _autotune.choose("backward" if backward else "forward", x_shape, weight_shape, geometry, groups, dtype)


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


def _pointwise(g):
    return (g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_top, g.pad_left) == (1, 1, 1, 1, 0, 0)


def _workspace(num_threads, col_rows, band_rows, g, dtype):
    """Per-thread column bands; a pointwise (1x1) convolution reads its input directly."""
    size = 0 if _pointwise(g) else col_rows * band_rows * g.out_w
    return np.empty((num_threads, size), dtype=dtype)


def _window_args(g):
    return (g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_top, g.pad_left,
            g.dilation_h, g.dilation_w, g.out_w)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algorithm="auto"):
    """2-D cross-correlation, as ``torch.nn.functional.conv2d`` (NCHW).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64
    weight : ndarray, shape (K, C // groups, kh, kw), same dtype as `x`
    bias : ndarray, shape (K,), optional
    stride, dilation : int or pair of ints
    padding : int, pair of ints, ``"valid"`` or ``"same"`` (stride 1 only)
    groups : int
        Channels are split into `groups` independent convolutions;
        ``groups == C`` is a depthwise convolution.
    algorithm : {"auto", "im2col", "direct", "winograd"}
        ``"im2col"``: a bounded column buffer and one BLAS GEMM per band of
        output rows; ``"direct"``: register tiles over a copy of the input
        under each band, no column matrix and no workspace that grows with the
        output; ``"winograd"``: Winograd minimal filtering (3x3 kernels, stride
        1, dilation 1 only; F(4x4, 3x3) in float32, F(6x6, 3x3) in float64),
        within a relative error of ``fastconv._winograd.RTOL`` of the largest
        output; ``"auto"``: picked from the shapes and dtype (`_choose_algorithm`).

    Returns
    -------
    out : ndarray, shape (N, K, Ho, Wo), dtype of `x`
    """
    x, weight, bias, g, groups = v.conv2d_args(x, weight, bias, stride, padding, dilation, groups)
    v.choice(algorithm, "algorithm", ALL_ALGORITHMS)
    if algorithm == "auto":
        algorithm = _choose_algorithm(x.shape, weight.shape, g, groups, x.dtype)
    if algorithm in ("direct", "winograd"):
        work = x.shape[0] * weight.shape[0] * g.out_h * g.out_w * weight[0].size
        module = _direct if algorithm == "direct" else _winograd
        return module.forward(x, weight, bias, g, groups, num_threads_for_macs(work))
    N, K = x.shape[0], weight.shape[0]
    col_rows = x.shape[1] * g.kernel_h * g.kernel_w
    v.allocatable((N, K, g.out_h, g.out_w), x.dtype, "output")
    out = np.empty((N, K, g.out_h, g.out_w), dtype=x.dtype)
    _check_blas_limits(g)
    num_threads = num_threads_for_macs(out.size * (col_rows // groups))
    band_rows = _band_rows(col_rows, g, x.dtype.itemsize)
    workspace = _workspace(num_threads, col_rows, band_rows, g, x.dtype)
    blas.pin_single_threaded()
    _kernel.conv2d_forward(x, weight.reshape(groups, K // groups, col_rows // groups),
                           out.reshape(N, K, g.out_h * g.out_w), workspace, *_window_args(g), band_rows, num_threads)
    if bias is not None:
        out += bias[:, None, None]
    return out


def conv2d_backward(grad_output, x, weight, stride=1, padding=0, dilation=1, groups=1, *, algorithm="auto"):
    """Gradients of `conv2d` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_output : ndarray, shape (N, K, Ho, Wo)
        Gradient of the loss with respect to ``conv2d(x, weight, ...)``.
    x, weight, stride, padding, dilation, groups, algorithm : as in `conv2d`
        (``"winograd"``: grad_x by Winograd, grad_weight as ``"auto"`` runs it)

    Returns
    -------
    grad_x : ndarray, shape (N, C, H, W)
    grad_weight : ndarray, shape (K, C // groups, kh, kw)
    grad_bias : ndarray, shape (K,)
    """
    x, weight, _, g, groups = v.conv2d_args(x, weight, None, stride, padding, dilation, groups)
    v.choice(algorithm, "algorithm", ALL_ALGORITHMS)
    N, K = x.shape[0], weight.shape[0]
    grad_output = v.grad_output_array(grad_output, (N, K, g.out_h, g.out_w), x.dtype)
    if algorithm == "auto":
        algorithm = _choose_algorithm(x.shape, weight.shape, g, groups, x.dtype, backward=True)
    if algorithm == "winograd":
        return _winograd_backward(grad_output, x, weight, g, groups)
    if algorithm == "direct":
        work = 2 * grad_output.size * weight[0].size
        return _direct.backward(grad_output, x, weight, g, groups, num_threads_for_macs(work))
    return _im2col_backward(grad_output, x, weight, g, groups)


def _im2col_backward(grad_output, x, weight, g, groups, with_grad_x=True):
    """(grad_x, grad_weight, grad_bias) on im2col bands; grad_x is None without `with_grad_x`."""
    N, K = x.shape[0], weight.shape[0]
    _check_blas_limits(g)
    col_rows = x.shape[1] * g.kernel_h * g.kernel_w
    num_threads = num_threads_for_macs((2 if with_grad_x else 1) * grad_output.size * (col_rows // groups))
    band_rows = _band_rows(col_rows, g, x.dtype.itemsize)
    workspace = _workspace(num_threads, col_rows, band_rows, g, x.dtype)
    grad_x = np.zeros_like(x) if with_grad_x else np.empty((N, 1, 1, 1), dtype=x.dtype)  # never written
    grad_w_parts = np.zeros((num_threads, groups, K // groups, col_rows // groups), dtype=x.dtype)
    blas.pin_single_threaded()
    _kernel.conv2d_backward(x, weight.reshape(groups, K // groups, col_rows // groups),
                            grad_output.reshape(N, K, g.out_h * g.out_w), grad_x, grad_w_parts, workspace,
                            *_window_args(g), band_rows, num_threads, with_grad_x)
    grad_w = grad_w_parts.sum(axis=0).reshape(weight.shape)
    return (grad_x if with_grad_x else None), grad_w, grad_output.sum(axis=(0, 2, 3))


def _winograd_backward(grad_output, x, weight, g, groups):
    """grad_x by Winograd (at stride 1 a 3x3 convolution of grad_output); grad_weight
    by im2col or direct, whichever "auto" measures faster for it (fastconv._autotune)."""
    _winograd.check_geometry(g)
    num_threads = num_threads_for_macs(grad_output.size * weight[0].size)
    grad_x = _winograd.grad_x(grad_output, weight, x.shape, g, groups, num_threads)
    if _autotune.choose("grad_weight", x.shape, weight.shape, g, groups, x.dtype) == "direct":
        grad_w = _direct.grad_weight(grad_output, x, weight, g, groups, num_threads)
        return grad_x, grad_w, grad_output.sum(axis=(0, 2, 3))
    _, grad_w, grad_b = _im2col_backward(grad_output, x, weight, g, groups, with_grad_x=False)
    return grad_x, grad_w, grad_b
