"""The classifier head: `Linear`, `Flatten`, `Dropout`."""
import contextlib

import numpy as np

from fastconv import _validation as v
from fastconv._threads import blas
from fastconv.nn.base import Layer, _dtype, _initial_weight, _rng

__all__ = ["Linear", "Flatten", "Dropout"]

# Products below this many flops run on one BLAS thread. Right after an OpenMP
# kernel libgomp's workers still spin on the cores, and a threaded BLAS call
# waits for them: ResNet-18's 512 -> 1000 classifier at batch 1 took 4-13 ms
# that way, 0.3 ms on one thread (`python -m fastconv bench --sections nets`).
_SMALL_PRODUCT = 1 << 24


def _blas_for(flops):
    return blas.single_threaded() if flops < _SMALL_PRODUCT else contextlib.nullcontext()


class Linear(Layer):
    """Fully connected layer, ``y = x @ weight.T + bias`` (as ``torch.nn.Linear``).

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    dtype, rng, init, backend : as in `Conv2D`

    ``params``: ``weight`` of shape (out_features, in_features) and ``bias`` of
    shape (out_features,). Input (N, in_features) -> output (N, out_features).
    The products are NumPy matmuls (BLAS with its own thread setting).
    """

    def __init__(self, in_features, out_features, bias=True, *, dtype=np.float32, rng=None, init="he",
                 backend=None):
        super().__init__(backend)
        self.in_features = v.integer(in_features, "in_features", minimum=1)
        self.out_features = v.integer(out_features, "out_features", minimum=1)
        self.dtype = _dtype(dtype)
        self.params["weight"] = _initial_weight(_rng(rng), (self.out_features, self.in_features),
                                                self.in_features, self.out_features, init, self.dtype)
        if v._flag(bias, "bias"):
            self.params["bias"] = np.zeros(self.out_features, dtype=self.dtype)
        self.grads = {k: np.zeros(p.shape, p.dtype) for k, p in self.params.items()}  # calloc: no pages touched

    def forward(self, x, training=True):
        x = self._weighted_input(x, 2)
        if x.shape[1] != self.in_features:
            raise ValueError(f"{self!r} expects x of shape (N, {self.in_features}), got {x.shape}")
        self._remember(training, x)
        with _blas_for(2 * x.shape[0] * self.in_features * self.out_features):
            y = x @ self.params["weight"].T
        if "bias" in self.params:
            y += self.params["bias"]
        return y

    def backward(self, grad_output):
        return self._gradients(grad_output, input_grad=True)

    def _backward_params(self, grad_output):
        self._gradients(grad_output, input_grad=False)

    def _gradients(self, grad_output, input_grad):
        """Fill `grads` from the last forward's input; the input's gradient if asked."""
        (x,) = self._recall()
        grad_output = v.grad_output_array(grad_output, (x.shape[0], self.out_features), self.dtype)
        with _blas_for((4 if input_grad else 2) * x.shape[0] * self.in_features * self.out_features):
            self._set_grads(weight=grad_output.T @ x, bias=grad_output.sum(axis=0))
            return grad_output @ self.params["weight"] if input_grad else None

    def output_shape(self, input_shape):
        if len(input_shape) != 2 or input_shape[1] != self.in_features:
            raise ValueError(f"{self!r} expects input of shape (N, {self.in_features}), got {tuple(input_shape)}")
        return (input_shape[0], self.out_features)

    def __repr__(self):
        bias = "" if "bias" in self.params else ", bias=False"
        return f"Linear({self.in_features}, {self.out_features}{bias})"


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1*d2*...)."""

    _in_place = True

    def forward(self, x, training=True):
        x = np.asarray(x)
        if x.dtype.kind not in "biuf":
            raise TypeError(f"x must be a numeric array, got dtype {x.dtype}")
        if x.ndim < 1:
            raise ValueError(f"x must have a batch axis, got shape {x.shape}")
        self._remember(training, x.shape)
        return x.reshape(self.output_shape(x.shape))

    def backward(self, grad_output):
        (shape,) = self._recall()
        return self._grad_output(grad_output, self.output_shape(shape)).reshape(shape)

    def output_shape(self, input_shape):
        return (input_shape[0], int(np.prod(input_shape[1:], dtype=np.int64)))


class Dropout(Layer):
    """Inverted dropout: in training, zero each value with probability `p` and
    scale the rest by ``1 / (1 - p)``; the identity with ``training=False``.

    Parameters
    ----------
    p : float in [0, 1]
    rng : None, int or numpy.random.Generator
    """

    _in_place = True

    def __init__(self, p=0.5, *, rng=None):
        super().__init__()
        if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, float, np.floating, np.integer)) \
                or not 0 <= p <= 1:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self.rng = _rng(rng)

    def forward(self, x, training=True):
        x = v.float_array(x, "x")
        if not training or self.p == 0:
            self._cache = None if not training else (None, x.shape)     # no mask: the identity
            return x.copy()
        keep = self.rng.random(x.shape) >= self.p
        scale = np.zeros((), x.dtype) if self.p == 1 else x.dtype.type(1 / (1 - self.p))
        mask = keep * scale
        self._remember(training, mask, x.shape)
        return x * mask

    def _infer(self, x, owned):
        # the identity at eval: hand the input on, no copy
        self._cache = None
        return v.float_array(x, "x"), owned

    def backward(self, grad_output):
        mask, shape = self._recall()
        grad_output = self._grad_output(grad_output, shape)
        return grad_output.copy() if mask is None else grad_output * mask

    def __repr__(self):
        return f"Dropout(p={self.p})"
