"""The memory of large results (whole huge pages) and of temporaries, reused once let go.

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

Temporaries, which a call drops before it returns (`scratch`), are kept the same way
from `SCRATCH_MIN` bytes up: malloc serves those from fresh memory too, mapped for
each (at most 32 MiB: glibc's threshold only rises to the largest block freed), or
from a heap it trims as soon as they are freed. im2col's taps, on ResNet-18's (32,
128, 8, 8) to 256 channels at stride 2, faulted 1,900 heap growths back in over four
timings: grad_x and grad_weight 6.5-8.8 ms each, 2.2-3.6 ms with glibc told not to
trim (``GLIBC_TUNABLES``, which fastconv leaves alone: it would change the whole
process's malloc), 2.2-2.7 ms from kept blocks. A temporary takes a kept block up to
`SCRATCH_FIT` times its size, as malloc's free lists would hand it: with blocks of
its own size only, temporaries of different sizes stayed in different memory, and
Winograd's grad_x then im2col's weight gradient took 1.13-1.19x as long (1.05-1.11x
with the fit, against plain np.empty; ResNet-18's training step 1.02-1.03x).
"""
import collections
import math
import os
import threading
import weakref

import numpy as np

#: Transparent huge pages' size on x86-64 and most arm64 kernels.
HUGE_PAGE = 2 << 20

#: Results from this size up come from `empty`'s blocks; smaller ones from ``np.empty``
#: (a block of whole huge pages would back a small result with a 2 MiB page).
LARGE = 4 * HUGE_PAGE

# Fewer elements than this are fewer than LARGE bytes in any dtype (16 bytes at most).
_SMALL_ITEMS = LARGE // 16

#: Temporaries (`scratch`) from this size up (glibc's first mmap threshold) come from
#: kept blocks, in steps of SCRATCH_STEP bytes, starting on a cache line (ALIGN).
SCRATCH_MIN = 1 << 17
SCRATCH_STEP = 1 << 16
ALIGN = 64
#: A temporary may take a kept block up to this many times its size, as malloc's free
#: lists would: temporaries of different sizes then share memory that stays in cache.
SCRATCH_FIT = 4

#: The most bytes of released blocks kept for reuse, results' and temporaries'
#: together (the oldest go first); a block larger than this is never kept.
MAX_CACHED_BYTES = 256 << 20

#: The most released blocks kept: each `empty` or `scratch` looks through them.
MAX_CACHED_BLOCKS = 64

_lock = threading.Lock()
_cached = collections.OrderedDict()     # id(buffer) -> ((size, align), buffer), oldest first, under _lock
_cached_bytes = 0                       # their sizes' sum, written under _lock
# (key, buffer) of blocks whose arrays have all gone. Finalizers only append and pop
# (atomic, never block), so a result released inside `empty` itself (by the garbage
# collector) cannot deadlock it.
_released = collections.deque()


def _release(key, buffer):
    """Keep `buffer`, a block of key = (size, align), for reuse (a finalizer), dropping
    the oldest released blocks beyond `MAX_CACHED_BYTES` at once, not at the next
    `empty` or `scratch`."""
    _released.append((key, buffer))
    total = _cached_bytes + sum(k[0] for k, _ in list(_released))
    while total > MAX_CACHED_BYTES:
        try:
            total -= _released.popleft()[0][0]
        except IndexError:      # another thread's finalizer or `_take` emptied it
            break


def _after_fork_in_child():
    # A fork while another thread held the lock would leave it held in the child.
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _take(key, fit=1):
    """A kept buffer for a block of key = (size, align), or None; with `fit` > 1, the
    smallest kept block of that alignment and of size to `fit` times larger."""
    global _cached_bytes
    with _lock:
        while _released:
            try:
                k, buffer = _released.popleft()
            except IndexError:  # a finalizer in another thread took the last one
                break
            _cached[id(buffer)] = (k, buffer)
        total = sum(k[0] for k, _ in _cached.values())
        while total > MAX_CACHED_BYTES or len(_cached) > MAX_CACHED_BLOCKS:
            total -= _cached.popitem(last=False)[1][0][0]
        best = None
        for ident, (k, _) in reversed(_cached.items()):   # the most recently released
            if k == key:
                best = ident
                break
            if k[1] == key[1] and key[0] < k[0] <= fit * key[0] and (best is None or k[0] < _cached[best][0][0]):
                best = ident
        if best is not None:
            k, buffer = _cached.pop(best)
            _cached_bytes = total - k[0]
            return buffer
        _cached_bytes = total
    return None


def release_cached():
    """Return every kept block to the system (what `empty` and `scratch` keep, they
    keep at most `MAX_CACHED_BYTES` of)."""
    global _cached_bytes
    with _lock:
        _released.clear()
        _cached.clear()
        _cached_bytes = 0


def cached_bytes():
    """Bytes of released blocks kept for reuse (those released since the last `empty`
    or `scratch` included)."""
    with _lock:
        return sum(k[0] for k, _ in _cached.values()) + sum(k[0] for k, _ in list(_released))


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
    return _kept(shape, dtype, nbytes, HUGE_PAGE, HUGE_PAGE)


def scratch(shape, dtype, kept=False):
    """``np.empty(shape, dtype)`` starting on a cache line (`ALIGN` bytes), for a
    temporary (never for a result: a result's block is only `empty`'s): from
    `SCRATCH_MIN` bytes up, in a block that an earlier, released temporary of about its
    size may have used (module docstring). `kept`: the array may outlive the call (a
    layer keeps im2col's weights by tap from its forward to its backward, Winograd's
    transformed weights between eval calls): a block of its own size only, so that it
    never holds a larger one."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes >= SCRATCH_MIN:
        return _kept(shape, dtype, nbytes, SCRATCH_STEP, ALIGN, 1 if kept else SCRATCH_FIT)
    buffer = np.empty(nbytes + ALIGN, dtype=np.uint8)
    start = -buffer.ctypes.data % ALIGN
    return buffer[start:start + nbytes].view(dtype).reshape(shape)


def _kept(shape, dtype, nbytes, step, align, fit=1):
    """An array of `nbytes` in a block of whole `step`s starting on an `align` boundary:
    a released one of that key (or up to `fit` times larger) where one is kept, else a
    new one (`align` bytes longer), kept for reuse once no array views it."""
    size = -(-nbytes // step) * step
    buffer = _take((size, align), fit) if size <= MAX_CACHED_BYTES else None
    if buffer is None:
        buffer = np.empty(size + align, dtype=np.uint8)
    size = buffer.size - align
    key = (size, align)
    start = -buffer.ctypes.data % align
    # The owner of the block's views: an array over a memoryview, where NumPy's chain of
    # bases stops, so every view of the result keeps it (not `buffer`) alive, and its
    # finalizer runs when the last one goes.
    owner = np.frombuffer(memoryview(buffer)[start:start + nbytes], dtype=dtype)
    if size <= MAX_CACHED_BYTES:
        weakref.finalize(owner, _release, key, buffer).atexit = False
    return owner.reshape(shape)
