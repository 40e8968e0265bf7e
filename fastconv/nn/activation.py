"""Elementwise activations: `ReLU`, `LeakyReLU`, `Sigmoid`, `Tanh`.

In an eval forward inside a container, `ReLU` and `LeakyReLU` overwrite their
input when it is a temporary of that forward (never the caller's array).
"""
import numbers

import numpy as np

from fastconv import _validation as v
from fastconv.nn.base import Layer

__all__ = ["ReLU", "LeakyReLU", "Sigmoid", "Tanh"]


class ReLU(Layer):
    """``max(x, 0)``, elementwise, any shape."""

    _in_place = True

    def forward(self, x, training=True):
        x = v.float_array(x, "x")
        self._remember(training, x > 0)
        return np.maximum(x, 0)

    def _infer(self, x, owned):
        self._cache = None
        x = v.float_array(x, "x")
        if owned:
            return np.maximum(x, 0, out=x), True
        return np.maximum(x, 0), True

    def backward(self, grad_output):
        (positive,) = self._recall()
        grad_output = v.float_array(grad_output, "grad_output")
        return np.where(positive, grad_output, grad_output.dtype.type(0))


class LeakyReLU(Layer):
    """``x`` where positive, else ``negative_slope * x`` (as ``torch.nn.LeakyReLU``), any shape.

    Parameters
    ----------
    negative_slope : float
    """

    _in_place = True

    def __init__(self, negative_slope=0.01):
        super().__init__()
        if isinstance(negative_slope, (bool, np.bool_)) or not isinstance(negative_slope, numbers.Real) \
                or not np.isfinite(negative_slope):
            raise ValueError(f"negative_slope must be a finite number, got {negative_slope!r}")
        self.negative_slope = float(negative_slope)

    def forward(self, x, training=True):
        x = v.float_array(x, "x")
        positive = x > 0
        y = np.multiply(x, x.dtype.type(self.negative_slope))
        np.copyto(y, x, where=positive)
        self._remember(training, positive)
        return y

    def _infer(self, x, owned):
        self._cache = None
        x = v.float_array(x, "x")
        if not owned:
            return self.forward(x, training=False), True
        return np.multiply(x, x.dtype.type(self.negative_slope), out=x, where=x <= 0), True

    def backward(self, grad_output):
        (positive,) = self._recall()
        grad_output = v.float_array(grad_output, "grad_output")
        return np.where(positive, grad_output, grad_output * grad_output.dtype.type(self.negative_slope))

    def __repr__(self):
        return f"LeakyReLU(negative_slope={self.negative_slope})"


class Sigmoid(Layer):
    """The logistic function ``1 / (1 + exp(-x))``, elementwise, any shape."""

    def forward(self, x, training=True):
        x = v.float_array(x, "x")
        y = 0.5 * (1 + np.tanh(0.5 * x))  # no overflow for large |x|, unlike 1/(1+exp(-x))
        self._remember(training, y)
        return y

    def backward(self, grad_output):
        (y,) = self._recall()
        return v.float_array(grad_output, "grad_output") * (y * (1 - y))


class Tanh(Layer):
    """The hyperbolic tangent, elementwise, any shape."""

    def forward(self, x, training=True):
        x = v.float_array(x, "x")
        y = np.tanh(x)
        self._remember(training, y)
        return y

    def backward(self, grad_output):
        (y,) = self._recall()
        return v.float_array(grad_output, "grad_output") * (1 - y * y)
