"""Conv2D's training step: the forward keeps im2col's tap weights for the backward,
which reuses them while the weights are unchanged; no bias gradient without a bias;
`fastconv.convolution.grad_bias`."""
import numpy as np
import pytest
from conftest import DTYPES, assert_close, assert_within_winograd_bound

import fastconv
from fastconv import _im2col, convolution
from fastconv.nn import Conv2D, Sequential

# (N, C, H, K, kernel, stride, padding, bias): small planes (by taps) and a larger one (other algorithms)
CASES = [
    (3, 5, 2, 7, 3, 1, 1, False),
    (2, 6, 4, 4, 3, 2, 1, True),
    (2, 4, 4, 3, 3, 1, 1, True),
    (1, 3, 1, 2, 3, 1, 1, False),
    (2, 3, 9, 4, 3, 1, 1, True),
    (0, 3, 2, 4, 3, 1, 1, True),
]


def _layer(case, dtype):
    N, C, H, K, k, s, p, bias = case
    layer = Conv2D(C, K, k, s, p, bias=bias, dtype=dtype, rng=0)
    if bias:
        layer.params["bias"][...] = np.arange(K, dtype=dtype)
    return layer


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_layer_gradients_match_conv2d_backward(rng, case, dtype):
    N, C, H, K, k, s, p, bias = case
    layer = _layer(case, dtype)
    x = rng.standard_normal((N, C, H, H)).astype(dtype)
    y = layer.forward(x, training=True)
    assert_within_winograd_bound(y, fastconv.conv2d(x, layer.params["weight"], layer.params.get("bias"), s, p,
                                                    algorithm="im2col"))
    go = rng.standard_normal(y.shape).astype(dtype)
    want = fastconv.conv2d_backward(go, x, layer.params["weight"], s, p)
    grad_x = layer.backward(go)
    assert layer._saved == {}            # released after the backward
    assert grad_x.dtype == dtype and grad_x.flags.c_contiguous
    assert_within_winograd_bound(grad_x, want[0], sides=2)
    assert_close(layer.grads["weight"], want[1])
    if bias:
        assert_close(layer.grads["bias"], want[2])
    else:
        assert set(layer.grads) == {"weight"}
    # the parameters-only pass: the same weight gradient
    layer.forward(x, training=True)
    layer._backward_params(go)
    assert_close(layer.grads["weight"], want[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_keeps_the_taps_for_the_backward(rng, dtype, monkeypatch):
    layer = _layer(CASES[0], dtype)
    x = rng.standard_normal((3, 5, 2, 2)).astype(dtype)
    monkeypatch.setattr(convolution, "_choose_algorithm", lambda *a, **k: "im2col")
    layer.forward(x, training=True)
    assert set(layer._saved) == {"taps"}
    calls = []
    real = _im2col.taps_weight
    monkeypatch.setattr(_im2col, "taps_weight", lambda *a: calls.append(1) or real(*a))
    go = rng.standard_normal((3, 7, 2, 2)).astype(dtype)
    grad_x = layer.backward(go)
    assert calls == []                   # reused, not derived again
    want = fastconv.conv2d_backward(go, x, layer.params["weight"], 1, 1, algorithm="im2col")
    assert_close(grad_x, want[0])
    assert_close(layer.grads["weight"], want[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_weights_written_between_forward_and_backward_are_used(rng, dtype, monkeypatch):
    # as before the taps were kept: the backward runs the weights as they are then
    monkeypatch.setattr(convolution, "_choose_algorithm", lambda *a, **k: "im2col")
    layer = _layer(CASES[0], dtype)
    x = rng.standard_normal((3, 5, 2, 2)).astype(dtype)
    go = rng.standard_normal((3, 7, 2, 2)).astype(dtype)
    for change in (lambda w: w.__imul__(2), lambda w: w.__setitem__((0, 0, 0, 0), 5.0)):
        layer.forward(x, training=True)
        change(layer.params["weight"])
        want = fastconv.conv2d_backward(go, x, layer.params["weight"], 1, 1, algorithm="im2col")
        assert_close(layer.backward(go), want[0])
        # and a new weight array set in place of the old one
        layer.forward(x, training=True)
        layer.params["weight"] = layer.params["weight"] * 0.5
        want = fastconv.conv2d_backward(go, x, layer.params["weight"], 1, 1, algorithm="im2col")
        assert_close(layer.backward(go), want[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_network_without_the_input_gradient(rng, dtype):
    model = Sequential(Conv2D(3, 6, 3, 2, 1, bias=False, dtype=dtype, rng=1),
                       Conv2D(6, 5, 3, 1, 1, dtype=dtype, rng=2))
    x = rng.standard_normal((4, 3, 8, 8)).astype(dtype)
    go = rng.standard_normal((4, 5, 4, 4)).astype(dtype)
    model.forward(x, training=True)
    grad_x = model.backward(go)
    full = {k: g.copy() for k, g in model.grads.items()}
    model.forward(x, training=True)
    assert model.backward(go, input_grad=False) is None
    for key, g in model.grads.items():
        assert_close(g, full[key])
    assert set(full) == {"0.weight", "1.weight", "1.bias"}
    assert grad_x.shape == x.shape


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(32, 512, 2, 2), (3, 5, 7, 1), (1, 4, 1, 1), (0, 3, 2, 2), (2, 3, 0, 4)])
def test_grad_bias(rng, dtype, shape):
    g = rng.standard_normal(shape).astype(dtype)
    got = convolution.grad_bias(g)
    assert got.shape == (shape[1],) and got.dtype == dtype
    assert_close(got, g.astype(np.float64).sum(axis=(0, 2, 3)))
