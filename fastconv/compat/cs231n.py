"""Drop-in for the classic CS231n assignment-2 modules ``fast_layers``,
``im2col_cython`` and ``im2col``, ``layer_utils``, and the parts of ``layers``
that ``classifiers/cnn.py`` builds on.

The course's Cython extension no longer builds with Cython 3 (``/`` became true
division). Switch by replacing the imports::

    from fastconv.compat.cs231n import *

It provides the fast convolution and max pooling (``conv_forward_fast`` ...),
the column helpers (``im2col_cython``, ``col2im_cython``, ``col2im_6d_cython``,
``im2col_indices``, ``col2im_indices``, ``get_im2col_indices``), the sandwiches
of ``layer_utils`` (``affine_relu_*``, ``conv_relu_*``, ``conv_relu_pool_*``,
``conv_bn_relu_*``) and the layers they call (``affine_*``, ``relu_*``,
``batchnorm_*``, ``spatial_batchnorm_*``, ``softmax_loss``, ``svm_loss``).

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
  would split it between tied maxima; the pooling backward also takes the
  original ``fast_layers``' caches (``("reshape", ...)``, ``("im2col", ...)``);
- batch norm keeps the course's ``bn_param`` conventions (``mode``, ``eps``
  1e-5, ``momentum`` 0.9, running statistics starting at zero, updated with
  the biased batch variance and stored back as new arrays); its cache is its
  own, as every student's is.
"""
import collections.abc

import numpy as np

import fastconv
from fastconv import _validation as v
from fastconv import normalization
from fastconv.nn.losses import class_labels

__all__ = [
    "conv_forward_fast", "conv_backward_fast",
    "conv_forward_im2col", "conv_backward_im2col",
    "conv_forward_strides", "conv_backward_strides",
    "max_pool_forward_fast", "max_pool_backward_fast",
    "max_pool_forward_reshape", "max_pool_backward_reshape",
    "max_pool_forward_im2col", "max_pool_backward_im2col",
    "im2col_cython", "col2im_cython", "col2im_6d_cython",
    "get_im2col_indices", "im2col_indices", "col2im_indices",
    "affine_forward", "affine_backward", "relu_forward", "relu_backward",
    "batchnorm_forward", "batchnorm_backward", "batchnorm_backward_alt",
    "spatial_batchnorm_forward", "spatial_batchnorm_backward",
    "softmax_loss", "svm_loss",
    "affine_relu_forward", "affine_relu_backward",
    "conv_relu_forward", "conv_relu_backward",
    "conv_relu_pool_forward", "conv_relu_pool_backward",
    "conv_bn_relu_forward", "conv_bn_relu_backward",
]


def _float(a, name):
    """`a` as float32/float64: its own dtype when it is one of those; bools, integers and
    other real floats (the course's arrays) as float64; anything else (complex, object,
    strings) a TypeError naming it, not a silent cast."""
    a = np.asarray(a)
    if a.dtype in (np.float32, np.float64):
        return a
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be an array of real numbers, got dtype {a.dtype}")
    return a.astype(np.float64)


def _like(a, x, name):
    """`a` as a real array of x's dtype (`_float`'s checks)."""
    return _float(a, name).astype(x.dtype, copy=False)


def _param(value, name, keys):
    """The course's parameter dict `value` (a missing key is a KeyError, as in the course)."""
    if not isinstance(value, collections.abc.Mapping):
        raise TypeError(f"{name} must be a dict with {', '.join(map(repr, keys))}, got {type(value).__name__}")
    return [value[k] for k in keys]


def _conv_args(conv_param):
    stride, pad = _param(conv_param, "conv_param", ("stride", "pad"))
    return dict(stride=stride, padding=pad)


def _pool_args(pool_param):
    height, width, stride = _param(pool_param, "pool_param", ("pool_height", "pool_width", "stride"))
    return (height, width), stride


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
    x = _float(x, "x")
    w = _like(w, x, "w")
    b = _like(b, x, "b")
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
    dout = _like(dout, x, "dout")
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
    x = _float(x, "x")
    kernel, stride = _pool_args(pool_param)
    out, indices = fastconv.max_pool2d(x, kernel, stride=stride, return_indices=True)
    return out, (x, indices, pool_param)


def max_pool_backward_fast(dout, cache):
    """Max pooling backward pass: each window's gradient goes to its maximum.

    Parameters
    ----------
    dout : ndarray, shape (N, C, H', W')
    cache : the cache of a max pool forward function of this module, or of
        the original ``fast_layers`` (``("reshape", (x, x_reshaped, out))`` or
        ``("im2col", (x, x_cols, x_cols_argmax, pool_param))``)

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    """
    x, indices = _pool_cache(cache)
    dout = _like(dout, x, "dout")
    return fastconv.max_pool2d_backward(dout, indices, x.shape)


def _pool_cache(cache):
    """(x, indices) from a max pool cache of this module or of the original ``fast_layers``."""
    if isinstance(cache, tuple) and len(cache) == 3 and isinstance(cache[2], dict):
        return cache[0], cache[1]
    if isinstance(cache, tuple) and len(cache) == 2 and isinstance(cache[0], str):
        method, inner = cache
        if method == "reshape" and isinstance(inner, tuple) and len(inner) == 3 and np.ndim(inner[1]) == 6:
            x, x_reshaped, _ = inner     # x_reshaped: (N, C, H/ph, ph, W/pw, pw), stride == ph == pw
            pool_param = {"pool_height": x_reshaped.shape[3], "pool_width": x_reshaped.shape[5],
                          "stride": x_reshaped.shape[3]}
        elif method == "im2col" and isinstance(inner, tuple) and len(inner) == 4:
            x, pool_param = inner[0], inner[3]
        elif method not in ("reshape", "im2col"):
            raise ValueError(f"unknown max pool cache method {method!r}: the original fast_layers' caches are "
                             "('reshape', (x, x_reshaped, out)) and ('im2col', (x, x_cols, x_cols_argmax, pool_param))")
        else:
            holds = "(x, x_reshaped, out)" if method == "reshape" else "(x, x_cols, x_cols_argmax, pool_param)"
            raise ValueError(f"a ({method!r}, ...) max pool cache of the original fast_layers must hold {holds}")
        x = _float(x, "x")
        kernel, stride = _pool_args(pool_param)
        return x, fastconv.max_pool2d(x, kernel, stride=stride, return_indices=True)[1]
    raise ValueError("cache must be what a max pool forward returned: (x, indices, pool_param) from this module, "
                     "or the original fast_layers' ('reshape', (x, x_reshaped, out)) or "
                     f"('im2col', (x, x_cols, x_cols_argmax, pool_param)); got {_describe(cache)}")


def _describe(cache):
    if isinstance(cache, tuple):
        return f"a tuple of {len(cache)}: ({', '.join(type(c).__name__ for c in cache)})"
    return type(cache).__name__


max_pool_forward_reshape = max_pool_forward_im2col = max_pool_forward_fast
max_pool_backward_reshape = max_pool_backward_im2col = max_pool_backward_fast


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
    x = v.float_array(_float(x, "x"), "x", ndim=4)
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
    cols = _float(cols, "cols")
    N, C = v.integer(N, "N", minimum=0), v.integer(C, "C", minimum=0)
    out_h = fastconv.output_size(H, field_height, stride, padding)
    out_w = fastconv.output_size(W, field_width, stride, padding)
    expected = (C * field_height * field_width, N * out_h * out_w)
    if cols.shape != expected:
        raise ValueError(f"cols must have shape {expected} for N={N}, C={C}, H={H}, W={W}, field "
                         f"{field_height}x{field_width}, padding={padding}, stride={stride}; got {cols.shape}")
    batched = cols.reshape(expected[0], out_h * out_w, N).transpose(2, 0, 1)
    return fastconv.col2im(batched, (H, W), (field_height, field_width), stride=stride, padding=padding)



def col2im_6d_cython(cols, N, C, H, W, HH, WW, pad, stride):
    """`col2im_cython` for columns kept as six axes (``conv_backward_strides``' layout).

    Parameters
    ----------
    cols : ndarray, shape (C, HH, WW, N, Ho, Wo)
        ``cols[c, i, j, n, y, x]`` belongs to the zero-padded input at
        ``(n, c, y*stride + i, x*stride + j)``.
    N, C, H, W, HH, WW, pad, stride : int

    Returns
    -------
    x : ndarray, shape (N, C, H, W), dtype of `cols`
        The sum of the columns over every position they cover, padding dropped.
    """
    cols = _float(cols, "cols")
    N, C = v.integer(N, "N", minimum=0), v.integer(C, "C", minimum=0)
    out_h = fastconv.output_size(H, HH, stride, pad)
    out_w = fastconv.output_size(W, WW, stride, pad)
    expected = (C, HH, WW, N, out_h, out_w)
    if cols.shape != expected:
        raise ValueError(f"cols must have shape {expected} for N={N}, C={C}, H={H}, W={W}, field {HH}x{WW}, "
                         f"pad={pad}, stride={stride}; got {cols.shape}")
    batched = cols.reshape(C * HH * WW, N, out_h * out_w).transpose(1, 0, 2)
    return fastconv.col2im(batched, (H, W), (HH, WW), stride=stride, padding=pad)


# ---------------------------------------------------------------------------
# im2col (the fancy-indexing versions, same layout as im2col_cython)

def get_im2col_indices(x_shape, field_height, field_width, padding=1, stride=1):
    """The course's index arrays: ``x_padded[:, k, i, j]`` is the column matrix.

    Parameters
    ----------
    x_shape : tuple (N, C, H, W)
    field_height, field_width, padding, stride : int

    Returns
    -------
    k : ndarray of int, shape (C*field_height*field_width, 1)
        The channel of each row.
    i, j : ndarray of int, shape (C*field_height*field_width, Ho*Wo)
        The padded row and column each entry reads.
    """
    shape = tuple(x_shape) if isinstance(x_shape, (tuple, list, np.ndarray)) else None
    if shape is None or len(shape) != 4:
        raise ValueError(f"x_shape must be (N, C, H, W), got {x_shape!r}")
    _, C, H, W = (v.integer(n, "x_shape", minimum=0) for n in shape)
    out_height = fastconv.output_size(H, field_height, stride, padding)
    out_width = fastconv.output_size(W, field_width, stride, padding)
    i0 = np.tile(np.repeat(np.arange(field_height), field_width), C)
    i1 = stride * np.repeat(np.arange(out_height), out_width)
    j0 = np.tile(np.arange(field_width), field_height * C)
    j1 = stride * np.tile(np.arange(out_width), out_height)
    i = i0.reshape(-1, 1) + i1.reshape(1, -1)
    j = j0.reshape(-1, 1) + j1.reshape(1, -1)
    k = np.repeat(np.arange(C), field_height * field_width).reshape(-1, 1)
    return k, i, j


def im2col_indices(x, field_height, field_width, padding=1, stride=1):
    """The column matrix of `im2col_cython` (the course computed it by fancy indexing).

    Returns
    -------
    cols : ndarray, shape (C*field_height*field_width, N*Ho*Wo)
    """
    return im2col_cython(x, field_height, field_width, padding, stride)


def col2im_indices(cols, x_shape, field_height=3, field_width=3, padding=1, stride=1):
    """Adjoint of `im2col_indices`: `col2im_cython` with the shape as one tuple.

    Returns
    -------
    x : ndarray, shape `x_shape`, dtype of `cols`
    """
    N, C, H, W = x_shape
    return col2im_cython(cols, N, C, H, W, field_height, field_width, padding, stride)


# ---------------------------------------------------------------------------
# layers: affine, ReLU, batch norm, losses

def affine_forward(x, w, b):
    """Fully connected layer on the flattened examples.

    Parameters
    ----------
    x : ndarray, shape (N, d_1, ..., d_k)
    w : ndarray, shape (D, M), ``D = d_1 * ... * d_k``
    b : ndarray, shape (M,)

    Returns
    -------
    out : ndarray, shape (N, M)
    cache : ``(x, w, b)``
    """
    x = _float(x, "x")
    w = _like(w, x, "w")
    b = _like(b, x, "b")
    if x.ndim < 1:
        raise ValueError(f"x must have a batch axis, got shape {x.shape}")
    D = int(np.prod(x.shape[1:], dtype=np.int64))
    if w.ndim != 2 or w.shape[0] != D:
        raise ValueError(f"w must have shape ({D}, M) for x of shape {x.shape}, got {w.shape}")
    if b.size != w.shape[1]:        # (M,), or any shape of M values, as the course's broadcast
        raise ValueError(f"b must have shape ({w.shape[1]},), got {b.shape}")
    return x.reshape(x.shape[0], D) @ w + b.reshape(-1), (x, w, b)


def affine_backward(dout, cache):
    """Backward of `affine_forward`; returns ``(dx, dw, db)`` shaped as ``(x, w, b)``."""
    x, w, b = cache
    dout = _like(dout, x, "dout")
    if dout.shape != (x.shape[0], w.shape[1]):
        raise ValueError(f"dout must have shape {(x.shape[0], w.shape[1])}, got {dout.shape}")
    dx = (dout @ w.T).reshape(x.shape)
    dw = x.reshape(x.shape[0], w.shape[0]).T @ dout
    return dx, dw, dout.sum(axis=0).reshape(b.shape)


def relu_forward(x):
    """``max(x, 0)``; returns ``(out, cache)``."""
    x = _float(x, "x")
    return np.maximum(x, 0), x


def relu_backward(dout, cache):
    """Backward of `relu_forward`: `dout` where the input was positive, else 0."""
    x = cache
    dout = _like(dout, x, "dout")
    try:
        fits = np.broadcast_shapes(dout.shape, x.shape) == x.shape     # as the course's dout * (x > 0)
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"dout must have shape {x.shape}, got {dout.shape}")
    return np.where(x > 0, dout, x.dtype.type(0))


def _bn_setup(x, gamma, beta, bn_param, C):
    """The course's reading of bn_param (mode first: a missing one is a KeyError)."""
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    running_mean = bn_param.get("running_mean", np.zeros(C, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.zeros(C, dtype=x.dtype))
    if mode not in ("train", "test"):
        raise ValueError(f'Invalid forward batchnorm mode "{mode}"')
    gamma = _like(gamma, x, "gamma")
    beta = _like(beta, x, "beta")
    for name, a in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
                    ("running_var", running_var)):
        if np.shape(a) != (C,):
            raise ValueError(f"{name} must have shape ({C},) for x of shape {x.shape}, got {np.shape(a)}")
    return mode, eps, momentum, running_mean, running_var, gamma, beta


def _bn_store(bn_param, momentum, running_mean, running_var, mean, var, dtype):
    """The course's update, stored back into bn_param as new arrays."""
    sample_mean, sample_var = mean.astype(dtype), var.astype(dtype)
    bn_param["running_mean"] = momentum * running_mean + (1 - momentum) * sample_mean
    bn_param["running_var"] = momentum * running_var + (1 - momentum) * sample_var


def batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalisation of (N, D) features, with the course's ``bn_param``.

    Parameters
    ----------
    x : ndarray, shape (N, D)
    gamma, beta : ndarray, shape (D,)
        Scale and shift.
    bn_param : dict
        ``"mode"``: ``"train"`` (normalise with the batch's mean and biased
        variance) or ``"test"`` (with the running statistics); optional
        ``"eps"`` (1e-5), ``"momentum"`` (0.9), ``"running_mean"`` and
        ``"running_var"`` (zeros). In both modes ``bn_param["running_mean"]``
        and ``["running_var"]`` are set afterwards; in training to
        ``momentum * running + (1 - momentum) * batch`` (new arrays).

    Returns
    -------
    out : ndarray, shape (N, D), dtype of `x`
    cache : for `batchnorm_backward`
    """
    x = _float(x, "x")
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, D), got {x.shape}")
    mode, eps, momentum, running_mean, running_var, gamma, beta = _bn_setup(x, gamma, beta, bn_param,
                                                                            x.shape[1])
    if mode == "train":
        if x.shape[0] == 0:
            raise ValueError("training needs at least one example, got x of shape (0, D)")
        xd = x.astype(np.float64, copy=False)
        mean = xd.mean(axis=0)
        var = np.square(xd - mean).mean(axis=0)
        _bn_store(bn_param, momentum, running_mean, running_var, mean, var, x.dtype)
    else:
        mean, var = (np.asarray(a, dtype=np.float64) for a in (running_mean, running_var))
        bn_param["running_mean"], bn_param["running_var"] = running_mean, running_var
    invstd = 1.0 / np.sqrt(var + eps)
    out = ((x - mean) * (invstd * gamma) + beta).astype(x.dtype, copy=False)
    return out, (mode, x, gamma, mean, invstd)


def _bn_backward(dout, cache, axes):
    """Gradients of batch norm over `axes` from its cache ``(mode, x, gamma, mean, invstd)``."""
    mode, x, gamma, mean, invstd = cache
    dout = _like(dout, x, "dout")
    if dout.shape != x.shape:
        raise ValueError(f"dout must have shape {x.shape}, got {dout.shape}")
    shape = [1] * x.ndim
    shape[1] = x.shape[1]
    mean, invstd = mean.reshape(shape), invstd.reshape(shape)
    x_hat = (x - mean) * invstd
    dbeta = dout.sum(axis=axes, dtype=np.float64)
    dgamma = (dout * x_hat).sum(axis=axes, dtype=np.float64)
    k = gamma.reshape(shape) * invstd
    if mode == "train":
        M = int(np.prod([x.shape[a] for a in np.atleast_1d(axes)]))   # values per feature
        dx = k * (dout - (dbeta.reshape(shape) + x_hat * dgamma.reshape(shape)) / M)
    else:     # the running statistics are constants
        dx = k * dout
    return dx.astype(x.dtype, copy=False), dgamma.astype(x.dtype), dbeta.astype(x.dtype)


def batchnorm_backward(dout, cache):
    """Backward of `batchnorm_forward`; returns ``(dx, dgamma, dbeta)``.

    In ``"test"`` mode the running statistics are constants.
    """
    return _bn_backward(dout, cache, axes=0)


#: The course asks for a second, simplified derivation; the result is the same.
batchnorm_backward_alt = batchnorm_backward


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalisation of (N, C, H, W) per channel, with the course's ``bn_param``.

    As `batchnorm_forward` on ``x.transpose(0, 2, 3, 1).reshape(-1, C)`` (the
    course's definition), computed by `fastconv.batch_norm2d`'s kernels.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    gamma, beta : ndarray, shape (C,)
    bn_param : dict, as in `batchnorm_forward` (running statistics of shape (C,))

    Returns
    -------
    out : ndarray, shape (N, C, H, W), dtype of `x`
    cache : for `spatial_batchnorm_backward`
    """
    x = _float(x, "x")
    if x.ndim != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got {x.shape}")
    x = np.ascontiguousarray(x)
    mode, eps, momentum, running_mean, running_var, gamma, beta = _bn_setup(x, gamma, beta, bn_param,
                                                                            x.shape[1])
    if mode == "train":
        if x.size == 0:
            raise ValueError(f"training needs at least one value per channel, got x of shape {x.shape}")
        mean, var = normalization._batch_stats(x)
        _bn_store(bn_param, momentum, running_mean, running_var, mean, var, x.dtype)
    else:
        mean, var = (np.asarray(a, dtype=np.float64) for a in (running_mean, running_var))
        bn_param["running_mean"], bn_param["running_var"] = running_mean, running_var
    invstd = 1.0 / np.sqrt(var + eps)
    out = normalization._normalize(x, mean, invstd * gamma, beta)
    return out, (mode, x, gamma, mean, invstd, eps)


def spatial_batchnorm_backward(dout, cache):
    """Backward of `spatial_batchnorm_forward`; returns ``(dx, dgamma, dbeta)``,
    ``dx`` of shape (N, C, H, W), ``dgamma`` and ``dbeta`` of shape (C,)."""
    mode, x, gamma, mean, invstd, eps = cache
    if mode == "train":
        dout = _like(dout, x, "dout")
        return fastconv.batch_norm2d_backward(dout, x, gamma, eps, training=True)
    return _bn_backward(dout, cache[:5], axes=(0, 2, 3))


def softmax_loss(x, y):
    """Mean softmax cross-entropy of the scores `x` (N, C) for the labels `y` (N,).

    Returns
    -------
    loss : float
    dx : ndarray, shape (N, C), dtype of `x`
    """
    return fastconv.softmax_cross_entropy(_float(x, "x"), y)


def svm_loss(x, y):
    """Mean multiclass SVM (hinge, margin 1) loss of the scores `x` (N, C) for the labels `y` (N,).

    Returns
    -------
    loss : float
    dx : ndarray, shape (N, C), dtype of `x`
    """
    x = v.float_array(_float(x, "x"), "x", ndim=2)
    y = class_labels(y, *x.shape, "x")
    N = x.shape[0]
    rows = np.arange(N)
    margins = np.maximum(0, x - x[rows, y][:, None] + 1)
    margins[rows, y] = 0
    positive = margins > 0
    dx = positive.astype(x.dtype)
    dx[rows, y] -= positive.sum(axis=1)
    dx /= max(N, 1)
    return float(margins.sum()) / max(N, 1), dx


# ---------------------------------------------------------------------------
# layer_utils sandwiches

def affine_relu_forward(x, w, b):
    """Affine layer followed by ReLU; returns ``(out, cache)``."""
    a, fc_cache = affine_forward(x, w, b)
    out, relu_cache = relu_forward(a)
    return out, (fc_cache, relu_cache)


def affine_relu_backward(dout, cache):
    """Backward of `affine_relu_forward`; returns ``(dx, dw, db)``."""
    fc_cache, relu_cache = cache
    return affine_backward(relu_backward(dout, relu_cache), fc_cache)


def conv_relu_forward(x, w, b, conv_param):
    """Convolution followed by ReLU; returns ``(out, cache)``."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    out, relu_cache = relu_forward(a)
    return out, (conv_cache, relu_cache)


def conv_relu_backward(dout, cache):
    """Backward of `conv_relu_forward`; returns ``(dx, dw, db)``."""
    conv_cache, relu_cache = cache
    return conv_backward_fast(relu_backward(dout, relu_cache), conv_cache)


def conv_bn_relu_forward(x, w, b, gamma, beta, conv_param, bn_param):
    """Convolution, spatial batch norm, then ReLU; returns ``(out, cache)``."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    an, bn_cache = spatial_batchnorm_forward(a, gamma, beta, bn_param)
    out, relu_cache = relu_forward(an)
    return out, (conv_cache, bn_cache, relu_cache)


def conv_bn_relu_backward(dout, cache):
    """Backward of `conv_bn_relu_forward`; returns ``(dx, dw, db, dgamma, dbeta)``."""
    conv_cache, bn_cache, relu_cache = cache
    da, dgamma, dbeta = spatial_batchnorm_backward(relu_backward(dout, relu_cache), bn_cache)
    dx, dw, db = conv_backward_fast(da, conv_cache)
    return dx, dw, db, dgamma, dbeta


def conv_relu_pool_forward(x, w, b, conv_param, pool_param):
    """Convolution, ReLU, then max pooling; returns ``(out, cache)``."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    s, relu_cache = relu_forward(a)
    out, pool_cache = max_pool_forward_fast(s, pool_param)
    return out, (conv_cache, relu_cache, pool_cache)


def conv_relu_pool_backward(dout, cache):
    """Backward of `conv_relu_pool_forward`; returns ``(dx, dw, db)``."""
    conv_cache, relu_cache, pool_cache = cache
    ds = max_pool_backward_fast(dout, pool_cache)
    return conv_backward_fast(relu_backward(ds, relu_cache), conv_cache)
