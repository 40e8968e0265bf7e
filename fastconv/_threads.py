"""Thread count for the OpenMP kernels and the BLAS calls they sit beside.

The process-wide default comes from OpenMP (which honours OMP_NUM_THREADS) and
is changed by `set_num_threads`; `threads(n)` overrides it for the calling
thread (a context variable), so one thread's override never leaks into
another's computation. Every op reads the count once, passes it to its kernel
as `num_threads`. Kernels that call BLAS do so from inside their OpenMP
threads, one single-threaded GEMM per thread (`blas.single_threaded()`), so
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
- BLAS is held at one thread while the kernels call it (`blas`), and given back
  its count after: fastconv never changes torch's, NumPy's or SciPy's thread
  counts between its calls, nor the environment other libraries read.
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


def _count_functions(library):
    """(get, set) of a threadpoolctl BLAS controller's thread count. OpenBLAS's own
    functions, called through ctypes: 0.2 us a call against 1 us through threadpoolctl,
    which (3.8 here, not 3.5) also lets only the first Python thread that set OpenBLAS's
    count change it, and ignores the others; `_Blas` counts its holds itself, and a hold
    from any thread must take effect. Other libraries' through threadpoolctl."""
    if library.internal_api == "openblas":
        import ctypes

        dll = ctypes.CDLL(library.filepath)
        for prefix, suffix in (("", ""), ("scipy_", ""), ("scipy_", "64_")):
            get = getattr(dll, f"{prefix}openblas_get_num_threads{suffix}", None)
            set_ = getattr(dll, f"{prefix}openblas_set_num_threads{suffix}", None)
            if get is not None and set_ is not None:
                get.argtypes, get.restype = [], ctypes.c_int
                set_.argtypes, set_.restype = [ctypes.c_int], None
                return get, set_
    return (lambda: library.num_threads), library.set_num_threads


class _Blas:
    """The process's BLAS libraries (NumPy's and SciPy's; the kernels call SciPy's,
    through scipy.linalg.cython_blas), held at one thread inside
    ``with blas.single_threaded():``. The kernels call BLAS from inside their own
    threads, and the layers' small matmuls run right after them, so a threaded BLAS
    would compete with fastconv's threads for the cores (or wait for its own, spinning
    beside them). Between fastconv's calls the libraries run at the counts they had:
    the user's NumPy and ``scipy.linalg`` keep their threads.

    The holds are counted across Python threads: the counts go back only when the last
    hold ends (putting them back while another thread's GEMMs ran made two Python
    threads calling conv2d together 4x slower than one after the other). A hold and
    its release cost about 3 us.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._libraries = None
        self._counts = None           # (get, set) of each library's thread count
        self._holders = 0
        self._held = []               # (set, the count before the first hold)
        if hasattr(os, "register_at_fork"):   # a fork while another thread held it
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self):
        self._lock = threading.Lock()
        self._holders = 0
        self._held = []

    def libraries(self):
        """The threadpoolctl controllers of the process's BLAS libraries."""
        if self._libraries is None:
            import scipy.linalg.cython_blas  # noqa: F401  (loads the BLAS the kernels call)

            self._libraries = ThreadpoolController().select(user_api="blas").lib_controllers
        return self._libraries

    def single_threaded(self):
        """A context manager: every BLAS library at one thread inside the block; as
        before the first block once the last one (of any Python thread) has ended."""
        if self._counts is None:
            self._counts = [_count_functions(lib) for lib in self.libraries()]
        return self

    def __enter__(self):
        with self._lock:
            if self._holders == 0:
                self._held = [(set_, n) for set_, n in ((set_, get()) for get, set_ in self._counts) if n != 1]
                for set_, _ in self._held:
                    set_(1)
            self._holders += 1

    def __exit__(self, *exc):
        with self._lock:
            self._holders -= 1
            if self._holders == 0:
                for set_, n in self._held:
                    set_(n)
                self._held = []

    def info(self):
        return [
            {"library": c.internal_api, "version": c.version, "threading": getattr(c, "threading_layer", None),
             "num_threads": c.num_threads, "path": c.filepath}
            for c in self.libraries()
        ]


blas = _Blas()
