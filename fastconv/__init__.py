"""fastconv: fast CPU building blocks for convolutional networks.

Compiled (Cython + OpenMP) im2col/col2im, convolution and pooling with their
backward passes, under a NumPy-native API that mirrors torch.nn.functional.
"""
__version__ = "0.1.0"

from fastconv._autotune import autotune_choices, get_autotune, set_autotune, set_autotune_cache
from fastconv._config import show_config
from fastconv._threads import get_num_threads, set_num_threads, threads
from fastconv._validation import output_size
from fastconv.adaptive_pooling import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    adaptive_max_pool2d,
    adaptive_max_pool2d_backward,
)
from fastconv.columns import col2im, im2col
from fastconv.convolution import conv2d, conv2d_backward
from fastconv.convolution1d import conv1d, conv1d_backward
from fastconv.convolution_transpose import conv_transpose2d, conv_transpose2d_backward
from fastconv.layers import (
    AvgPool2D,
    Conv2D,
    Dropout,
    Flatten,
    Linear,
    MaxPool2D,
    ReLU,
    Sequential,
    Sigmoid,
)
from fastconv.losses import binary_log_loss, softmax_cross_entropy
from fastconv.normalization import batch_norm2d, batch_norm2d_backward
from fastconv.optim import SGD, Adam
from fastconv.pooling import (
    avg_pool2d,
    avg_pool2d_backward,
    global_avg_pool2d,
    global_avg_pool2d_backward,
    global_max_pool2d,
    global_max_pool2d_backward,
    max_pool2d,
    max_pool2d_backward,
    sum_pool2d,
    sum_pool2d_backward,
)
from fastconv.signal import convolve, convolve2d

__all__ = [
    "__version__",
    "conv2d", "conv2d_backward",
    "conv1d", "conv1d_backward",
    "convolve", "convolve2d",
    "im2col", "col2im",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "sum_pool2d", "sum_pool2d_backward",
    "global_avg_pool2d", "global_avg_pool2d_backward", "global_max_pool2d", "global_max_pool2d_backward",
    "output_size",
    "get_num_threads", "set_num_threads", "threads",
    "set_autotune", "get_autotune", "set_autotune_cache", "autotune_choices",
    "show_config",
    "Conv2D", "Linear", "MaxPool2D", "AvgPool2D", "ReLU", "Sigmoid", "Flatten", "Dropout", "Sequential",
    "softmax_cross_entropy", "binary_log_loss",
    "SGD", "Adam",
    "conv_transpose2d", "conv_transpose2d_backward",
    "batch_norm2d", "batch_norm2d_backward",
    "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward", "adaptive_max_pool2d", "adaptive_max_pool2d_backward",
]
