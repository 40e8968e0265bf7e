"""Pooling forward and backward: max, average and sum pooling over P1 (2x2 stride 2)
and P2 (3x3 stride 2) on (8, 64, 112, 112).

Written against the public API of DESIGN.md; an op missing from the installed
fastconv (or from its reference) is skipped, so the suite runs on every commit.
"""
import fastconv
from fastconv import reference

from .common import DTYPES, POOL_CASES, THREADS, _OpBenchmark, random_array, skip


class _PoolBase(_OpBenchmark):
    params = [list(POOL_CASES), DTYPES, THREADS]
    param_names = ["case", "dtype", "threads"]
    op = None  # "max_pool2d", "avg_pool2d", "sum_pool2d"

    def arrays(self, case, dtype):
        N, C, H, k, s = POOL_CASES[case]
        if not hasattr(fastconv, self.op):
            skip(f"fastconv.{self.op} is not in this version")
        self.x = random_array((N, C, H, H), dtype)
        self.kw = dict(kernel_size=k, stride=s)

    def torch_forward(self):
        F = self.torch.nn.functional
        if self.op == "max_pool2d":
            return F.max_pool2d
        if self.op == "avg_pool2d":
            return F.avg_pool2d
        return lambda x, **kw: F.avg_pool2d(x, divisor_override=1, **kw)  # a sum

    def torch_impls(self, backward):
        if self.torch is None:
            return
        torch, forward, kw = self.torch, self.torch_forward(), self.kw
        if not backward:
            tx = torch.from_numpy(self.x)

            def call():
                with torch.no_grad():
                    forward(tx, **kw)
        else:
            txg = torch.from_numpy(self.x).clone().requires_grad_(True)
            tgo = torch.from_numpy(self.go)

            def call():  # forward + backward: torch cannot run a backward alone
                txg.grad = None
                forward(txg, **kw).backward(tgo)

        self.impls["torch"] = call


class _PoolForward(_PoolBase):
    def prepare(self, case, dtype, threads):
        self.arrays(case, dtype)
        x, kw = self.x, self.kw
        fc, ref = getattr(fastconv, self.op), getattr(reference, self.op, None)
        self.impls["fastconv"] = lambda: fc(x, **kw)
        if ref is not None:
            self.impls["reference"] = lambda: ref(x, **kw)
        self.torch_impls(backward=False)


class _PoolBackward(_PoolBase):
    def prepare(self, case, dtype, threads):
        self.arrays(case, dtype)
        name = self.op + "_backward"
        if not hasattr(fastconv, name):
            skip(f"fastconv.{name} is not in this version")
        x, kw = self.x, self.kw
        fc_bwd, ref_bwd = getattr(fastconv, name), getattr(reference, name, None)
        if self.op == "max_pool2d":
            y, idx = fastconv.max_pool2d(x, return_indices=True, **kw)
            self.go = random_array(y.shape, x.dtype, 1)
            go = self.go
            self.impls["fastconv"] = lambda: fc_bwd(go, idx, x.shape)
            if ref_bwd is not None:
                self.impls["reference"] = lambda: ref_bwd(go, idx, x.shape)
        else:
            y = getattr(fastconv, self.op)(x, **kw)
            self.go = random_array(y.shape, x.dtype, 1)
            go = self.go
            self.impls["fastconv"] = lambda: fc_bwd(go, x.shape, **kw)
            if ref_bwd is not None:
                self.impls["reference"] = lambda: ref_bwd(go, x.shape, **kw)
        self.torch_impls(backward=True)


class MaxPool2dForward(_PoolForward):
    op = "max_pool2d"


class MaxPool2dBackward(_PoolBackward):
    op = "max_pool2d"


class AvgPool2dForward(_PoolForward):
    op = "avg_pool2d"


class AvgPool2dBackward(_PoolBackward):
    op = "avg_pool2d"


class SumPool2dForward(_PoolForward):
    op = "sum_pool2d"


class SumPool2dBackward(_PoolBackward):
    op = "sum_pool2d"
