"""The task pool behind the direct, Winograd and im2col forward loops (fastconv/_kernels/task_pool.h):
every task runs exactly once, on a slot below the thread count that no other task holds at
the same time; callers from several threads, nested callers and forked children all finish."""
import multiprocessing
import threading

import numpy as np
import pytest

import fastconv
from fastconv import reference
from fastconv._kernels import _tasks


def run_probe(n_tasks, chunk, num_threads, spin=0):
    calls = np.zeros(n_tasks, dtype=np.intc)
    slots = np.full(n_tasks, -1, dtype=np.intc)
    clashes = _tasks.probe(calls, slots, chunk, num_threads, spin)
    return calls, slots, clashes


@pytest.mark.parametrize("n_tasks, chunk, num_threads, spin", [
    (0, 1, 2, 0), (1, 1, 2, 0), (5, 10, 2, 0), (7, 1, 1, 0), (7, 1, 16, 0),
    (1000, 1, 2, 200), (1000, 3, 4, 50), (4099, 7, 3, 0), (300, 1, 8, 2000),
])
def test_every_task_runs_once_on_a_slot_of_its_own(n_tasks, chunk, num_threads, spin):
    for _ in range(3):      # a new job each time, on workers left from the last
        calls, slots, clashes = run_probe(n_tasks, chunk, num_threads, spin)
        assert clashes == 0
        assert (calls == 1).all()
        assert ((0 <= slots) & (slots < num_threads)).all()


def test_chunks_are_consecutive_tasks_on_one_slot():
    calls, slots, clashes = run_probe(999, 9, 2, spin=100)
    assert clashes == 0 and (calls == 1).all()
    assert (slots.reshape(-1, 9) == slots[::9, None]).all()


def test_callers_on_several_threads_share_the_pool():
    # one caller gets the pool, the others run their tasks alone: all complete, none clash
    results, errors = [], []

    def call():
        try:
            for _ in range(20):
                results.append(run_probe(500, 2, 2, spin=100))
        except Exception as e:   # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 80
    for calls, slots, clashes in results:
        assert clashes == 0 and (calls == 1).all() and (slots < 2).all()


def test_convolutions_on_several_threads_equal_the_reference():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 8, 19, 19)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    want = {a: fastconv.conv2d(x, w, padding=1, algorithm=a) for a in ("direct", "winograd", "im2col")}
    np.testing.assert_allclose(want["direct"], reference.conv2d(x, w, padding=1), rtol=1e-4, atol=1e-4)
    got = []

    def call(algorithm):
        for _ in range(10):
            got.append((algorithm, fastconv.conv2d(x, w, padding=1, algorithm=algorithm)))

    threads = [threading.Thread(target=call, args=(a,)) for a in ("direct", "winograd", "im2col") * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(got) == 60
    for algorithm, y in got:
        np.testing.assert_array_equal(y, want[algorithm])


def _child_runs_the_pool(queue):
    calls, slots, clashes = run_probe(2000, 3, 2, spin=20)
    queue.put(bool(clashes == 0 and (calls == 1).all()))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork on this platform")
def test_a_forked_child_starts_a_pool_of_its_own():
    run_probe(2000, 3, 2, spin=20)     # the parent's workers exist, and are not copied by fork
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_runs_the_pool, args=(queue,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert queue.get(timeout=5) is True


def test_results_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 5, 23, 23))
    w = rng.standard_normal((9, 5, 3, 3))
    for algorithm in ("direct", "winograd", "im2col"):
        runs = []
        for n in (1, 2, 3, 8):
            with fastconv.threads(n):
                runs.append(fastconv.conv2d(x, w, padding=1, algorithm=algorithm))
        for y in runs[1:]:
            np.testing.assert_array_equal(y, runs[0])


def test_pool_threads_matches_the_build():
    assert _tasks.pool_threads() == (fastconv._kernels._openmp.openmp_enabled()
                                     and not __import__("sys").platform.startswith("win"))
