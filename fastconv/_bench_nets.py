"""The ``nets`` section of `fastconv.bench`: whole networks from `fastconv.nn.models`
against the same networks in torch, holding the same weights.

The torch twin is built from the fastconv model itself (`torch_twin`), layer by
layer, so the two run the same architecture on the same numbers. torch is
warmed by `fastconv.bench.load_torch` (one autograd backward) before timing.
"""
import numpy as np

from fastconv.nn import (
    AdaptiveAvgPool2D,
    AdaptiveMaxPool2D,
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    ConvTranspose2D,
    Dropout,
    Flatten,
    Identity,
    LeakyReLU,
    Linear,
    MaxPool2D,
    ReLU,
    Residual,
    Sequential,
    Sigmoid,
    Tanh,
)
from fastconv.nn import models as zoo
from fastconv.nn.losses import softmax_cross_entropy

#: (builder, batch, image side, training step): the issue's cases.
NET_CASES = [
    ("resnet18", 1, 224, False),
    ("resnet18", 8, 224, False),
    ("vgg16", 1, 224, False),
    ("resnet18", 32, 64, True),
]


def _tensor(torch, a):
    return torch.nn.Parameter(torch.from_numpy(np.array(a, copy=True)), requires_grad=True)


def torch_twin(torch, layer):
    """A ``torch.nn.Module`` computing what the fastconv `layer` computes, with copies
    of its parameters and buffers."""
    nn = torch.nn
    if isinstance(layer, Sequential):
        return nn.Sequential(*(torch_twin(torch, child) for child in layer))
    if isinstance(layer, Residual):
        return _residual_class(torch)(layer)
    p = layer.params
    if isinstance(layer, (Conv2D, ConvTranspose2D)):
        cls = nn.Conv2d if isinstance(layer, Conv2D) else nn.ConvTranspose2d
        kw = {} if isinstance(layer, Conv2D) else dict(output_padding=layer.output_padding)
        with torch.device("meta"):
            m = cls(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                    groups=layer.groups, bias="bias" in p, dilation=layer.dilation, **kw)
    elif isinstance(layer, Linear):
        with torch.device("meta"):
            m = nn.Linear(layer.in_features, layer.out_features, bias="bias" in p)
    elif isinstance(layer, BatchNorm2D):
        m = nn.BatchNorm2d(layer.num_features, layer.eps, layer.momentum, layer.affine, layer.track_running_stats)
        m = m.to(torch.float64 if layer.dtype == np.float64 else torch.float32)
        for key, b in layer.buffers.items():
            getattr(m, key).copy_(torch.from_numpy(np.asarray(b)))
    elif isinstance(layer, MaxPool2D):
        m = nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding, layer.dilation, ceil_mode=layer.ceil_mode)
    elif isinstance(layer, AvgPool2D):
        m = nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode, layer.count_include_pad,
                         layer.divisor_override)
    else:
        simple = {ReLU: lambda: nn.ReLU(inplace=True), Sigmoid: nn.Sigmoid, Tanh: nn.Tanh, Identity: nn.Identity,
                  Flatten: nn.Flatten, Dropout: lambda: nn.Dropout(layer.p),
                  LeakyReLU: lambda: nn.LeakyReLU(layer.negative_slope),
                  AdaptiveAvgPool2D: lambda: nn.AdaptiveAvgPool2d(layer.output_size),
                  AdaptiveMaxPool2D: lambda: nn.AdaptiveMaxPool2d(layer.output_size)}
        if type(layer) not in simple:
            raise TypeError(f"no torch twin for {type(layer).__name__}")
        m = simple[type(layer)]()
    for key, a in p.items():
        setattr(m, key, _tensor(torch, a))
    return m


def _residual_class(torch):
    class Residual(torch.nn.Module):
        def __init__(self, layer):
            super().__init__()
            self.main = torch_twin(torch, layer.main)
            self.shortcut = None if layer.shortcut is None else torch_twin(torch, layer.shortcut)
            self.activation = None if layer.activation is None else torch_twin(torch, layer.activation)

        def forward(self, x):
            y = self.main(x) + (x if self.shortcut is None else self.shortcut(x))
            return y if self.activation is None else self.activation(y)

    return Residual


#: The table's note on what fastconv's eval forward does (how it is timed: bench.settled_note).
EVAL_NOTE = ("fastconv's eval forward folds batch norm into the convolutions, fuses ReLU into their store "
             "and keeps their prepared weights (docs/performance.rst)")


def model_flops(model, input_shape):
    """Multiply-adds x 2 of the convolutions and fully connected layers of one forward."""
    total = 0
    for _, layer, out, _, _ in model._summary(tuple(input_shape), "")[0]:
        if isinstance(layer, Conv2D):
            kh, kw = layer.kernel_size
            total += 2 * int(np.prod(out)) * layer.in_channels // layer.groups * kh * kw
        elif isinstance(layer, Linear):
            total += 2 * int(np.prod(out)) * layer.in_features
    return float(total)


def net_cases(torch, dtypes=("float32", "float64"), with_reference=True):
    """ResNet-18 and VGG-16 eval forwards and a ResNet-18 training step (forward,
    loss, backward), float32, against torch with the same weights; no reference
    column (the pure-NumPy ops would take minutes per network)."""
    from fastconv.bench import Case, settled_medians, settled_note

    if "float32" not in dtypes:
        return
    rng = np.random.default_rng(0)
    built = {}
    for name, batch, side, training in NET_CASES:
        key = (name, 10 if training else 1000)
        if key not in built:
            built.clear()      # one big model (and its twin) alive at a time
            model = getattr(zoo, name)(num_classes=key[1], rng=0)
            built[key] = (model, None if torch is None else torch_twin(torch, model))
        model, twin = built[key]
        x = rng.standard_normal((batch, 3, side, side)).astype(np.float32)
        flops = model_flops(model, x.shape) * (3 if training else 1)
        label = f"{name} {batch}x3x{side}x{side}"
        if training:
            labels = rng.integers(0, key[1], batch)

            def step(model=model, x=x, labels=labels):
                _, grad = softmax_cross_entropy(model.forward(x, training=True), labels)
                model.backward(grad, input_grad=False)   # as torch's step: x needs no gradient

            impls = {"fastconv": step}
            if twin is not None:
                tx, tl = torch.from_numpy(x), torch.from_numpy(labels)

                def torch_step(twin=twin, tx=tx, tl=tl):
                    twin.train()
                    for p in twin.parameters():
                        p.grad = None
                    torch.nn.functional.cross_entropy(twin(tx), tl).backward()

                impls["torch"] = torch_step
            yield Case("net train step", label, "float32", impls, flops=flops, timer=settled_medians,
                       note="net train step: forward, softmax cross-entropy, backward (no optimiser step)")
        else:
            impls = {"fastconv": lambda model=model, x=x: model.forward(x, training=False)}
            if twin is not None:
                tx = torch.from_numpy(x)

                def torch_eval(twin=twin, tx=tx):
                    twin.eval()
                    with torch.no_grad():
                        twin(tx)

                impls["torch"] = torch_eval
            yield Case("net eval fwd", label, "float32", impls, flops=flops,
                       note=settled_note("net eval fwd, net train step") + "; " + EVAL_NOTE,
                       timer=settled_medians)
