"""Max, average and sum pooling (forward and backward), and global pooling.

Semantics are those of ``torch.nn.functional.max_pool2d`` / ``avg_pool2d``:
stride defaults to the kernel size, padding is at most half the kernel, with
``ceil_mode`` a partial last window is kept unless it would start in the
bottom/right padding; max pooling pads with -inf, propagates NaN and breaks
ties towards the first element of the window; ``indices`` are flat positions
in each (H, W) plane. Inputs may be (N, C, H, W) or unbatched (C, H, W).
"""
import numpy as np

from fastconv import _memory
from fastconv import _validation as v
from fastconv._kernels import pooling as _kernel
from fastconv._kernels import widest_build
from fastconv._threads import num_threads_for

_NO_INDICES = np.zeros((1, 1, 1), dtype=np.int64)
#: Bytes between the threads' scratch rows in the avg/sum backward: two 64-byte cache
#: lines, as the adjacent-line prefetcher fetches lines in pairs.
_SCRATCH_GAP = 128


def _planes(a):
    """View a C-contiguous (N, C, h, w) array as (N*C, h, w)."""
    return a.reshape(-1, a.shape[2], a.shape[3])


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """2-D max pooling, as ``torch.nn.functional.max_pool2d``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W) or (C, H, W), float32 or float64
    kernel_size : int or pair of ints
    stride : int or pair of ints, optional
        Defaults to `kernel_size`.
    padding : int or pair of ints
        Implicit -inf padding on both sides; at most half the kernel size.
    dilation : int or pair of ints
    ceil_mode : bool
        Round the output size up (keep partial windows at the bottom/right).
    return_indices : bool
        Also return where each maximum was found.

    Returns
    -------
    out : ndarray, shape (N, C, Ho, Wo) (or (C, Ho, Wo)), dtype of `x`
    indices : ndarray of int64, same shape as `out`, only with `return_indices`
        Flat position ``ih * W + iw`` of each maximum within its (H, W) plane;
        the first maximum of the window (row-major), or its last NaN.
    """
    xb, unbatched = v.pool_input(x)
    return_indices = v._flag(return_indices, "return_indices")
    N, C, H, W = xb.shape
    g = v.pool_geometry((H, W), kernel_size, stride, padding, dilation, ceil_mode)
    out = _memory.empty((N, C, g.out_h, g.out_w), xb.dtype)
    indices = _memory.empty(out.shape, np.int64) if return_indices else _NO_INDICES
    _kernel.max_pool2d(_planes(xb), _planes(out), _planes(indices) if return_indices else indices,
                       return_indices, g.struct(), num_threads_for(xb.size))
    if unbatched:
        out, indices = out[0], indices[0]
    return (out, indices) if return_indices else out


def max_pool2d_backward(grad_output, indices, input_shape):
    """Gradient of `max_pool2d` with respect to its input.

    Each output's gradient goes to the input element its index names; where
    windows overlap, contributions to one element add up.

    Parameters
    ----------
    grad_output : ndarray, shape (N, C, Ho, Wo) or (C, Ho, Wo), float32 or float64
    indices : integer ndarray, same shape as `grad_output`
        As returned by ``max_pool2d(..., return_indices=True)``; every value must
        lie in ``[0, H*W)``.
    input_shape : tuple of ints
        Shape of the forward input: (N, C, H, W), or (C, H, W) for 3-D `grad_output`.

    Returns
    -------
    grad_input : ndarray, shape `input_shape`, dtype of `grad_output`

    Raises
    ------
    ValueError
        If `indices` has another shape than `grad_output`, or a value outside
        ``[0, H*W)`` (nothing out of bounds is ever written).
    """
    gob, shape, unbatched = v.pool_grad_output(grad_output, input_shape)
    idx = v.index_array(indices, gob.shape[1:] if unbatched else gob.shape)
    if unbatched:
        idx = idx[None]
    N, C, H, W = shape
    v.allocatable(shape, gob.dtype, "grad_input")
    grad_input = _memory.empty(shape, gob.dtype)
    L = gob.shape[2] * gob.shape[3]
    bad = _kernel.max_pool2d_backward(gob.reshape(N * C, L), idx.reshape(N * C, L),
                                      grad_input.reshape(N * C, H * W), num_threads_for(grad_input.size))
    if bad:
        raise ValueError(f"indices has {bad} value(s) outside [0, H*W) = [0, {H * W}) for "
                         f"input_shape {tuple(input_shape)}")
    return grad_input[0] if unbatched else grad_input


def _avg_forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor):
    xb, unbatched = v.pool_input(x)
    g = v.pool_geometry(xb.shape[2:], kernel_size, stride, padding, 1, ceil_mode)
    N, C = xb.shape[:2]
    out = _memory.empty((N, C, g.out_h, g.out_w), xb.dtype)
    _kernel.avg_pool2d(_planes(xb), _planes(out), g.struct(), count_include_pad, divisor, num_threads_for(xb.size))
    return out[0] if unbatched else out


def _avg_backward(grad_output, input_shape, kernel_size, stride, padding, ceil_mode,
                  count_include_pad, divisor):
    gob, shape, unbatched = v.pool_grad_output(grad_output, input_shape)
    g = v.pool_geometry(shape[2:], kernel_size, stride, padding, 1, ceil_mode)
    if gob.shape[2:] != (g.out_h, g.out_w):
        raise ValueError(f"grad_output has shape {grad_output.shape}, but pooling input_shape "
                         f"{tuple(input_shape)} gives {g.out_h}x{g.out_w} outputs per plane")
    N, C, H, W = shape
    v.allocatable(shape, gob.dtype, "grad_input")
    grad_input = _memory.empty(shape, gob.dtype)
    num_threads = num_threads_for(grad_input.size)
    # One row of scaled gradients per thread, rows _SCRATCH_GAP bytes apart: rows side
    # by side share a cache line, which two threads then pass back and forth on every
    # output row (1 to 2 threads, (8,64,112,112): 3x3 windows 1.12x -> 1.75x, 2x2 1.46x -> 1.88x).
    row = -(-(g.out_w * gob.itemsize + _SCRATCH_GAP) // _SCRATCH_GAP) * _SCRATCH_GAP // gob.itemsize
    scratch = np.empty((num_threads, row), dtype=gob.dtype)
    _kernel.avg_pool2d_backward(_planes(gob), _planes(grad_input), scratch, g.struct(), count_include_pad,
                                divisor, num_threads)
    return grad_input[0] if unbatched else grad_input


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W) or (C, H, W), float32 or float64
    kernel_size : int or pair of ints
    stride : int or pair of ints, optional
        Defaults to `kernel_size`.
    padding : int or pair of ints
        Implicit zero padding on both sides; at most half the kernel size.
    ceil_mode : bool
        Round the output size up (keep partial windows at the bottom/right).
    count_include_pad : bool
        Count padded zeros in the divisor (torch's default). Either way, the
        part of a ceil-mode window past the padding is never counted.
    divisor_override : int, optional
        Divide every window sum by this (non-zero) number instead.

    Returns
    -------
    out : ndarray, shape (N, C, Ho, Wo) (or (C, Ho, Wo)), dtype of `x`
    """
    count_include_pad = v._flag(count_include_pad, "count_include_pad")
    divisor = v.divisor_of(divisor_override)
    return _avg_forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor)


def avg_pool2d_backward(grad_output, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None):
    """Gradient of `avg_pool2d` with respect to its input.

    Parameters
    ----------
    grad_output : ndarray, shape (N, C, Ho, Wo) or (C, Ho, Wo), float32 or float64
    input_shape : tuple of ints
        Shape of the forward input: (N, C, H, W), or (C, H, W) for 3-D `grad_output`.
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        As given to `avg_pool2d`.

    Returns
    -------
    grad_input : ndarray, shape `input_shape`, dtype of `grad_output`
    """
    count_include_pad = v._flag(count_include_pad, "count_include_pad")
    divisor = v.divisor_of(divisor_override)
    return _avg_backward(grad_output, input_shape, kernel_size, stride, padding, ceil_mode,
                         count_include_pad, divisor)


def sum_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False):
    """2-D sum pooling: the sum of each window (zero padding), i.e. `avg_pool2d`
    with ``divisor_override=1``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W) or (C, H, W), float32 or float64
    kernel_size, stride, padding, ceil_mode
        As in `avg_pool2d`.

    Returns
    -------
    out : ndarray, shape (N, C, Ho, Wo) (or (C, Ho, Wo)), dtype of `x`
    """
    return _avg_forward(x, kernel_size, stride, padding, ceil_mode, True, 1)


def sum_pool2d_backward(grad_output, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False):
    """Gradient of `sum_pool2d` with respect to its input.

    Parameters
    ----------
    grad_output : ndarray, shape (N, C, Ho, Wo) or (C, Ho, Wo), float32 or float64
    input_shape : tuple of ints
        Shape of the forward input: (N, C, H, W), or (C, H, W) for 3-D `grad_output`.
    kernel_size, stride, padding, ceil_mode
        As given to `sum_pool2d`.

    Returns
    -------
    grad_input : ndarray, shape `input_shape`, dtype of `grad_output`
    """
    return _avg_backward(grad_output, input_shape, kernel_size, stride, padding, ceil_mode, True, 1)


# ---------------------------------------------------------------------------
# Global pooling: one value per (n, c) plane, as torch's adaptive pooling to 1x1.

def _global_shape(shape, keepdims):
    """Output shape of global pooling over input `shape` (3-D or 4-D)."""
    return tuple(shape[:-2]) + (1, 1) if keepdims else tuple(shape[:-2])


#: Global pooling's build: the widest. With AVX the average sums groups of planes at
#: once (adaptive_pool.h): ResNet's (32, 512, 7, 7) in 0.6-0.7x the portable build's
#: time on one thread, in another order (both fixed by the plane's size alone); the max
#: is exact, the same in every build.
_global_kernel = widest_build("adaptive_pool")


def global_avg_pool2d(x, keepdims=True):
    """Mean over each (H, W) plane, as ``torch.nn.functional.adaptive_avg_pool2d(x, 1)``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W) or (C, H, W), float32 or float64
    keepdims : bool
        Keep the pooled axes as size 1 (torch's shape) or drop them.

    Returns
    -------
    out : ndarray, shape (N, C, 1, 1) or (N, C) (3-D input: (C, 1, 1) or (C,))
    """
    xb, unbatched = v.pool_input(x)
    keepdims = v._flag(keepdims, "keepdims")
    N, C, H, W = xb.shape
    out = np.empty(N * C, dtype=xb.dtype)
    _global_kernel.global_avg_pool2d(xb.reshape(N * C, H * W), out, num_threads_for(xb.size))
    return out.reshape(_global_shape(xb.shape[unbatched:], keepdims))


def _global_grad(grad_output, input_shape):
    """Checked grad_output and input shape, for either keepdims form."""
    go = v.float_array(grad_output, "grad_output")
    shape = v.input_shape_of(input_shape)
    if go.shape not in (_global_shape(shape, True), _global_shape(shape, False)):
        raise ValueError(f"grad_output must have shape {_global_shape(shape, True)} or "
                         f"{_global_shape(shape, False)} for input_shape {shape}, got {go.shape}")
    return go, shape


def global_avg_pool2d_backward(grad_output, input_shape):
    """Gradient of `global_avg_pool2d`: each output's gradient spread evenly over its plane.

    Parameters
    ----------
    grad_output : ndarray, shape (N, C, 1, 1) or (N, C) (or (C, 1, 1) / (C,)), float32 or float64
    input_shape : tuple of ints
        (N, C, H, W) or (C, H, W).

    Returns
    -------
    grad_input : ndarray, shape `input_shape`, dtype of `grad_output`
    """
    go, shape = _global_grad(grad_output, input_shape)
    v.allocatable(shape, go.dtype, "grad_input")
    grad_input = _memory.empty(shape, go.dtype)
    _kernel.global_avg_pool2d_backward(go.reshape(-1), grad_input.reshape(go.size, shape[-2] * shape[-1]),
                                       num_threads_for(grad_input.size))
    return grad_input


def global_max_pool2d(x, keepdims=True, return_indices=False):
    """Maximum over each (H, W) plane, as ``torch.nn.functional.adaptive_max_pool2d(x, 1)``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W) or (C, H, W), float32 or float64
    keepdims : bool
        Keep the pooled axes as size 1 (torch's shape) or drop them.
    return_indices : bool
        Also return the flat position ``ih * W + iw`` of each maximum (the first
        one, or the last NaN).

    Returns
    -------
    out : ndarray, shape (N, C, 1, 1) or (N, C) (3-D input: (C, 1, 1) or (C,))
    indices : ndarray of int64, same shape as `out`, only with `return_indices`
    """
    xb, unbatched = v.pool_input(x)
    keepdims = v._flag(keepdims, "keepdims")
    return_indices = v._flag(return_indices, "return_indices")
    N, C, H, W = xb.shape
    out = np.empty(N * C, dtype=xb.dtype)
    indices = np.empty(N * C, dtype=np.int64)
    _global_kernel.global_max_pool2d(xb.reshape(N * C, H * W), out, indices, return_indices,
                                     num_threads_for(xb.size))
    shape = _global_shape(xb.shape[unbatched:], keepdims)
    return (out.reshape(shape), indices.reshape(shape)) if return_indices else out.reshape(shape)


def global_max_pool2d_backward(grad_output, indices, input_shape):
    """Gradient of `global_max_pool2d`: each output's gradient goes to its maximum.

    Parameters
    ----------
    grad_output : ndarray, shape (N, C, 1, 1) or (N, C) (or (C, 1, 1) / (C,)), float32 or float64
    indices : integer ndarray, same shape as `grad_output`, values in ``[0, H*W)``
    input_shape : tuple of ints
        (N, C, H, W) or (C, H, W).

    Returns
    -------
    grad_input : ndarray, shape `input_shape`, dtype of `grad_output`
    """
    go, shape = _global_grad(grad_output, input_shape)
    idx = v.index_array(indices, go.shape)
    P = go.size
    HW = shape[-1] * shape[-2]
    v.allocatable(shape, go.dtype, "grad_input")
    grad_input = _memory.empty(shape, go.dtype)
    bad = _kernel.max_pool2d_backward(go.reshape(P, 1), idx.reshape(P, 1), grad_input.reshape(P, HW),
                                      num_threads_for(grad_input.size))
    if bad:
        raise ValueError(f"indices has {bad} value(s) outside [0, H*W) = [0, {HW}) for "
                         f"input_shape {shape}")
    return grad_input
