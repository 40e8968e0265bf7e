"""im2col's tap-by-tap path for small output planes (fastconv._im2col.by_taps) and the
GEMMs under it (fastconv._kernels.conv_gemm.matmul_groups)."""
import numpy as np
import pytest
from conftest import DTYPES, TORCH, assert_close, numerical_gradient, requires_torch

import fastconv
from fastconv import _autotune, _im2col, reference
from fastconv import _validation as v
from fastconv._kernels import conv_gemm

# (N, C, H, W, K, kernel, stride, padding, dilation): output planes of at most TAP_PLANE pixels
CASES = [
    (3, 5, 2, 2, 7, 3, 1, 1, 1),            # ResNet-18's last stage at 64x64 inputs, shrunk
    (2, 4, 4, 4, 6, 3, 2, 1, 1),            # stride 2 into a 2x2 plane
    (2, 6, 4, 4, 3, 3, 1, 1, 1),            # a 4x4 plane: taps cut at every border
    (1, 3, 1, 1, 2, 3, 1, 1, 1),            # one pixel: only the centre tap reaches it
    (2, 3, 3, 5, 4, (3, 2), 1, (1, 0), 1),  # odd, non-square
    (2, 3, 4, 3, 4, 3, 1, 2, 2),            # dilation 2: some taps never reach the input
    (2, 2, 5, 5, 3, 5, 2, 2, 1),            # 5x5 kernel, stride 2
    (1, 2, 4, 4, 3, 3, 3, 0, 1),            # stride 3, no padding: one output pixel
    (0, 3, 2, 2, 4, 3, 1, 1, 1),            # empty batch
    (1, 4, 2, 2, 5, 3, 1, 1, 1),            # batch of one
    (2, 3, 1, 2, 2, 3, 1, 2, 1),            # padding wider than the input: some outputs see none of it
    (2, 3, 5, 5, 4, 1, 2, 0, 1),            # 1x1 at stride 2 (ResNet's projections): one window
]


def make(rng, case, dtype):
    N, C, H, W, K, k, s, p, d = case
    kh, kw = (k, k) if isinstance(k, int) else k
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C, kh, kw)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    return x, w, b, dict(stride=s, padding=p, dilation=d)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_taps_match_the_reference(rng, case, dtype):
    x, w, b, kw = make(rng, case, dtype)
    g = v.conv_geometry(x.shape[2:], w.shape[2:], kw["stride"], kw["padding"], kw["dilation"])
    assert _im2col.by_taps(g, 1, x.shape)
    y = fastconv.conv2d(x, w, b, algorithm="im2col", **kw)
    assert y.dtype == dtype and y.flags.c_contiguous
    assert_close(y, reference.conv2d(x, w, b, **kw))
    go = rng.standard_normal(y.shape).astype(dtype)
    got = fastconv.conv2d_backward(go, x, w, algorithm="im2col", **kw)
    for a, want in zip(got, reference.conv2d_backward(go, x, w, **kw)):
        assert a.dtype == dtype and a.flags.c_contiguous
        assert_close(a, want)
    grad_w = _im2col.grad_weight(go, x, w, g, 1, 2)
    assert_close(grad_w, got[1])
    grad_x = _im2col.grad_x(go, w, x.shape, g, 1, 2)     # conv_transpose2d's forward
    assert grad_x.dtype == dtype and grad_x.flags.c_contiguous
    assert_close(grad_x, got[0])


@pytest.mark.parametrize("case", [CASES[1], CASES[4], CASES[5]])
def test_taps_gradients_match_finite_differences(rng, case):
    x, w, b, kw = make(rng, case, np.float64)
    go = rng.standard_normal(fastconv.conv2d(x, w, b, algorithm="im2col", **kw).shape)

    def loss():
        return float(np.sum(fastconv.conv2d(x, w, b, algorithm="im2col", **kw) * go))

    grad_x, grad_w, _ = fastconv.conv2d_backward(go, x, w, algorithm="im2col", **kw)
    np.testing.assert_allclose(grad_x, numerical_gradient(loss, x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grad_w, numerical_gradient(loss, w), rtol=1e-6, atol=1e-6)


@requires_torch
@pytest.mark.parametrize("case", CASES[:3])
def test_taps_match_torch(rng, case):
    torch = TORCH
    x, w, b, kw = make(rng, case, np.float32)
    tx, tw, tb = (torch.from_numpy(a.copy()).requires_grad_() for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, **kw)
    y = fastconv.conv2d(x, w, b, algorithm="im2col", **kw)
    assert_close(y, ty.detach().numpy())
    go = rng.standard_normal(y.shape).astype(np.float32)
    ty.backward(torch.from_numpy(go))
    for got, want in zip(fastconv.conv2d_backward(go, x, w, algorithm="im2col", **kw), (tx, tw, tb)):
        assert_close(got, want.grad.numpy())


def test_taps_do_not_depend_on_the_thread_count(rng):
    x, w, b, kw = make(rng, (4, 40, 2, 2, 70, 3, 1, 1, 1), np.float64)
    go = rng.standard_normal((4, 70, 2, 2))
    results = []
    for n in (1, 2, 3):
        with fastconv.threads(n):
            results.append((fastconv.conv2d(x, w, b, algorithm="im2col", **kw),)
                           + fastconv.conv2d_backward(go, x, w, algorithm="im2col", **kw))
    for other in results[1:]:
        for a, want in zip(other, results[0]):
            assert_close(a, want)


def test_grouped_and_large_planes_keep_the_bands():
    g = v.conv_geometry((2, 2), (3, 3), 1, 1, 1)
    assert _im2col.by_taps(g, 1, (1, 1, 2, 2)) and not _im2col.by_taps(g, 2, (1, 2, 2, 2))
    assert not _im2col.by_taps(v.conv_geometry((8, 8), (3, 3), 1, 1, 1), 1, (1, 1, 8, 8))
    assert not _im2col.by_taps(v.conv_geometry((2, 2), (1, 1), 1, 0, 1), 1, (1, 1, 2, 2))    # pointwise: a plain GEMM
    # a large stride or dilation skips most of the plane: the bands, but for one tap (a view)
    assert not _im2col.by_taps(v.conv_geometry((27, 27), (3, 3), 8, 0, 1), 1, (1, 1, 27, 27))
    assert _im2col.by_taps(v.conv_geometry((27, 27), (1, 1), 8, 0, 1), 1, (1, 1, 27, 27))
    big = v.conv_geometry((66, 66), (64, 64), 1, 0, 1)                     # 3x3 plane, 4096 taps
    assert not _im2col.by_taps(big, 1, (1, 1, 66, 66))
    assert not _im2col.by_taps(g, 1, (2**31 // (g.out_h * g.out_w) + 1, 1, 2, 2))   # beyond BLAS's ints


def test_auto_considers_im2col_for_the_gradients_of_small_planes():
    small = v.conv_geometry((2, 2), (3, 3), 1, 1, 1)
    large = v.conv_geometry((16, 16), (3, 3), 1, 1, 1)
    for pass_ in ("grad_x", "grad_weight"):
        assert "im2col" in _autotune.candidates(pass_, (32, 64, 2, 2), (64, 64, 3, 3), small, 1, np.float32)
        assert _autotune.rule(pass_, (32, 64, 16, 16), (64, 64, 3, 3), large, 1, np.float32) == "direct"
        assert _autotune.rule(pass_, (32, 64, 2, 2), (64, 64, 3, 3), small, 1, np.float32) == "im2col"
    # the small plane is timed on one slice of many whole images, within the bound
    x_shape, w_shape = (256, 512, 2, 2), (512, 512, 3, 3)
    for pass_ in ("grad_x", "grad_weight"):
        slices = _autotune._slices(x_shape, w_shape, small, np.float32, pass_, 2, ["im2col", "direct"])
        assert len(slices) == 1 and slices[0][0] >= 16
        assert _autotune._macs(pass_, (slices[0][0],) + x_shape[1:], w_shape, small) <= 2 * _autotune.SLICE_MACS_MAX


@pytest.mark.parametrize("dtype", DTYPES)
def test_swap_last_axes(rng, dtype):
    # the float kernel moves 4x4 blocks: sides below, at and past multiples of 4
    for shape in [(3, 5, 7), (2, 64, 9), (3, 130, 9), (2, 9, 130), (1, 1, 1), (0, 3, 4), (5, 4, 4), (2, 8, 3),
                  (9, 3, 8), (2, 3, 0), (2, 0, 3)]:
        src = rng.standard_normal(shape).astype(dtype)
        for num_threads in (1, 2, 3):
            dst = np.full((shape[0], shape[2], shape[1]), np.nan, dtype)
            conv_gemm.swap_last_axes(src, dst, num_threads)
            assert np.array_equal(dst, src.transpose(0, 2, 1))
    src = rng.standard_normal((3, 5, 7)).astype(np.float32)
    with pytest.raises(ValueError, match="dst must have shape"):
        conv_gemm.swap_last_axes(src, np.empty((3, 5, 7), np.float32), 2)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_taps_non_finite_values_as_the_reference(rng, dtype, bad):
    """The taps leave out padding's zeros times weights (or output gradients); where one
    of those is not finite the reference has NaN, and so must the result."""
    x, w, b, kw = make(rng, CASES[0], dtype)                 # 2x2 plane, 3x3 kernel, padding 1
    wide = dict(kw, padding=2, dilation=2)                   # taps that never reach the input
    for args, at in ((kw, (0, 0, 0, 0)), (wide, (1, 2, 0, 0)), (wide, (1, 2, 1, 1))):
        w_bad = w.copy()
        w_bad[at] = bad
        y = fastconv.conv2d(x, w_bad, b, algorithm="im2col", **args)
        want = reference.conv2d(x, w_bad, b, **args)
        np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
        assert_close(np.nan_to_num(y), np.nan_to_num(want))
    go = rng.standard_normal(fastconv.conv2d(x, w, b, **kw).shape).astype(dtype)
    go[0, 0, 0, 0] = bad
    got = fastconv.conv2d_backward(go, x, w, algorithm="im2col", **kw)
    for a, want in zip(got, reference.conv2d_backward(go, x, w, **kw)):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(want))
        assert_close(np.nan_to_num(a), np.nan_to_num(want))


def _groups_case(rng, dtype, trans_a, trans_b, shapes):
    """Flat a, b, c and a table placing one GEMM of each (m, n, k) in `shapes` at its own
    offset, with rows a few values longer than the matrices (strided, as the taps' weights)."""
    table, a_size, b_size, c_size = [], 0, 0, 0
    for m, n, k in shapes:
        a_rows, a_cols = (k, m) if trans_a else (m, k)
        b_rows, b_cols = (n, k) if trans_b else (k, n)
        lda, ldb, ldc = a_cols + 3, b_cols + 1, n + 2
        table.append((m, n, k, a_size + 1, lda, b_size + 2, ldb, c_size, ldc))
        a_size += 1 + a_rows * lda
        b_size += 2 + b_rows * ldb
        c_size += m * ldc
    a, b, c = (rng.standard_normal(size).astype(dtype) for size in (a_size, b_size, c_size))
    return a, b, c, np.array(table, dtype=np.int64)


def _view(flat, offset, rows, cols, ld):
    return np.lib.stride_tricks.as_strided(flat[offset:], (rows, cols), (ld * flat.itemsize, flat.itemsize))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_matmul_groups_matches_numpy(rng, dtype, trans_a, trans_b):
    # one group split in chunks, a few of different sizes (largest first), more than four a thread
    for shapes in ([(300, 5, 7)], [(1, 1, 1), (5, 300, 7), (40, 3, 9), (257, 33, 65)],
                   [(9, 16, 4), (12, 16, 4), (16, 16, 4)] * 4):
        a, b, c, table = _groups_case(rng, dtype, trans_a, trans_b, shapes)
        for beta in (0.0, 0.5):
            for num_threads in (1, 2, 3):
                got = c.copy()
                conv_gemm.matmul_groups(a, b, got, table, trans_a, trans_b, beta, num_threads)
                want = c.copy()
                for m, n, k, ao, lda, bo, ldb, co, ldc in table:
                    op_a = _view(a, ao, *((k, m) if trans_a else (m, k)), lda)
                    op_b = _view(b, bo, *((n, k) if trans_b else (k, n)), ldb)
                    target = _view(want, co, m, n, ldc)
                    target[...] = (op_a.T if trans_a else op_a) @ (op_b.T if trans_b else op_b) + beta * target
                assert_close(got, want)        # the values between the rows untouched too


def test_matmul_groups_checks_its_table(rng):
    a, b, c, table = _groups_case(rng, np.float64, False, False, [(4, 5, 6), (3, 2, 1)])
    conv_gemm.matmul_groups(a, b, c, table[:0])          # no groups: nothing to do
    with pytest.raises(ValueError, match="9 columns"):
        conv_gemm.matmul_groups(a, b, c, table[:, :8].copy())
    for column, value, message in [(0, 0, "dimensions"), (2, 2**31, "dimensions"), (3, a.size, "a of group 1"),
                                   (5, -1, "b of group 1"), (8, 1, "c of group 1"), (7, c.size - 1, "c of group 1")]:
        bad = table.copy()
        bad[1, column] = value
        with pytest.raises(ValueError, match=message):
            conv_gemm.matmul_groups(a, b, c, bad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_taps_in_batch_chunks_match_one_chunk(rng, dtype, monkeypatch):
    # a batch whose gathered rows exceed TAPS_VALUES runs in chunks of images; the weight
    # gradient sums over them
    x, w, b, kw = make(rng, CASES[2], dtype)
    x = np.concatenate([x] * 3)
    go = rng.standard_normal((6, 3, 4, 4)).astype(dtype)
    whole = (fastconv.conv2d(x, w, b, algorithm="im2col", **kw),) + fastconv.conv2d_backward(
        go, x, w, algorithm="im2col", **kw)
    monkeypatch.setattr(_im2col, "TAPS_VALUES", 1)        # one image a chunk
    chunked = (fastconv.conv2d(x, w, b, algorithm="im2col", **kw),) + fastconv.conv2d_backward(
        go, x, w, algorithm="im2col", **kw)
    for got, want in zip(chunked, whole):
        assert_close(got, want)
    assert_close(chunked[0], reference.conv2d(x, w, b, **kw))
    for got, want in zip(chunked[1:], reference.conv2d_backward(go, x, w, **kw)):
        assert_close(got, want)
