"""Drop-in for the classic CS231n course modules ``fast_layers`` and
``im2col_cython`` (and the conv sandwiches of ``layer_utils``).

The course's Cython extension no longer builds with Cython 3 (``/`` became true
division). Switch by replacing the imports::

    from fastconv.compat.cs231n import *

Same function names, arguments, return values and cache round trip; every
cache a forward function returns is accepted by the matching backward. Shapes:
``x`` (N, C, H, W), ``w`` (F, C, HH, WW), ``b`` (F,);
``conv_param = {"stride": s, "pad": p}`` (zero padding ``p`` on every side);
``pool_param = {"pool_height": ph, "pool_width": pw, "stride": s}``. Output
sizes are ``1 + (H + 2*pad - HH) // stride`` (and ``1 + (H - ph) // stride``).

Differences from the originals, all where the originals fail:

- windows that do not tile the input, non-square pooling windows, overlapping
  pooling (3x3 stride 2) and non-square filters simply work (the originals
  assert, or, for non-square fields in ``im2col_cython``, scramble rows);
- everything is computed in the dtype of ``x`` (float32 or float64; other
  input is converted to float64) and returned in it, weights included: float64
  weights with float32 images give float32 results and gradients;
- the conv caches do not keep the column matrix (the backward rebuilds it in
  bounded chunks): ``cache = (x, w, b, conv_param, None)``;
- max pooling routes each window's gradient to its first maximum (as the
  course's im2col path and torch do) also where the course's reshape path
  would split it between tied maxima.
"""
import numpy as np

import fastconv

__all__ = [
    "conv_forward_fast", "conv_backward_fast",
    "conv_forward_im2col", "conv_backward_im2col",
    "conv_forward_strides", "conv_backward_strides",
    "max_pool_forward_fast", "max_pool_backward_fast",
    "max_pool_forward_reshape", "max_pool_backward_reshape",
    "max_pool_forward_im2col", "max_pool_backward_im2col",
    "conv_relu_forward", "conv_relu_backward",
    "conv_relu_pool_forward", "conv_relu_pool_backward",
    "im2col_cython", "col2im_cython",
]


def _float(a):
    """`a` as float32/float64 (its own dtype when it is one of those, else float64)."""
    a = np.asarray(a)
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float64)


def _conv_args(conv_param):
    return dict(stride=conv_param["stride"], padding=conv_param["pad"])


def _pool_args(pool_param):
    return (pool_param["pool_height"], pool_param["pool_width"]), pool_param["stride"]


# ---------------------------------------------------------------------------
# Convolution

def conv_forward_fast(x, w, b, conv_param):
    """Convolution forward pass (cross-correlation, as in the course).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    w : ndarray, shape (F, C, HH, WW)
    b : ndarray, shape (F,)
    conv_param : dict with ``"stride"`` and ``"pad"``

    Returns
    -------
    out : ndarray, shape (N, F, H', W'), ``H' = 1 + (H + 2*pad - HH) // stride``
    cache : tuple, for `conv_backward_fast`
    """
    x = _float(x)
    w = np.asarray(w).astype(x.dtype, copy=False)
    b = np.asarray(b).astype(x.dtype, copy=False)
    out = fastconv.conv2d(x, w, b, **_conv_args(conv_param))
    return out, (x, w, b, conv_param, None)


def conv_backward_fast(dout, cache):
    """Convolution backward pass.

    Parameters
    ----------
    dout : ndarray, shape (N, F, H', W')
    cache : the cache of a conv forward function of this module

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dw : ndarray, shape (F, C, HH, WW)
    db : ndarray, shape (F,)
    """
    x, w, _, conv_param, _ = cache
    dout = np.asarray(dout).astype(x.dtype, copy=False)
    return fastconv.conv2d_backward(dout, x, w, **_conv_args(conv_param))


# The course had three implementations of one operation; here they are one.
conv_forward_im2col = conv_forward_strides = conv_forward_fast
conv_backward_im2col = conv_backward_strides = conv_backward_fast


# ---------------------------------------------------------------------------
# Max pooling

def max_pool_forward_fast(x, pool_param):
    """Max pooling forward pass.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    pool_param : dict with ``"pool_height"``, ``"pool_width"`` and ``"stride"``

    Returns
    -------
    out : ndarray, shape (N, C, H', W'), ``H' = 1 + (H - pool_height) // stride``
    cache : tuple, for `max_pool_backward_fast`
    """
    x = _float(x)
    kernel, stride = _pool_args(pool_param)
    out, indices = fastconv.max_pool2d(x, kernel, stride=stride, return_indices=True)
    return out, (x, indices, pool_param)


def max_pool_backward_fast(dout, cache):
    """Max pooling backward pass: each window's gradient goes to its maximum.

    Parameters
    ----------
    dout : ndarray, shape (N, C, H', W')
    cache : the cache of a max pool forward function of this module

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    """
    x, indices, _ = cache
    dout = np.asarray(dout).astype(x.dtype, copy=False)
    return fastconv.max_pool2d_backward(dout, indices, x.shape)


max_pool_forward_reshape = max_pool_forward_im2col = max_pool_forward_fast
max_pool_backward_reshape = max_pool_backward_im2col = max_pool_backward_fast


# ---------------------------------------------------------------------------
# layer_utils sandwiches

def _relu_forward(x):
    return np.maximum(x, 0), x


def _relu_backward(dout, x):
    return np.where(x > 0, dout, dout.dtype.type(0))


def conv_relu_forward(x, w, b, conv_param):
    """Convolution followed by ReLU; returns ``(out, cache)``."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    out, relu_cache = _relu_forward(a)
    return out, (conv_cache, relu_cache)


def conv_relu_backward(dout, cache):
    """Backward of `conv_relu_forward`; returns ``(dx, dw, db)``."""
    conv_cache, relu_cache = cache
    da = _relu_backward(np.asarray(dout).astype(relu_cache.dtype, copy=False), relu_cache)
    return conv_backward_fast(da, conv_cache)


def conv_relu_pool_forward(x, w, b, conv_param, pool_param):
    """Convolution, ReLU, then max pooling; returns ``(out, cache)``."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    s, relu_cache = _relu_forward(a)
    out, pool_cache = max_pool_forward_fast(s, pool_param)
    return out, (conv_cache, relu_cache, pool_cache)


def conv_relu_pool_backward(dout, cache):
    """Backward of `conv_relu_pool_forward`; returns ``(dx, dw, db)``."""
    conv_cache, relu_cache, pool_cache = cache
    ds = max_pool_backward_fast(dout, pool_cache)
    da = _relu_backward(ds, relu_cache)
    return conv_backward_fast(da, conv_cache)


# ---------------------------------------------------------------------------
# im2col_cython

def im2col_cython(x, field_height, field_width, padding, stride):
    """The course's column matrix: one column per (output position, image).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    field_height, field_width, padding, stride : int

    Returns
    -------
    cols : ndarray, shape (C*field_height*field_width, N*Ho*Wo)
        ``cols[(c*field_height + i)*field_width + j, (y*Wo + x)*N + n]`` is the
        zero-padded input at ``(n, c, y*stride + i, x*stride + j)``: the image
        index varies fastest along a row (unlike `fastconv.im2col`, which is
        (N, C*kh*kw, Ho*Wo)).
    """
    x = _float(x)
    cols = fastconv.im2col(x, (field_height, field_width), stride=stride, padding=padding)
    return np.ascontiguousarray(cols.transpose(1, 2, 0)).reshape(cols.shape[1], -1)


def col2im_cython(cols, N, C, H, W, field_height, field_width, padding, stride):
    """Adjoint of `im2col_cython`: sum the columns back into (N, C, H, W) images.

    Parameters
    ----------
    cols : ndarray, shape (C*field_height*field_width, N*Ho*Wo)
    N, C, H, W, field_height, field_width, padding, stride : int

    Returns
    -------
    x : ndarray, shape (N, C, H, W), dtype of `cols`
    """
    cols = _float(cols)
    out_h = fastconv.output_size(H, field_height, stride, padding)
    out_w = fastconv.output_size(W, field_width, stride, padding)
    expected = (C * field_height * field_width, N * out_h * out_w)
    if cols.shape != expected:
        raise ValueError(f"cols must have shape {expected} for N={N}, C={C}, H={H}, W={W}, field "
                         f"{field_height}x{field_width}, padding={padding}, stride={stride}; got {cols.shape}")
    batched = cols.reshape(expected[0], out_h * out_w, N).transpose(2, 0, 1)
    return fastconv.col2im(batched, (H, W), (field_height, field_width), stride=stride, padding=padding)
