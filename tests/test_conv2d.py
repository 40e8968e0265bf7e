import numpy as np
import pytest
from conftest import DTYPES, TORCH, assert_close, numerical_gradient, requires_torch

import fastconv
from fastconv import reference

# (N, C, H, W, K, kernel, stride, padding, dilation, groups)
CASES = [
    (2, 3, 7, 9, 4, (3, 2), 1, 1, 1, 1),
    (3, 4, 10, 11, 6, 3, 2, (1, 2), (2, 1), 2),
    (1, 8, 5, 5, 8, 3, 1, "same", 1, 8),          # depthwise
    (2, 3, 9, 9, 5, 4, 1, "same", 2, 1),          # even kernel: asymmetric 'same'
    (2, 3, 12, 13, 4, 3, 3, 4, 1, 1),             # padding larger than the kernel
    (1, 5, 6, 7, 3, 1, 1, 0, 1, 1),               # 1x1
    (2, 2, 11, 11, 3, 11, 1, 0, 1, 1),            # kernel as large as the input
    (1, 6, 9, 8, 4, (2, 5), (3, 2), "valid", 1, 2),
    (0, 3, 5, 5, 2, 3, 1, 0, 1, 1),               # empty batch
    (3, 4, 17, 15, 8, 5, 4, 2, 1, 4),
]


def make(rng, case, dtype):
    N, C, H, W, K, k, s, p, d, g = case
    kh, kw = (k, k) if isinstance(k, int) else k
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C // g, kh, kw)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    return x, w, b, dict(stride=s, padding=p, dilation=d, groups=g)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_forward_and_backward_match_reference(rng, case, dtype):
    x, w, b, kw = make(rng, case, dtype)
    y = fastconv.conv2d(x, w, b, **kw)
    assert y.dtype == dtype and y.flags.c_contiguous
    assert_close(y, reference.conv2d(x, w, b, **kw))
    go = rng.standard_normal(y.shape).astype(dtype)
    for got, want in zip(fastconv.conv2d_backward(go, x, w, **kw), reference.conv2d_backward(go, x, w, **kw)):
        assert got.dtype == dtype
        assert_close(got, want)


def test_random_shapes_match_reference():
    rng = np.random.default_rng(7)
    for _ in range(30):
        g = int(rng.choice([1, 2, 3]))
        C, K = g * int(rng.integers(1, 4)), g * int(rng.integers(1, 4))
        kh, kw = rng.integers(1, 5, size=2)
        sh, sw = rng.integers(1, 4, size=2)
        dh, dw = rng.integers(1, 3, size=2)
        ph, pw = rng.integers(0, 3, size=2)
        H = int(dh * (kh - 1) + 1 + rng.integers(0, 6))
        W = int(dw * (kw - 1) + 1 + rng.integers(0, 6))
        x = rng.standard_normal((int(rng.integers(1, 4)), C, H, W))
        w = rng.standard_normal((K, C // g, kh, kw))
        kw_ = dict(stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), groups=g)
        y = fastconv.conv2d(x, w, **kw_)
        assert_close(y, reference.conv2d(x, w, **kw_))
        go = rng.standard_normal(y.shape)
        for got, want in zip(fastconv.conv2d_backward(go, x, w, **kw_), reference.conv2d_backward(go, x, w, **kw_)):
            assert_close(got, want)


@pytest.mark.parametrize("case", [CASES[1], CASES[3], CASES[9]])
def test_gradients_match_finite_differences(case):
    rng = np.random.default_rng(3)
    N, C, H, W, K, k, s, p, d, g = case
    x, w, b, kw = make(rng, (min(N, 2), C, min(H, 9), min(W, 9), K, k, s, p, d, g), np.float64)
    go = rng.standard_normal(fastconv.conv2d(x, w, b, **kw).shape)

    def loss():
        return float(np.sum(fastconv.conv2d(x, w, b, **kw) * go))

    gx, gw, gb = fastconv.conv2d_backward(go, x, w, **kw)
    np.testing.assert_allclose(gx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gw, numerical_gradient(loss, w), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gb, numerical_gradient(loss, b), rtol=1e-6, atol=1e-7)


def test_non_contiguous_and_read_only_inputs_are_not_modified(rng):
    x, w, b, kw = make(rng, CASES[1], np.float64)
    xf = np.asfortranarray(x)
    ws = np.repeat(w, 2, axis=0)[::2]                 # strided view
    for a in (xf, ws, b):
        a.flags.writeable = False
    before = [a.copy() for a in (xf, ws, b)]
    y = fastconv.conv2d(xf, ws, b, **kw)
    assert_close(y, reference.conv2d(x, w, b, **kw))
    go = np.ones_like(y)[..., ::-1]                   # negative strides
    fastconv.conv2d_backward(go, xf, ws, **kw)
    for a, a0 in zip((xf, ws, b), before):
        np.testing.assert_array_equal(a, a0)


def test_results_do_not_depend_on_thread_count(rng):
    x, w, b, kw = make(rng, (5, 6, 20, 21, 8, 3, 1, 1, 1, 2), np.float64)
    go = rng.standard_normal(fastconv.conv2d(x, w, **kw).shape)
    with fastconv.threads(1):
        one = [fastconv.conv2d(x, w, b, **kw), *fastconv.conv2d_backward(go, x, w, **kw)]
    with fastconv.threads(2):
        two = [fastconv.conv2d(x, w, b, **kw), *fastconv.conv2d_backward(go, x, w, **kw)]
    for a, c in zip(one, two):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12)


@requires_torch
class TestAgainstTorch:
    torch = TORCH

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("case", CASES)
    def test_forward_and_autograd(self, rng, case, dtype):
        F = self.torch.nn.functional
        x, w, b, kw = make(rng, case, dtype)
        tx, tw, tb = (self.torch.tensor(a, requires_grad=True) for a in (x, w, b))
        ty = F.conv2d(tx, tw, tb, **kw)
        y = fastconv.conv2d(x, w, b, **kw)
        assert_close(y, ty.detach().numpy())
        go = rng.standard_normal(y.shape).astype(dtype)
        ty.backward(self.torch.tensor(go))
        gx, gw, gb = fastconv.conv2d_backward(go, x, w, **kw)
        assert_close(gx, tx.grad.numpy())
        assert_close(gw, tw.grad.numpy())
        assert_close(gb, tb.grad.numpy())


def test_row_bands_give_the_same_result(rng, monkeypatch):
    """Shrink the band size so images are split into many bands of output rows
    (and the backward's even/odd band schedule is exercised)."""
    from fastconv import _im2col

    x, w, b, kw = make(rng, (3, 4, 17, 15, 8, 5, 2, 2, 1, 2), np.float64)
    want = reference.conv2d(x, w, b, **kw)
    go = rng.standard_normal(want.shape)
    want_grads = reference.conv2d_backward(go, x, w, **kw)
    for band_bytes in (1 << 20, 4000, 1):
        monkeypatch.setattr(_im2col, "BAND_BYTES", band_bytes)
        assert_close(fastconv.conv2d(x, w, b, **kw), want)
        for got, expected in zip(fastconv.conv2d_backward(go, x, w, **kw), want_grads):
            assert_close(got, expected)


def test_workspace_is_bounded_whatever_the_batch():
    """The column workspace is one band per thread: about BAND_BYTES each, far
    below a 64 MiB cap even at 16 threads, and independent of the batch size."""
    from fastconv import _validation as v
    from fastconv._im2col import _band_rows, _workspace

    for _N, C, H, k, s in [(64, 64, 56, 3, 1), (1, 128, 112, 3, 1), (100000, 3, 32, 3, 1), (8, 3, 227, 11, 4),
                          (8, 3, 227, 11, 1), (64, 512, 14, 3, 1)]:
        g = v.conv_geometry((H, H), k, s, 1, 1)
        rows = _band_rows(C * k * k, g, 4)
        assert _workspace(16, C * k * k, rows, g, np.float32).nbytes <= 64 << 20


def test_peak_extra_memory_stays_under_the_cap():
    """C2 with N=64: besides its output, conv2d allocates only the per-thread bands."""
    import tracemalloc

    x = np.ones((64, 64, 56, 56), np.float32)
    w = np.ones((64, 64, 3, 3), np.float32)
    tracemalloc.start()
    try:
        y = fastconv.conv2d(x, w, padding=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - y.nbytes < 64 << 20
