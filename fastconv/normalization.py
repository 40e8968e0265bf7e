"""Batch normalisation over (N, C, H, W), forward and backward.

Semantics are those of ``torch.nn.functional.batch_norm``: in training the
batch's biased variance normalises, and the running statistics (when given)
are updated in place with the unbiased variance,
``running = (1 - momentum) * running + momentum * batch``. This in-place update
is the one exception to "inputs are never written".
"""
import numbers

import numpy as np

from fastconv import _memory
from fastconv import _validation as v
from fastconv._threads import num_threads_for

try:
    from fastconv._kernels import runnable_builds
    _builds = runnable_builds("batch_norm")
    #: The build of the kernels per dtype. float32: the widest the CPU runs, since the
    #: statistics convert every value to double and accumulate it, which the portable
    #: (SSE2) build does below memory speed (channel_stats on (32, 64, 56, 56) at 2
    #: threads: 2.8 ms portable, 1.75 ms AVX-512). float64: the portable build. Since the
    #: statistics' lane loops are `omp simd`, every build's float64 statistics run at the
    #: same speed (channel_stats 1.01-1.05 ms at 2 threads, interleaved); before, the
    #: portable build's were the fastest (1.3x the AVX-512 build's on one thread).
    #: Re-measured by `python -m fastconv bench --sections ops` ("bn" rows).
    KERNELS = {np.dtype(np.float32): _builds[-1], np.dtype(np.float64): _builds[0]}
    _kernel = _builds[0]
except ImportError:     # not built yet: the NumPy expressions below
    _kernel = None


def _channel_vector(a, name, C, dtype, writeable=False):
    if a is None:
        return None
    if writeable:
        # updated in place, so it must be the caller's own array, not a converted copy
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name} must be an ndarray (it is updated in place), got {type(a).__name__}")
        if a.dtype != dtype:
            raise TypeError(f"{name} has dtype {a.dtype} but the input has dtype {np.dtype(dtype)}")
        if not a.flags.writeable:
            raise ValueError(f"{name} must be writeable (it is updated in place in training)")
    a = v.float_array(a, name, ndim=1, dtype=dtype) if not writeable else a
    if a.shape != (C,):
        raise ValueError(f"{name} must have shape ({C},), got {a.shape}")
    return a


def _real(value, name, minimum=None):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"{name} must be a finite number{bound}, got {value}")
    return value


def _input(x):
    x = v.float_array(x, "x", ndim=4)
    return x, x.shape[1]


def _planes(a):
    """(N, C, H*W) view of a C-contiguous (N, C, H, W) array."""
    return a.reshape(a.shape[0], a.shape[1], a.shape[2] * a.shape[3])


def _batch_stats(x):
    """Per-channel mean and biased variance of (N, C, H, W), accumulated in float64
    (the kernel: one pass over shifted values; NumPy: two passes, the second over
    deviations; neither loses precision to cancellation)."""
    if _kernel is not None:
        C = x.shape[1]
        mean, var = np.empty(C), np.empty(C)
        KERNELS[x.dtype].channel_stats(_planes(x), mean, var, num_threads_for(x.size))
        return mean, var
    xd = x.astype(np.float64, copy=False)
    mean = xd.mean(axis=(0, 2, 3))
    var = np.square(xd - mean[:, None, None]).mean(axis=(0, 2, 3))
    return mean, var


def _stats_for(x, running_mean, running_var, training, eps):
    """(mean, invstd) that normalise x, in float64, and the batch's biased variance (training)."""
    C = x.shape[1]
    if training:
        M = x.shape[0] * x.shape[2] * x.shape[3]
        if M <= 1:
            raise ValueError(f"training needs more than 1 value per channel, got x of shape {x.shape}")
        mean, var = _batch_stats(x)
        return mean, 1.0 / np.sqrt(var + eps), var
    if running_mean is None or running_var is None:
        raise ValueError("running_mean and running_var are required when training=False")
    del C
    mean = running_mean.astype(np.float64)
    return mean, 1.0 / np.sqrt(running_var.astype(np.float64) + eps), None


def _normalize(x, mean, scale, bias):
    """``(x - mean) * scale + bias`` per channel of (N, C, H, W) `x`, in its dtype;
    `mean` and `scale` float64 (C,), `bias` (C,) or None."""
    C = x.shape[1]
    out = _memory.empty(x.shape, x.dtype)
    if _kernel is not None:
        # (mean_hi, mean_lo, scale, bias) per channel; mean_hi + mean_lo is the float64 mean
        coefficients = np.empty((C, 4), dtype=x.dtype)
        coefficients[:, 0] = mean
        coefficients[:, 1] = mean - coefficients[:, 0]
        coefficients[:, 2] = scale
        coefficients[:, 3] = 0.0 if bias is None else bias
        KERNELS[x.dtype].normalize(_planes(x), coefficients, _planes(out), num_threads_for(2 * x.size))
    else:
        shift = -mean * scale + (0.0 if bias is None else bias)
        np.multiply(x, scale.astype(x.dtype)[:, None, None], out=out)
        out += shift.astype(x.dtype)[:, None, None]
    return out


def batch_norm2d(x, running_mean=None, running_var=None, weight=None, bias=None, training=False,
                 momentum=0.1, eps=1e-5):
    """Batch normalisation, as ``torch.nn.functional.batch_norm`` on NCHW input.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64
    running_mean, running_var : ndarray, shape (C,), dtype of `x`, optional
        Required when not `training`. In training, when given, they are updated
        in place: ``(1 - momentum) * running + momentum * batch``, with the
        unbiased batch variance (``N*H*W / (N*H*W - 1)`` times the biased one).
    weight, bias : ndarray, shape (C,), optional
        Per-channel scale (default 1) and shift (default 0).
    training : bool
        Normalise with the batch's mean and biased variance (needs more than one
        value per channel), else with the running statistics.
    momentum : float
    eps : float
        Added to the variance before its square root.

    Returns
    -------
    out : ndarray, shape (N, C, H, W), dtype of `x`
    """
    x, C = _input(x)
    training = v._flag(training, "training")
    momentum = _real(momentum, "momentum")
    eps = _real(eps, "eps", minimum=0.0)
    running_mean = _channel_vector(running_mean, "running_mean", C, x.dtype, writeable=training)
    running_var = _channel_vector(running_var, "running_var", C, x.dtype, writeable=training)
    weight = _channel_vector(weight, "weight", C, x.dtype)
    bias = _channel_vector(bias, "bias", C, x.dtype)
    mean, invstd, var = _stats_for(x, running_mean, running_var, training, eps)
    out = _normalize(x, mean, invstd if weight is None else invstd * weight, bias)
    if training:
        M = x.shape[0] * x.shape[2] * x.shape[3]
        if running_mean is not None:
            running_mean[...] = (1 - momentum) * running_mean + momentum * mean
        if running_var is not None:
            running_var[...] = (1 - momentum) * running_var + momentum * var * (M / (M - 1))
    return out


def batch_norm2d_backward(grad_output, x, weight=None, eps=1e-5, *, training=True, running_mean=None,
                          running_var=None):
    """Gradients of `batch_norm2d` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_output : ndarray, shape (N, C, H, W)
        Gradient of the loss with respect to ``batch_norm2d(x, ...)``.
    x, weight, eps : as in `batch_norm2d`
    training : bool
        As in the forward: the gradient flows through the batch statistics
        (training) or treats the running statistics as constants (eval, which
        needs `running_mean` and `running_var`, the values the forward used).
    running_mean, running_var : ndarray, shape (C,), optional
        Read only; only used when not `training`.

    Returns
    -------
    grad_x : ndarray, shape (N, C, H, W)
    grad_weight : ndarray, shape (C,)
        Also returned when `weight` is None (the gradient of a unit scale).
    grad_bias : ndarray, shape (C,)
    """
    x, C = _input(x)
    grad_output = v.grad_output_array(grad_output, x.shape, x.dtype)
    training = v._flag(training, "training")
    eps = _real(eps, "eps", minimum=0.0)
    weight = _channel_vector(weight, "weight", C, x.dtype)
    running_mean = _channel_vector(running_mean, "running_mean", C, x.dtype)
    running_var = _channel_vector(running_var, "running_var", C, x.dtype)
    if _kernel is not None:
        return _backward_kernel(grad_output, x, weight, eps, training, running_mean, running_var)
    mean, invstd, _ = _stats_for(x, running_mean, running_var, training, eps)
    axes = (0, 2, 3)
    xd, gd = x.astype(np.float64, copy=False), grad_output.astype(np.float64, copy=False)
    grad_b = gd.sum(axis=axes)
    dot = (gd * (xd - mean[:, None, None])).sum(axis=axes)   # sum(gy * (x - mean))
    grad_w = dot * invstd
    w = np.ones(C) if weight is None else weight.astype(np.float64)
    k = w * invstd
    if training:
        M = x.shape[0] * x.shape[2] * x.shape[3]
        # grad_x = w * invstd * (gy - mean(gy) - xhat * mean(gy * xhat))
        c1 = k * dot * invstd * invstd / M
        c0 = -k * grad_b / M + c1 * mean
        grad_x = gd * k[:, None, None] - xd * c1[:, None, None] + c0[:, None, None]
    else:
        grad_x = gd * k[:, None, None]
    return (grad_x.astype(x.dtype, copy=False), grad_w.astype(x.dtype), grad_b.astype(x.dtype))


def _backward_kernel(grad_output, x, weight, eps, training, running_mean, running_var):
    """`batch_norm2d_backward` by the compiled kernels: one pass over (grad_output, x)
    for the statistics and the two reductions, one for grad_x (one pass in all at eval)."""
    C = x.shape[1]
    kernel = KERNELS[x.dtype]
    g3, x3 = _planes(grad_output), _planes(x)
    nt = num_threads_for(2 * x.size)
    grad_b, dot = np.empty(C), np.empty(C)
    grad_x = _memory.empty(x.shape, x.dtype)
    w = np.ones(C) if weight is None else weight.astype(np.float64)
    if training:
        M = x.shape[0] * x.shape[2] * x.shape[3]
        if M <= 1:
            raise ValueError(f"training needs more than 1 value per channel, got x of shape {x.shape}")
        mean, var = np.empty(C), np.empty(C)
        kernel.backward_stats(g3, x3, mean, var, grad_b, dot, nt)
        invstd = 1.0 / np.sqrt(var + eps)
        k = w * invstd
        # grad_x = w * invstd * (gy - mean(gy) - xhat * mean(gy * xhat))
        c1 = k * dot * invstd * invstd / M
        kernel.backward_input(g3, x3, k, c1, mean, k * grad_b / M, _planes(grad_x), nt)
    else:
        mean, invstd, _ = _stats_for(x, running_mean, running_var, training, eps)
        k = w * invstd
        kernel.backward_eval(g3, x3, mean, k, _planes(grad_x), grad_b, dot, nt)
    grad_w = dot * invstd
    return grad_x, grad_w.astype(x.dtype), grad_b.astype(x.dtype)
