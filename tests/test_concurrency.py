"""Concurrent callers: the kernels release the GIL, so Python threads run ops at
the same time; each must get exactly what it gets alone, whatever the others do,
including changing the thread count (set_num_threads, threads(n)) meanwhile."""
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from strategies import OPS, on_copies

import fastconv
from fastconv import _autotune

N_THREADS = 8


def _table_calls(per_op=6):
    """A few deterministic valid calls of every op in the table (pooling and the rest
    come in with their table entries)."""
    calls = []
    for spec in OPS:
        if spec.name == "output_size":
            continue

        # (batch norm's running statistics: updated in place, so each call on its own copies)
        calls += [(on_copies(spec), call.kwargs) for call in _examples(spec.valid, per_op)]
    return calls


def _examples(strategy, count):
    found = []

    @settings(max_examples=count, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(call):
        found.append(call)
    collect()
    return found


def _large_calls(rng):
    """Calls long enough for the threads to overlap inside the kernels."""
    out = []
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((4, 8, 40, 36)).astype(dtype)
        w = rng.standard_normal((12, 8, 3, 3)).astype(dtype)
        b = rng.standard_normal(12).astype(dtype)
        go = rng.standard_normal((4, 12, 20, 18)).astype(dtype)
        out.append((fastconv.conv2d, dict(x=x, weight=w, bias=b, padding=1)))
        out.append((fastconv.conv2d_backward, dict(grad_output=go, x=x, weight=w, stride=2, padding=1)))
        out.append((fastconv.im2col, dict(x=x, kernel_size=(3, 2), stride=(1, 2), dilation=2)))
        out.append((fastconv.conv2d, dict(x=x, weight=rng.standard_normal((8, 2, 5, 5)).astype(dtype),
                                          groups=4, padding="same")))
    return out


def _same(a, b, exact=True):
    """Equal results; with exact=False, equal to rounding (sums split over a
    different number of threads are added in another order)."""
    if isinstance(a, tuple):
        assert len(a) == len(b)
        for u, t in zip(a, b):
            _same(u, t, exact)
    else:
        assert a.dtype == b.dtype and a.shape == b.shape
        if exact or a.dtype.kind != "f":
            np.testing.assert_array_equal(a, b)
        else:
            tol = 1e-5 if a.dtype == np.float32 else 1e-12
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@pytest.fixture(scope="module")
def jobs():
    calls = _large_calls(np.random.default_rng(7)) + _table_calls()
    # Sequential results, at the thread counts the concurrent runs will use, once
    # "auto" has made its final choice (calibrated, then rechecked at the
    # RECHECK_CALLS-th call of a class, which may pick another algorithm: results
    # equal only to rounding)
    expected = {}
    for i, (fn, kw) in enumerate(calls):
        for n in (1, 2):
            with fastconv.threads(n):
                for _ in range(_autotune.RECHECK_CALLS):
                    fn(**kw)
                expected[i, n] = fn(**kw)
    return calls, expected


def test_threads_get_the_sequential_results(jobs):
    calls, expected = jobs
    start = threading.Barrier(N_THREADS)

    def worker(t):
        start.wait()
        order = np.random.default_rng(t).permutation(len(calls))
        for i in order:
            fn, kw = calls[i]
            n = 1 + (i + t) % 2
            with fastconv.threads(n):
                _same(fn(**kw), expected[i, n])
        return len(order)

    with ThreadPoolExecutor(N_THREADS) as pool:
        done = list(pool.map(worker, range(N_THREADS)))
    assert done == [len(calls)] * N_THREADS


def test_thread_count_changes_while_others_compute(jobs):
    calls, expected = jobs
    default = fastconv.get_num_threads()
    stop = threading.Event()

    def toggler():
        k = 0
        while not stop.is_set():
            fastconv.set_num_threads(1 + k % 3)
            with fastconv.threads(1 + (k + 1) % 2):
                pass
            k += 1
        return k

    def worker(t):
        for i in np.random.default_rng(100 + t).permutation(len(calls)):
            fn, kw = calls[i]
            if t % 2:  # half the workers pin their count, half follow the process default
                with fastconv.threads(1 + i % 2):
                    _same(fn(**kw), expected[i, 1 + i % 2])
            else:  # the count changes under it: the same results, to rounding
                _same(fn(**kw), expected[i, 1], exact=False)

    try:
        with ThreadPoolExecutor(N_THREADS + 1) as pool:
            toggles = pool.submit(toggler)
            try:
                for f in [pool.submit(worker, t) for t in range(N_THREADS)]:
                    f.result()
            finally:
                stop.set()  # before the pool's exit waits for the toggler, even when a worker failed
            assert toggles.result() > 0
    finally:
        fastconv.set_num_threads(default)


def test_threads_override_is_per_thread():
    default = fastconv.get_num_threads()
    seen = {}
    inside = threading.Barrier(2)

    def worker(n):
        with fastconv.threads(n):
            inside.wait()
            seen[n] = fastconv.get_num_threads()
            inside.wait()

    ts = [threading.Thread(target=worker, args=(n,)) for n in (1, 3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert seen == {1: 1, 3: 3}
    assert fastconv.get_num_threads() == default
