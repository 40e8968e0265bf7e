"""fastconv: fast CPU building blocks for convolutional networks.

Compiled (Cython + OpenMP) im2col/col2im, convolution and pooling with their
backward passes, under a NumPy-native API that mirrors torch.nn.functional.
"""
__version__ = "0.1.0"

from fastconv._threads import get_num_threads, set_num_threads, threads
from fastconv._validation import output_size
from fastconv.columns import col2im, im2col
from fastconv.convolution import conv2d, conv2d_backward
from fastconv.convolution1d import conv1d, conv1d_backward
from fastconv.signal import convolve, convolve2d
from fastconv._config import show_config

__all__ = [
    "__version__",
    "conv2d", "conv2d_backward",
    "conv1d", "conv1d_backward",
    "convolve", "convolve2d",
    "im2col", "col2im",
    "output_size",
    "get_num_threads", "set_num_threads", "threads",
    "show_config",
]
