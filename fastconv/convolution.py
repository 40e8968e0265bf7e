"""2-D convolution (cross-correlation) forward and backward.

`im2col` algorithm: for a band of images (or of output rows, for one very large
image) the im2col kernel writes the column matrix into a bounded workspace and
one batched BLAS GEMM per band turns it into output. OpenMP (im2col/col2im) and
BLAS (the GEMMs) take turns on the same `num_threads` cores, never at once.
"""
import numpy as np

from fastconv import _direct
from fastconv import _validation as v
from fastconv._kernels import im2col as _columns
from fastconv._threads import blas, get_num_threads

#: Upper bound on the column workspace of one call, whatever the batch size.
WORKSPACE_BYTES = 64 << 20

ALGORITHMS = ("auto", "im2col", "direct")


def _choose_algorithm(x_shape, weight_shape, geometry, groups, backward=False):
    """The algorithm `"auto"` runs: "im2col" or "direct".

    Measured on the project machine (2 shared cores, AVX+FMA direct build,
    interleaved medians of 7; float32 from `python -m fastconv bench --sections
    direct`, float64 by the same calls), direct time / im2col time, C1-C5 as in
    bench.CONV_CASES, DW = depthwise 3x3 (8, 64, 56, 56), groups=64:

                 C1    C2    C3    C4    C5    DW
        fwd f32  0.94  0.19  0.72  0.23  0.66  0.27
        fwd f64  0.52  0.34  0.80  0.40  0.95  0.31
        bwd f32  1.56  0.33  0.82  0.72  1.53  0.36
        bwd f64  1.08  0.30  1.05  0.63  2.18  0.34

    Forward: direct wins everywhere, so it is always direct. Backward: a 1x1
    kernel's gradients are two plain GEMMs (im2col needs no columns there),
    and with few multiply-adds per output (C/groups*kh*kw < 64, as C1's 27) the
    direct weight gradient spends as long packing input rows as summing them;
    elsewhere direct (C3 float64, 1.05, is the closest call).
    """
    K, Cg, kh, kw = weight_shape
    if not backward:
        return "direct"
    if groups == 1 and (kh * kw == 1 or Cg * kh * kw < 64):
        return "im2col"
    return "direct"


def _bands(N, col_rows, out_h, out_w, itemsize):
    """Yield (n0, n1, r0, r1): image ranges, or output-row ranges of one image,
    whose column matrix fits in WORKSPACE_BYTES."""
    per_row = max(1, col_rows * out_w * itemsize)
    per_image = per_row * out_h
    if per_image <= WORKSPACE_BYTES:
        step = max(1, WORKSPACE_BYTES // per_image)
        for n0 in range(0, N, step):
            yield n0, min(N, n0 + step), 0, out_h
    else:
        step = max(1, WORKSPACE_BYTES // per_row)
        for n in range(N):
            for r0 in range(0, out_h, step):
                yield n, n + 1, r0, min(out_h, r0 + step)


def _workspace(N, col_rows, g, dtype):
    """One buffer large enough for the biggest band."""
    itemsize = np.dtype(dtype).itemsize
    largest = max(((n1 - n0) * (r1 - r0) for n0, n1, r0, r1 in _bands(N, col_rows, g.out_h, g.out_w, itemsize)),
                  default=0)
    return np.empty(largest * col_rows * g.out_w, dtype=dtype)


def _im2col_band(x, cols, g, n0, n1, r0, num_threads):
    _columns.im2col(x[n0:n1], cols, g.kernel_h, g.kernel_w, g.stride_h, g.stride_w,
                    g.pad_top, g.pad_left, g.dilation_h, g.dilation_w, r0, g.out_w, num_threads)


def _col2im_band(cols, grad_x, g, n0, n1, r0, num_threads):
    _columns.col2im_add(cols, grad_x[n0:n1], g.kernel_h, g.kernel_w, g.stride_h, g.stride_w,
                        g.pad_top, g.pad_left, g.dilation_h, g.dilation_w, r0, g.out_w, num_threads)


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
    algorithm : {"auto", "im2col", "direct"}
        ``"im2col"``: a bounded column buffer and one BLAS GEMM per band of
        images; ``"direct"``: sums straight from the input, no workspace that
        grows with the output; ``"auto"``: picked from the shapes
        (`_choose_algorithm`).

    Returns
    -------
    out : ndarray, shape (N, K, Ho, Wo), dtype of `x`
    """
    x, weight, bias, g, groups = v.conv2d_args(x, weight, bias, stride, padding, dilation, groups)
    v.choice(algorithm, "algorithm", ALGORITHMS)
    if algorithm == "auto":
        algorithm = _choose_algorithm(x.shape, weight.shape, g, groups)
    if algorithm == "direct":
        return _direct.forward(x, weight, bias, g, groups, get_num_threads())
    N, K = x.shape[0], weight.shape[0]
    L = g.out_h * g.out_w
    w = weight.reshape(groups, K // groups, -1)
    col_rows = x.shape[1] * g.kernel_h * g.kernel_w
    out = np.empty((N, K, g.out_h, g.out_w), dtype=x.dtype)
    if N and K:
        num_threads = get_num_threads()
        blas.set_num_threads(num_threads)
        workspace = _workspace(N, col_rows, g, x.dtype)
        for n0, n1, r0, r1 in _bands(N, col_rows, g.out_h, g.out_w, x.dtype.itemsize):
            nb, band = n1 - n0, (r1 - r0) * g.out_w
            cols = workspace[: nb * col_rows * band].reshape(nb, col_rows, band)
            _im2col_band(x, cols, g, n0, n1, r0, num_threads)
            cols = cols.reshape(nb, groups, col_rows // groups, band)
            if band == L:
                np.matmul(w, cols, out=out[n0:n1].reshape(nb, groups, K // groups, L))
            else:
                out[n0:n1, :, r0:r1] = np.matmul(w, cols).reshape(nb, K, r1 - r0, g.out_w)
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

    Returns
    -------
    grad_x : ndarray, shape (N, C, H, W)
    grad_weight : ndarray, shape (K, C // groups, kh, kw)
    grad_bias : ndarray, shape (K,)
    """
    x, weight, _, g, groups = v.conv2d_args(x, weight, None, stride, padding, dilation, groups)
    v.choice(algorithm, "algorithm", ALGORITHMS)
    N, K = x.shape[0], weight.shape[0]
    grad_output = v.grad_output_array(grad_output, (N, K, g.out_h, g.out_w), x.dtype)
    if algorithm == "auto":
        algorithm = _choose_algorithm(x.shape, weight.shape, g, groups, backward=True)
    if algorithm == "direct":
        return _direct.backward(grad_output, x, weight, g, groups, get_num_threads())
    L = g.out_h * g.out_w
    Kg = K // groups
    col_rows = x.shape[1] * g.kernel_h * g.kernel_w
    w_t = weight.reshape(groups, Kg, -1).transpose(0, 2, 1)
    grad_x = np.zeros_like(x)
    grad_w = np.zeros((groups, Kg, col_rows // groups), dtype=x.dtype)
    grad_b = grad_output.sum(axis=(0, 2, 3))
    if N and K:
        num_threads = get_num_threads()
        blas.set_num_threads(num_threads)
        workspace = _workspace(N, col_rows, g, x.dtype)
        for n0, n1, r0, r1 in _bands(N, col_rows, g.out_h, g.out_w, x.dtype.itemsize):
            nb, band = n1 - n0, (r1 - r0) * g.out_w
            cols = workspace[: nb * col_rows * band].reshape(nb, col_rows, band)
            _im2col_band(x, cols, g, n0, n1, r0, num_threads)
            cols = cols.reshape(nb, groups, col_rows // groups, band)
            go = grad_output[n0:n1] if band == L else np.ascontiguousarray(grad_output[n0:n1, :, r0:r1])
            go = go.reshape(nb, groups, Kg, band)
            grad_w += np.matmul(go, cols.transpose(0, 1, 3, 2)).sum(axis=0)
            np.matmul(w_t, go, out=cols)  # the columns are spent: reuse them for d(cols)
            _col2im_band(cols.reshape(nb, col_rows, band), grad_x, g, n0, n1, r0, num_threads)
    return grad_x, grad_w.reshape(weight.shape), grad_b
