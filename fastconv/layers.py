"""Layer classes on top of the public ops: forward, backward, params and grads.

Every layer has ``forward(x, training=True) -> y`` and
``backward(grad_output) -> grad_input``; ``params`` and ``grads`` are dicts of
arrays with the same keys (empty for layers without weights). ``backward``
overwrites ``grads`` (no accumulation) and needs the cache that
``forward(..., training=True)`` keeps; ``training=False`` keeps no cache and
turns dropout off.

The ops come from a backend module: `fastconv` by default, or any module with
the same functions, e.g. `fastconv.reference` (pure NumPy) to compare speeds::

    from fastconv import reference
    model.set_backend(reference)
"""
import numpy as np

import fastconv
from fastconv import _validation as v

__all__ = ["Layer", "Conv2D", "Linear", "MaxPool2D", "AvgPool2D", "ReLU", "Sigmoid", "Flatten",
           "Dropout", "Sequential"]


def _dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in v.FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def _initial_weight(rng, shape, fan_in, fan_out, init, dtype):
    """He (normal, std sqrt(2/fan_in)) for ReLU nets, or Glorot (uniform, limit sqrt(6/(fan_in+fan_out)))."""
    v.choice(init, "init", ("he", "glorot"))
    if init == "he":
        w = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
    else:
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        w = rng.uniform(-limit, limit, size=shape)
    return w.astype(dtype)


def _pool_size(n, kernel, stride, padding, dilation, ceil_mode, axis):
    out = v.window_count(n, kernel, stride, padding, dilation, ceil_mode)
    if out < 1:
        raise ValueError(f"pooling window {kernel} (dilation {dilation}) is larger than the padded input "
                         f"{n + 2 * padding} along {axis}")
    return out


class Layer:
    """Base class: a layer without parameters whose forward is the identity."""

    def __init__(self, backend=None):
        self.params = {}
        self.grads = {}
        self._backend = backend
        self._cache = None

    # -- the backend ---------------------------------------------------------
    @property
    def backend(self):
        """The module the ops come from (`fastconv` unless set otherwise)."""
        return fastconv if self._backend is None else self._backend

    def set_backend(self, backend):
        """Use the ops of `backend` (a module such as `fastconv.reference`); returns self."""
        self._backend = backend
        return self

    # -- the interface -------------------------------------------------------
    def forward(self, x, training=True):
        """The layer's output for the batch `x`; with `training`, keep what `backward` needs."""
        return x

    def backward(self, grad_output):
        """The gradient for the input of the last training `forward`, given the
        gradient for its output; fills `grads` with the parameters' gradients."""
        return grad_output

    def __call__(self, x, training=True):
        return self.forward(x, training)

    def output_shape(self, input_shape):
        """Shape of ``forward(x)`` for an `x` of shape `input_shape` (batch axis included)."""
        return tuple(input_shape)

    def _weighted_input(self, x, ndim):
        """`x` checked against a layer with weights: `ndim`-D, of the weights' dtype."""
        x = v.float_array(x, "x", ndim=ndim)
        if x.dtype != self.dtype:
            raise TypeError(f"x has dtype {x.dtype} but {self!r} has {self.dtype} weights; "
                            f"convert one of them (mixed dtypes are not cast silently)")
        return x

    def _remember(self, training, *values):
        self._cache = values if training else None

    def _recall(self):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward needs a preceding forward(x, training=True)")
        return self._cache

    def _set_grads(self, **grads):
        for key, value in grads.items():
            if key in self.params:
                self.grads[key] = value

    # -- weights -------------------------------------------------------------
    def num_params(self):
        return int(sum(p.size for p in self.params.values()))

    def save(self, path):
        """Write the parameters to `path` as a ``.npz`` archive (keys as in `params`)."""
        np.savez(path, **self.params)

    def load(self, path):
        """Read parameters written by `save` into this model's arrays, in place.

        The archive must hold exactly the keys of `params`, with the same shapes;
        values are converted to each parameter's dtype.
        """
        params = self.params
        with np.load(path) as data:
            missing = sorted(set(params) - set(data.files))
            extra = sorted(set(data.files) - set(params))
            if missing or extra:
                raise ValueError(f"{path}: parameters do not match this model (missing {missing}, unexpected {extra})")
            for key, p in params.items():
                if data[key].shape != p.shape:
                    raise ValueError(f"{path}: parameter {key!r} has shape {data[key].shape}, "
                                     f"the model expects {p.shape}")
            for key, p in params.items():
                np.copyto(p, data[key], casting="same_kind")
        return self

    def __repr__(self):
        return f"{type(self).__name__}()"


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
        self.params["weight"] = _initial_weight(np.random.default_rng(rng), shape, fan_in, fan_out, init,
                                                self.dtype)
        if bias:
            self.params["bias"] = np.zeros(self.out_channels, dtype=self.dtype)
        self.grads = {k: np.zeros_like(p) for k, p in self.params.items()}

    def _args(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)

    def forward(self, x, training=True):
        x = self._weighted_input(x, 4)
        self._remember(training, x)
        return self.backend.conv2d(x, self.params["weight"], self.params.get("bias"), **self._args())

    def backward(self, grad_output):
        (x,) = self._recall()
        grad_x, grad_w, grad_b = self.backend.conv2d_backward(grad_output, x, self.params["weight"],
                                                              **self._args())
        self._set_grads(weight=grad_w, bias=grad_b)
        return grad_x

    def output_shape(self, input_shape):
        N, C, H, W = input_shape
        if C != self.in_channels:
            raise ValueError(f"{self!r} expects {self.in_channels} input channels, got input shape {input_shape}")
        g = v.conv_geometry((H, W), self.kernel_size, self.stride, self.padding, self.dilation)
        return (N, self.out_channels, g.out_h, g.out_w)

    def __repr__(self):
        extra = "".join(f", {k}={val!r}" for k, val, default in (
            ("stride", self.stride, (1, 1)), ("padding", self.padding, 0), ("dilation", self.dilation, (1, 1)),
            ("groups", self.groups, 1), ("bias", "bias" in self.params, True)) if val != default)
        return f"Conv2D({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}{extra})"


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
        self.params["weight"] = _initial_weight(np.random.default_rng(rng), (self.out_features, self.in_features),
                                                self.in_features, self.out_features, init, self.dtype)
        if bias:
            self.params["bias"] = np.zeros(self.out_features, dtype=self.dtype)
        self.grads = {k: np.zeros_like(p) for k, p in self.params.items()}

    def forward(self, x, training=True):
        x = self._weighted_input(x, 2)
        if x.shape[1] != self.in_features:
            raise ValueError(f"{self!r} expects x of shape (N, {self.in_features}), got {x.shape}")
        self._remember(training, x)
        y = x @ self.params["weight"].T
        if "bias" in self.params:
            y += self.params["bias"]
        return y

    def backward(self, grad_output):
        (x,) = self._recall()
        grad_output = v.grad_output_array(grad_output, (x.shape[0], self.out_features), self.dtype)
        self._set_grads(weight=grad_output.T @ x, bias=grad_output.sum(axis=0))
        return grad_output @ self.params["weight"]

    def output_shape(self, input_shape):
        if len(input_shape) != 2 or input_shape[1] != self.in_features:
            raise ValueError(f"{self!r} expects input of shape (N, {self.in_features}), got {tuple(input_shape)}")
        return (input_shape[0], self.out_features)

    def __repr__(self):
        bias = "" if "bias" in self.params else ", bias=False"
        return f"Linear({self.in_features}, {self.out_features}{bias})"


class _Pool2D(Layer):
    def __init__(self, kernel_size, stride, padding, dilation, ceil_mode, backend):
        super().__init__(backend)
        self.kernel_size = v.pair(kernel_size, "kernel_size", minimum=1)
        self.stride = self.kernel_size if stride is None else v.pair(stride, "stride", minimum=1)
        self.padding = v.pair(padding, "padding", minimum=0)
        self.dilation = v.pair(dilation, "dilation", minimum=1)
        self.ceil_mode = bool(ceil_mode)

    def output_shape(self, input_shape):
        N, C, H, W = input_shape
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
        self.count_include_pad = bool(count_include_pad)
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


class ReLU(Layer):
    """``max(x, 0)``, elementwise, any shape."""

    def forward(self, x, training=True):
        x = v.float_array(x, "x")
        self._remember(training, x > 0)
        return np.maximum(x, 0)

    def backward(self, grad_output):
        (positive,) = self._recall()
        grad_output = v.float_array(grad_output, "grad_output")
        return np.where(positive, grad_output, grad_output.dtype.type(0))


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


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1*d2*...)."""

    def forward(self, x, training=True):
        x = np.asarray(x)
        self._remember(training, x.shape)
        return x.reshape(self.output_shape(x.shape))

    def backward(self, grad_output):
        (shape,) = self._recall()
        return np.asarray(grad_output).reshape(shape)

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

    def __init__(self, p=0.5, *, rng=None):
        super().__init__()
        if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, float, np.floating, np.integer)) \
                or not 0 <= p <= 1:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self.rng = np.random.default_rng(rng)

    def forward(self, x, training=True):
        x = v.float_array(x, "x")
        if not training or self.p == 0:
            self._cache = None if not training else (None,)
            return x.copy()
        keep = self.rng.random(x.shape) >= self.p
        scale = np.zeros((), x.dtype) if self.p == 1 else x.dtype.type(1 / (1 - self.p))
        mask = keep * scale
        self._remember(training, mask)
        return x * mask

    def backward(self, grad_output):
        (mask,) = self._recall()
        grad_output = v.float_array(grad_output, "grad_output")
        return grad_output.copy() if mask is None else grad_output * mask

    def __repr__(self):
        return f"Dropout(p={self.p})"


class Sequential(Layer):
    """Layers applied in order; ``.layers`` is the list.

    ``params``/``grads`` gather the layers' arrays under keys ``"<index>.<name>"``
    (e.g. ``"0.weight"``), so optimisers and ``save``/``load`` see one flat dict;
    the arrays are the layers' own (optimisers update them in place).
    """

    def __init__(self, *layers):
        self._backend = None
        self._cache = None
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential takes Layer instances, got {type(layer).__name__} at position {i}")
        self.layers = list(layers)

    @property
    def params(self):
        return {f"{i}.{k}": p for i, layer in enumerate(self.layers) for k, p in layer.params.items()}

    @property
    def grads(self):
        return {f"{i}.{k}": g for i, layer in enumerate(self.layers) for k, g in layer.grads.items()}

    def set_backend(self, backend):
        for layer in self.layers:
            layer.set_backend(backend)
        self._backend = backend
        return self

    def forward(self, x, training=True):
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def backward(self, grad_output):
        for layer in reversed(self.layers):
            grad_output = layer.backward(grad_output)
        return grad_output

    def output_shape(self, input_shape):
        for layer in self.layers:
            input_shape = layer.output_shape(input_shape)
        return input_shape

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, index):
        return self.layers[index]

    def __iter__(self):
        return iter(self.layers)

    def summary_rows(self, input_shape):
        """(name, output shape, parameters, activation values) per layer, input first.

        `input_shape` is one example's shape, e.g. ``(3, 224, 224)``; shapes are
        reported without the batch axis.
        """
        shape = (1,) + tuple(v.integer(n, "input_shape", minimum=1) for n in input_shape)
        rows = [("input", shape[1:], 0, int(np.prod(shape)))]
        for layer in self.layers:
            shape = layer.output_shape(shape)
            rows.append((repr(layer), shape[1:], layer.num_params(), int(np.prod(shape))))
        return rows

    def summary(self, input_shape, dtype=None):
        """Print, per layer, the output shape, the number of parameters and the
        activation memory for one example of shape `input_shape` (without the
        batch axis), and the totals: the accounting usually done by hand for VGGNet.

        Activation memory is counted in the dtype of the model's weights (or
        `dtype`); training keeps roughly twice the forward total (values and
        their gradients).
        """
        if dtype is None:
            dtype = next((p.dtype for p in self.params.values()), np.dtype(np.float32))
        itemsize = np.dtype(dtype).itemsize
        rows = self.summary_rows(input_shape)
        name_w = max(24, max(len(r[0]) for r in rows) + 2)
        lines = [f"{'layer':<{name_w}}{'output shape':<18}{'parameters':>14}{'activations':>14}{'memory':>12}"]
        for name, shape, n_params, n_act in rows:
            lines.append(f"{name:<{name_w}}{str(shape):<18}{n_params:>14,}{n_act:>14,}"
                         f"{_bytes(n_act * itemsize):>12}")
        total_params = sum(r[2] for r in rows)
        total_act = sum(r[3] for r in rows)
        lines.append("-" * len(lines[0]))
        lines.append(f"{'total':<{name_w}}{'':<18}{total_params:>14,}{total_act:>14,}"
                     f"{_bytes(total_act * itemsize):>12}")
        lines.append(f"parameters: {total_params:,} ({_bytes(total_params * itemsize)} in {np.dtype(dtype).name}); "
                     f"activations per example: {total_act:,} values ({_bytes(total_act * itemsize)}, "
                     f"about x2 for a training pass)")
        print("\n".join(lines))

    def __repr__(self):
        inner = "".join(f"\n  ({i}) {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)"


def _bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
