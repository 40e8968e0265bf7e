"""The `direct` convolution algorithm: conv2d and its gradients with no column matrix.

Called by `fastconv.convolution` with checked, C-contiguous arrays and a
normalised geometry. Scratch memory is one small buffer per thread (a few
zero-padded input rows, capped near ROW_BUDGET values), never anything that
grows with the output or with C*kh*kw times the output.
"""
import importlib

import numpy as np

from fastconv import _validation as v
from fastconv._kernels import conv_direct as baseline_kernel


def _best_kernel():
    """The AVX + FMA build when this CPU runs it (measured: C4 forward 2.4x faster
    than the SSE2 baseline), else the portable baseline."""
    if baseline_kernel.cpu_has_avx_fma():
        try:
            avx = importlib.import_module("fastconv._kernels.conv_direct_avx")
        except ImportError:
            return baseline_kernel
        if avx.compiled_for_avx_fma():
            return avx
    return baseline_kernel


#: The compiled module in use (tests swap it to cover both builds).
kernel = _best_kernel()

#: Values of packed input rows one thread keeps (64 KiB of float32): L1/L2-sized.
ROW_BUDGET = 16384


def _channel_chunk(channels, per_channel):
    """How many channels' packed rows fit in ROW_BUDGET (at least one)."""
    return max(1, min(channels, ROW_BUDGET // max(1, per_channel)))


def forward(x, weight, bias, g, groups, num_threads):
    """(N, K, Ho, Wo) = conv2d(x, weight) + bias."""
    N, K = x.shape[0], weight.shape[0]
    Cg, kh, kw = weight.shape[1:]
    v.allocatable((N, K, g.out_h, g.out_w), x.dtype, "output")
    out = np.empty((N, K, g.out_h, g.out_w), dtype=x.dtype)
    if bias is None:
        bias = np.zeros(K, dtype=x.dtype)
    row_len = kernel.forward_row_len(g.stride_w, g.out_w, kw, g.dilation_w)
    chunk = _channel_chunk(Cg, kh * row_len)
    workspace = np.empty((num_threads, chunk * kh * row_len), dtype=x.dtype)
    kernel.conv2d_forward(x, weight, bias, out, groups, g.stride_h, g.stride_w, g.pad_top, g.pad_left,
                          g.dilation_h, g.dilation_w, workspace, chunk, num_threads)
    return out


def backward(grad_output, x, weight, g, groups, num_threads):
    """(grad_x, grad_weight, grad_bias) of conv2d."""
    kh, kw = weight.shape[2:]
    Cg = weight.shape[1]
    grad_x = np.empty_like(x)
    row_len = kernel.grad_x_row_len(g.stride_w, g.out_w, kw, g.dilation_w, x.shape[3], g.pad_left)
    chunk = _channel_chunk(Cg, row_len)
    workspace = np.empty((num_threads, chunk * row_len), dtype=x.dtype)
    kernel.conv2d_grad_x(grad_output, weight, grad_x, groups, g.stride_h, g.stride_w, g.pad_top, g.pad_left,
                         g.dilation_h, g.dilation_w, workspace, chunk, num_threads)
    grad_w = np.empty_like(weight)
    row_len = kernel.forward_row_len(g.stride_w, g.out_w, kw, g.dilation_w)
    size = kernel.grad_weight_workspace(kh, kw, row_len, x.dtype == np.float64)
    workspace = np.empty((num_threads, size), dtype=x.dtype)
    kernel.conv2d_grad_weight(grad_output, x, grad_w, groups, g.stride_h, g.stride_w, g.pad_top, g.pad_left,
                              g.dilation_h, g.dilation_w, workspace, num_threads)
    grad_b = grad_output.sum(axis=(0, 2, 3))
    return grad_x, grad_w, grad_b
