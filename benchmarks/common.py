"""Shared pieces of the asv suite: the cases (defined here, not imported from
fastconv), thread control, torch, and `_OpBenchmark`, the base class every op
family derives from.

Each benchmark class builds, in `setup`, a dict of zero-argument callables for
one op on one parameter set: "fastconv", and when available "reference" (the
pure-NumPy `fastconv.reference`) and "torch" (CPU PyTorch). The base class turns
them into paired methods:

  time_fastconv / time_reference / time_torch          wall time (asv timing)
  peakmem_fastconv / peakmem_reference / peakmem_torch peak RSS of the process
  track_speedup_reference   reference time / fastconv time (interleaved medians)
  track_speedup_torch       torch time / fastconv time (> 1: fastconv is faster)

A callable that is not available (torch not installed, an op or algorithm not in
this commit, a slow case under ASV_SKIP_SLOW=1) is reported as skipped (n/a).

Underscore names are not collected by asv's discovery, so `_OpBenchmark`
itself is never run.
"""
import os
import statistics
import time

import numpy as np

import fastconv

try:
    from asv_runner.benchmarks.mark import SkipNotImplemented
except ImportError:  # asv < 0.6: a NotImplementedError still marks the benchmark skipped in setup
    SkipNotImplemented = NotImplementedError

# The suite owns its cases: asv measures every commit of the history with this
# file, so the shapes must not change when fastconv's own bench module does.
# C1-C5 and DW are the standard cases of `python -m fastconv bench`.
CONV_CASES = {  # name: (N, C, H=W, K, kernel, stride, padding)
    "C1": (64, 3, 32, 32, 3, 1, 1),
    "C2": (8, 64, 56, 64, 3, 1, 1),
    "C3": (1, 128, 112, 128, 3, 1, 1),
    "C4": (8, 3, 227, 96, 11, 4, 0),
    "C5": (8, 256, 28, 512, 1, 1, 0),
    "DW": (8, 64, 56, 64, 3, 1, 1),    # depthwise: groups = C
}
CONV_GROUPS = {"DW": 64}                # cases not listed: groups = 1

#: conv2d algorithms; one a commit lacks, or that rejects a case (ValueError), is
#: skipped, so an algorithm still to come (e.g. "winograd") can be listed here.
ALGORITHMS = ["im2col", "direct", "winograd", "auto"]

CONVT_CASES = {  # name: (N, C, H=W, K, kernel, stride, padding, output_padding): 2x upsamplings
    "T1": (8, 128, 14, 64, 3, 2, 1, 1),
    "T2": (8, 256, 7, 128, 4, 2, 1, 0),     # a DCGAN generator's
}

CONV1D_CASES = {  # name: (N, C, L, K, kernel, stride, padding)
    "L1": (16, 64, 4096, 64, 9, 1, 4),
    "L2": (8, 1, 16000, 32, 101, 4, 50),
}

CONVOLVE_CASES = {  # name: (signal length, kernel taps): `convolve` against numpy.convolve
    "1e6x101": (10 ** 6, 101),
    "1e6x9": (10 ** 6, 9),
}

CONVOLVE2D_CASES = {  # name: (image H=W, kernel k): `convolve2d` against scipy.signal.convolve2d
    "2048x5": (2048, 5),
    "512x15": (512, 15),
}

POOL_CASES = {  # name: (N, C, H=W, kernel, stride)
    "P1": (8, 64, 112, 2, 2),
    "P2": (8, 64, 112, 3, 2),
}

DTYPES = ["float32", "float64"]
THREADS = [1, 2]

#: ASV_SKIP_SLOW=1 leaves out the NumPy reference on the big shapes (and the
#: speed-up tracks that need it): they dominate the suite's run time.
SKIP_SLOW = os.environ.get("ASV_SKIP_SLOW", "0").lower() not in ("", "0", "false", "no")
SLOW_REFERENCE_CASES = {"C2", "C3", "C4", "L1", "2048x5"}


def skip(reason):
    """Skip this benchmark for this parameter set (asv reports it as n/a)."""
    raise NotImplementedError(reason)


def interleaved_medians(impls, repeats=5):
    """Median seconds per callable, timed round-robin after one warm-up call each
    (the same method as `python -m fastconv bench`). A copy, not an import of
    fastconv.bench: asv runs this suite against every commit of the history,
    including ones whose fastconv has no bench module."""
    for fn in impls.values():
        fn()
    names = list(impls)
    samples = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            impls[name]()
            samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(s) for name, s in samples.items()}


try:  # imported once here, so that asv's forkserver loads it once for every benchmark
    import torch as _torch_module
except ImportError:
    _torch_module = None
_torch_ready = False


def load_torch():
    """torch warmed up with one autograd backward (its CPU conv runs several times
    slower before the first one), or None when it is not importable."""
    global _torch_ready
    if _torch_module is not None and not _torch_ready:
        x = _torch_module.randn(2, 3, 16, 16, requires_grad=True)
        w = _torch_module.randn(4, 3, 3, 3, requires_grad=True)
        _torch_module.nn.functional.conv2d(x, w, padding=1).sum().backward()
        _torch_ready = True
    return _torch_module


def random_array(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


class _OpBenchmark:
    """Paired fastconv / reference / torch benchmarks; subclasses fill `self.impls`
    in `prepare(*params)` and declare `params` / `param_names` ending in dtype, threads."""

    timeout = 300
    rounds = 1          # the suite is large and the machine small: asv's default is 2
    repeat = (1, 5, 10.0)
    speedup_repeats = 5

    def setup(self, *params):
        threads = params[-1]
        self._threads = threads
        self._saved_threads = fastconv.get_num_threads()
        fastconv.set_num_threads(threads)
        from threadpoolctl import threadpool_limits

        self._blas_limits = threadpool_limits(threads, user_api="blas")  # for the NumPy reference
        self.torch = load_torch()
        if self.torch is not None:
            self.torch.set_num_threads(threads)
        self.impls = {}
        self.tracks_only = False  # True: reference/torch feed the speed-up tracks only
        self.prepare(*params)
        if "fastconv" not in self.impls:
            skip("fastconv has no such op or algorithm in this version")

    def teardown(self, *params):
        fastconv.set_num_threads(self._saved_threads)
        self._blas_limits.restore_original_limits()

    def prepare(self, *params):
        raise NotImplementedError

    def _impl(self, name, timed=False):
        fn = self.impls.get(name)
        if fn is None or (timed and self.tracks_only):
            raise SkipNotImplemented(f"{name} not measured for these parameters")
        return fn

    def time_fastconv(self, *params):
        self.impls["fastconv"]()

    def time_reference(self, *params):
        self._impl("reference", timed=True)()

    def time_torch(self, *params):
        self._impl("torch", timed=True)()

    def peakmem_fastconv(self, *params):
        self.impls["fastconv"]()

    def peakmem_reference(self, *params):
        self._impl("reference", timed=True)()

    def peakmem_torch(self, *params):
        self._impl("torch", timed=True)()

    def _speedup(self, other):
        impls = {"fastconv": self.impls["fastconv"], other: self._impl(other)}
        t = interleaved_medians(impls, self.speedup_repeats)
        return t[other] / t["fastconv"]

    def track_speedup_reference(self, *params):
        return self._speedup("reference")

    track_speedup_reference.unit = "x (reference time / fastconv time)"

    def track_speedup_torch(self, *params):
        return self._speedup("torch")

    track_speedup_torch.unit = "x (torch time / fastconv time)"
