"""Elementwise activations: `ReLU`, `LeakyReLU`, `Sigmoid`, `Tanh`.

In an eval forward inside a container, `ReLU` and `LeakyReLU` overwrite their
input when it is a temporary of that forward (never the caller's array).
`ReLU` runs compiled kernels (`fastconv._kernels.elementwise`): NumPy's
``np.where(x > 0, g, 0)`` branches per element and took 19 ms of a ResNet-18
training step at batch 32 on 64x64 images, against under 1 ms
(``python -m fastconv bench --sections nets``).
"""
import numbers

import numpy as np

from fastconv import _validation as v
from fastconv._threads import num_threads_for
from fastconv.nn.base import Layer

try:
    from fastconv._kernels import elementwise as _kernel
except ImportError:     # not built yet: the NumPy expressions below
    _kernel = None


def _flat(a):
    return np.ravel(a)      # a view of a C-contiguous array, else a contiguous copy


def relu(x):
    """``max(x, 0)`` of a float array as a fresh C-contiguous array (a NaN stays NaN)."""
    out = np.empty(x.shape, x.dtype)
    if _kernel is None:
        np.maximum(x, 0, out=out)
    else:
        _kernel.relu(_flat(x), _flat(out), num_threads_for(x.size))
    return out


def relu_backward(grad_output, y):
    """``grad_output`` where ``y > 0``, else 0 (`y` the forward's output): a fresh array."""
    if _kernel is None or grad_output.dtype != y.dtype or grad_output.shape != y.shape:
        return np.where(y > 0, grad_output, grad_output.dtype.type(0))
    out = np.empty(y.shape, y.dtype)
    _kernel.relu_backward(_flat(grad_output), _flat(y), _flat(out),
                          num_threads_for(y.size))
    return out


def add_relu(a, b):
    """``max(a + b, 0)`` as a fresh array, in one pass (a residual block's output)."""
    if _kernel is None or a.dtype != b.dtype or a.shape != b.shape:
        return relu(np.add(a, b))
    out = np.empty(a.shape, a.dtype)
    _kernel.add_relu(_flat(a), _flat(b), _flat(out),
                     num_threads_for(a.size))
    return out

__all__ = ["ReLU", "LeakyReLU", "Sigmoid", "Tanh"]


class ReLU(Layer):
    """``max(x, 0)``, elementwise, any shape (a NaN stays NaN, as in torch).

    As torch's in-place ReLU, a training forward keeps its output for the
    backward (``grad * (y > 0)``) instead of a mask: the next layer keeps that
    same array as its input, so nothing more is stored. Do not write into the
    output of a training forward before the backward.
    """

    _in_place = True

    def forward(self, x, training=True):
        x = v.float_array(x, "x")
        y = relu(x)
        self._remember(training, y)
        return y

    def _forward_sum(self, a, b, training=True):
        """``forward(a + b)`` in one pass over a and b (a residual block's sum)."""
        if type(self).forward is not ReLU.forward:      # a subclass with its own forward
            return self.forward(np.add(a, b), training)
        a, b = v.float_array(a, "x"), v.float_array(b, "x")
        y = add_relu(a, b)
        self._remember(training, y)
        return y

    def _infer(self, x, owned):
        self._cache = None
        x = v.float_array(x, "x")
        if owned and _kernel is not None and x.flags.c_contiguous:
            _kernel.relu(_flat(x), _flat(x), num_threads_for(x.size))
            return x, True
        if owned:
            return np.maximum(x, 0, out=x), True
        return relu(x), True

    def backward(self, grad_output):
        (y,) = self._recall()
        return relu_backward(self._grad_output(grad_output, y.shape), y)


class LeakyReLU(Layer):
    """``x`` where positive, else ``negative_slope * x`` (as ``torch.nn.LeakyReLU``), any shape.

    Parameters
    ----------
    negative_slope : float
    backend : as in `Conv2D` (accepted for uniformity; the layer is NumPy either way)
    """

    _in_place = True

    def __init__(self, negative_slope=0.01, *, backend=None):
        super().__init__(backend)
        if isinstance(negative_slope, (bool, np.bool_)) or not isinstance(negative_slope, numbers.Real) \
                or not np.isfinite(negative_slope):
            raise ValueError(f"negative_slope must be a finite number, got {negative_slope!r}")
        self.negative_slope = float(negative_slope)

    def forward(self, x, training=True):
        x = v.float_array(x, "x")
        positive = x > 0
        y = np.multiply(x, x.dtype.type(self.negative_slope), out=np.empty_like(x))   # an array, 0-d too
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
        grad_output = self._grad_output(grad_output, positive.shape)
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
        return self._grad_output(grad_output, y.shape) * (y * (1 - y))


class Tanh(Layer):
    """The hyperbolic tangent, elementwise, any shape."""

    def forward(self, x, training=True):
        x = v.float_array(x, "x")
        y = np.tanh(x)
        self._remember(training, y)
        return y

    def backward(self, grad_output):
        (y,) = self._recall()
        return self._grad_output(grad_output, y.shape) * (1 - y * y)
