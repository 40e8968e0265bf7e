"""What the builders share: argument checks and layer factories bound to one dtype and generator."""
import numpy as np

from fastconv import _validation as v
from fastconv.nn.base import _dtype
from fastconv.nn.conv import Conv2D
from fastconv.nn.linear import Linear
from fastconv.nn.norm import BatchNorm2D


class Factory:
    """Layers of one model: one dtype, one generator, the zoo's initialisation."""

    def __init__(self, num_classes, dtype, rng):
        self.num_classes = v.integer(num_classes, "num_classes", minimum=1)
        self.dtype = _dtype(dtype)
        self.rng = np.random.default_rng(rng)

    def conv(self, c_in, c_out, kernel_size, stride=1, padding=0, bias=True):
        return Conv2D(c_in, c_out, kernel_size, stride, padding, bias=bias, dtype=self.dtype, rng=self.rng,
                      init="he_uniform")

    def linear(self, n_in, n_out):
        return Linear(n_in, n_out, dtype=self.dtype, rng=self.rng, init="he_uniform")

    def bn(self, channels):
        return BatchNorm2D(channels, dtype=self.dtype)
