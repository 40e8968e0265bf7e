"""fastconv: fast CPU building blocks for convolutional networks.

Compiled (Cython + OpenMP) im2col/col2im, convolution and pooling with their
backward passes, under a NumPy-native API that mirrors torch.nn.functional.
"""
__version__ = "0.1.0"

from fastconv._threads import get_num_threads, set_num_threads, threads
from fastconv._validation import output_size
from fastconv.columns import col2im, im2col
from fastconv.convolution import conv2d, conv2d_backward
from fastconv.pooling import (
    avg_pool2d, avg_pool2d_backward, global_avg_pool2d, global_avg_pool2d_backward,
    global_max_pool2d, global_max_pool2d_backward, max_pool2d, max_pool2d_backward,
    sum_pool2d, sum_pool2d_backward,
)
from fastconv._config import show_config

__all__ = [
    "__version__",
    "conv2d", "conv2d_backward",
    "im2col", "col2im",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "sum_pool2d", "sum_pool2d_backward",
    "global_avg_pool2d", "global_avg_pool2d_backward", "global_max_pool2d", "global_max_pool2d_backward",
    "output_size",
    "get_num_threads", "set_num_threads", "threads",
    "show_config",
]
