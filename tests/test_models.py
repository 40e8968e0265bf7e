"""The model zoo against torch twins (torch.nn models with torchvision's layer
names, written here because torchvision's wheel does not load beside CPU torch):
state-dict keys and order, parameter counts, eval outputs (float32), one training
step's gradients and running statistics (float64), the VGG-16 summary, the eval
forward's memory on a residual network, the README's snippet."""
import contextlib
import io
import pathlib
import re
import sys
import tracemalloc
import types

import numpy as np
import pytest
from conftest import TORCH, requires_torch

from fastconv.nn import Dropout, Layer, models, softmax_cross_entropy

COUNTS = {"alexnet": 61_100_840, "vgg11": 132_863_336, "vgg16": 138_357_544, "vgg16_bn": 138_365_992,
          "resnet18": 11_689_512, "resnet34": 21_797_672, "lenet5": 61_706}


@pytest.fixture(scope="module")
def vgg16():
    # ~0.55 GB of float32 weights: built once for the module
    return models.vgg16(rng=0)


# -- torch twins ----------------------------------------------------------------
def torch_resnet(blocks, num_classes=1000):
    nn = TORCH.nn

    class BasicBlock(nn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.downsample = None
            if stride != 1 or c_in != c_out:
                self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                                nn.BatchNorm2d(c_out))

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + identity)

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            c_in = 64
            for i, (n, width) in enumerate(zip(blocks, (64, 128, 256, 512))):
                layer = [BasicBlock(c_in, width, 1 if i == 0 else 2)]
                layer += [BasicBlock(width, width, 1) for _ in range(n - 1)]
                setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
                c_in = width
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(TORCH.flatten(self.avgpool(x), 1))

    return ResNet()


VGG_CONFIGS = {"vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
               "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]}


class Head(TORCH.nn.Module if TORCH else object):
    """torchvision's VGG / AlexNet layout: features, avgpool, flatten(1), classifier."""

    def __init__(self, features, pool, classifier):
        super().__init__()
        self.features, self.avgpool, self.classifier = features, TORCH.nn.AdaptiveAvgPool2d(pool), classifier

    def forward(self, x):
        return self.classifier(TORCH.flatten(self.avgpool(self.features(x)), 1))


def torch_vgg(name, num_classes=1000, dropout=0.5):
    nn = TORCH.nn
    batch_norm = name.endswith("_bn")
    layers, c = [], 3
    for width in VGG_CONFIGS[name.replace("_bn", "")]:
        if width == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, width, 3, padding=1)] + ([nn.BatchNorm2d(width)] if batch_norm else [])
            layers.append(nn.ReLU(inplace=True))
            c = width
    classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(dropout),
                               nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(dropout), nn.Linear(4096, num_classes))
    return Head(nn.Sequential(*layers), (7, 7), classifier)


def torch_alexnet(num_classes=1000, dropout=0.5):
    nn = TORCH.nn
    features = nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(True), nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(3, 2))
    classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(True), nn.Dropout(dropout),
                               nn.Linear(4096, 4096), nn.ReLU(True), nn.Linear(4096, num_classes))
    return Head(features, (6, 6), classifier)


def torch_lenet5(num_classes=10):
    nn = TORCH.nn

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2),
                                          nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2))
            self.classifier = nn.Sequential(nn.Linear(400, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(),
                                            nn.Linear(84, num_classes))

        def forward(self, x):
            return self.classifier(TORCH.flatten(self.features(x), 1))

    return LeNet()


def twin_on_meta(make, ours):
    """The torch twin holding our arrays (no copy, no torch initialisation): for eval only."""
    with TORCH.device("meta"):
        twin = make()
    twin.load_state_dict({k: TORCH.from_numpy(np.asarray(a)) for k, a in ours.state_dict().items()}, assign=True)
    return twin.eval()


def randomise_bn(model, rng):
    """Biases, batch-norm scales and shifts and running statistics away from their initial values."""
    for key, a in model.state_dict().items():
        if a.ndim == 1:
            positive = key.endswith(("running_var", "weight"))    # 1-D weights are batch norm's
            a[...] = rng.uniform(0.5, 1.5, a.shape) if positive else rng.uniform(-0.2, 0.2, a.shape)


def close(actual, expected, rtol, scale=None):
    """|actual - expected| <= rtol * (|expected| + max |expected|) (max |scale| in the
    last term where given), as assert_allclose, which reports a failure. Checked by
    chunks of 128K values first: on VGG's 25088 x 4096 float64 gradient, assert_allclose
    alone took ~4 GB of temporaries and ~1.5 s."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    a, e = actual.reshape(-1), expected.reshape(-1)
    step = 1 << 17
    chunks = [slice(i, i + step) for i in range(0, e.size, step)]
    buffers = np.empty((2, min(step, e.size)), np.float64)
    if scale is None:
        scale = max((np.abs(e[c], out=buffers[0, :e[c].size]).max() for c in chunks), default=0)
    atol = rtol * max(1e-30, np.abs(scale).max())
    for c in chunks:
        n = e[c].size
        diff, bound = np.subtract(a[c], e[c], out=buffers[0, :n]), np.abs(e[c], out=buffers[1, :n])
        np.abs(diff, out=diff)
        bound *= rtol
        bound += atol
        if not (diff <= bound).all():       # NaN included
            np.testing.assert_allclose(a[c], e[c], rtol=rtol, atol=atol,
                                       err_msg=f"shape {actual.shape}, flat indices from {c.start}")


# -- counts, keys, summary ------------------------------------------------------
TWINS = {"resnet18": lambda: torch_resnet((2, 2, 2, 2)), "resnet34": lambda: torch_resnet((3, 4, 6, 3)),
         "alexnet": torch_alexnet, "vgg11": lambda: torch_vgg("vgg11"), "vgg16_bn": lambda: torch_vgg("vgg16_bn"),
         "lenet5": torch_lenet5}
EVAL_INPUT = {"resnet18": (2, 3, 32, 32), "resnet34": (2, 3, 32, 32), "lenet5": (3, 1, 28, 28),
              "alexnet": (2, 3, 64, 64), "vgg11": (1, 3, 32, 32), "vgg16_bn": (1, 3, 32, 32)}


@pytest.mark.parametrize("name", list(TWINS))
def test_counts_keys_and_eval_against_torch(name):
    """Each model built once: parameter count, torchvision's keys and order, and
    (for some) the eval output of the torch twin holding the same weights."""
    ours = getattr(models, name)(rng=4)
    assert ours.num_params() == COUNTS[name]
    assert all(p.dtype == np.float32 for p in ours.params.values())
    if TORCH is None:
        return
    rng = np.random.default_rng(3)
    randomise_bn(ours, rng)
    twin = twin_on_meta(TWINS[name], ours)
    assert list(ours.state_dict()) == list(twin.state_dict())
    assert [k for k, _ in twin.named_parameters()] == list(ours.params) == list(ours.grads)
    assert [k for k, _ in twin.named_buffers()] == list(ours.buffers)
    if name in EVAL_INPUT:
        x = rng.standard_normal(EVAL_INPUT[name]).astype(np.float32)
        with TORCH.no_grad():
            expected = twin(TORCH.from_numpy(x)).numpy()
        close(ours.forward(x, training=False), expected, 1e-4)
        close(ours.forward(x[:1], training=False), expected[:1], 1e-4)      # batch of 1


def test_builder_arguments_and_seeds():
    assert models.resnet18(num_classes=10).num_params() == COUNTS["resnet18"] - 990 * 513
    assert models.lenet5(dtype=np.float64).params["classifier.4.weight"].dtype == np.float64
    with pytest.raises(ValueError, match="num_classes"):
        models.resnet18(num_classes=0)
    with pytest.raises(TypeError, match="dtype"):
        models.lenet5(dtype=np.int32)
    a, b, c = models.resnet18(rng=1), models.resnet18(rng=1), models.resnet18(rng=2)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert not np.array_equal(a.params["conv1.weight"], c.params["conv1.weight"])
    assert not np.array_equal(a.params["layer1.0.conv1.weight"], a.params["layer1.1.conv1.weight"])
    f64 = models.resnet18(rng=1, dtype=np.float64)
    assert np.array_equal(f64.params["fc.weight"].astype(np.float32), a.params["fc.weight"])


def test_vgg16_summary_reproduces_the_course_accounting(vgg16, capsys):
    rows = vgg16.summary_rows((3, 224, 224))
    convs = [r for r in rows if r[0].startswith("features.") and len(r[1]) == 3 and r[2]]
    assert len(convs) == 13
    assert [r[3] for r in convs[:2]] == [224 * 224 * 64] * 2 == [3_211_264] * 2
    assert [r[2] for r in convs[:2]] == [3 * 3 * 3 * 64 + 64, 3 * 3 * 64 * 64 + 64]
    assert convs[-1][1] == (512, 14, 14)
    fcs = [r for r in rows if r[0].startswith("classifier.") and r[2]]
    assert [r[2] for r in fcs] == [7 * 7 * 512 * 4096 + 4096, 4096 * 4096 + 4096, 4096 * 1000 + 1000]
    assert sum(r[2] for r in rows) == COUNTS["vgg16"]
    pools = [r[3] for r in rows if r[0].startswith("features.") and r[2] == 0 and "MaxPool" in repr(
        dict(vgg16.named_modules())[r[0]])]
    assert pools == [112 * 112 * 64, 56 * 56 * 128, 28 * 28 * 256, 14 * 14 * 512, 7 * 7 * 512]
    vgg16.summary((3, 224, 224))
    text = capsys.readouterr().out
    # the course's rows (input, convs, pools, fcs) add up to 15,237,608 values stored by a forward
    assert "138,357,544" in text and "3,211,264" in text and "15,237,608 values (58.1 MiB) stored" in text
    assert "training adds: a gradient for every parameter" in text and "Adam" in text
    # the course's weights per row (3*3*3*64 = 1,728 ... 7*7*512*4096), the biases beside them
    for row in ("1,728 + 64", "36,864 + 64", "2,359,296 + 512", "102,760,448 + 4,096", "4,096,000 + 1,000"):
        assert row in text


# -- against torch ----------------------------------------------------------------
@requires_torch
def test_vgg16_eval_equals_torch(vgg16):
    x = np.random.default_rng(5).standard_normal((1, 3, 64, 64)).astype(np.float32)
    assert vgg16.num_params() == COUNTS["vgg16"]
    twin = twin_on_meta(lambda: torch_vgg("vgg16"), vgg16)
    assert list(vgg16.state_dict()) == list(twin.state_dict())
    with TORCH.no_grad():
        expected = twin(TORCH.from_numpy(x)).numpy()
    close(vgg16.forward(x, training=False), expected, 1e-4)


def twin_for_training(make, ours):
    """The torch twin for one training step: its parameters are our arrays (no copy: VGG's
    float64 weights are 1.1 GB; neither side's forward or backward writes them, which the
    test checks), its buffers copies (both update their running statistics in place)."""
    with TORCH.device("meta"):
        twin = make()
    state = {k: TORCH.from_numpy(a if k in ours.params else a.copy()) for k, a in ours.state_dict().items()}
    twin.load_state_dict(state, assign=True)
    assert all(p.requires_grad for p in twin.parameters())
    return twin.train()


def without_dropout(model, count):
    """Our model with its `count` Dropout layers at p = 0. torch's masks come from torch's
    generator and ours from our rng, so no step with p > 0 can be compared; the builders
    take no dropout argument (torchvision's VGG and AlexNet take ``dropout=``, which the
    twins here take too and get 0). At p = 0 both sides still run dropout's training path,
    the identity there; masks at p > 0 are tested in test_layers."""
    dropouts = [m for _, m in model.named_modules() if isinstance(m, Dropout)]
    assert len(dropouts) == count
    for m in dropouts:
        m.p = 0.0
    return model


# Batch norm's statistics over a batch. With 2 values per channel (resnet34's layer4 at
# batch 2 and 32 x 32) the step is ill-conditioned: there, in torch alone, x * (1 + 1e-15)
# moves the loss by 1e-9 relative, and ours misses the loss's 1e-10 and the gradients'
# 1e-8 (by 7e-8). So the added cases with batch norm give each one >= 16 values per
# channel (resnet18's, older, has 2 in layer4 and passes). Those without batch norm
# take two images, at the smallest size the builders document (AlexNet >= 63 x 63,
# VGG >= 32 x 32).
@requires_torch
@pytest.mark.parametrize("name, make, shape, dropouts", [
    ("resnet18", lambda: torch_resnet((2, 2, 2, 2), 10), (2, 3, 32, 32), 0),
    ("resnet34", lambda: torch_resnet((3, 4, 6, 3), 10), (4, 3, 64, 64), 0),     # layer4: 2 x 2 x 4
    ("lenet5", torch_lenet5, (4, 1, 28, 28), 0),
    ("alexnet", lambda: torch_alexnet(10, dropout=0.0), (2, 3, 64, 64), 2),
    ("vgg11", lambda: torch_vgg("vgg11", 10, dropout=0.0), (2, 3, 32, 32), 2),
    ("vgg16", lambda: torch_vgg("vgg16", 10, dropout=0.0), (2, 3, 32, 32), 2),
    ("vgg16_bn", lambda: torch_vgg("vgg16_bn", 10, dropout=0.0), (4, 3, 32, 32), 2)])   # last: 2 x 2 x 4
def test_training_step_equals_torch_float64(name, make, shape, dropouts):
    rng = np.random.default_rng(6)
    ours = without_dropout(getattr(models, name)(num_classes=10, dtype=np.float64, rng=7), dropouts)
    randomise_bn(ours, rng)
    twin = twin_for_training(make, ours)
    weights = {k: p.sum() for k, p in ours.params.items()}
    x = rng.standard_normal(shape)
    labels = rng.integers(0, 10, shape[0])
    loss, grad = softmax_cross_entropy(ours.forward(x, training=True), labels)
    grad_x = ours.backward(grad)
    tx = TORCH.tensor(x, requires_grad=True)
    tloss = TORCH.nn.functional.cross_entropy(twin(tx), TORCH.from_numpy(labels))
    tloss.backward()
    assert {k: p.sum() for k, p in ours.params.items()} == weights        # the shared weights unwritten
    assert [k for k, _ in twin.named_parameters()] == list(ours.grads)
    assert loss == pytest.approx(tloss.item(), rel=1e-10)
    close(grad_x, tx.grad.numpy(), 1e-8)
    for key, p in twin.named_parameters():
        # A convolution's bias before a batch norm: its gradient, the sum of a gradient
        # that the batch norm centred, is zero but for rounding; it is compared on the
        # scale of that sum uncentred, the batch norm's shift's gradient.
        scale = None
        prefix, _, index = key.rpartition(".")[0].rpartition(".")
        after = f"{prefix}.{int(index) + 1}" if index.isdigit() else None
        if key.endswith(".bias") and f"{after}.running_mean" in ours.buffers:
            scale = ours.grads[f"{after}.bias"]
        close(ours.grads[key], p.grad.numpy(), 1e-8, scale)
    for key, b in twin.named_buffers():
        close(ours.buffers[key], b.numpy(), 1e-8)
    if name == "resnet18":
        assert int(ours.buffers["layer2.0.downsample.1.num_batches_tracked"]) == 1
    if ours.buffers:
        # and eval after the step uses the updated running statistics, as torch's does
        del tx, tloss
        twin.zero_grad(set_to_none=True)
        twin.eval()
        with TORCH.no_grad():
            close(ours.forward(x, training=False), twin(TORCH.from_numpy(x)).numpy(), 1e-8)


# -- eval memory on a residual network -------------------------------------------
def test_resnet18_eval_forward_allocates_only_the_live_activations(monkeypatch):
    # docs/layers.rst: "the peak allocation is the input and output of the layer
    # running, plus the kernels' bounded workspaces"; in a residual block the block's
    # input is live too (the shortcut adds it at the end). Calibration off (auto runs
    # direct, whose workspace is ~15 KiB a thread) and two threads, so the workspaces
    # are the same on any machine; the blocks kept for reuse (fastconv._memory) let
    # go before measuring, so that none hides a temporary.
    import fastconv
    from fastconv import _autotune, _memory
    from fastconv.nn import Conv2D, Sequential

    monkeypatch.setitem(_autotune._state, "enabled", False)
    model = models.resnet18(rng=0)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    stem = Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    body = Sequential(model.layer1, model.layer2, model.layer3, model.layer4)     # the 8 residual blocks

    def peak(net, x):
        net.forward(x, training=False)        # warm-up: folded and packed weights cached
        _memory.release_cached()
        tracemalloc.start()
        try:
            y = net.forward(x, training=False)
            return y, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    with fastconv.threads(2):
        y, whole = peak(model, x)
        h = stem.forward(x, training=False)            # layer1's input: 64 x 16 x 16
        _, blocks = peak(body, h)
    act = h.nbytes
    largest = max(r[3] for r in model.summary_rows((3, 64, 64))) * 4    # conv1's output: 256 KiB
    assert largest == 4 * act
    # The whole forward peaks at conv1: its output and its zero-padded input (1.33x
    # measured); the residual stages' activations are a quarter of it and smaller.
    assert whole < 2 * largest, (whole, largest)
    # In the blocks, at layer1.1's conv2: the block's input, conv2's input, its
    # zero-padded copy (18^2 / 16^2 = 1.27x) and its output (4.3x measured); a
    # training forward of the blocks keeps ~16x.
    assert blocks < 5 * act, (blocks, act)
    assert y.shape == (1, 1000) and all(layer._cache is None for _, layer in model.named_modules())
    model.forward(np.concatenate([x, x]), training=True)         # training keeps what backward needs
    assert all(m._cache is not None for _, m in model.named_modules() if isinstance(m, Conv2D))


# -- the README's snippet -----------------------------------------------------------
@requires_torch
def test_readme_networks_snippet_runs_as_written(monkeypatch):
    """README.md's "Networks" snippet, run as it stands, with a stand-in `torchvision`
    whose ``models.resnet18(weights=...)`` gives the torch twin with random weights
    (nothing downloaded): the classes it prints are the twin's. A snippet that asks the
    stand-in for anything else fails here, and should be run against it again."""
    path = pathlib.Path(__file__).resolve().parents[1] / "README.md"
    if not path.exists():  # tests copied elsewhere without it (CI copies it beside the wheel's tests)
        pytest.skip("README.md is not beside the tests")
    readme = path.read_text(encoding="utf-8")
    section = re.search(r"^## Networks\n(.*?)^## ", readme, re.M | re.S)
    assert section, "README.md has no section \"## Networks\""
    blocks = re.findall(r"^```python\n(.*?)^```", section.group(1), re.M | re.S)
    assert len(blocks) == 1, f"expected one python block in README's Networks section, got {len(blocks)}"
    code = blocks[0]

    with TORCH.random.fork_rng():
        TORCH.manual_seed(0)
        twin = torch_resnet((2, 2, 2, 2))
    randomise_bn(types.SimpleNamespace(state_dict=lambda: {k: t.numpy() for k, t in twin.state_dict().items()}),
                 np.random.default_rng(9))
    twin.eval()
    asked = []

    def resnet18(*, weights):
        asked.append(weights)
        return twin

    torchvision = types.ModuleType("torchvision")
    torchvision.models = types.ModuleType("torchvision.models")
    torchvision.models.resnet18 = resnet18
    monkeypatch.setitem(sys.modules, "torchvision", torchvision)
    monkeypatch.setitem(sys.modules, "torchvision.models", torchvision.models)
    namespace, out = {"__name__": "readme"}, io.StringIO()
    # the snippet draws its images from NumPy's global generator: seeded here, and restored
    state = np.random.get_state()  # noqa: NPY002
    np.random.seed(10)  # noqa: NPY002
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md (Networks)", "exec"), namespace)
    finally:
        np.random.set_state(state)  # noqa: NPY002
    assert asked in (["DEFAULT"], ["IMAGENET1K_V1"])     # trained weights, by a name torchvision takes
    # the snippet's model and images, whatever it names them
    (model,) = [v for v in namespace.values() if isinstance(v, Layer)]
    (images,) = [v for v in namespace.values() if isinstance(v, np.ndarray) and v.ndim == 4]
    with TORCH.no_grad():
        scores = twin(TORCH.from_numpy(images)).numpy()
    printed = out.getvalue()
    assert printed == f"{scores.argmax(axis=1)}\n", (printed, scores.argmax(axis=1))
    # On uniform noise a random network gives most images one class (margins ~0.1,
    # rounding ~1e-6): the scores themselves say that the weights loaded are the twin's.
    close(model.forward(images[:2], training=False), scores[:2], 1e-4)
