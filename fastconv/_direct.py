"""The `direct` convolution algorithm: conv2d and its gradients with no column matrix.

Called by `fastconv.convolution` with checked, C-contiguous arrays and a
normalised geometry. Scratch memory is one buffer per thread: the forward
pass's band of input planes (about BAND_BYTES; its tiles store straight into the
output), the same for grad_x (which runs as a forward convolution of grad_output;
at stride > 1 plus the band's rows of its phases, stored from there into grad_x)
and for grad_weight (plus one block of the band's grad_output, transposed, and
the thread's partial sums, one weight gradient), or, where planes would not fit,
the row kernels' few zero-padded input rows (capped near ROW_BUDGET values);
never anything that grows with the batch or with C*kh*kw times the output. A
forward on channel tiles (and grad_x, which runs as one) also packs a copy of the
weights, at most their size (at stride > 1, of the phases' common windows).
"""
import math

import numpy as np

from fastconv import _memory
from fastconv import _validation as v
from fastconv._kernels import widest_build
from fastconv._kernels.conv_gemm import swap_last_axes

#: The compiled module in use: the build fastconv._kernels picks for this CPU. Tests swap it.
kernel = widest_build("conv_direct")

#: Values of packed input rows one thread keeps (64 KiB of float32): L1/L2-sized.
ROW_BUDGET = 16384


def _channel_chunk(channels, per_channel):
    """How many channels' packed rows fit in ROW_BUDGET (at least one)."""
    return max(1, min(channels, ROW_BUDGET // max(1, per_channel)))


#: Bytes of one thread's forward input planes (a band of input rows): about a
#: quarter of a 1-2 MiB L2, and small enough that direct conv2d's extra memory
#: stays under 1 MiB at 2 threads.
BAND_BYTES = 256 * 1024


#: The most one output row's planes may take (a huge dilation or padding makes
#: them as wide as the dilated kernel); beyond it auto picks im2col, and grad_x
#: runs on the row kernels instead.
MAX_ROW_PLANES_BYTES = 64 << 20


def _plane_shape(g, band_rows):
    """(rows, width) of each phase plane under a band of output rows: the band plus
    the window's reach below it, and the output row plus the window's reach right
    of it, both in stride phases (the layout of conv_direct.pyx's forward)."""
    return (band_rows + (g.kernel_h - 1) * g.dilation_h // g.stride_h,
            g.out_w + (g.kernel_w - 1) * g.dilation_w // g.stride_w)


def _planes_bytes(C, g, band_rows, itemsize):
    """Bytes of all C * stride_h * stride_w phase planes of a band."""
    rows, width = _plane_shape(g, band_rows)
    return C * g.stride_h * g.stride_w * rows * width * itemsize


def planes_fit(C, g, itemsize):
    """Whether the planes of the smallest band (one output row) stay within
    MAX_ROW_PLANES_BYTES."""
    return _planes_bytes(C, g, 1, itemsize) <= MAX_ROW_PLANES_BYTES


def _band_rows(C, g, itemsize):
    """Output rows whose planes (C input channels) fit in BAND_BYTES, at least one."""
    per_row = _planes_bytes(C, g, 1, itemsize) - _planes_bytes(C, g, 0, itemsize)
    reach = _plane_shape(g, 0)[0]
    return max(1, min(BAND_BYTES // max(1, per_row) - reach, g.out_h))


def _plan(C, g, dtype, band_rows):
    """The planes of C input channels under bands of band_rows output rows."""
    plane_rows, plane_width = _plane_shape(g, band_rows)
    return kernel.ForwardPlan(C * g.stride_h * g.stride_w, plane_rows, plane_width, band_rows,
                              dtype == np.float64)


def forward(x, weight, bias, g, groups, num_threads, relu=False, packed=None):
    """(N, K, Ho, Wo) = conv2d(x, weight) + bias (with `relu`: max(that, 0), fused into
    the tiles' store). `packed`: `prepare(weight, g, groups)`'s result, computed earlier
    for the same weights (the layers' eval cache), else packed here if channel tiles pay."""
    N, K = x.shape[0], weight.shape[0]
    v.allocatable((N, K, g.out_h, g.out_w), x.dtype, "output")
    out = _memory.empty((N, K, g.out_h, g.out_w), x.dtype)
    _forward_into(out, x, weight, bias, g, groups, num_threads, relu, packed)
    return out


#: Output pixels a task's band should hold so that each block of weights it loads
#: serves enough tiles: below this (a small map at a small batch), a band's channels
#: are split over tasks instead of its rows.
MIN_BAND_PIXELS = 96


def _tasks(N, K, C, g, itemsize, num_threads, blocks):
    """(band rows, channel splits) of the forward: bands as tall as BAND_BYTES allows
    but enough tasks (two per thread) to keep every thread busy; where that would cut
    bands below MIN_BAND_PIXELS, bands of at least that many pixels whose blocks of
    output channels are split over tasks (every task then reads 1/splits of the
    weights, which a small map, read from cache, would otherwise reread per band).
    Re-measure with ``python -m fastconv bench --sections nets`` (ResNet-18 at batch 1)."""
    fit = _band_rows(C, g, itemsize)
    rows = max(1, min(fit, -(-N * g.out_h // (2 * num_threads))))
    if num_threads == 1 or N == 0 or rows * g.out_w >= MIN_BAND_PIXELS:
        return rows, 1
    rows = min(fit, g.out_h, max(rows, -(-MIN_BAND_PIXELS // g.out_w)))
    bands = N * -(-g.out_h // rows)
    return rows, max(1, min(blocks, -(-4 * num_threads // bands)))


def prepare(weight, g, groups):
    """What the forward derives from the weights alone: their channel-tile packing
    (`_pack_channels`), or None where pixel tiles run. The layers keep it between eval
    forwards while their weights do not change."""
    taps = math.prod(weight.shape[1:])
    K = weight.shape[0]
    return _pack_channels(weight, groups) if _channel_tiles_pay(g, K // groups, taps, weight.dtype) else None


def _forward_into(out, x, weight, bias, g, groups, num_threads, relu=False, packed=None):
    N, C = x.shape[:2]
    K = weight.shape[0]
    if not planes_fit(C, g, x.dtype.itemsize):
        raise MemoryError(f"algorithm='direct' would need {_planes_bytes(C, g, 1, x.dtype.itemsize)} bytes of "
                          f"input planes per output row (dilation and padding span {g.kernel_h}x{g.kernel_w} "
                          f"taps over a wide window); use algorithm='im2col'")
    if bias is None:
        bias = np.zeros(K, dtype=x.dtype)
    taps = math.prod(weight.shape[1:])
    if packed is None:
        packed = prepare(weight, g, groups)
    Kg, block = K // groups, kernel.channel_block(x.dtype == np.float64)
    full = 0 if packed is None else Kg // block
    blocks = full + -(-(Kg - full * block) // kernel.tile_rows())
    rows, splits = _tasks(N, K, C, g, x.dtype.itemsize, num_threads, blocks)
    plan = _plan(C, g, x.dtype, rows)
    workspace = np.empty((num_threads, plan.size), dtype=x.dtype)
    kernel.conv2d_forward(x, weight.reshape(K, taps), bias, out, g.struct(), groups, plan, workspace, num_threads,
                          packed, splits, relu)


#: Taps from which the forward's channel tiles beat its pixel tiles whatever the rows' width.
CHANNEL_TILE_TAPS = 256


def _channel_tiles_pay(g, Kg, taps, dtype):
    """Whether the forward runs channel tiles (for each group's whole blocks of
    output channels) rather than pixel tiles only. Pixel tiles spend Wq - Wo lanes
    of each plane row on no output; channel tiles spend none, but transpose each
    tile's sums to store them, which only many taps amortise. Only the AVX-512
    build has the 32 vector registers their 24 accumulators need.

    The thresholds come from interleaved A/B runs of both kinds forced in turn
    (docs/design.rst, "Channel tiles"); re-measure with
    ``python -m fastconv bench --sections direct`` or ``asv run -b Conv2dForward``.
    """
    if kernel.compiled_isa() != 2 or Kg < kernel.channel_block(dtype == np.float64):
        return False
    wasted = _plane_shape(g, 1)[1] - g.out_w      # pixel tiles' lanes per row past its outputs
    return taps >= CHANNEL_TILE_TAPS or 10 * wasted >= g.out_w


def channel_tiles_cover(g, Kg, taps, dtype):
    """Whether the forward runs channel tiles for at least three quarters of each
    group's Kg output channels (the rest run on pixel tiles)."""
    block = kernel.channel_block(dtype == np.float64)
    return _channel_tiles_pay(g, Kg, taps, dtype) and 4 * (Kg % block) <= Kg


def _pack_channels(weight, groups):
    """The weights of each group's whole blocks of channel_block output channels,
    laid out for channel tiles (conv2d_forward's `packed`): channel-fastest. None
    if there is no whole block (the rule lets none through; tests force it). Each
    block is transposed by the compiled blocked transpose: NumPy's strided copy took
    1.0-1.6 ms for 2 MiB of float32 (a DCGAN's 4x4x256x128, packed on every call of
    conv_transpose2d's direct phases) against 0.16-0.18."""
    K, taps = weight.shape[0], math.prod(weight.shape[1:])
    block = kernel.channel_block(weight.dtype == np.float64)
    Kg = K // groups
    full = Kg // block
    if full == 0:
        return None
    w = weight.reshape(groups, Kg, taps)[:, :full * block].reshape(groups * full, block, taps)
    packed = np.empty((groups * full, taps, block), dtype=weight.dtype)
    swap_last_axes(np.ascontiguousarray(w), packed)
    return packed.reshape(-1, block)


def _grad_weight_planes(grad_output, x, weight, g, groups, num_threads):
    """grad_weight with one input channel per group (depthwise): dots over the forward's
    phase planes, one output channel per task. Faster than the row kernels, which pay a
    call per (row, tap); both read x and grad_output from memory once. Re-measure with
    ``asv run -b Conv2dBackward`` (the depthwise case).
    """
    # tasks are output channels, so bands only bound the memory; they split the sums, so
    # their height must not depend on the thread count (every count gives the same bits)
    plan = _plan(1, g, x.dtype, _band_rows(1, g, x.dtype.itemsize))
    size = kernel.grad_weight_planes_workspace(plan, x.dtype == np.float64)
    workspace = np.empty((num_threads, size), dtype=x.dtype)
    grad_w = np.zeros_like(weight)
    kernel.conv2d_grad_weight_planes(grad_output, x, grad_w, g.struct(), groups, plan, workspace, num_threads)
    return grad_w


def _grad_weight_tiles(grad_output, x, weight, g, groups, num_threads):
    """grad_weight on register tiles over the forward's phase planes: each thread sums its
    bands' pixels into its own copy of the weight gradient (channels padded to whole
    tiles), and the copies are added up here."""
    N, C = x.shape[:2]
    K = weight.shape[0]
    Kg, taps = K // groups, math.prod(weight.shape[1:])
    block = kernel.grad_weight_block(x.dtype == np.float64)
    ldg = -(-Kg // block) * block
    # bands as tall as BAND_BYTES allows, but enough tasks (two per thread) to keep every thread busy
    rows = max(1, min(_band_rows(C, g, x.dtype.itemsize), -(-N * g.out_h // (2 * num_threads))))
    plan = _plan(C, g, x.dtype, rows)
    workspace = np.empty((num_threads, kernel.grad_weight_tiles_workspace(plan, g.out_w, x.dtype == np.float64)),
                         dtype=x.dtype)
    parts = np.zeros((num_threads, groups * taps * ldg), dtype=x.dtype)
    kernel.conv2d_grad_weight_tiles(grad_output, x, parts, g.struct(), groups, K, plan, workspace, num_threads)
    total = parts[0] if num_threads == 1 else parts.sum(axis=0)
    return np.ascontiguousarray(total.reshape(groups, taps, ldg)[:, :, :Kg].transpose(0, 2, 1)).reshape(weight.shape)


def _grad_x_as_forward(grad_output, weight, grad_x, transposed, groups, num_threads):
    """Stride 1: grad_x is the forward convolution of grad_output with each group's
    weights flipped and transposed (K/groups in, C/groups out), over the
    `transposed` geometry."""
    K, Cg, kh, kw = weight.shape
    Kg = K // groups
    flipped = np.ascontiguousarray(weight.reshape(groups, Kg, Cg, kh, kw)[..., ::-1, ::-1]
                                   .transpose(0, 2, 1, 3, 4).reshape(groups * Cg, Kg, kh, kw))
    _forward_into(grad_x, grad_output, flipped, None, transposed, groups, num_threads)


def _transposed(g, x_shape):
    """The stride-1 geometry that maps grad_output onto grad_x (x_shape's H, W):
    padded by dilation * (kernel - 1) - padding (negative: cropped)."""
    kh, kw = g.kernel_h, g.kernel_w
    return v.ConvGeometry(kh, kw, 1, 1, g.dilation_h * (kh - 1) - g.pad_top, g.dilation_w * (kw - 1) - g.pad_left,
                          g.dilation_h, g.dilation_w, x_shape[2], x_shape[3])


def _phase(size, stride, dilation, kernel, pad, r):
    """One dimension of grad_x's stride phase r: (taps, first, count, step, offset).
    The input positions first, first + stride, ... (`count` of them) are those whose
    padded index is r mod stride; the window taps that land on them are `taps`, and
    position first + q*stride gets grad_output[q + offset - m*step] * weight[taps[m]]
    summed over m: a stride-1 correlation with the taps reversed, `step` apart."""
    taps = [i for i in range(kernel) if i * dilation % stride == r]
    first = (r - pad) % stride
    count = max(0, -(-(size - first) // stride))
    step = dilation // math.gcd(stride, dilation)
    offset = ((first + pad - r) - (taps[-1] * dilation - r)) // stride if taps else 0
    return taps, first, count, step, offset


def _reversed(taps):
    """`taps` (ascending, evenly spaced: _phase's) reversed, as a slice: a view, where
    indexing by the list would copy (0.16 against 0.06 ms at 3x3x128x64)."""
    step = taps[1] - taps[0] if len(taps) > 1 else 1
    return slice(taps[-1], taps[0] - 1 if taps[0] else None, -step)


#: The share of a common window's products that may be zeros (taps a phase does not
#: have) before grad_x's phases of different sub-kernel shapes run as separate
#: convolutions, each reading grad_output again. conv_transpose2d of (8, 128, 14, 14)
#: by 3x3 at stride 2 (7 zeros in 16): 0.54-0.62x (float32) and 0.48-0.70x (float64)
#: the time of the common window; C4's 11x11 at stride 4 (23 in 144) keeps it.
PHASE_WASTE = 1 / 3


def _grad_x_phases(grad_output, weight, grad_x, g, groups, num_threads):
    """Any stride: grad_x's stride_h * stride_w phases (the input pixels whose padded
    index is (ry, rx) mod the stride) are each a stride-1 correlation of grad_output
    with the reversed taps that land on them (a sub-kernel of the flipped weights).
    Placed in one common window (zeros where a phase has no tap), the phases become the
    output channels of one stride-1 forward convolution on the forward's tiles, each
    stored straight into its phase of grad_x (conv2d_forward_shuffle). Phases no tap
    lands on are zero; phases whose windows are out of step with each other (some
    dilations) run as separate convolutions, and so do phases of different sub-kernel
    shapes where the common window's zeros would be more than `PHASE_WASTE` of its
    products (3x3 at stride 2: 2x2, 2x1, 1x2 and 1x1 taps, 7 zeros in 16)."""
    K, Cg, kh, kw = weight.shape
    N, H, W = grad_x.shape[0], grad_x.shape[2], grad_x.shape[3]
    dims = ([_phase(H, g.stride_h, g.dilation_h, kh, g.pad_top, r) for r in range(g.stride_h)],
            [_phase(W, g.stride_w, g.dilation_w, kw, g.pad_left, r) for r in range(g.stride_w)])
    live = []
    for ph in dims[0]:
        for pw in dims[1]:
            if not (ph[0] and pw[0]):
                grad_x[:, :, ph[1]::g.stride_h, pw[1]::g.stride_w] = 0
            elif ph[2] and pw[2]:
                live.append((ph, pw))

    def runs_by(key):
        runs = {}
        for ph, pw in live:
            runs.setdefault(key(ph, pw), []).append((ph, pw))
        return list(runs.values())

    runs = runs_by(lambda ph, pw: (ph[4] % ph[3], pw[4] % pw[3]))
    taps = sum(len(ph[0]) * len(pw[0]) for ph, pw in live)
    window = sum(len(run) * max(len(ph[0]) for ph, _ in run) * max(len(pw[0]) for _, pw in run) for run in runs)
    if window - taps > PHASE_WASTE * window:
        runs = runs_by(lambda ph, pw: (ph[4] % ph[3], pw[4] % pw[3], len(ph[0]), len(pw[0])))
    if N == 0:
        return
    for phases in runs:
        _grad_x_phase_run(grad_output, weight, grad_x, phases, g, groups, num_threads)


def _grad_x_phase_run(grad_output, weight, grad_x, phases, g, groups, num_threads):
    """One stride-1 forward convolution for `phases` [(row phase, column phase)] of
    _phase's tuples, whose offsets agree modulo their step."""
    K, Cg, kh, kw = weight.shape
    Kg = K // groups
    N = grad_x.shape[0]
    windows = []
    for d in range(2):
        step = phases[0][d][3]
        lo = min(p[d][4] for p in phases)
        size = max((p[d][4] - lo) // step + len(p[d][0]) for p in phases)
        windows.append((step, lo, size, max(p[d][2] for p in phases)))
    (step_h, lo_h, size_h, rows), (step_w, lo_w, size_w, cols) = windows
    P = len(phases)
    sub = np.zeros((groups, P, Cg, Kg, size_h, size_w), dtype=grad_x.dtype)
    w = weight.reshape(groups, Kg, Cg, kh, kw).transpose(0, 2, 1, 3, 4)     # (groups, Cg, Kg, kh, kw)
    place = np.empty((groups, P, Cg, 5), dtype=np.intp)
    for i, (ph, pw) in enumerate(phases):
        # the phase's reversed taps, m steps from its offset, (offset - lo) / step into the window
        y0, x0 = (ph[4] - lo_h) // step_h, (pw[4] - lo_w) // step_w
        sub[:, i, :, :, y0:y0 + len(ph[0]), x0:x0 + len(pw[0])] = w[:, :, :, _reversed(ph[0]), _reversed(pw[0])]
        place[:, i, :, 0] = np.arange(groups)[:, None] * Cg + np.arange(Cg)
        place[:, i, :, 1:] = (ph[1], ph[2], pw[1], pw[2])
    Kout = groups * P * Cg
    pg = v.ConvGeometry(size_h, size_w, 1, 1, -lo_h, -lo_w, step_h, step_w, rows, cols)
    C = grad_output.shape[1]
    dtype = grad_output.dtype
    band = max(1, min(_band_rows(C, pg, dtype.itemsize), -(-N * rows // (2 * num_threads))))
    plan = _plan(C, pg, dtype, band)
    workspace = np.empty((num_threads, kernel.forward_shuffle_workspace(plan, Kout, cols)), dtype=dtype)
    weights = sub.reshape(Kout, Kg, size_h, size_w)
    taps = Kg * size_h * size_w
    packed = _pack_channels(weights, groups) if _channel_tiles_pay(pg, P * Cg, taps, dtype) else None
    kernel.conv2d_forward_shuffle(grad_output, weights.reshape(Kout, taps), np.zeros(Kout, dtype=dtype), grad_x,
                                  place.reshape(Kout, 5), g.stride_h, g.stride_w, pg.struct(), groups, plan,
                                  workspace, num_threads, packed)


def _grad_x_strided(grad_output, weight, grad_x, g, groups, num_threads):
    """Any stride: each task scatters one input row's taps (conv2d_grad_x)."""
    kw, Cg = weight.shape[3], weight.shape[1]
    row_len = kernel.grad_x_row_len(g.stride_w, g.out_w, kw, g.dilation_w, grad_x.shape[3], g.pad_left)
    chunk = _channel_chunk(Cg, row_len)
    workspace = np.empty((num_threads, chunk * row_len), dtype=grad_x.dtype)
    kernel.conv2d_grad_x(grad_output, weight, grad_x, g.struct(), groups, workspace, chunk, num_threads)


def grad_x(grad_output, weight, x_shape, g, groups, num_threads):
    """conv2d's input gradient, of shape x_shape (also conv_transpose2d's forward): at
    stride 1 a forward convolution, at other strides its stride phases as one, on the
    forward's tiles; the row kernels where the planes would not fit."""
    out = _memory.empty(x_shape, grad_output.dtype)
    transposed = _transposed(g, x_shape)
    strided = g.stride_h != 1 or g.stride_w != 1
    # The tiles form products the input gradient has not (the reference's col2im drops
    # them): grad_output's zero padding times the weights, and at stride > 1 grad_output
    # times the zeros of a phase's common window, NaN where the other factor is inf or
    # NaN. The row kernels form only the real products.
    if (not planes_fit(weight.shape[0], transposed, out.dtype.itemsize) or not np.isfinite(weight).all()
            or strided and not np.isfinite(grad_output).all()):
        _grad_x_strided(grad_output, weight, out, g, groups, num_threads)
    elif not strided:
        _grad_x_as_forward(grad_output, weight, out, transposed, groups, num_threads)
    else:
        _grad_x_phases(grad_output, weight, out, g, groups, num_threads)
    return out


def backward(grad_output, x, weight, g, groups, num_threads):
    """(grad_x, grad_weight) of conv2d."""
    return (grad_x(grad_output, weight, x.shape, g, groups, num_threads),
            grad_weight(grad_output, x, weight, g, groups, num_threads))


def grad_weight(grad_output, x, weight, g, groups, num_threads):
    """conv2d's weight gradient (K, C/groups, kh, kw)."""
    kh, kw = weight.shape[2:]
    grad_w = None
    if weight.shape[1] == 1 and planes_fit(1, g, x.dtype.itemsize):
        grad_w = _grad_weight_planes(grad_output, x, weight, g, groups, num_threads)
    elif planes_fit(x.shape[1], g, x.dtype.itemsize):
        grad_w = _grad_weight_tiles(grad_output, x, weight, g, groups, num_threads)
    # The planes' lanes past the output's width multiply x by zeros in products the weight
    # gradient has not: NaN where x is inf or NaN there. Such a gradient is not finite
    # (a check of the small result, not of x), and, where grad_output is finite, comes
    # again from the row kernels, which form none of those. (They leave out products of
    # grad_output with the padding's zeros, which the reference has: where grad_output is
    # not finite, the tiles' gradient is the reference's.)
    if grad_w is not None and (np.isfinite(grad_w).all() or not np.isfinite(grad_output).all()):
        return grad_w
    grad_w = np.empty_like(weight)
    row_len = kernel.packed_row_len(g.stride_w, g.out_w, kw, g.dilation_w)
    size = kernel.grad_weight_workspace(kh, kw, row_len, x.dtype == np.float64)
    workspace = np.empty((num_threads, size), dtype=x.dtype)
    kernel.conv2d_grad_weight(grad_output, x, grad_w, g.struct(), groups, workspace, num_threads)
    return grad_w
