"""The optimisers, kept importable here; they live in `fastconv.nn.optim`."""
from fastconv.nn.optim import SGD, Adam  # noqa: F401

__all__ = ["SGD", "Adam"]
