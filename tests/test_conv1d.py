import numpy as np
import pytest
from conftest import DTYPES, TORCH, assert_close, numerical_gradient, requires_torch

import fastconv
from fastconv import reference

# (N, C, L, K, k, stride, padding, dilation, groups)
CASES = [
    (2, 4, 17, 6, 3, 1, 1, 1, 2),
    (3, 3, 30, 5, 4, 2, "valid", 2, 1),
    (1, 4, 9, 4, 3, 1, "same", 2, 4),
    (2, 2, 8, 3, 2, 3, 2, 1, 1),
    (0, 3, 10, 2, 3, 1, 0, 1, 1),
    (1, 1, 1, 1, 1, 1, 0, 1, 1),
    (2, 3, 50, 4, (6,), (2,), (3,), 1, 1),
]


def make(rng, case, dtype):
    N, C, L, K, k, s, p, d, g = case
    k = k[0] if isinstance(k, tuple) else k
    x = rng.standard_normal((N, C, L)).astype(dtype)
    w = rng.standard_normal((K, C // g, k)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    return x, w, b, dict(stride=s, padding=p, dilation=d, groups=g)


@pytest.mark.parametrize("algorithm", ["auto", "im2col", "direct"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_conv1d_matches_reference(rng, case, dtype, algorithm):
    x, w, b, kw = make(rng, case, dtype)
    y = fastconv.conv1d(x, w, b, algorithm=algorithm, **kw)
    assert y.dtype == dtype and y.flags.c_contiguous and y.ndim == 3
    assert_close(y, reference.conv1d(x, w, b, **kw))
    go = rng.standard_normal(y.shape).astype(dtype)
    got = fastconv.conv1d_backward(go, x, w, algorithm=algorithm, **kw)
    for g, want, like in zip(got, reference.conv1d_backward(go, x, w, **kw), (x, w, b)):
        assert g.shape == like.shape and g.dtype == dtype and g.flags.c_contiguous
        assert_close(g, want)


def test_conv1d_gradients_match_finite_differences():
    rng = np.random.default_rng(2)
    x, w, b, kw = make(rng, CASES[1], np.float64)
    go = rng.standard_normal(fastconv.conv1d(x, w, b, **kw).shape)

    def loss():
        return float(np.sum(fastconv.conv1d(x, w, b, **kw) * go))

    gx, gw, gb = fastconv.conv1d_backward(go, x, w, **kw)
    np.testing.assert_allclose(gx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gw, numerical_gradient(loss, w), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gb, numerical_gradient(loss, b), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(x=np.zeros((2, 3))), ValueError, "x must be 3-D"),
    (dict(weight=np.zeros((4, 3, 3, 1))), ValueError, "weight must be 3-D"),
    (dict(weight=np.zeros((4, 3, 3), np.float32)), TypeError, "weight has dtype float32"),
    (dict(x=np.zeros((2, 3, 10), np.int64)), TypeError, "x must have dtype"),
    (dict(stride=0), ValueError, "stride must be >= 1"),
    (dict(stride=(1, 1)), ValueError, "stride must be an int or a 1-element sequence"),
    (dict(stride=1.5), TypeError, "stride must be an int"),
    (dict(padding=-1), ValueError, "padding must be >= 0"),
    (dict(padding="full"), ValueError, "padding must be one of 'valid', 'same'"),
    (dict(padding="same", stride=2), ValueError, "padding='same' needs stride=1"),
    (dict(dilation=0), ValueError, "dilation must be >= 1"),
    (dict(groups=2), ValueError, "groups=2 must divide the input channels C=3"),
    (dict(groups="1"), TypeError, "groups must be an int"),
    (dict(weight=np.zeros((4, 2, 3))), ValueError, "weight has 2 input channels per group"),
    (dict(weight=np.zeros((4, 3, 11))), ValueError,
     r"weight kernel length 11 .* longer than the padded input length 10 \(x length 10\)"),
    (dict(weight=np.zeros((0, 3, 3))), ValueError, "weight must have non-zero K"),
    (dict(x=np.zeros((2, 3, 0))), ValueError, "x must have a non-zero length"),
    (dict(bias=np.zeros(5)), ValueError, r"bias must have shape \(4,\)"),
    (dict(algorithm="fast"), ValueError, "algorithm must be one of 'auto', 'im2col', 'direct'"),
])
def test_conv1d_rejects_bad_arguments(kwargs, exc, match):
    args = dict(x=np.zeros((2, 3, 10)), weight=np.zeros((4, 3, 3)))
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        fastconv.conv1d(**args)


def test_conv1d_backward_checks_grad_output():
    x, w = np.zeros((2, 3, 10)), np.zeros((4, 3, 3))
    with pytest.raises(ValueError, match=r"grad_output must have shape \(2, 4, 8\)"):
        fastconv.conv1d_backward(np.zeros((2, 4, 9)), x, w)
    with pytest.raises(ValueError, match="grad_output must be 3-D"):
        fastconv.conv1d_backward(np.zeros((2, 4, 1, 8)), x, w)


def test_conv1d_backward_names_a_kernel_longer_than_the_signal():
    # Regression (property tests): the message named neither weight nor x.
    with pytest.raises(ValueError, match=r"^weight kernel length 8 .* \(x length 1\)"):
        fastconv.conv1d_backward(np.zeros((0, 1, 1), np.float32), np.zeros((0, 0, 1), np.float32),
                                 np.zeros((1, 0, 8), np.float32))


@pytest.mark.parametrize("kwargs", [dict(stride=2**31), dict(stride=2**63), dict(padding=2**31),
                                    dict(padding=(2**40,)), dict(dilation=[2**31])])
def test_conv1d_backward_names_an_oversized_window_argument(kwargs):
    # Regression (property tests): only conv2d bounded these, after grad_output's shape had been
    # checked against the output length they give, so the error named grad_output.
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"^{name} must be <= 2147483647"):
        fastconv.conv1d_backward(np.zeros((2, 4, 8)), np.zeros((2, 3, 10)), np.zeros((4, 3, 3)), **kwargs)


@requires_torch
class TestAgainstTorch:
    torch = TORCH

    @pytest.mark.parametrize("algorithm", ["auto", "im2col", "direct"])
    @pytest.mark.parametrize("case", CASES)
    def test_matches_torch_conv1d(self, rng, case, algorithm):
        torch = self.torch
        x, w, b, kw = make(rng, case, np.float64)
        tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
        ty = torch.nn.functional.conv1d(tx, tw, tb, **kw)
        y = fastconv.conv1d(x, w, b, algorithm=algorithm, **kw)
        assert_close(y, ty.detach().numpy())
        go = rng.standard_normal(y.shape)
        ty.backward(torch.from_numpy(go))
        for got, want in zip(fastconv.conv1d_backward(go, x, w, algorithm=algorithm, **kw),
                             (tx.grad, tw.grad, tb.grad)):
            assert_close(got, want.numpy())


@pytest.mark.parametrize("spelling", [2, np.int64(2), (2,), [2], np.array(2), np.array([2])])
def test_length_arguments_take_the_spellings_conv2d_takes(rng, spelling):
    x, w, b, _ = make(rng, CASES[1], np.float64)
    want = fastconv.conv1d(x, w, b, stride=2, padding=2, dilation=2)
    got = fastconv.conv1d(x, w, b, stride=spelling, padding=spelling, dilation=spelling)
    np.testing.assert_array_equal(got, want)
