"""fastconv.nn: torch's names and state dicts, the new layers against torch and
numerical gradients, save/load with buffers, eval-mode folding and in-place work."""
import tracemalloc
from collections import OrderedDict

import numpy as np
import pytest
from conftest import DTYPES, TORCH, assert_close, numerical_gradient, requires_torch

import fastconv
from fastconv import nn, reference
from fastconv.nn import (
    AdaptiveAvgPool2D,
    AdaptiveMaxPool2D,
    BatchNorm2D,
    Conv2D,
    ConvTranspose2D,
    Flatten,
    Identity,
    LeakyReLU,
    Linear,
    MaxPool2D,
    ReLU,
    Residual,
    Sequential,
    Tanh,
)

F64 = np.float64
TOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


def close(actual, expected, rtol=None):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if actual.dtype.kind in "iu":
        assert actual.dtype == expected.dtype and np.array_equal(actual, expected)
        return
    rtol = TOL[actual.dtype] if rtol is None else rtol
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * max(1.0, np.abs(expected).max()))


def block(c_in, c_out, stride, dtype=F64, rng=0):
    """A torchvision BasicBlock."""
    main = Sequential(OrderedDict(
        conv1=Conv2D(c_in, c_out, 3, stride, 1, bias=False, dtype=dtype, rng=rng), bn1=BatchNorm2D(c_out, dtype=dtype),
        relu=ReLU(), conv2=Conv2D(c_out, c_out, 3, 1, 1, bias=False, dtype=dtype, rng=rng + 1),
        bn2=BatchNorm2D(c_out, dtype=dtype)))
    short = None
    if stride != 1 or c_in != c_out:
        short = Sequential(Conv2D(c_in, c_out, 1, stride, bias=False, dtype=dtype, rng=rng + 2),
                           BatchNorm2D(c_out, dtype=dtype))
    return Residual(main, short, activation=ReLU())


def small_net(dtype=F64):
    return Sequential(OrderedDict(
        conv1=Conv2D(2, 4, 3, padding=1, dtype=dtype, rng=0), bn1=BatchNorm2D(4, dtype=dtype), relu=ReLU(),
        layer1=Sequential(block(4, 4, 1, dtype, 1), block(4, 6, 2, dtype, 5)),
        avgpool=AdaptiveAvgPool2D(1), flatten=Flatten(), fc=Linear(6, 3, dtype=dtype, rng=9)))


def randomise(model, rng):
    for key, a in model.state_dict().items():
        if a.dtype.kind == "f":
            positive = key.endswith("running_var") or (key.endswith("weight") and a.ndim == 1)
            a[...] = rng.uniform(0.5, 1.5, a.shape) if positive else rng.uniform(-0.5, 0.5, a.shape)


# -- names and state dicts ------------------------------------------------------
def test_torch_names_and_order():
    model = small_net()
    assert [n for n, _ in model.named_children()] == ["conv1", "bn1", "relu", "layer1", "avgpool", "flatten", "fc"]
    names = [n for n, _ in model.named_modules()]
    assert names[:5] == ["", "conv1", "bn1", "relu", "layer1"]
    assert "layer1.1.downsample.0" in names and "layer1.1.activation" in names
    keys = list(model.state_dict())
    assert keys[:6] == ["conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias", "bn1.running_mean",
                        "bn1.running_var"]
    assert keys[6] == "bn1.num_batches_tracked"
    assert "layer1.0.conv1.weight" in keys and "layer1.1.downsample.1.running_var" in keys
    assert list(model.params) == [k for k in keys if not k.endswith(("running_mean", "running_var", "tracked"))]
    assert list(model.grads) == list(model.params)
    assert set(model.buffers) == set(keys) - set(model.params)
    assert model.layer1[1].conv1 is model.layer1[1].main.conv1
    assert model.params["fc.weight"] is model.fc.params["weight"]       # the layers' own arrays
    assert [n for n, _ in Sequential(ReLU(), Tanh()).named_children()] == ["0", "1"]
    with pytest.raises(AttributeError):
        model.nothing  # noqa: B018
    with pytest.raises(TypeError, match="Layer"):
        Sequential(OrderedDict(a=ReLU(), b="relu"))
    with pytest.raises(TypeError, match="main"):
        Residual(lambda x: x)


@requires_torch
def test_state_dict_matches_a_torch_model_and_loads_its_tensors(rng):
    tnn = TORCH.nn

    class Block(tnn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.conv1 = tnn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(c_out)
            self.relu = tnn.ReLU()
            self.conv2 = tnn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(c_out)
            self.downsample = None if stride == 1 and c_in == c_out else tnn.Sequential(
                tnn.Conv2d(c_in, c_out, 1, stride, bias=False), tnn.BatchNorm2d(c_out))

        def forward(self, x):
            s = x if self.downsample is None else self.downsample(x)
            return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + s)

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1, self.relu = tnn.Conv2d(2, 4, 3, padding=1), tnn.BatchNorm2d(4), tnn.ReLU()
            self.layer1 = tnn.Sequential(Block(4, 4, 1), Block(4, 6, 2))
            self.avgpool, self.fc = tnn.AdaptiveAvgPool2d(1), tnn.Linear(6, 3)

        def forward(self, x):
            x = self.layer1(self.relu(self.bn1(self.conv1(x))))
            return self.fc(TORCH.flatten(self.avgpool(x), 1))

    twin = Net().double()
    with TORCH.no_grad():
        for t in twin.state_dict().values():
            if t.is_floating_point():
                t.uniform_(0.5, 1.5)
    ours = small_net()
    assert list(ours.state_dict()) == list(twin.state_dict())
    ours.load_state_dict(twin.state_dict())                      # torch tensors as they come
    x = rng.standard_normal((2, 2, 6, 6))
    with TORCH.no_grad():
        close(ours.forward(x, training=False), twin.eval()(TORCH.from_numpy(x)).numpy())
    # one training step: gradients, running statistics and num_batches_tracked as torch
    twin.train()
    tx = TORCH.tensor(x, requires_grad=True)
    twin(tx).sum().backward()
    y = ours.forward(x, training=True)
    grad_x = ours.backward(np.ones_like(y))
    close(grad_x, tx.grad.numpy(), 1e-8)
    for key, p in twin.named_parameters():
        close(ours.grads[key], p.grad.numpy(), 1e-8)
    for key, b in twin.named_buffers():
        close(ours.buffers[key], b.numpy(), 1e-8)
    assert ours.buffers["bn1.num_batches_tracked"].shape == () and int(ours.buffers["bn1.num_batches_tracked"]) == 1


def test_load_state_dict_errors_name_the_key():
    model = small_net()
    good = {k: np.array(v, copy=True) for k, v in model.state_dict().items()}
    before = {k: v.copy() for k, v in model.state_dict().items()}
    missing = dict(good)
    del missing["layer1.1.downsample.1.running_mean"]
    with pytest.raises(ValueError, match=r"missing keys \['layer1.1.downsample.1.running_mean'\]"):
        model.load_state_dict(missing)
    old_checkpoint = {k: v for k, v in good.items() if not k.endswith("num_batches_tracked")}
    model.load_state_dict(old_checkpoint)            # as torch: the counts are kept
    with pytest.raises(ValueError, match=r"unexpected keys \['extra.weight'\]"):
        model.load_state_dict({**good, "extra.weight": np.zeros(3)})
    bad = {**good, "fc.weight": np.zeros((3, 7))}
    with pytest.raises(ValueError, match=r"'fc.weight' has shape \(3, 7\), the model expects \(3, 6\)"):
        model.load_state_dict(bad)
    with pytest.raises(ValueError, match="'fc.weight' has shape"):
        model.load_state_dict({"fc.weight": np.zeros((3, 7))}, strict=False)   # shapes checked anyway
    with pytest.raises(TypeError, match="'bn1.num_batches_tracked'"):
        model.load_state_dict({**good, "bn1.num_batches_tracked": np.array(1.5)})
    with pytest.raises(TypeError, match="'fc.bias'"):
        model.load_state_dict({**good, "fc.bias": np.array(["a", "b", "c"])})
    for key, value in model.state_dict().items():                # nothing was copied on error
        assert np.array_equal(value, before[key])
    # non-strict: the given keys only, lists and float32 values converted to float64
    model.load_state_dict({"fc.bias": [1.0, 2.0, 3.0], "fc.weight": np.ones((3, 6), np.float32),
                           "nothing": 1}, strict=False)
    assert model.fc.params["bias"].tolist() == [1, 2, 3] and model.fc.params["weight"].dtype == F64
    assert np.array_equal(model.conv1.params["weight"], before["conv1.weight"])


def test_save_and_load_keep_buffers(tmp_path, rng):
    a, b = small_net(), small_net()
    randomise(a, rng)
    a.forward(rng.standard_normal((2, 2, 6, 6)), training=True)  # running stats and counts move
    path = tmp_path / "net.npz"
    a.save(path)
    with np.load(path) as data:
        assert list(data.files) == list(a.state_dict())
    ids = {k: id(v) for k, v in b.state_dict().items()}
    b.load(path)
    assert {k: id(v) for k, v in b.state_dict().items()} == ids          # in place
    for key, value in a.state_dict().items():
        assert np.array_equal(b.state_dict()[key], value), key
    assert int(b.buffers["bn1.num_batches_tracked"]) == 1
    x = rng.standard_normal((1, 2, 6, 6))
    assert np.array_equal(a.forward(x, training=False), b.forward(x, training=False))
    np.savez(tmp_path / "pickled.npz", **{**a.state_dict(), "fc.bias": np.array([None, 1, 2], dtype=object)})
    with pytest.raises(ValueError, match="pickle"):
        b.load(tmp_path / "pickled.npz")
    np.savez(tmp_path / "short.npz", **{k: v for k, v in a.state_dict().items() if "running_var" not in k})
    with pytest.raises(ValueError, match="short.npz: .*missing keys"):
        b.load(tmp_path / "short.npz")


# -- the new layers ------------------------------------------------------------------
def check_gradients(layer, x, rng, rtol=1e-6):
    y = layer.forward(x)
    g = rng.standard_normal(y.shape)
    grad_x = layer.backward(g)
    grads = {k: v.copy() for k, v in layer.grads.items()}
    state = {k: v.copy() for k, v in layer.buffers.items()}

    def f():
        out = float(np.sum(layer.forward(x) * g))
        for k, v in layer.buffers.items():       # running statistics must not drift between calls
            v[...] = state[k]
        return out

    with fastconv.threads(1):
        np.testing.assert_allclose(grad_x, numerical_gradient(f, x), rtol=rtol, atol=1e-7)
        for key, p in layer.params.items():
            np.testing.assert_allclose(grads[key], numerical_gradient(f, p), rtol=rtol, atol=1e-7)


@pytest.mark.parametrize("shortcut", [False, True])
def test_residual_gradients_against_numerical(rng, shortcut):
    model = block(3, 4, 2) if shortcut else block(3, 3, 1)
    randomise(model, rng)
    check_gradients(model, rng.standard_normal((2, 3, 5, 5)), rng, rtol=1e-5)
    plain = Residual(Sequential(Conv2D(2, 2, 3, padding=1, dtype=F64, rng=3), Tanh()))   # x + main(x)
    assert [n for n, _ in plain.named_children()] == ["0", "1"]
    check_gradients(plain, rng.standard_normal((1, 2, 4, 4)), rng)
    other = Residual(Tanh(), LeakyReLU(0.2))
    assert [n for n, _ in other.named_children()] == ["main", "downsample"]
    check_gradients(other, rng.standard_normal((2, 3)) + 0.05, rng)
    with pytest.raises(ValueError, match="shortcut gives"):
        Residual(block(3, 4, 2).main).output_shape((1, 3, 5, 5))


@requires_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make, make_torch, shape", [
    (lambda d: BatchNorm2D(3, dtype=d), lambda: TORCH.nn.BatchNorm2d(3), (2, 3, 4, 5)),
    (lambda d: BatchNorm2D(3, momentum=None, dtype=d), lambda: TORCH.nn.BatchNorm2d(3, momentum=None), (1, 3, 4, 4)),
    (lambda d: BatchNorm2D(2, eps=1e-3, momentum=0.3, affine=False, dtype=d),
     lambda: TORCH.nn.BatchNorm2d(2, eps=1e-3, momentum=0.3, affine=False), (3, 2, 2, 3)),
    (lambda d: BatchNorm2D(2, track_running_stats=False, dtype=d),
     lambda: TORCH.nn.BatchNorm2d(2, track_running_stats=False), (2, 2, 3, 3)),
    (lambda d: ConvTranspose2D(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2, dilation=1, dtype=d, rng=0),
     lambda: TORCH.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2), (2, 4, 3, 5)),
    (lambda d: ConvTranspose2D(3, 2, (2, 3), stride=(1, 2), padding=(0, 1), dilation=2, bias=False, dtype=d,
                               rng=0),
     lambda: TORCH.nn.ConvTranspose2d(3, 2, (2, 3), stride=(1, 2), padding=(0, 1), dilation=2, bias=False),
     (1, 3, 4, 4)),
    (lambda d: AdaptiveAvgPool2D((3, None)), lambda: TORCH.nn.AdaptiveAvgPool2d((3, None)), (2, 3, 7, 5)),
    (lambda d: AdaptiveAvgPool2D(6), lambda: TORCH.nn.AdaptiveAvgPool2d(6), (1, 2, 4, 5)),   # larger than x
    (lambda d: AdaptiveMaxPool2D((2, 3)), lambda: TORCH.nn.AdaptiveMaxPool2d((2, 3)), (2, 3, 5, 7)),
    (lambda d: AdaptiveMaxPool2D(5), lambda: TORCH.nn.AdaptiveMaxPool2d(5), (1, 2, 3, 4)),
    (lambda d: Tanh(), lambda: TORCH.nn.Tanh(), (2, 3, 4)),
    (lambda d: LeakyReLU(), lambda: TORCH.nn.LeakyReLU(), (2, 3, 4)),
    (lambda d: LeakyReLU(0.3), lambda: TORCH.nn.LeakyReLU(0.3), (1, 5)),
    (lambda d: Identity(), lambda: TORCH.nn.Identity(), (2, 3)),
])
def test_new_layers_match_torch(rng, dtype, make, make_torch, shape):
    ours, theirs = make(dtype), make_torch()
    theirs = theirs.to(TORCH.float64 if dtype == F64 else TORCH.float32)
    with TORCH.no_grad():
        for t in theirs.state_dict().values():
            if t.is_floating_point():
                t.copy_(TORCH.from_numpy(rng.uniform(0.5, 1.5, tuple(t.shape)).astype(dtype)))
    ours.load_state_dict(theirs.state_dict())
    for _ in range(2):   # twice: running statistics and counts accumulate
        x = rng.standard_normal(shape).astype(dtype)
        tx = TORCH.tensor(x, requires_grad=True)
        y = ours.forward(x, training=True)
        ty = theirs.train()(tx)
        close(y, ty.detach().numpy())
        assert y.dtype == dtype
        g = rng.standard_normal(y.shape).astype(dtype)
        ty.backward(TORCH.from_numpy(g))
        close(ours.backward(g), tx.grad.numpy())
        for key, p in theirs.named_parameters():
            close(ours.grads[key], p.grad.numpy())
            p.grad = None
        for key, b in theirs.named_buffers():
            close(ours.buffers[key], b.numpy())
        with TORCH.no_grad():
            close(ours.forward(x, training=False), theirs.eval()(TORCH.from_numpy(x)).numpy())
    assert ours.output_shape(shape) == y.shape


def test_new_layer_arguments():
    for make, error, match in [
        (lambda: BatchNorm2D(0), ValueError, "num_features"),
        (lambda: BatchNorm2D(2, eps=-1), ValueError, "eps"),
        (lambda: BatchNorm2D(2, momentum="a"), ValueError, "momentum"),
        (lambda: BatchNorm2D(2, dtype=np.int8), TypeError, "dtype"),
        (lambda: ConvTranspose2D(2, 2, 3, stride=2, output_padding=2), ValueError, "output_padding"),
        (lambda: ConvTranspose2D(2, 2, 3, padding="same"), TypeError, "padding"),
        (lambda: ConvTranspose2D(3, 2, 3, groups=2), ValueError, "groups"),
        (lambda: AdaptiveAvgPool2D(0), ValueError, "output_size"),
        (lambda: AdaptiveMaxPool2D((1, 2, 3)), ValueError, "output_size"),
        (lambda: LeakyReLU("x"), ValueError, "negative_slope"),
    ]:
        with pytest.raises(error, match=match):
            make()
    bn = BatchNorm2D(3)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        bn.forward(np.zeros((2, 4, 2, 2), np.float32))
    with pytest.raises(TypeError, match="x has dtype"):
        bn.forward(np.zeros((2, 3, 2, 2)))
    with pytest.raises(ValueError, match="more than 1 value"):
        bn.forward(np.zeros((1, 3, 1, 1), np.float32))
    with pytest.raises(RuntimeError, match="forward"):
        BatchNorm2D(2).backward(np.zeros((1, 2, 2, 2), np.float32))
    assert BatchNorm2D(2).forward(np.zeros((1, 2, 1, 1), np.float32), training=False).shape == (1, 2, 1, 1)
    assert ConvTranspose2D(2, 4, 3, stride=2).output_shape((1, 2, 5, 5)) == (1, 4, 11, 11)
    assert repr(ConvTranspose2D(2, 4, 3, stride=2)) == "ConvTranspose2D(2, 4, kernel_size=(3, 3), stride=(2, 2))"
    assert repr(BatchNorm2D(8, momentum=None)) == "BatchNorm2D(8, momentum=None)"


# -- eval mode: folding, in place, no caches ------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_eval_folds_batch_norm_into_the_convolution(rng, dtype):
    model = small_net(dtype)
    randomise(model, rng)
    x = rng.standard_normal((3, 2, 7, 7)).astype(dtype)
    x_copy = x.copy()

    def unfused(x):   # every layer on its own: conv, then batch norm with its running statistics, ...
        h = x
        for name, layer in model.named_children():
            if name == "layer1":
                for blk in layer:
                    m = blk.main
                    r = m.bn1.forward(m.conv1.forward(h, False), False)
                    r = m.bn2.forward(m.conv2.forward(np.maximum(r, 0), False), False)
                    s = h if blk.shortcut is None else blk.shortcut[1].forward(blk.shortcut[0].forward(h, False),
                                                                              False)
                    h = np.maximum(r + s, 0)
            else:
                h = layer.forward(h, training=False)
        return h

    expected = unfused(x)
    got = model.forward(x, training=False)
    close(got, expected)
    assert np.array_equal(x, x_copy)                                    # the input is not written
    assert model._folded and model.layer1[1].main._folded               # folded weights are cached
    assert all(layer._cache is None for _, layer in model.named_modules())   # nothing kept for backward
    cached = model._folded[0][1]
    assert model.forward(x, training=False) is not got and model._folded[0][1] is cached
    # in-place edits of the parameters are noticed; so are training steps and loads
    model.conv1.params["weight"] *= 2
    model.bn1.buffers["running_var"] += 1
    close(model.forward(x, training=False), unfused(x))
    model.forward(x, training=True)
    assert not model._folded and not model.layer1[0].main._folded
    close(model.forward(x, training=False), unfused(x))
    model.load_state_dict(small_net(dtype).state_dict())
    assert not model._folded
    close(model.forward(x, training=False), unfused(x))


def test_eval_forward_allocates_only_the_live_activations(rng, monkeypatch):
    # A conv -> bn -> relu stack: the eval forward holds two activations at a time
    # (the input of a convolution and its output), not one per layer. Calibration off:
    # auto runs direct, whose workspace is small beside the activations (im2col's ~1 MiB
    # band per thread, which calibration may pick, would not be).
    from fastconv import _autotune

    monkeypatch.setitem(_autotune._state, "enabled", False)
    c, hw = 16, 32
    layers = []
    for i in range(6):
        layers += [Conv2D(c, c, 3, padding=1, rng=i), BatchNorm2D(c), ReLU()]
    model = Sequential(*layers)
    x = rng.standard_normal((2, c, hw, hw)).astype(np.float32)
    model.forward(x, training=False)                 # folded weights cached before measuring
    act = x.nbytes
    tracemalloc.start()
    try:
        model.forward(x, training=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3.5 * act, (peak, act)             # a training forward of these 18 layers keeps ~18x
    y = model.forward(x, training=True)              # training keeps what backward needs
    assert y.shape == x.shape and all(layer._cache is not None for layer in model)


def test_residual_eval_never_writes_a_shared_input(rng):
    x = rng.standard_normal((2, 3, 4, 4))
    saved = x.copy()
    for model in (Residual(Identity()), Residual(Identity(), Identity(), activation=ReLU()),
                  Sequential(Residual(Identity()), Residual(ReLU(), activation=LeakyReLU()))):
        y = model.forward(x, training=False)
        assert np.array_equal(x, saved)
        assert y is not x
    close(Residual(Identity(), activation=ReLU()).forward(x, training=False), np.maximum(2 * x, 0))


def test_summary_rows_of_a_residual_network(capsys):
    model = small_net()
    rows = model.summary_rows((2, 6, 6))
    names = [r[0] for r in rows]
    assert names[:4] == ["input", "conv1", "bn1", "relu"]
    assert "layer1.0.conv1" in names and "layer1.1.downsample.0" in names and "layer1.1.add" in names
    assert names[-1] == "fc" and rows[-1][1] == (3,)
    assert dict((r[0], r[1]) for r in rows)["layer1.1.add"] == (6, 3, 3)
    assert sum(r[2] for r in rows) == model.num_params()
    model.summary((2, 6, 6))
    out = capsys.readouterr().out
    assert "in place" in out and "training adds" in out and f"{model.num_params():,}" in out


def test_old_import_paths_still_work():
    from fastconv import layers, losses, optim
    assert fastconv.Conv2D is nn.Conv2D is layers.Conv2D and fastconv.Sequential is nn.Sequential
    assert losses.softmax_cross_entropy is nn.losses.softmax_cross_entropy and optim.Adam is nn.optim.Adam
    assert nn.models.resnet18 is __import__("fastconv.nn.models", fromlist=["x"]).resnet18
    assert nn.SGD is fastconv.SGD and nn.softmax_cross_entropy is fastconv.softmax_cross_entropy
    assert MaxPool2D(2).named_children is not None and list(Linear(2, 3).state_dict()) == ["weight", "bias"]


@requires_torch
def test_bench_twin_and_flops(rng):
    from fastconv import _bench_nets, bench
    from fastconv.nn import models

    assert bench.SECTIONS["nets"] is _bench_nets.net_cases
    model = small_net(np.float32)
    randomise(model, rng)
    twin = _bench_nets.torch_twin(TORCH, model).eval()
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    with TORCH.no_grad():
        close(model.forward(x, training=False), twin(TORCH.from_numpy(x)).numpy())
    assert _bench_nets.model_flops(models.resnet18(rng=0), (1, 3, 224, 224)) == 3_628_146_688  # 1.81 GMACs
    assert list(_bench_nets.net_cases(None, dtypes=("float64",))) == []


def test_copies_standalone_batch_norm_and_an_sgd_step(rng):
    import copy
    import pickle

    model = small_net()
    randomise(model, rng)
    x = rng.standard_normal((2, 2, 6, 6))
    expected = model.forward(x, training=False)
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert list(other.state_dict()) == list(model.state_dict())
        close(other.forward(x, training=False), expected)
    # batch norm after a ReLU (nothing to fold into): in place on the temporary, same numbers
    s = Sequential(Conv2D(2, 3, 3, dtype=F64, rng=0), ReLU(), BatchNorm2D(3, dtype=F64))
    randomise(s, rng)
    h = x.copy()
    for layer in s:
        h = layer.forward(h, training=False)
    close(s.forward(x, training=False), h)
    # optimisers see the dotted names and update the layers' own arrays
    opt = nn.SGD(model, lr=0.1)
    w = model.layer1[1].downsample[0].params["weight"]
    before = w.copy()
    y = model.forward(x)
    model.backward(np.ones_like(y))
    opt.step()
    assert model.params["layer1.1.downsample.0.weight"] is w
    close(w, before - 0.1 * model.grads["layer1.1.downsample.0.weight"])


def test_reference_backend_runs_the_new_layers_too(rng):
    from fastconv import reference

    fast, slow = small_net(), small_net()
    randomise(fast, rng)
    slow.load_state_dict(fast.state_dict())
    slow.set_backend(reference)
    assert slow.layer1[1].conv1.backend is reference and slow.layer1[1].downsample[1].backend is reference
    x = rng.standard_normal((2, 2, 6, 6))
    close(fast.forward(x, training=False), slow.forward(x, training=False))
    y = fast.forward(x)
    close(y, slow.forward(x))
    close(fast.backward(np.ones_like(y)), slow.backward(np.ones_like(y)))
    up = [Sequential(ConvTranspose2D(2, 3, 3, stride=2, dtype=F64, rng=0), AdaptiveMaxPool2D((4, None)),
                     AdaptiveAvgPool2D(3)) for _ in range(2)]
    up[1].set_backend(reference)
    y = [m.forward(x) for m in up]
    close(y[0], y[1])
    close(*(m.backward(np.ones_like(y[0])) for m in up))
    # every layer takes the keyword, those without a compiled op too
    assert all(layer(backend=reference).backend is reference for layer in (ReLU, LeakyReLU, Tanh, Identity))


def test_small_linear_products_leave_the_blas_setting_as_found(rng):
    import threading

    from threadpoolctl import threadpool_info

    def blas_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    layer = Linear(16, 4, dtype=F64, rng=0)
    x = rng.standard_normal((3, 16))

    def work():
        for _ in range(50):
            layer.backward(np.ones_like(layer.forward(x, training=True)))

    workers = [threading.Thread(target=work) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert blas_threads() == before
    close(layer.forward(x, training=False), x @ layer.params["weight"].T + layer.params["bias"])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ["fastconv", "reference"])
@pytest.mark.parametrize("first", ["conv", "residual", "linear", "norm"])
def test_backward_without_the_input_gradient(rng, dtype, backend, first):
    """``backward(g, input_grad=False)`` fills the same grads as ``backward(g)`` and returns
    None, whatever the first layer (a convolution skips its grad_x)."""
    if first == "linear":
        model = Sequential(Flatten(), Linear(3 * 9 * 9, 6, dtype=dtype, rng=4), ReLU(),
                           Linear(6, 5, dtype=dtype, rng=6))
    else:
        head = {"conv": [Conv2D(3, 4, 3, stride=2, padding=1, dtype=dtype, rng=1), BatchNorm2D(4, dtype=dtype),
                         ReLU()],
                "residual": [Residual(Sequential(Conv2D(3, 4, 3, padding=1, dtype=dtype, rng=2),
                                                 BatchNorm2D(4, dtype=dtype)),
                                      Conv2D(3, 4, 1, dtype=dtype, rng=3)), ReLU()],
                "norm": [BatchNorm2D(3, dtype=dtype), Conv2D(3, 4, 3, stride=2, padding=1, dtype=dtype, rng=5)]}
        model = Sequential(*head[first], Conv2D(4, 5, 3, padding=1, dtype=dtype, rng=7), Flatten())
    if backend == "reference":
        model.set_backend(reference)
    x = rng.standard_normal((3, 3, 9, 9)).astype(dtype)
    g = rng.standard_normal(model.forward(x).shape).astype(dtype)
    assert model.backward(g) is not None
    full = {k: v.copy() for k, v in model.grads.items()}
    model.forward(x)
    assert model.backward(g, input_grad=False) is None
    assert full.keys() == model.grads.keys()
    for k in full:      # to rounding: grad_weight alone may run another algorithm
        assert_close(model.grads[k], full[k])


class _ReturnsItsInput(nn.Layer):
    """A user's layer whose forward hands on its input (or a view of it)."""

    def forward(self, x, training=True):
        return x[...]


@pytest.mark.parametrize("first", [nn.Layer, _ReturnsItsInput, Identity, Flatten, lambda: nn.Dropout(0.5),
                                   lambda: AdaptiveAvgPool2D(2)])
@pytest.mark.parametrize("then", [ReLU, LeakyReLU, lambda: BatchNorm2D(2), lambda: Residual(Identity())])
def test_an_eval_forward_never_writes_into_the_callers_array(first, then):
    """Layers that hand on their input (or a view of it) leave it the caller's: the
    in-place ReLU, LeakyReLU, batch norm and residual sum after them copy first."""
    layer = then()
    if isinstance(layer, BatchNorm2D) and first is Flatten:
        return
    x = np.arange(-8, 8, dtype=np.float32).reshape(2, 2, 2, 2)
    before = x.copy()
    model = Sequential(first(), layer)
    want = Sequential(first(), then()).forward(x.copy(), training=False)
    got = model.forward(x, training=False)
    np.testing.assert_array_equal(x, before)
    close(got, want)
    if first is not Flatten:        # the others hand on x itself: the block doubles it
        np.testing.assert_array_equal(Residual(first()).forward(x, training=False), 2 * before)
        np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("training", [True, False])
def test_residual_branches_must_give_one_shape(training):
    block = Residual(Conv2D(3, 1, 1))
    with pytest.raises(ValueError, match=r"main branch gives shape \(1, 1, 4, 4\) but the shortcut gives"):
        block.forward(np.ones((1, 3, 4, 4), np.float32), training=training)


def test_batch_norm_counts_only_the_batches_that_went_in():
    bn = BatchNorm2D(2, momentum=None)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn.forward(np.ones((1, 2, 1, 1), np.float32))
    assert bn.buffers["num_batches_tracked"] == 0
    bn.forward(np.array([1, 1, 3, 3], np.float32).reshape(2, 2, 1, 1))
    np.testing.assert_array_equal(bn.buffers["running_mean"], [2, 2])
    assert bn.buffers["num_batches_tracked"] == 1


@pytest.mark.parametrize("layer", [AdaptiveAvgPool2D(4), AdaptiveMaxPool2D((4, None))])
@pytest.mark.parametrize("shape", [(4, 4), (2, 1, 3, 4, 4)])
def test_adaptive_pooling_checks_its_input_in_a_container_too(layer, shape):
    for training in (True, False):
        with pytest.raises(ValueError, match="x must be 3-D"):
            Sequential(layer).forward(np.ones(shape, np.float32), training=training)


@pytest.mark.parametrize("layer", [ReLU, LeakyReLU, nn.Sigmoid, Tanh, lambda: nn.Dropout(0.5, rng=0),
                                   lambda: nn.Dropout(0.0)])
def test_activations_check_the_gradient_against_their_output(layer):
    a = layer()
    a.forward(np.ones((2, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match="grad_output must be 4-D"):
        a.backward(np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"grad_output must have shape \(2, 3, 4, 4\)"):
        a.backward(np.ones((1, 3, 4, 4), np.float32))
    assert a.backward(np.ones((2, 3, 4, 4), np.float32)).shape == (2, 3, 4, 4)


def test_leaky_relu_of_a_scalar():
    layer = LeakyReLU(0.5)
    assert layer.forward(np.float32(-2)) == np.float32(-1)
    assert layer.backward(np.ones((), np.float32)) == np.float32(0.5)


@pytest.mark.parametrize("make, error, match", [
    (lambda: Conv2D(1, 1, 1, bias=np.array([1, 2])), TypeError, "bias must be a bool"),
    (lambda: Linear(2, 3, bias="yes"), TypeError, "bias must be a bool"),
    (lambda: Linear(2, 3, rng="abc"), TypeError, "rng must be"),
    (lambda: nn.Dropout(0.5, rng=[1.5]), TypeError, "rng must be"),
    (lambda: MaxPool2D(2, ceil_mode="no"), TypeError, "ceil_mode must be a bool"),
    (lambda: nn.AvgPool2D(2, count_include_pad=0), TypeError, "count_include_pad must be a bool"),
    (lambda: BatchNorm2D(3, affine="no"), TypeError, "affine must be a bool"),
    (lambda: BatchNorm2D(3, track_running_stats=1), TypeError, "track_running_stats must be a bool"),
])
def test_layer_arguments_are_checked(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_summary_names_the_layer_that_needs_nchw():
    with pytest.raises(ValueError, match=r"Conv2D\(1, 6.*expects input of shape \(N, C, H, W\), got \(1, 8, 8\)"):
        nn.models.lenet5().summary((8, 8))


def test_load_state_dict_takes_a_mapping_of_values_that_fit():
    model = nn.models.lenet5()
    for bad in ([1], None, "weights"):
        with pytest.raises(TypeError, match="state_dict must be a mapping"):
            model.load_state_dict(bad)
    bn = BatchNorm2D(2)
    state = bn.state_dict()
    state["num_batches_tracked"] = np.uint64(2**64 - 1)
    with pytest.raises(ValueError, match="'num_batches_tracked' holds 18446744073709551615, outside"):
        bn.load_state_dict(state)
    assert bn.buffers["num_batches_tracked"] == 0


def test_flatten_checks_its_input_and_gradient():
    f = Flatten()
    with pytest.raises(ValueError, match="x must have a batch axis"):
        f.forward(np.float32(3))
    for bad in (None, "abc"):
        with pytest.raises(TypeError, match="x must be a numeric array"):
            f.forward(bad)
    assert f.forward(np.ones((2, 3), np.int64)).shape == (2, 3)
    f.forward(np.ones((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match=r"grad_output must have shape \(2, 12\)"):
        f.backward(np.ones((2, 11), np.float32))


def test_dropout_of_a_scalar_keeps_its_mask():
    layer = nn.Dropout(0.5, rng=1)
    y = layer.forward(np.array(3.0, np.float32))
    assert layer.backward(np.array(1.0, np.float32)) == y / 3
