"""Thread count for the OpenMP kernels and the BLAS calls they sit beside.

The process-wide default comes from OpenMP (which honours OMP_NUM_THREADS) and
is changed by `set_num_threads`; `threads(n)` overrides it for the calling
thread (a context variable), so one thread's override never leaks into
another's computation. Every op reads the count once, passes it to its kernel
as `num_threads`. Kernels that call BLAS do so from inside their OpenMP
threads, one single-threaded GEMM per thread (`blas.pin_single_threaded()`), so
BLAS threads and OpenMP threads never run on the same cores at once.

What fastconv does to threads, and why (beside torch, scikit-learn and other
processes):

- Its own OpenMP runtime. On Linux with gcc, setup.py links the kernels against
  a private copy of libgomp (``fastconv/_kernels/libgompfc.so``, the compiler's
  libgomp under another SONAME), as an auditwheel-repaired wheel does. Under the
  stock name the loader would hand fastconv whichever ``libgomp.so.1`` the
  process loaded first (torch bundles one), and fastconv could not choose how its
  threads wait without choosing for torch too. ``FASTCONV_SHARED_OPENMP=1`` at
  build time links the shared runtime instead (then fastconv sets nothing).
- A short idle wait. libgomp's idle threads spin 300,000 times (about 6 ms on
  current x86 cores, ~20 ns a spin) before they sleep.
  On a machine with few cores those spinning threads take the cores that another
  runtime's team (torch's, scikit-learn's) or another process needs, and a team
  whose member is descheduled waits for it at every barrier: with the shared
  runtime's default wait, a C1 forward of 0.75 ms alone took 7-20 ms at 2 threads
  beside another process doing the same (1.3 ms at 1 thread). fastconv's runtime is
  loaded with ``GOMP_SPINCOUNT`` = `fastconv._kernels.OPENMP_ENV` (10,000:
  about 0.2 ms of spinning, then a futex sleep); the variable is set in
  ``os.environ`` only while that private runtime loads and removed right after,
  so no other library, loaded before or after, sees it. A user who sets
  ``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT`` (or ``KMP_BLOCKTIME``) keeps that
  choice: fastconv then sets nothing.
- Each kernel module is loaded with RTLD_DEEPBIND (fastconv/_kernels/__init__.py),
  so its OpenMP calls bind to that private runtime even when torch, imported
  first, has put its own libgomp in the global symbol scope.
- The direct, Winograd and im2col forward loops run on fastconv's task pool
  (fastconv/_kernels/task_pool.h) instead of an OpenMP region, whose closing
  barrier waits for every team member to be woken and scheduled: the caller starts
  at once, other threads join when they get a core, and the caller waits only for
  chunks another thread is running, so a thread held off its core costs at most its
  current chunk.
- Another runtime's team, on request. Another runtime's idle threads (torch's and
  scikit-learn's libgomp) spin after each of their calls (about 6 ms on idle cores,
  12-14 ms while fastconv's threads share them) and hold a core while fastconv's
  next op runs. ``FASTCONV_OPENMP_TEAM=hot`` runs fastconv's regions
  and its pool's jobs on that runtime's team while its threads are hot, ``any``
  whenever it is loaded (fastconv/_kernels/openmp_runtime.h); the default is
  fastconv's own threads. In a forked child the regions run on one thread.
- Regions that give way: after two OpenMP regions in a row in which a thread of
  fastconv's team was kept off its core for more than a quarter of the region
  (another runtime's or OpenBLAS's spinning threads, another process), the regions
  run on the calling thread alone for 20 ms (fastconv/_kernels/openmp_runtime.h).
- Fewer threads for small work: `num_threads_for` gives an op one thread per
  `WORK_PER_THREAD` elements, `num_threads_for_macs` a convolution one per
  `MACS_PER_THREAD` multiply-adds (about 0.2 ms of one core), so a small op runs
  on the calling thread alone and never waits for a team member that another
  process holds off its core.
- BLAS is held at one thread where the kernels call it (`blas`), and nothing
  else: fastconv never changes torch's or NumPy's thread counts or the
  environment other libraries read.
"""
import contextlib
import contextvars
import os
import threading

from threadpoolctl import ThreadpoolController

from fastconv._kernels import _openmp

#: More threads than any machine has cores: far more can exhaust the process's
#: thread limit, and the OpenMP runtime then crashes rather than failing cleanly.
MAX_THREADS = 1024

_default = min(max(1, _openmp.default_num_threads()), MAX_THREADS)
_override = contextvars.ContextVar("fastconv_num_threads", default=None)


def _check(n):
    import numbers

    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"num_threads must be an int, got {type(n).__name__} {n!r}")
    if n < 1:
        raise ValueError(f"num_threads must be >= 1, got {n}")
    if n > MAX_THREADS:
        raise ValueError(f"num_threads must be <= {MAX_THREADS}, got {n}")
    return int(n)


def get_num_threads():
    """The number of threads fastconv's kernels use in the calling thread."""
    n = _override.get()
    return _default if n is None else n


#: Work units (multiply-adds, or elements moved) worth one extra thread. Below
#: this, waking a thread team and meeting at its barrier costs more than it
#: saves: microseconds on an idle machine, far more when another process holds
#: the cores (the team waits at the barrier for a descheduled member).
WORK_PER_THREAD = 1 << 17


#: Multiply-adds worth one extra thread in a convolution. A multiply-add costs far
#: less than an element moved (vector FMAs: ~20 G/s on one core against ~1 G
#: elements/s), so a thread's share must be larger to outweigh the same barrier:
#: 4M multiply-adds is about 0.2 ms on one core. Below that the op runs on the
#: calling thread alone: the main job's convolutions (batch 32 of 8x8 digits) do,
#: and so lost nothing beside a busy process (at 1 << 17, 2 threads ran it at
#: 0.4x the speed of 1 there; idle, 2 threads had gained nothing).
MACS_PER_THREAD = 1 << 22


def num_threads_for(work):
    """Threads for an op of `work` units: `get_num_threads()`, fewer for small ops."""
    return max(1, min(get_num_threads(), int(work) // WORK_PER_THREAD))


def num_threads_for_macs(macs):
    """Threads for a convolution of `macs` multiply-adds (`MACS_PER_THREAD` per thread)."""
    return max(1, min(get_num_threads(), int(macs) // MACS_PER_THREAD))


def set_num_threads(n):
    """Set the process-wide number of threads for fastconv's kernels and BLAS calls."""
    global _default
    _default = _check(n)


@contextlib.contextmanager
def threads(n):
    """Context manager: use `n` threads inside the block (in this thread only).

    >>> with fastconv.threads(1):
    ...     y = fastconv.conv2d(x, w)
    """
    token = _override.set(_check(n))
    try:
        yield
    finally:
        _override.reset(token)


class _KernelBlas:
    """The BLAS the kernels call (SciPy's, through scipy.linalg.cython_blas), held at
    one thread: the kernels call it from inside their own OpenMP threads, so a
    threaded BLAS would compete with them for the cores.

    It is set once, on first use, and left so: switching it per call and back made
    two Python threads calling conv2d together 4x slower than one after the other
    (OpenBLAS reconfigures its pool on each change). NumPy's BLAS is left alone
    where it is a separate library (pip wheels); where both share one library
    (e.g. conda), that library is held at one thread.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._libraries = None
        self._pinned = False
        if hasattr(os, "register_at_fork"):   # a fork while another thread held it
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self):
        self._lock = threading.Lock()

    def libraries(self):
        """The threadpoolctl controllers of the BLAS libraries the kernels call."""
        if self._libraries is None:
            import os

            import scipy
            import scipy.linalg.cython_blas  # noqa: F401  (loads the BLAS the kernels call)

            every = ThreadpoolController().select(user_api="blas").lib_controllers
            scipy_root = os.path.dirname(os.path.realpath(scipy.__file__))
            own = [c for c in every if os.path.realpath(c.filepath).startswith(scipy_root)]
            self._libraries = own or every
        return self._libraries

    def pin_single_threaded(self):
        if self._pinned:
            return
        with self._lock:
            for lib in self.libraries():
                if lib.num_threads != 1:
                    lib.set_num_threads(1)
            self._pinned = True

    def info(self):
        return [
            {"library": c.internal_api, "version": c.version, "threading": getattr(c, "threading_layer", None),
             "num_threads": c.num_threads, "path": c.filepath}
            for c in self.libraries()
        ]


blas = _KernelBlas()
