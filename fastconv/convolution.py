"""2-D convolution (cross-correlation) forward and backward.

Argument checking and one dispatch over the algorithm modules, which share one call
shape (`forward`, `backward`): `im2col` in fastconv._im2col, `direct` in
fastconv._direct, `winograd` in fastconv._winograd. `_choose_algorithm` is
`"auto"`: the algorithm measured fastest on this CPU (fastconv._autotune).
"""

import numpy as np

from fastconv import _autotune, _direct, _im2col, _winograd
from fastconv import _validation as v
from fastconv._threads import num_threads_for_macs

#: The algorithms that run every geometry; ALL_ALGORITHMS adds those restricted to some.
ALGORITHMS = ("auto", "im2col", "direct")
ALL_ALGORITHMS = ALGORITHMS + ("winograd",)


def _choose_algorithm(x_shape, weight_shape, geometry, groups, dtype, pass_="forward"):
    """The algorithm `"auto"` runs: the one measured fastest on this CPU for the call's
    shape class, or without calibration a fixed rule (fastconv._autotune). `pass_`
    "eval": for the layers' eval forwards, which keep their prepared weights; "grad_x"
    and "grad_weight": each gradient of the backward (`_auto_backward`)."""
    return _autotune.choose(pass_, x_shape, weight_shape, geometry, groups, dtype)


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
    work = x.shape[0] * weight.shape[0] * g.out_h * g.out_w * weight[0].size
    return _MODULES[algorithm].forward(x, weight, bias, g, groups, num_threads_for_macs(work))


def _conv2d_eval(x, weight, bias, stride, padding, dilation, groups, relu, cache):
    """`conv2d` (auto) for the layers' eval forwards: with `relu`, max(out, 0) fused into
    the kernels' store (direct, winograd; im2col applies it after its GEMMs), and what the
    chosen algorithm derives from the weights alone (winograd's transformed weights,
    direct's channel-tile packing) kept in the layer's dict `cache` while `weight` is the
    same array with the same values (a strided sample is compared: callers that write
    weights in place clear the cache, as `Layer.clear_eval_cache` does)."""
    x, weight, bias, g, groups = v.conv2d_args(x, weight, bias, stride, padding, dilation, groups)
    algorithm = _choose_algorithm(x.shape, weight.shape, g, groups, x.dtype, pass_="eval")
    work = x.shape[0] * weight.shape[0] * g.out_h * g.out_w * weight[0].size
    num_threads = num_threads_for_macs(work)
    if algorithm == "im2col":
        out = _im2col.forward(x, weight, bias, g, groups, num_threads)
        return np.maximum(out, 0, out=out) if relu else out
    sample = _sample(weight)
    key = (algorithm, g)
    entry = cache.get(key)
    if entry is None or entry[0] is not weight or not np.array_equal(entry[1], sample):
        cache.clear()          # one entry: the weights of one geometry (no growth across input sizes)
        prepared = (_direct.prepare(weight, g, groups) if algorithm == "direct"
                    else _winograd.prepare(weight, groups, num_threads))
        entry = cache[key] = (weight, sample, prepared)
    if algorithm == "direct":
        return _direct.forward(x, weight, bias, g, groups, num_threads, relu=relu, packed=entry[2])
    return _winograd.forward(x, weight, bias, g, groups, num_threads, relu=relu, prepared=entry[2])


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
        grad_x, grad_w = _auto_backward(grad_output, x, weight, g, groups)
    else:
        work = 2 * grad_output.size * weight[0].size
        grad_x, grad_w = _MODULES[algorithm].backward(grad_output, x, weight, g, groups, num_threads_for_macs(work))
    return grad_x, grad_w, grad_bias(grad_output)


def _auto_backward(grad_output, x, weight, g, groups, taps=None):
    """(grad_x, grad_weight) under "auto": each by the algorithm measured fastest for it
    alone (`_input_gradient`, `_weight_gradient`), and run alone: winograd has no
    weight gradient, and no algorithm's backward ran both faster than its two gradients
    did apart (ResNet-18's (32, 128, 8, 8) to 256 channels at stride 2: grad_x by im2col
    and grad_weight by direct 4.7 ms, direct's backward 5.6). `taps`: im2col's re-laid
    weights, where the layer's forward kept them."""
    num_threads = num_threads_for_macs(grad_output.size * weight[0].size)
    return (_input_gradient(grad_output, weight, x.shape, g, groups, num_threads, taps=taps),
            _weight_gradient(grad_output, x, weight, g, groups, num_threads))


def grad_bias(grad_output):
    """(K,) sums of an (N, K, H, W) gradient over all but its channel axis: the batch
    first (whole rows of K*H*W), then each channel's plane. NumPy's own
    ``sum(axis=(0, 2, 3))`` walks planes of a few pixels one at a time (ResNet's 2x2
    maps at batch 32: 0.26 ms against 0.02)."""
    N, K = grad_output.shape[:2]
    if N == 0:
        return np.zeros(K, dtype=grad_output.dtype)
    return grad_output.sum(axis=0).reshape(K, -1).sum(axis=1)


def _conv2d_train(x, weight, bias, stride, padding, dilation, groups, saved):
    """`conv2d` (auto) for the layers' training forwards. What the backward can reuse of
    the weights (im2col's taps, `fastconv._im2col.taps_weight`) is kept in the layer's
    dict `saved`, with the weights it came from, for `_conv2d_train_backward`."""
    x, weight, bias, g, groups = v.conv2d_args(x, weight, bias, stride, padding, dilation, groups)
    saved.clear()
    algorithm = _choose_algorithm(x.shape, weight.shape, g, groups, x.dtype)
    work = x.shape[0] * weight.shape[0] * g.out_h * g.out_w * weight[0].size
    num_threads = num_threads_for_macs(work)
    if algorithm == "im2col" and _im2col.by_taps(g, groups, x.shape) and x.size and weight.size:
        taps = _im2col.taps_weight(weight, num_threads)
        saved["taps"] = (weight, _sample(weight), taps)
        return _im2col.forward(x, weight, bias, g, groups, num_threads, taps=taps)
    return _MODULES[algorithm].forward(x, weight, bias, g, groups, num_threads)


def _sample(weight):
    """A strided sample of the weights: kept beside what is derived from them, compared
    before it is reused (callers that write the weights in place between the forward and
    the backward, or between eval calls, get it derived again)."""
    return weight.reshape(-1)[:: max(1, weight.size // 64)].copy()


def _saved_taps(saved, weight):
    entry = saved.get("taps")
    if entry is None or entry[0] is not weight or not np.array_equal(entry[1], _sample(weight)):
        return None
    return entry[2]


def _conv2d_train_backward(grad_output, x, weight, stride, padding, dilation, groups, saved, input_grad=True,
                           bias_grad=True):
    """(grad_x, grad_weight, grad_bias) of `conv2d`, as `conv2d_backward` (auto) gives
    them, for the layers' backward: grad_x None without `input_grad` (a network's first
    layer: nothing reads its input's gradient), grad_bias None without `bias_grad` (a
    layer without bias), and what `_conv2d_train` kept in `saved` reused where the
    weights are still the ones it came from."""
    x, weight, _, g, groups = v.conv2d_args(x, weight, None, stride, padding, dilation, groups)
    N, K = x.shape[0], weight.shape[0]
    grad_output = v.grad_output_array(grad_output, (N, K, g.out_h, g.out_w), x.dtype)
    gb = grad_bias(grad_output) if bias_grad else None
    if not input_grad:
        num_threads = num_threads_for_macs(grad_output.size * weight[0].size)
        return None, _weight_gradient(grad_output, x, weight, g, groups, num_threads), gb
    grad_x, grad_w = _auto_backward(grad_output, x, weight, g, groups, taps=_saved_taps(saved, weight))
    return grad_x, grad_w, gb


def _weight_gradient(grad_output, x, weight, g, groups, num_threads):
    """grad_weight by im2col or direct, whichever "auto" measures faster for it (also
    Winograd's backward's, which has no weight gradient of its own; fastconv._autotune)."""
    algorithm = _choose_algorithm(x.shape, weight.shape, g, groups, x.dtype, "grad_weight")
    return _MODULES[algorithm].grad_weight(grad_output, x, weight, g, groups, num_threads)


def _input_gradient(grad_output, weight, x_shape, g, groups, num_threads, algorithm="auto", taps=None):
    """grad_x alone (conv_transpose2d's forward) by `algorithm`; "auto": the one measured
    fastest for it (fastconv._autotune's "grad_x" pass): im2col's GEMMs and col2im,
    direct's tiles (over the stride phases) or, for 3x3 at stride 1, winograd's.
    `taps`: im2col's re-laid weights, where a layer kept them."""
    if algorithm == "auto":
        algorithm = _choose_algorithm(x_shape, weight.shape, g, groups, grad_output.dtype, "grad_x")
    if algorithm == "im2col":
        return _im2col.grad_x(grad_output, weight, x_shape, g, groups, num_threads, taps)
    return _MODULES[algorithm].grad_x(grad_output, weight, x_shape, g, groups, num_threads)


#: The module of each algorithm: forward(x, weight, bias, g, groups, num_threads),
#: backward(grad_output, x, weight, g, groups, num_threads) -> (grad_x, grad_weight),
#: grad_x(grad_output, weight, x_shape, g, groups, num_threads) and
#: grad_weight(grad_output, x, weight, g, groups, num_threads) (not winograd).
_MODULES = {"im2col": _im2col, "direct": _direct, "winograd": _winograd}
