"""fastconv's threads beside other OpenMP runtimes: its own runtime, loaded with a
short idle wait that no other library sees, the user's wait policy respected, and
small work on one thread. Mechanism checks in fresh interpreters, not timings."""
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastconv
from fastconv import _kernels, _threads
from fastconv._kernels import _tasks

needs_openmp_threads = pytest.mark.skipif(not (sys.platform.startswith("linux") and _tasks.pool_threads()),
                                          reason="choosing the runtime per region: Linux OpenMP builds")
needs_private = pytest.mark.skipif(not _kernels.private_runtime(),
                                   reason="built against the shared OpenMP runtime (FASTCONV_SHARED_OPENMP)")


def run_python(code, **env):
    """stdout, stderr of `code` in a fresh interpreter, with `env` on top of a copy of
    this environment less every wait-policy variable."""
    base = {k: v for k, v in os.environ.items() if k not in _kernels.USER_WAIT_VARIABLES}
    base["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(fastconv.__file__)),
                                          base.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


def spin_counts(display):
    """GOMP_SPINCOUNT of each libgomp that printed its settings (OMP_DISPLAY_ENV=VERBOSE), in load order."""
    return [line.split("=")[1].strip().strip("'") for line in display.splitlines()
            if line.strip().startswith("GOMP_SPINCOUNT =")]


def test_environment_is_as_before_after_import():
    out, _ = run_python("import os; before = dict(os.environ); import fastconv; print(dict(os.environ) == before)")
    assert out.split() == ["True"]


@needs_private
@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="CPU affinity: Linux with 2+ CPUs")
@pytest.mark.parametrize("binding", [dict(OMP_PROC_BIND="true"), dict(OMP_PLACES="cores", OMP_PROC_BIND="close")])
def test_import_and_ops_leave_the_threads_cpus_alone(binding):
    # libgomp binds the thread that loads it when asked to; the importing thread, and
    # the threads started from it later (the pool's workers included), keep their CPUs.
    out, _ = run_python("import os, threading, numpy as np\n"
                        "before = os.sched_getaffinity(0)\n"
                        "import fastconv\n"
                        "x = np.ones((8, 16, 32, 32), np.float32); w = np.ones((16, 16, 3, 3), np.float32)\n"
                        "with fastconv.threads(2):\n"
                        "    fastconv.conv2d(x, w, padding=1, algorithm='direct')\n"
                        "    fastconv.batch_norm2d(np.ones((64, 64, 32, 32), np.float32), training=True)\n"
                        "seen = []\n"
                        "t = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0)))\n"
                        "t.start(); t.join()\n"
                        "print(os.sched_getaffinity(0) == before == seen[0])", **binding)
    assert out.split() == ["True"]


@needs_private
def test_kernels_link_fastconv_own_runtime():
    # Beside the kernels (an in-place build, a plain wheel) or in fastconv.libs (auditwheel).
    out, _ = run_python("import os, fastconv\n"
                        "root = os.path.dirname(fastconv.__file__)\n"
                        "print(any(l.split()[-1].startswith(root) and 'gomp' in l.split()[-1]"
                        " for l in open('/proc/self/maps')))")
    assert out.split() == ["True"]


@needs_private
def test_own_runtime_gets_the_short_wait_and_a_later_libgomp_does_not():
    _, err = run_python("import fastconv, ctypes, ctypes.util\n"
                        "name = ctypes.util.find_library('gomp')\n"
                        "assert name, 'no system libgomp'\n"
                        "ctypes.CDLL(name)", OMP_DISPLAY_ENV="VERBOSE")
    counts = spin_counts(err)
    assert counts[0] == _kernels.OPENMP_ENV["GOMP_SPINCOUNT"]
    assert counts[1:] and all(c != _kernels.OPENMP_ENV["GOMP_SPINCOUNT"] for c in counts[1:])


@needs_private
def test_torch_runtime_is_left_at_its_default():
    pytest.importorskip("torch")
    for order in ("import fastconv, torch", "import torch, fastconv"):
        _, err = run_python(order + "\ntorch.set_num_threads(2)", OMP_DISPLAY_ENV="VERBOSE")
        counts = spin_counts(err)
        assert _kernels.OPENMP_ENV["GOMP_SPINCOUNT"] in counts
        assert len(counts) == 2 and len(set(counts)) == 2, counts


@needs_private
@pytest.mark.parametrize("variable, value", [("OMP_WAIT_POLICY", "active"), ("GOMP_SPINCOUNT", "12345")])
def test_users_wait_policy_is_respected(variable, value):
    out, err = run_python("import os, fastconv; print(os.environ.get('GOMP_SPINCOUNT'))",
                          OMP_DISPLAY_ENV="VERBOSE", **{variable: value})
    assert out.split() == [value if variable == "GOMP_SPINCOUNT" else "None"]
    expected = {"OMP_WAIT_POLICY": "30000000000", "GOMP_SPINCOUNT": value}[variable]
    assert spin_counts(err)[0] == expected


def test_small_work_uses_one_thread():
    with fastconv.threads(2):
        assert _threads.num_threads_for(_threads.WORK_PER_THREAD - 1) == 1
        assert _threads.num_threads_for(0) == 1
        assert _threads.num_threads_for(100 * _threads.WORK_PER_THREAD) == 2


def test_wait_variables_set_only_around_the_load(monkeypatch):
    monkeypatch.setattr(_kernels, "private_runtime", lambda: True)
    for name in _kernels.USER_WAIT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with _kernels.own_runtime_environment() as set_here:
        assert set_here == _kernels.OPENMP_ENV
        assert all(os.environ[k] == v for k, v in set_here.items())
    assert not any(name in os.environ for name in _kernels.OPENMP_ENV)
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    with _kernels.own_runtime_environment() as set_here:
        assert set_here == {}


def test_small_convolutions_run_on_one_thread(monkeypatch):
    seen = []
    real = _threads.num_threads_for_macs
    monkeypatch.setattr(fastconv.convolution, "num_threads_for_macs", lambda macs: seen.append(real(macs)) or seen[-1])
    x = np.ones((32, 16, 4, 4), np.float32)      # the main job's second convolution
    w = np.ones((32, 16, 3, 3), np.float32)
    with fastconv.threads(2):
        y = fastconv.conv2d(x, w, padding=1)
        fastconv.conv2d_backward(np.ones_like(y), x, w, padding=1)
        assert _threads.num_threads_for_macs(64 * 32 * 32 * 32 * 27) == 2   # bench case C1
    assert seen and set(seen) == {1}      # every convolution (and calibration's slices of them)


@needs_private
def test_kernels_bind_to_own_runtime_when_torch_is_imported_first():
    # torch puts its libgomp in the global scope: kernels bound there would report
    # torch's thread setting, not their own runtime's.
    pytest.importorskip("torch")
    out, _ = run_python("import torch\ntorch.set_num_threads(1)\nimport fastconv\n"
                        "from fastconv._kernels import _openmp\nprint(_openmp.default_num_threads())",
                        OMP_NUM_THREADS="3")
    assert out.split() == ["3"]


# FASTCONV_OPENMP_TEAM=hot / any: fastconv's regions and pool jobs run on another
# runtime's team, while its threads are hot (torch's, right after one of its calls) or
# whenever it is loaded (openmp_runtime.h).
BESIDE_TORCH = """
import numpy as np, torch, fastconv
from fastconv import reference
from fastconv._kernels import _openmp, _tasks
torch.set_num_threads(2)
fastconv.set_num_threads(2)
rng = np.random.default_rng(0)
xt, wt = torch.randn(8, 64, 40, 40), torch.randn(64, 64, 3, 3)
x, w = rng.standard_normal((4, 17, 47, 45)), rng.standard_normal((32, 17, 3, 3))     # work for 2 threads
g = rng.standard_normal((4, 32, 47, 45))
src = rng.standard_normal(1 << 16)
want = reference.conv2d(x, w, padding=1), reference.conv2d_backward(g, x, w, padding=1)
ok = True
for i in range(12):
    torch.nn.functional.conv2d(xt, wt, padding=1)          # torch's team busy, then spinning
    for algorithm in ("direct", "winograd", "im2col"):         # the pool's jobs
        y = fastconv.conv2d(x, w, padding=1, algorithm=algorithm)
        ok &= np.allclose(y, want[0], rtol=1e-10, atol=1e-10)
jobs = _tasks.foreign_regions()
for i in range(12):
    torch.nn.functional.conv2d(xt, wt, padding=1)
    got = fastconv.conv2d_backward(g, x, w, padding=1, algorithm="direct")   # OpenMP regions
    ok &= all(np.allclose(a, b, rtol=1e-10, atol=1e-10) for a, b in zip(got, want[1]))
    torch.nn.functional.conv2d(xt, wt, padding=1)
    dst = np.empty_like(src)
    _openmp.parallel_copy(src, dst, 2)
    ok &= np.array_equal(src, dst)
    for op in ("batch_norm2d", "adaptive_avg_pool2d", "max_pool2d"):   # dynamic loops
        args = {"batch_norm2d": (x,), "adaptive_avg_pool2d": (x, 5), "max_pool2d": (x, 3)}[op]
        kwargs = {"training": True} if op == "batch_norm2d" else {}
        ok &= np.allclose(getattr(fastconv, op)(*args, **kwargs), getattr(reference, op)(*args, **kwargs))
print(ok, _tasks.foreign_runtime(), jobs > 0, _tasks.foreign_regions() > jobs)
"""


@needs_openmp_threads
def test_kernels_on_the_foreign_team_give_the_right_results():
    pytest.importorskip("torch")
    out, _ = run_python(BESIDE_TORCH, FASTCONV_OPENMP_TEAM="any")
    assert out.split() == ["True"] * 4


@needs_openmp_threads
def test_a_hot_foreign_team_is_joined():
    # whether torch's threads are hot after its call depends on the scheduler: on a
    # loaded machine they may be held off their cores, so the test tries for a while
    pytest.importorskip("torch")
    out, _ = run_python("import time, numpy as np, torch, fastconv\n"
                        "from fastconv._kernels import _tasks\n"
                        "torch.set_num_threads(2)\n"
                        "fastconv.set_num_threads(2)\n"
                        "xt, wt = torch.randn(8, 64, 40, 40), torch.randn(64, 64, 3, 3)\n"
                        "x, w = np.ones((4, 17, 47, 45)), np.ones((32, 17, 3, 3))\n"
                        "end = time.monotonic() + 30\n"
                        "while _tasks.foreign_regions() == 0 and time.monotonic() < end:\n"
                        "    torch.nn.functional.conv2d(xt, wt, padding=1)\n"
                        "    fastconv.conv2d(x, w, padding=1, algorithm='direct')\n"
                        "print(_tasks.foreign_regions() > 0)", FASTCONV_OPENMP_TEAM="hot")
    assert out.split() == ["True"]


@needs_openmp_threads
def test_own_runtime_unless_asked():
    pytest.importorskip("torch")
    for team in ("own", None):     # None: the default
        out, _ = run_python(BESIDE_TORCH, **({"FASTCONV_OPENMP_TEAM": team} if team else {}))
        assert out.split() == ["True", "False", "False", "False"]


@needs_openmp_threads
def test_idle_foreign_runtime_is_not_used():
    # torch imported and never run: its team is cold, fastconv keeps its own threads
    pytest.importorskip("torch")
    out, _ = run_python("import numpy as np, torch, fastconv\n"
                        "from fastconv._kernels import _tasks\n"
                        "fastconv.set_num_threads(2)\n"
                        "x, w = np.ones((4, 17, 47, 45)), np.ones((32, 17, 3, 3))\n"
                        "for i in range(20):\n"
                        "    y = fastconv.conv2d(x, w, padding=1, algorithm='direct')\n"
                        "print(_tasks.foreign_runtime(), _tasks.foreign_regions())", FASTCONV_OPENMP_TEAM="hot")
    assert out.split() == ["True", "0"]


@needs_openmp_threads
def test_forked_child_runs_on_its_own_runtime():
    # libgomp's teams do not survive fork: the child's regions run on its one thread
    # (before, a child of a parent that had run fastconv's regions hung in its first)
    pytest.importorskip("torch")
    out, _ = run_python(FASTCONV_OPENMP_TEAM="any", code=BESIDE_TORCH.replace("print(ok,", "print(ok, end=' ')\nprint(") + """
import os
pid = os.fork()
if pid == 0:
    before = _tasks.foreign_regions()
    y = fastconv.conv2d(x, w, padding=1, algorithm="direct")                   # the pool
    got = fastconv.conv2d_backward(g, x, w, padding=1, algorithm="direct")   # OpenMP regions
    ok = np.allclose(y, want[0]) and all(np.allclose(a, b) for a, b in zip(got, want[1]))
    os._exit(0 if ok and not _tasks.foreign_runtime() and _tasks.foreign_regions() == before else 1)
print(os.waitpid(pid, 0)[1] == 0)
""")
    assert out.split() == ["True"] * 5


@needs_openmp_threads
def test_regions_give_way_after_two_stalls_in_a_row():
    # The runtime's account of each region of its own team (openmp_runtime.h,
    # fc_openmp_ended) fed directly: a thread off its core for 2 ms of a 3 ms region
    # is a stall, 0.1 ms of 3 ms (or 0.1 ms of 0.2 ms: under 0.15 ms) is not. Two stalls
    # in a row send the next regions (max pooling's) to the calling thread alone, with
    # the same results; one stall alone, or one-thread regions, do not. (max_pool2d's
    # forward is one region: a real stall in it cannot make that same call serial.)
    out, _ = run_python("import time, numpy as np, fastconv\n"
                        "from fastconv import reference\n"
                        "from fastconv._kernels import _tasks\n"
                        "x = np.random.default_rng(0).standard_normal((8, 64, 56, 56)).astype(np.float32)\n"
                        "want = reference.max_pool2d(x, 2, 2)\n"
                        "def serial_after(*regions):\n"
                        "    time.sleep(0.11)   # past any serial spell a real stall started\n"
                        "    for n, total, off in regions:\n"
                        "        _tasks.note_region(n, total, off)\n"
                        "    before = _tasks.serial_regions()\n"
                        "    with fastconv.threads(2):\n"
                        "        ok = np.array_equal(fastconv.max_pool2d(x, 2, 2), want)\n"
                        "    return ok, _tasks.serial_regions() > before\n"
                        "clean, stall = (2, 3000000, 100000), (2, 3000000, 2000000)\n"
                        "print(*serial_after(clean, stall, clean), *serial_after(clean, stall),\n"
                        "      *serial_after((2, 200000, 100000), (2, 200000, 100000)),\n"
                        "      *serial_after(clean, (1, 3000000, 2000000), (1, 3000000, 2000000)),\n"
                        "      *serial_after(stall, stall))")
    assert out.split() == ["True", "False"] * 4 + ["True", "True"]


@needs_openmp_threads
def test_forked_child_after_own_team_runs_its_regions():
    # No other runtime loaded, FASTCONV_OPENMP_TEAM unset: the parent ran a region on
    # fastconv's own team of 2, and the child's regions must not wait for that team
    # (they did: the child hung in its first region).
    out, _ = run_python("import os, signal, numpy as np, fastconv\n"
                        "from fastconv import reference\n"
                        "x = np.random.default_rng(0).standard_normal((8, 64, 56, 56)).astype(np.float32)\n"
                        "rm, rv = np.zeros(64, np.float32), np.ones(64, np.float32)\n"
                        "with fastconv.threads(2):\n"
                        "    fastconv.batch_norm2d(x, rm, rv)\n"
                        "pid = os.fork()\n"
                        "if pid == 0:\n"
                        "    signal.alarm(30)\n"
                        "    with fastconv.threads(2):\n"
                        "        ok = np.allclose(fastconv.batch_norm2d(x, rm, rv), reference.batch_norm2d(x, rm, rv),\n"
                        "                         atol=1e-5)\n"
                        "    os._exit(0 if ok else 1)\n"
                        "print(os.waitpid(pid, 0)[1] == 0)")
    assert out.split() == ["True"]


@needs_openmp_threads
def test_kernels_call_no_runtime_entry_point_that_is_not_forwarded():
    # A region may run on another runtime's team or on one thread: every OpenMP entry
    # point a kernel calls must go through openmp_runtime.h (a __wrap_ definition),
    # but for those that only read settings outside regions.
    if shutil.which("nm") is None:
        pytest.skip("nm (binutils) is not installed: the kernels' OpenMP symbols cannot be listed")
    outside_regions = {"omp_get_max_threads", "omp_get_num_procs"}
    modules = [p for p in pathlib.Path(_kernels.__file__).parent.glob("*.so") if "gomp" not in p.name]
    assert modules
    for module in modules:
        undefined = subprocess.run(["nm", "-D", "--undefined-only", str(module)], capture_output=True,
                                   text=True, check=True).stdout.split()
        called = {name.split("@")[0] for name in undefined if name.startswith(("GOMP_", "omp_"))}
        defined = subprocess.run(["nm", str(module)], capture_output=True, text=True, check=True).stdout
        wrapped = {name[len("__wrap_"):] for name in defined.split() if name.startswith("__wrap_")}
        assert called - wrapped - outside_regions == set(), module.name


# -- BLAS: one thread inside the kernels, the user's count outside ---------------------
def blas_counts():
    from threadpoolctl import threadpool_info

    return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


@pytest.fixture
def blas_at_three_threads():
    """Every BLAS library at 3 threads (a count fastconv never sets), as a user may have it."""
    import scipy.linalg.cython_blas  # noqa: F401  (loads the BLAS the kernels call)
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=3, user_api="blas"):
        yield blas_counts()


class RecordingKernels:
    """im2col's kernel module, noting the BLAS counts inside each of its BLAS calls."""

    def __init__(self, kernel):
        self.kernel, self.seen = kernel, []

    def __getattr__(self, name):
        fn = getattr(self.kernel, name)
        if name not in ("conv2d_forward", "conv2d_backward", "conv2d_grad_x", "matmul_groups"):
            return fn

        def recorded(*args, **kwargs):
            self.seen.append((name, set(blas_counts().values())))
            return fn(*args, **kwargs)
        return recorded


@pytest.mark.parametrize("shape", [(2, 8, 12, 12), (4, 8, 3, 3)], ids=["bands", "taps"])
def test_kernels_hold_blas_at_one_thread_only_while_they_call_it(monkeypatch, blas_at_three_threads, shape):
    from fastconv import _im2col

    recording = RecordingKernels(_im2col.kernel)
    monkeypatch.setattr(_im2col, "kernel", recording)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((6, 8, 3, 3))
    with fastconv.threads(2):
        y = fastconv.conv2d(x, w, padding=1, algorithm="im2col")
        fastconv.conv2d_backward(np.ones_like(y), x, w, padding=1, algorithm="im2col")
    assert {name for name, _ in recording.seen} >= ({"matmul_groups"} if shape[2] == 3 else
                                                    {"conv2d_forward", "conv2d_backward"})
    assert all(counts == {1} for _, counts in recording.seen), recording.seen
    assert blas_counts() == blas_at_three_threads


def test_blas_counts_come_back_after_concurrent_calls(monkeypatch, blas_at_three_threads):
    # held for as long as any thread is inside: one thread's release must not give
    # BLAS its threads back under another's GEMMs
    import threading

    from fastconv import _im2col

    recording = RecordingKernels(_im2col.kernel)
    monkeypatch.setattr(_im2col, "kernel", recording)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 8, 12, 12)).astype(np.float32)
    w = rng.standard_normal((6, 8, 3, 3)).astype(np.float32)
    expected = fastconv.reference.conv2d(x, w, padding=1)
    failures = []

    def work():
        for _ in range(20):
            with fastconv.threads(1):
                y = fastconv.conv2d(x, w, padding=1, algorithm="im2col")
            if not np.allclose(y, expected, rtol=1e-4, atol=1e-4):
                failures.append(y)

    workers = [threading.Thread(target=work) for _ in range(3)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not failures
    assert len(recording.seen) == 60 and all(counts == {1} for _, counts in recording.seen)
    assert blas_counts() == blas_at_three_threads
