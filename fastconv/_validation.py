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
    return np.asarray(x, order="C")  # (ascontiguousarray would make a 0-d array 1-d)


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
    if ceil_mode:
        # torch: ceil(room / stride) + 1, which keeps one window even when the
        # span overhangs the padded input by less than a stride.
        out = -(-room // stride) + 1
        if out > 0 and (out - 1) * stride >= n + padding:
            out -= 1
        return max(out, 0)
    return max(room // stride + 1, 0)


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

    def struct(self):
        """The geometry as the kernels' entry points take it: the fields of the Geometry
        struct (fastconv/_kernels/_geometry.pxd), which Cython fills from this dict."""
        return {"kh": self.kernel_h, "kw": self.kernel_w, "sh": self.stride_h, "sw": self.stride_w,
                "pt": self.pad_top, "pl": self.pad_left, "dh": self.dilation_h, "dw": self.dilation_w,
                "out_h": self.out_h, "out_w": self.out_w}


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


def _flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {_describe(value)}")
    return bool(value)


def _windows_reach_input(n, kernel_size, stride, padding, dilation, count):
    """Whether each of the `count` windows along an axis covers at least one input element."""
    starts = np.arange(count) * stride - padding
    first = np.where(starts < 0, -(starts // dilation), 0)    # first window step at >= 0
    return bool(np.all((first < kernel_size) & (starts + first * dilation < n)))


def pool_geometry(in_hw, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Check and normalise the window arguments of a pooling over an (H, W) map.

    torch's rules: `stride` defaults to `kernel_size`; padding is at most half the
    kernel; with `ceil_mode` a last partial window is kept unless it would start in
    the bottom/right padding. Returns a `ConvGeometry`.
    """
    kernel = pair(kernel_size, "kernel_size", minimum=1)
    stride = kernel if stride is None else pair(stride, "stride", minimum=1)
    if isinstance(padding, str):
        raise TypeError(f"padding must be an int or a pair of ints for pooling, got {_describe(padding)}")
    pad = pair(padding, "padding", minimum=0)
    dilation = pair(dilation, "dilation", minimum=1)
    ceil_mode = _flag(ceil_mode, "ceil_mode")
    for axis in range(2):
        if pad[axis] > kernel[axis] // 2:
            raise ValueError(
                f"padding {pad} must be at most half of kernel_size {kernel} (torch's rule), "
                f"got {pad[axis]} > {kernel[axis]} // 2")
    out = tuple(window_count(n, k, s, p, d, ceil_mode)
                for n, k, s, p, d in zip(in_hw, kernel, stride, pad, dilation))
    if min(out) < 1:
        raise ValueError(
            f"the output size {out} is below 1: kernel_size {kernel} (dilation {dilation}) does not fit "
            f"the input {tuple(in_hw)} padded by {pad}")
    for axis, name in enumerate(("rows", "columns")):
        if dilation[axis] > 1 and not _windows_reach_input(in_hw[axis], kernel[axis], stride[axis],
                                                           pad[axis], dilation[axis], out[axis]):
            raise ValueError(
                f"with dilation {dilation} and padding {pad}, a window's {name} fall only in the padding "
                f"of the input {tuple(in_hw)}; reduce dilation or padding")
    return ConvGeometry(kernel[0], kernel[1], stride[0], stride[1], pad[0], pad[1],
                        dilation[0], dilation[1], out[0], out[1])


def pool_input(x, name="x"):
    """`x` as a C-contiguous (N, C, H, W) array, and whether it came in unbatched (C, H, W)."""
    x = float_array(x, name)
    if x.ndim not in (3, 4):
        raise ValueError(f"{name} must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape {x.shape}")
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"{name} must have non-zero height and width, got shape {x.shape}")
    return (x if x.ndim == 4 else x[None]), x.ndim == 3


def input_shape_of(input_shape):
    """`input_shape` as a tuple of 3 or 4 ints, (C, H, W) or (N, C, H, W), with non-zero H and W."""
    if not isinstance(input_shape, (tuple, list, np.ndarray)) or np.ndim(input_shape) != 1:
        # A sequence: a set or a dict has no order, a 0-d array no length.
        raise TypeError(f"input_shape must be a tuple of ints, got {_describe(input_shape)}")
    shape = tuple(integer(n, "input_shape", minimum=0) for n in input_shape)
    if len(shape) not in (3, 4):
        raise ValueError(f"input_shape must be (N, C, H, W) or (C, H, W), got {shape}")
    if shape[-1] == 0 or shape[-2] == 0:
        raise ValueError(f"input_shape must have non-zero height and width, got {shape}")
    return shape


def pool_grad_output(grad_output, input_shape):
    """Checked (grad_output as 4-D array, input_shape as a 4-tuple, unbatched flag)."""
    grad_output = float_array(grad_output, "grad_output")
    if grad_output.ndim not in (3, 4):
        raise ValueError(f"grad_output must be 3-D (C, Ho, Wo) or 4-D (N, C, Ho, Wo), "
                         f"got shape {grad_output.shape}")
    shape = input_shape_of(input_shape)
    if len(shape) != grad_output.ndim:
        raise ValueError(f"input_shape {shape} and grad_output (shape {grad_output.shape}) must have "
                         f"the same number of dimensions")
    if grad_output.shape[:-2] != shape[:-2]:
        raise ValueError(f"grad_output has shape {grad_output.shape} but input_shape is {shape}: "
                         f"the leading (N, C) must match")
    unbatched = grad_output.ndim == 3
    if unbatched:
        grad_output, shape = grad_output[None], (1,) + shape
    return grad_output, shape, unbatched


def index_array(indices, expected_shape):
    """`indices` as a C-contiguous int64 array of exactly `expected_shape` (values unchecked)."""
    if not isinstance(indices, np.ndarray):
        if isinstance(indices, (str, bytes)) or indices is None:
            raise TypeError(f"indices must be an integer array, got {_describe(indices)}")
        indices = np.asarray(indices)
    if indices.dtype == np.bool_ or not np.issubdtype(indices.dtype, np.integer):
        raise TypeError(f"indices must have an integer dtype (as returned with return_indices=True), "
                        f"got {indices.dtype}")
    if indices.shape != tuple(expected_shape):
        raise ValueError(f"indices must have the shape of grad_output {tuple(expected_shape)}, "
                         f"got {indices.shape}")
    return np.ascontiguousarray(indices, dtype=np.int64)


def divisor_of(divisor_override):
    if divisor_override is None:
        return 0
    # The kernels take it as a C long long.
    d = integer(divisor_override, "divisor_override", minimum=-2**63, maximum=2**63 - 1)
    if d == 0:
        raise ValueError("divisor_override must be a non-zero int, got 0")
    return d
