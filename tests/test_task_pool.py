"""The task pool behind the direct, Winograd and im2col forward loops (fastconv/_kernels/task_pool.h):
every task runs exactly once, on a slot below the thread count that no other task holds at
the same time; callers from several threads, nested callers and forked children all finish."""
import multiprocessing
import subprocess
import sys
import textwrap
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


def test_jobs_run_across_the_wrap_of_the_generation_fields():
    # the claim word keeps 24 bits of the job's generation, the join word 32: jobs numbered
    # across 2**24 and 2**32 must run (in a child process, so that a hang is a timeout)
    code = textwrap.dedent("""
        import numpy as np
        from fastconv._kernels import _tasks
        for start in (2**24 - 3, 2**32 - 3, 2**56 - 3):
            _tasks.set_generation(start)
            for _ in range(8):
                calls = np.zeros(64, np.intc)
                assert _tasks.probe(calls, np.zeros(64, np.intc), 1, 2, 200) == 0 and (calls == 1).all()
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def _fork_while_a_job_runs(queue):
    calls, slots, clashes = run_probe(500, 1, 8, spin=20)
    queue.put(bool(clashes == 0 and (calls == 1).all()))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork on this platform")
def test_a_child_forked_during_a_job_never_runs_its_tasks():
    # another thread's job (8 slots, most never filled on 2 cores) is running at the fork:
    # the child's workers must not take its tasks, nor count them as the child's own
    stop = threading.Event()
    parent_bad = []

    def busy():
        while not stop.is_set():
            calls, _, clashes = run_probe(2000, 1, 8, spin=50)
            if clashes or not (calls == 1).all():
                parent_bad.append(1)

    runner = threading.Thread(target=busy)
    runner.start()
    ctx = multiprocessing.get_context("fork")
    try:
        for _ in range(20):
            queue = ctx.Queue()
            child = ctx.Process(target=_fork_while_a_job_runs, args=(queue,))
            child.start()
            child.join(timeout=60)
            assert child.exitcode == 0
            assert queue.get(timeout=5) is True
    finally:
        stop.set()
        runner.join(timeout=60)
    assert not parent_bad


def test_a_direct_workspace_wider_than_its_plan_is_used_by_rows():
    from fastconv import _direct
    from fastconv import _validation as v

    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 13, 13)).astype(np.float32)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    g = v.conv_geometry((13, 13), 3, 1, 1, 1)
    plan = _direct._plan(4, g, x.dtype, 2)
    out = np.empty((3, 8, 13, 13), np.float32)
    workspace = np.full((2, plan.size + 37), np.nan, np.float32)     # rows wider than the plan
    _direct.kernel.conv2d_forward(x, w.reshape(8, 36), np.zeros(8, np.float32), out, g.struct(), 1, plan,
                                  workspace, 2)
    np.testing.assert_allclose(out, reference.conv2d(x, w, padding=1), rtol=1e-4, atol=1e-4)
