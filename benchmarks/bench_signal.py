"""True convolution: `convolve` against numpy.convolve and `convolve2d` against
scipy.signal.convolve2d (both single-threaded), beside the reference."""
import fastconv
from fastconv import reference

from .common import (
    CONVOLVE2D_CASES,
    CONVOLVE_CASES,
    DTYPES,
    SKIP_SLOW,
    SLOW_REFERENCE_CASES,
    THREADS,
    _OpBenchmark,
    random_array,
    skip,
)


class _AgainstLibrary(_OpBenchmark):
    """Adds `time_library` and `track_speedup_library`: the NumPy or SciPy function
    that the op mirrors (library time / fastconv time; > 1: fastconv is faster)."""

    def time_library(self, *params):
        self._impl("library", timed=True)()

    def track_speedup_library(self, *params):
        return self._speedup("library")

    track_speedup_library.unit = "x (NumPy or SciPy time / fastconv time)"


class Convolve(_AgainstLibrary):
    params = [list(CONVOLVE_CASES), DTYPES, THREADS]
    param_names = ["case", "dtype", "threads"]

    def prepare(self, case, dtype, threads):
        if not hasattr(fastconv, "convolve"):
            skip("fastconv.convolve is not in this version")
        import numpy as np

        n, m = CONVOLVE_CASES[case]
        a, v = random_array(n, dtype, 0), random_array(m, dtype, 1)
        self.impls["fastconv"] = lambda: fastconv.convolve(a, v)
        self.impls["library"] = lambda: np.convolve(a, v)
        if not (SKIP_SLOW and case in SLOW_REFERENCE_CASES):
            self.impls["reference"] = lambda: reference.convolve(a, v)


class Convolve2d(_AgainstLibrary):
    params = [list(CONVOLVE2D_CASES), DTYPES, THREADS]
    param_names = ["case", "dtype", "threads"]

    def prepare(self, case, dtype, threads):
        if not hasattr(fastconv, "convolve2d"):
            skip("fastconv.convolve2d is not in this version")
        import scipy.signal

        H, k = CONVOLVE2D_CASES[case]
        image, kernel = random_array((H, H), dtype, 0), random_array((k, k), dtype, 1)
        self.impls["fastconv"] = lambda: fastconv.convolve2d(image, kernel)
        self.impls["library"] = lambda: scipy.signal.convolve2d(image, kernel)
        if not (SKIP_SLOW and case in SLOW_REFERENCE_CASES):
            self.impls["reference"] = lambda: reference.convolve2d(image, kernel)
