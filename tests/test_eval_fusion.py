"""The eval forward's fused paths: ReLU fused into the direct and Winograd stores, the
channel splits of small maps, and the layers' cache of prepared (packed or transformed)
weights and its invalidation."""
import numpy as np
import pytest
from conftest import DTYPES, assert_close

import fastconv
from fastconv import _direct, _validation, _winograd, convolution, reference
from fastconv._kernels import runnable_builds
from fastconv.convolution import _conv2d_eval
from fastconv.nn import BatchNorm2D, Conv2D, ReLU, Sequential
from fastconv.nn.optim import SGD

# (N, C, H, W, K, kernel, stride, padding, groups)
CASES = [
    (2, 3, 7, 9, 5, 3, 1, 1, 1),         # odd sizes
    (1, 17, 12, 13, 37, 3, 1, 1, 1),     # channels past a channel tile and a pixel tile
    (1, 40, 7, 7, 64, 3, 1, 1, 1),       # a small map at batch 1: channel splits
    (1, 24, 14, 14, 70, 3, 2, 1, 1),     # strided, a small output map
    (2, 6, 13, 11, 4, 3, 1, "same", 2),  # groups
    (1, 8, 5, 5, 8, 3, 1, 1, 8),         # depthwise
    (1, 5, 9, 8, 6, 1, 1, 0, 1),         # pointwise
    (0, 3, 5, 5, 2, 3, 1, 1, 1),         # empty batch
]


def make(rng, case, dtype):
    N, C, H, W, K, k, s, p, g = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C // g, k, k)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    return x, w, b, dict(stride=s, padding=p, groups=g)


def relu_reference(x, w, b, kw):
    return np.maximum(reference.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), **kw), 0)


@pytest.fixture(params=runnable_builds("conv_direct"), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def direct_build(request, monkeypatch):
    monkeypatch.setattr(_direct, "kernel", request.param)
    return request.param


@pytest.fixture(params=runnable_builds("conv_winograd"), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def winograd_build(request, monkeypatch):
    monkeypatch.setattr(_winograd, "kernel", request.param)
    return request.param


def geometry(x, w, kw):
    return _validation.conv2d_args(x, w, None, kw["stride"], kw["padding"], 1, kw["groups"])[3]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_direct_relu_fused_equals_unfused(direct_build, rng, case, dtype):
    x, w, b, kw = make(rng, case, dtype)
    g, groups = geometry(x, w, kw), kw["groups"]
    for packed in (None, _direct.prepare(w, g, groups)):
        plain = _direct.forward(x, w, b, g, groups, 2, packed=packed)
        fused = _direct.forward(x, w, b, g, groups, 2, relu=True, packed=packed)
        assert fused.dtype == dtype and fused.flags.c_contiguous
        assert np.array_equal(fused, np.maximum(plain, 0))     # the same sums, then max(., 0)
        assert_close(fused, relu_reference(x, w, b, kw).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [c for c in CASES if c[5] == 3 and c[6] == 1])
def test_winograd_relu_fused_equals_unfused(winograd_build, rng, case, dtype):
    x, w, b, kw = make(rng, case, dtype)
    g, groups = geometry(x, w, kw), kw["groups"]
    prepared = _winograd.prepare(w, groups)
    plain = _winograd.forward(x, w, b, g, groups, 2)
    fused = _winograd.forward(x, w, b, g, groups, 2, relu=True, prepared=prepared)
    assert np.array_equal(fused, np.maximum(plain, 0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_keeps_nan(rng, dtype):
    # torch's relu (and np.maximum) keep NaN; a fused max(., 0) must too
    x, w, b, kw = make(rng, (1, 4, 6, 6, 40, 3, 1, 1, 1), dtype)
    x[0, 1, 2, 3] = np.nan
    want = np.maximum(fastconv.conv2d(x, w, b, padding=1, algorithm="direct"), 0)
    g = geometry(x, w, kw)
    got = _direct.forward(x, w, b, g, 1, 2, relu=True)
    assert np.array_equal(np.isnan(got), np.isnan(want)) and np.isnan(got).any()
    got = _winograd.forward(x, w, b, g, 1, 2, relu=True)     # NaN spreads over its tiles
    assert np.isnan(got[np.isnan(want)]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_channel_splits_give_the_same_bits(direct_build, winograd_build, rng, dtype):
    # how a band's (or chunk's) channels are shared out over tasks must not change a bit
    x, w, b, kw = make(rng, (1, 24, 7, 7, 72, 3, 1, 1, 1), dtype)
    g = geometry(x, w, kw)
    packed = _direct.prepare(w, g, 1)
    block = direct_build.channel_block(dtype == np.float64)
    full = 0 if packed is None else 72 // block
    blocks = full + -(-(72 - full * block) // direct_build.tile_rows())
    plan = _direct._plan(24, g, np.dtype(dtype), 7)
    outs = []
    for splits in range(1, blocks + 1):
        out = np.empty((1, 72, 7, 7), dtype)
        workspace = np.empty((2, plan.size), dtype)
        direct_build.conv2d_forward(x, w.reshape(72, -1), b, out, g.struct(), 1, plan, workspace, 2, packed,
                                    splits, False)
        outs.append(out)
    assert all(np.array_equal(outs[0], o) for o in outs)
    with pytest.raises(ValueError, match="splits"):
        direct_build.conv2d_forward(x, w.reshape(72, -1), b, out, g.struct(), 1, plan, workspace, 2, packed,
                                    blocks + 1, False)
    U, Kp = _winograd.transform_weights(w, 1)
    workspace = np.empty((2, _winograd.workspace_values(24, Kp, dtype)), dtype)
    outs = []
    for splits in range(1, Kp // winograd_build.register_rows(dtype == np.float64) + 1):
        out = np.empty((1, 72, 7, 7), dtype)
        winograd_build.conv2d_forward(x, U, Kp, b, out, 1, 1, 1, workspace, 2, splits, False)
        outs.append(out)
    assert all(np.array_equal(outs[0], o) for o in outs)


def test_small_maps_split_channels_over_tasks():
    g = _validation.conv_geometry((7, 7), (3, 3), 1, 1, 1)
    rows, splits = _direct._tasks(1, 512, 512, g, 4, 2, 16)
    assert rows == 7 and splits > 1                       # one band of the whole map, channels shared out
    g = _validation.conv_geometry((56, 56), (3, 3), 1, 1, 1)
    assert _direct._tasks(8, 64, 64, g, 4, 2, 2)[1] == 1  # enough bands: no split
    assert _direct._tasks(1, 512, 512, _validation.conv_geometry((7, 7), (3, 3), 1, 1, 1), 4, 1, 16)[1] == 1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("relu", [False, True])
def test_eval_path_matches_conv2d(rng, case, dtype, relu):
    x, w, b, kw = make(rng, case, dtype)
    cache = {}
    want = fastconv.conv2d(x, w, b, **kw)
    if relu:
        want = np.maximum(want, 0)
    for _ in range(2):                                    # computed, then from the cache
        got = _conv2d_eval(x, w, b, kw["stride"], kw["padding"], 1, kw["groups"], relu, cache)
        assert got.dtype == dtype and got.shape == want.shape
        assert_close(got, want)


def conv_bn_relu(dtype, rng_seed=0, bn=True):
    layers = [Conv2D(6, 16, 3, padding=1, dtype=dtype, rng=rng_seed)]
    if bn:
        layers.append(BatchNorm2D(16, dtype=dtype))
    layers += [ReLU(), Conv2D(16, 8, 3, padding=1, dtype=dtype, rng=rng_seed + 1), ReLU()]
    return Sequential(*layers)


def unfused(model, x):
    return Sequential(*model.layers).set_backend(reference).forward(x, training=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bn", [True, False])
def test_sequential_fuses_relu(rng, dtype, bn, algorithm):
    model = conv_bn_relu(dtype, bn=bn)
    if bn:
        model[1].buffers["running_mean"][:] = rng.standard_normal(16)
        model[1].buffers["running_var"][:] = rng.uniform(0.5, 2, 16)
    for N in (0, 1, 3):
        x = rng.standard_normal((N, 6, 9, 11)).astype(dtype)
        y = model.forward(x, training=False)
        assert y.dtype == dtype and y.shape == (N, 8, 9, 11)
        assert_close(y, unfused(model, x))
        assert all(layer._cache is None for layer in model)


def picks(name):
    """A stand-in for `convolution._choose_algorithm` that picks `name` wherever it runs
    (winograd has no weight gradient: grad_weight's then is direct)."""
    def choose(x_shape, weight_shape, geometry, groups, dtype, pass_="forward"):
        return "direct" if (name, pass_) == ("winograd", "grad_weight") else name
    return choose


@pytest.fixture(params=["direct", "winograd", "im2col"])
def algorithm(request, monkeypatch):
    """What "auto" picks in the layers' eval forwards."""
    monkeypatch.setattr(convolution, "_choose_algorithm", picks(request.param))
    return request.param


@pytest.mark.parametrize("dtype", DTYPES)
def test_prepared_weights_are_kept_and_invalidated(rng, dtype, algorithm):
    model = conv_bn_relu(dtype, bn=False)
    conv = model[0]
    x = rng.standard_normal((1, 6, 9, 11)).astype(dtype)
    y = model.forward(x, training=False)
    if algorithm != "im2col":                                       # im2col prepares nothing
        entry = next(iter(conv._prepared.values()))
        model.forward(x, training=False)
        assert next(iter(conv._prepared.values())) is entry        # kept between eval forwards

    conv.params["weight"] *= 2                                      # in place: the sample sees it
    y2 = model.forward(x, training=False)
    assert not np.allclose(y2, y)
    assert_close(y2, unfused(model, x))

    state = conv_bn_relu(dtype, rng_seed=7, bn=False).state_dict()
    model.load_state_dict(state)                                    # copied into the same arrays
    assert_close(model.forward(x, training=False), unfused(model, x))

    model.forward(x, training=True)                                 # a training step, then eval
    model.backward(rng.standard_normal((1, 8, 9, 11)).astype(dtype))
    before = model.forward(x, training=False)
    SGD(model, lr=0.1).step()
    after = model.forward(x, training=False)
    assert not np.allclose(after, before)
    assert_close(after, unfused(model, x))


@pytest.mark.parametrize("dtype", DTYPES)
def test_optimiser_step_invalidates_folded_and_prepared(rng, dtype, monkeypatch):
    monkeypatch.setattr(convolution, "_choose_algorithm", picks("winograd"))
    model = conv_bn_relu(dtype)
    x = rng.standard_normal((2, 6, 9, 11)).astype(dtype)
    model.forward(x, training=True)
    model.backward(np.ones((2, 8, 9, 11), dtype))
    model.forward(x, training=False)
    assert model._folded and model[0]._prepared
    SGD(model, lr=0.05, momentum=0.9).step()
    assert not model._folded and not model[0]._prepared
    assert_close(model.forward(x, training=False), unfused(model, x))


def test_conv2d_layer_eval_uses_the_cache(rng, monkeypatch):
    monkeypatch.setattr(convolution, "_choose_algorithm", lambda *args, **kwargs: "direct")
    conv = Conv2D(5, 7, 3, padding=1, rng=0)
    x = rng.standard_normal((1, 5, 8, 8)).astype(np.float32)
    y = conv.forward(x, training=False)
    assert conv._prepared
    assert_close(y, fastconv.conv2d(x, conv.params["weight"], conv.params["bias"], padding=1))
    conv.forward(x, training=True)
    assert not conv._prepared
