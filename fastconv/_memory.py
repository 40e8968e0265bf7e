"""The memory of large results: whole transparent huge pages.

A result of several megabytes is fresh memory, which the operating system zeroes
page by page at its first touch. NumPy asks for transparent huge pages for large
arrays (``madvise``), but malloc's large blocks start just past a page boundary, so
the first and last 2 MiB of each go in 4 KiB pages: 512 faults more per result. So
`empty` starts large results on a huge-page boundary.
"""
import math

import numpy as np

#: Transparent huge pages' size on x86-64 and most arm64 kernels.
HUGE_PAGE = 2 << 20

#: Results from this size up start on a huge-page boundary; smaller ones are plain
#: ``np.empty``, which would spend a larger share of a block on the alignment.
LARGE = 4 * HUGE_PAGE


def empty(shape, dtype):
    """``np.empty(shape, dtype)``; from `LARGE` bytes up, starting on a huge-page boundary.

    The array is C-contiguous and writeable. The over-allocation is never touched, so
    it is never backed by memory."""
    itemsize = dtype.itemsize if isinstance(dtype, np.dtype) else np.dtype(dtype).itemsize
    nbytes = math.prod(shape) * itemsize
    if nbytes < LARGE:          # the small results' path: np.empty and 0.2 us of checks
        return np.empty(shape, dtype)
    buffer = np.empty(nbytes + HUGE_PAGE, dtype=np.uint8)
    start = -buffer.ctypes.data % HUGE_PAGE
    return buffer[start:start + nbytes].view(dtype).reshape(shape)
