"""Visualising what a CNN has learned: the methods of the course notes on understanding CNNs.

Every function returns NumPy arrays; each has a plot helper that draws them on
a matplotlib ``Axes`` (``ax=``) or writes a PNG (``path=``, through the Agg
backend, no display needed). matplotlib (plots) and scikit-learn (t-SNE) are
imported inside the functions that need them: ``pip install "fastconv[viz]"``.

Models are `fastconv.Sequential` (children named ``"0"``, ``"1"``, ... as in
torch) or anything with ``named_children()``; nested sequential containers are
reached with dotted names (``"3.0"``). Only the layers' public behaviour is
used: ``forward(x, training)``, ``backward(grad)`` and their window attributes
(``kernel_size``, ``stride``, ``padding``, ``dilation``).

=================  ==========================================================
`activations`      output of every child layer for a batch
`filter_grid`      a bank of filters tiled into one image in [0, 1]
`dead_filters`     channels of conv / ReLU outputs never positive on a batch
`top_activating`   the images that excite one unit most, and its receptive fields
`occlusion`        class probability with a patch slid over the image
`saliency`         ``|d score / d x|``, the image gradient of a class score
`embed`            2-D t-SNE (or PCA) of a layer's codes
=================  ==========================================================
"""
import concurrent.futures
import contextlib
import functools
import math
import os
import queue as _queue
import threading
from dataclasses import dataclass

import numpy as np

import fastconv

__all__ = ["activations", "dead_filters", "embed", "filter_grid", "occlusion", "plot_activations",
           "plot_dead_filters", "plot_embedding", "plot_filters", "plot_occlusion", "plot_saliency",
           "plot_top_activating", "saliency", "top_activating"]

# Images per forward in `occlusion`: big enough that the kernels' threads have
# work, bounded in bytes so that large images do not blow up the memory.
_OCCLUSION_BATCH = 1024
_OCCLUSION_BYTES = 64 * 2**20
# Items per block of the windowed path: its largest array within this many bytes.
_OCCLUSION_WINDOW_BYTES = 2 * 2**20
# The distinct crops of one windowed layer of one image are gathered (copied once,
# contiguous) when they take at most this many bytes; a chunk's, at most the second.
_OCCLUSION_CROP_BYTES = 2 * 2**20
_OCCLUSION_DISTINCT_BYTES = 8 * 2**20


# -- models ------------------------------------------------------------------
def _named_layers(model):
    """The direct children of `model` as ``[(name, layer), ...]``.

    ``model.named_children()`` when the model has it (`fastconv.nn`, torch
    style); otherwise ``enumerate(model.layers)`` named ``"0"``, ``"1"``, ...
    """
    if hasattr(model, "named_children"):
        return [(str(name), layer) for name, layer in model.named_children()]
    if hasattr(model, "layers"):
        return [(str(i), layer) for i, layer in enumerate(model.layers)]
    raise TypeError(f"model must be a Sequential (with .layers or named_children()), got {type(model).__name__}")


def _is_sequential(layer):
    # Containers whose forward is their children in order (not, e.g., a Residual).
    return type(layer).__name__ == "Sequential" and (hasattr(layer, "named_children") or hasattr(layer, "layers"))


def _flat_layers(model, prefix=""):
    """Leaf layers in execution order, as ``[(dotted name, layer, containers ending here)]``.

    Sequential containers are opened; each leaf carries the names of the
    containers whose last layer it is, so their output can be looked up too.
    """
    flat = []
    for name, layer in _named_layers(model):
        full = prefix + name
        if _is_sequential(layer) and _named_layers(layer):
            inner = _flat_layers(layer, full + ".")
            inner[-1] = (*inner[-1][:2], inner[-1][2] + [full])
            flat.extend(inner)
        else:
            flat.append((full, layer, []))
    return flat


def _layer_names(model):
    names = []
    for name, _, containers in _flat_layers(model):
        names.append(name)
        names.extend(containers)
    return names


def _check_layer(model, layer):
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a layer name (str) such as '0', got {type(layer).__name__}")
    names = _layer_names(model)
    if layer not in names:
        raise ValueError(f"layer {layer!r} is not in the model; its layers are {names}")
    return layer


def _images(x, name="x"):
    """`x` as an (N, C, H, W) float32/float64 array (not copied)."""
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be an (N, C, H, W) float array, got {type(x).__name__}")
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must have dtype float32 or float64, got {x.dtype}")
    if x.ndim != 4:
        raise ValueError(f"{name} must be 4-D (N, C, H, W), got shape {x.shape}")
    return x


def _forward_to(model, x, layer, batch_size=512):
    """Eval-mode output of the layer named `layer`, computed in batches."""
    flat = _flat_layers(model)
    stop = next(i for i, (name, _, containers) in enumerate(flat) if layer == name or layer in containers)
    outs = []
    for start in range(0, max(len(x), 1), batch_size):
        h = x[start:start + batch_size]
        for _, child, _ in flat[:stop + 1]:
            h = child.forward(h, training=False)
        outs.append(h)
    return np.concatenate(outs) if len(outs) > 1 else outs[0]


def _targets(target, n, num_classes):
    """`target` (an int or one int per image) as an (n,) int array, checked against `num_classes`."""
    t = np.asarray(target)
    if t.dtype.kind not in "iu" or t.ndim > 1:
        raise TypeError(f"target must be an int or a 1-D array of ints, got {target!r}")
    t = np.broadcast_to(t, (n,)) if t.ndim == 0 else t
    if t.shape != (n,):
        raise ValueError(f"target must be an int or hold one class per image ({n}), got shape {t.shape}")
    if t.size and (t.min() < 0 or t.max() >= num_classes):
        raise ValueError(f"target must be in 0..{num_classes - 1} (the model has {num_classes} classes), "
                         f"got {t.min() if t.min() < 0 else t.max()}")
    return t.astype(np.int64)


def _softmax(scores):
    z = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# -- the methods -------------------------------------------------------------
def activations(model, x):
    """The eval-mode output of every child layer of `model` for the batch `x`.

    Parameters
    ----------
    model : Sequential
    x : ndarray, float32 or float64
        The model's input, e.g. (N, C, H, W).

    Returns
    -------
    list of (str, ndarray)
        ``(name, output)`` per direct child of `model`, in order; conv outputs
        are (N, K, H', W').
    """
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"x must be a float array, got {type(x).__name__}")
    h = np.asarray(x)
    if h.dtype not in (np.float32, np.float64):
        raise TypeError(f"x must have dtype float32 or float64, got {h.dtype}")
    out = []
    for name, layer in _named_layers(model):
        h = layer.forward(h, training=False)
        out.append((name, h))
    return out


def _normalise(a):
    """`a` mapped to [0, 1] by its own min and max; a constant array -> 0.5."""
    lo, hi = float(a.min()), float(a.max())
    if hi - lo <= 0 or not math.isfinite(hi - lo):
        return np.full(a.shape, 0.5)
    return (a - lo) / (hi - lo)


def _tile(tiles, padding, fill=1.0):
    """(K, h, w[, 3]) tiles in [0, 1] laid out in a near-square grid separated by `padding` pixels."""
    K, h, w = tiles.shape[:3]
    cols = max(1, math.ceil(math.sqrt(K)))
    rows = max(1, math.ceil(K / cols))
    grid = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding) + tiles.shape[3:], fill)
    for k in range(K):
        r, c = divmod(k, cols)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[top:top + h, left:left + w] = tiles[k]
    return grid


def filter_grid(weight, padding=1):
    """A bank of convolution filters tiled into one image in [0, 1].

    Each filter is normalised by its own minimum and maximum (a constant filter
    is mid-grey) and the K filters are laid out in a near-square grid
    (``ceil(sqrt(K))`` columns) on a white background with `padding` pixels
    between and around them.

    Parameters
    ----------
    weight : ndarray, (K, C, kh, kw)
        E.g. ``conv.params["weight"]``.
    padding : int >= 0

    Returns
    -------
    ndarray, float64
        (H, W, 3) RGB when C == 3; (H, W) grey otherwise, where for C != 1, 3
        the channels are averaged. ``H = rows * (kh + padding) + padding``,
        likewise W.
    """
    if isinstance(weight, (str, bytes)) or weight is None:
        raise TypeError(f"weight must be a (K, C, kh, kw) float array, got {type(weight).__name__}")
    w = np.asarray(weight)
    if w.dtype.kind not in "fiu":
        raise TypeError(f"weight must be a real array, got dtype {w.dtype}")
    if w.ndim != 4 or 0 in w.shape:
        raise ValueError(f"weight must be 4-D (K, C, kh, kw) and non-empty, got shape {w.shape}")
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise ValueError(f"padding must be an int >= 0, got {padding!r}")
    w = w.astype(np.float64)
    if w.shape[1] == 3:
        tiles = np.stack([_normalise(f) for f in w]).transpose(0, 2, 3, 1)
    else:
        tiles = np.stack([_normalise(f.mean(axis=0)) for f in w])
    return _tile(tiles, int(padding))


def _spatial_outputs(model, x):
    """(name, layer, output) of every leaf layer, in order (eval mode)."""
    h = x
    out = []
    for name, layer, _ in _flat_layers(model):
        h = layer.forward(h, training=False)
        out.append((name, layer, h))
    return out


def dead_filters(model, x):
    """Channels of conv and ReLU outputs that are never positive on the batch `x`.

    Such a channel contributes nothing after its ReLU for these inputs (a
    "dead" filter); on a representative batch it is likely dead for good.

    Parameters
    ----------
    model : Sequential
    x : ndarray, (N, ...) float32 or float64

    Returns
    -------
    dict of str -> ndarray of int64
        For every conv layer (a layer with a 4-D ``weight``) and every ReLU, in
        order: the indices along axis 1 (the channels, or a Linear's units) whose
        output is <= 0 at every image and position; empty when none is dead.
    """
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"x must have dtype float32 or float64, got {x.dtype}")
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"x must be a non-empty batch (N, ...), got shape {x.shape}")
    dead = {}
    for name, layer, h in _spatial_outputs(model, x):
        weight = getattr(layer, "params", {}).get("weight")
        is_conv = weight is not None and np.ndim(weight) == 4
        if (is_conv or type(layer).__name__ == "ReLU") and h.ndim >= 2:
            axes = (0,) + tuple(range(2, h.ndim))
            dead[name] = np.flatnonzero(h.max(axis=axes) <= 0).astype(np.int64)
    return dead


def _window(layer):
    """(kernel, stride, (top, left) padding, dilation) pairs of a conv/pool layer, or None."""
    if not hasattr(layer, "kernel_size"):
        return None

    def two(value):
        return tuple(value) if isinstance(value, (tuple, list)) else (value, value)

    kernel = two(layer.kernel_size)
    stride = two(getattr(layer, "stride", None) or kernel)
    dilation = two(getattr(layer, "dilation", 1))
    padding = getattr(layer, "padding", 0)
    if isinstance(padding, str):
        # 'same' pads d*(k-1) in total, the odd pixel at the bottom/right (as torch).
        padding = (0, 0) if padding == "valid" else tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    else:
        padding = two(padding)
        # ((top, bottom), (left, right)) -> (top, left)
        padding = tuple(p[0] if isinstance(p, (tuple, list)) else p for p in padding)
    return kernel, stride, padding, dilation


def _receptive_field(model, layer):
    """Geometry of the units of `layer`: (size, jump, start) per axis.

    Output position i along an axis reads input pixels ``start + i*jump`` to
    ``start + i*jump + size - 1`` (before clipping to the image). None when a
    layer on the way has no known window (e.g. a Linear): then every unit sees
    the whole image.
    """
    size, jump, start = [1, 1], [1, 1], [0, 0]
    for name, child, containers in _flat_layers(model):
        window = _window(child)
        if window is not None:
            for a in range(2):
                k, s, p, d = (window[0][a], window[1][a], window[2][a], window[3][a])
                start[a] -= p * jump[a]
                size[a] += d * (k - 1) * jump[a]
                jump[a] *= s
        elif type(child).__name__ not in ("ReLU", "Sigmoid", "Tanh", "LeakyReLU", "Dropout", "Identity",
                                          "BatchNorm2D"):
            return None
        if layer == name or layer in containers:
            return size, jump, start
    return None


def top_activating(model, images, layer, channel, k=9):
    """The `k` images that excite one unit most, and the patch of each that the unit sees.

    The unit's activation on an image is the maximum of channel `channel` of
    the output of `layer` over positions; its receptive field there follows
    from the kernel size, stride, padding and dilation of the conv and pool
    layers up to `layer` (clipped to the image). After a layer without such
    geometry (Flatten, Linear) the unit sees the whole image.

    Parameters
    ----------
    model : Sequential
    images : ndarray, (N, C, H, W) float32 or float64
    layer : str
        A layer name, e.g. ``"1"`` (dotted for nested containers).
    channel : int
        Channel (or unit) index along axis 1 of the layer's output.
    k : int >= 1
        At most N images are returned.

    Returns
    -------
    indices : ndarray of int64, (min(k, N),)
        Images in order of decreasing activation.
    crops : list of ndarray, each (C, h, w)
        The receptive field of the maximising position in each image (copies;
        smaller than the field at the image border).
    """
    images = _images(images, "images")
    _check_layer(model, layer)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    out = _forward_to(model, images, layer)
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) \
            or not 0 <= channel < out.shape[1]:
        raise ValueError(f"channel must be an int in 0..{out.shape[1] - 1} (layer {layer!r} has "
                         f"{out.shape[1]} channels), got {channel!r}")
    unit = out[:, channel].reshape(len(out), -1)
    best = unit.max(axis=1) if unit.shape[1] else np.zeros(len(out))
    indices = np.argsort(-best, kind="stable")[:k].astype(np.int64)
    H, W = images.shape[2:]
    field = _receptive_field(model, layer) if out.ndim == 4 else None
    crops = []
    for n in indices:
        if field is None:
            crops.append(images[n].copy())
            continue
        i, j = np.unravel_index(int(unit[n].argmax()), out.shape[2:])
        (sh, sw), (jh, jw), (oh, ow) = field
        top, left = oh + i * jh, ow + j * jw
        crops.append(images[n, :, max(top, 0):max(min(top + sh, H), 0),
                            max(left, 0):max(min(left + sw, W), 0)].copy())
    return indices, crops


def occlusion(model, x, target, patch=4, stride=1, fill=0.0):
    """Softmax probability of `target` as a square patch of `fill` slides over each image.

    A low value at a position means the model needs what the patch hides there
    to recognise the class.

    A patch changes a conv or pool layer's output only where the layer's window
    meets it. So when `model` is a Sequential (nested ones opened) that starts
    with layers of exactly these classes: `Conv2D`; `MaxPool2D` and `AvgPool2D`
    without ``ceil_mode`` (an AvgPool2D with padding counting it); `ReLU`,
    `LeakyReLU`, `Sigmoid`, `Tanh`, `Identity`, `Dropout` and `BatchNorm2D` with
    running statistics, each patch position recomputes only the part of those
    layers' outputs that its patch reaches, from crops of the unoccluded image's
    activations, and only the layers after them (e.g. Flatten, Linear) run on
    whole activations. Any other model runs every occluded image through
    ``model.forward``. Both give the same probabilities to float rounding. The
    positions are split into blocks, run by `fastconv.get_num_threads()` helper
    threads with one-thread ops, so that no thread waits at a barrier for
    another. The helper threads and their block buffers (a few MiB each) are
    kept from call to call.

    Parameters
    ----------
    model : Sequential
        Its output is (N, num_classes) class scores (logits).
    x : ndarray, (N, C, H, W) float32 or float64
    target : int or array of N ints
        The class whose probability is recorded, for all images or per image.
    patch : int or pair of ints
        Patch height and width; at most the image's.
    stride : int or pair of ints
        Step between patch positions.
    fill : float
        The value the patch sets (e.g. 0, or the data set's mean).

    Returns
    -------
    ndarray, (N, H', W') of x's dtype
        ``H' = (H - patch_h) // stride_h + 1``; entry (n, i, j) is the
        probability with the patch's top-left corner at
        ``(i * stride_h, j * stride_w)``.
    """
    x = _images(x)
    N, _, H, W = x.shape
    patch = _positive_pair(patch, "patch")
    stride = _positive_pair(stride, "stride")
    if patch[0] > H or patch[1] > W:
        raise ValueError(f"patch {patch} is larger than the images {(H, W)}")
    if not isinstance(fill, (int, float, np.integer, np.floating)) or isinstance(fill, bool):
        raise TypeError(f"fill must be a real number, got {fill!r}")
    Ho, Wo = (H - patch[0]) // stride[0] + 1, (W - patch[1]) // stride[1] + 1
    if N == 0:
        return np.empty((0, Ho, Wo), dtype=x.dtype)
    local, rest = _split_local(model)
    if local and any(step.window is not None for step in local):
        return _occlusion_windowed(local, rest, x, target, patch, stride, fill, _OCCLUSION_WINDOW_BYTES)
    # A first forward gives the number of classes to check target against.
    targets = _scored_targets(model.forward(x[:1], training=False), target, N)
    return _occlusion_by_forward(model, x, targets, patch, stride, fill)


def _scored_targets(scores, target, n):
    """`target` checked against the classes of a model whose output for one image is `scores`."""
    if np.ndim(scores) != 2:
        raise ValueError(f"the model must output (N, num_classes) scores, got shape {np.shape(scores)}")
    return _targets(target, n, scores.shape[1])


def _occlusion_by_forward(model, x, targets, patch, stride, fill):
    """`occlusion`'s general path: every occluded image through ``model.forward``."""
    N, _, H, W = x.shape
    (ph, pw), (sh, sw) = patch, stride
    Ho, Wo = (H - ph) // sh + 1, (W - pw) // sw + 1
    positions = [(i * sh, j * sw) for i in range(Ho) for j in range(Wo)]
    probs = np.empty((N, Ho * Wo), dtype=x.dtype)
    batch = max(1, min(_OCCLUSION_BATCH, _OCCLUSION_BYTES // max(1, x[0].nbytes)))
    # Work items are (image, position) pairs, taken in batches across images.
    total = N * len(positions)
    for start in range(0, total, batch):
        items = np.arange(start, min(start + batch, total))
        imgs, pos = np.divmod(items, len(positions))
        occluded = x[imgs].copy()
        for row, p in enumerate(pos):
            top, left = positions[p]
            occluded[row, :, top:top + ph, left:left + pw] = fill
        p = _softmax(np.asarray(model.forward(occluded, training=False), dtype=np.float64))
        probs[imgs, pos] = p[np.arange(len(items)), targets[imgs]]
    return probs.reshape(N, Ho, Wo)


def _positive_pair(value, name):
    if isinstance(value, (tuple, list)) and len(value) == 2:
        pair = tuple(value)
    else:
        pair = (value, value)
    for v in pair:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an int >= 1 or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


# -- occlusion: the windowed fast path ----------------------------------------
# Occluding a patch changes a conv or pool layer's output only in the window of
# positions whose receptive field meets the patch, and a pointwise layer's only
# where its input changed. Along the leading run of such "local" layers each
# patch position therefore needs only that window: it is computed from a crop of
# the unoccluded image's activation (the base) with the previous window written
# over it, with the layer's padding made explicit so that the crop is convolved
# or pooled with padding 0. After the run the window goes back into a copy of
# the base and the remaining layers run on whole activations. Positions share
# crops (at stride 1, 625 positions of a 28x28 digit read 4 to 23 distinct crop
# offsets per axis), so each layer's distinct crops are copied out once, and an
# item's crop is then one memcpy. Where the work goes and why it is laid out so:
# docs/visualisation.rst; `python -m fastconv bench --sections viz` re-measures it.


@dataclass
class _LocalLayer:
    layer: object
    window: tuple = None   # ((kh, kw), (sh, sw), ((pt, pb), (pl, pr)), (dh, dw)); None: pointwise
    pad_value: float = 0.0
    apply: object = None   # crop with explicit padding -> output window


def _local_layer(layer):
    """`layer` as a `_LocalLayer` when its eval output at a position depends only on a
    window of its input (with geometry known here), else None."""
    from fastconv import nn

    kind = type(layer)
    if kind in (nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Identity, nn.Dropout):
        return _LocalLayer(layer)
    if kind is nn.BatchNorm2D and layer.buffers.get("running_mean") is not None:
        return _LocalLayer(layer)  # eval: a per-channel affine map
    ops = layer.backend if hasattr(layer, "backend") else None
    if kind is nn.Conv2D:
        from fastconv import _validation as v

        pad = v.conv_padding(layer.padding, layer.kernel_size, layer.stride, layer.dilation)
        weight, bias = layer.params["weight"], layer.params.get("bias")
        return _LocalLayer(layer, (layer.kernel_size, layer.stride, pad, layer.dilation), 0.0, lambda crop: ops.conv2d(
            crop, weight, bias, stride=layer.stride, dilation=layer.dilation, groups=layer.groups))
    if kind is nn.MaxPool2D and not layer.ceil_mode:
        pad = tuple((p, p) for p in layer.padding)
        return _LocalLayer(layer, (layer.kernel_size, layer.stride, pad, layer.dilation), -np.inf,
                           lambda crop: ops.max_pool2d(crop, layer.kernel_size, layer.stride,
                                                       dilation=layer.dilation))
    if kind is nn.AvgPool2D and not layer.ceil_mode and (layer.count_include_pad or layer.padding == (0, 0)):
        pad = tuple((p, p) for p in layer.padding)
        return _LocalLayer(layer, (layer.kernel_size, layer.stride, pad, (1, 1)), 0.0,
                           lambda crop: ops.avg_pool2d(crop, layer.kernel_size, layer.stride,
                                                       divisor_override=layer.divisor_override))
    return None


def _split_local(model):
    """(local prefix as `_LocalLayer`s, the remaining leaf layers) of a Sequential model;
    (None, None) when `model` is not one (its forward may be anything)."""
    if not _is_sequential(model):
        return None, None
    leaves = [layer for _, layer, _ in _flat_layers(model)]
    local = []
    for layer in leaves:
        step = _local_layer(layer)
        if step is None:
            break
        local.append(step)
    return local, leaves[len(local):]


@dataclass
class _AxisStep:
    crop_start: np.ndarray     # (P,) where each position's crop starts, in padded input coordinates
    crop_length: int
    changed_start: np.ndarray  # (P,) where the changed input window starts, in crop coordinates
    out_start: np.ndarray      # (P,) where the output window starts
    out_length: int


def _axis_steps(windows, sizes, start, length):
    """Along one axis, for changed input windows ``[start, start + length)`` (one per
    position): the crop and the output window of every windowed layer. `windows` holds
    (kernel, stride, padding before, dilation) per layer, `sizes` (input, output) sizes."""
    steps = []
    for (k, s, p0, d), (_, n_out) in zip(windows, sizes):
        span = d * (k - 1)
        # outputs i whose window [i*s - p0, i*s - p0 + span] meets the changed input
        lo = np.clip(-((span - start - p0) // s), 0, n_out - 1)
        hi = np.clip((start + length - 1 + p0) // s, 0, n_out - 1)
        out_length = int(min(max(int((hi - lo).max()) + 1, 1), n_out))
        out_start = np.minimum(lo, n_out - out_length)  # one length for all positions
        crop_start = out_start * s
        steps.append(_AxisStep(crop_start, (out_length - 1) * s + span + 1, start + p0 - crop_start,
                               out_start, out_length))
        start, length = out_start, out_length
    return steps


def _occlusion_windowed(local, rest, x, target, patch, stride, fill, batch_bytes):
    """`occlusion` through the window of each local layer (see above); `local` has a windowed layer."""
    from fastconv._threads import blas

    N, C = x.shape[:2]
    # The first image alone: its activations give the shapes (and raise the model's own
    # errors), its scores the classes that target is checked against.
    maps = _base_maps(local, x[:1])
    scores = maps[-1]
    for layer in rest:
        scores = layer.forward(scores, training=False)
    targets = _scored_targets(scores, target, N)
    plan = _window_plan(tuple(step.window for step in local if step.window is not None),
                        tuple(m.shape[1:] for m in maps), patch, stride, x.itemsize, _OCCLUSION_CROP_BYTES)
    # Items (image, position) per block: a block's largest array within batch_bytes.
    block = max(1, batch_bytes // plan.item_bytes)
    workers = fastconv.get_num_threads()
    per_chunk = max(1, 4 * workers * block // plan.positions)  # images whose bases are computed together
    if plan.distinct_bytes:
        per_chunk = max(1, min(per_chunk, _OCCLUSION_DISTINCT_BYTES // plan.distinct_bytes))
    probs = np.empty((N, plan.positions), dtype=x.dtype)
    patch_fill = np.full((block, C) + patch, fill, dtype=x.dtype)

    def run_block(first, bases, items):
        crops = [_kept_buffer(("crop", k), (block,) + source.shape, x.dtype) for k, source in enumerate(plan.sources)]
        image, position = np.divmod(items, plan.positions)
        window, k, owned = patch_fill[:len(items)], 0, False
        for step in local:
            if step.window is None:
                window, owned = step.layer._infer(window, owned)
                continue
            crop = plan.sources[k].paste(bases[k], image, position, window, crops[k])
            window, k, owned = step.apply(crop), k + 1, True
        h = plan.sources[k].paste(bases[k], image, position, window, crops[k])
        owned = False  # h is this worker's buffer
        for layer in rest:
            h, owned = layer._infer(h, owned)
        p = _softmax(np.asarray(h, dtype=np.float64))
        probs[first + image, position] = p[np.arange(len(items)), targets[first + image]]

    def run_blocks(queue):
        # Blocks taken in turn by the helper threads, each block on one thread with
        # its ops on that thread alone: no thread team waits at a barrier
        # for a member that another process holds off its core, a thread held off runs
        # fewer blocks, and each block's arrays stay in its core's cache.
        with fastconv.threads(1):
            while True:
                try:
                    block_args = queue.get_nowait()
                except _queue.Empty:
                    return
                run_block(*block_args)

    # BLAS (the classifier's matmuls) at one thread throughout: the threads here are
    # the workers, and holding the setting once spares a switch per call.
    with blas.single_threaded():
        for first in [0] + list(range(1, N, per_chunk)):
            if first:
                maps = _base_maps(local, x[first:first + per_chunk])
            bases = [source.gather(m, ("distinct", k)) for k, (source, m) in enumerate(zip(plan.sources, maps))]
            items = np.arange(len(maps[-1]) * plan.positions)
            count = workers * -(-len(items) // (workers * block))  # equal blocks, a multiple of the workers
            queue = _queue.SimpleQueue()
            for part in np.array_split(items, count):
                queue.put((first, bases, part))
            for helper in [_helpers(workers).submit(run_blocks, queue) for _ in range(min(workers, count))]:
                helper.result()
    return probs.reshape(N, plan.rows, plan.cols)


# Kept from call to call: the helper threads, each one's block buffers (a block's
# crops, each within _OCCLUSION_WINDOW_BYTES) and the calling thread's distinct
# crops (within _OCCLUSION_DISTINCT_BYTES). Fresh threads and fresh buffers cost
# more to start and to touch (the allocator hands large blocks back to the system,
# and they are faulted in again) than a small occlusion takes to run.
_BUFFERS = threading.local()


def _kept_buffer(name, shape, dtype):
    """An array of `shape` and `dtype` from this thread's buffer `name`, kept between
    calls (reallocated only when too small or of another dtype); its values are garbage."""
    kept = _BUFFERS.__dict__.setdefault("kept", {})
    size = math.prod(shape)
    buffer = kept.get(name)
    if buffer is None or buffer.dtype != dtype or buffer.size < size:
        buffer = kept[name] = np.empty(size, dtype)
    return buffer[:size].reshape(shape)
_HELPERS = {}
_HELPERS_LOCK = threading.Lock()
if hasattr(os, "register_at_fork"):  # a forked child has none of its parent's threads
    os.register_at_fork(after_in_child=_HELPERS.clear)


def _helpers(n):
    """A pool of `n` threads, made once."""
    with _HELPERS_LOCK:
        if n not in _HELPERS:
            _HELPERS[n] = concurrent.futures.ThreadPoolExecutor(n, thread_name_prefix="fastconv-occlusion")
        return _HELPERS[n]


def _base_maps(local, images):
    """The unoccluded images' activations that the windowed path reads: the input of
    each windowed layer, padded as the layer pads, and the local layers' output."""
    maps, h = [], images
    for step in local:
        if step.window is not None:
            (pt, pb), (pl, pr) = step.window[2]
            maps.append(np.pad(h, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=step.pad_value))
        h = step.layer.forward(h, training=False)
    maps.append(np.ascontiguousarray(h))
    return maps


@dataclass(frozen=True)
class _WindowPlan:
    rows: int                # patch positions down and across
    cols: int
    positions: int
    sources: tuple           # a `_CropSource` per windowed layer, then one for the local layers' output
    item_bytes: int          # the largest array of one item (a crop or an output window)
    distinct_bytes: int      # the distinct crops gathered for one image


@functools.lru_cache(maxsize=16)
def _window_plan(geometry, shapes, patch, stride, itemsize, crop_bytes):
    """Where every patch position's crops and windows lie: a pure function of the windowed
    layers' `geometry` (their `_LocalLayer.window`s), the `shapes` (C, H, W) of their padded
    inputs and of the local layers' output, the patch, the stride, the itemsize and the
    bytes of distinct crops a layer may gather per image; cached, as a model is occluded
    image after image. Its arrays are read-only."""
    (ph, pw), (sh, sw) = patch, stride
    # each windowed layer's input without its padding, then the local layers' output
    unpadded = [(h - sum(g[2][0]), w - sum(g[2][1])) for g, (_, h, w) in zip(geometry, shapes)] + [shapes[-1][1:]]
    sizes = list(zip(unpadded[:-1], unpadded[1:]))
    (H, W) = unpadded[0]
    Ho, Wo = (H - ph) // sh + 1, (W - pw) // sw + 1
    rows, cols = (_axis_steps([(g[0][a], g[1][a], g[2][a][0], g[3][a]) for g in geometry],
                              [(n_in[a], n_out[a]) for n_in, n_out in sizes], start, length)
                  for a, start, length in ((0, np.arange(Ho) * sh, ph), (1, np.arange(Wo) * sw, pw)))
    for shape, r, q in zip(shapes, rows, cols):
        for steps, n, length in ((r, shape[1], r.crop_length), (q, shape[2], q.crop_length)):
            if steps.crop_start.min() < 0 or steps.crop_start.max() + length > n:
                raise AssertionError("occlusion: a crop outside its padded input")  # the kernel relies on this
    i, j = np.divmod(np.arange(Ho * Wo), Wo)
    sources = [_CropSource((shape[0], r.crop_length, q.crop_length), r.crop_start[i], q.crop_start[j],
                           r.changed_start[i], q.changed_start[j], itemsize, crop_bytes)
               for shape, r, q in zip(shapes, rows, cols)]
    sources.append(_CropSource(shapes[-1], None, None, rows[-1].out_start[i], cols[-1].out_start[j], itemsize, 0))
    outputs = [shape[0] * r.out_length * q.out_length for shape, r, q in zip(shapes[1:], rows, cols)]
    item = max([math.prod(source.shape) for source in sources] + outputs)
    return _WindowPlan(Ho, Wo, Ho * Wo, tuple(sources), item * itemsize,
                       sum(source.distinct_bytes for source in sources))


class _CropSource:
    """The crops that the items of one windowed layer (or of the local layers' output)
    read, and where each position's window goes in its crop. A layer's distinct crops
    are gathered once per image, contiguous, when they fit in _OCCLUSION_CROP_BYTES
    (an item's crop is then one memcpy); else items crop the padded base map (a memcpy
    per crop row)."""

    def __init__(self, shape, top, left, window_top, window_left, itemsize, crop_bytes):
        P = len(window_top)
        self.shape = tuple(int(n) for n in shape)
        self.starts, self.size, self.distinct_bytes = None, 1, 0
        self.index = self.top = self.left = np.zeros(P, np.intp)
        if top is not None:  # else: the local layers' output, a whole map per image
            (row_starts, row_of), (col_starts, col_of) = (np.unique(a, return_inverse=True) for a in (top, left))
            distinct = len(row_starts) * len(col_starts)
            if distinct * math.prod(self.shape) * itemsize <= crop_bytes:
                self.starts = (row_starts[:, None].astype(np.intp), col_starts[None, :].astype(np.intp))
                self.size = distinct
                self.distinct_bytes = distinct * math.prod(self.shape) * itemsize
                self.index = (row_of * len(col_starts) + col_of).astype(np.intp)
            else:
                self.top, self.left = top.astype(np.intp), left.astype(np.intp)
        self.window_top, self.window_left = window_top.astype(np.intp), window_left.astype(np.intp)
        for a in (self.index, self.top, self.left, self.window_top, self.window_left):
            a.setflags(write=False)

    def gather(self, padded, buffer_name):
        """What `paste` reads for a chunk of images, from their (padded) base maps (in
        this thread's kept buffer `buffer_name`)."""
        from fastconv._kernels import windows
        from fastconv._threads import num_threads_for

        if self.starts is None:
            return padded
        n, (rows, cols) = len(padded), self.starts
        image = np.repeat(np.arange(n, dtype=np.intp), rows.size * cols.size)
        top, left = (np.tile(np.broadcast_to(a, (rows.size, cols.size)).ravel(), n) for a in (rows, cols))
        out = _kept_buffer(buffer_name, (len(image),) + self.shape, padded.dtype)
        windows.gather_crops(padded, image, top, left, out, num_threads_for(out.size))
        return out

    def paste(self, base, image, position, window, buffer):
        """The crops of items (image, position) with their windows over them, in `buffer`."""
        from fastconv._kernels import windows

        out = buffer[:len(image)]
        windows.paste_crops(base, self.index[position] + image * self.size, self.top[position],
                            self.left[position], np.ascontiguousarray(window), self.window_top[position],
                            self.window_left[position], out, 1)
        return out


@contextlib.contextmanager
def _dropout_off(model):
    """Dropout layers (anything named Dropout with a ``p``) at p = 0 for the duration."""
    saved = []
    for _, layer, _ in _flat_layers(model):
        if type(layer).__name__.startswith("Dropout") and hasattr(layer, "p"):
            saved.append((layer, layer.p))
            layer.p = 0.0
    try:
        yield
    finally:
        for layer, p in saved:
            layer.p = p


def saliency(model, x, target):
    """Image-specific class saliency: ``max over channels of |d score[target] / d x|``.

    The gradient of the class score (the logit, before the softmax) with
    respect to the input pixels, through ``model.forward(x, training=True)``
    and ``model.backward``. Dropout is switched off for the pass (its ``p`` is
    set to 0 and restored), so the map is deterministic and equals the
    eval-mode gradient for models of conv, pool, activation, Linear and
    Dropout layers. Side effects of the training pass remain: the layers'
    ``grads`` are overwritten, and batch-norm layers would use (and update)
    batch statistics.

    Parameters
    ----------
    model : Sequential
        Its output is (N, num_classes) class scores.
    x : ndarray, (N, C, H, W) float32 or float64
    target : int or array of N ints

    Returns
    -------
    ndarray, (N, H, W) of x's dtype
    """
    x = _images(x)
    with _dropout_off(model):
        scores = model.forward(x, training=True)
        if scores.ndim != 2:
            raise ValueError(f"the model must output (N, num_classes) scores, got shape {scores.shape}")
        targets = _targets(target, len(x), scores.shape[1])
        grad = np.zeros_like(scores)
        grad[np.arange(len(x)), targets] = 1
        grad_x = model.backward(grad)
    return np.abs(np.asarray(grad_x)).max(axis=1).astype(x.dtype, copy=False)


def embed(model, x, layer, method="tsne", random_state=0):
    """The codes (outputs) of `layer` for `x`, flattened and embedded in 2-D.

    Parameters
    ----------
    model : Sequential
    x : ndarray, (N, ...) float32 or float64
    layer : str
        E.g. the penultimate layer, whose codes the classifier separates.
    method : {"tsne", "pca"}
        scikit-learn's t-SNE (perplexity ``min(30, (N - 1) / 3)``, PCA start),
        or the fast principal-component projection (NumPy SVD).
    random_state : int
        Seed of t-SNE.

    Returns
    -------
    ndarray, (N, 2) float64
    """
    if method not in ("tsne", "pca"):
        raise ValueError(f"method must be 'tsne' or 'pca', got {method!r}")
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"x must have dtype float32 or float64, got {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"x must be a batch (N, ...), got shape {x.shape}")
    _check_layer(model, layer)
    codes = _forward_to(model, x, layer).reshape(len(x), -1).astype(np.float64)
    if method == "tsne" and len(x) >= 4:
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        perplexity = min(30.0, (len(x) - 1) / 3)
        # scikit-learn's OpenMP team meets at a barrier on every one of its 1000
        # gradient steps, each a few ms of work for the report's 360 digits; beside
        # other busy processes 2 threads took 35-42 s there, 1 thread 5-6 s.
        with threadpool_limits(1):
            return TSNE(n_components=2, perplexity=perplexity, init="pca",
                        random_state=random_state).fit_transform(codes).astype(np.float64)
    # PCA (and t-SNE's fallback for fewer than 4 points, where it is undefined).
    centred = codes - codes.mean(axis=0)
    points = np.zeros((len(x), 2))
    if len(x) and centred.shape[1]:
        u, s, _ = np.linalg.svd(centred, full_matrices=False)
        m = min(2, len(s))
        points[:, :m] = u[:, :m] * s[:m]
    return points


# -- plots -------------------------------------------------------------------
@contextlib.contextmanager
def _axes(path, ax, ncols=1, figsize=None):
    """Yield the Axes to draw on: `ax` itself, or a new Agg figure saved to `path`.

    Returns through ``holder[0]``: `ax` when given, else `path` (after saving),
    or the Figure when neither is given.
    """
    holder = [None]
    if ax is not None:
        holder[0] = ax
        yield ax, holder
        return
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize or (3.2 * ncols, 3.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    yield (axes[0] if ncols == 1 else axes), holder
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
        holder[0] = path
    else:
        holder[0] = fig


def _image_for_display(image):
    """(C, H, W) -> (H, W) grey or (H, W, 3) RGB in [0, 1] for imshow."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 3 and image.shape[0] == 3:
        return _normalise(image).transpose(1, 2, 0)
    if image.ndim == 3:
        return _normalise(image.mean(axis=0))
    return _normalise(image)


def plot_filters(weight, path=None, ax=None, padding=1, title=None):
    """Draw `filter_grid(weight, padding)`; write a PNG to `path` or draw on `ax`.

    Returns `ax` when given, else `path`, else the new matplotlib Figure.
    """
    grid = filter_grid(weight, padding)
    with _axes(path, ax) as (a, holder):
        a.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        a.set_axis_off()
        a.set_title(title or f"{np.shape(weight)[0]} filters {tuple(np.shape(weight)[2:])}")
    return holder[0]


def plot_activations(maps, path=None, ax=None, title=None, max_channels=64):
    """Draw one image's activation maps (C, H, W) as a grid, each map normalised.

    Returns `ax` when given, else `path`, else the new Figure.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3:
        raise ValueError(f"maps must be (C, H, W), one image's output of a conv layer; got shape {maps.shape}")
    # NaN gaps are masked, so they show the background rather than a colour of the map.
    grid = np.ma.masked_invalid(_tile(np.stack([_normalise(m) for m in maps[:max_channels]]), 1, fill=np.nan))
    with _axes(path, ax) as (a, holder):
        a.imshow(grid, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        a.set_axis_off()
        a.set_title(title or f"{min(len(maps), max_channels)} of {len(maps)} channels")
    return holder[0]


def plot_dead_filters(dead, channels, path=None, ax=None, title=None):
    """Bar chart of the dead channels per layer.

    `dead` is `dead_filters`' result; `channels` maps the same names to each
    layer's channel count. Returns `ax`, `path` or the new Figure.
    """
    names = list(dead)
    with _axes(path, ax, figsize=(max(3.2, 0.6 * len(names) + 1.5), 3.2)) as (a, holder):
        a.bar(range(len(names)), [channels[n] for n in names], color="0.85", label="channels")
        a.bar(range(len(names)), [len(dead[n]) for n in names], color="tab:red", label="dead")
        a.set_xticks(range(len(names)), [f"layer {n}" for n in names], rotation=45, ha="right")
        a.legend()
        a.set_title(title or "dead channels per layer")
    return holder[0]


def plot_top_activating(crops, path=None, ax=None, title=None):
    """Tile the crops of `top_activating` (each (C, h, w)), best first.

    Crops smaller than the largest (at the image border) sit in its top-left
    corner on white. Returns `ax`, `path` or the new Figure.
    """
    if len(crops) == 0:
        raise ValueError("crops is empty")
    shown = [_image_for_display(c) for c in crops]
    h = max(s.shape[0] for s in shown)
    w = max(s.shape[1] for s in shown)
    tiles = np.ones((len(shown), h, w) + shown[0].shape[2:])
    for t, s in zip(tiles, shown):
        t[:s.shape[0], :s.shape[1]] = s
    with _axes(path, ax) as (a, holder):
        a.imshow(_tile(tiles, 1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        a.set_axis_off()
        a.set_title(title or f"top {len(crops)} receptive fields")
    return holder[0]


def _plot_map(heat, image, path, ax, title, cmap, vmin, vmax, label):
    heat = np.asarray(heat, dtype=np.float64)
    if heat.ndim != 2:
        raise ValueError(f"the map must be (H, W), one image's; got shape {heat.shape}")
    pair = image is not None
    with _axes(path, ax, ncols=2 if pair else 1) as (a, holder):
        if pair:
            if not isinstance(a, (tuple, list, np.ndarray)) or len(a) != 2:
                raise TypeError("with image=, ax must be a pair of Axes (image, map)")
            a[0].imshow(_image_for_display(image), cmap="gray", interpolation="nearest")
            a[0].set_axis_off()
            a = a[1]
        shown = a.imshow(heat, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        a.set_axis_off()
        # The colour bar in an inset beside the map: no re-layout of the figure's grid.
        a.figure.colorbar(shown, cax=a.inset_axes([1.04, 0.0, 0.05, 1.0]), label=label)
        if title:
            a.set_title(title)
    return holder[0]


def plot_occlusion(heatmap, path=None, ax=None, image=None, title=None):
    """Draw one image's occlusion map (H', W') of probabilities in [0, 1].

    With `image` ((C, H, W) or (H, W)) the image is drawn beside it; `ax` is
    then a pair of Axes. Returns `ax`, `path` or the new Figure.
    """
    return _plot_map(heatmap, image, path, ax, title, "magma", 0.0, 1.0, "probability")


def plot_saliency(saliency_map, path=None, ax=None, image=None, title=None):
    """Draw one image's saliency map (H, W); `image` and `ax` as in `plot_occlusion`."""
    return _plot_map(saliency_map, image, path, ax, title, "hot", 0.0, None, "|d score / d x|")


def plot_embedding(points, labels=None, path=None, ax=None, title=None):
    """Scatter the (N, 2) points of `embed`, coloured by integer `labels` when given.

    Returns `ax`, `path` or the new Figure.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be (N, 2), got shape {points.shape}")
    with _axes(path, ax, figsize=(5, 4.5)) as (a, holder):
        if labels is None:
            a.scatter(points[:, 0], points[:, 1], s=8)
        else:
            labels = np.asarray(labels)
            if labels.shape != (len(points),):
                raise ValueError(f"labels must be (N,) = ({len(points)},), got shape {labels.shape}")
            for value in np.unique(labels):
                sel = labels == value
                a.scatter(points[sel, 0], points[sel, 1], s=8, label=str(value))
            a.legend(markerscale=2, fontsize="small", loc="best")
        a.set_xticks([])
        a.set_yticks([])
        a.set_title(title or "embedding")
    return holder[0]
