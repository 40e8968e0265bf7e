"""Batch normalisation: `BatchNorm2D`."""
import numbers

import numpy as np

from fastconv import _validation as v
from fastconv.nn.base import Layer, _dtype

__all__ = ["BatchNorm2D"]


class BatchNorm2D(Layer):
    """Batch normalisation over (N, C, H, W) (as ``torch.nn.BatchNorm2d``).

    Training forwards normalise with the batch's mean and biased variance and
    update the running statistics in place exactly as torch does
    (``running = (1 - momentum) * running + momentum * batch``, with the unbiased
    batch variance, and ``num_batches_tracked += 1``); eval forwards normalise
    with the running statistics. Without running statistics
    (``track_running_stats=False``) both use the batch's.

    Parameters
    ----------
    num_features : int
        C, the number of channels.
    eps : float
        Added to the variance before its square root.
    momentum : float or None
        Weight of the batch in the running statistics; None makes them the
        cumulative average of all batches so far (factor ``1 / num_batches_tracked``).
    affine : bool
        Whether the layer has a learned per-channel scale ``weight`` (ones) and
        shift ``bias`` (zeros).
    track_running_stats : bool
        Whether the layer keeps the buffers ``running_mean`` (zeros),
        ``running_var`` (ones) and ``num_batches_tracked`` (a 0-d int64 array).
    dtype : float32 (default) or float64
    backend : module, optional
        Where `batch_norm2d` / `batch_norm2d_backward` come from (default `fastconv`).
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, *,
                 dtype=np.float32, backend=None):
        super().__init__(backend)
        self.num_features = C = v.integer(num_features, "num_features", minimum=1)
        if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, numbers.Real) or not eps >= 0:
            raise ValueError(f"eps must be a number >= 0, got {eps!r}")
        self.eps = float(eps)
        if momentum is not None:
            if isinstance(momentum, (bool, np.bool_)) or not isinstance(momentum, numbers.Real) \
                    or not np.isfinite(momentum):
                raise ValueError(f"momentum must be a number or None, got {momentum!r}")
            momentum = float(momentum)
        self.momentum = momentum
        self.affine = v._flag(affine, "affine")
        self.track_running_stats = v._flag(track_running_stats, "track_running_stats")
        self.dtype = _dtype(dtype)
        if self.affine:
            self.params["weight"] = np.ones(C, dtype=self.dtype)
            self.params["bias"] = np.zeros(C, dtype=self.dtype)
        if self.track_running_stats:
            self.buffers["running_mean"] = np.zeros(C, dtype=self.dtype)
            self.buffers["running_var"] = np.ones(C, dtype=self.dtype)
            self.buffers["num_batches_tracked"] = np.zeros((), dtype=np.int64)
        self.grads = {k: np.zeros(p.shape, p.dtype) for k, p in self.params.items()}  # calloc: no pages touched

    def _input(self, x):
        x = self._weighted_input(x, 4)
        if x.shape[1] != self.num_features:
            raise ValueError(f"{self!r} expects x of shape (N, {self.num_features}, H, W), got {x.shape}")
        return x

    def forward(self, x, training=True):
        x = self._input(x)
        weight, bias = self.params.get("weight"), self.params.get("bias")
        mean, var = self.buffers.get("running_mean"), self.buffers.get("running_var")
        if training and self.track_running_stats:
            count = self.buffers["num_batches_tracked"]
            factor = 1.0 / (float(count) + 1) if self.momentum is None else self.momentum
            y = self.backend.batch_norm2d(x, mean, var, weight, bias, training=True, momentum=factor,
                                          eps=self.eps)
            count += 1          # counted once the batch went in (an error leaves all as it was)
        else:
            # eval with running statistics, or batch statistics without them
            batch = mean is None
            y = self.backend.batch_norm2d(x, None if batch else mean, None if batch else var, weight, bias,
                                          training=batch, eps=self.eps)
        self._remember(training, x)
        return y

    def scale_shift(self):
        """The eval-mode map as ``y = scale * x + shift`` per channel: two (C,) float64
        arrays from the running statistics (what folding into a convolution uses)."""
        if not self.track_running_stats:
            raise ValueError(f"{self!r} has no running statistics (track_running_stats=False)")
        scale = 1.0 / np.sqrt(self.buffers["running_var"].astype(np.float64) + self.eps)
        if "weight" in self.params:
            scale = scale * self.params["weight"]
        shift = -self.buffers["running_mean"] * scale
        if "bias" in self.params:
            shift = shift + self.params["bias"]
        return scale, shift

    def _infer(self, x, owned):
        if not (owned and self.track_running_stats):
            return super()._infer(x, owned)
        x = self._input(x)
        self._cache = None
        scale, shift = self.scale_shift()
        x *= scale.astype(x.dtype)[:, None, None]
        x += shift.astype(x.dtype)[:, None, None]
        return x, True

    def backward(self, grad_output):
        (x,) = self._recall()
        grad_x, grad_w, grad_b = self.backend.batch_norm2d_backward(grad_output, x, self.params.get("weight"),
                                                                    self.eps, training=True)
        self._set_grads(weight=grad_w, bias=grad_b)
        return grad_x

    def output_shape(self, input_shape):
        if len(input_shape) != 4 or input_shape[1] != self.num_features:
            raise ValueError(f"{self!r} expects input of shape (N, {self.num_features}, H, W), "
                             f"got {tuple(input_shape)}")
        return tuple(input_shape)

    def __repr__(self):
        extra = "".join(f", {k}={val!r}" for k, val, default in (
            ("eps", self.eps, 1e-5), ("momentum", self.momentum, 0.1), ("affine", self.affine, True),
            ("track_running_stats", self.track_running_stats, True)) if val != default)
        return f"BatchNorm2D({self.num_features}{extra})"
