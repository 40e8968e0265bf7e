"""Thread scaling: every op's fastconv call at 1 and at 2 threads, timed interleaved
in one process; `track_speedup` is the ratio (issue target: >= 1.7x on 2 cores for
pooling and im2col). The per-family classes also carry a `threads` parameter, so
their time_fastconv figures give the same comparison across commits."""
import fastconv

# Modules, not classes, under underscore names: asv would collect imported classes again.
from . import bench_columns as _columns
from . import bench_convolution as _convolution
from . import bench_pooling as _pooling
from .common import interleaved_medians

OPS = {  # name: (benchmark class, its parameters less `threads`)
    "im2col C2": (_columns.Im2col, ("C2", "float32")),
    "col2im C2": (_columns.Col2im, ("C2", "float32")),
    "conv2d fwd C2": (_convolution.Conv2dForward, ("C2", "im2col", "float32")),
    "conv2d bwd C2": (_convolution.Conv2dBackward, ("C2", "im2col", "float32")),
    "conv2d fwd C2 direct": (_convolution.Conv2dForward, ("C2", "direct", "float32")),
    "conv2d fwd DW auto": (_convolution.Conv2dForward, ("DW", "auto", "float32")),
    "conv2d bwd DW auto": (_convolution.Conv2dBackward, ("DW", "auto", "float32")),
    "max_pool2d fwd P1": (_pooling.MaxPool2dForward, ("P1", "float32")),
    "max_pool2d bwd P1": (_pooling.MaxPool2dBackward, ("P1", "float32")),
    "max_pool2d fwd P2": (_pooling.MaxPool2dForward, ("P2", "float32")),
    "avg_pool2d fwd P1": (_pooling.AvgPool2dForward, ("P1", "float32")),
    "avg_pool2d bwd P1": (_pooling.AvgPool2dBackward, ("P1", "float32")),
    "sum_pool2d fwd P1": (_pooling.SumPool2dForward, ("P1", "float32")),
}


class ThreadScaling:
    params = [list(OPS)]
    param_names = ["op"]
    timeout = 300
    counts = (1, 2)

    def setup(self, op):
        cls, params = OPS[op]
        self.bench = cls()
        self.bench.setup(*params, max(self.counts))  # NotImplementedError: op not in this version
        self.fn = self.bench.impls["fastconv"]

    def teardown(self, op):
        self.bench.teardown()

    def _at(self, n):
        def call():
            with fastconv.threads(n):
                self.fn()
        return call

    def track_speedup(self, op):
        lo, hi = self.counts
        t = interleaved_medians({lo: self._at(lo), hi: self._at(hi)}, repeats=7)
        return t[lo] / t[hi]

    track_speedup.unit = "x (time at 1 thread / time at 2 threads)"
