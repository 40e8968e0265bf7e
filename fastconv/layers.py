"""The layer classes, kept importable here; they live in `fastconv.nn`."""
from fastconv.nn import (  # noqa: F401
    AdaptiveAvgPool2D,
    AdaptiveMaxPool2D,
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    ConvTranspose2D,
    Dropout,
    Flatten,
    Identity,
    Layer,
    LeakyReLU,
    Linear,
    MaxPool2D,
    ReLU,
    Residual,
    Sequential,
    Sigmoid,
    Tanh,
)

__all__ = ["Layer", "Conv2D", "Linear", "MaxPool2D", "AvgPool2D", "ReLU", "Sigmoid", "Flatten",
           "Dropout", "Sequential"]
