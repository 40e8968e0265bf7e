"""fastconv's ops on dask arrays: images larger than memory, and more images than one machine scores.

Each function takes a dask array (any chunking, along any axis), checks its arguments
with the in-memory op's own validation before building anything, and returns a lazy dask
array equal to the in-memory op on the whole array. The graph is plain dask tasks, so it
runs on any dask scheduler, ``dask.distributed`` clusters included.

Every convolution, pool and `convolve2d` goes through one helper, `_halo_map`, which reads
the halos from the op's geometry (kernel, stride, padding, dilation, ceil_mode):

* each output goes to the input chunk under its window's centre (with stride 1 and "same"
  padding the output chunks are the input chunks), so a block's windows lie in its own
  chunk but for the halo, and chunks of any size (smaller than the kernel, not aligned to
  the stride) need no rechunking;
* the halo, the rows and columns a block's windows reach into its neighbours, is cut by
  one small task per chunk where the chunk lives (every part its neighbours read): only
  the halo moves between workers;
* a block's task assembles its input once, with the op's padding (zeros; -inf for max
  pooling) where it meets the array's borders, and runs the in-memory op with no padding;
  `convolve2d` copies no chunk at all: a block's interior rows are computed from its chunk
  in place, the rest from the few rows and columns of the halo, in the same task
  (`_convolve2d_block`);
* channel chunks are merged where a convolution needs every input channel.

Each output pixel is then computed from the same values in the same order as in memory,
so results are bitwise equal to the in-memory ops (tests/test_dask.py checks this), except
where the order depends on a block's size: the im2col algorithm of conv2d and
conv_transpose2d (BLAS blocks its GEMM by the matrix sizes), their winograd algorithm
(tiles start at each block's first output row) and `convolve2d` (the kernel's vector body and scalar tail round
differently, and a block's columns fall in them as its width decides) agree to rounding.
`conv_transpose2d`, whose halo lies before each block in the input, keeps its own helper
(`_TransposedAxis`, with dask's overlap).

Weights (and a model, in `predict`) enter the graph as one key that every task refers to,
so a distributed cluster ships them to each worker once; a `convolve2d` kernel of up to
64 KiB rides in each task instead (one key fewer to fetch before a worker's first block). Each task runs fastconv with its
share of the worker's threads (`_task_threads`), so dask and OpenMP do not oversubscribe.

Needs ``pip install fastconv[dask]`` (``dask[array]`` and ``distributed``).
"""
import bisect
import contextlib
import functools
import itertools
import math
import operator
import threading

import numpy as np

import fastconv as _fc
from fastconv import _autotune, _memory
from fastconv import _validation as v
from fastconv.convolution import _choose_algorithm
from fastconv.signal import _correlate_into, _mode_window, _rows_per_pass

try:
    import dask
    import dask.array as da
    from dask.array.overlap import overlap as _overlap
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph
except ImportError as error:  # pragma: no cover - exercised only without dask
    raise ImportError("fastconv.dask needs dask: pip install fastconv[dask]  "
                      "(or: pip install 'dask[array]' distributed)") from error

__all__ = ["conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "sum_pool2d", "convolve2d", "predict"]


# ---------------------------------------------------------------------------
# Threads

#: The fastconv.dask tasks running in this process now (counted by `_threads_context`).
_running = 0
_running_lock = threading.Lock()


def _task_threads(running=1):
    """fastconv threads for the task running now, so that the tasks running at once never
    run more OpenMP threads together than there are threads to run them (one task alone
    gets them all; as many tasks as threads, one each):

    * on a dask.distributed worker, its thread count (``threads_per_worker``) shared among
      the tasks it is executing at the moment;
    * elsewhere (dask's threaded scheduler, the default for dask arrays, or any pool in
      one process), fastconv's thread count shared among the `running` fastconv.dask
      tasks of this process; None for a task running alone (fastconv's default applies).

    The results do not depend on the count (the kernels split work by output rows, each
    summed the same way)."""
    try:
        from distributed import get_worker
        worker = get_worker()
    except (ImportError, ValueError):
        return None if running <= 1 else max(1, _fc.get_num_threads() // running)
    state = getattr(worker, "state", worker)
    return max(1, state.nthreads // max(1, len(getattr(state, "executing", ()))))


@contextlib.contextmanager
def _threads_context():
    """Run the block under ``fastconv.threads(n)`` with the task's share (`_task_threads`)."""
    global _running
    with _running_lock:
        _running += 1
        running = _running
    try:
        n = _task_threads(running)
        with _fc.threads(n) if n else contextlib.nullcontext():
            yield
    finally:
        with _running_lock:
            _running -= 1


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
    """One spatial axis of a windowed op: output ``o`` reads the input positions
    ``[o * stride - before, o * stride - before + span)``; those outside ``[0, n)`` are the
    op's padding."""

    def __init__(self, n, span, stride, before, out):
        self.n, self.span, self.stride, self.before, self.out = n, span, stride, before, out

    def blocks(self, input_chunks):
        """[(outputs, first input position read, last + 1)] for each output block.

        Each output goes to the input chunk under its window's centre, so that a block's
        windows lie mostly in one chunk (with stride 1 and "same" padding, the output
        chunks are the input chunks) and reach into the chunks around it by the halo alone."""
        if self.out == 0:
            return [(0, 0, 0)]
        s, centre = self.stride, self.before - (self.span - 1) // 2
        bounds = [0]
        for edge in np.cumsum(input_chunks)[:-1]:
            o = -(-(int(edge) + centre) // s)
            if bounds[-1] < o < self.out:
                bounds.append(o)
        bounds.append(self.out)
        return [(o1 - o0, o0 * s - self.before, (o1 - 1) * s - self.before + self.span)
                for o0, o1 in zip(bounds, bounds[1:])]


def _pieces(chunks, lo, hi):
    """[(chunk index, start, stop)]: the parts of the chunks, in their own coordinates,
    that cover ``[lo, hi)`` (clipped to the axis)."""
    pieces, start = [], 0
    for k, size in enumerate(chunks):
        a, b = max(lo, start), min(hi, start + size)
        if a < b:
            pieces.append((k, a - start, b - start))
        start += size
    return pieces


def _axis_plan(chunks, axis=None, merge=False):
    """[(output size, pieces, (padding before, padding after))] for each output block."""
    if axis is not None:
        n = sum(chunks)
        return [(size, _pieces(chunks, lo, hi), (max(0, min(hi, 0) - lo), max(0, hi - max(lo, n))))
                for size, lo, hi in axis.blocks(chunks)]
    if merge:
        return [(sum(chunks), [(k, 0, size) for k, size in enumerate(chunks)], (0, 0))]
    return [(size, [(k, 0, size)], (0, 0)) for k, size in enumerate(chunks)]


def _halo_map(run, x, axes, refs=(), merge=(), out_sizes=None, name="fastconv"):
    """A dask array of ``run(pieces, layout, *refs)``, one task per output block.

    Each task receives the input it reads as `pieces`, a nested list (one level per axis)
    of the input chunks' parts, and `layout`, per axis ``(padding before, piece sizes,
    padding after)``: the op's padding, where the block meets the array's border. The
    parts of neighbouring chunks (the halo) are cut by one small task per chunk (`_cut`,
    every part its neighbours read) that runs where the chunk lives, so only the halo
    moves between workers; nothing is rechunked or copied before the task, which
    assembles its input once (`_assemble`) or not at all.

    Parameters
    ----------
    run : callable
        ``run(pieces, layout, *refs) -> ndarray``: the output block.
    x : dask array
    axes : dict {axis: _Axis}
        The spatial axes and their geometry; the other axes keep their chunks...
    refs : tuple of dask.delayed
        Operands every task reads (weights, a kernel): one key each, shipped once per worker.
    merge : tuple of ints
        ...except these, brought into one block (a convolution's input channels).
    out_sizes : dict {axis: int}, optional
        The output's length along a merged axis, when it differs from the input's.
    """
    plans = [_axis_plan(c, axes.get(a), a in merge) for a, c in enumerate(x.chunks)]
    token = tokenize(x.name, run, plans, [r.key for r in refs])
    out_name, part_name = f"{name}-{token}", f"{name}-halo-{token}"
    graph, cuts = {}, {}

    def part(index, slices):
        if all(a == 0 and b == x.chunks[axis][k] for axis, (k, (a, b)) in enumerate(zip(index, slices))):
            return (x.name,) + index
        # One task per chunk cuts every part its neighbours read (a bundle of small arrays);
        # a block takes its part out of the bundle inside its own task.
        chunk_cuts = cuts.setdefault(index, {})
        j = chunk_cuts.setdefault(slices, len(chunk_cuts))
        return (operator.getitem, (part_name,) + index, j)

    def nested(blocks, axis=0, index=(), slices=()):
        if axis == len(blocks):
            return part(index, slices)
        return [nested(blocks, axis + 1, index + (k,), slices + ((a, b),)) for k, a, b in blocks[axis][1]]

    for block_index in itertools.product(*(range(len(plan)) for plan in plans)):
        blocks = [plan[j] for plan, j in zip(plans, block_index)]
        layout = tuple((before, tuple(b - a for _, a, b in pieces), after)
                       for _, pieces, (before, after) in blocks)
        pieces, ref_keys = nested(blocks), tuple(r.key for r in refs)
        graph[(out_name,) + block_index] = (run, pieces, layout) + ref_keys
    chunks = [tuple(size for size, _, _ in plan) for plan in plans]
    for axis, size in (out_sizes or {}).items():
        chunks[axis] = (size,)
    for index, chunk_cuts in cuts.items():
        graph[(part_name,) + index] = (_cut, (x.name,) + index,
                                       tuple(tuple(slice(a, b) for a, b in slices) for slices in chunk_cuts))
    hlg = HighLevelGraph.from_collections(out_name, graph, dependencies=[x, *refs])
    return da.Array(hlg, out_name, tuple(chunks), meta=np.empty((0,) * x.ndim, dtype=x.dtype))


def _cut(chunk, slices):
    """The parts ``chunk[s]`` of a chunk that its neighbours read, as copies (small: the
    halo), so that a part sent to another worker does not carry or keep the chunk."""
    return tuple(np.array(chunk[s]) for s in slices)


def _assemble(pieces, layout, pad_value, dtype):
    """The block's input as one array: the pieces in place, `pad_value` around them.
    A block read whole from one chunk is that chunk, not a copy."""
    shape = tuple(before + sum(sizes) + after for before, sizes, after in layout)
    if all(len(sizes) == 1 and before == after == 0 for before, sizes, after in layout):
        for _ in layout:
            pieces = pieces[0]
        return pieces
    out = np.empty(shape, dtype=dtype)
    for axis, (before, _, after) in enumerate(layout):
        ahead = (slice(None),) * axis
        if before:
            out[ahead + (slice(0, before),)] = pad_value
        if after:
            out[ahead + (slice(shape[axis] - after, None),)] = pad_value
    starts = [before + np.cumsum((0,) + sizes) for before, sizes, _ in layout]
    for index in itertools.product(*(range(len(sizes)) for _, sizes, _ in layout)):
        piece = pieces
        for i in index:
            piece = piece[i]
        out[tuple(slice(s[i], s[i + 1]) for s, i in zip(starts, index))] = piece
    return out


def _run_assembled(pieces, layout, *refs, op, pad_value, dtype, **kwargs):
    """``op(block, *refs, **kwargs)`` on the block's padded input, assembled once."""
    return op(_assemble(pieces, layout, pad_value, dtype), *refs, **kwargs)


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
def _conv2d_block(x, weight, bias=None, *, stride, dilation, groups, algorithm):
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
    run = functools.partial(_run_assembled, op=_conv2d_block, pad_value=0.0, dtype=x.dtype,
                            stride=(g.stride_h, g.stride_w), dilation=(g.dilation_h, g.dilation_w), groups=groups,
                            algorithm=algorithm)
    refs = (dask.delayed(weight, pure=True),) + (() if bias is None else (dask.delayed(bias, pure=True),))
    return _halo_map(run, x, _conv_axes(4, x.shape, g), refs, merge=(1,), out_sizes={1: weight.shape[0]},
                     name="fastconv-conv2d")


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
def _conv_transpose2d_block(x, weight, bias, *, stride, groups, dilation, algorithm, local, out_chunks, block_id):
    out = _fc.conv_transpose2d(x, weight, None, stride, 0, 0, groups, dilation, algorithm=algorithm)
    for axis in (2, 3):
        j = block_id[axis]
        out = _window(out, axis, local[axis][j], out_chunks[axis][j])
    out = np.ascontiguousarray(out)
    if bias is not None:
        out += bias[:, None, None]
    return out


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                     algorithm="auto"):
    """`fastconv.conv_transpose2d` of a dask array.

    Parameters
    ----------
    x : dask array, shape (N, C, H, W), float32 or float64
        Any chunking; channel chunks are merged.
    weight : ndarray, shape (C, K // groups, kh, kw), same dtype as `x`
    bias : ndarray, shape (K,), optional
    stride, padding, output_padding, groups, dilation, algorithm
        As in `fastconv.conv_transpose2d`; ``"auto"`` picks the algorithm from the whole
        array's shapes, so every block runs the one the in-memory op would.

    Returns
    -------
    out : dask array, shape (N, K, Ho, Wo), dtype of `x`
        ``Ho = (H - 1) * stride - 2 * padding + dilation * (kh - 1) + output_padding + 1``.
    """
    from fastconv.convolution_transpose import _args

    x = _dask_input(x)
    weight = _in_memory(weight, "weight", 4, x.dtype if x.dtype in v.FLOAT_DTYPES else None)
    bias = _in_memory(bias, "bias", 1, weight.dtype)
    _fc.conv_transpose2d(_meta(x), weight, bias, stride, padding, output_padding, groups, dilation,
                         algorithm=algorithm)
    _, _, _, groups, out_shape, g = _args(_meta(x), weight, bias, stride, padding, output_padding, groups,
                                          dilation)
    if algorithm == "auto":     # the in-memory op's choice: its class has the whole batch
        algorithm = _autotune.choose("grad_x", (x.shape[0],) + out_shape[1:], weight.shape, g, groups, x.dtype)
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
        dilation=(g.dilation_h, g.dilation_w), algorithm=algorithm, local=local, out_chunks=out_chunks,
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
    run = functools.partial(_run_assembled, op=block, pad_value=pad_value, dtype=x.dtype,
                            kernel_size=(g.kernel_h, g.kernel_w), stride=(g.stride_h, g.stride_w), **kwargs)
    return _halo_map(run, x, _conv_axes(x.ndim, x.shape, g), name=f"fastconv-{block.__name__[1:-6]}")


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

def _region(pieces, row_edges, col_edges, rows, cols, dtype):
    """Rows and columns ``[r0, r1) x [c0, c1)`` of the block's pieces (edges: where each
    piece starts): a view when one piece holds them, else a copy of the parts."""
    (r0, r1), (c0, c1) = rows, cols
    i, j = bisect.bisect_right(row_edges, r0) - 1, bisect.bisect_right(col_edges, c0) - 1
    if r1 <= row_edges[i + 1] and c1 <= col_edges[j + 1]:     # (the kernel reads rows of contiguous columns)
        view = pieces[i][j][r0 - row_edges[i]:r1 - row_edges[i], c0 - col_edges[j]:c1 - col_edges[j]]
        return view if view.strides[1] == view.itemsize else np.ascontiguousarray(view)
    out = np.empty((r1 - r0, c1 - c0), dtype=dtype)
    for i in range(len(row_edges) - 1):
        a, b = max(r0, row_edges[i]), min(r1, row_edges[i + 1])
        for j in range(len(col_edges) - 1 if a < b else 0):
            c, d = max(c0, col_edges[j]), min(c1, col_edges[j + 1])
            if c < d:
                out[a - r0:b - r0, c - c0:d - c0] = pieces[i][j][a - row_edges[i]:b - row_edges[i],
                                                                 c - col_edges[j]:d - col_edges[j]]
    return out


def _interior(sizes, before, span, outputs):
    """Outputs ``[p0, p1)`` whose windows lie in the largest piece alone (or run off the
    array's border beside it): computed from that chunk in place."""
    c = int(np.argmax(sizes))
    edges = np.cumsum((0,) + sizes)
    p0 = 0 if c == 0 else edges[c] + before
    p1 = outputs if c == len(sizes) - 1 else edges[c + 1] + before - span + 1
    return int(min(max(p0, 0), outputs)), int(min(max(p1, p0, 0), outputs))


def _convolve2d_plan(layout, kernel_shape):
    """(output shape, interior rows (p0, p1) and columns (q0, q1)) of a `convolve2d` block;
    an empty interior where no window lies inside one chunk."""
    (top, rows, bottom), (left, cols, right) = layout
    kh, kw = kernel_shape
    height, width = top + sum(rows) + bottom - kh + 1, left + sum(cols) + right - kw + 1
    p0, p1 = _interior(rows, top, kh, height)
    q0, q1 = _interior(cols, left, kw, width)
    if p0 == p1 or q0 == q1:
        p0 = p1 = q0 = q1 = 0
    return (height, width), (p0, p1), (q0, q1)


def _correlate_rows(out, rows, image, pad, flipped, rows_per_pass):
    """out[o0:o1] (whole rows) from `image`, whose first element is the block's padded
    input at `pad`."""
    o0, o1 = rows
    if o0 < o1:
        _correlate_into(image, flipped, out[o0:o1], (pad[0] - o0, pad[1]), rows_per_pass)


#: `convolve2d` kernels up to this size go into each task; larger ones are one key.
_INLINE_KERNEL_BYTES = 64 << 10


def _convolve2d_block(pieces, layout, flipped, *, rows_per_pass, dtype):
    """A `convolve2d` block, in one task: the rows whose windows lie in its own chunk
    (the block's largest piece) from the chunk in place, then the rows above and below
    them and the columns at their ends from a copy of the few rows and columns they read
    (the halo, and the chunk's edges). The op's zero padding is the kernel's, as in
    memory, so windows at the array's borders sum in the in-memory order."""
    (top, rows, _), (left, cols, _) = layout
    kh, kw = flipped.shape
    (height, width), (p0, p1), (q0, q1) = _convolve2d_plan(layout, flipped.shape)
    out = _memory.empty((height, width), dtype)
    if not rows or not cols:                # every window in the padding
        out[...] = 0
        return out
    edges = list(np.cumsum((0,) + rows)), list(np.cumsum((0,) + cols))

    def compute(o, u):
        (o0, o1), (u0, u1) = o, u
        if o0 == o1 or u0 == u1:
            return
        r = max(0, o0 - top), min(edges[0][-1], o1 - 1 - top + kh)
        c = max(0, u0 - left), min(edges[1][-1], u1 - 1 - left + kw)
        if r[0] >= r[1] or c[0] >= c[1]:
            out[o0:o1, u0:u1] = 0
            return
        image, pad = _region(pieces, *edges, r, c, dtype), (top + r[0], left + c[0])
        if u1 - u0 == width:
            _correlate_rows(out, (o0, o1), image, pad, flipped, rows_per_pass)
        else:
            part = np.empty((o1 - o0, u1 - u0), dtype=dtype)
            _correlate_into(image, flipped, part, (pad[0] - o0, pad[1] - u0), rows_per_pass)
            out[o0:o1, u0:u1] = part

    with _threads_context():
        if p0 == p1:                        # no window inside one chunk: the block is all halo
            compute((0, height), (0, width))
            return out
        # The interior rows, whole, from the chunk in place (no copy); the columns at their
        # ends, whose windows reach into the neighbours, come out wrong and are redone below.
        i, j = int(np.argmax(rows)), int(np.argmax(cols))
        r0, r1 = max(0, p0 - top), min(edges[0][-1], p1 - 1 - top + kh)
        chunk = pieces[i][j]
        _correlate_rows(out, (p0, p1), np.ascontiguousarray(chunk[r0 - edges[0][i]:r1 - edges[0][i]]),
                        (top + r0, left + edges[1][j]), flipped, rows_per_pass)
        compute((p0, p1), (0, q0))
        compute((p0, p1), (q1, width))
        compute((0, p0), (0, width))
        compute((p1, height), (0, width))
    return out


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
    flipped = np.ascontiguousarray(in2[::-1, ::-1])
    run = functools.partial(_convolve2d_block, dtype=in1.dtype, rows_per_pass=_rows_per_pass(axes[1].out, *in2.shape))
    if flipped.nbytes <= _INLINE_KERNEL_BYTES:
        # In each task: one key would be one more task, fetched by every worker before its first block.
        return _halo_map(functools.partial(run, flipped=flipped), in1, axes, name="fastconv-convolve2d")
    return _halo_map(run, in1, axes, (dask.delayed(flipped, pure=True),), name="fastconv-convolve2d")


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
