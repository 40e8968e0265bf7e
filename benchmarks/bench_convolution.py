"""conv2d forward and backward, per algorithm, over the standard cases C1-C5."""
import fastconv
from fastconv import reference

from .common import (CONV_CASES, DTYPES, SKIP_SLOW, SLOW_REFERENCE_CASES, THREADS, _OpBenchmark,
                     random_array, skip)

ALGORITHMS = ["im2col", "direct", "winograd"]


def _has_algorithm(algorithm):
    try:
        from fastconv.convolution import ALGORITHMS as available
    except ImportError:
        return algorithm == "im2col"
    from fastconv import convolution
    return algorithm in getattr(convolution, "ALL_ALGORITHMS", available)


class _Conv2dBase(_OpBenchmark):
    params = [list(CONV_CASES), ALGORITHMS, DTYPES, THREADS]
    param_names = ["case", "algorithm", "dtype", "threads"]

    def arrays(self, case, dtype, algorithm):
        N, C, H, K, k, s, p = CONV_CASES[case]
        if algorithm == "winograd" and (k, s) != (3, 1):
            skip("winograd runs 3x3 stride-1 convolutions only")
        self.x = random_array((N, C, H, H), dtype, 0)
        self.w = random_array((K, C, k, k), dtype, 1)
        self.kw = dict(stride=s, padding=p)

    def comparisons(self, case, algorithm):
        """The reference and torch do not depend on `algorithm`: measure them once
        (with the first algorithm); the speed-up tracks compare every algorithm."""
        self.tracks_only = algorithm != ALGORITHMS[0]
        with_ref = not (SKIP_SLOW and case in SLOW_REFERENCE_CASES)
        return with_ref, self.torch is not None


class Conv2dForward(_Conv2dBase):
    def prepare(self, case, algorithm, dtype, threads):
        if not _has_algorithm(algorithm):
            skip(f"conv2d has no algorithm {algorithm!r} in this version")
        self.arrays(case, dtype, algorithm)
        x, w, kw = self.x, self.w, self.kw
        self.impls["fastconv"] = lambda: fastconv.conv2d(x, w, algorithm=algorithm, **kw)
        with_ref, with_torch = self.comparisons(case, algorithm)
        if with_ref:
            self.impls["reference"] = lambda: reference.conv2d(x, w, **kw)
        if with_torch:
            torch = self.torch
            tx, tw = torch.from_numpy(x), torch.from_numpy(w)

            def torch_forward():
                with torch.no_grad():
                    torch.nn.functional.conv2d(tx, tw, **kw)

            self.impls["torch"] = torch_forward


class Conv2dBackward(_Conv2dBase):
    """Gradients w.r.t. input, weight and bias. torch cannot run a backward alone:
    its figure is forward + backward (as in `python -m fastconv bench`)."""

    def prepare(self, case, algorithm, dtype, threads):
        if not _has_algorithm(algorithm):
            skip(f"conv2d has no algorithm {algorithm!r} in this version")
        self.arrays(case, dtype, algorithm)
        x, w, kw = self.x, self.w, self.kw
        go = random_array(fastconv.conv2d(x, w, **kw).shape, dtype, 2)
        self.impls["fastconv"] = lambda: fastconv.conv2d_backward(go, x, w, algorithm=algorithm, **kw)
        with_ref, with_torch = self.comparisons(case, algorithm)
        if with_ref:
            self.impls["reference"] = lambda: reference.conv2d_backward(go, x, w, **kw)
        if with_torch:
            torch = self.torch
            txg = torch.from_numpy(x).clone().requires_grad_(True)
            twg = torch.from_numpy(w).clone().requires_grad_(True)
            tgo = torch.from_numpy(go)

            def torch_backward():
                txg.grad = twg.grad = None
                torch.nn.functional.conv2d(txg, twg, **kw).backward(tgo)

            self.impls["torch"] = torch_backward
