# cython: language_level=3, boundscheck=False, wraparound=False
"""What the OpenMP runtime reports, for the Python side (fastconv._threads); and a
parallel copy, the memory-bandwidth ceiling at a given thread count (fastconv.bench)."""
from cython.parallel cimport prange

from fastconv._kernels._openmp cimport (
    FASTCONV_OPENMP, fc_openmp_adopt, omp_get_max_threads, omp_get_num_procs)
from fastconv._kernels._tasks cimport openmp_state

fc_openmp_adopt(openmp_state())   # one choice of runtime per process (openmp_runtime.h)


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(FASTCONV_OPENMP)


def default_num_threads():
    """OpenMP's default team size: OMP_NUM_THREADS if set, else the core count."""
    return omp_get_max_threads()


def num_procs():
    return omp_get_num_procs()


def parallel_copy(const double[::1] src, double[::1] dst, int num_threads):
    """dst[:] = src[:len(dst)] by `num_threads` threads, each copying one contiguous block."""
    cdef Py_ssize_t i
    for i in prange(dst.shape[0], nogil=True, schedule="static", num_threads=num_threads):
        dst[i] = src[i]

