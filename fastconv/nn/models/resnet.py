"""ResNet-18 and ResNet-34 (torchvision's, with BasicBlock residual blocks)."""
from collections import OrderedDict

import numpy as np

from fastconv.nn.activation import ReLU
from fastconv.nn.container import Residual, Sequential
from fastconv.nn.linear import Flatten
from fastconv.nn.models._common import Factory
from fastconv.nn.pool import AdaptiveAvgPool2D, MaxPool2D

__all__ = ["resnet18", "resnet34", "basic_block"]


def basic_block(f, c_in, c_out, stride):
    """torchvision's ``BasicBlock``: children ``conv1``, ``bn1``, ``relu``, ``conv2``,
    ``bn2`` and, where the shape changes, ``downsample`` (1x1 convolution and
    batch norm, keys ``downsample.0`` / ``downsample.1``); ReLU after the sum."""
    main = Sequential(OrderedDict(
        conv1=f.conv(c_in, c_out, 3, stride, 1, bias=False), bn1=f.bn(c_out), relu=ReLU(),
        conv2=f.conv(c_out, c_out, 3, 1, 1, bias=False), bn2=f.bn(c_out)))
    shortcut = None
    if stride != 1 or c_in != c_out:
        shortcut = Sequential(f.conv(c_in, c_out, 1, stride, bias=False), f.bn(c_out))
    return Residual(main, shortcut, activation=ReLU())


def _resnet(blocks, num_classes, dtype, rng):
    f = Factory(num_classes, dtype, rng)
    children = OrderedDict(conv1=f.conv(3, 64, 7, 2, 3, bias=False), bn1=f.bn(64), relu=ReLU(),
                           maxpool=MaxPool2D(3, 2, 1))
    c_in = 64
    for i, (n, width) in enumerate(zip(blocks, (64, 128, 256, 512))):
        stride = 1 if i == 0 else 2
        layer = [basic_block(f, c_in, width, stride)]
        layer += [basic_block(f, width, width, 1) for _ in range(n - 1)]
        children[f"layer{i + 1}"] = Sequential(*layer)
        c_in = width
    children.update(avgpool=AdaptiveAvgPool2D(1), flatten=Flatten(), fc=f.linear(512, f.num_classes))
    return Sequential(children)


_DOC = """ResNet-{depth} as torchvision builds it.

    Children ``conv1``, ``bn1``, ``relu``, ``maxpool``, ``layer1`` ... ``layer4``
    ({blocks} residual blocks), ``avgpool``, ``flatten`` and ``fc``: torchvision's
    state-dict keys (``layer1.0.conv1.weight``, ``layer2.0.downsample.1.running_mean``),
    {count} parameters with 1000 classes.

    Parameters
    ----------
    num_classes : int
    dtype : float32 (default) or float64
    rng : None, int or numpy.random.Generator

    Returns
    -------
    Sequential
        Input (N, 3, H, W), H and W >= 32 (224 as trained) -> scores (N, num_classes).
    """


def resnet18(num_classes=1000, *, dtype=np.float32, rng=None):
    return _resnet((2, 2, 2, 2), num_classes, dtype, rng)


def resnet34(num_classes=1000, *, dtype=np.float32, rng=None):
    return _resnet((3, 4, 6, 3), num_classes, dtype, rng)


resnet18.__doc__ = _DOC.format(depth=18, blocks="2, 2, 2, 2", count="11,689,512")
resnet34.__doc__ = _DOC.format(depth=34, blocks="3, 4, 6, 3", count="21,797,672")
