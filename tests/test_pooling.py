"""Max / average / sum / global pooling: against the reference, finite differences
and (when installed) torch; NaN, ties, threads and argument checking."""
import numpy as np
import pytest
from conftest import DTYPES, TORCH, assert_close, numerical_gradient, requires_torch

import fastconv
from fastconv import reference

# (N, C, H, W, kernel, stride, padding, dilation, ceil_mode)
CASES = [
    (2, 3, 8, 8, 2, 2, 0, 1, False),               # the common 2x2 stride 2 (fused loop)
    (2, 3, 9, 11, 2, 2, 1, 1, True),               # ... with padding, odd sizes, ceil_mode
    (2, 2, 13, 12, 3, 2, 1, 1, False),             # overlapping 3x3 stride 2 (fused loop)
    (1, 3, 12, 15, 3, 2, 0, 1, True),              # ... partial last windows
    (3, 2, 7, 9, (3, 2), (1, 2), (1, 0), 1, False),
    (2, 3, 10, 11, (2, 4), (3, 1), (1, 2), (2, 1), True),
    (1, 1, 5, 5, 2, None, 0, 1, True),             # 2x2 on 5x5 with ceil_mode: 3x3
    (1, 4, 6, 7, 1, 1, 0, 1, False),               # 1x1
    (2, 2, 5, 6, (5, 6), None, 0, 1, False),       # window as large as the input
    (2, 3, 9, 8, 4, 3, 2, 2, True),                # dilation, ceil_mode, padding
    (0, 3, 6, 6, 2, 2, 0, 1, False),               # empty batch
    (1, 1, 1, 1, 1, 1, 0, 1, False),
    (2, 2, 2, 11, 2, (2, 3), 0, (2, 2), True),     # ceil window overhanging the input
    (2, 3, 17, 19, 3, 3, 1, 1, False),
]

AVG_CASES = [c[:8] + (c[8],) for c in CASES if c[7] == 1]    # avg/sum pooling has no dilation


def args(case):
    N, C, H, W, k, s, p, d, ceil = case
    return (N, C, H, W), dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil)


def avg_kwargs(kw):
    return {name: val for name, val in kw.items() if name != "dilation"}


def with_nans(rng, x, fraction=0.05):
    x = x.copy()
    x[rng.random(x.shape) < fraction] = np.nan
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_max_pool_matches_reference(rng, case, dtype):
    shape, kw = args(case)
    x = rng.standard_normal(shape).astype(dtype)
    y, idx = fastconv.max_pool2d(x, **kw, return_indices=True)
    ry, ridx = reference.max_pool2d(x, **kw, return_indices=True)
    assert y.dtype == dtype and y.flags.c_contiguous and idx.dtype == np.int64
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_array_equal(fastconv.max_pool2d(x, **kw), y)
    go = rng.standard_normal(y.shape).astype(dtype)
    gx = fastconv.max_pool2d_backward(go, idx, shape)
    assert gx.dtype == dtype and gx.shape == shape
    assert_close(gx, reference.max_pool2d_backward(go, idx, shape))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_max_pool_propagates_nan(rng, case, dtype):
    shape, kw = args(case)
    x = with_nans(rng, rng.standard_normal(shape).astype(dtype), 0.1)
    y, idx = fastconv.max_pool2d(x, **kw, return_indices=True)
    ry, ridx = reference.max_pool2d(x, **kw, return_indices=True)
    np.testing.assert_array_equal(y, ry)                   # NaNs compare equal here
    np.testing.assert_array_equal(idx, ridx)               # the last NaN, as torch
    np.testing.assert_array_equal(fastconv.max_pool2d(x, **kw), y)


def test_max_pool_ties_go_to_the_first_element():
    x = np.zeros((1, 1, 4, 4))
    y, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(idx[0, 0], [[0, 2], [8, 10]])
    go = np.ones_like(y)
    gx = fastconv.max_pool2d_backward(go, idx, x.shape)
    assert gx.sum() == 4 and np.count_nonzero(gx) == 4      # not split between tied elements
    x = np.full((1, 1, 3, 3), -np.inf)
    y, idx = fastconv.max_pool2d(x, 2, padding=1, return_indices=True)
    assert np.all(y == -np.inf)
    np.testing.assert_array_equal(idx[0, 0], [[0, 1], [3, 4]])   # never a padding position


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel, stride, padding", [(2, 2, 0), (3, 2, 1), (3, 2, 0), (2, 2, 1)])
def test_fused_max_loops_with_nan_at_every_position(dtype, kernel, stride, padding):
    # One NaN per window position: every lane and every element of the fused loops.
    for pos in range(kernel * kernel):
        x = np.arange(2 * 15 * 18, dtype=dtype).reshape(1, 2, 15, 18) % 7
        x[..., pos // kernel::kernel + 3, pos % kernel::kernel + 5] = np.nan
        y, idx = fastconv.max_pool2d(x, kernel, stride, padding, return_indices=True)
        ry, ridx = reference.max_pool2d(x, kernel, stride, padding, return_indices=True)
        np.testing.assert_array_equal(y, ry)
        np.testing.assert_array_equal(idx, ridx)
        np.testing.assert_array_equal(fastconv.max_pool2d(x, kernel, stride, padding), y)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", AVG_CASES)
@pytest.mark.parametrize("count_include_pad, divisor_override", [(True, None), (False, None), (True, 3)])
def test_avg_pool_matches_reference(rng, case, dtype, count_include_pad, divisor_override):
    shape, kw = args(case)
    kw = dict(avg_kwargs(kw), count_include_pad=count_include_pad, divisor_override=divisor_override)
    x = rng.standard_normal(shape).astype(dtype)
    y = fastconv.avg_pool2d(x, **kw)
    assert y.dtype == dtype and y.flags.c_contiguous
    assert_close(y, reference.avg_pool2d(x, **kw))
    go = rng.standard_normal(y.shape).astype(dtype)
    gx = fastconv.avg_pool2d_backward(go, shape, **kw)
    assert gx.dtype == dtype and gx.shape == shape
    assert_close(gx, reference.avg_pool2d_backward(go, shape, **kw))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", AVG_CASES)
def test_sum_pool_matches_reference(rng, case, dtype):
    shape, kw = args(case)
    kw = avg_kwargs(kw)
    x = rng.standard_normal(shape).astype(dtype)
    y = fastconv.sum_pool2d(x, **kw)
    assert_close(y, reference.sum_pool2d(x, **kw))
    assert_close(y, fastconv.avg_pool2d(x, **kw, divisor_override=1))
    go = rng.standard_normal(y.shape).astype(dtype)
    assert_close(fastconv.sum_pool2d_backward(go, shape, **kw), reference.sum_pool2d_backward(go, shape, **kw))


@pytest.mark.parametrize("case", [c for c in AVG_CASES if c[0] > 0][:6])
def test_avg_and_sum_backward_match_finite_differences(rng, case):
    shape, kw = args(case)
    shape = (1, 2) + shape[2:]                  # two planes keep the differences quick
    kw = avg_kwargs(kw)
    x = rng.standard_normal(shape)
    go = rng.standard_normal(fastconv.avg_pool2d(x, **kw).shape)
    for fwd, bwd, extra in [(fastconv.avg_pool2d, fastconv.avg_pool2d_backward, dict(count_include_pad=False)),
                            (fastconv.avg_pool2d, fastconv.avg_pool2d_backward, {}),
                            (fastconv.sum_pool2d, fastconv.sum_pool2d_backward, {})]:
        numeric = numerical_gradient(lambda: np.sum(fwd(x, **kw, **extra) * go), x)
        np.testing.assert_allclose(bwd(go, shape, **kw, **extra), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("case", [c for c in CASES if c[0] > 0][:6])
def test_max_backward_matches_finite_differences(case):
    shape, kw = args(case)
    shape = (1, 2) + shape[2:]
    # Distinct, well-separated values: the max of each window is stable under eps.
    x = np.random.default_rng(7).permutation(np.prod(shape)).reshape(shape).astype(np.float64)
    y, idx = fastconv.max_pool2d(x, **kw, return_indices=True)
    go = np.random.default_rng(8).standard_normal(y.shape)
    numeric = numerical_gradient(lambda: np.sum(fastconv.max_pool2d(x, **kw) * go), x, eps=1e-3)
    np.testing.assert_allclose(fastconv.max_pool2d_backward(go, idx, shape), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("op", ["max", "avg", "sum"])
def test_one_and_two_threads_agree(rng, op):
    x = with_nans(rng, rng.standard_normal((3, 5, 23, 21)).astype(np.float32), 0.01)
    results = []
    for n in (1, 2):
        with fastconv.threads(n):
            if op == "max":
                y, idx = fastconv.max_pool2d(x, 3, 2, 1, return_indices=True)
                gx = fastconv.max_pool2d_backward(np.ones_like(y), idx, x.shape)
                results.append((fastconv.max_pool2d(x, 2), y, idx, gx))
            elif op == "avg":
                y = fastconv.avg_pool2d(x, 3, 2, 1, ceil_mode=True)
                results.append((y, fastconv.avg_pool2d_backward(y, x.shape, 3, 2, 1, ceil_mode=True)))
            else:
                y = fastconv.sum_pool2d(x, 2)
                results.append((y, fastconv.sum_pool2d_backward(y, x.shape, 2)))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_single_plane_uses_row_blocks(rng):
    # Fewer planes than threads*4: the forward splits each plane into row blocks.
    x = rng.standard_normal((1, 1, 41, 37))
    with fastconv.threads(2):
        np.testing.assert_array_equal(fastconv.max_pool2d(x, 3, 2), reference.max_pool2d(x, 3, 2))
        assert_close(fastconv.avg_pool2d(x, 3, 2, 1), reference.avg_pool2d(x, 3, 2, 1))


def test_unbatched_noncontiguous_and_readonly_inputs(rng):
    base = rng.standard_normal((3, 10, 12, 2))
    x = base[..., 0]                                        # (3, 10, 12), not contiguous
    x.flags.writeable = False
    before = x.copy()
    y, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    assert y.shape == (3, 5, 6)
    np.testing.assert_array_equal(y, fastconv.max_pool2d(np.ascontiguousarray(x)[None], 2)[0])
    np.testing.assert_array_equal(fastconv.max_pool2d_backward(y, idx, x.shape),
                                  fastconv.max_pool2d_backward(y[None], idx[None], (1,) + x.shape)[0])
    a = fastconv.avg_pool2d(x, 3, 1, 1)
    assert_close(a, reference.avg_pool2d(x, 3, 1, 1))
    assert_close(fastconv.avg_pool2d_backward(a, x.shape, 3, 1, 1), reference.avg_pool2d_backward(a, x.shape, 3, 1, 1))
    assert_close(fastconv.sum_pool2d(x, 2), reference.sum_pool2d(x, 2))
    np.testing.assert_array_equal(x, before)


def test_avg_backward_is_the_adjoint(rng):
    x = rng.standard_normal((2, 3, 11, 10))
    for kw in [dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
               dict(kernel_size=(2, 3), stride=(1, 2)), dict(kernel_size=3, stride=2, divisor_override=5)]:
        y = fastconv.avg_pool2d(x, **kw)
        g = rng.standard_normal(y.shape)
        np.testing.assert_allclose(np.sum(y * g), np.sum(x * fastconv.avg_pool2d_backward(g, x.shape, **kw)),
                                   rtol=1e-12)


# ---------------------------------------------------------------------------
# Global pooling

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 7, 5), (1, 4, 1, 1), (0, 2, 3, 3), (3, 6, 9), (2, 3, 4, 4)])
def test_global_pooling_matches_reference(rng, dtype, shape):
    x = with_nans(rng, rng.standard_normal(shape).astype(dtype), 0.02)
    x[..., 0, 0] = 1.0                      # keep some planes NaN-free
    for keepdims in (True, False):
        a = fastconv.global_avg_pool2d(x, keepdims=keepdims)
        assert_close(a, reference.global_avg_pool2d(x, keepdims=keepdims))
        m, idx = fastconv.global_max_pool2d(x, keepdims=keepdims, return_indices=True)
        rm, ridx = reference.global_max_pool2d(x, keepdims=keepdims, return_indices=True)
        np.testing.assert_array_equal(m, rm)
        np.testing.assert_array_equal(idx, ridx)
        np.testing.assert_array_equal(fastconv.global_max_pool2d(x, keepdims=keepdims), m)
        go = rng.standard_normal(a.shape).astype(dtype)
        assert_close(fastconv.global_avg_pool2d_backward(go, shape), reference.global_avg_pool2d_backward(go, shape))
        assert_close(fastconv.global_max_pool2d_backward(go, idx, shape),
                     reference.global_max_pool2d_backward(go, idx, shape))


def test_global_pooling_equals_a_full_window(rng):
    x = rng.standard_normal((2, 3, 9, 6))
    assert_close(fastconv.global_avg_pool2d(x), fastconv.avg_pool2d(x, (9, 6)))
    np.testing.assert_array_equal(fastconv.global_max_pool2d(x, return_indices=True)[1],
                                  fastconv.max_pool2d(x, (9, 6), return_indices=True)[1])


# ---------------------------------------------------------------------------
# Argument checking

X = np.zeros((2, 3, 8, 8), np.float32)


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(x=np.zeros((8, 8), np.float32)), ValueError, "x must be 3-D"),
    (dict(x=np.zeros((1, 2, 3, 8, 8), np.float32)), ValueError, "x must be 3-D"),
    (dict(x=np.zeros((2, 3, 0, 8), np.float32)), ValueError, "x"),
    (dict(x=X.astype(np.int32)), TypeError, "x"),
    (dict(x=X.astype(np.float16)), TypeError, "x"),
    (dict(x="image"), TypeError, "x"),
    (dict(kernel_size=0), ValueError, "kernel_size"),
    (dict(kernel_size=(2, -1)), ValueError, "kernel_size"),
    (dict(kernel_size=2.0), TypeError, "kernel_size"),
    (dict(stride=0), ValueError, "stride"),
    (dict(stride=(1, 2, 3)), ValueError, "stride"),
    (dict(padding=-1), ValueError, "padding"),
    (dict(padding=2), ValueError, "padding"),                   # > kernel 3 // 2
    (dict(kernel_size=(4, 2), padding=(2, 2)), ValueError, "padding"),
    (dict(padding="same"), TypeError, "padding"),
    (dict(kernel_size=9), ValueError, "output size"),
    (dict(dilation=0), ValueError, "dilation"),
    (dict(dilation=4), ValueError, "output size"),
    (dict(ceil_mode=1), TypeError, "ceil_mode"),
    (dict(return_indices="yes"), TypeError, "return_indices"),
])
def test_max_pool_rejects_bad_arguments(kwargs, exc, word):
    call = dict(x=X, kernel_size=3, stride=None, padding=0, dilation=1)
    call.update(kwargs)
    with pytest.raises(exc, match=word):
        fastconv.max_pool2d(**call)


def test_max_pool_rejects_windows_that_only_cover_padding():
    # rows -1 and 3 of a 3-row input: torch returns -inf and an index outside the plane.
    with pytest.raises(ValueError, match="padding"):
        fastconv.max_pool2d(np.zeros((1, 1, 3, 3)), 2, 1, padding=1, dilation=4)


@pytest.mark.parametrize("op", [fastconv.avg_pool2d, fastconv.sum_pool2d])
@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(x=np.zeros((3, 8), np.float32)), ValueError, "x must be 3-D"),
    (dict(x=X.astype(np.int64)), TypeError, "x"),
    (dict(kernel_size=0), ValueError, "kernel_size"),
    (dict(stride=-1), ValueError, "stride"),
    (dict(padding=2), ValueError, "padding"),
    (dict(kernel_size=10), ValueError, "output size"),
    (dict(ceil_mode=None), TypeError, "ceil_mode"),
])
def test_avg_and_sum_pool_reject_bad_arguments(op, kwargs, exc, word):
    call = dict(x=X, kernel_size=3)
    call.update(kwargs)
    with pytest.raises(exc, match=word):
        op(**call)


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(divisor_override=0), ValueError, "divisor_override"),
    (dict(divisor_override=1.5), TypeError, "divisor_override"),
    (dict(divisor_override=2**70), ValueError, "divisor_override"),
    (dict(count_include_pad="no"), TypeError, "count_include_pad"),
])
def test_avg_pool_rejects_bad_divisor_arguments(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        fastconv.avg_pool2d(X, 3, **kwargs)
    with pytest.raises(exc, match=word):
        fastconv.avg_pool2d_backward(np.zeros((2, 3, 2, 2), np.float32), X.shape, 3, **kwargs)


def test_backward_rejects_inconsistent_shapes():
    go = np.zeros((2, 3, 4, 4), np.float32)
    idx = np.zeros((2, 3, 4, 4), np.int64)
    with pytest.raises(ValueError, match="indices"):
        fastconv.max_pool2d_backward(go, idx[:, :, :3], X.shape)
    with pytest.raises(TypeError, match="indices"):
        fastconv.max_pool2d_backward(go, idx.astype(np.float64), X.shape)
    with pytest.raises(TypeError, match="indices"):
        fastconv.max_pool2d_backward(go, idx.astype(bool), X.shape)
    with pytest.raises(ValueError, match="grad_output"):
        fastconv.max_pool2d_backward(go[:1], idx[:1], X.shape)
    with pytest.raises(ValueError, match="input_shape"):
        fastconv.max_pool2d_backward(go, idx, (2, 3, 8))
    with pytest.raises(ValueError, match="input_shape"):
        fastconv.max_pool2d_backward(go, idx, (2, 3, 0, 8))
    with pytest.raises(TypeError, match="input_shape"):
        fastconv.max_pool2d_backward(go, idx, 64)
    with pytest.raises(TypeError, match="grad_output"):
        fastconv.max_pool2d_backward(go.astype(np.int32), idx, X.shape)
    with pytest.raises(ValueError, match="grad_output"):
        fastconv.avg_pool2d_backward(go[:, :, :3], X.shape, 2)            # 2x2 on 8x8 gives 4x4
    with pytest.raises(ValueError, match="grad_output"):
        fastconv.sum_pool2d_backward(go, (2, 4, 8, 8), 2)
    with pytest.raises(ValueError, match="grad_output"):
        fastconv.global_avg_pool2d_backward(go, X.shape)
    with pytest.raises(ValueError, match="grad_output"):
        fastconv.global_max_pool2d_backward(np.zeros((2, 4)), np.zeros((2, 4), np.int64), X.shape)


@pytest.mark.parametrize("bad", [-1, 64, 2 ** 40, -(2 ** 62)])
def test_max_backward_rejects_out_of_range_indices_without_writing(bad):
    go = np.ones((2, 3, 4, 4), np.float64)
    idx = np.zeros((2, 3, 4, 4), np.int64)
    idx[1, 2, 3, 3] = bad
    with pytest.raises(ValueError, match="indices"):
        fastconv.max_pool2d_backward(go, idx, X.shape)
    with pytest.raises(ValueError, match="indices"):
        fastconv.global_max_pool2d_backward(go[..., :1, :1], idx[..., :1, :1] + bad, X.shape)


def test_backward_with_an_unallocatable_input_shape_is_a_memory_error():
    shape = (1, 1, 2**40, 2**40)
    with pytest.raises(MemoryError, match="grad_input"):
        fastconv.global_avg_pool2d_backward(np.zeros((1, 1, 1, 1)), shape)
    with pytest.raises(MemoryError, match="grad_input"):
        fastconv.max_pool2d_backward(np.zeros((1, 1, 1, 1)), np.zeros((1, 1, 1, 1), np.int64), shape)


def test_max_backward_accepts_other_integer_index_dtypes(rng):
    x = rng.standard_normal((2, 3, 8, 8))
    y, idx = fastconv.max_pool2d(x, 3, 2, 1, return_indices=True)
    want = fastconv.max_pool2d_backward(y, idx, x.shape)
    for dtype in (np.int32, np.uint16, np.int16):
        np.testing.assert_array_equal(fastconv.max_pool2d_backward(y, idx.astype(dtype), x.shape), want)
    huge = idx.astype(np.uint64)
    huge[0, 0, 0, 0] = 2 ** 64 - 1
    with pytest.raises(ValueError, match="indices"):
        fastconv.max_pool2d_backward(y, huge, x.shape)


# ---------------------------------------------------------------------------

@requires_torch
class TestAgainstTorch:
    torch = TORCH

    def tensor(self, a, grad=False):
        return self.torch.tensor(a, requires_grad=grad)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("case", CASES)
    def test_max_pool_forward_indices_and_autograd(self, rng, case, dtype):
        F = self.torch.nn.functional
        shape, kw = args(case)
        x = rng.standard_normal(shape).astype(dtype)
        if case[0] > 1:
            x = with_nans(rng, x)
        y, idx = fastconv.max_pool2d(x, **kw, return_indices=True)
        tx = self.tensor(x, grad=True)
        ty, tidx = F.max_pool2d(tx, **kw, return_indices=True)
        np.testing.assert_array_equal(y, ty.detach().numpy())
        np.testing.assert_array_equal(idx, tidx.numpy())
        go = rng.standard_normal(y.shape).astype(dtype)
        if ty.numel():
            ty.backward(self.tensor(go))
            assert_close(fastconv.max_pool2d_backward(go, idx, shape), tx.grad.numpy())

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("case", AVG_CASES)
    @pytest.mark.parametrize("count_include_pad, divisor_override", [(True, None), (False, None), (False, 2)])
    def test_avg_pool_forward_and_autograd(self, rng, case, dtype, count_include_pad, divisor_override):
        F = self.torch.nn.functional
        shape, kw = args(case)
        kw = dict(avg_kwargs(kw), count_include_pad=count_include_pad, divisor_override=divisor_override)
        if kw["stride"] is None:
            del kw["stride"]
        x = rng.standard_normal(shape).astype(dtype)
        y = fastconv.avg_pool2d(x, **kw)
        tx = self.tensor(x, grad=True)
        ty = F.avg_pool2d(tx, **kw)
        assert_close(y, ty.detach().numpy())
        go = rng.standard_normal(y.shape).astype(dtype)
        if ty.numel():
            ty.backward(self.tensor(go))
            assert_close(fastconv.avg_pool2d_backward(go, shape, **kw), tx.grad.numpy())

    @pytest.mark.parametrize("case", AVG_CASES[:5])
    def test_sum_pool_is_avg_pool_with_divisor_one(self, rng, case):
        F = self.torch.nn.functional
        shape, kw = args(case)
        kw = avg_kwargs(kw)
        x = rng.standard_normal(shape)
        ty = F.avg_pool2d(self.tensor(x), kw["kernel_size"], kw["stride"], kw["padding"], kw["ceil_mode"],
                          divisor_override=1)
        assert_close(fastconv.sum_pool2d(x, **kw), ty.numpy())

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_global_pooling_matches_adaptive_pooling(self, rng, dtype):
        F = self.torch.nn.functional
        x = with_nans(rng, rng.standard_normal((3, 4, 7, 9)).astype(dtype), 0.01)
        tx = self.tensor(x, grad=True)
        assert_close(fastconv.global_avg_pool2d(x), F.adaptive_avg_pool2d(tx, 1).detach().numpy())
        m, idx = fastconv.global_max_pool2d(x, return_indices=True)
        tm, tidx = F.adaptive_max_pool2d(tx, 1, return_indices=True)
        np.testing.assert_array_equal(m, tm.detach().numpy())
        np.testing.assert_array_equal(idx, tidx.numpy())
        go = rng.standard_normal(m.shape).astype(dtype)
        tm.backward(self.tensor(go))
        assert_close(fastconv.global_max_pool2d_backward(go, idx, x.shape), tx.grad.numpy())


def test_output_size_keeps_a_ceil_mode_window_that_overhangs_the_input():
    # torch: floor((2 - 3 + (2 - 1)) / 2) + 1 = 1 window (rows 0 and 2 of a 2-row input).
    assert fastconv.output_size(2, 2, stride=2, dilation=2, ceil_mode=True) == 1
    with pytest.raises(ValueError, match="kernel_size"):
        fastconv.output_size(2, 2, stride=2, dilation=2)
    assert fastconv.output_size(5, 2, stride=2, ceil_mode=True) == 3
    assert fastconv.output_size(5, 2, stride=2, padding=1, ceil_mode=True) == 3   # last start in padding: dropped


@pytest.mark.parametrize("dtype", DTYPES)
def test_global_max_with_infinities_and_nan(dtype):
    x = np.zeros((1, 4, 9, 11), dtype)
    x[0, 0, 3, 4] = np.inf
    x[0, 1, 5, 5] = -np.inf
    x[0, 2, 2, 2], x[0, 2, 7, 1] = np.inf, -np.inf
    x[0, 3, 1, 1], x[0, 3, 8, 10], x[0, 3, 0, 0] = np.nan, np.nan, np.inf
    m, idx = fastconv.global_max_pool2d(x, keepdims=False, return_indices=True)
    np.testing.assert_array_equal(m[0], [np.inf, 0, np.inf, np.nan])
    np.testing.assert_array_equal(idx[0], [3 * 11 + 4, 0, 2 * 11 + 2, 8 * 11 + 10])
    np.testing.assert_array_equal(fastconv.global_max_pool2d(x, keepdims=False), m)
