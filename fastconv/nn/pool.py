"""Pooling layers: `MaxPool2D`, `AvgPool2D`, `AdaptiveAvgPool2D`, `AdaptiveMaxPool2D`."""
import numpy as np

from fastconv import _validation as v
from fastconv.nn.base import Layer, _nchw

__all__ = ["MaxPool2D", "AvgPool2D", "AdaptiveAvgPool2D", "AdaptiveMaxPool2D"]


def _pool_size(n, kernel, stride, padding, dilation, ceil_mode, axis):
    out = v.window_count(n, kernel, stride, padding, dilation, ceil_mode)
    if out < 1:
        raise ValueError(f"pooling window {kernel} (dilation {dilation}) is larger than the padded input "
                         f"{n + 2 * padding} along {axis}")
    return out


class _Pool2D(Layer):
    def __init__(self, kernel_size, stride, padding, dilation, ceil_mode, backend):
        super().__init__(backend)
        self.kernel_size = v.pair(kernel_size, "kernel_size", minimum=1)
        self.stride = self.kernel_size if stride is None else v.pair(stride, "stride", minimum=1)
        self.padding = v.pair(padding, "padding", minimum=0)
        self.dilation = v.pair(dilation, "dilation", minimum=1)
        self.ceil_mode = v._flag(ceil_mode, "ceil_mode")

    def output_shape(self, input_shape):
        N, C, H, W = _nchw(self, input_shape)
        return (N, C) + tuple(_pool_size(n, k, s, p, d, self.ceil_mode, axis) for n, k, s, p, d, axis in zip(
            (H, W), self.kernel_size, self.stride, self.padding, self.dilation, ("height", "width")))

    def _repr_args(self):
        extra = "".join(f", {k}={val!r}" for k, val, default in (
            ("stride", self.stride, self.kernel_size), ("padding", self.padding, (0, 0)),
            ("dilation", self.dilation, (1, 1)), ("ceil_mode", self.ceil_mode, False)) if val != default)
        return f"kernel_size={self.kernel_size}{extra}"


class MaxPool2D(_Pool2D):
    """2-D max pooling (as ``torch.nn.MaxPool2d``); the gradient goes to each window's maximum.

    Parameters
    ----------
    kernel_size : int or pair of ints
    stride : int or pair of ints, optional
        Defaults to `kernel_size`.
    padding : int or pair of ints
        Implicit -inf padding on both sides.
    dilation : int or pair of ints
    ceil_mode : bool
    backend : module, optional
        Where `max_pool2d` / `max_pool2d_backward` come from (default `fastconv`).
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *, backend=None):
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode, backend)

    def forward(self, x, training=True):
        args = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, ceil_mode=self.ceil_mode)
        if not training:
            self._cache = None
            return self.backend.max_pool2d(x, self.kernel_size, **args)
        y, indices = self.backend.max_pool2d(x, self.kernel_size, return_indices=True, **args)
        self._remember(training, indices, np.shape(x))
        return y

    def backward(self, grad_output):
        indices, input_shape = self._recall()
        return self.backend.max_pool2d_backward(grad_output, indices, input_shape)

    def __repr__(self):
        return f"MaxPool2D({self._repr_args()})"


class AvgPool2D(_Pool2D):
    """2-D average pooling (as ``torch.nn.AvgPool2d``).

    Parameters
    ----------
    kernel_size, stride, padding, ceil_mode : as in `MaxPool2D`
    count_include_pad : bool
        Whether the zero padding counts in the divisor.
    divisor_override : int, optional
        Divide every window sum by this instead.
    backend : module, optional
        Where `avg_pool2d` / `avg_pool2d_backward` come from (default `fastconv`).
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None, *, backend=None):
        super().__init__(kernel_size, stride, padding, 1, ceil_mode, backend)
        self.count_include_pad = v._flag(count_include_pad, "count_include_pad")
        self.divisor_override = (None if divisor_override is None
                                 else v.integer(divisor_override, "divisor_override", minimum=1))

    def _args(self):
        return dict(stride=self.stride, padding=self.padding, ceil_mode=self.ceil_mode,
                    count_include_pad=self.count_include_pad, divisor_override=self.divisor_override)

    def forward(self, x, training=True):
        self._remember(training, np.shape(x))
        return self.backend.avg_pool2d(x, self.kernel_size, **self._args())

    def backward(self, grad_output):
        (input_shape,) = self._recall()
        return self.backend.avg_pool2d_backward(grad_output, input_shape, self.kernel_size, **self._args())

    def __repr__(self):
        extra = "" if self.count_include_pad else ", count_include_pad=False"
        extra += "" if self.divisor_override is None else f", divisor_override={self.divisor_override}"
        return f"AvgPool2D({self._repr_args()}{extra})"


def _adaptive_size(output_size):
    """`output_size` checked: an int, or a pair of ints or None (None keeps the input's size)."""
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != 2:
            raise ValueError(f"output_size must be an int or a pair, got {output_size!r}")
        return tuple(None if o is None else v.integer(o, "output_size", minimum=1) for o in output_size)
    o = v.integer(output_size, "output_size", minimum=1)
    return (o, o)


class _AdaptivePool2D(Layer):
    def __init__(self, output_size, backend):
        super().__init__(backend)
        self.output_size = _adaptive_size(output_size)

    def output_shape(self, input_shape):
        *lead, H, W = input_shape
        return tuple(lead) + tuple(n if o is None else o for o, n in zip(self.output_size, (H, W)))

    def _stores(self, input_shape, output_shape):
        return tuple(input_shape) != tuple(output_shape)

    def _infer(self, x, owned):
        # pooled to its own size, every window is one element: hand the input on
        self._cache = None
        x = v.float_array(x, "x")
        if x.ndim in (3, 4) and self.output_shape(x.shape) == x.shape:
            return x, owned
        return self.forward(x, training=False), True

    def __repr__(self):
        size = self.output_size
        return f"{type(self).__name__}(output_size={size[0] if size[0] == size[1] else size})"


class AdaptiveAvgPool2D(_AdaptivePool2D):
    """2-D adaptive average pooling (as ``torch.nn.AdaptiveAvgPool2d``): any input
    (N, C, H, W) to (N, C, Ho, Wo), with torch's windows.

    Parameters
    ----------
    output_size : int, or pair of ints or None
        (Ho, Wo); a None element keeps the input's size along that axis.
    backend : module, optional
        Where `adaptive_avg_pool2d` and its backward come from (default `fastconv`).
    """

    def __init__(self, output_size, *, backend=None):
        super().__init__(output_size, backend)

    def forward(self, x, training=True):
        self._remember(training, np.shape(x))
        return self.backend.adaptive_avg_pool2d(x, self.output_size)

    def backward(self, grad_output):
        (input_shape,) = self._recall()
        return self.backend.adaptive_avg_pool2d_backward(grad_output, input_shape)


class AdaptiveMaxPool2D(_AdaptivePool2D):
    """2-D adaptive max pooling (as ``torch.nn.AdaptiveMaxPool2d``); the gradient
    goes to each window's maximum.

    Parameters
    ----------
    output_size : int, or pair of ints or None
        (Ho, Wo); a None element keeps the input's size along that axis.
    backend : module, optional
        Where `adaptive_max_pool2d` and its backward come from (default `fastconv`).
    """

    def __init__(self, output_size, *, backend=None):
        super().__init__(output_size, backend)

    def forward(self, x, training=True):
        if not training:
            self._cache = None
            return self.backend.adaptive_max_pool2d(x, self.output_size)
        y, indices = self.backend.adaptive_max_pool2d(x, self.output_size, return_indices=True)
        self._remember(training, indices, np.shape(x))
        return y

    def backward(self, grad_output):
        indices, input_shape = self._recall()
        return self.backend.adaptive_max_pool2d_backward(grad_output, indices, input_shape)
