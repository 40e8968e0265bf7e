"""The memory of large results: whole huge pages, reused once the caller lets go.

A large result from ``np.empty`` is fresh memory: above glibc's mmap threshold (at
most 32 MiB) every call maps new pages, which the operating system zeroes at their
first touch. With NumPy's huge-page advice that is few faults (27 for 51 MB) but one
more write of the whole result: the zeroing is the cost, not the faults. ``bn eval
fwd`` float64 on (32, 64, 56, 56) takes 4.4 ms into fresh memory and 2.9 ms into
reused; populating the pages first (``MADV_POPULATE_WRITE``, from one thread or two)
only adds to it, the kernel's own first write being the cheapest first touch; in
4 KiB pages the 12,500 faults take 16-18 ms. So `empty` starts large results on a
huge-page boundary and keeps the blocks of released results, up to
`MAX_CACHED_BYTES`, for the next result of the same size.

Re-measured by ``python -m fastconv bench --sections ops`` (the float64 "bn" rows).
"""
import collections
import math
import os
import threading
import weakref

import numpy as np

#: Transparent huge pages' size on x86-64 and most arm64 kernels.
HUGE_PAGE = 2 << 20

#: Results from this size up come from `empty`'s blocks; smaller ones from ``np.empty``,
#: which malloc mostly serves from memory it has touched before, and which would spend
#: a larger share of a block on the alignment.
LARGE = 4 * HUGE_PAGE

# Fewer elements than this are fewer than LARGE bytes in any dtype (16 bytes at most).
_SMALL_ITEMS = LARGE // 16

#: The most bytes of released blocks kept for reuse (the oldest go first); a block
#: larger than this is never kept.
MAX_CACHED_BYTES = 256 << 20

_lock = threading.Lock()
_cached = collections.OrderedDict()     # id(buffer) -> (size, buffer), oldest first, under _lock
_cached_bytes = 0                       # their sizes' sum, written under _lock
# Blocks whose arrays have all gone. Finalizers only append and pop (atomic, never
# block), so a result released inside `empty` itself (by the garbage collector)
# cannot deadlock it.
_released = collections.deque()


def _release(buffer):
    """Keep `buffer` for reuse (a finalizer), dropping the oldest released blocks beyond
    `MAX_CACHED_BYTES` at once, not at the next `empty`."""
    _released.append(buffer)
    total = _cached_bytes + sum(b.size - HUGE_PAGE for b in list(_released))
    while total > MAX_CACHED_BYTES:
        try:
            total -= _released.popleft().size - HUGE_PAGE
        except IndexError:      # another thread's finalizer or `_take` emptied it
            break


def _after_fork_in_child():
    # A fork while another thread held the lock would leave it held in the child.
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _take(size):
    """A kept buffer for a block of `size` bytes, or None."""
    global _cached_bytes
    with _lock:
        while _released:
            try:
                buffer = _released.popleft()
            except IndexError:  # a finalizer in another thread took the last one
                break
            _cached[id(buffer)] = (buffer.size - HUGE_PAGE, buffer)
        total = sum(s for s, _ in _cached.values())
        while total > MAX_CACHED_BYTES:
            total -= _cached.popitem(last=False)[1][0]
        for key, (s, buffer) in reversed(_cached.items()):   # the most recently released
            if s == size:
                del _cached[key]
                total -= s
                _cached_bytes = total
                return buffer
        _cached_bytes = total
    return None


def release_cached():
    """Return every kept block to the system (what `empty` keeps, it keeps at most
    `MAX_CACHED_BYTES` of)."""
    global _cached_bytes
    with _lock:
        _released.clear()
        _cached.clear()
        _cached_bytes = 0


def cached_bytes():
    """Bytes of released blocks kept for reuse (those released since the last `empty`
    included)."""
    with _lock:
        return (sum(s for s, _ in _cached.values())
                + sum(buffer.size - HUGE_PAGE for buffer in list(_released)))


def empty(shape, dtype):
    """``np.empty(shape, dtype)``; from `LARGE` bytes up, starting on a huge-page boundary,
    in a block that an earlier, released result may have used.

    The array is C-contiguous, writeable and owned by nobody else: its block is kept
    for reuse only once no array viewing it is left. Where NumPy asks for transparent
    huge pages (its default for large arrays), a block is whole huge pages: malloc's
    large blocks start just past a page boundary, so their first and last 2 MiB would
    be 4 KiB pages (512 faults more). The over-allocation is never touched, so it is
    never backed by memory."""
    count = math.prod(shape)
    if count < _SMALL_ITEMS:    # the small results' path: np.empty and 0.05 us more
        return np.empty(shape, dtype)
    dtype = np.dtype(dtype)
    nbytes = count * dtype.itemsize
    if nbytes < LARGE:
        return np.empty(shape, dtype)
    size = -(-nbytes // HUGE_PAGE) * HUGE_PAGE
    buffer = _take(size) if size <= MAX_CACHED_BYTES else None
    if buffer is None:
        buffer = np.empty(size + HUGE_PAGE, dtype=np.uint8)
    start = -buffer.ctypes.data % HUGE_PAGE
    # The owner of the block's views: an array over a memoryview, where NumPy's chain of
    # bases stops, so every view of the result keeps it (not `buffer`) alive, and its
    # finalizer runs when the last one goes.
    owner = np.frombuffer(memoryview(buffer)[start:start + nbytes], dtype=dtype)
    if size <= MAX_CACHED_BYTES:
        weakref.finalize(owner, _release, buffer).atexit = False
    return owner.reshape(shape)
