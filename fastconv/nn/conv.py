"""Convolution layers: `Conv2D` and `ConvTranspose2D`."""
import numpy as np

import fastconv
from fastconv import _validation as v
from fastconv.convolution import _conv2d_eval, _conv2d_train, _conv2d_train_backward
from fastconv.nn.base import Layer, _dtype, _initial_weight, _nchw, _rng

__all__ = ["Conv2D", "ConvTranspose2D"]


class Conv2D(Layer):
    """2-D convolution layer (cross-correlation, as ``torch.nn.Conv2d``).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, dilation : int or pair of ints
    padding : int, pair of ints, ``"valid"`` or ``"same"``
    groups : int
    bias : bool
    dtype : float32 (default) or float64
    rng : None, int or numpy.random.Generator
        Seed or generator for the initial weights.
    init : {"he", "glorot"}
        He normal (for ReLU networks, default) or Glorot uniform initial
        weights; the bias starts at zero.
    backend : module, optional
        Where `conv2d` / `conv2d_backward` come from (default `fastconv`).

    ``params``: ``weight`` of shape (out_channels, in_channels // groups, kh, kw)
    and ``bias`` of shape (out_channels,). Input (N, C, H, W) -> output (N, K, Ho, Wo).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, *, dtype=np.float32, rng=None, init="he", backend=None):
        super().__init__(backend)
        self.in_channels = v.integer(in_channels, "in_channels", minimum=1)
        self.out_channels = v.integer(out_channels, "out_channels", minimum=1)
        self.kernel_size = v.pair(kernel_size, "kernel_size", minimum=1)
        self.stride = v.pair(stride, "stride", minimum=1)
        self.dilation = v.pair(dilation, "dilation", minimum=1)
        v.conv_padding(padding, self.kernel_size, self.stride, self.dilation)
        self.padding = padding
        self.groups = v.groups_of(groups, self.in_channels, self.out_channels)
        self.dtype = _dtype(dtype)
        kh, kw = self.kernel_size
        shape = (self.out_channels, self.in_channels // self.groups, kh, kw)
        fan_in = shape[1] * kh * kw
        fan_out = self.out_channels // self.groups * kh * kw
        self.params["weight"] = _initial_weight(_rng(rng), shape, fan_in, fan_out, init,
                                                self.dtype)
        if v._flag(bias, "bias"):
            self.params["bias"] = np.zeros(self.out_channels, dtype=self.dtype)
        self.grads = {k: np.zeros(p.shape, p.dtype) for k, p in self.params.items()}  # calloc: no pages touched
        self._prepared = {}
        self._saved = {}

    def _args(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)

    def forward(self, x, training=True):
        if not training:
            return self._eval_forward(x, self.params["weight"], self.params.get("bias"))
        self._prepared = {}          # the parameters are about to change
        x = self._weighted_input(x, 4)
        self._remember(training, x)
        if self.backend is not fastconv:
            return self.backend.conv2d(x, self.params["weight"], self.params.get("bias"), **self._args())
        # the weights as the backward will run them too, kept for it in _saved
        return _conv2d_train(x, self.params["weight"], self.params.get("bias"), self.stride, self.padding,
                             self.dilation, self.groups, self._saved)

    def _eval_forward(self, x, weight, bias, relu=False):
        """Eval forward with `weight` and `bias` (the layer's own, or batch norm folded
        in), and with `relu` a ReLU fused into the convolution's store. The weights in
        the layout the chosen algorithm runs are kept in ``_prepared`` while they stay
        the same (see `Layer.clear_eval_cache`)."""
        x = self._weighted_input(x, 4)
        self._cache = None
        self._saved = {}
        if self.backend is not fastconv:      # another module's ops (fastconv.reference): unfused
            y = self.backend.conv2d(x, weight, bias, **self._args())
            return np.maximum(y, 0, out=y) if relu else y
        return _conv2d_eval(x, weight, bias, self.stride, self.padding, self.dilation, self.groups, relu,
                            self._prepared)

    def _clear_folded(self):
        self._prepared = {}

    def backward(self, grad_output):
        return self._gradients(grad_output, input_grad=True)

    def _backward_params(self, grad_output):
        self._gradients(grad_output, input_grad=False)

    def _gradients(self, grad_output, input_grad):
        (x,) = self._recall()
        if self.backend is not fastconv:
            grad_x, grad_w, grad_b = self.backend.conv2d_backward(grad_output, x, self.params["weight"],
                                                                  **self._args())
        else:
            grad_x, grad_w, grad_b = _conv2d_train_backward(
                grad_output, x, self.params["weight"], self.stride, self.padding, self.dilation, self.groups,
                self._saved, input_grad=input_grad, bias_grad="bias" in self.params)
        self._saved = {}
        self._set_grads(weight=grad_w, bias=grad_b)
        return grad_x

    def output_shape(self, input_shape):
        N, C, H, W = _nchw(self, input_shape)
        if C != self.in_channels:
            raise ValueError(f"{self!r} expects {self.in_channels} input channels, got input shape {input_shape}")
        g = v.conv_geometry((H, W), self.kernel_size, self.stride, self.padding, self.dilation)
        return (N, self.out_channels, g.out_h, g.out_w)

    def __repr__(self):
        extra = "".join(f", {k}={val!r}" for k, val, default in (
            ("stride", self.stride, (1, 1)), ("padding", self.padding, 0), ("dilation", self.dilation, (1, 1)),
            ("groups", self.groups, 1), ("bias", "bias" in self.params, True)) if val != default)
        return f"Conv2D({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}{extra})"


class ConvTranspose2D(Layer):
    """2-D transposed convolution layer (as ``torch.nn.ConvTranspose2d``): the
    gradient of a `Conv2D` with respect to its input, used to upsample.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding, dilation : int or pair of ints
        Those of the convolution whose input gradient this is.
    output_padding : int or pair of ints
        Rows/columns added at the bottom/right of the output; smaller than
        either the stride or the dilation along each axis.
    groups : int
    bias : bool
    dtype, rng, init, backend : as in `Conv2D`

    ``params``: ``weight`` of shape (in_channels, out_channels // groups, kh, kw)
    and ``bias`` of shape (out_channels,). Input (N, C, H, W) -> output
    (N, K, Ho, Wo) with ``Ho = (H - 1) * stride - 2 * padding + dilation * (kh - 1)
    + output_padding + 1``, likewise ``Wo``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, *, dtype=np.float32, rng=None, init="he", backend=None):
        super().__init__(backend)
        self.in_channels = v.integer(in_channels, "in_channels", minimum=1)
        self.out_channels = v.integer(out_channels, "out_channels", minimum=1)
        self.kernel_size = v.pair(kernel_size, "kernel_size", minimum=1)
        self.stride = v.pair(stride, "stride", minimum=1)
        if isinstance(padding, str):
            raise TypeError(f"padding must be an int or a pair of ints for ConvTranspose2D, got {padding!r}")
        self.padding = v.pair(padding, "padding", minimum=0)
        self.output_padding = v.pair(output_padding, "output_padding", minimum=0)
        self.dilation = v.pair(dilation, "dilation", minimum=1)
        for op, s, d in zip(self.output_padding, self.stride, self.dilation):
            if op >= s and op >= d:
                raise ValueError(f"output_padding {self.output_padding} must be smaller than either stride "
                                 f"{self.stride} or dilation {self.dilation}")
        self.groups = v.groups_of(groups, self.in_channels, self.out_channels)
        self.dtype = _dtype(dtype)
        kh, kw = self.kernel_size
        shape = (self.in_channels, self.out_channels // self.groups, kh, kw)
        fan_in = shape[1] * kh * kw          # torch's fan_in for this weight layout
        fan_out = self.in_channels // self.groups * kh * kw
        self.params["weight"] = _initial_weight(_rng(rng), shape, fan_in, fan_out, init,
                                                self.dtype)
        if v._flag(bias, "bias"):
            self.params["bias"] = np.zeros(self.out_channels, dtype=self.dtype)
        self.grads = {k: np.zeros(p.shape, p.dtype) for k, p in self.params.items()}  # calloc: no pages touched

    def _args(self):
        return dict(stride=self.stride, padding=self.padding, output_padding=self.output_padding,
                    groups=self.groups, dilation=self.dilation)

    def forward(self, x, training=True):
        x = self._weighted_input(x, 4)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"{self!r} expects {self.in_channels} input channels, got x of shape {x.shape}")
        self._remember(training, x)
        return self.backend.conv_transpose2d(x, self.params["weight"], self.params.get("bias"), **self._args())

    def backward(self, grad_output):
        (x,) = self._recall()
        grad_x, grad_w, grad_b = self.backend.conv_transpose2d_backward(grad_output, x, self.params["weight"],
                                                                        **self._args())
        self._set_grads(weight=grad_w, bias=grad_b)
        return grad_x

    def output_shape(self, input_shape):
        N, C, H, W = _nchw(self, input_shape)
        if C != self.in_channels:
            raise ValueError(f"{self!r} expects {self.in_channels} input channels, got input shape {input_shape}")
        out = tuple((n - 1) * s - 2 * p + d * (k - 1) + op + 1 for n, s, p, d, k, op in zip(
            (H, W), self.stride, self.padding, self.dilation, self.kernel_size, self.output_padding))
        if min(out) < 1:
            raise ValueError(f"{self!r} gives an output size {out} below 1 for input shape {tuple(input_shape)}")
        return (N, self.out_channels) + out

    def __repr__(self):
        extra = "".join(f", {k}={val!r}" for k, val, default in (
            ("stride", self.stride, (1, 1)), ("padding", self.padding, (0, 0)),
            ("output_padding", self.output_padding, (0, 0)), ("groups", self.groups, 1),
            ("bias", "bias" in self.params, True), ("dilation", self.dilation, (1, 1))) if val != default)
        return f"ConvTranspose2D({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}{extra})"
