"""LeNet-5 and AlexNet."""
from collections import OrderedDict

import numpy as np

from fastconv.nn.activation import ReLU, Tanh
from fastconv.nn.container import Sequential
from fastconv.nn.conv import Conv2D
from fastconv.nn.linear import Dropout, Flatten, Linear
from fastconv.nn.models._common import Factory
from fastconv.nn.pool import AdaptiveAvgPool2D, AvgPool2D, MaxPool2D

__all__ = ["lenet5", "alexnet"]


def lenet5(num_classes=10, *, dtype=np.float32, rng=None):
    """LeNet-5 for (N, 1, 28, 28) digits: two 5x5 tanh convolutions with 2x2
    average pooling (the first padded by 2, as for 32 x 32 input), then
    fully connected layers of 120 and 84 tanh units.

    Children ``features``, ``flatten``, ``classifier``; Glorot-uniform weights
    (the tanh network's choice). 61,706 parameters with 10 classes.

    Parameters
    ----------
    num_classes : int
    dtype : float32 (default) or float64
    rng : None, int or numpy.random.Generator

    Returns
    -------
    Sequential
        Input (N, 1, 28, 28) -> class scores (N, num_classes).
    """
    f = Factory(num_classes, dtype, rng)

    def linear(n_in, n_out):
        return Linear(n_in, n_out, dtype=f.dtype, rng=f.rng, init="glorot")

    features = Sequential(
        Conv2D(1, 6, 5, padding=2, dtype=f.dtype, rng=f.rng, init="glorot"), Tanh(), AvgPool2D(2),
        Conv2D(6, 16, 5, dtype=f.dtype, rng=f.rng, init="glorot"), Tanh(), AvgPool2D(2))
    classifier = Sequential(linear(16 * 5 * 5, 120), Tanh(), linear(120, 84), Tanh(), linear(84, f.num_classes))
    return Sequential(OrderedDict(features=features, flatten=Flatten(), classifier=classifier))


def alexnet(num_classes=1000, *, dtype=np.float32, rng=None):
    """AlexNet as torchvision builds it (the one-GPU variant of "One weird trick").

    Children ``features`` (five convolutions, three max pools), ``avgpool``
    (adaptive, to 6 x 6), ``flatten`` and ``classifier`` (dropout and three fully
    connected layers): torchvision's state-dict keys, 61,100,840 parameters
    with 1000 classes.

    Parameters
    ----------
    num_classes : int
    dtype : float32 (default) or float64
    rng : None, int or numpy.random.Generator

    Returns
    -------
    Sequential
        Input (N, 3, H, W), H and W >= 63 (224 as trained) -> scores (N, num_classes).
    """
    f = Factory(num_classes, dtype, rng)
    features = Sequential(
        f.conv(3, 64, 11, 4, 2), ReLU(), MaxPool2D(3, 2),
        f.conv(64, 192, 5, padding=2), ReLU(), MaxPool2D(3, 2),
        f.conv(192, 384, 3, padding=1), ReLU(),
        f.conv(384, 256, 3, padding=1), ReLU(),
        f.conv(256, 256, 3, padding=1), ReLU(), MaxPool2D(3, 2))
    classifier = Sequential(
        Dropout(0.5, rng=f.rng), f.linear(256 * 6 * 6, 4096), ReLU(),
        Dropout(0.5, rng=f.rng), f.linear(4096, 4096), ReLU(),
        f.linear(4096, f.num_classes))
    return Sequential(OrderedDict(features=features, avgpool=AdaptiveAvgPool2D(6), flatten=Flatten(),
                                  classifier=classifier))
