"""fastconv.convolve / convolve2d: the true (flipped) convolution, against
numpy.convolve, scipy.signal.convolve2d and the reference."""
import numpy as np
import pytest
import scipy.signal
from conftest import DTYPES, assert_close

import fastconv
from fastconv import reference, signal
from fastconv._kernels import runnable_builds

MODES = ["full", "same", "valid"]
LENGTHS = [(1, 1), (7, 3), (7, 4), (3, 7), (4, 8), (10, 10), (9, 1), (1, 6), (300, 33), (5000, 101)]
SHAPES = [((7, 8), (3, 4)), ((7, 8), (2, 5)), ((3, 4), (7, 8)), ((5, 5), (6, 2)), ((1, 1), (1, 1)),
          ((1, 40), (1, 7)), ((40, 1), (5, 1)), ((30, 60), (5, 5)), ((9, 9), (9, 9)), ((4, 70), (6, 3))]


@pytest.fixture(params=runnable_builds("conv_direct"),
                ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def build(request, monkeypatch):
    monkeypatch.setattr(signal, "_kernel", request.param)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, m", LENGTHS)
def test_convolve_matches_numpy(build, rng, n, m, dtype, mode):
    a = rng.standard_normal(n).astype(dtype)
    v = rng.standard_normal(m).astype(dtype)
    got = fastconv.convolve(a, v, mode)
    want = np.convolve(a, v, mode)
    assert got.dtype == dtype and got.flags.c_contiguous
    assert_close(got, want)
    assert_close(got, reference.convolve(a, v, mode))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("s1, s2", SHAPES)
def test_convolve2d_matches_scipy(build, rng, s1, s2, dtype, mode):
    in1 = rng.standard_normal(s1).astype(dtype)
    in2 = rng.standard_normal(s2).astype(dtype)
    try:
        want = scipy.signal.convolve2d(in1, in2, mode)
    except ValueError:
        with pytest.raises(ValueError, match="mode='valid' needs one input at least as large"):
            fastconv.convolve2d(in1, in2, mode)
        return
    got = fastconv.convolve2d(in1, in2, mode)
    assert got.dtype == dtype and got.flags.c_contiguous
    assert_close(got, want)
    assert_close(got, reference.convolve2d(in1, in2, mode))


def test_chunks_and_row_passes(build, rng, monkeypatch):
    # Small chunks and a small row budget: many tasks per row, several passes per kernel.
    monkeypatch.setattr(signal, "CHUNK", 16)
    monkeypatch.setattr(signal, "ROW_BUDGET", 40)
    for s1, s2 in [((9, 100), (4, 7)), ((3, 50), (7, 9)), ((1, 333), (1, 40))]:
        in1, in2 = rng.standard_normal(s1), rng.standard_normal(s2)
        for mode in MODES:
            if mode == "valid" and (s2[0] > s1[0] or s2[1] > s1[1]):
                continue
            assert_close(fastconv.convolve2d(in1, in2, mode), scipy.signal.convolve2d(in1, in2, mode))
    a, v = rng.standard_normal(1000), rng.standard_normal(37)
    for mode in MODES:
        assert_close(fastconv.convolve(a, v, mode), np.convolve(a, v, mode))


@pytest.mark.parametrize("dtype", DTYPES)
def test_lane_kernel(build, rng, dtype):
    # correlate1d on every build (convolve takes it only with 64-byte vectors and long kernels):
    # windows that start before, inside and past the signal, runs of one block and of many, ragged
    # last tasks, several threads; nothing written outside `out`, nothing read from the workspace
    # that the kernel did not write (it starts as NaN).
    K = signal._kernel
    lanes, block = K.lane_layout(dtype == np.float64)
    for W, kw in [(1, 1), (5, 3), (37, 40), (1000, 7), (3001, 101), (300, 300)]:
        x, k = rng.standard_normal(W).astype(dtype), rng.standard_normal(kw).astype(dtype)
        full = np.convolve(x, k[::-1])        # full[t] = sum_j k[j] x[t - (kw - 1) + j]
        for first in (-(kw - 1), -1, 0, 3, W - 2):
            for n in (1, W + kw - 1, 2 * W + 5):
                t = np.arange(n) + first + kw - 1
                want = np.where((t >= 0) & (t < full.size), full[np.clip(t, 0, full.size - 1)], 0)
                for run, threads in [(block, 1), (3 * block, 3), (44 * block, 2)]:
                    guarded = np.full(n + 2, np.nan, dtype)
                    ws = np.full((threads, K.lane_workspace(run, kw, dtype == np.float64)), np.nan, dtype)
                    K.correlate1d(x, k, guarded[1:-1], first, run, ws, threads)
                    assert np.isnan(guarded[0]) and np.isnan(guarded[-1])
                    assert_close(guarded[1:-1], want)
    ws = np.empty((2, K.lane_workspace(block, kw, dtype == np.float64)), dtype)
    with pytest.raises(ValueError, match=f"run must be a positive multiple of {block}, got {block + 1}"):
        K.correlate1d(x, k, np.empty(4, dtype), 0, block + 1, ws, 1)
    with pytest.raises(ValueError, match="workspace .* is too small for 3 threads"):
        K.correlate1d(x, k, np.empty(4, dtype), 0, block, ws, 3)
    with pytest.raises(ValueError, match="workspace .* is too small for 1 threads of run"):
        K.correlate1d(x, k, np.empty(4, dtype), 0, block, np.empty((1, 8), dtype), 1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_convolve_lane_path(build, rng, monkeypatch, dtype):
    # Every kernel length through the lane kernel where the build has 64-byte vectors (and only
    # there), with few outputs per task; and through the row kernels when its workspace is capped.
    calls = []
    correlate1d = signal._kernel.correlate1d
    monkeypatch.setattr(signal._kernel, "correlate1d", lambda *args: calls.append(1) or correlate1d(*args))
    monkeypatch.setattr(signal, "LANE_MIN_TAPS", 0)
    monkeypatch.setattr(signal, "LANE_RUN", 1)
    lanes, _ = signal._kernel.lane_layout(dtype == np.float64)
    for cap in (1 << 20, 0):
        monkeypatch.setattr(signal, "LANE_BYTES", cap)
        for n, m in LENGTHS:
            a, v = rng.standard_normal(n).astype(dtype), rng.standard_normal(m).astype(dtype)
            for mode in MODES:
                calls.clear()
                assert_close(fastconv.convolve(a, v, mode), np.convolve(a, v, mode))
                assert len(calls) == (lanes * np.dtype(dtype).itemsize == 64 and cap > 0)


@pytest.mark.parametrize("m", [5, 101])
def test_convolve_nan_spreads_like_numpy(build, rng, m):
    # a NaN inside the signal turns exactly the outputs whose window holds it, on either kernel
    a, v = rng.standard_normal(2000), rng.standard_normal(m)
    a[[0, 777, 1999]] = np.nan
    for mode in MODES:
        got, want = fastconv.convolve(a, v, mode), np.convolve(a, v, mode)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        assert_close(got[~np.isnan(got)], want[~np.isnan(want)])


def test_convolution_is_flipped_correlation():
    # conv2d is cross-correlation; convolve2d flips the kernel.
    x = np.arange(12.0).reshape(3, 4)
    k = np.array([[1.0, 2.0], [3.0, 4.0]])
    corr = fastconv.conv2d(x[None, None], k[None, None])[0, 0]
    assert_close(fastconv.convolve2d(x, k[::-1, ::-1], "valid"), corr)
    assert_close(fastconv.convolve([1.0, 2.0, 3.0], [0.0, 1.0, 0.5]), np.array([0.0, 1.0, 2.5, 4.0, 1.5]))


def test_inputs_untouched_and_noncontiguous(rng):
    in1 = rng.standard_normal((20, 30))[:, ::2]
    in2 = np.asfortranarray(rng.standard_normal((3, 4)))
    c1, c2 = in1.copy(), in2.copy()
    assert_close(fastconv.convolve2d(in1, in2, "same"), scipy.signal.convolve2d(c1, c2, "same"))
    np.testing.assert_array_equal(in1, c1)
    np.testing.assert_array_equal(in2, c2)
    a = rng.standard_normal(50)[::3]
    assert_close(fastconv.convolve(a, [1.0, -1.0]), np.convolve(a, [1.0, -1.0]))
    # long enough for the lane kernel where the build has it; read-only and strided
    a, v = rng.standard_normal(3000)[::2], rng.standard_normal(202)[::2]
    a.flags.writeable = v.flags.writeable = False
    c1, c2 = a.copy(), v.copy()
    assert_close(fastconv.convolve(a, v, "same"), np.convolve(c1, c2, "same"))
    np.testing.assert_array_equal(a, c1)
    np.testing.assert_array_equal(v, c2)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: fastconv.convolve(np.zeros(3), np.zeros(2), "circular"), ValueError,
     "mode must be one of 'full', 'same', 'valid'; got 'circular'"),
    (lambda: fastconv.convolve(np.zeros(0), np.zeros(2)), ValueError, "a must not be empty"),
    (lambda: fastconv.convolve(np.zeros(3), np.zeros(0)), ValueError, "v must not be empty"),
    (lambda: fastconv.convolve(np.zeros((3, 1)), np.zeros(2)), ValueError, "a must be 1-D"),
    (lambda: fastconv.convolve(np.zeros(3), np.zeros((2, 1))), ValueError, "v must be 1-D"),
    (lambda: fastconv.convolve(np.zeros(3, np.float32), np.zeros(2)), TypeError, "v has dtype float64"),
    (lambda: fastconv.convolve(np.zeros(3, np.int32), np.zeros(2, np.int32)), TypeError, "a must have dtype"),
    (lambda: fastconv.convolve("abc", np.zeros(2)), TypeError, "a must be an array"),
    (lambda: fastconv.convolve2d(np.zeros((3, 3)), np.zeros((2, 2)), 1), ValueError, "mode must be one of"),
    (lambda: fastconv.convolve2d(np.zeros(3), np.zeros((2, 2))), ValueError, "in1 must be 2-D"),
    (lambda: fastconv.convolve2d(np.zeros((3, 3)), np.zeros(2)), ValueError, "in2 must be 2-D"),
    (lambda: fastconv.convolve2d(np.zeros((3, 0)), np.zeros((2, 2))), ValueError, "in1 must not be empty"),
    (lambda: fastconv.convolve2d(np.zeros((3, 3)), np.zeros((0, 2))), ValueError, "in2 must not be empty"),
    (lambda: fastconv.convolve2d(np.zeros((3, 3)), np.zeros((2, 2), np.float32)), TypeError, "in2 has dtype"),
    (lambda: fastconv.convolve2d(np.zeros((3, 3), complex), np.zeros((2, 2))), TypeError, "in1 must have dtype"),
    (lambda: fastconv.convolve2d(np.zeros((5, 3)), np.zeros((3, 5)), "valid"), ValueError,
     "mode='valid' needs one input at least as large as the other"),
])
def test_rejects_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
