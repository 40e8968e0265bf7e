"""Containers: `Sequential` (children in order) and `Residual` (``main(x) + shortcut(x)``).

In an eval forward (``training=False``) containers run their children without
keeping anything for backward, fold each `BatchNorm2D` that follows a `Conv2D`
into that convolution's weights and bias (cached until the parameters change),
fuse a `ReLU` that follows the convolution (or its batch norm) into the
convolution's store, so that its output is written once, and let ReLU and batch
norm work in place on the temporaries of the forward, so that only the live
activations are allocated.
"""
from collections import OrderedDict

import numpy as np

from fastconv.nn.activation import ReLU
from fastconv.nn.base import Layer
from fastconv.nn.conv import Conv2D
from fastconv.nn.norm import BatchNorm2D

__all__ = ["Sequential", "Residual"]


class _Container(Layer):
    """A layer made of child layers: its params, grads and buffers are theirs, dotted."""

    def _setup(self):
        self._backend = None
        self._folded = {}
        self._cache = None     # last: marks the layer as built (see Layer.__getattr__)

    params = property(lambda self: self._gather("params"),
                      doc="The children's parameters, keyed by torch's dotted names.")
    grads = property(lambda self: self._gather("grads"),
                     doc="The children's gradients, keyed as `params`.")
    buffers = property(lambda self: self._gather("buffers"),
                       doc="The children's buffers (running statistics), keyed by dotted names.")

    def _local(self, kind):
        return {}

    def _clear_folded(self):
        self._folded = {}

    def _summary(self, shape, name):
        rows = []
        for child_name, child in self.named_children():
            child_rows, shape = child._summary(shape, f"{name}.{child_name}" if name else child_name)
            rows += child_rows
        return rows, shape


def _check_layer(layer, where):
    if not isinstance(layer, Layer):
        raise TypeError(f"{where} must be a Layer instance, got {type(layer).__name__}")
    return layer


def _foldable(conv, bn):
    return (type(conv) is Conv2D and type(bn) is BatchNorm2D and bn.track_running_stats
            and bn.num_features == conv.out_channels and bn.dtype == conv.dtype)


def _fingerprint(conv, bn):
    """What the folded weights depend on: the arrays' identities, the batch-norm
    vectors (small: compared exactly) and a strided sample of the conv weight,
    which catches wholesale in-place rewrites without reading all of it."""
    w = conv.params["weight"]
    sample = w.reshape(-1)[:: max(1, w.size // 64)].copy()
    arrays = [p for p in (*conv.params.values(), *bn.params.values(), *bn.buffers.values())]
    vectors = [a.copy() for a in arrays if a.ndim == 1] + [sample]
    return [id(a) for a in arrays], vectors


def _same(a, b):
    return a[0] == b[0] and all(np.array_equal(x, y) for x, y in zip(a[1], b[1]))


def _fold(conv, bn):
    """Conv weight and bias with the eval-mode batch norm applied after it folded in."""
    scale, shift = bn.scale_shift()
    w = conv.params["weight"]
    weight = (w * scale.astype(w.dtype)[:, None, None, None]).astype(w.dtype, copy=False)
    bias = shift if "bias" not in conv.params else shift + scale * conv.params["bias"]
    return weight, bias.astype(w.dtype)


class Sequential(_Container):
    """Layers applied in order; ``.layers`` is the list.

    ``Sequential(a, b, c)`` names its children ``"0"``, ``"1"``, ``"2"``;
    ``Sequential(OrderedDict(conv1=a, relu=b))`` (or a dict) names them by its
    keys, as ``torch.nn.Sequential`` does. ``params``/``grads`` gather the
    children's arrays under dotted keys (e.g. ``"0.weight"``), so optimisers and
    ``save``/``load`` see one flat dict; the arrays are the layers' own
    (optimisers update them in place). Children are reached as ``model[0]``
    or, when named, ``model.conv1``.
    """

    def __init__(self, *layers):
        if len(layers) == 1 and isinstance(layers[0], (dict, OrderedDict)):
            named = [(str(k), layer) for k, layer in layers[0].items()]
        else:
            named = [(str(i), layer) for i, layer in enumerate(layers)]
        for name, layer in named:
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential takes Layer instances, got {type(layer).__name__} at {name!r}")
            if not name or "." in name:
                raise ValueError(f"child names must be non-empty and without dots, got {name!r}")
        self.layers = [layer for _, layer in named]
        self._names = [name for name, _ in named]
        self._setup()

    def named_children(self):
        return iter(zip(self._names, self.layers))

    def forward(self, x, training=True):
        if not training:
            return self._infer(x, False)[0]
        self._folded = {}
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def _infer(self, x, owned):
        layers = self.layers
        i = 0
        while i < len(layers):
            layer = layers[i]
            if type(layer) is not Conv2D:
                x, owned = layer._infer(x, owned)
                i += 1
                continue
            # a convolution, the batch norm after it folded in, the ReLU after that fused
            weight, bias = layer.params["weight"], layer.params.get("bias")
            j = i + 1
            if j < len(layers) and _foldable(layer, layers[j]):
                bn = layers[j]
                key = _fingerprint(layer, bn)
                cached = self._folded.get(i)
                if cached is None or not _same(cached[0], key):
                    cached = self._folded[i] = (key, *_fold(layer, bn))
                weight, bias = cached[1], cached[2]
                bn._cache = None
                j += 1
            relu = j < len(layers) and type(layers[j]) is ReLU
            if relu:
                layers[j]._cache = None
                j += 1
            x = layer._eval_forward(x, weight, bias, relu)
            owned = True
            i = j
        return x, owned

    def backward(self, grad_output, input_grad=True):
        """The gradient for the input (None with ``input_grad=False``: only `grads` are
        filled, and the first layers skip the work the input's gradient alone needs,
        such as a first convolution's ``grad_x``; a training step needs no more)."""
        if not input_grad:
            return self._backward_params(grad_output)
        for layer in reversed(self.layers):
            grad_output = layer.backward(grad_output)
        return grad_output

    def _backward_params(self, grad_output):
        for layer in reversed(self.layers[1:]):
            grad_output = layer.backward(grad_output)
        if self.layers:
            self.layers[0]._backward_params(grad_output)

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

    def __repr__(self):
        inner = "".join(f"\n  ({name}) " + repr(layer).replace("\n", "\n  ") for name, layer in
                        self.named_children())
        return f"Sequential({inner}\n)"


def _same_shapes(main, shortcut, input_shape):
    """ValueError unless a residual block's two branches give the same shape (a sum
    that broadcast one over the other would be no residual, and its backward would fail)."""
    if tuple(main) != tuple(shortcut):
        raise ValueError(f"the main branch gives shape {tuple(main)} but the shortcut gives {tuple(shortcut)} "
                         f"for input shape {tuple(input_shape)}")


class Residual(_Container):
    """A residual block: ``activation(main(x) + shortcut(x))`` (as in ResNet).

    Parameters
    ----------
    main : Layer
        The residual branch. When it is a `Sequential`, its children are this
        block's own children (``conv1``, ``bn1``, ...), as in torchvision's
        ``BasicBlock``; otherwise it is the child ``"main"``.
    shortcut : Layer, optional
        Applied to `x` on the identity branch (a projection such as a 1x1
        convolution and batch norm); the child ``"downsample"``. None: `x` itself.
    activation : Layer, optional
        Applied to the sum (ResNet's ReLU after the addition); the child
        ``"activation"`` (it has no parameters, so state-dict keys are torch's).
    """

    def __init__(self, main, shortcut=None, *, activation=None):
        self.main = _check_layer(main, "main")
        self.shortcut = None if shortcut is None else _check_layer(shortcut, "shortcut")
        self.activation = None if activation is None else _check_layer(activation, "activation")
        self._setup()

    def _clear_folded(self):
        self._folded = {}
        self.main.clear_eval_cache()

    def named_children(self):
        if type(self.main) is Sequential:
            yield from self.main.named_children()
        else:
            yield "main", self.main
        if self.shortcut is not None:
            yield "downsample", self.shortcut
        if self.activation is not None:
            yield "activation", self.activation

    def forward(self, x, training=True):
        if not training:
            return self._infer(x, False)[0]
        self._folded = {}
        y = self.main.forward(x, True)
        s = x if self.shortcut is None else self.shortcut.forward(x, True)
        _same_shapes(np.shape(y), np.shape(s), np.shape(x))
        forward_sum = getattr(self.activation, "_forward_sum", None)
        if forward_sum is not None:
            y = forward_sum(y, s, True)      # ReLU of the sum in one pass
        else:
            y = y + s
            if self.activation is not None:
                y = self.activation.forward(y, True)
        self._remember(True, True)
        return y

    def _infer(self, x, owned):
        # both branches read x: neither may overwrite it
        y, y_owned = self.main._infer(x, False)
        if self.shortcut is None:
            s, s_owned = x, False
        else:
            s, s_owned = self.shortcut._infer(x, False)
        _same_shapes(y.shape, s.shape, np.shape(x))
        if y_owned:
            y += s
        elif s_owned:
            s += y
            y = s
        else:
            y = y + s
        self._cache = None
        if self.activation is not None:
            y, _ = self.activation._infer(y, True)
        return y, True

    def backward(self, grad_output):
        self._recall()
        if self.activation is not None:
            grad_output = self.activation.backward(grad_output)
        grad_x = self.main.backward(grad_output)
        grad_s = grad_output if self.shortcut is None else self.shortcut.backward(grad_output)
        return grad_x + grad_s

    def _backward_params(self, grad_output):
        self._recall()
        if self.activation is not None:
            grad_output = self.activation.backward(grad_output)
        self.main._backward_params(grad_output)
        if self.shortcut is not None:
            self.shortcut._backward_params(grad_output)

    def output_shape(self, input_shape):
        out = self.main.output_shape(input_shape)
        short = tuple(input_shape) if self.shortcut is None else self.shortcut.output_shape(input_shape)
        _same_shapes(out, short, input_shape)
        return tuple(out)

    def _summary(self, shape, name):
        prefix = f"{name}." if name else ""
        rows, out = self.main._summary(shape, prefix.rstrip(".") if type(self.main) is Sequential
                                       else prefix + "main")
        if self.shortcut is not None:
            rows += self.shortcut._summary(shape, prefix + "downsample")[0]
        out = self.output_shape(shape)
        rows.append((prefix + "add", self, out, 0, True))
        if self.activation is not None:
            rows += self.activation._summary(out, prefix + "activation")[0]
        return rows, out

    def __repr__(self):
        inner = "".join(f"\n  ({name}) " + repr(layer).replace("\n", "\n  ") for name, layer in
                        self.named_children())
        return f"Residual({inner}\n)"
