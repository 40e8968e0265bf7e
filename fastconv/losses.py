"""The losses, kept importable here; they live in `fastconv.nn.losses`."""
from fastconv.nn.losses import binary_log_loss, softmax_cross_entropy  # noqa: F401

__all__ = ["softmax_cross_entropy", "binary_log_loss"]
