"""conv2d forward and backward per algorithm over the standard cases C1-C5 and the
depthwise DW, conv_transpose2d forward per algorithm and backward, and conv1d
forward and backward."""
import fastconv
from fastconv import reference

from .common import (
    ALGORITHMS,
    CONV1D_CASES,
    CONV_CASES,
    CONV_GROUPS,
    CONVT_CASES,
    DTYPES,
    SKIP_SLOW,
    SLOW_REFERENCE_CASES,
    THREADS,
    _OpBenchmark,
    random_array,
    skip,
)


def _check_supported(case, algorithm, dtype):
    """Skip unless this commit's conv2d has `algorithm` and accepts the case's
    arguments with it (probed on a tiny input of the same window)."""
    try:
        from fastconv import convolution
        available = getattr(convolution, "ALL_ALGORITHMS", convolution.ALGORITHMS)
    except ImportError:
        available = ("im2col",)
    if algorithm not in available:
        skip(f"conv2d has no algorithm {algorithm!r} in this version")
    _, C, _, K, k, s, p = CONV_CASES[case]
    groups = CONV_GROUPS.get(case, 1)
    kw = dict(stride=s, padding=p, groups=groups) if groups > 1 else dict(stride=s, padding=p)
    x = random_array((1, C, k + s, k + s), dtype)
    w = random_array((K, C // groups, k, k), dtype)
    try:
        fastconv.conv2d(x, w, algorithm=algorithm, **kw)
    except (TypeError, ValueError) as error:
        skip(f"conv2d(algorithm={algorithm!r}) does not run case {case} in this version: {error}")


class _Conv2dBase(_OpBenchmark):
    params = [list(CONV_CASES), ALGORITHMS, DTYPES, THREADS]
    param_names = ["case", "algorithm", "dtype", "threads"]

    def arrays(self, case, algorithm, dtype):
        _check_supported(case, algorithm, dtype)
        N, C, H, K, k, s, p = CONV_CASES[case]
        groups = CONV_GROUPS.get(case, 1)
        self.x = random_array((N, C, H, H), dtype, 0)
        self.w = random_array((K, C // groups, k, k), dtype, 1)
        self.kw = dict(stride=s, padding=p, groups=groups) if groups > 1 else dict(stride=s, padding=p)

    def calibrate(self, algorithm):
        """"auto" times the algorithms the first time a shape class is seen in a process
        (fastconv._autotune): once here, so that the timings measure the choice it keeps."""
        if algorithm == "auto":
            self.impls["fastconv"]()

    def comparisons(self, case, algorithm):
        """The reference and torch do not depend on `algorithm`: measure them once
        (with the first algorithm); the speed-up tracks compare every algorithm."""
        self.tracks_only = algorithm != ALGORITHMS[0]
        with_ref = not (SKIP_SLOW and case in SLOW_REFERENCE_CASES)
        return with_ref, self.torch is not None


class Conv2dForward(_Conv2dBase):
    def prepare(self, case, algorithm, dtype, threads):
        self.arrays(case, algorithm, dtype)
        x, w, kw = self.x, self.w, self.kw
        self.impls["fastconv"] = lambda: fastconv.conv2d(x, w, algorithm=algorithm, **kw)
        self.calibrate(algorithm)
        with_ref, with_torch = self.comparisons(case, algorithm)
        if with_ref:
            self.impls["reference"] = lambda: reference.conv2d(x, w, **kw)
        if with_torch:
            self.impls["torch"] = _torch_forward(self.torch, self.torch.nn.functional.conv2d, x, w, kw)


class Conv2dBackward(_Conv2dBase):
    """Gradients w.r.t. input, weight and bias. torch cannot run a backward alone:
    its figure is forward + backward (as in `python -m fastconv bench`)."""

    def prepare(self, case, algorithm, dtype, threads):
        self.arrays(case, algorithm, dtype)
        x, w, kw = self.x, self.w, self.kw
        go = random_array(fastconv.conv2d(x, w, **kw).shape, dtype, 2)
        self.impls["fastconv"] = lambda: fastconv.conv2d_backward(go, x, w, algorithm=algorithm, **kw)
        self.calibrate(algorithm)
        with_ref, with_torch = self.comparisons(case, algorithm)
        if with_ref:
            self.impls["reference"] = lambda: reference.conv2d_backward(go, x, w, **kw)
        if with_torch:
            self.impls["torch"] = _torch_backward(self.torch, self.torch.nn.functional.conv2d, x, w, go, kw)


class _ConvTranspose2dBase(_OpBenchmark):
    def arrays(self, case, dtype):
        if not hasattr(fastconv, "conv_transpose2d"):
            skip("fastconv.conv_transpose2d is not in this version")
        N, C, H, K, k, s, p, op = CONVT_CASES[case]
        self.x = random_array((N, C, H, H), dtype, 0)
        self.w = random_array((C, K, k, k), dtype, 1)
        self.kw = dict(stride=s, padding=p, output_padding=op)


class ConvTranspose2dForward(_ConvTranspose2dBase):
    """Per algorithm of conv2d's input gradient, which it runs ("auto": the one measured
    fastest, fastconv._autotune's "grad_x" pass)."""
    params = [list(CONVT_CASES), ["im2col", "direct", "auto"], DTYPES, THREADS]
    param_names = ["case", "algorithm", "dtype", "threads"]

    def prepare(self, case, algorithm, dtype, threads):
        self.arrays(case, dtype)
        x, w, kw = self.x, self.w, self.kw
        try:
            fastconv.conv_transpose2d(x[:1], w, algorithm=algorithm, **kw)
        except TypeError:
            skip("conv_transpose2d has no algorithm argument in this version")
        self.impls["fastconv"] = lambda: fastconv.conv_transpose2d(x, w, algorithm=algorithm, **kw)
        self.impls["fastconv"]()        # "auto" calibrates the class here, not in the timing
        self.tracks_only = algorithm != "im2col"
        self.impls["reference"] = lambda: reference.conv_transpose2d(x, w, **kw)
        if self.torch is not None:
            self.impls["torch"] = _torch_forward(self.torch, self.torch.nn.functional.conv_transpose2d, x, w, kw)


class ConvTranspose2dBackward(_ConvTranspose2dBase):
    """All three gradients; torch's figure is forward + backward, as for conv2d."""
    params = [list(CONVT_CASES), DTYPES, THREADS]
    param_names = ["case", "dtype", "threads"]

    def prepare(self, case, dtype, threads):
        self.arrays(case, dtype)
        x, w, kw = self.x, self.w, self.kw
        go = random_array(fastconv.conv_transpose2d(x, w, **kw).shape, dtype, 2)
        self.impls["fastconv"] = lambda: fastconv.conv_transpose2d_backward(go, x, w, **kw)
        self.impls["fastconv"]()
        self.impls["reference"] = lambda: reference.conv_transpose2d_backward(go, x, w, **kw)
        if self.torch is not None:
            self.impls["torch"] = _torch_backward(self.torch, self.torch.nn.functional.conv_transpose2d, x, w, go,
                                                  kw)


def _torch_forward(torch, conv, x, w, kw):
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)

    def torch_forward():
        with torch.no_grad():
            conv(tx, tw, **kw)

    return torch_forward


def _torch_backward(torch, conv, x, w, go, kw):
    txg = torch.from_numpy(x).clone().requires_grad_(True)
    twg = torch.from_numpy(w).clone().requires_grad_(True)
    tgo = torch.from_numpy(go)

    def torch_backward():
        txg.grad = twg.grad = None
        conv(txg, twg, **kw).backward(tgo)

    return torch_backward


class _Conv1dBase(_OpBenchmark):
    params = [list(CONV1D_CASES), DTYPES, THREADS]
    param_names = ["case", "dtype", "threads"]

    def arrays(self, case, dtype):
        if not hasattr(fastconv, "conv1d"):
            skip("fastconv.conv1d is not in this version")
        N, C, L, K, k, s, p = CONV1D_CASES[case]
        self.x = random_array((N, C, L), dtype, 0)
        self.w = random_array((K, C, k), dtype, 1)
        self.kw = dict(stride=s, padding=p)
        self.with_ref = not (SKIP_SLOW and case in SLOW_REFERENCE_CASES)


class Conv1dForward(_Conv1dBase):
    def prepare(self, case, dtype, threads):
        self.arrays(case, dtype)
        x, w, kw = self.x, self.w, self.kw
        self.impls["fastconv"] = lambda: fastconv.conv1d(x, w, **kw)
        if self.with_ref:
            self.impls["reference"] = lambda: reference.conv1d(x, w, **kw)
        if self.torch is not None:
            self.impls["torch"] = _torch_forward(self.torch, self.torch.nn.functional.conv1d, x, w, kw)


class Conv1dBackward(_Conv1dBase):
    """torch's figure is forward + backward, as for conv2d."""

    def prepare(self, case, dtype, threads):
        self.arrays(case, dtype)
        x, w, kw = self.x, self.w, self.kw
        go = random_array(fastconv.conv1d(x, w, **kw).shape, dtype, 2)
        self.impls["fastconv"] = lambda: fastconv.conv1d_backward(go, x, w, **kw)
        if self.with_ref:
            self.impls["reference"] = lambda: reference.conv1d_backward(go, x, w, **kw)
        if self.torch is not None:
            self.impls["torch"] = _torch_backward(self.torch, self.torch.nn.functional.conv1d, x, w, go, kw)
