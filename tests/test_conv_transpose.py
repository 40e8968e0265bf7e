"""conv_transpose2d and its backward: against the reference and torch autograd."""
import numpy as np
import pytest
from conftest import DTYPES, assert_close, assert_within_winograd_bound

import fastconv
from fastconv import _autotune, reference
from fastconv.convolution_transpose import _args

# (N, C, H, W, K/groups, kh, kw, stride, padding, output_padding, groups, dilation)
CASES = [
    (2, 4, 5, 6, 3, 3, 2, 1, 0, 0, 1, 1),
    (2, 4, 5, 6, 3, 3, 3, 2, 1, 1, 1, 1),
    (1, 4, 4, 7, 2, 3, 3, 2, 1, 0, 2, 1),
    (2, 2, 5, 5, 3, 2, 3, 1, 0, 1, 1, 2),        # output_padding >= stride, < dilation
    (1, 3, 3, 4, 2, 3, 2, (3, 2), (2, 1), (2, 1), 1, (2, 1)),
    (0, 2, 4, 4, 2, 3, 3, 2, 0, 1, 1, 1),        # empty batch
    (1, 6, 1, 1, 1, 1, 1, 1, 0, 0, 6, 1),        # depthwise 1x1
    # x planes of at most 16 pixels: im2col's grad_x tap by tap (`_im2col.by_taps`)
    (3, 6, 2, 3, 4, 4, 4, 2, 1, 0, 1, 1),        # a DCGAN's 4x4 upsampling
    (2, 5, 3, 3, 3, 1, 1, 2, 0, 1, 1, 1),        # 1x1 at stride 2: one tap, gaps between
    (2, 3, 4, 4, 2, 3, 3, 2, 2, 1, 1, 2),        # dilated: taps that land in the padding
]


def make(case, dtype, seed=0):
    N, C, H, W, Kg, kh, kw, s, p, op, g, d = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((C, Kg, kh, kw)).astype(dtype)
    b = rng.standard_normal(Kg * g).astype(dtype)
    return x, w, b, {"stride": s, "padding": p, "output_padding": op, "groups": g, "dilation": d}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_against_reference_and_torch(case, dtype):
    x, w, b, kw = make(case, dtype)
    copies = x.copy(), w.copy(), b.copy()
    out = fastconv.conv_transpose2d(x, w, b, **kw)
    assert out.dtype == dtype
    assert_close(out, reference.conv_transpose2d(x, w, b, **kw))
    gy = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    grads = fastconv.conv_transpose2d_backward(gy, x, w, **kw)
    for got, want in zip(grads, reference.conv_transpose2d_backward(gy, x, w, **kw)):
        assert got.dtype == dtype
        assert_close(got, want)
    for a, c in zip((x, w, b), copies):
        np.testing.assert_array_equal(a, c)
    torch = pytest.importorskip("torch")
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    y = torch.nn.functional.conv_transpose2d(xt, wt, bt, **kw)
    assert_close(out, y.detach().numpy())
    y.backward(torch.tensor(gy))
    for got, t in zip(grads, (xt, wt, bt)):
        assert_close(got, t.grad.numpy())


# CASES and geometries where the forward's algorithms differ most: 4x4 at stride 2 (a
# DCGAN's upsampling), 3x3 at stride 1 (winograd runs it too), 1x1 (im2col's plain GEMM)
ALGORITHM_CASES = CASES + [
    (2, 6, 4, 5, 3, 4, 4, 2, 1, 0, 1, 1),
    (2, 5, 6, 7, 4, 3, 3, 1, 1, 0, 1, 1),
    (1, 8, 5, 5, 6, 1, 1, 1, 0, 0, 2, 1),
    (3, 4, 3, 3, 2, 3, 3, 3, 2, 2, 2, 2),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ALGORITHM_CASES)
@pytest.mark.parametrize("algorithm", ["im2col", "direct", "winograd"])
def test_the_forward_by_each_algorithm(monkeypatch, case, dtype, algorithm):
    """The forward is conv2d's grad_x by the algorithm "auto" measures fastest for it:
    each one that runs the geometry gives the reference's result (winograd within its
    bound), and calibration offers winograd only where it runs."""
    N, C, H, W, Kg, kh, kw_, s, p, op, groups, d = case
    monkeypatch.setattr(_autotune, "_choices", {})
    monkeypatch.setattr(_autotune, "get_autotune", lambda: True)
    offered = []

    def calibrate(pass_, *args):
        offered.extend(args[-1])
        return {name: float(name != algorithm) for name in args[-1]}

    monkeypatch.setattr(_autotune, "calibrate", calibrate)
    x, w, b, kw = make(case, dtype)
    copies = x.copy(), w.copy(), b.copy()
    out = fastconv.conv_transpose2d(x, w, b, **kw)
    winograd = (kh, kw_, s, d) == (3, 3, 1, 1)
    if N:
        assert set(offered) == {"im2col", "direct"} | ({"winograd"} if winograd else set())
        g = _args(x, w, None, s, p, op, groups, d)[-1]
        prior = _autotune.rule("grad_x", out.shape, w.shape, g, groups, dtype)
        chosen = [rec["choice"] for rec in _autotune.autotune_choices()]
        assert chosen == [algorithm if algorithm in offered else prior]
    if algorithm == "winograd" and winograd:
        assert_within_winograd_bound(out, reference.conv_transpose2d(x, w, b, **kw))
    else:
        assert_close(out, reference.conv_transpose2d(x, w, b, **kw))
    for a, c in zip((x, w, b), copies):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("algorithm", ["im2col", "direct"])
@pytest.mark.parametrize("where", ["x", "weight", "grad_output"])
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("case", [CASES[3], CASES[4], CASES[9], (2, 3, 4, 3, 2, 3, 2, 1, 1, 2, 1, 3)])
def test_non_finite_values_stay_where_the_reference_has_them(rng, case, value, where, algorithm):
    """Where output_padding reaches a whole stride, x is zero-extended to conv2d's grid;
    the extension's zeros times an inf or NaN weight (or output gradient, in the weight
    gradient) are products the transposed convolution never forms: the results must
    still have the reference's inf, -inf and NaN, and its numbers, as torch's."""
    x, w, b, kw = make(case, np.float64)
    go = rng.standard_normal(reference.conv_transpose2d(x, w, b, **kw).shape)
    target = {"weight": w, "x": x, "grad_output": go}[where]
    target.flat[rng.integers(target.size, size=2)] = value
    with np.errstate(invalid="ignore"):
        out = fastconv.conv_transpose2d(x, w, b, **kw, algorithm=algorithm)
        got = fastconv.conv_transpose2d_backward(go, x, w, **kw)
        want = reference.conv_transpose2d(x, w, b, **kw), *reference.conv_transpose2d_backward(go, x, w, **kw)
    for a, e in zip((out, *got), want):
        np.testing.assert_allclose(a, e, rtol=1e-9, atol=1e-9)    # equal_nan: NaN where the reference's
    torch = pytest.importorskip("torch")
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    y = torch.nn.functional.conv_transpose2d(tx, tw, torch.tensor(b), **kw)
    y.backward(torch.tensor(go))
    for a, t in zip(want[:3], (y.detach(), tx.grad, tw.grad)):
        np.testing.assert_array_equal(np.isfinite(a), np.isfinite(t.numpy()))
        np.testing.assert_array_equal(np.isnan(a), np.isnan(t.numpy()))


@pytest.mark.parametrize("kwargs, error", [
    ({"output_padding": 2, "stride": 2}, ValueError),
    ({"padding": "same"}, TypeError),
    ({"groups": 3}, ValueError),
    ({"stride": 0}, ValueError),
    ({"padding": 5}, ValueError),
])
def test_bad_arguments(kwargs, error):
    x, w, b, _ = make(CASES[0], np.float64)
    with pytest.raises(error):
        fastconv.conv_transpose2d(x, w, b, **kwargs)


def test_bad_shapes():
    x, w, b, _kw = make(CASES[0], np.float64)
    with pytest.raises(ValueError, match="weight"):
        fastconv.conv_transpose2d(x, w[:3], b)
    with pytest.raises(ValueError, match="bias"):
        fastconv.conv_transpose2d(x, w, b[:2])
    with pytest.raises(TypeError, match="weight"):
        fastconv.conv_transpose2d(x, w.astype(np.float32))
    with pytest.raises(ValueError, match="grad_output"):
        fastconv.conv_transpose2d_backward(np.zeros((2, 3, 1, 1)), x, w)


@pytest.mark.parametrize("dtype", DTYPES)
def test_no_input_channels(dtype):
    # The forward is its bias; the backward gives empty gradients for x and the weight,
    # and the bias's. Any groups divides C=0, so only groups=1 is taken (K grows with it).
    x, w = np.zeros((2, 0, 3, 3), dtype), np.zeros((0, 4, 2, 2), dtype)
    b = np.arange(4, dtype=dtype)
    y = fastconv.conv_transpose2d(x, w, b, stride=2)
    np.testing.assert_array_equal(y, np.broadcast_to(b[:, None, None], (2, 4, 6, 6)))
    g = np.ones_like(y)
    for grads in (fastconv.conv_transpose2d_backward(g, x, w, stride=2),
                  reference.conv_transpose2d_backward(g, x, w, stride=2)):
        assert [a.shape for a in grads] == [x.shape, w.shape, b.shape]
        assert [a.dtype for a in grads] == [np.dtype(dtype)] * 3
        np.testing.assert_array_equal(grads[2], np.full(4, 72, dtype))
    for op in (lambda: fastconv.conv_transpose2d(x, w, groups=2),
               lambda: fastconv.conv_transpose2d_backward(g, x, w, stride=2, groups=2 ** 64 + 1)):
        with pytest.raises(ValueError, match="groups must be 1"):
            op()
