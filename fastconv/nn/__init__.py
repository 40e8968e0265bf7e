"""Networks on the public ops: layers, containers, losses, optimisers and the
model zoo (`fastconv.nn.models`), named and organised as ``torch.nn``.

Layers work on NumPy arrays in NCHW layout: ``forward(x, training=True)``,
``backward(grad_output)``, ``params``/``grads``/``state_dict()`` keyed by
torch's dotted names, so weights move between torch and fastconv with
``model.load_state_dict(torch_model.state_dict())``.
"""
from fastconv.nn.activation import LeakyReLU, ReLU, Sigmoid, Tanh
from fastconv.nn.base import Identity, Layer
from fastconv.nn.container import Residual, Sequential
from fastconv.nn.conv import Conv2D, ConvTranspose2D
from fastconv.nn.linear import Dropout, Flatten, Linear
from fastconv.nn.losses import binary_log_loss, softmax_cross_entropy
from fastconv.nn.norm import BatchNorm2D
from fastconv.nn.optim import SGD, Adam
from fastconv.nn.pool import AdaptiveAvgPool2D, AdaptiveMaxPool2D, AvgPool2D, MaxPool2D

__all__ = ["Layer", "Conv2D", "ConvTranspose2D", "Linear", "MaxPool2D", "AvgPool2D", "AdaptiveAvgPool2D",
           "AdaptiveMaxPool2D", "BatchNorm2D", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Identity", "Flatten",
           "Dropout", "Sequential", "Residual", "softmax_cross_entropy", "binary_log_loss", "SGD", "Adam",
           "models"]


def __getattr__(name):
    # the zoo on first use: `import fastconv` stays light
    if name == "models":
        import importlib
        return importlib.import_module("fastconv.nn.models")
    raise AttributeError(f"module 'fastconv.nn' has no attribute {name!r}")
