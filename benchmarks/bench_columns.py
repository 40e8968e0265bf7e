"""im2col and col2im (== torch unfold / fold) on the column shapes of C2 and C4."""
import fastconv
from fastconv import reference

from .common import DTYPES, THREADS, _OpBenchmark, random_array

COLUMN_CASES = {  # name: (N, C, H=W, kernel, stride, padding), as in `python -m fastconv bench`
    "C2": (8, 64, 56, 3, 1, 1),
    "C4": (8, 3, 227, 11, 4, 0),
}


class _ColumnsBase(_OpBenchmark):
    params = [list(COLUMN_CASES), DTYPES, THREADS]
    param_names = ["case", "dtype", "threads"]

    def arrays(self, case, dtype):
        N, C, H, k, s, p = COLUMN_CASES[case]
        self.H = H
        self.x = random_array((N, C, H, H), dtype)
        self.kw = dict(kernel_size=k, stride=s, padding=p)
        self.cols = fastconv.im2col(self.x, **self.kw)


class Im2col(_ColumnsBase):
    def prepare(self, case, dtype, threads):
        self.arrays(case, dtype)
        x, kw = self.x, self.kw
        self.impls["fastconv"] = lambda: fastconv.im2col(x, **kw)
        self.impls["reference"] = lambda: reference.im2col(x, **kw)
        if self.torch is not None:
            tx = self.torch.from_numpy(x)
            self.impls["torch"] = lambda: self.torch.nn.functional.unfold(tx, **kw)


class Col2im(_ColumnsBase):
    def prepare(self, case, dtype, threads):
        self.arrays(case, dtype)
        cols, H, kw = self.cols, self.H, self.kw
        self.impls["fastconv"] = lambda: fastconv.col2im(cols, H, **kw)
        self.impls["reference"] = lambda: reference.col2im(cols, H, **kw)
        if self.torch is not None:
            tcols = self.torch.from_numpy(cols)
            self.impls["torch"] = lambda: self.torch.nn.functional.fold(tcols, H, **kw)
