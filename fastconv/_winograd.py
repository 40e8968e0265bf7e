"""The `winograd` convolution algorithm: 3x3, stride 1, dilation 1 (Lavin & Gray 2015).

F(m x m, 3 x 3) computes an m x m block of outputs from an n x n input tile
(n = m + 2) with n^2 multiplies per channel pair instead of 9 m^2:

    Y = A^T [ sum_c (G g_kc G^T) (.) (B^T d_c B) ] A

The sum over input channels c is, for each of the n^2 transform points, a GEMM
(K x C) (C x tiles). fastconv/_kernels/winograd_impl.h runs it over chunks of
`kernel.chunk_tiles(...)` consecutive tiles of the flattened (image, tile row,
tile column) grid, one chunk per task: it transforms the chunk's input tiles
into its thread's workspace, multiplies them on register tiles with the
transformed weights, and writes the output transform (plus bias) into the
output, edge tiles clipped. Extra memory: the transformed weights (n^2 * K *
C/groups values) and one workspace per thread (`workspace_values`), never
anything that grows with the batch: for C2 (64 -> 64 channels, float32) 576 KiB
of weights and 0.64 MiB per thread on the AVX-512 build, at any N.

Tile sizes and interpolation points, chosen from measured error (max |err| /
max |ref| against a float64 reference, 64 input channels, random normal data,
NumPy emulation of the transforms in the working precision):

    float32  F(4x4, 3x3), points 0, +-1, +-1/2, inf          ~3e-6  (direct: ~1.5e-7;
             points +-2 instead of +-1/2: ~4e-6; F(6x6) with +-2, +-1/2: ~9e-6)
    float64  F(6x6, 3x3), points 0, +-1, +-2, +-1/2, inf     ~1.5e-14

B^T's rows are scaled to integers and A^T's entries are powers of two, so the
data's transforms are exact in their constants; the weights are transformed in
float64 and rounded once (float32's AVX-512 build: in float32, within 1e-7 of the
largest transformed weight, with the same errors in the outputs). Over 60 random
shapes (1-117 channels per group, scales 1e-3 to 1e3) the worst max |err| / max |ref| was 5.1e-6 (float32) and
1.6e-14 (float64). The float32 error grows with the channels summed per transform
point: on random normal data with 64 output channels it measured 8.0e-6 at 64 input
channels (56x56), 1.3e-5 at 256 (14x14), 1.9-2.0e-5 at 512 (7x7, 14x14), 2.3e-5 at
1024 and 2.5e-5 at 2048 (7x7); again with the AVX-512 build's register transforms
(another seed): 6.2e-6 at 64 (56x56), 9.7e-6 at 256 and 1.4e-5 at 512 (28x28), 2.0e-5
at 1024 and 2.5e-5 at 2048 (20x20), 2.9e-5 at 2048 (7x7). RTOL, the bound the tests
hold it to, leaves a margin of 1.7x at 2048 channels in float32 and 6x in float64.

Speed: it pays for large images with many channels; by how much depends on the CPU
(the direct tiles it competes with run near the FMA peak, so the gain is the multiplies
it saves less the transforms). In the AVX-512 build, float32 reads each input row of
16 tiles with masked loads and splits its columns by permutes in registers, and writes
each output row the same way (rows of 5 tiles and more); rows of 5-8 tiles (17-32
output columns) run two to a vector, so that no transform runs on half-empty vectors,
in chunks of six whole rows whose products are computed a vector at a time, right
before its output transforms (C1's forward: 0.7x the time of one row to a vector).
Rows of fewer tiles than 5 (than a vector in the other builds and in float64) take a
per-tile path (scalar gathers and scatters). Where chunks are fewer than four per thread, their output channel blocks
are shared out over several tasks (each thread that runs a part transforms the chunk's
input again) unless whole chunks balance better (`_splits`). Small images with many channels are dominated by the
weight transform, n^2/9 times the weights' size per call (14x14x256, 7x7x512); with few
channels the transforms, not the products, dominate (C1, 3 -> 32 channels: on one
thread the output transform about 35% of its time, the products 40%). `"auto"`
picks it where it measures it faster (fastconv._autotune). Re-measure with
``python -m fastconv bench --sections direct``, which prints its effective GFLOP/s
(direct-convolution FLOPs / time) against the cores' FMA peak.
"""

import numpy as np

from fastconv import _direct, _im2col, _memory
from fastconv import _validation as v
from fastconv._kernels import widest_build
from fastconv._winograd_math import POINTS, matrices, tile_size  # noqa: F401 (re-exported)

#: The relative error guaranteed and tested: max |out - ref| <= RTOL * max |ref| (ref
#: the float64 reference) on random data of any scale; and whatever cancels in the
#: sums, max |out - ref| <= RTOL * max conv2d(|x|, |w|) + |bias| (rounding errors grow
#: with the magnitudes summed, not with the result).
RTOL = {np.dtype(np.float32): 5e-5, np.dtype(np.float64): 1e-13}

#: The compiled module in use: the build fastconv._kernels picks for this CPU. Tests swap it.
kernel = widest_build("conv_winograd")


def check_geometry(g):
    """ValueError unless `g` is a 3x3 kernel at stride 1 and dilation 1."""
    reasons = []
    if (g.kernel_h, g.kernel_w) != (3, 3):
        reasons.append(f"a 3x3 kernel (got {g.kernel_h}x{g.kernel_w})")
    if (g.stride_h, g.stride_w) != (1, 1):
        reasons.append(f"stride 1 (got {(g.stride_h, g.stride_w)})")
    if (g.dilation_h, g.dilation_w) != (1, 1):
        reasons.append(f"dilation 1 (got {(g.dilation_h, g.dilation_w)})")
    if reasons:
        raise ValueError("algorithm='winograd' needs " + ", ".join(reasons) + "; use algorithm='direct' or 'im2col'")


def transform_weights(weight, groups, num_threads=1, flipped=False):
    """The weights in the kernel's layout: U = G w G^T in float64 (float32's AVX-512
    build: float32), rounded to the dtype of `weight`, as (groups, n*n, Kp // MR,
    C/groups, MR) with each group's K/groups output channels padded with zeros to Kp, a
    multiple of MR. `flipped`: those of conv2d's input gradient, the forward convolution
    with each group's filters transposed (C/groups output, K/groups input channels) and
    turned 180 degrees. Returns (U flattened, Kp)."""
    m, n = tile_size(weight.dtype)
    K, Cg = weight.shape[:2]
    Kt, Ct = (Cg, K // groups) if flipped else (K // groups, Cg)
    mr = kernel.register_rows(weight.dtype == np.float64)
    Kp = -(-Kt // mr) * mr
    size = groups * n * n * Kp * Ct
    U = _memory.scratch((size,), weight.dtype, kept=True)    # whole cache lines per point's run
    kernel.transform_weights(weight, _G[weight.dtype], groups, Kp, U, num_threads, flipped)
    return U, Kp


#: G (n x 3) of each dtype's transform, in float64.
_G = {dtype: np.array(matrices(m, pts)[1], dtype=np.float64) for dtype, (m, pts) in POINTS.items()}


def workspace_values(Cg, Kp, dtype):
    """Values of one thread's workspace for Cg input and Kp (padded) output channels."""
    return kernel.workspace_values(Cg, Kp, np.dtype(dtype) == np.float64)


def _splits(tiles, row_tiles, Kp, dtype, num_threads):
    """Tasks per chunk of tiles: 1 where the chunks keep every thread busy (four per
    thread), else the chunks' output channel blocks shared out over up to that many,
    unless the chunks alone finish sooner: every thread that runs a part of a chunk
    transforms the chunk's input again, about 16 / Kp of its products' time (measured on
    AVX-512 in float32: 0.13 ms against 0.54 ms for one 56x56 image, 64 -> 64 channels,
    whose 5 chunks run faster whole, 0.39-0.49 ms against 0.44-0.57 ms split in 2)."""
    T = kernel.chunk_tiles(np.dtype(dtype) == np.float64, row_tiles)
    chunks = -(-tiles // T)
    if num_threads == 1 or chunks == 0 or chunks >= 4 * num_threads:
        return 1
    splits = max(1, min(Kp // kernel.register_rows(np.dtype(dtype) == np.float64), -(-4 * num_threads // chunks)))
    redo = 16 / max(Kp, 1)
    # whole chunks claimed in order by the first free thread, against the parts spread evenly
    free = [0.0] * num_threads
    for c in range(chunks):
        free[free.index(min(free))] += min(T, tiles - c * T) * (1 + redo)
    spread = tiles * (1 + redo * min(splits, num_threads)) / num_threads
    return 1 if max(free) <= spread else splits


def _aligned_workspace(num_threads, values, dtype):
    """An empty (num_threads, >= values) workspace whose rows start on 64-byte
    boundaries, as the kernel's vectors of transformed tiles do then (NumPy aligns to
    16 bytes: each 64-byte vector the products load would straddle two cache lines;
    C2, float32: 1-3% of the kernel's time), from `fastconv._memory.scratch`."""
    per_line = _memory.ALIGN // np.dtype(dtype).itemsize
    return _memory.scratch((num_threads, -(-values // per_line) * per_line), dtype)


#: Outputs from this size up, of convolutions with at most `STREAM_CHANNELS` input
#: channels per group, are written past the caches (non-temporal stores; float32 AVX-512,
#: rows of whole cache lines). With so few channels the op's time is mostly its stores,
#: and a store through the caches first reads each line it writes; an output this far
#: beyond the cores' L2 reaches the next op from L3 or memory either way. C1 (3 channels,
#: 8 MiB): 0.51 -> 0.44 ms at 2 threads, and 1.38x -> 1.12x slower beside an op that
#: writes 8 MiB of its own (Zen 4). With many channels the products dominate and the
#: next op's reads from memory cost more than the stores save (VGG-16: 1-3% slower).
STREAM_BYTES = 4 << 20
STREAM_CHANNELS = 16


def _forward_into(out, x, weight, bias, pad_top, pad_left, groups, num_threads, relu=False, prepared=None):
    """out (N, K, Ho, Wo) = conv2d(x, weight) + bias (with `relu`: max(that, 0)), 3x3
    stride 1, the input offset by (pad_top, pad_left) (negative: cropped); every element
    written. `prepared`: `prepare(weight, groups)` for these weights, else computed here."""
    K = out.shape[1]
    if bias is None:
        bias = np.zeros(K, dtype=x.dtype)
    U, Kp = transform_weights(weight, groups, num_threads) if prepared is None else prepared
    workspace = _aligned_workspace(num_threads, workspace_values(x.shape[1] // groups, Kp, x.dtype), x.dtype)
    m = tile_size(x.dtype)[0]
    row_tiles = -(-out.shape[3] // m)
    tiles = x.shape[0] * -(-out.shape[2] // m) * row_tiles
    kernel.conv2d_forward(x, U, Kp, bias, out, groups, pad_top, pad_left, workspace, num_threads,
                          _splits(tiles, row_tiles, Kp, x.dtype, num_threads), relu,
                          out.nbytes >= STREAM_BYTES and x.shape[1] // groups <= STREAM_CHANNELS)


def prepare(weight, groups, num_threads=1):
    """The transformed weights `transform_weights(weight, groups)` and whether they are
    finite: (U, Kp, finite). The layers keep them between eval forwards while their
    weights do not change (the transform is n^2/9 times the weights' size: at 7x7x512
    it costs more than the products)."""
    U, Kp = transform_weights(weight, groups, num_threads)
    return U, Kp, bool(np.isfinite(U).all())


def _tiles_not_finite(out, x, groups, relu, weights_finite):
    """Whether a Winograd output `out` may hold inf or NaN where the reference has
    numbers: its transforms mix the values of a tile, so one inf or NaN in the input
    (or the weights) gives the whole tile's outputs inf or NaN. Each reaches every
    output channel of its group (or, from a weight, every tile of its channel), before
    a ReLU: the first channel of each group and the first tile of each channel are
    enough, a fraction of the output (C2: 1/64; depthwise: all of it). Behind a fused
    ReLU, which turns -inf into 0, x (and the weights) themselves are checked. Not
    covered: finite values within a few orders of magnitude of the dtype's largest,
    whose transforms may overflow where the reference's sums do not."""
    if out.size == 0:
        return False
    if relu:
        return not (weights_finite and np.isfinite(x).all())
    m = tile_size(out.dtype)[0]
    return not (np.isfinite(out[:, ::out.shape[1] // groups]).all() and np.isfinite(out[:1, :, :m, :m]).all())


def forward(x, weight, bias, g, groups, num_threads, relu=False, prepared=None):
    """(N, K, Ho, Wo) = conv2d(x, weight) + bias (with `relu`: max(that, 0)) for a
    checked 3x3 stride-1 geometry. Where `_tiles_not_finite`, by direct instead (im2col
    where direct's planes would not fit), which keeps the reference's inf and NaN."""
    check_geometry(g)
    N, K = x.shape[0], weight.shape[0]
    v.allocatable((N, K, g.out_h, g.out_w), x.dtype, "output")
    out = _memory.empty((N, K, g.out_h, g.out_w), x.dtype)
    _forward_into(out, x, weight, bias, g.pad_top, g.pad_left, groups, num_threads, relu,
                  None if prepared is None else prepared[:2])
    weights_finite = prepared[2] if prepared is not None else (not relu or np.isfinite(weight).all())
    if not _tiles_not_finite(out, x, groups, relu, weights_finite):
        return out
    if not _direct.planes_fit(x.shape[1], g, x.dtype.itemsize):
        out = _im2col.forward(x, weight, bias, g, groups, num_threads)
        return np.maximum(out, 0, out=out) if relu else out
    return _direct.forward(x, weight, bias, g, groups, num_threads, relu=relu)


def grad_x(grad_output, weight, x_shape, g, groups, num_threads):
    """conv2d's input gradient: at stride 1 the forward convolution of grad_output
    with each group's weights turned 180 degrees and transposed (K/groups in, C/groups
    out; transformed so, `transform_weights(..., flipped=True)`), padded by 2 - padding
    (negative: cropped). Where `_tiles_not_finite`, direct's instead."""
    check_geometry(g)
    out = _memory.empty(x_shape, grad_output.dtype)
    _forward_into(out, grad_output, None, None, 2 - g.pad_top, 2 - g.pad_left, groups, num_threads,
                  prepared=transform_weights(weight, groups, num_threads, flipped=True))
    if _tiles_not_finite(out, grad_output, groups, False, True):
        return _direct.grad_x(grad_output, weight, x_shape, g, groups, num_threads)
    return out


def backward(grad_output, x, weight, g, groups, num_threads):
    """(grad_x, grad_weight) of conv2d: grad_x by Winograd (at stride 1 a 3x3
    convolution of grad_output), grad_weight by the algorithm "auto" picks for it
    (Winograd has no weight gradient of its own)."""
    from fastconv.convolution import _weight_gradient  # the dispatch, which imports this module

    gx = grad_x(grad_output, weight, x.shape, g, groups, num_threads)
    return gx, _weight_gradient(grad_output, x, weight, g, groups, num_threads)
