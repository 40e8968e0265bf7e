"""fastconv's ops on dask arrays: images larger than memory, and more images than one machine scores.

Each function takes a dask array (any chunking, along any axis), checks its arguments
with the in-memory op's own validation before building anything, and returns a lazy dask
array equal to the in-memory op on the whole array. The graph is built from dask.array
primitives (rechunk, overlap, map_blocks), so it runs on any dask scheduler,
``dask.distributed`` clusters included.

Every spatial op goes through one helper, `_halo_blocks`, which reads the halos from the
op's geometry (kernel, stride, padding, dilation, ceil_mode):

* the op's padding is applied once, explicitly, to the blocks at the array's borders
  (zeros; -inf for max pooling), and each block then runs the in-memory op with no
  padding, so a block at a border computes exactly what an interior block does;
* spatial chunks are realigned to whole output windows (chunk starts at multiples of
  the stride) and merged where they are smaller than the halo;
* each block gets, from its neighbours after it, the ``span - stride`` rows and columns
  its last windows reach into (``span = dilation * (kernel - 1) + 1``);
* channel chunks are merged where a convolution needs every input channel.

Each output pixel is then computed from the same values in the same order as in memory,
so results are bitwise equal to the in-memory ops (tests/test_dask.py checks this), except
where the order depends on a block's size: conv2d's im2col algorithm (BLAS blocks its
GEMM by the matrix sizes), its winograd algorithm (tiles start at each block's first
output row) and convolve2d's clipped border loops agree to rounding.

Weights (and a model, in `predict`) enter the graph as one key that every task refers to,
so a distributed cluster ships them to each worker once. Each task runs fastconv with its
share of the worker's threads (`_task_threads`), so dask and OpenMP do not oversubscribe.

Needs ``pip install fastconv[dask]`` (``dask[array]`` and ``distributed``).
"""
import contextlib
import functools
import math

import numpy as np

import fastconv as _fc
from fastconv import _validation as v
from fastconv.convolution import _choose_algorithm
from fastconv.signal import _mode_window

try:
    import dask
    import dask.array as da
    from dask.array.overlap import overlap as _overlap
except ImportError as error:  # pragma: no cover - exercised only without dask
    raise ImportError("fastconv.dask needs dask: pip install fastconv[dask]  "
                      "(or: pip install 'dask[array]' distributed)") from error

__all__ = ["conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "sum_pool2d", "convolve2d", "predict"]


# ---------------------------------------------------------------------------
# Threads

def _task_threads():
    """fastconv threads for the task running now: on a dask.distributed worker, its
    thread count (``threads_per_worker``) shared among the tasks it is executing at
    the moment, so that the worker's tasks together never run more OpenMP threads than
    it has threads (one task alone gets them all; as many tasks as threads, one each).
    Outside a worker: None (fastconv's own default applies). The results do not depend
    on the count (the kernels split work by output rows, each summed the same way)."""
    try:
        from distributed import get_worker
        worker = get_worker()
    except (ImportError, ValueError):
        return None
    state = getattr(worker, "state", worker)
    return max(1, state.nthreads // max(1, len(getattr(state, "executing", ()))))


def _threads_context():
    n = _task_threads()
    return _fc.threads(n) if n else contextlib.nullcontext()


def _on_worker_threads(op):
    """`op`, run under ``fastconv.threads(n)`` with the task's share of the worker's threads."""
    @functools.wraps(op)
    def run(*args, **kwargs):
        with _threads_context():
            return op(*args, **kwargs)
    return run


# ---------------------------------------------------------------------------
# Arguments

def _dask_input(x, name="x"):
    """`x` as a dask array with known chunk sizes (NumPy arrays are wrapped)."""
    if not isinstance(x, da.Array):
        if isinstance(x, (str, bytes)) or x is None:
            raise TypeError(f"{name} must be a dask array of float32 or float64, got {v._describe(x)}")
        x = da.asarray(x)
    if any(math.isnan(n) for n in x.shape):
        raise ValueError(f"{name} has unknown chunk sizes (shape {x.shape}); "
                         f"call {name}.compute_chunk_sizes() first")
    return x


def _in_memory(a, name, ndim, dtype):
    """A small operand (weight, bias, kernel) as a checked C-contiguous ndarray."""
    if a is None:
        return None
    if isinstance(a, da.Array):
        raise TypeError(f"{name} must be an in-memory array (it goes into the graph once), "
                        f"got a dask array; call {name}.compute() first")
    return v.float_array(a, name, ndim=ndim, dtype=dtype)


def _meta(x, batch_axes=1):
    """An empty stand-in for `x` (its leading axes of length 0), for running the in-memory
    op's own argument checks before anything is computed."""
    return np.empty((0,) * batch_axes + tuple(x.shape[batch_axes:]), dtype=x.dtype)


# ---------------------------------------------------------------------------
# The halo helper

class _Axis:
    """One spatial axis of a windowed op, in the coordinates of the padded input.

    Output ``o`` reads padded positions ``[o * stride, o * stride + span)``; the padded
    input starts `before` positions ahead of the input's first element and is
    ``(out - 1) * stride + span`` long (input past its end is never read).
    """

    def __init__(self, n, span, stride, before, out):
        self.n, self.span, self.stride, self.before, self.out = n, span, stride, before, out
        self.length = (out - 1) * stride + span

    def chunks(self, input_chunks):
        """(input chunks, output chunks, halo, border) along this axis.

        Block ``j`` outputs ``[o_j, o_j+1)``; its chunk starts at the input position of
        its first window, ``o_j * stride - before`` (near one of the input's own chunk
        starts, so little moves), and it borrows `halo` positions from the chunk after
        it; every chunk holds at least the halo. `border` is (padding before the first
        block, padded length of the last block)."""
        s = self.stride
        halo = max(0, self.span - s)
        least = max(1, halo)
        end = max(1, min(self.n, self.length - self.before))     # the input read: [0, end)
        edges, starts = [0], [0]
        for edge in np.cumsum(input_chunks)[:-1]:
            o = (int(edge) + self.before) // s
            start = o * s - self.before
            if o < self.out and start - edges[-1] >= least and end - start >= least:
                edges.append(start)
                starts.append(o)
        in_chunks = tuple(e - b for b, e in zip(edges, edges[1:] + [end]))
        out_chunks = tuple(e - b for b, e in zip(starts, starts[1:] + [self.out]))
        return in_chunks, out_chunks, halo, (self.before, (out_chunks[-1] - 1) * s + self.span)


def _halo_blocks(x, axes, merge=()):
    """Blocks of `x` ready for a windowed op run with no padding, once `_with_border`
    has padded the blocks at the array's borders.

    Parameters
    ----------
    x : dask array
    axes : dict {axis: _Axis}
        The spatial axes and their geometry.
    merge : tuple of ints
        Axes to bring into one chunk (a convolution's input channels).

    Returns
    -------
    blocks : dask array
        Block ``j`` along a spatial axis holds, after its border padding, the padded
        positions ``[o_j * stride, o_j+1 * stride + span - stride)``: every window of
        its outputs, whole, and nothing the op would turn into extra outputs.
    out_chunks : dict {axis: tuple of ints}
        The output's chunks along each spatial axis.
    border : dict {axis: (int, int, int)}
        For `_with_border`: padding before the first block, padded length of the last
        block, number of blocks.
    """
    chunks = list(x.chunks)
    out_chunks, depth, border, crop = {}, {}, {}, [slice(None)] * x.ndim
    for axis in merge:
        chunks[axis] = (x.shape[axis],)
    for axis, a in axes.items():
        chunks[axis], out_chunks[axis], halo, (before, last) = a.chunks(x.chunks[axis])
        crop[axis] = slice(0, sum(chunks[axis]))
        depth[axis] = (0, halo if len(chunks[axis]) > 1 else 0)
        border[axis] = (before, last, len(chunks[axis]))
    x = x[tuple(crop)].rechunk(tuple(chunks))
    if any(h for _, h in depth.values()):
        x = _overlap(x, depth=depth, boundary="none", allow_rechunk=False)
    return x, out_chunks, border


def _with_border(block, *args, op, border, pad_value, block_id, **kwargs):
    """``op(block, *args, **kwargs)`` on the block padded with `pad_value` where it meets
    the array's borders: the op's padding, applied once, as the whole array would have it
    (the last block also drops input that no window reads)."""
    widths = [(0, 0)] * block.ndim
    trim = [slice(None)] * block.ndim
    for axis, (before, last, blocks) in border.items():
        lo = before if block_id[axis] == 0 else 0
        if block_id[axis] == blocks - 1:
            widths[axis] = (lo, max(0, last - lo - block.shape[axis]))
            trim[axis] = slice(0, last)
        else:
            widths[axis] = (lo, 0)
    if any(w != (0, 0) for w in widths):
        block = np.pad(block, widths, constant_values=pad_value)
    return op(block[tuple(trim)], *args, **kwargs)


def _spatial(ndim):
    return ndim - 2, ndim - 1


def _output_chunks(blocks, out_chunks, replace=None):
    chunks = list(blocks.chunks)
    for axis, c in {**out_chunks, **(replace or {})}.items():
        chunks[axis] = c
    return tuple(chunks)


# ---------------------------------------------------------------------------
# Convolution

def _conv_axes(ndim, shape, g):
    h, w = _spatial(ndim)
    return {h: _Axis(shape[h], g.dilation_h * (g.kernel_h - 1) + 1, g.stride_h, g.pad_top, g.out_h),
            w: _Axis(shape[w], g.dilation_w * (g.kernel_w - 1) + 1, g.stride_w, g.pad_left, g.out_w)}


@_on_worker_threads
def _conv2d_block(x, weight, bias, *, stride, dilation, groups, algorithm):
    return _fc.conv2d(x, weight, bias, stride, 0, dilation, groups, algorithm=algorithm)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algorithm="auto"):
    """`fastconv.conv2d` (2-D cross-correlation, NCHW) of a dask array.

    Parameters
    ----------
    x : dask array, shape (N, C, H, W), float32 or float64
        Any chunking; channel chunks are merged (every output needs every input channel
        of its group), batch chunks are kept, spatial chunks realigned to the stride.
    weight : ndarray, shape (K, C // groups, kh, kw), same dtype as `x`
        In memory; it enters the graph once.
    bias : ndarray, shape (K,), optional
    stride, padding, dilation, groups, algorithm
        As in `fastconv.conv2d`; ``"auto"`` picks the algorithm from the whole array's
        shapes, so every block runs the one the in-memory op would.

    Returns
    -------
    out : dask array, shape (N, K, Ho, Wo), dtype of `x`
        Equal to ``fastconv.conv2d`` of the computed `x`.
    """
    x = _dask_input(x)
    weight = _in_memory(weight, "weight", 4, x.dtype if x.dtype in v.FLOAT_DTYPES else None)
    bias = _in_memory(bias, "bias", 1, weight.dtype)
    _fc.conv2d(_meta(x), weight, bias, stride, padding, dilation, groups, algorithm=algorithm)
    _, _, _, g, groups = v.conv2d_args(_meta(x), weight, bias, stride, padding, dilation, groups)
    if algorithm == "auto":
        algorithm = _choose_algorithm(x.shape, weight.shape, g, groups, x.dtype)
    blocks, out_chunks, border = _halo_blocks(x, _conv_axes(4, x.shape, g), merge=(1,))
    w = dask.delayed(weight, pure=True)
    b = None if bias is None else dask.delayed(bias, pure=True)
    return da.map_blocks(
        _with_border, blocks, w, b, op=_conv2d_block, border=border, pad_value=0.0,
        stride=(g.stride_h, g.stride_w), dilation=(g.dilation_h, g.dilation_w),
        groups=groups, algorithm=algorithm, chunks=_output_chunks(blocks, out_chunks, {1: (weight.shape[0],)}),
        dtype=x.dtype, meta=np.empty((0, 0, 0, 0), dtype=x.dtype))


# ---------------------------------------------------------------------------
# Transposed convolution: output rows [c*s - p, c'*s - p) come from the input rows
# [c - floor((k-1)*d / s), c') alone, so its halo lies before each block, in the input.

class _TransposedAxis:
    def __init__(self, n, kernel, stride, padding, dilation, out):
        self.n, self.stride, self.padding, self.out = n, stride, padding, out
        self.halo = (kernel - 1) * dilation // stride

    def chunks(self, input_chunks):
        """(input chunks, output chunks, start of each block's outputs in its own
        unpadded transposed convolution)."""
        s, p, least = self.stride, self.padding, max(1, self.halo)
        edges = [0]
        for edge in np.cumsum(input_chunks)[:-1]:
            edge = int(edge)
            if edge - edges[-1] >= least and self.n - edge >= least and 0 < edge * s - p < self.out:
                edges.append(edge)
        in_chunks = tuple(e - b for b, e in zip(edges, edges[1:] + [self.n]))
        out_starts = [0] + [e * s - p for e in edges[1:]]
        out_chunks = tuple(e - b for b, e in zip(out_starts, out_starts[1:] + [self.out]))
        local = (p,) + (self.halo * s,) * (len(edges) - 1)
        return in_chunks, out_chunks, local


def _window(a, axis, start, size):
    """a[start:start + size] along `axis`, zero-extended where `a` ends first (output rows
    that no input reaches, as output_padding adds)."""
    taken = a[(slice(None),) * axis + (slice(start, start + size),)]
    missing = size - taken.shape[axis]
    if missing:
        widths = [(0, 0)] * a.ndim
        widths[axis] = (0, missing)
        taken = np.pad(taken, widths)
    return taken


@_on_worker_threads
def _conv_transpose2d_block(x, weight, bias, *, stride, groups, dilation, local, out_chunks, block_id):
    out = _fc.conv_transpose2d(x, weight, None, stride, 0, 0, groups, dilation)
    for axis in (2, 3):
        j = block_id[axis]
        out = _window(out, axis, local[axis][j], out_chunks[axis][j])
    out = np.ascontiguousarray(out)
    if bias is not None:
        out += bias[:, None, None]
    return out


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """`fastconv.conv_transpose2d` of a dask array.

    Parameters
    ----------
    x : dask array, shape (N, C, H, W), float32 or float64
        Any chunking; channel chunks are merged.
    weight : ndarray, shape (C, K // groups, kh, kw), same dtype as `x`
    bias : ndarray, shape (K,), optional
    stride, padding, output_padding, groups, dilation
        As in `fastconv.conv_transpose2d`.

    Returns
    -------
    out : dask array, shape (N, K, Ho, Wo), dtype of `x`
        ``Ho = (H - 1) * stride - 2 * padding + dilation * (kh - 1) + output_padding + 1``.
    """
    from fastconv.convolution_transpose import _args

    x = _dask_input(x)
    weight = _in_memory(weight, "weight", 4, x.dtype if x.dtype in v.FLOAT_DTYPES else None)
    bias = _in_memory(bias, "bias", 1, weight.dtype)
    _, _, _, groups, out_shape, g = _args(_meta(x), weight, bias, stride, padding, output_padding, groups,
                                          dilation)
    axes = {2: _TransposedAxis(x.shape[2], g.kernel_h, g.stride_h, g.pad_top, g.dilation_h, out_shape[2]),
            3: _TransposedAxis(x.shape[3], g.kernel_w, g.stride_w, g.pad_left, g.dilation_w, out_shape[3])}
    chunks = list(x.chunks)
    chunks[1] = (x.shape[1],)
    local, out_chunks, depth = {}, {}, {}
    for axis, a in axes.items():
        chunks[axis], out_chunks[axis], local[axis] = a.chunks(x.chunks[axis])
        depth[axis] = (a.halo if len(chunks[axis]) > 1 else 0, 0)
    blocks = x.rechunk(tuple(chunks))
    if any(h for h, _ in depth.values()):
        blocks = _overlap(blocks, depth=depth, boundary="none", allow_rechunk=False)
    w = dask.delayed(weight, pure=True)
    b = None if bias is None else dask.delayed(bias, pure=True)
    return da.map_blocks(
        _conv_transpose2d_block, blocks, w, b, stride=(g.stride_h, g.stride_w), groups=groups,
        dilation=(g.dilation_h, g.dilation_w), local=local, out_chunks=out_chunks,
        chunks=_output_chunks(blocks, out_chunks, {1: (out_shape[1],)}), dtype=x.dtype,
        meta=np.empty((0, 0, 0, 0), dtype=x.dtype))


# ---------------------------------------------------------------------------
# Pooling

def _pool_input(x):
    x = _dask_input(x)
    if x.ndim not in (3, 4):
        raise ValueError(f"x must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape {x.shape}")
    return x


@_on_worker_threads
def _max_pool_block(x, *, kernel_size, stride, dilation):
    return _fc.max_pool2d(x, kernel_size, stride, 0, dilation)


@_on_worker_threads
def _sum_pool_block(x, *, kernel_size, stride):
    return _fc.sum_pool2d(x, kernel_size, stride, 0)


def _pool(x, block, g, pad_value, **kwargs):
    blocks, out_chunks, border = _halo_blocks(x, _conv_axes(x.ndim, x.shape, g))
    return da.map_blocks(_with_border, blocks, op=block, border=border, pad_value=pad_value,
                         kernel_size=(g.kernel_h, g.kernel_w), stride=(g.stride_h, g.stride_w),
                         chunks=_output_chunks(blocks, out_chunks), dtype=x.dtype,
                         meta=np.empty((0,) * x.ndim, dtype=x.dtype), **kwargs)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """`fastconv.max_pool2d` of a dask array (without ``return_indices``).

    Parameters
    ----------
    x : dask array, shape (N, C, H, W) or (C, H, W), float32 or float64
        Any chunking; batch and channel chunks are kept.
    kernel_size, stride, padding, dilation, ceil_mode
        As in `fastconv.max_pool2d`; the padding is -inf, added once at the borders.

    Returns
    -------
    out : dask array, shape (N, C, Ho, Wo) (or (C, Ho, Wo)), dtype of `x`
    """
    x = _pool_input(x)
    meta = _meta(x)
    _fc.max_pool2d(meta, kernel_size, stride, padding, dilation, ceil_mode)
    g = v.pool_geometry(x.shape[-2:], kernel_size, stride, padding, dilation, ceil_mode)
    return _pool(x, _max_pool_block, g, -np.inf, dilation=(g.dilation_h, g.dilation_w))


def _window_counts(n, kernel, stride, pad, out, count_include_pad):
    """Each window's length along one axis as the in-memory kernel counts it: clipped to
    the padded input (or, without count_include_pad, to the input)."""
    start = np.arange(out) * stride - pad
    end = np.minimum(start + kernel, n + pad)
    if not count_include_pad:
        start, end = np.maximum(start, 0), np.minimum(end, n)
    return end - start


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """`fastconv.avg_pool2d` of a dask array.

    Window sums are taken over the zero-padded blocks, then divided by each window's
    divisor as the in-memory op counts it (`count_include_pad`, ceil-mode windows past
    the padding, `divisor_override`).

    Parameters
    ----------
    x : dask array, shape (N, C, H, W) or (C, H, W), float32 or float64
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        As in `fastconv.avg_pool2d`.

    Returns
    -------
    out : dask array, shape (N, C, Ho, Wo) (or (C, Ho, Wo)), dtype of `x`
    """
    x = _pool_input(x)
    _fc.avg_pool2d(_meta(x), kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    g = v.pool_geometry(x.shape[-2:], kernel_size, stride, padding, 1, ceil_mode)
    sums = _pool(x, _sum_pool_block, g, 0.0)
    if divisor_override is not None:
        return sums / x.dtype.type(divisor_override)
    H, W = x.shape[-2:]
    rows = _window_counts(H, g.kernel_h, g.stride_h, g.pad_top, g.out_h, count_include_pad)
    cols = _window_counts(W, g.kernel_w, g.stride_w, g.pad_left, g.out_w, count_include_pad)
    # The kernel divides by the integer count rows * cols cast to the dtype: exact as a
    # product of the two casts for every window smaller than 2**24 elements.
    rows = da.from_array(rows.astype(x.dtype)[:, None], chunks=(sums.chunks[-2], 1))
    cols = da.from_array(cols.astype(x.dtype)[None, :], chunks=(1, sums.chunks[-1]))
    return sums / (rows * cols)


def sum_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False):
    """`fastconv.sum_pool2d` of a dask array.

    Parameters
    ----------
    x : dask array, shape (N, C, H, W) or (C, H, W), float32 or float64
    kernel_size, stride, padding, ceil_mode
        As in `fastconv.sum_pool2d`.

    Returns
    -------
    out : dask array, shape (N, C, Ho, Wo) (or (C, Ho, Wo)), dtype of `x`
    """
    x = _pool_input(x)
    _fc.sum_pool2d(_meta(x), kernel_size, stride, padding, ceil_mode)
    g = v.pool_geometry(x.shape[-2:], kernel_size, stride, padding, 1, ceil_mode)
    return _pool(x, _sum_pool_block, g, 0.0)


# ---------------------------------------------------------------------------
# Signal convolution

@_on_worker_threads
def _convolve2d_block(in1, in2):
    return _fc.convolve2d(in1, in2, "valid")


@_on_worker_threads
def _convolve2d_whole(in1, in2, mode):
    return _fc.convolve2d(in1, in2, mode)


def convolve2d(in1, in2, mode="full"):
    """`fastconv.convolve2d` (true 2-D convolution, as ``scipy.signal.convolve2d``) of a
    dask array by an in-memory kernel.

    Parameters
    ----------
    in1 : dask array, shape (H1, W1), float32 or float64
        The image; any chunking.
    in2 : ndarray, shape (H2, W2), same dtype as `in1`
        The kernel, in memory.
    mode : {"full", "same", "valid"}

    Returns
    -------
    out : dask array, dtype of `in1`
        Shaped as `fastconv.convolve2d`'s result.
    """
    in1 = _dask_input(in1, "in1")
    in2 = _in_memory(in2, "in2", 2, in1.dtype if in1.dtype in v.FLOAT_DTYPES else None)
    # The in-memory op's own checks, on a stand-in of in1 (one element; empty leading axes
    # when in1 is not 2-D, which the op then rejects).
    _fc.convolve2d(np.empty((1, 1) if in1.ndim == 2 else _meta(in1).shape, dtype=in1.dtype), in2[:1, :1], mode)
    if 0 in in1.shape:
        raise ValueError(f"in1 must not be empty, got shape {in1.shape}")
    if in2.size == 0:
        raise ValueError(f"in2 must not be empty, got shape {in2.shape}")
    if mode == "valid" and (in1.shape[0] < in2.shape[0] or in1.shape[1] < in2.shape[1]):
        if in1.shape[0] > in2.shape[0] or in1.shape[1] > in2.shape[1]:
            raise ValueError(
                f"mode='valid' needs one input at least as large as the other in every dimension, "
                f"got in1 {in1.shape} and in2 {in2.shape}")
        # A kernel at least as large as the image: a small output, from the image in one block.
        out_shape = tuple(m - n + 1 for n, m in zip(in1.shape, in2.shape))
        return da.map_blocks(_convolve2d_whole, in1.rechunk(-1), dask.delayed(in2, pure=True), mode,
                             chunks=tuple((n,) for n in out_shape), dtype=in1.dtype,
                             meta=np.empty((0, 0), dtype=in1.dtype))
    axes = {}
    for axis, (n, m) in enumerate(zip(in1.shape, in2.shape)):
        length, start = _mode_window(n, m, mode)
        # full[r] reads the input zero-padded by m - 1 on each side at [r, r + m).
        axes[axis] = _Axis(n, m, 1, m - 1 - start, length)
    blocks, out_chunks, border = _halo_blocks(in1, axes)
    return da.map_blocks(_with_border, blocks, dask.delayed(in2, pure=True), op=_convolve2d_block, border=border,
                         pad_value=0.0,
                         chunks=_output_chunks(blocks, out_chunks), dtype=in1.dtype,
                         meta=np.empty((0, 0), dtype=in1.dtype))


# ---------------------------------------------------------------------------
# Models

@_on_worker_threads
def _forward_block(x, model):
    return model.forward(x, training=False)


def predict(model, x, batch_size=None):
    """A model's eval forward (``model.forward(x, training=False)``) over a dask array of images.

    Parameters
    ----------
    model : fastconv model (``Sequential`` or any layer with ``forward``)
        Enters the graph as one key: a distributed cluster sends it to each worker once.
    x : dask array, shape (N, ...), float32 or float64
        Chunked along the batch; the other axes are brought into one chunk.
    batch_size : int, optional
        Images per task (x is rechunked along the batch); default: x's own batch chunks.

    Returns
    -------
    out : dask array, shape (N, ...) (the model's output shape), chunked as the batch
        Equal to ``model.forward(x, training=False)`` in memory; bitwise with the
        calibration of ``algorithm="auto"`` off (``FASTCONV_AUTOTUNE=0`` here and on the
        workers), otherwise to rounding: each process and batch size may measure another
        algorithm for a layer (docs/algorithms.rst).
    """
    if not callable(getattr(model, "forward", None)):
        raise TypeError(f"model must have a forward(x, training) method, got {type(model).__name__}")
    x = _dask_input(x)
    if x.ndim < 1:
        raise ValueError(f"x must have a batch axis, got shape {x.shape}")
    batch = -1 if batch_size is None else v.integer(batch_size, "batch_size", minimum=1)
    x = x.rechunk((x.chunks[0] if batch == -1 else batch,) + (-1,) * (x.ndim - 1))
    # An empty batch checks that the model takes such input, and gives its output shape and dtype.
    probe = model.forward(_meta(x), training=False)
    # The non-batch axes are one chunk each, so they may change in number.
    extra = dict(drop_axis=list(range(probe.ndim, x.ndim))) if probe.ndim < x.ndim else dict(
        new_axis=list(range(x.ndim, probe.ndim)))
    return da.map_blocks(_forward_block, x, dask.delayed(model), chunks=(x.chunks[0],) + tuple(
        (n,) for n in probe.shape[1:]), dtype=probe.dtype, meta=probe[:0], **extra)
