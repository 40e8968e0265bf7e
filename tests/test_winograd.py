"""conv2d / conv2d_backward with algorithm="winograd", on every compiled build of the
Winograd kernel the CPU runs (portable baseline, AVX+FMA, AVX-512), against the
float64 reference within the documented bound fastconv._winograd.RTOL."""
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import DTYPES, assert_close

import fastconv
from fastconv import _winograd, _winograd_math, reference
from fastconv._kernels import runnable_builds

# (N, C, H, W, K, padding, groups)
CASES = [
    (2, 3, 7, 9, 5, 1, 1),           # odd sizes, edge tiles clipped both ways
    (1, 17, 20, 23, 19, 1, 1),       # channels no multiple of any vector width or register tile
    (2, 6, 13, 11, 4, "same", 2),    # groups
    (1, 4, 9, 9, 3, 0, 1),           # no padding
    (3, 5, 17, 6, 7, 2, 1),          # padding 2
    (1, 2, 3, 3, 1, 0, 1),           # one output pixel
    (2, 3, 4, 50, 2, (2, 0), 1),     # one row of tiles, wider than a chunk of tiles
    (1, 5, 6, 67, 9, 1, 1),          # rows of at least a vector of tiles on every build (no narrow path)
    (1, 4, 6, 5, 6, 3, 2),           # padding past the window: rows and columns of bias only
    (1, 8, 5, 5, 8, 1, 8),           # depthwise
    (0, 3, 5, 5, 2, 1, 1),           # empty batch
    (5, 1, 3, 4, 1, 1, 1),           # single channels, tiles of many images in one chunk
]


@pytest.fixture(params=runnable_builds("conv_winograd"), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def build(request, monkeypatch):
    monkeypatch.setattr(_winograd, "kernel", request.param)
    return request.param


def make(rng, case, dtype, scale=1.0):
    N, C, H, W, K, p, g = case
    x = (scale * rng.standard_normal((N, C, H, W))).astype(dtype)
    w = rng.standard_normal((K, C // g, 3, 3)).astype(dtype)
    b = (scale * rng.standard_normal(K)).astype(dtype)
    return x, w, b, dict(padding=p, groups=g)


def f64(*arrays):
    return [a.astype(np.float64) for a in arrays]


def assert_within_bound(got, want, magnitude, dtype):
    """|got - want| <= RTOL * max(magnitude): magnitude is the reference on |x|, |w|, |b|
    (the scale rounding errors grow with, whatever cancels in the sums)."""
    assert got.shape == want.shape and got.dtype == dtype
    if want.size:
        err = np.abs(got - want).max()
        assert err <= _winograd.RTOL[np.dtype(dtype)] * magnitude.max(), err / magnitude.max()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_matches_reference(build, rng, case, dtype):
    x, w, b, kw = make(rng, case, dtype)
    y = fastconv.conv2d(x, w, b, algorithm="winograd", **kw)
    assert y.flags.c_contiguous
    x64, w64, b64 = f64(x, w, b)
    assert_within_bound(y, reference.conv2d(x64, w64, b64, **kw),
                        reference.conv2d(np.abs(x64), np.abs(w64), np.abs(b64), **kw), dtype)
    go = rng.standard_normal(y.shape).astype(dtype)
    gx, gw, gb = fastconv.conv2d_backward(go, x, w, algorithm="winograd", **kw)
    want = reference.conv2d_backward(go.astype(np.float64), x64, w64, **kw)
    magnitude = reference.conv2d_backward(np.abs(go).astype(np.float64), x64, np.abs(w64), **kw)[0]
    assert_within_bound(gx, want[0], magnitude, dtype)
    assert gx.shape == x.shape and gx.flags.c_contiguous
    assert_close(gw, want[1].astype(dtype))
    assert_close(gb, want[2].astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_relative_error_bound(build, scale, dtype):
    """The documented bound as max |err| / max |ref|, on random data of each scale."""
    rng = np.random.default_rng(int(scale * 1000) % 997)
    for case in [(2, 64, 14, 15, 24, 1, 1), (1, 30, 19, 13, 33, "same", 3), (1, 1024, 7, 7, 16, 1, 1)]:
        x, w, b, kw = make(rng, case, dtype, scale)
        want = reference.conv2d(*f64(x, w, b), **kw)
        err = np.abs(fastconv.conv2d(x, w, b, algorithm="winograd", **kw) - want).max() / np.abs(want).max()
        assert err <= _winograd.RTOL[np.dtype(dtype)], err
        go = (scale * rng.standard_normal(want.shape)).astype(dtype)
        gx = fastconv.conv2d_backward(go, x, w, algorithm="winograd", **kw)[0]
        want_gx = reference.conv2d_backward(*f64(go, x, w), **kw)[0]
        assert np.abs(gx - want_gx).max() / np.abs(want_gx).max() <= _winograd.RTOL[np.dtype(dtype)]


def test_random_shapes(build):
    rng = np.random.default_rng(11)
    for _ in range(12):
        g = int(rng.choice([1, 2, 3]))
        case = (int(rng.integers(1, 3)), g * int(rng.integers(1, 6)), int(rng.integers(1, 16)),
                int(rng.integers(1, 16)), g * int(rng.integers(1, 11)), int(rng.integers(1, 3)), g)
        dtype = DTYPES[int(rng.integers(2))]
        x, w, b, kw = make(rng, case, dtype)
        x64, w64, b64 = f64(x, w, b)
        assert_within_bound(fastconv.conv2d(x, w, b, algorithm="winograd", **kw), reference.conv2d(x64, w64, b64, **kw),
                            reference.conv2d(np.abs(x64), np.abs(w64), np.abs(b64), **kw), dtype)


@pytest.mark.filterwarnings("ignore:invalid value encountered")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["x", "weight", "grad_output"])
@pytest.mark.parametrize("case", [(2, 5, 13, 11, 6, 1, 1), (2, 6, 13, 11, 4, "same", 2), (1, 4, 6, 5, 6, 3, 2),
                                  (2, 4, 9, 40, 3, 0, 1)])
def test_non_finite_values_are_the_references(build, rng, dtype, bad, where, case):
    """A tile's transforms mix all its inputs, so an inf or NaN makes the whole tile inf
    or NaN; such calls run by direct instead (`_winograd._tiles_not_finite`), with the
    reference's inf, -inf and NaN and its numbers: forward (also with the fused ReLU of
    the layers' eval forward) and grad_x."""
    x, w, b, kw = make(rng, case, dtype)
    go = rng.standard_normal(reference.conv2d(x, w, b, **kw).shape).astype(dtype)
    target = {"x": x, "weight": w, "grad_output": go}[where]
    target.flat[rng.integers(target.size, size=2)] = bad
    x64, w64, b64, go64 = f64(x, w, b, go)
    want = reference.conv2d(x64, w64, b64, **kw)
    want_gx = reference.conv2d_backward(go64, x64, w64, **kw)[0]
    g = fastconv._validation.conv2d_args(x, w, b, 1, kw["padding"], 1, kw["groups"])[3]
    for got, expected in [(fastconv.conv2d(x, w, b, algorithm="winograd", **kw), want),
                          (_winograd.forward(x, w, b, g, kw["groups"], 2, relu=True,
                                             prepared=_winograd.prepare(w, kw["groups"])), np.maximum(want, 0)),
                          (fastconv.conv2d_backward(go, x, w, algorithm="winograd", **kw)[0], want_gx)]:
        finite = np.isfinite(expected)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        np.testing.assert_array_equal(got[np.isinf(expected)], expected[np.isinf(expected)])
        assert_close(got[finite], expected[finite].astype(dtype))


def test_zero_input_channels():
    """grad_x of an input with no channels is empty (the finiteness check reads none)."""
    x, w = np.ones((2, 0, 5, 5), np.float32), np.ones((3, 0, 3, 3), np.float32)
    gx, gw, gb = fastconv.conv2d_backward(np.ones((2, 3, 5, 5), np.float32), x, w, padding=1, algorithm="winograd")
    assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == (3,)


def test_inputs_untouched(rng):
    x, w, b, kw = make(rng, (2, 6, 9, 10, 4, "same", 2), np.float32)
    go = rng.standard_normal((2, 4, 9, 10)).astype(np.float32)
    copies = [a.copy() for a in (x, w, b, go)]
    fastconv.conv2d(x, w, b, algorithm="winograd", **kw)
    fastconv.conv2d_backward(go, x, w, algorithm="winograd", **kw)
    for a, c in zip((x, w, b, go), copies):
        np.testing.assert_array_equal(a, c)


def test_non_contiguous_inputs(rng):
    x, w, b, kw = make(rng, (2, 4, 9, 10, 4, 1, 1), np.float64)
    xt = np.asfortranarray(x)
    assert_close(fastconv.conv2d(xt, w, b, algorithm="winograd", **kw), fastconv.conv2d(x, w, b, **kw))


@pytest.mark.parametrize("kwargs, reason", [
    (dict(kernel=5), "3x3 kernel"),
    (dict(kernel=(3, 1)), "3x3 kernel"),
    (dict(stride=2), "stride 1"),
    (dict(dilation=2), "dilation 1"),
])
def test_unsupported_geometry(rng, kwargs, reason):
    k = kwargs.pop("kernel", 3)
    kh, kw = (k, k) if isinstance(k, int) else k
    x = rng.standard_normal((1, 2, 12, 12)).astype(np.float32)
    w = rng.standard_normal((3, 2, kh, kw)).astype(np.float32)
    with pytest.raises(ValueError, match="algorithm") as info:
        fastconv.conv2d(x, w, algorithm="winograd", **kwargs)
    assert reason in str(info.value)
    go = np.zeros_like(fastconv.conv2d(x, w, **kwargs))
    with pytest.raises(ValueError, match=reason):
        fastconv.conv2d_backward(go, x, w, algorithm="winograd", **kwargs)


def test_transforms_are_exact():
    """A^T [(G g G^T) (.) (B^T d B)] A is the 3x3 correlation, in exact arithmetic."""
    rng = np.random.default_rng(0)
    for dtype, (m, points) in _winograd_math.POINTS.items():
        AT, G, BT = (np.array(M, dtype=object) for M in _winograd_math.matrices(m, points))
        d = np.array([[Fraction(int(v)) for v in row] for row in rng.integers(-9, 9, (m + 2, m + 2))], dtype=object)
        g = np.array([[Fraction(int(v)) for v in row] for row in rng.integers(-9, 9, (3, 3))], dtype=object)
        y = AT.dot((G.dot(g).dot(G.T)) * (BT.dot(d).dot(BT.T))).dot(AT.T)
        want = np.array([[sum(g[i, j] * d[r + i, s + j] for i in range(3) for j in range(3)) for s in range(m)]
                         for r in range(m)], dtype=object)
        assert (y == want).all(), dtype
        assert all(x.denominator == 1 for x in BT.ravel())      # exact in any float


def test_generated_header_is_current():
    tool = Path(__file__).resolve().parent.parent / "tools" / "gen_winograd.py"
    if not tool.exists():  # tests run from an installed wheel: the generator lives in the source tree
        pytest.skip("tools/gen_winograd.py is checked in the source-tree run")
    assert subprocess.run([sys.executable, str(tool), "--check"]).returncode == 0


def test_workspace_is_a_band_of_tiles(build):
    """Extra memory per call: one workspace per thread (independent of the batch) and
    the transformed weights. C2 (N=64, 64 -> 64 channels, 56x56), float32."""
    per_thread = _winograd.workspace_values(64, 64, np.float32) * 4
    assert per_thread <= 1 << 20     # 0.63 MiB on the AVX-512 build
    assert _winograd.transform_weights(np.zeros((64, 64, 3, 3), np.float32), 1)[0].nbytes == 36 * 64 * 64 * 4


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 7, 8, 13, 17, 33, 50, 63, 64, 65, 131, 197])
def test_writes_only_its_output(build, rng, dtype, width):
    """Each output written once with its value and nothing around the output array, for
    rows of every width around the tile sizes (4, 6), the vector widths (rows of fewer
    tiles than a vector take the narrow path) and the chunk widths (12-48 tiles)."""
    x, w, b, kw = make(rng, (3, 3, 9, width, 5, 1, 1), dtype)
    want = reference.conv2d(*f64(x, w, b), **kw)
    guarded = np.full((want.shape[0] + 2,) + want.shape[1:], np.nan, dtype=dtype)
    _winograd._forward_into(guarded[1:-1], x, w, b, 1, 1, 1, 2)
    x64, w64, b64 = f64(x, w, b)
    assert_within_bound(guarded[1:-1], want, reference.conv2d(np.abs(x64), np.abs(w64), np.abs(b64), **kw), dtype)
    assert np.isnan(guarded[0]).all() and np.isnan(guarded[-1]).all()


@pytest.mark.filterwarnings("ignore:invalid value encountered")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [17, 19, 22, 25, 28, 29, 31, 32])
@pytest.mark.parametrize("N, H, K, padding", [(1, 32, 32, 1), (3, 9, 5, (2, 0)), (2, 14, 9, 0), (0, 8, 4, 1),
                                              (1, 5, 17, (0, 3)), (5, 3, 3, 2)])
def test_row_pairs(build, rng, dtype, width, N, H, K, padding):
    """Rows of 5-8 tiles (17-32 output columns): float32's AVX-512 build runs two rows of
    tiles to a vector (wg_input_pair16 / wg_output_pair16), chunks of six whole rows, so
    that a vector's two rows may lie in different images, a chunk may end on a lone row
    and its last tile row may be clipped. Every output written once (NaN guards around
    the output), with and without the fused ReLU, at 1 and 2 threads (splits of small
    maps' output channels over tasks), and NaN only where a tile reads one."""
    C = 3
    x, w, b, kw = make(rng, (N, C, H, width, K, padding, 1), dtype)
    x64, w64, b64 = f64(x, w, b)
    magnitude = reference.conv2d(np.abs(x64), np.abs(w64), np.abs(b64), **kw)
    want = reference.conv2d(x64, w64, b64, **kw)
    pt, pl = (padding, padding) if isinstance(padding, int) else padding
    for threads in (1, 2):
        for relu in (False, True):
            guarded = np.full((want.shape[0] + 2,) + want.shape[1:], np.nan, dtype=dtype)
            _winograd._forward_into(guarded[1:-1], x, w, b, pt, pl, 1, threads, relu=relu)
            assert_within_bound(guarded[1:-1], np.maximum(want, 0) if relu else want, magnitude, dtype)
            assert np.isnan(guarded[0]).all() and np.isnan(guarded[-1]).all()
    if N == 0:
        return
    bad = [(N - 1, C - 1, H - 1, width - 1), (0, 0, 0, 0)]
    for n, c, iy, ix in bad:
        x[n, c, iy, ix] = np.nan
    got = np.empty_like(want, dtype=dtype)        # the kernel's own NaN (fastconv.conv2d reruns by direct)
    _winograd._forward_into(got, x, w, b, pt, pl, 1, 2)
    m = _winograd.tile_size(dtype)[0]
    oy, ox = np.arange(want.shape[2]) // m * m - pt, np.arange(want.shape[3]) // m * m - pl  # tiles' first inputs
    reached = np.zeros(want.shape, bool)
    for n, _c, iy, ix in bad:
        reached[n] |= ((oy <= iy) & (iy < oy + m + 2))[:, None] & ((ox <= ix) & (ix < ox + m + 2))[None, :]
    assert np.isfinite(got[~reached]).all()
    assert_within_bound(got[~reached], want[~reached], magnitude, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [18, 27, 32])
@pytest.mark.parametrize("case", [(2, 6, 9, 6, 1, 2), (1, 4, 13, 4, 1, 4), (3, 9, 6, 12, "same", 3)])
def test_row_pairs_groups(build, rng, dtype, width, case):
    """Rows of 5-8 tiles with groups (depthwise included): each group's input rows paired
    in turn, its outputs stored from its own products; forward and grad_x."""
    N, C, H, K, p, groups = case
    x, w, b, kw = make(rng, (N, C, H, width, K, p, groups), dtype)
    x64, w64, b64 = f64(x, w, b)
    y = fastconv.conv2d(x, w, b, algorithm="winograd", **kw)
    assert_within_bound(y, reference.conv2d(x64, w64, b64, **kw),
                        reference.conv2d(np.abs(x64), np.abs(w64), np.abs(b64), **kw), dtype)
    go = rng.standard_normal(y.shape).astype(dtype)
    gx = fastconv.conv2d_backward(go, x, w, algorithm="winograd", **kw)[0]
    want = reference.conv2d_backward(go.astype(np.float64), x64, w64, **kw)[0]
    magnitude = reference.conv2d_backward(np.abs(go).astype(np.float64), x64, np.abs(w64), **kw)[0]
    assert_within_bound(gx, want, magnitude, dtype)


def test_row_pairs_chunks(build):
    """Chunks of rows of 5-8 tiles hold whole rows (six, where two share a vector); other
    rows keep chunks of one register tile's width."""
    for double in (False, True):
        widest = build.chunk_tiles(double)
        assert widest == build.chunk_tiles(double, 0) == build.chunk_tiles(double, 9) == build.chunk_tiles(double, 4)
        for row_tiles in range(5, 9):
            T = build.chunk_tiles(double, row_tiles)
            assert T == widest or (T == 6 * row_tiles and T <= widest)


@pytest.mark.filterwarnings("ignore:invalid value encountered")
@pytest.mark.parametrize("padding", [0, 1, 2, 3, (1, 0), (2, 3)])
@pytest.mark.parametrize("width", [18, 20, 21, 34, 62, 63, 66, 67, 70, 130])
def test_row_segments(build, rng, width, padding):
    """Rows of 5 tiles and more: float32's AVX-512 build reads each input row of a
    vector of 16 tiles with masked loads and splits its columns by permutes
    (wg_input_segment16), and interleaves each output row by permutes into masked
    stores (wg_output_segment16). Rows and columns on both sides of every load and
    store, padding up to past the window, with and without the fused ReLU; NaN in the
    first and last columns reaches the outputs of the tiles that read it, and only
    those (a tile's transforms mix all its inputs)."""
    dtype = np.float32
    x, w, b, kw = make(rng, (2, 3, 11, width, 4, padding, 1), dtype)
    x64, w64, b64 = f64(x, w, b)
    magnitude = reference.conv2d(np.abs(x64), np.abs(w64), np.abs(b64), **kw)
    want = reference.conv2d(x64, w64, b64, **kw)
    assert_within_bound(fastconv.conv2d(x, w, b, algorithm="winograd", **kw), want, magnitude, dtype)
    pt, pl = (padding, padding) if isinstance(padding, int) else padding
    fused = np.full_like(want, np.nan, dtype=dtype)
    _winograd._forward_into(fused, x, w, b, pt, pl, 1, 2, relu=True)
    assert_within_bound(fused, np.maximum(want, 0), magnitude, dtype)
    pt, pl = (padding, padding) if isinstance(padding, int) else padding
    bad = [(0, 1, 2, 0), (1, 2, 9, width - 1)]
    for n, c, iy, ix in bad:
        x[n, c, iy, ix] = np.nan
    got = np.empty_like(want, dtype=dtype)        # the kernel's own NaN (fastconv.conv2d reruns by direct)
    _winograd._forward_into(got, x, w, b, pt, pl, 1, 2)
    oy, ox = np.arange(want.shape[2]) // 4 * 4 - pt, np.arange(want.shape[3]) // 4 * 4 - pl  # tiles' first inputs
    reached = np.zeros(want.shape, bool)
    for n, _c, iy, ix in bad:
        reached[n] |= ((oy <= iy) & (iy < oy + 6))[:, None] & ((ox <= ix) & (ix < ox + 6))[None, :]
    assert reached.any() and np.isnan(got[reached]).any()
    assert_within_bound(got[~reached], want[~reached], magnitude[~reached], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K, Cg, groups", [(5, 3, 1), (16, 16, 1), (9, 2, 3), (4, 1, 4), (24, 7, 2), (1, 1, 1)])
def test_flipped_weights_read_in_place(build, rng, dtype, K, Cg, groups):
    """grad_x's transformed weights, read from the forward's filters in place, equal the
    transform of the explicitly turned and transposed copy; and the transform of float64
    filters matches G w G^T to rounding."""
    w = rng.standard_normal((K, Cg, 3, 3)).astype(dtype)
    copy = np.ascontiguousarray(w.reshape(groups, K // groups, Cg, 3, 3)[..., ::-1, ::-1]
                                .transpose(0, 2, 1, 3, 4).reshape(groups * Cg, K // groups, 3, 3))
    U, Kp = _winograd.transform_weights(w, groups, 2, flipped=True)
    want, want_Kp = _winograd.transform_weights(copy, groups, 1)
    assert Kp == want_Kp and (U == want).all()
    G = _winograd._G[np.dtype(dtype)]
    n = G.shape[0]
    T = np.einsum("ia,kcab,jb->kcij", G, w.astype(np.float64), G)   # (K, Cg, n, n)
    U, Kp = _winograd.transform_weights(w, groups, 2)
    mr = build.register_rows(np.dtype(dtype) == np.float64)
    blocks = U.reshape(groups, n, n, Kp // mr, Cg, mr).transpose(0, 3, 5, 4, 1, 2).reshape(groups, Kp, Cg, n, n)
    assert (blocks[:, K // groups:] == 0).all()      # the padding output channels
    got = blocks[:, :K // groups].reshape(K, Cg, n, n)
    assert np.allclose(got, T, rtol=0, atol=4 * np.finfo(dtype).eps * np.abs(T).max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [16, 20, 31, 32, 48, 64, 100, 128])
@pytest.mark.parametrize("shift", [0, 1, 16])
def test_streamed_outputs(build, rng, monkeypatch, dtype, width, shift):
    """Outputs written past the caches (`STREAM_BYTES`: here every output): float32's
    AVX-512 build streams the whole aligned cache lines of rows a multiple of 16 values
    wide (wg_output_pair16 and wg_output_segment16) and stores the rest through the
    caches. Output arrays starting on a cache line and off it (`shift` values), guarded
    by NaN, with and without the fused ReLU, at 1 and 2 threads."""
    monkeypatch.setattr(_winograd, "STREAM_BYTES", 0)
    x, w, b, kw = make(rng, (3, 3, 13, width, 5, 1, 1), dtype)
    x64, w64, b64 = f64(x, w, b)
    magnitude = reference.conv2d(np.abs(x64), np.abs(w64), np.abs(b64), **kw)
    want = reference.conv2d(x64, w64, b64, **kw)
    line = 64 // np.dtype(dtype).itemsize
    for threads in (1, 2):
        for relu in (False, True):
            buf = np.full(want.size + 2 * line + shift + 64, np.nan, dtype=dtype)
            start = (-(buf.ctypes.data // buf.itemsize)) % line + line + shift
            out = buf[start:start + want.size].reshape(want.shape)
            _winograd._forward_into(out, x, w, b, 1, 1, 1, threads, relu=relu)
            assert_within_bound(out, np.maximum(want, 0) if relu else want, magnitude, dtype)
            assert np.isnan(buf[:start]).all() and np.isnan(buf[start + want.size:]).all()
    got = fastconv.conv2d(x, w, b, algorithm="winograd", **kw)
    assert_within_bound(got, want, magnitude, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads, values", [(1, 0), (1, 5), (2, 17), (3, 166976)])
def test_workspace_rows_start_on_cache_lines(dtype, threads, values):
    for _ in range(4):      # whatever offset NumPy's allocation has
        ws = _winograd._aligned_workspace(threads, values, dtype)
        assert ws.shape[0] == threads and ws.shape[1] >= values and ws.flags.c_contiguous
        assert values == 0 or (ws.ctypes.data % 64 == 0 and ws.strides[0] % 64 == 0)
