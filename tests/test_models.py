"""The model zoo against torch twins (torch.nn models with torchvision's layer
names, written here because torchvision's wheel does not load beside CPU torch):
state-dict keys and order, parameter counts, eval outputs (float32), one training
step's gradients and running statistics (float64), the VGG-16 summary."""

import numpy as np
import pytest
from conftest import TORCH, requires_torch

from fastconv.nn import models, softmax_cross_entropy

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


def torch_vgg(name, num_classes=1000):
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
    classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
                               nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, num_classes))
    return Head(nn.Sequential(*layers), (7, 7), classifier)


def torch_alexnet(num_classes=1000):
    nn = TORCH.nn
    features = nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(True), nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(3, 2))
    classifier = nn.Sequential(nn.Dropout(), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(True), nn.Dropout(),
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


def close(actual, expected, rtol):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * max(1e-30, np.abs(expected).max()))


# -- counts, keys, summary ------------------------------------------------------
TWINS = {"resnet18": lambda: torch_resnet((2, 2, 2, 2)), "resnet34": lambda: torch_resnet((3, 4, 6, 3)),
         "alexnet": torch_alexnet, "vgg11": lambda: torch_vgg("vgg11"), "vgg16_bn": lambda: torch_vgg("vgg16_bn"),
         "lenet5": torch_lenet5}
EVAL_INPUT = {"resnet18": (2, 3, 32, 32), "lenet5": (3, 1, 28, 28), "alexnet": (2, 3, 64, 64),
              "vgg16_bn": (1, 3, 32, 32)}


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


@requires_torch
@pytest.mark.parametrize("name, make, shape", [
    ("resnet18", lambda: torch_resnet((2, 2, 2, 2), 10), (2, 3, 32, 32)),
    ("lenet5", torch_lenet5, (4, 1, 28, 28))])
def test_training_step_equals_torch_float64(name, make, shape):
    rng = np.random.default_rng(6)
    ours = getattr(models, name)(num_classes=10, dtype=np.float64, rng=7)
    randomise_bn(ours, rng)
    twin = make().double().train()
    twin.load_state_dict({k: TORCH.tensor(a) for k, a in ours.state_dict().items()})
    x = rng.standard_normal(shape)
    labels = rng.integers(0, 10, shape[0])
    loss, grad = softmax_cross_entropy(ours.forward(x, training=True), labels)
    grad_x = ours.backward(grad)
    tx = TORCH.tensor(x, requires_grad=True)
    tloss = TORCH.nn.functional.cross_entropy(twin(tx), TORCH.from_numpy(labels))
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-10)
    close(grad_x, tx.grad.numpy(), 1e-8)
    for key, p in twin.named_parameters():
        close(ours.grads[key], p.grad.numpy(), 1e-8)
    for key, b in twin.named_buffers():
        close(ours.buffers[key], b.numpy(), 1e-8)
    if name == "resnet18":
        assert int(ours.buffers["layer2.0.downsample.1.num_batches_tracked"]) == 1
        # and eval after the step uses the updated running statistics, as torch's does
        twin.eval()
        with TORCH.no_grad():
            close(ours.forward(x, training=False), twin(TORCH.from_numpy(x)).numpy(), 1e-8)
