"""2-D transposed convolution, forward and backward.

``conv_transpose2d(x, w)`` is the gradient of ``conv2d(y, w)`` with respect to
its input ``y``, so it runs on conv2d's grad_x with no grad_weight computed, by the
algorithm "auto" measures fastest for it (fastconv.convolution._input_gradient:
im2col's GEMMs and col2im, direct's tiles over the stride phases, winograd at 3x3
stride 1); its backward runs conv2d's forward (grad_x) and conv2d's weight
gradient with the roles of input and output swapped.

Where output_padding reaches a whole stride, that conv2d's output grid has a row
(or column) more than x: x is zero-extended (`_extend`). The extension's zeros
form products that the transposed convolution does not, NaN with an inf or NaN
weight (forward) or output gradient (weight gradient), so such calls run the
scatter form of fastconv.reference instead: both factors are needed to be
non-finite and the geometry needs a dilation above the stride.
"""
import numpy as np

from fastconv import _validation as v
from fastconv import _winograd, reference
from fastconv._threads import num_threads_for_macs
from fastconv.convolution import ALL_ALGORITHMS, _input_gradient, _weight_gradient, conv2d


def _args(x, weight, bias, stride, padding, output_padding, groups, dilation):
    """Checked (x, weight, bias, groups, out_shape, g): `g` is the geometry of the
    conv2d that maps the (N, K, Ho, Wo) output onto x's (H', W') >= (H, W) grid (one
    row or column more where output_padding reaches a whole stride)."""
    x = v.float_array(x, "x", ndim=4)
    weight = v.float_array(weight, "weight", ndim=4, dtype=x.dtype)
    N, C, H, W = x.shape
    Cw, Kg, kh, kw = weight.shape
    if Cw != C:
        raise ValueError(f"weight must have shape (C, K // groups, kh, kw) with C={C} (x's channels), "
                         f"got {weight.shape}")
    if Kg == 0 or kh == 0 or kw == 0:
        raise ValueError(f"weight must have non-zero K // groups, kh and kw, got shape {weight.shape}")
    groups = v.groups_of(groups, C, C)
    if C == 0 and groups != 1:     # every groups divides 0, and K = K // groups * groups grows with it
        raise ValueError(f"groups must be 1 when x has no channels (C=0), got {groups}")
    K = Kg * groups
    if bias is not None:
        bias = v.float_array(bias, "bias", ndim=1, dtype=x.dtype)
        if bias.shape[0] != K:
            raise ValueError(f"bias must have shape ({K},), got {bias.shape}")
    if H == 0 or W == 0:
        raise ValueError(f"x must have non-zero height and width, got shape {x.shape}")
    if isinstance(padding, str):
        raise TypeError(f"padding must be an int or a pair of ints for conv_transpose2d, got {padding!r}")
    stride = v.pair(stride, "stride", minimum=1)
    dilation = v.pair(dilation, "dilation", minimum=1)
    pad = v.pair(padding, "padding", minimum=0)
    out_pad = v.pair(output_padding, "output_padding", minimum=0)
    for axis in range(2):
        if out_pad[axis] >= stride[axis] and out_pad[axis] >= dilation[axis]:
            raise ValueError(f"output_padding {out_pad} must be smaller than either stride {stride} or "
                             f"dilation {dilation} (torch's rule)")
    out_hw = tuple((n - 1) * s - 2 * p + d * (k - 1) + op + 1
                   for n, s, p, d, k, op in zip((H, W), stride, pad, dilation, (kh, kw), out_pad))
    if min(out_hw) < 1:
        raise ValueError(f"stride {stride}, padding {pad}, dilation {dilation} and output_padding {out_pad} "
                         f"give an output size {out_hw} below 1 for x of shape {x.shape}")
    g = v.conv_geometry(out_hw, (kh, kw), stride, pad, dilation, "weight kernel_size")
    return x, weight, bias, groups, (N, K) + out_hw, g


def _extend(a, g):
    """`a` (N, C, H, W) zero-extended to the geometry's (out_h, out_w) >= (H, W)."""
    if a.shape[2:] == (g.out_h, g.out_w):
        return a
    out = np.zeros(a.shape[:2] + (g.out_h, g.out_w), dtype=a.dtype)
    out[:, :, :a.shape[2], :a.shape[3]] = a
    return out


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                     algorithm="auto"):
    """2-D transposed convolution, as ``torch.nn.functional.conv_transpose2d`` (NCHW).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64
    weight : ndarray, shape (C, K // groups, kh, kw), same dtype as `x`
    bias : ndarray, shape (K,), optional
    stride, padding, dilation : int or pair of ints
        Those of the conv2d whose input gradient this is.
    output_padding : int or pair of ints
        Rows/columns added at the bottom/right of the output; smaller than
        either the stride or the dilation along each axis.
    groups : int
    algorithm : {"auto", "im2col", "direct", "winograd"}
        How conv2d's input gradient is computed: ``"im2col"``, one BLAS GEMM per
        band of x's rows, summed into the output by col2im (x planes of at most 16
        pixels: one GEMM per kernel tap over the whole batch); ``"direct"``, the
        forward's register tiles over the output's stride phases; ``"winograd"``
        (3x3 kernels, stride 1, dilation 1 only), within ``fastconv._winograd.RTOL``
        of the largest output; ``"auto"``: the one measured fastest on this CPU for
        the call's shape class (as `fastconv.conv2d`'s).

    Returns
    -------
    out : ndarray, shape (N, K, Ho, Wo), dtype of `x`
        ``Ho = (H - 1) * stride - 2 * padding + dilation * (kh - 1) + output_padding + 1``,
        likewise ``Wo``.
    """
    x, weight, bias, groups, out_shape, g = _args(x, weight, bias, stride, padding, output_padding,
                                                  groups, dilation)
    v.choice(algorithm, "algorithm", ALL_ALGORITHMS)
    if algorithm == "winograd":
        _winograd.check_geometry(g)
    v.allocatable(out_shape, x.dtype, "output")
    gy = _extend(x, g)
    if gy is not x and not np.isfinite(weight).all():
        return reference.conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups, dilation)
    if gy.size and weight.size:
        out = _input_gradient(gy, weight, out_shape, g, groups, num_threads_for_macs(gy.size * weight[0].size),
                              algorithm)
    else:
        out = np.zeros(out_shape, dtype=x.dtype)
    if bias is not None:
        out += bias[:, None, None]
    return out


def conv_transpose2d_backward(grad_output, x, weight, stride=1, padding=0, output_padding=0, groups=1,
                              dilation=1):
    """Gradients of `conv_transpose2d` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_output : ndarray, shape (N, K, Ho, Wo)
        Gradient of the loss with respect to ``conv_transpose2d(x, weight, ...)``.
    x, weight, stride, padding, output_padding, groups, dilation : as in `conv_transpose2d`

    Returns
    -------
    grad_x : ndarray, shape (N, C, H, W)
    grad_weight : ndarray, shape (C, K // groups, kh, kw)
    grad_bias : ndarray, shape (K,)
    """
    x, weight, _, groups, out_shape, g = _args(x, weight, None, stride, padding, output_padding,
                                               groups, dilation)
    grad_output = v.grad_output_array(grad_output, out_shape, x.dtype)
    if x.shape[1] == 0:     # no input channels: the forward was its bias alone
        return np.zeros(x.shape, x.dtype), np.zeros_like(weight), grad_output.sum(axis=(0, 2, 3))
    H, W = x.shape[2:]
    pad = (g.pad_top, g.pad_left)
    dil = (g.dilation_h, g.dilation_w)
    strides = (g.stride_h, g.stride_w)
    grad_x = conv2d(grad_output, weight, None, strides, pad, dil, groups)
    grad_x = np.ascontiguousarray(grad_x[:, :, :H, :W])
    # conv2d's weight gradient with x's gradient role and grad_output's input role (not
    # conv2d_backward, which would also form an input gradient that nobody reads)
    gy = _extend(x, g)
    if gy is not x and not np.isfinite(grad_output).all():
        grad_w = reference._conv_transpose2d_grad_weight(grad_output, x, weight, g, groups)
    elif gy.size and grad_output.size:
        grad_w = _weight_gradient(gy, grad_output, weight, g, groups,
                                  num_threads_for_macs(gy.size * weight[0].size))
    else:
        grad_w = np.zeros_like(weight)
    return grad_x, grad_w, grad_output.sum(axis=(0, 2, 3))
