"""Thread count for the OpenMP kernels and the BLAS calls they sit beside.

The process-wide default comes from OpenMP (which honours OMP_NUM_THREADS) and
is changed by `set_num_threads`; `threads(n)` overrides it for the calling
thread (a context variable), so one thread's override never leaks into
another's computation. Every op reads the count once, passes it to its kernel
as `num_threads`. Kernels that call BLAS do so from inside their OpenMP
threads, one single-threaded GEMM per thread (`blas.single_threaded()`), so BLAS
threads and OpenMP threads never run on the same cores at once.
"""
import contextlib
import contextvars
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


def num_threads_for(work):
    """Threads for an op of `work` units: `get_num_threads()`, fewer for small ops."""
    return max(1, min(get_num_threads(), int(work) // WORK_PER_THREAD))


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


class _BlasLimiter:
    """Holds BLAS at one thread while fastconv kernels call it from their own OpenMP
    threads (so the two thread pools never compete for the cores), and restores the
    user's setting when the last such call in the process ends."""

    def __init__(self):
        self._lock = threading.Lock()
        self._libraries = None
        self._active = 0
        self._saved = []

    def libraries(self):
        if self._libraries is None:
            import scipy.linalg.cython_blas  # noqa: F401  (the BLAS the kernels call)

            self._libraries = ThreadpoolController().select(user_api="blas").lib_controllers
        return self._libraries

    @contextlib.contextmanager
    def single_threaded(self):
        with self._lock:
            if self._active == 0:
                self._saved = [(lib, lib.num_threads) for lib in self.libraries()]
                for lib, n in self._saved:
                    if n != 1:
                        lib.set_num_threads(1)
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    for lib, n in self._saved:
                        if n != 1:
                            lib.set_num_threads(n)

    def info(self):
        return [
            {"library": c.internal_api, "version": c.version, "threading": getattr(c, "threading_layer", None),
             "num_threads": c.num_threads, "path": c.filepath}
            for c in self.libraries()
        ]


blas = _BlasLimiter()
