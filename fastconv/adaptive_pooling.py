"""Adaptive average and max pooling (forward and backward).

torch's window rule: along an axis of length H pooled to Ho, output i covers
rows ``[floor(i*H/Ho), ceil((i+1)*H/Ho))`` (windows may overlap, and Ho may
exceed H). Max pooling takes the first maximum of its window in row-major
order, or a NaN (which propagates); indices are flat positions in each (H, W)
plane. Inputs may be (N, C, H, W) or unbatched (C, H, W).
"""
import numpy as np

from fastconv import _memory
from fastconv import _validation as v
from fastconv._kernels import adaptive_pool as _kernel
from fastconv._kernels import widest_build
from fastconv._threads import num_threads_for
from fastconv.pooling import global_avg_pool2d, global_max_pool2d

#: The max pooling's build: AVX + FMA where the CPU runs it (an AVX-512 build was no
#: faster). On the Zen 4 VM (one thread, interleaved) it took 0.71-0.87x the portable
#: build's time in float64 (the 14->5, 13->6 and 7->1 cases of `bench --sections ops`),
#: whose column pass the portable build did not vectorise, and 0.93-0.99x in float32.
#: A max is exact, so every build returns the same values and indices. The windowed
#: averages stay on the portable build: no faster with AVX, and their sums would round
#: differently with the vector width (the 1x1 average, `global_avg_pool2d`, runs on the
#: widest build).
_max_kernel = widest_build("adaptive_pool")


def _output_hw(output_size, in_hw):
    """(Ho, Wo) from an int or a pair whose None elements keep the input's size."""
    if isinstance(output_size, np.ndarray) and output_size.ndim == 1:
        output_size = output_size.tolist()
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != 2:
            raise ValueError(f"output_size must be an int or a pair, got {output_size!r}")
        return tuple(n if o is None else v.integer(o, "output_size", 0, v.MAX_SIZE)
                     for o, n in zip(output_size, in_hw))
    if output_size is None:
        return tuple(in_hw)
    o = v.integer(output_size, "output_size", 0, v.MAX_SIZE)
    return (o, o)


def _planes(a):
    # explicit plane count: -1 is ambiguous when a is empty
    return a.reshape(a.shape[0] * a.shape[1], a.shape[-2], a.shape[-1])


def adaptive_avg_pool2d(x, output_size):
    """2-D adaptive average pooling, as ``torch.nn.functional.adaptive_avg_pool2d``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W) or (C, H, W), float32 or float64
    output_size : int, or pair of ints or None
        (Ho, Wo); a None element keeps the input's size along that axis.

    Returns
    -------
    out : ndarray, shape (N, C, Ho, Wo) (or (C, Ho, Wo)), dtype of `x`
    """
    xb, unbatched = v.pool_input(x)
    N, C, H, W = xb.shape
    Ho, Wo = _output_hw(output_size, (H, W))
    if (Ho, Wo) == (1, 1):
        # one mean per plane: global pooling's loop over whole planes (its window loop
        # here, a task and a call per output row, took 3x as long at ResNet's 32x512x7x7)
        out = global_avg_pool2d(xb)
        return out[0] if unbatched else out
    v.allocatable((N, C, Ho, Wo), xb.dtype, "output")
    out = _memory.empty((N, C, Ho, Wo), xb.dtype)
    _kernel.adaptive_avg_pool2d(_planes(xb), _planes(out), num_threads_for(xb.size + out.size))
    return out[0] if unbatched else out


def adaptive_avg_pool2d_backward(grad_output, input_shape):
    """Gradient of `adaptive_avg_pool2d` with respect to its input.

    Parameters
    ----------
    grad_output : ndarray, shape (N, C, Ho, Wo) or (C, Ho, Wo), float32 or float64
    input_shape : tuple of ints
        Shape of the forward input: (N, C, H, W), or (C, H, W) for 3-D `grad_output`.

    Returns
    -------
    grad_input : ndarray, shape `input_shape`, dtype of `grad_output`
    """
    gob, shape, unbatched = v.pool_grad_output(grad_output, input_shape)
    v.allocatable(shape, gob.dtype, "grad_input")
    grad = _memory.empty(shape, gob.dtype)   # the kernel overwrites every element
    _kernel.adaptive_avg_pool2d_backward(_planes(gob), _planes(grad), num_threads_for(grad.size + gob.size))
    return grad[0] if unbatched else grad


def adaptive_max_pool2d(x, output_size, return_indices=False):
    """2-D adaptive max pooling, as ``torch.nn.functional.adaptive_max_pool2d``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W) or (C, H, W), float32 or float64
    output_size : int, or pair of ints or None
        (Ho, Wo); a None element keeps the input's size along that axis.
    return_indices : bool
        Also return where each maximum was found.

    Returns
    -------
    out : ndarray, shape (N, C, Ho, Wo) (or (C, Ho, Wo)), dtype of `x`
    indices : ndarray of int64, same shape as `out`, only with `return_indices`
        Flat position ``ih * W + iw`` of each maximum within its (H, W) plane.
    """
    xb, unbatched = v.pool_input(x)
    return_indices = v._flag(return_indices, "return_indices")
    N, C, H, W = xb.shape
    Ho, Wo = _output_hw(output_size, (H, W))
    if (Ho, Wo) == (1, 1):
        # one max per plane: global pooling's tasks of planes (here a task per output row)
        return global_max_pool2d(xb[0] if unbatched else xb, return_indices=return_indices)
    v.allocatable((N, C, Ho, Wo), np.int64, "indices")
    out = _memory.empty((N, C, Ho, Wo), xb.dtype)
    indices = _memory.empty(out.shape, np.int64)
    _max_kernel.adaptive_max_pool2d(_planes(xb), _planes(out), _planes(indices), num_threads_for(xb.size))
    if unbatched:
        out, indices = out[0], indices[0]
    return (out, indices) if return_indices else out


def adaptive_max_pool2d_backward(grad_output, indices, input_shape):
    """Gradient of `adaptive_max_pool2d` with respect to its input.

    Parameters
    ----------
    grad_output : ndarray, shape (N, C, Ho, Wo) or (C, Ho, Wo), float32 or float64
    indices : integer ndarray, same shape as `grad_output`
        As returned by ``adaptive_max_pool2d(..., return_indices=True)``; every
        value must lie in ``[0, H*W)``.
    input_shape : tuple of ints
        Shape of the forward input: (N, C, H, W), or (C, H, W) for 3-D `grad_output`.

    Returns
    -------
    grad_input : ndarray, shape `input_shape`, dtype of `grad_output`
    """
    from fastconv.pooling import max_pool2d_backward
    # the same scatter-add of each output's gradient to the element its index names
    return max_pool2d_backward(grad_output, indices, input_shape)
