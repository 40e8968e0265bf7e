"""The `im2col` convolution algorithm: conv2d and its gradients as column bands and BLAS GEMMs.

Called by `fastconv.convolution` with checked, C-contiguous arrays and a
normalised geometry. OpenMP threads take (image, band of output rows) tasks
(fastconv/_kernels/conv_gemm.pyx); each builds the band's column matrix in its
own cache-sized slice of a workspace and multiplies it with single-threaded
BLAS. Extra memory is `num_threads` bands, whatever the batch size.
"""
import numpy as np

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


def forward(x, weight, bias, g, groups, num_threads):
    """(N, K, Ho, Wo) = conv2d(x, weight) + bias."""
    N, K = x.shape[0], weight.shape[0]
    col_rows = x.shape[1] * g.kernel_h * g.kernel_w
    v.allocatable((N, K, g.out_h, g.out_w), x.dtype, "output")
    out = np.empty((N, K, g.out_h, g.out_w), dtype=x.dtype)
    _check_blas_limits(g)
    band_rows = _band_rows(col_rows, g, x.dtype.itemsize)
    workspace = _workspace(num_threads, col_rows, band_rows, g, x.dtype)
    blas.pin_single_threaded()
    kernel.conv2d_forward(x, weight.reshape(groups, K // groups, col_rows // groups),
                          out.reshape(N, K, g.out_h * g.out_w), workspace, g.struct(), band_rows, num_threads)
    if bias is not None:
        out += bias[:, None, None]
    return out


def backward(grad_output, x, weight, g, groups, num_threads, with_grad_x=True):
    """(grad_x, grad_weight, grad_bias) of conv2d; grad_x is None without `with_grad_x`."""
    N, K = x.shape[0], weight.shape[0]
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
