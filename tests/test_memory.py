"""fastconv._memory.empty, the memory of large results: plain arrays on huge-page
boundaries, blocks reused only once no array views them, and ops that write every
element of a reused block (filled with NaN first, so anything left unwritten shows)."""
import gc
import threading

import numpy as np
import pytest
from conftest import DTYPES, assert_close, assert_within_winograd_bound

import fastconv
from fastconv import _memory, reference

LARGE_SHAPES = [(1500, 1501), (32, 64, 56, 56), (_memory.LARGE // 4,)]


@pytest.fixture(autouse=True)
def empty_cache():
    _memory.release_cached()
    yield
    gc.collect()
    _memory.release_cached()


def poison(shape, dtype):
    """Leave a released block of `shape` and `dtype`, full of NaN (integers: -1), for
    the next result of its size."""
    block = _memory.empty(shape, dtype)
    block[...] = -1 if np.dtype(dtype).kind == "i" else np.nan
    del block
    assert _memory.cached_bytes() >= np.prod(shape) * np.dtype(dtype).itemsize


@pytest.mark.parametrize("dtype", DTYPES + [np.int64])
@pytest.mark.parametrize("shape", LARGE_SHAPES)
def test_large_results_start_on_a_huge_page(shape, dtype):
    a = _memory.empty(shape, dtype)
    assert type(a) is np.ndarray and a.shape == shape and a.dtype == dtype
    assert a.flags.c_contiguous and a.flags.writeable and a.flags.aligned
    assert a.ctypes.data % _memory.HUGE_PAGE == 0
    a[...] = 7
    assert (a == 7).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (3, 5), (0, 4, 7), (1, 1, 1, 1), "just below LARGE"])
def test_small_results_are_plain_np_empty(shape, dtype):
    dtype = np.dtype(dtype)
    if shape == "just below LARGE":
        shape = (_memory.LARGE // dtype.itemsize - 1,)
    a = _memory.empty(shape, dtype)
    assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
    assert a.flags.owndata and a.base is None                  # np.empty's own array
    del a
    assert _memory.cached_bytes() == 0


def test_a_block_is_reused_only_once_no_view_of_it_is_left():
    shape = (32, 64, 56, 56)
    a = _memory.empty(shape, np.float64)
    address = a.ctypes.data
    views = [a[1:], a.reshape(-1)[::3], a.T, np.asarray(a)]
    b = _memory.empty(shape, np.float64)                       # `a` still alive
    assert b.ctypes.data != address
    del a
    assert _memory.cached_bytes() == 0
    c = _memory.empty(shape, np.float64)
    assert c.ctypes.data not in (address, b.ctypes.data)
    views.pop()[0, 0, 0, 0] = 1.0                              # still writeable, still ours
    del views
    assert _memory.cached_bytes() >= np.prod(shape) * 8
    d = _memory.empty(shape, np.float32)                       # another size: a new block
    assert d.ctypes.data != address
    e = _memory.empty((2,) + shape, np.float32)                # the same bytes, any dtype and shape
    assert e.ctypes.data == address and e.ctypes.data % _memory.HUGE_PAGE == 0
    assert _memory.cached_bytes() == 0


def test_the_cache_keeps_at_most_max_cached_bytes(monkeypatch):
    monkeypatch.setattr(_memory, "MAX_CACHED_BYTES", 3 * _memory.LARGE)
    blocks = [_memory.empty((_memory.LARGE,), np.uint8) for _ in range(5)]
    big = _memory.empty((4 * _memory.LARGE,), np.uint8)      # above the cap: never kept
    del blocks, big
    _memory._take((0, 0))                                      # takes in the released ones
    assert _memory.cached_bytes() == 3 * _memory.LARGE


def test_release_cached_returns_every_block():
    _memory.empty((_memory.LARGE,), np.uint8)                 # released at once
    assert _memory.cached_bytes() == _memory.LARGE
    _memory.release_cached()
    assert _memory.cached_bytes() == 0


def test_threads_never_share_a_block():
    shape, errors = (_memory.LARGE // 8,), []

    def work(value):
        for _ in range(20):
            a = _memory.empty(shape, np.float64)
            a[...] = value
            if not (a[:: 4096] == value).all() or not (a == value).all():
                errors.append(value)
            del a

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_a_fork_leaves_the_child_a_free_lock():
    with _memory._lock:                 # held by another thread when the process forked
        _memory._after_fork_in_child()
    assert _memory._lock.acquire(blocking=False)
    _memory._lock.release()
    _memory.empty((_memory.LARGE,), np.uint8)
    assert _memory.cached_bytes() == _memory.LARGE


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_writes_every_element_of_a_reused_block(dtype, training):
    rng = np.random.default_rng(0)
    shape = (16, 64, 56, 56)
    x, g = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    w, b = rng.standard_normal(64).astype(dtype), rng.standard_normal(64).astype(dtype)
    rm, rv = np.zeros(64, dtype), np.ones(64, dtype)
    poison(shape, dtype)
    got = fastconv.batch_norm2d(x, rm.copy(), rv.copy(), w, b, training=training)
    assert got.ctypes.data % _memory.HUGE_PAGE == 0
    assert_close(got, reference.batch_norm2d(x, rm.copy(), rv.copy(), w, b, training=training))
    poison(shape, dtype)
    got = fastconv.batch_norm2d_backward(g, x, w, training=training, running_mean=rm, running_var=rv)
    want = reference.batch_norm2d_backward(g, x, w, training=training, running_mean=rm, running_var=rv)
    for a, e in zip(got, want):
        assert_close(a, e)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", ["im2col", "direct", "winograd"])
def test_conv2d_writes_every_element_of_a_reused_block(dtype, algorithm):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 16, 96, 96)).astype(dtype)
    w = rng.standard_normal((128, 16, 3, 3)).astype(dtype)
    bias = rng.standard_normal(128).astype(dtype)
    check = assert_within_winograd_bound if algorithm == "winograd" else assert_close
    poison((2, 128, 96, 96), dtype)
    got = fastconv.conv2d(x, w, bias, padding=1, algorithm=algorithm)
    check(got, reference.conv2d(x, w, bias, padding=1))
    # grad_x as large as the input
    go, xb = rng.standard_normal((2, 16, 96, 96)).astype(dtype), rng.standard_normal((2, 128, 96, 96)).astype(dtype)
    wb = w.transpose(1, 0, 2, 3).copy()
    poison(xb.shape, dtype)
    got = fastconv.conv2d_backward(go, xb, wb, padding=1, algorithm=algorithm)[0]
    check(got, reference.conv2d_backward(go, xb, wb, padding=1)[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_convolve2d_writes_every_element_of_a_reused_block(dtype):
    rng = np.random.default_rng(2)
    image, kernel = rng.standard_normal((1500, 1501)).astype(dtype), rng.standard_normal((5, 5)).astype(dtype)
    poison((1500, 1501), dtype)
    got = fastconv.convolve2d(image, kernel, "same")
    assert got.ctypes.data % _memory.HUGE_PAGE == 0
    assert_close(got, reference.convolve2d(image, kernel, "same"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_pooling_writes_every_element_of_a_reused_block(dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 64, 96, 96)).astype(dtype)
    poison(x.shape, dtype)
    poison((8, 64, 48, 48), np.int64)
    y, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    want_y, want_idx = reference.max_pool2d(x, 2, return_indices=True)
    assert_close(y, want_y)
    np.testing.assert_array_equal(idx, want_idx)
    g = rng.standard_normal(y.shape).astype(dtype)
    for backward, want in [(lambda: fastconv.max_pool2d_backward(g, idx, x.shape),
                            reference.max_pool2d_backward(g, idx, x.shape)),
                           (lambda: fastconv.avg_pool2d_backward(g, x.shape, 2),
                            reference.avg_pool2d_backward(g, x.shape, 2)),
                           (lambda: fastconv.global_avg_pool2d_backward(g[:, :, :1, :1], x.shape),
                            reference.global_avg_pool2d_backward(g[:, :, :1, :1], x.shape))]:
        poison(x.shape, dtype)
        assert_close(backward(), want)


def test_released_blocks_beyond_the_cap_are_dropped_at_release():
    _memory.release_cached()
    size = 16 << 20
    held = [_memory.empty((size // 8,), np.float64) for _ in range(_memory.MAX_CACHED_BYTES // size + 8)]
    del held                    # no `empty` after: the cap holds all the same
    assert _memory.cached_bytes() <= _memory.MAX_CACHED_BYTES
    _memory.release_cached()


@pytest.mark.parametrize("dtype", DTYPES + [np.int64, np.uint8])
@pytest.mark.parametrize("count", [0, 1, 7, 1000, _memory.SCRATCH_MIN // 8 - 1, _memory.SCRATCH_MIN // 8 + 3, 300_001])
def test_scratch_is_an_empty_array_on_a_cache_line(count, dtype):
    a = _memory.scratch((count,), dtype)
    assert type(a) is np.ndarray and a.shape == (count,) and a.dtype == dtype
    assert a.flags.c_contiguous and a.flags.writeable and (count == 0 or a.ctypes.data % _memory.ALIGN == 0)
    a[...] = 3
    assert (a == 3).all()
    b = _memory.scratch((2, 3, count), dtype)
    assert b.shape == (2, 3, count) and (count == 0 or b.ctypes.data % _memory.ALIGN == 0)


def test_scratch_reuses_released_blocks_of_its_size_or_somewhat_larger():
    n = 16 * _memory.SCRATCH_MIN
    a = _memory.scratch((n,), np.uint8)
    address = a.ctypes.data
    b = _memory.scratch((n,), np.uint8)                       # `a` alive: another block
    assert b.ctypes.data != address
    view = a[10:20]
    del a
    e = _memory.scratch((n,), np.uint8)                       # a view keeps a's block
    assert e.ctypes.data not in (address, b.ctypes.data)
    del view
    d = _memory.scratch((n // (2 * _memory.SCRATCH_FIT),), np.uint8)    # far smaller: not a's block
    assert d.ctypes.data not in (address, b.ctypes.data)
    k = _memory.scratch((n // 3,), np.uint8, kept=True)      # kept: a block of its own size only
    assert k.ctypes.data != address
    c = _memory.scratch((n // 12,), np.float32)               # a third of it, within SCRATCH_FIT: a's
    assert c.ctypes.data == address
    c[...] = 1
    del b, c, d, e, k
    _memory.release_cached()
    assert _memory.cached_bytes() == 0


def test_scratch_takes_its_own_size_else_the_smallest_that_fits():
    n = 8 * _memory.SCRATCH_MIN
    sizes = [4 * n, 2 * n, n, 3 * n]
    blocks = [_memory.scratch((m,), np.uint8) for m in sizes]
    address = {m: blk.ctypes.data for m, blk in zip(sizes, blocks)}
    del blocks
    first, second, third = (_memory.scratch((m,), np.uint8) for m in (n, n + 1, n + 1))
    assert (first.ctypes.data, second.ctypes.data, third.ctypes.data) == (address[n], address[2 * n], address[3 * n])


def test_results_and_temporaries_never_take_each_others_blocks():
    _memory.empty((_memory.LARGE,), np.uint8)                 # a result's block, released: kept
    temporary = _memory.scratch((_memory.LARGE // 2,), np.uint8)    # would fit it
    assert _memory.cached_bytes() == _memory.LARGE             # still kept: not taken
    del temporary
    _memory.release_cached()
    _memory.scratch((_memory.LARGE,), np.uint8)               # a temporary's block, released: kept
    result = _memory.empty((_memory.LARGE,), np.uint8)
    assert _memory.cached_bytes() == _memory.LARGE and result.ctypes.data % _memory.HUGE_PAGE == 0


def test_a_block_taken_larger_comes_back_under_its_own_size():
    n = 8 * _memory.SCRATCH_MIN
    _memory.scratch((n,), np.uint8)                           # released at once: kept
    c = _memory.scratch((n // 3,), np.uint8)                  # takes the n-byte block
    assert _memory.cached_bytes() == 0
    del c
    assert _memory.cached_bytes() == n


def test_the_cache_keeps_at_most_max_cached_blocks(monkeypatch):
    monkeypatch.setattr(_memory, "MAX_CACHED_BLOCKS", 3)
    blocks = [_memory.scratch((_memory.SCRATCH_MIN * (i + 1),), np.uint8) for i in range(6)]
    del blocks
    _memory._take((0, 0))                                      # takes in the released ones
    assert len(_memory._cached) == 3


def test_threads_never_share_a_scratch_block():
    errors = []

    def work(value):
        for _ in range(50):
            a = _memory.scratch((_memory.SCRATCH_MIN,), np.float32)
            a[...] = value
            if not (a == value).all():
                errors.append(value)

    threads = [threading.Thread(target=work, args=(v,)) for v in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
