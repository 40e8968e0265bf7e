"""1-D convolution (cross-correlation) over NCL arrays, as ``torch.nn.functional.conv1d``.

An (N, C, L) signal is an (N, C, 1, L) image: both ops run the 2-D code on that
view (no copy), after checking the 1-D arguments with 1-D messages.
"""
import numpy as np

from fastconv import _validation as v
from fastconv.convolution import ALGORITHMS, conv2d, conv2d_backward


def _length_arg(value, name, minimum):
    """An int, or a 1-element tuple/list/array of one (as torch accepts; arrays as
    conv2d accepts them), at most MAX_SIZE.

    The bound is checked here, not left to conv2d: conv1d_backward checks
    grad_output's shape against these first, which would blame grad_output.
    """
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (tuple, list, np.ndarray)):
        if len(value) != 1:
            raise ValueError(f"{name} must be an int or a 1-element sequence, got {value!r}")
        value = value[0]
    return v.integer(value, name, minimum=minimum, maximum=v.MAX_SIZE)


def _conv1d_args(x, weight, bias, stride, padding, dilation, groups, algorithm):
    """Checked 2-D views and arguments for conv2d / conv2d_backward."""
    x = v.float_array(x, "x", ndim=3)
    weight = v.float_array(weight, "weight", ndim=3, dtype=x.dtype)
    stride = _length_arg(stride, "stride", 1)
    dilation = _length_arg(dilation, "dilation", 1)
    if isinstance(padding, str):
        v.choice(padding, "padding", ("valid", "same"))
        if padding == "same" and stride != 1:
            raise ValueError(f"padding='same' needs stride=1, got stride={stride}")
        pad2d = padding
        span_pad = dilation * (weight.shape[2] - 1) if padding == "same" else 0
    else:
        pad = _length_arg(padding, "padding", 0)
        pad2d = (0, pad)
        span_pad = 2 * pad
    v.choice(algorithm, "algorithm", ALGORITHMS)
    if x.shape[2] == 0:
        raise ValueError(f"x must have a non-zero length, got shape {x.shape}")
    if weight.shape[0] == 0 or weight.shape[2] == 0:
        raise ValueError(f"weight must have non-zero K and kernel length, got shape {weight.shape}")
    span = dilation * (weight.shape[2] - 1) + 1
    if span > x.shape[2] + span_pad:
        raise ValueError(
            f"weight kernel length {weight.shape[2]} (dilation {dilation}, span {span}) is longer than "
            f"the padded input length {x.shape[2] + span_pad} (x length {x.shape[2]})")
    if bias is not None:
        bias = v.float_array(bias, "bias", ndim=1, dtype=x.dtype)
    out_length = (x.shape[2] + span_pad - span) // stride + 1
    # Channel/group/bias consistency is checked by conv2d, whose messages name the same arguments.
    return x[:, :, None, :], weight[:, :, None, :], bias, (1, stride), pad2d, (1, dilation), out_length


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algorithm="auto"):
    """1-D cross-correlation, as ``torch.nn.functional.conv1d`` (NCL).

    Like `conv2d` this is cross-correlation (the kernel is not flipped); for
    the flipped, mathematical convolution of two signals use `fastconv.convolve`.

    Parameters
    ----------
    x : ndarray, shape (N, C, L), float32 or float64
    weight : ndarray, shape (K, C // groups, k), same dtype as `x`
    bias : ndarray, shape (K,), optional
    stride, dilation : int (or a 1-element tuple)
    padding : int (or a 1-element tuple), ``"valid"`` or ``"same"`` (stride 1 only)
    groups : int
    algorithm : {"auto", "im2col", "direct"}
        As in `conv2d`.

    Returns
    -------
    out : ndarray, shape (N, K, Lo), dtype of `x`
        ``Lo = (L + 2*padding - dilation*(k - 1) - 1) // stride + 1``.
    """
    x4, w4, bias, stride, padding, dilation, _ = _conv1d_args(x, weight, bias, stride, padding, dilation,
                                                              groups, algorithm)
    out = conv2d(x4, w4, bias, stride, padding, dilation, groups, algorithm=algorithm)
    return out.reshape(out.shape[0], out.shape[1], out.shape[3])


def conv1d_backward(grad_output, x, weight, stride=1, padding=0, dilation=1, groups=1, *, algorithm="auto"):
    """Gradients of `conv1d` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_output : ndarray, shape (N, K, Lo)
        Gradient of the loss with respect to ``conv1d(x, weight, ...)``.
    x, weight, stride, padding, dilation, groups, algorithm : as in `conv1d`

    Returns
    -------
    grad_x : ndarray, shape (N, C, L)
    grad_weight : ndarray, shape (K, C // groups, k)
    grad_bias : ndarray, shape (K,)
    """
    x4, w4, _, stride, padding, dilation, out_length = _conv1d_args(x, weight, None, stride, padding, dilation,
                                                                    groups, algorithm)
    grad_output = v.grad_output_array(grad_output, (x4.shape[0], w4.shape[0], out_length), x4.dtype)
    grad_x, grad_w, grad_b = conv2d_backward(grad_output[:, :, None, :], x4, w4, stride, padding, dilation,
                                             groups, algorithm=algorithm)
    return grad_x[:, :, 0, :], grad_w[:, :, 0, :], grad_b
