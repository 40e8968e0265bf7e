"""ReLU by the compiled elementwise kernels: the layer, its backward, the residual
block's fused ReLU of a sum, and every build of the batch-norm kernels against the
portable one."""
import numpy as np
import pytest
from conftest import DTYPES, TORCH, assert_close, requires_torch

from fastconv import reference
from fastconv._kernels import elementwise, runnable_builds
from fastconv.nn import BatchNorm2D, Conv2D, Identity, LeakyReLU, ReLU, Residual, Sequential, Tanh
from fastconv.nn.activation import add_relu, relu, relu_backward

SHAPES = [(0, 3, 4, 4), (1, 1, 1, 1), (1, 3, 5, 7), (2, 5, 13, 11), (3, 16411), (7,), ()]


def with_specials(x):
    flat = x.reshape(-1)
    flat[: min(flat.size, 4)] = np.array([np.nan, 0.0, -0.0, np.inf])[: min(flat.size, 4)]
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_relu_kernels_against_numpy(rng, dtype, shape):
    x = with_specials(rng.standard_normal(shape).astype(dtype))
    b = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    y = relu(x)
    assert y.dtype == dtype and y.shape == x.shape and y.flags.c_contiguous
    np.testing.assert_array_equal(y, np.maximum(x, 0))          # NaN kept, as torch.relu
    np.testing.assert_array_equal(relu_backward(g, y), np.where(y > 0, g, 0).astype(dtype))
    np.testing.assert_array_equal(add_relu(x, b), np.maximum(x + b, 0))


def test_relu_kernels_take_views_and_in_place_output():
    x = np.arange(-8.0, 8.0).reshape(4, 4)[:, ::2]              # not contiguous
    np.testing.assert_array_equal(relu(x), np.maximum(x, 0))
    a = np.linspace(-1, 1, 40)
    elementwise.relu(a, a, 2)
    np.testing.assert_array_equal(a, np.maximum(np.linspace(-1, 1, 40), 0))
    with pytest.raises(ValueError, match="same length"):
        elementwise.relu(np.ones(3), np.empty(4), 1)
    with pytest.raises(ValueError, match="same length"):
        elementwise.add_relu(np.ones(3), np.ones(2), np.empty(3), 1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_layer_forward_backward_and_mixed_grad_dtype(rng, dtype):
    x = with_specials(rng.standard_normal((2, 3, 5, 5)).astype(dtype))
    layer = ReLU()
    y = layer.forward(x)
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    g = rng.standard_normal(x.shape)                             # float64 whatever x is
    np.testing.assert_array_equal(layer.backward(g), np.where(x > 0, g, 0))
    assert not np.may_share_memory(layer.backward(g), g)


@requires_torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_residual_relu_matches_torch(rng, dtype):
    torch = TORCH
    x = rng.standard_normal((2, 4, 6, 5)).astype(dtype)
    block = Residual(Sequential(Conv2D(4, 4, 3, padding=1, dtype=dtype, rng=0), BatchNorm2D(4, dtype=dtype)),
                     activation=ReLU())
    y = block.forward(x)
    g = rng.standard_normal(y.shape).astype(dtype)
    gx = block.backward(g)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    tw = torch.from_numpy(block.params["0.weight"].copy()).requires_grad_(True)
    tb = torch.from_numpy(block.params["0.bias"].copy()).requires_grad_(True)
    h = torch.nn.functional.conv2d(tx, tw, tb, padding=1)
    h = torch.nn.functional.batch_norm(h, None, None, training=True)
    ty = torch.relu(h + tx)
    ty.backward(torch.from_numpy(g))
    assert_close(y, ty.detach().numpy())
    assert_close(gx, tx.grad.numpy())
    assert_close(block.grads["0.weight"], tw.grad.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shortcut", [None, "tanh"])
def test_residual_fused_sum_equals_the_unfused_one(rng, dtype, shortcut):
    """The fused ReLU(main + shortcut) gives what adding, then a ReLU layer, gives."""
    x = rng.standard_normal((1, 3, 4, 5)).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    results = []
    for fused in (True, False):
        relu_layer = ReLU()
        if not fused:
            relu_layer._forward_sum = None       # the separate add and ReLU
        block = Residual(LeakyReLU(0.3), None if shortcut is None else Tanh(), activation=relu_layer)
        y = block.forward(x)
        results.append((y, block.backward(g)))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    want = np.maximum(np.where(x > 0, x, 0.3 * x) + (x if shortcut is None else np.tanh(x)), 0)
    assert_close(results[0][0], want.astype(dtype))


def test_residual_broadcast_sum_and_batch_zero(rng):
    x = rng.standard_normal((0, 2, 3, 3))
    block = Residual(Identity(), activation=ReLU())
    assert block.forward(x).shape == x.shape
    assert block.backward(np.ones(x.shape)).shape == x.shape
    x1 = rng.standard_normal((1, 2, 3, 3))
    y = Residual(Identity(), Identity(), activation=ReLU()).forward(x1)
    np.testing.assert_array_equal(y, np.maximum(2 * x1, 0))
    assert not np.may_share_memory(y, x1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (1, 2, 1, 2), (2, 3, 91, 97), (5, 7, 3, 3)])
def test_every_batch_norm_build_matches_the_reference(rng, dtype, shape):
    """The AVX and AVX-512 builds (where the CPU runs them) compute what the portable one does."""
    x = (rng.standard_normal(shape) * 3 + 100).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    C = shape[1]
    w, b = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
    x3, g3 = (a.reshape(shape[0], C, shape[2] * shape[3]) for a in (x, g))
    M = shape[0] * shape[2] * shape[3]
    ref_out = reference.batch_norm2d(x, None, None, w, b, training=True) if M > 1 else None
    ref_grads = reference.batch_norm2d_backward(g, x, w) if M > 1 else None
    for kernel in runnable_builds("batch_norm"):
        mean, var, sg, dot = (np.zeros(C) for _ in range(4))
        kernel.channel_stats(x3, mean, var, 2)
        mean2, var2 = np.zeros(C), np.zeros(C)
        kernel.backward_stats(g3, x3, mean2, var2, sg, dot, 2)
        if M == 0:
            continue
        xd = x.astype(np.float64)
        np.testing.assert_allclose(mean, xd.mean(axis=(0, 2, 3)), rtol=1e-12)
        np.testing.assert_allclose(var, xd.var(axis=(0, 2, 3)), rtol=1e-9)
        np.testing.assert_array_equal(mean, mean2)
        np.testing.assert_allclose(sg, g.astype(np.float64).sum(axis=(0, 2, 3)), rtol=1e-9, atol=1e-9)
        if M > 1:
            import fastconv.normalization as normalization

            saved = normalization.KERNELS[np.dtype(dtype)]
            normalization.KERNELS[np.dtype(dtype)] = kernel
            try:
                assert_close(normalization.batch_norm2d(x, None, None, w, b, training=True), ref_out)
                for got, want in zip(normalization.batch_norm2d_backward(g, x, w), ref_grads):
                    assert_close(got, want)
            finally:
                normalization.KERNELS[np.dtype(dtype)] = saved


def test_residual_calls_the_forward_of_a_relu_subclass(rng):
    class Doubled(ReLU):
        def forward(self, x, training=True):
            return 2 * super().forward(x, training)

    x = rng.standard_normal((1, 2, 3, 3))
    y = Residual(Identity(), activation=Doubled()).forward(x)
    np.testing.assert_array_equal(y, 2 * np.maximum(2 * x, 0))
