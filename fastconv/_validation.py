"""Argument checking and normalisation shared by every public op.

Everything a user passes goes through here before any kernel runs: arrays come
out as C-contiguous float32/float64 ndarrays (copied once if needed, never
written to), sizes come out as checked tuples of Python ints, and every
rejection is a ValueError/TypeError that names the argument and its value.
"""
import math
import numbers
from typing import NamedTuple

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_DTYPE_NAMES = "float32 or float64"

#: Largest window argument (kernel_size, stride, padding, dilation, output_size):
#: the kernels take these as C ints.
MAX_SIZE = 2**31 - 1


def _describe(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def float_array(x, name, ndim=None, dtype=None):
    """`x` as a C-contiguous float32/float64 ndarray with `ndim` dimensions.

    `dtype`, when given, is the dtype `x` must already have (no silent casting).
    """
    if not isinstance(x, np.ndarray):
        if isinstance(x, (str, bytes)) or x is None:
            raise TypeError(f"{name} must be an array of {_DTYPE_NAMES}, got {_describe(x)}")
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as e:  # ragged nesting and the like
            raise type(e)(f"{name} must be an array of {_DTYPE_NAMES}, got {_describe(x)} ({e})") from None
        # Python floats and lists of them arrive as float64: accept those.
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype {_DTYPE_NAMES}, got {x.dtype}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {x.dtype} but the input has dtype {np.dtype(dtype)}; "
            f"mixed dtypes are not cast silently, convert one of them"
        )
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {x.shape}")
    return np.ascontiguousarray(x)


def integer(value, name, minimum=None, maximum=None):
    """A Python int from an int-like (bools, floats and strings are rejected)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {_describe(value)}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def pair(value, name, minimum=None, maximum=MAX_SIZE):
    """(a, b) from an int or a pair of ints, each in [minimum, maximum]."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (tuple, list, np.ndarray)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {_describe(value)}")
        return (integer(value[0], name, minimum, maximum), integer(value[1], name, minimum, maximum))
    v = integer(value, name, minimum, maximum)
    return (v, v)


def allocatable(shape, dtype, what):
    """Raise MemoryError if an array of `shape` exceeds the address space (NumPy would
    raise a ValueError that names no argument)."""
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if nbytes > np.iinfo(np.intp).max:
        raise MemoryError(f"cannot allocate the {what}: shape {tuple(shape)} needs {nbytes} bytes")


def choice(value, name, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {_describe(value)}")
    return value


def window_count(n, kernel_size, stride=1, padding=0, dilation=1, ceil_mode=False):
    """Number of windows along one axis (torch's formula); 0 when none fits.

    With `ceil_mode`, a partial window at the end is kept, unless it would start
    inside the right/bottom padding.
    """
    span = dilation * (kernel_size - 1) + 1
    room = n + 2 * padding - span
    if room < 0:
        return 0
    if ceil_mode:
        out = -(-room // stride) + 1
        if (out - 1) * stride >= n + padding:
            out -= 1
        return out
    return room // stride + 1


def output_size(n, kernel_size, stride=1, padding=0, dilation=1, ceil_mode=False):
    """Output length of a convolution or pooling along one axis.

    ``floor((n + 2*padding - dilation*(kernel_size - 1) - 1) / stride) + 1``, or
    with `ceil_mode` the ceiling, dropping a last window that would start in the
    padding (torch's rule).

    Parameters
    ----------
    n : int
        Input length (>= 1).
    kernel_size, stride, dilation : int (>= 1)
    padding : int (>= 0)
    ceil_mode : bool

    Returns
    -------
    int

    Raises
    ------
    ValueError
        If the window does not fit in the padded input.
    """
    n = integer(n, "n", minimum=1)
    kernel_size = integer(kernel_size, "kernel_size", minimum=1)
    stride = integer(stride, "stride", minimum=1)
    padding = integer(padding, "padding", minimum=0)
    dilation = integer(dilation, "dilation", minimum=1)
    out = window_count(n, kernel_size, stride, padding, dilation, bool(ceil_mode))
    if out < 1:
        raise ValueError(
            f"kernel_size {kernel_size} with dilation {dilation} is larger than the padded input "
            f"{n + 2 * padding}")
    return out


class ConvGeometry(NamedTuple):
    """Normalised 2-D window geometry; bottom/right padding is implied by `out_h`, `out_w`."""
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    pad_top: int
    pad_left: int
    dilation_h: int
    dilation_w: int
    out_h: int
    out_w: int


def conv_padding(padding, kernel, stride, dilation):
    """((top, bottom), (left, right)) from an int, a pair, 'valid' or 'same'."""
    if isinstance(padding, str):
        choice(padding, "padding", ("valid", "same"))
        if padding == "valid":
            return (0, 0), (0, 0)
        if stride != (1, 1):
            raise ValueError(f"padding='same' needs stride=1, got stride={stride}")
        # As torch: total padding d*(k-1); the odd pixel goes to the bottom/right.
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return tuple((t // 2, t - t // 2) for t in totals)
    ph, pw = pair(padding, "padding", minimum=0)
    return (ph, ph), (pw, pw)


def conv_geometry(in_hw, kernel_size, stride, padding, dilation, kernel_name="kernel_size"):
    """Check and normalise the window arguments of a convolution over an (H, W) map.

    `kernel_name` is what the messages call the kernel size (conv2d: the weight's).
    """
    kernel = pair(kernel_size, kernel_name, minimum=1)
    stride = pair(stride, "stride", minimum=1)
    dilation = pair(dilation, "dilation", minimum=1)
    (pt, pb), (pl, pr) = conv_padding(padding, kernel, stride, dilation)
    if max(pt, pl) > MAX_SIZE:
        raise ValueError(f"padding={padding!r} gives padding {(pt, pl)}, larger than {MAX_SIZE}")
    H, W = in_hw
    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    if spans[0] > H + pt + pb or spans[1] > W + pl + pr:
        raise ValueError(
            f"{kernel_name} {kernel} (dilation {dilation}, span {tuple(spans)}) is larger than "
            f"the padded input {(H + pt + pb, W + pl + pr)}"
        )
    out_h = (H + pt + pb - spans[0]) // stride[0] + 1
    out_w = (W + pl + pr - spans[1]) // stride[1] + 1
    return ConvGeometry(kernel[0], kernel[1], stride[0], stride[1], pt, pl,
                        dilation[0], dilation[1], out_h, out_w)


def groups_of(groups, in_channels, out_channels):
    groups = integer(groups, "groups", minimum=1)
    if in_channels % groups:
        raise ValueError(f"groups={groups} must divide the input channels C={in_channels}")
    if out_channels % groups:
        raise ValueError(f"groups={groups} must divide the output channels K={out_channels}")
    return groups


def conv2d_args(x, weight, bias, stride, padding, dilation, groups):
    """Checked (x, weight, bias, geometry, groups) for conv2d and conv2d_backward."""
    x = float_array(x, "x", ndim=4)
    weight = float_array(weight, "weight", ndim=4, dtype=x.dtype)
    K, Cg, kh, kw = weight.shape
    groups = groups_of(groups, x.shape[1], K)
    if Cg * groups != x.shape[1]:
        raise ValueError(
            f"weight has {Cg} input channels per group, but x has C={x.shape[1]} channels "
            f"and groups={groups} (expected weight.shape[1] == {x.shape[1] // groups})"
        )
    if K == 0 or kh == 0 or kw == 0:
        raise ValueError(f"weight must have non-zero K, kh and kw, got shape {weight.shape}")
    if bias is not None:
        bias = float_array(bias, "bias", ndim=1, dtype=x.dtype)
        if bias.shape[0] != K:
            raise ValueError(f"bias must have shape ({K},), got {bias.shape}")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"x must have non-zero height and width, got shape {x.shape}")
    geom = conv_geometry(x.shape[2:], (kh, kw), stride, padding, dilation, "weight kernel_size")
    return x, weight, bias, geom, groups


def grad_output_array(grad_output, expected_shape, dtype):
    grad_output = float_array(grad_output, "grad_output", ndim=len(expected_shape), dtype=dtype)
    if grad_output.shape != tuple(expected_shape):
        raise ValueError(f"grad_output must have shape {tuple(expected_shape)}, got {grad_output.shape}")
    return grad_output
