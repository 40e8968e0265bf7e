# cython: language_level=3
"""What the OpenMP runtime reports, for the Python side (fastconv._threads)."""
from fastconv._kernels._openmp cimport (
    FASTCONV_OPENMP, omp_get_max_threads, omp_get_num_procs)


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(FASTCONV_OPENMP)


def default_num_threads():
    """OpenMP's default team size: OMP_NUM_THREADS if set, else the core count."""
    return omp_get_max_threads()


def num_procs():
    return omp_get_num_procs()
