"""True (flipped) convolution of signals and images: `convolve`, `convolve2d`.

These are the mathematical convolution, (f * g)[c] = sum_a f[a] g[c - a], as in
`numpy.convolve` and `scipy.signal.convolve2d`: the kernel is flipped. The
network op `fastconv.conv2d` (and `conv1d`) is cross-correlation, as in every
deep-learning framework: there the kernel is not flipped.
"""
import numpy as np

from fastconv import _memory, _validation
from fastconv._kernels import widest_build
from fastconv._threads import get_num_threads

MODES = ("full", "same", "valid")

#: The compiled module: the build of conv_direct (its correlate kernels) fastconv._kernels
#: picks for this CPU. Tests swap it.
_kernel = widest_build("conv_direct")

#: Output columns per parallel task, and packed input values per thread (L1/L2-sized).
CHUNK = 2048
ROW_BUDGET = 32768

#: `convolve` transposes the signal into vector lanes (conv_direct.correlate1d: aligned loads, each
#: reused by a block of taps) on builds with 64-byte vectors, once the kernel is LANE_MIN_TAPS taps
#: per lane long (32 taps in float64, 64 in float32). Shorter kernels, and narrower builds, take the
#: row kernels: there the transposes cost more than the loads they save (docs/design.rst,
#: "convolve and convolve2d"). Re-measure with ``asv run -b Convolve``.
LANE_MIN_TAPS = 4
#: Outputs per lane and task: a multiple of every build's lane block, and not of 512 (lanes 4 KiB
#: apart would share L1 sets).
LANE_RUN = 528
#: The most bytes of transposed input per thread ((run + taps) x 64 bytes): L2-sized. Longer
#: kernels take the row kernels, whose workspace holds the kernel's span once, not once per lane.
LANE_BYTES = 1 << 20


def _correlate_flipped(image, kernel, out_shape, start):
    """out[r, t] = full_convolution(image, kernel)[r + start[0], t + start[1]]."""
    kh, kw = kernel.shape
    out = _memory.empty(out_shape, image.dtype)
    _correlate_into(image, np.ascontiguousarray(kernel[::-1, ::-1]), out, (kh - 1 - start[0], kw - 1 - start[1]),
                    _rows_per_pass(out_shape[1], kh, kw))
    return out


def _rows_per_pass(out_cols, kh, kw):
    """Kernel rows summed per pass over an output row (ROW_BUDGET): the passes fix each
    output's summation order, so a part of an image computed alone (fastconv.dask) takes
    the whole image's count to round the same."""
    return max(1, min(kh, ROW_BUDGET // (min(CHUNK, out_cols) + kw - 1)))


def _correlate_into(image, flipped, out, pad, rows_per_pass):
    """out[r, t] = sum_ij image[r - pad[0] + i, t - pad[1] + j] * flipped[i, j] (zero outside
    `image`), written into `out`; `image` and `out` may be views with strided rows."""
    num_threads = get_num_threads()
    chunk = min(CHUNK, out.shape[1])
    workspace = np.empty((num_threads, rows_per_pass * (chunk + flipped.shape[1] - 1)), dtype=image.dtype)
    _kernel.correlate2d(image, flipped, out, pad[0], pad[1], chunk, rows_per_pass, workspace, num_threads)


def _signal(x, name, ndim, dtype=None):
    x = _validation.float_array(x, name, ndim=ndim, dtype=dtype)
    if x.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {x.shape}")
    return x


def _mode_window(n, m, mode):
    """(output length, first index into the full convolution) along one axis of
    lengths n (the input) and m (the kernel), as NumPy and SciPy define the modes."""
    return {"full": (n + m - 1, 0), "same": (n, (m - 1) // 2), "valid": (n - m + 1, m - 1)}[mode]


def convolve(a, v, mode="full"):
    """Discrete linear convolution of two 1-D sequences, as ``numpy.convolve``.

    ``out[n] = sum_m a[m] * v[n - m]``: the true (flipped) convolution, unlike
    `fastconv.conv1d`, which is cross-correlation.

    Parameters
    ----------
    a : ndarray, shape (n,), float32 or float64
    v : ndarray, shape (m,), same dtype as `a`
    mode : {"full", "same", "valid"}
        ``"full"``: every overlap, shape (n + m - 1,). ``"same"``: shape
        (max(n, m),), centred on the full result. ``"valid"``: only full
        overlaps, shape (max(n, m) - min(n, m) + 1,).

    Returns
    -------
    out : ndarray, dtype of `a`
    """
    a = _signal(a, "a", 1)
    v = _signal(v, "v", 1, dtype=a.dtype)
    _validation.choice(mode, "mode", MODES)
    if v.size > a.size:            # convolution commutes; the kernel is the shorter one
        a, v = v, a
    length, start = _mode_window(a.size, v.size, mode)
    if _lanes_pay(a.dtype, v.size):
        return _correlate_lanes(a, v, length, start)
    return _correlate_flipped(a[None, :], v[None, :], (1, length), (0, start))[0]


def _lanes_pay(dtype, taps):
    """Whether `convolve` takes the lane kernel (LANE_MIN_TAPS, LANE_BYTES)."""
    double = dtype == np.float64
    lanes, _ = _kernel.lane_layout(double)
    return (lanes * dtype.itemsize >= 64 and taps >= LANE_MIN_TAPS * lanes
            and _kernel.lane_workspace(LANE_RUN, taps, double) * dtype.itemsize <= LANE_BYTES)


def _correlate_lanes(a, kernel, length, start):
    """out[t] = full_convolution(a, kernel)[t + start], by conv_direct.correlate1d."""
    double = a.dtype == np.float64
    lanes, block = _kernel.lane_layout(double)
    num_threads = get_num_threads()
    run = min(LANE_RUN, -(-length // (lanes * num_threads)))   # short signals: a task per thread
    run = -(-run // block) * block                              # (or nearly: runs come in blocks)
    out = np.empty(length, dtype=a.dtype)
    workspace = np.empty((num_threads, _kernel.lane_workspace(run, kernel.size, double)), dtype=a.dtype)
    _kernel.correlate1d(a, np.ascontiguousarray(kernel[::-1]), out, start - (kernel.size - 1), run,
                               workspace, num_threads)
    return out


def convolve2d(in1, in2, mode="full"):
    """2-D convolution, as ``scipy.signal.convolve2d`` with its default zero boundary.

    ``out[i, j] = sum_{k, l} in1[k, l] * in2[i - k, j - l]``: the true (flipped)
    convolution, unlike `fastconv.conv2d`, which is cross-correlation.

    Parameters
    ----------
    in1 : ndarray, shape (H1, W1), float32 or float64
    in2 : ndarray, shape (H2, W2), same dtype as `in1`
    mode : {"full", "same", "valid"}
        ``"full"``: shape (H1 + H2 - 1, W1 + W2 - 1). ``"same"``: the shape of
        `in1`, centred on the full result. ``"valid"``: only full overlaps,
        shape (abs(H1 - H2) + 1, abs(W1 - W2) + 1); one input must be at least as large
        as the other in every dimension.

    Returns
    -------
    out : ndarray, dtype of `in1`
    """
    in1 = _signal(in1, "in1", 2)
    in2 = _signal(in2, "in2", 2, dtype=in1.dtype)
    _validation.choice(mode, "mode", MODES)
    if mode == "valid" and (in1.shape[0] < in2.shape[0] or in1.shape[1] < in2.shape[1]):
        if in1.shape[0] > in2.shape[0] or in1.shape[1] > in2.shape[1]:
            raise ValueError(
                f"mode='valid' needs one input at least as large as the other in every dimension, "
                f"got in1 {in1.shape} and in2 {in2.shape}")
        in1, in2 = in2, in1        # convolution commutes; the kernel is the smaller one
    (rows, top), (cols, left) = (_mode_window(n, m, mode) for n, m in zip(in1.shape, in2.shape))
    return _correlate_flipped(in1, in2, (rows, cols), (top, left))
