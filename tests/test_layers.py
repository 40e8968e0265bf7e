import numpy as np
import pytest
from conftest import DTYPES, TORCH, assert_close, numerical_gradient, requires_torch

import fastconv
from fastconv import reference
from fastconv.layers import (
    AvgPool2D,
    Conv2D,
    Dropout,
    Flatten,
    Linear,
    MaxPool2D,
    ReLU,
    Sequential,
    Sigmoid,
)
from fastconv.nn.losses import binary_log_loss, softmax_cross_entropy
from fastconv.nn.optim import SGD, Adam

F64 = np.float64


def distinct(rng, shape, dtype=F64, low=0.1):
    """Random values at least `low` away from 0 and from each other (no kinks or ties within eps)."""
    n = int(np.prod(shape))
    values = (np.arange(n) + 1.0) * low * np.sign(rng.standard_normal(n))
    return rng.permutation(values).reshape(shape).astype(dtype)


def check_gradients(layer, x, rng):
    """backward() against central differences of sum(forward(x) * g), for x and every parameter."""
    y = layer.forward(x)
    g = rng.standard_normal(y.shape)
    grad_x = layer.backward(g)
    grads = {k: v.copy() for k, v in layer.grads.items()}
    f = lambda: float(np.sum(layer.forward(x) * g))
    with fastconv.threads(1):  # hundreds of tiny calls: no use for a thread team
        np.testing.assert_allclose(grad_x, numerical_gradient(f, x), rtol=1e-6, atol=1e-8)
        assert set(grads) == set(layer.params)
        for key, p in layer.params.items():
            assert grads[key].shape == p.shape and grads[key].dtype == p.dtype
            np.testing.assert_allclose(grads[key], numerical_gradient(f, p), rtol=1e-6, atol=1e-8)


CONV_LAYERS = [  # (input shape, Conv2D arguments)
    ((2, 3, 5, 6), dict(in_channels=3, out_channels=4, kernel_size=3)),
    ((2, 4, 6, 7), dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 1), padding=(1, 2),
                        dilation=(1, 2), groups=2)),
    ((1, 2, 5, 5), dict(in_channels=2, out_channels=3, kernel_size=4, padding="same", bias=False)),
    ((3, 2, 4, 4), dict(in_channels=2, out_channels=2, kernel_size=1, stride=2)),
]


@pytest.mark.parametrize("shape, kwargs", CONV_LAYERS)
def test_conv2d_gradients(rng, shape, kwargs):
    layer = Conv2D(**kwargs, dtype=F64, rng=1)
    if "bias" in layer.params:
        layer.params["bias"][:] = rng.standard_normal(layer.params["bias"].shape)
    check_gradients(layer, rng.standard_normal(shape), rng)


def test_linear_gradients(rng):
    layer = Linear(5, 3, dtype=F64, rng=2)
    layer.params["bias"][:] = rng.standard_normal(3)
    check_gradients(layer, rng.standard_normal((4, 5)), rng)
    check_gradients(Linear(2, 3, bias=False, dtype=F64, rng=2), rng.standard_normal((1, 2)), rng)


POOL_LAYERS = [  # (input shape, layer)
    ((2, 3, 6, 6), lambda: MaxPool2D(2)),
    ((2, 2, 7, 5), lambda: MaxPool2D((3, 2), stride=(2, 1), padding=1)),
    ((1, 2, 7, 7), lambda: MaxPool2D(3, stride=2)),
    ((2, 3, 6, 6), lambda: AvgPool2D(2)),
    ((2, 2, 7, 5), lambda: AvgPool2D((3, 2), stride=(2, 1), padding=1)),
    ((1, 2, 9, 8), lambda: MaxPool2D(2, stride=2, padding=1, dilation=2, ceil_mode=True)),
    ((1, 2, 7, 8), lambda: AvgPool2D(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ((1, 2, 6, 6), lambda: AvgPool2D(2, divisor_override=3)),
]


@pytest.mark.parametrize("shape, make", POOL_LAYERS)
def test_pool_gradients(rng, shape, make):
    check_gradients(make(), distinct(rng, shape), rng)


@pytest.mark.parametrize("layer", [ReLU(), Sigmoid(), Flatten()], ids=repr)
def test_elementwise_and_reshape_gradients(rng, layer):
    check_gradients(layer, distinct(rng, (2, 3, 4, 5), low=0.01), rng)


def test_sequential_gradients(rng):
    model = Sequential(Conv2D(2, 3, 3, padding=1, dtype=F64, rng=0), Sigmoid(), AvgPool2D(2),
                       Conv2D(3, 4, 2, dtype=F64, rng=1), ReLU(), MaxPool2D(2), Flatten(), Linear(4, 3, dtype=F64, rng=2))
    for p in model.params.values():
        p[...] = rng.standard_normal(p.shape)  # biases too
    check_gradients(model, rng.standard_normal((2, 2, 6, 6)), rng)


def test_dropout(rng):
    layer = Dropout(0.25, rng=0)
    x = rng.standard_normal((4, 50, 50))
    y = layer.forward(x)
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.02
    assert_close(y[kept], x[kept] / 0.75)
    g = rng.standard_normal(x.shape)
    assert_close(layer.backward(g), np.where(kept, g / 0.75, 0))
    assert_close(layer.forward(x, training=False), x)   # the identity at evaluation time
    assert np.array_equal(Dropout(1.0).forward(x), np.zeros_like(x))
    assert_close(Dropout(0.0).forward(x), x)
    a, b = Dropout(0.5, rng=3).forward(x), Dropout(0.5, rng=3).forward(x)
    assert np.array_equal(a, b)
    for p in (-0.1, 1.5, "0.5", None):
        with pytest.raises(ValueError, match="p must be"):
            Dropout(p)


def test_sequential_equals_composed_ops(rng):
    x = rng.standard_normal((3, 2, 8, 8))
    model = Sequential(Conv2D(2, 4, 3, padding=1, dtype=F64, rng=0), ReLU(), MaxPool2D(2), Flatten(),
                       Linear(64, 5, dtype=F64, rng=1))
    conv, lin = model[0], model[4]
    w, b, wl, bl = conv.params["weight"], conv.params["bias"], lin.params["weight"], lin.params["bias"]
    b[:] = rng.standard_normal(4)
    a = fastconv.conv2d(x, w, b, padding=1)
    r = np.maximum(a, 0)
    p, indices = fastconv.max_pool2d(r, 2, return_indices=True)
    scores = p.reshape(3, -1) @ wl.T + bl
    assert_close(model.forward(x), scores)

    g = rng.standard_normal(scores.shape)
    grad_x = model.backward(g)
    gp = (g @ wl).reshape(p.shape)
    gr = fastconv.max_pool2d_backward(gp, indices, r.shape)
    gx, gw, gb = fastconv.conv2d_backward(gr * (a > 0), x, w, padding=1)
    assert_close(grad_x, gx)
    expected = {"0.weight": gw, "0.bias": gb, "4.weight": g.T @ p.reshape(3, -1), "4.bias": g.sum(0)}
    assert set(model.grads) == set(model.params) == set(expected)
    for key, value in expected.items():
        assert_close(model.grads[key], value)
        assert model.params[key] is model.layers[int(key[0])].params[key[2:]]  # the layers' own arrays


def test_reference_backend_gives_the_same_numbers(rng):
    def net():
        return Sequential(Conv2D(1, 3, 3, padding=1, dtype=F64, rng=5), ReLU(), MaxPool2D(2),
                          Conv2D(3, 4, 3, stride=2, padding=1, dtype=F64, rng=6), AvgPool2D(2), Flatten(),
                          Linear(4, 2, dtype=F64, rng=7))

    fast, slow = net(), net().set_backend(reference)
    assert fast[0].backend is fastconv and all(layer.backend is reference for layer in slow)
    x = rng.standard_normal((2, 1, 8, 8))
    assert_close(fast.forward(x), slow.forward(x))
    g = rng.standard_normal((2, 2))
    assert_close(fast.backward(g), slow.backward(g))
    for key in fast.grads:
        assert_close(fast.grads[key], slow.grads[key])


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes_follow_the_layers(rng, dtype):
    model = Sequential(Conv2D(1, 2, 3, dtype=dtype, rng=0), ReLU(), Sigmoid(), MaxPool2D(2), Dropout(0.5, rng=0),
                       AvgPool2D(1), Flatten(), Linear(8, 3, dtype=dtype, rng=0))
    x = rng.standard_normal((2, 1, 6, 6)).astype(dtype)
    y = model.forward(x)
    assert y.dtype == dtype
    assert model.backward(np.ones_like(y)).dtype == dtype
    assert all(g.dtype == dtype for g in model.grads.values())
    other = np.float64 if dtype == np.float32 else np.float32
    with pytest.raises(TypeError, match="x has dtype"):
        model.forward(x.astype(other))
    with pytest.raises(TypeError, match="dtype"):
        model.forward(x.astype(np.int32))


def test_initialisation():
    conv = Conv2D(16, 64, 3, rng=0)
    assert conv.params["weight"].shape == (64, 16, 3, 3) and conv.params["weight"].dtype == np.float32
    assert abs(conv.params["weight"].std() - np.sqrt(2 / (16 * 9))) < 0.01     # He
    assert not conv.params["bias"].any()
    glorot = Linear(300, 100, init="glorot", rng=0).params["weight"]
    limit = np.sqrt(6 / 400)
    assert glorot.max() <= limit and glorot.min() >= -limit and glorot.std() > 0.9 * limit / np.sqrt(3)
    assert np.array_equal(Conv2D(2, 3, 3, rng=7).params["weight"], Conv2D(2, 3, 3, rng=7).params["weight"])
    generator = np.random.default_rng(7)
    assert not np.array_equal(Conv2D(2, 3, 3, rng=generator).params["weight"],
                              Conv2D(2, 3, 3, rng=generator).params["weight"])
    assert Conv2D(4, 6, 3, groups=2, bias=False).params["weight"].shape == (6, 2, 3, 3)
    assert set(Linear(2, 3, bias=False).params) == {"weight"} == set(Linear(2, 3, bias=False).grads)


@pytest.mark.parametrize("make, error, match", [
    (lambda: Conv2D(0, 2, 3), ValueError, "in_channels"),
    (lambda: Conv2D(3, 2, 3, groups=2), ValueError, "groups"),
    (lambda: Conv2D(2, 2, (3, 3, 3)), ValueError, "kernel_size"),
    (lambda: Conv2D(2, 2, 3, padding="full"), ValueError, "padding"),
    (lambda: Conv2D(2, 2, 3, stride=2, padding="same"), ValueError, "same"),
    (lambda: Conv2D(2, 2, 3, dtype=np.int32), TypeError, "dtype"),
    (lambda: Conv2D(2, 2, 3, init="xavier"), ValueError, "init"),
    (lambda: Linear(2.5, 3), TypeError, "in_features"),
    (lambda: MaxPool2D(0), ValueError, "kernel_size"),
    (lambda: AvgPool2D(2, padding=-1), ValueError, "padding"),
    (lambda: Sequential(Linear(2, 2), "relu"), TypeError, "Layer"),
])
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_bad_inputs_and_misuse(rng):
    with pytest.raises(ValueError, match="expects x of shape"):
        Linear(3, 2).forward(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="4-D"):
        Conv2D(1, 2, 3).forward(np.zeros((1, 5, 5), np.float32))
    layer = ReLU()
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(np.ones(3))
    layer.forward(np.ones(3), training=False)
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(np.ones(3))
    with pytest.raises(ValueError, match="grad_output"):
        lin = Linear(3, 2)
        lin.forward(np.zeros((4, 3), np.float32))
        lin.backward(np.zeros((4, 3), np.float32))


def test_empty_batch():
    model = Sequential(Conv2D(1, 2, 3, padding=1, rng=0), ReLU(), MaxPool2D(2), Flatten(), Linear(8, 3, rng=0))
    y = model.forward(np.zeros((0, 1, 4, 4), np.float32))
    assert y.shape == (0, 3)
    assert model.backward(y).shape == (0, 1, 4, 4)


def test_output_shape_and_summary(capsys):
    model = Sequential(Conv2D(3, 8, 3, padding=1), ReLU(), MaxPool2D(2), Conv2D(8, 16, 3), ReLU(),
                       AvgPool2D(3, stride=2, ceil_mode=True), Flatten(), Dropout(0.5), Linear(16 * 3 * 3, 10))
    x = np.zeros((2, 3, 16, 16), np.float32)
    assert model.output_shape(x.shape) == model.forward(x).shape == (2, 10)
    for layer in model:
        assert layer.output_shape(x.shape) == layer.forward(x).shape
        x = layer.forward(x)
    rows = model.summary_rows((3, 16, 16))
    assert [r[1] for r in rows] == [(3, 16, 16), (8, 16, 16), (8, 16, 16), (8, 8, 8), (16, 6, 6), (16, 6, 6),
                                    (16, 3, 3), (144,), (144,), (10,)]
    assert [r[2] for r in rows] == [0, 3 * 8 * 9 + 8, 0, 0, 8 * 16 * 9 + 16, 0, 0, 0, 0, 144 * 10 + 10]
    assert [r[3] for r in rows] == [int(np.prod(r[1])) for r in rows]
    model.summary((3, 16, 16))
    text = capsys.readouterr().out
    total_params = 224 + 1168 + 1450
    total_act = sum(r[3] for r in rows)
    assert f"{total_params:,}" in text and f"{total_act:,}" in text and "MaxPool2D(kernel_size=(2, 2))" in text
    assert f"({total_act * 4 / 1024:.1f} KiB" in text            # float32 activation memory
    with pytest.raises(ValueError, match="input channels"):
        model.summary_rows((4, 16, 16))


def test_save_and_load(tmp_path, rng):
    def net(seed):
        return Sequential(Conv2D(1, 2, 3, rng=seed), ReLU(), Flatten(), Linear(8, 3, rng=seed + 1))

    a, b = net(0), net(10)
    a[0].params["bias"][:] = [1, 2]
    path = tmp_path / "weights.npz"
    a.save(path)
    arrays = {k: id(v) for k, v in b.params.items()}
    b.load(path)
    assert {k: id(v) for k, v in b.params.items()} == arrays          # loaded in place
    x = rng.standard_normal((2, 1, 4, 4)).astype(np.float32)
    assert np.array_equal(a.forward(x), b.forward(x))
    with np.load(path) as data:
        assert sorted(data.files) == ["0.bias", "0.weight", "3.bias", "3.weight"]
    with pytest.raises(ValueError, match="missing"):
        Sequential(Linear(8, 3)).load(path)
    np.savez(tmp_path / "bad.npz", **{k: np.zeros(3) for k in a.params})
    with pytest.raises(ValueError, match="shape"):
        b.load(tmp_path / "bad.npz")


# ---------------------------------------------------------------------------
# Losses

@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy(rng, dtype):
    logits = rng.standard_normal((5, 4)).astype(dtype)
    labels = np.array([0, 3, 1, 1, 2])
    loss, grad = softmax_cross_entropy(logits, labels)
    p = np.exp(logits.astype(F64)) / np.exp(logits.astype(F64)).sum(1, keepdims=True)
    assert grad.dtype == dtype and isinstance(loss, float)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(5), labels])), rel=1e-5)
    assert_close(grad, ((p - np.eye(4)[labels]) / 5).astype(dtype))
    big, _ = softmax_cross_entropy(np.array([[1000.0, 0.0]]), [1])  # no overflow
    assert big == pytest.approx(1000.0)


def test_softmax_cross_entropy_gradient(rng):
    logits = rng.standard_normal((4, 3))
    labels = np.array([2, 0, 1, 2])
    _, grad = softmax_cross_entropy(logits, labels)
    np.testing.assert_allclose(grad, numerical_gradient(lambda: softmax_cross_entropy(logits, labels)[0], logits),
                               rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("from_logits", [False, True])
def test_binary_log_loss_gradient(rng, from_logits):
    t = (rng.random((3, 4)) > 0.5).astype(F64)
    y = rng.standard_normal((3, 4)) if from_logits else rng.uniform(0.05, 0.95, (3, 4))
    loss, grad = binary_log_loss(y, t, from_logits=from_logits)
    p = 1 / (1 + np.exp(-y)) if from_logits else y
    assert loss == pytest.approx(-np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)))
    np.testing.assert_allclose(
        grad, numerical_gradient(lambda: binary_log_loss(y, t, from_logits=from_logits)[0], y), rtol=1e-6, atol=1e-9)


def test_binary_log_loss_through_sigmoid_equals_from_logits(rng):
    z = rng.standard_normal((6, 1)).astype(np.float32)
    t = np.array([[0], [1], [1], [0], [1], [0]])
    sigmoid = Sigmoid()
    loss, grad_p = binary_log_loss(sigmoid.forward(z), t)
    loss_z, grad_z = binary_log_loss(z, t, from_logits=True)
    assert grad_p.dtype == grad_z.dtype == np.float32
    assert loss == pytest.approx(loss_z, rel=1e-5)
    assert_close(sigmoid.backward(grad_p), grad_z)
    assert np.isfinite(binary_log_loss(np.array([0.0, 1.0]), [1, 0])[0])   # clipped, not inf
    assert np.isfinite(binary_log_loss(np.array([-800.0, 800.0]), [1, 0], from_logits=True)[0])


def test_loss_bad_inputs():
    with pytest.raises(ValueError, match="labels"):
        softmax_cross_entropy(np.zeros((2, 3)), [0, 3])
    with pytest.raises(ValueError, match="labels"):
        softmax_cross_entropy(np.zeros((2, 3)), [0.0, 1.0])
    with pytest.raises(ValueError, match="labels"):
        softmax_cross_entropy(np.zeros((2, 3)), [0])
    with pytest.raises(TypeError, match="logits"):
        softmax_cross_entropy(np.zeros((2, 3), np.int64), [0, 1])
    with pytest.raises(ValueError, match="targets"):
        binary_log_loss(np.zeros(3), [0, 1])
    with pytest.raises(ValueError, match="from_logits"):
        binary_log_loss(np.array([0.5, 2.0]), [0, 1])
    assert softmax_cross_entropy(np.zeros((0, 3)), np.zeros(0, int))[0] == 0.0


# ---------------------------------------------------------------------------
# Optimisers

class Params:
    """The smallest object an optimiser accepts."""

    def __init__(self, dtype=F64):
        self.params = {"a": np.array([1.0, -2.0], dtype), "b": np.array([[0.5]], dtype)}
        self.grads = {"a": np.array([0.5, 1.0], dtype), "b": np.array([[-2.0]], dtype)}


def test_sgd_with_momentum_by_hand():
    m = Params()
    opt = SGD(m, lr=0.1, momentum=0.9)
    opt.step()                                       # v = g
    assert_close(m.params["a"], [1 - 0.05, -2 - 0.1])
    m.grads["a"] = np.array([1.0, 0.0])
    opt.step()                                       # v = 0.9 * v + g
    assert_close(m.params["a"], [0.95 - 0.1 * (0.45 + 1.0), -2.1 - 0.1 * 0.9])
    assert_close(m.params["b"], [[0.5 + 0.2 + 0.1 * 3.8]])
    plain = Params()
    SGD(plain, lr=0.5, weight_decay=0.1).step()     # g + wd * p
    assert_close(plain.params["a"], [1 - 0.5 * (0.5 + 0.1), -2 - 0.5 * (1.0 - 0.2)])


def test_adam_by_hand():
    m = Params()
    opt = Adam(m, lr=0.01, betas=(0.8, 0.9), eps=1e-8)
    g1 = m.grads["a"].copy()
    opt.step()                                       # first step: m_hat = g, s_hat = g^2 -> lr * sign(g)
    assert_close(m.params["a"], [1 - 0.01 * 0.5 / (0.5 + 1e-8), -2 - 0.01 * 1.0 / (1.0 + 1e-8)])
    g2 = np.array([-1.0, 3.0])
    m.grads["a"] = g2
    before = m.params["a"].copy()
    opt.step()
    mom = 0.8 * 0.2 * g1 + 0.2 * g2
    sq = 0.9 * 0.1 * g1 ** 2 + 0.1 * g2 ** 2
    assert_close(m.params["a"], before - 0.01 * (mom / (1 - 0.8 ** 2)) / (np.sqrt(sq / (1 - 0.9 ** 2)) + 1e-8))


@pytest.mark.parametrize("opt", [SGD, Adam])
def test_optimisers_update_in_place_in_the_parameter_dtype(opt):
    m = Params(np.float32)
    a = m.params["a"]
    opt(m, lr=0.1).step()
    assert m.params["a"] is a and a.dtype == np.float32 and not np.array_equal(a, [1.0, -2.0])


def test_optimiser_bad_arguments():
    with pytest.raises(TypeError, match="params and grads"):
        SGD(object())
    with pytest.raises(ValueError, match="lr"):
        SGD(Params(), lr=0)
    with pytest.raises(ValueError, match="momentum"):
        SGD(Params(), momentum=1.5)
    with pytest.raises(ValueError, match="betas"):
        Adam(Params(), betas=(0.9,))
    m = Params()
    del m.grads["b"]
    with pytest.raises(KeyError, match="'b'"):
        SGD(m).step()


def test_optimiser_trains_a_layer(rng):
    x = rng.standard_normal((64, 3))
    y = x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3
    for make in (lambda m: SGD(m, lr=0.1, momentum=0.9), lambda m: Adam(m, lr=0.05)):
        layer = Linear(3, 1, dtype=F64, rng=0)
        opt = make(layer)
        for _ in range(200):
            err = layer.forward(x) - y
            layer.backward(2 * err / len(x))
            opt.step()
        assert np.mean(err ** 2) < 1e-3


# ---------------------------------------------------------------------------

@requires_torch
class TestAgainstTorch:
    torch = TORCH

    def test_layers_match_torch_modules(self, rng):
        torch, nn = self.torch, self.torch.nn
        ours = Sequential(Conv2D(2, 4, 3, stride=2, padding=1, dtype=F64, rng=0), ReLU(),
                          MaxPool2D(2, stride=1), AvgPool2D(2), Sigmoid(), Flatten(), Linear(4, 3, dtype=F64, rng=1))
        theirs = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2, stride=1),
                               nn.AvgPool2d(2), nn.Sigmoid(), nn.Flatten(), nn.Linear(4, 3)).double()
        with torch.no_grad():
            for (i, name), p in zip([(0, "weight"), (0, "bias"), (6, "weight"), (6, "bias")], theirs.parameters()):
                ours[i].params[name][...] = rng.standard_normal(p.shape)
                p.copy_(torch.from_numpy(ours[i].params[name]))
        x = rng.standard_normal((3, 2, 7, 7))
        labels = np.array([0, 2, 1])
        loss, grad = softmax_cross_entropy(ours.forward(x), labels)
        tx = torch.from_numpy(x).requires_grad_(True)
        tloss = nn.functional.cross_entropy(theirs(tx), torch.from_numpy(labels))
        tloss.backward()
        assert loss == pytest.approx(tloss.item(), rel=1e-12)
        assert_close(ours.backward(grad), tx.grad.numpy())
        for (i, name), p in zip([(0, "weight"), (0, "bias"), (6, "weight"), (6, "bias")], theirs.parameters()):
            assert_close(ours[i].grads[name], p.grad.numpy())

    def test_binary_losses_match_torch(self, rng):
        F = self.torch.nn.functional
        z = rng.standard_normal((4, 3))
        t = (rng.random((4, 3)) > 0.5).astype(F64)
        tz, tt = self.torch.from_numpy(z), self.torch.from_numpy(t)
        assert binary_log_loss(z, t, from_logits=True)[0] == pytest.approx(
            F.binary_cross_entropy_with_logits(tz, tt).item(), rel=1e-12)
        p = 1 / (1 + np.exp(-z))
        assert binary_log_loss(p, t)[0] == pytest.approx(F.binary_cross_entropy(tz.sigmoid(), tt).item(), rel=1e-9)

    @pytest.mark.parametrize("name", ["sgd", "adam"])
    def test_optimisers_match_torch(self, name):
        torch = self.torch
        ours = Params()
        tp = [torch.tensor(ours.params[k], requires_grad=True) for k in ("a", "b")]
        if name == "sgd":
            opt, topt = SGD(ours, lr=0.1, momentum=0.9, weight_decay=0.01), torch.optim.SGD(
                tp, lr=0.1, momentum=0.9, weight_decay=0.01)
        else:
            opt, topt = Adam(ours, lr=0.1, betas=(0.8, 0.95), weight_decay=0.01), torch.optim.Adam(
                tp, lr=0.1, betas=(0.8, 0.95), weight_decay=0.01)
        for step in range(4):
            grads = {"a": np.array([0.5, -1.0]) * (step + 1), "b": np.array([[np.cos(step)]])}
            ours.grads = grads
            for p, k in zip(tp, ("a", "b")):
                p.grad = torch.tensor(grads[k])
            opt.step()
            topt.step()
        for p, k in zip(tp, ("a", "b")):
            assert_close(ours.params[k], p.detach().numpy())


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(eps=0.7), ValueError, "eps must be"), (dict(eps=-1.0), ValueError, "eps must be"),
    (dict(eps="a"), ValueError, "eps must be"), (dict(eps=True), ValueError, "eps must be"),
])
def test_binary_log_loss_checks_eps(kwargs, error, match):
    with pytest.raises(error, match=match):
        binary_log_loss(np.array([0.9, 0.1], np.float32), np.array([1, 0]), **kwargs)


def test_binary_log_loss_checks_the_targets_dtype():
    with pytest.raises(TypeError, match="targets must be an array of real numbers"):
        binary_log_loss(np.array([0.9, 0.1], np.float32), np.array(["a", "b"], object))


@pytest.mark.parametrize("make", [lambda m: fastconv.SGD(m, lr=0.1, momentum=0.9), lambda m: fastconv.Adam(m)])
def test_optimisers_name_a_parameter_whose_shape_changed(make):
    model = fastconv.Sequential(fastconv.Linear(2, 2))
    opt = make(model)
    model.forward(np.ones((1, 2), np.float32))
    model.backward(np.ones((1, 2), np.float32))
    opt.step()
    layer = model.layers[0]
    layer.params["weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match=r"the gradient of '0.weight' has shape \(2, 2\), its parameter \(3, 3\)"):
        opt.step()
    layer.grads["weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(3, 3\) now, unlike its state"):
        opt.step()
