"""VGG-11, VGG-16 and VGG-16 with batch norm (torchvision's configurations A and D)."""
from collections import OrderedDict

import numpy as np

from fastconv.nn.activation import ReLU
from fastconv.nn.container import Sequential
from fastconv.nn.linear import Dropout, Flatten
from fastconv.nn.models._common import Factory
from fastconv.nn.pool import AdaptiveAvgPool2D, MaxPool2D

__all__ = ["vgg11", "vgg16", "vgg16_bn"]

_CONFIGS = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def _vgg(config, batch_norm, num_classes, dtype, rng):
    f = Factory(num_classes, dtype, rng)
    layers, channels = [], 3
    for width in _CONFIGS[config]:
        if width == "M":
            layers.append(MaxPool2D(2, 2))
            continue
        layers.append(f.conv(channels, width, 3, padding=1))
        if batch_norm:
            layers.append(f.bn(width))
        layers.append(ReLU())
        channels = width
    classifier = Sequential(
        f.linear(512 * 7 * 7, 4096), ReLU(), Dropout(0.5, rng=f.rng),
        f.linear(4096, 4096), ReLU(), Dropout(0.5, rng=f.rng),
        f.linear(4096, f.num_classes))
    return Sequential(OrderedDict(features=Sequential(*layers), avgpool=AdaptiveAvgPool2D(7), flatten=Flatten(),
                                  classifier=classifier))


_DOC = """{title} as torchvision builds it.

    Children ``features`` ({convs} 3x3 convolutions{bn} with ReLU, five 2x2 max
    pools), ``avgpool`` (adaptive, to 7 x 7), ``flatten`` and ``classifier`` (three
    fully connected layers with dropout): torchvision's state-dict keys,
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


def vgg11(num_classes=1000, *, dtype=np.float32, rng=None):
    return _vgg("A", False, num_classes, dtype, rng)


def vgg16(num_classes=1000, *, dtype=np.float32, rng=None):
    return _vgg("D", False, num_classes, dtype, rng)


def vgg16_bn(num_classes=1000, *, dtype=np.float32, rng=None):
    return _vgg("D", True, num_classes, dtype, rng)


vgg11.__doc__ = _DOC.format(title="VGG-11 (configuration A)", convs=8, bn="", count="132,863,336")
vgg16.__doc__ = _DOC.format(title="VGG-16 (configuration D)", convs=13, bn="", count="138,357,544")
vgg16_bn.__doc__ = _DOC.format(title="VGG-16 with batch normalisation", convs=13,
                               bn=", each followed by batch norm", count="138,365,992")
