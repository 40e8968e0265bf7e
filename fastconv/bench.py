"""`python -m fastconv bench`: every op against the NumPy reference and, when it
is installed, PyTorch on the CPU — timed in one process, interleaved, medians.

Each section is a function returning `Case`s; a Case names the competing
callables for one op on one shape. All callables of a Case are timed round-robin
(each round calls each once, in rotating order) so that drifts in machine load
hit them alike; the table reports medians and the ratios between them, beside
the machine's measured ceilings (BLAS GEMM rate, the cores' FMA peak, copy bandwidth).
"""
import contextlib
import statistics
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

import fastconv
from fastconv import reference
from fastconv._kernels import _openmp


@dataclass
class Case:
    op: str                      # e.g. "conv2d fwd"
    label: str                   # e.g. "C2 (8,64,56,64,3,1,1)"
    dtype: str
    impls: dict                  # name -> zero-argument callable; "fastconv" first
    flops: float = 0.0           # useful floating-point work, for GFLOP/s
    bytes: float = 0.0           # bytes that must move (read + write), for GB/s
    note: str = ""               # a footnote on how the competitors are timed
    times: dict = field(default_factory=dict)
    timer: object = None         # (impls, repeats) -> medians; None: interleaved_medians


def interleaved_medians(impls, repeats=7):
    """Median seconds per callable, timed in rounds after one warm-up call each. Each
    round runs every callable once, in a new (seeded) order: a rotation would keep the
    cyclic order, so one callable would always run right after the same other one,
    e.g. after torch, whose OpenMP threads spin for milliseconds after each call."""
    for fn in impls.values():
        fn()
    names = list(impls)
    samples = {name: [] for name in names}
    order = np.random.default_rng(0)
    for _ in range(repeats):
        for name in order.permutation(names):
            t0 = time.perf_counter()
            impls[name]()
            samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(s) for name, s in samples.items()}


#: How long `settled_medians` runs a callable untimed before its timed call: longer
#: than the idle threads of torch's libgomp spin before they sleep. They spin a count,
#: not a time: ~6 ms on idle cores, 12-14 ms while fastconv's threads share the cores
#: (conv_transpose2d's forward took 2.5-6 ms against 2.2 ms 10-14 ms after torch's).
SETTLE_SECONDS = 0.03

#: ... and after a call of one of BLAS_SPINNERS: longer than OpenBLAS's idle threads
#: spin after a threaded GEMM (about 0.1 s: a conv_transpose2d forward right after a
#: 512x512 NumPy matmul took 1.5-2.3x its time for 100 ms, its own time from 150 ms).
BLAS_SPIN_SECONDS = 0.15

#: The callables whose threaded BLAS calls leave OpenBLAS's threads spinning.
BLAS_SPINNERS = ("reference",)


def settled_medians(impls, repeats):
    """Median seconds per callable, in rounds of a new (seeded) order each as
    `interleaved_medians`, but each callable settled before its timed call: a library's
    idle OpenMP threads spin for a while after its last op (torch's libgomp 6-14 ms,
    fastconv's ~0.2 ms, fastconv._threads), and a call timed in that window runs beside
    them on a shared core. So each timed call follows untimed calls of the same callable
    for at least SETTLE_SECONDS (idle instead would let the cores' wake-up costs into
    the small calls): it runs as it would in a process of its own, as a training loop's
    steps or a server's forwards do. After one of BLAS_SPINNERS (the NumPy reference)
    the settling lasts BLAS_SPIN_SECONDS, past OpenBLAS's spinning threads. The warm-up
    runs each callable until auto's choices are final (calibrated and rechecked), so
    that no timed call includes a calibration."""
    from fastconv._autotune import RECHECK_CALLS

    names = list(impls)
    samples = {name: [] for name in names}
    for fn in impls.values():
        for _ in range(1 + RECHECK_CALLS):
            fn()
    order = np.random.default_rng(0)
    previous = names[-1] if names else None
    for _ in range(repeats):
        for name in order.permutation(names):
            settle = BLAS_SPIN_SECONDS if previous in BLAS_SPINNERS and name != previous else SETTLE_SECONDS
            start = time.perf_counter()
            while True:
                impls[name]()
                if time.perf_counter() - start >= settle:
                    break
            t0 = time.perf_counter()
            impls[name]()
            samples[name].append(time.perf_counter() - t0)
            previous = name
    return {name: statistics.median(s) for name, s in samples.items()}


def gemm_rate(dtype=np.float32, n=2048, repeats=5):
    """GFLOP/s of NumPy's BLAS on an n x n matmul: the compute ceiling."""
    a = np.ones((n, n), dtype)
    b = np.ones((n, n), dtype)
    t = interleaved_medians({"gemm": lambda: a @ b}, repeats)["gemm"]
    return 2 * n ** 3 / t / 1e9


def fma_peak(dtype=np.float32, num_threads=None, iterations=1 << 21, repeats=5):
    """GFLOP/s of independent vector FMAs on `num_threads` threads (default: fastconv's
    count) at the widest vector ISA the CPU runs (the winograd kernel's build): the cores'
    compute peak. A direct convolution's effective rate stays below it; Winograd's, which
    counts the multiplies it saves, can pass it."""
    from fastconv import _winograd

    kernel, n = _winograd.kernel, num_threads or fastconv.get_num_threads()
    double = np.dtype(dtype) == np.float64
    t = interleaved_medians({"fma": lambda: kernel.fma_peak(iterations, n, double)}, repeats)["fma"]
    return n * iterations * kernel.fma_step_flops(double) / t / 1e9


def copy_bandwidth(nbytes=256 << 20, repeats=5, num_threads=None):
    """GB/s (bytes read + written) of a large array copy by `num_threads` OpenMP threads
    (default: fastconv's count): the memory ceiling at the thread count the ops use."""
    n = num_threads or fastconv.get_num_threads()
    src = np.ones(nbytes // 8)
    dst = np.empty_like(src)
    t = interleaved_medians({"copy": lambda: _openmp.parallel_copy(src, dst, n)}, repeats)["copy"]
    return 2 * nbytes / t / 1e9


def load_torch(num_threads):
    """torch, warmed up with one autograd backward (its CPU conv runs several times
    slower before the first one), or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(num_threads)
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    torch.nn.functional.conv2d(x, w, padding=1).sum().backward()
    return torch


# ---------------------------------------------------------------------------
# Sections

CONV_CASES = {  # name: (N, C, H=W, K, kernel, stride, padding)
    "C1": (64, 3, 32, 32, 3, 1, 1),
    "C2": (8, 64, 56, 64, 3, 1, 1),
    "C3": (1, 128, 112, 128, 3, 1, 1),
    "C4": (8, 3, 227, 96, 11, 4, 0),
    "C5": (8, 256, 28, 512, 1, 1, 0),
}


def torch_conv2d(torch, x, w, grad_output, **kw):
    """(forward, backward) callables for torch's conv2d on the same arrays. The
    backward runs forward + backward: torch cannot run the backward alone."""
    F = torch.nn.functional
    tx, tw, tgo = (torch.from_numpy(a) for a in (x, w, grad_output))
    txg, twg = tx.clone().requires_grad_(True), tw.clone().requires_grad_(True)

    def forward():
        with torch.no_grad():
            F.conv2d(tx, tw, **kw)

    def backward():
        txg.grad = twg.grad = None
        F.conv2d(txg, twg, **kw).backward(tgo)

    return forward, backward


def settled_note(rows):
    """The table's footnote on how `rows` are timed (`settled_medians`)."""
    return (f"{rows}: each timed call follows untimed calls of the same callable for at least "
            f"{SETTLE_SECONDS * 1e3:g} ms, {BLAS_SPIN_SECONDS:g} s after the reference (torch's idle threads spin "
            "6-14 ms after its call, OpenBLAS's ~0.1 s after the reference's GEMMs, and would share the cores "
            "with the next; the neighbours section measures that)")


SETTLED_NOTE = settled_note("fwd/bwd auto=")


def conv_cases(torch, dtypes=("float32", "float64"), with_reference=True):
    rng = np.random.default_rng(0)
    for dtype in dtypes:
        for name, (N, C, H, K, k, s, p) in CONV_CASES.items():
            x = rng.standard_normal((N, C, H, H)).astype(dtype)
            w = rng.standard_normal((K, C, k, k)).astype(dtype)
            y = fastconv.conv2d(x, w, stride=s, padding=p)
            go = rng.standard_normal(y.shape).astype(dtype)
            flops = 2.0 * y.size * C * k * k
            label = f"{name} {(N, C, H, K, k, s, p)}".replace(" ", "")
            fwd = {"fastconv": lambda: fastconv.conv2d(x, w, stride=s, padding=p)}
            bwd = {"fastconv": lambda: fastconv.conv2d_backward(go, x, w, stride=s, padding=p)}
            if with_reference:
                fwd["reference"] = lambda: reference.conv2d(x, w, stride=s, padding=p)
                bwd["reference"] = lambda: reference.conv2d_backward(go, x, w, stride=s, padding=p)
            if torch is not None:
                fwd["torch"], bwd["torch"] = torch_conv2d(torch, x, w, go, stride=s, padding=p)
            yield Case("conv2d fwd", label, dtype, fwd, flops=flops, timer=settled_medians,
                       note=settled_note("conv2d fwd/bwd"))
            yield Case("conv2d bwd", label, dtype, bwd, flops=2 * flops, timer=settled_medians)


DEPTHWISE_CASE = (8, 64, 56, 64, 3, 1, 1)   # groups = C


def direct_cases(torch, dtypes=("float32", "float64"), with_reference=True):
    """conv2d with algorithm="auto" (the fastconv column) against "direct", "im2col",
    "winograd" (3x3 stride-1 cases) and torch on C1-C5 and depthwise; then
    convolve/convolve2d against NumPy/SciPy."""
    from fastconv import _autotune
    from fastconv._validation import conv_geometry
    from fastconv.convolution import _choose_algorithm

    rng = np.random.default_rng(0)
    cases = [(name, shape, 1) for name, shape in CONV_CASES.items()] + [("DW", DEPTHWISE_CASE, DEPTHWISE_CASE[1])]
    for dtype in dtypes:
        for name, (N, C, H, K, k, s, p), groups in cases:
            x = rng.standard_normal((N, C, H, H)).astype(dtype)
            w = rng.standard_normal((K, C // groups, k, k)).astype(dtype)
            kw = dict(stride=s, padding=p, groups=groups)
            y = fastconv.conv2d(x, w, **kw)
            go = rng.standard_normal(y.shape).astype(dtype)
            geometry = conv_geometry((H, H), k, s, p, 1)
            for _ in range(1 + _autotune.RECHECK_CALLS):    # calibrated and rechecked: the final choice
                auto = _choose_algorithm(x.shape, w.shape, geometry, groups, x.dtype)
                # grad_x's / grad_weight's, one name where they agree
                auto_bwd = "/".join(dict.fromkeys(_choose_algorithm(x.shape, w.shape, geometry, groups, x.dtype, p)
                                                  for p in ("grad_x", "grad_weight")))
            label = f"{name} {(N, C, H, K, k, s, p)}".replace(" ", "") + (f"g{groups}" if groups > 1 else "")
            flops = 2.0 * y.size * (C // groups) * k * k
            fwd = {"fastconv": lambda: fastconv.conv2d(x, w, **kw)}
            bwd = {"fastconv": lambda: fastconv.conv2d_backward(go, x, w, **kw)}
            algorithms = ("direct", "im2col") + (("winograd",) if (k, s) == (3, 1) else ())
            for algorithm in algorithms:
                fwd[algorithm] = lambda a=algorithm: fastconv.conv2d(x, w, algorithm=a, **kw)
                bwd[algorithm] = lambda a=algorithm: fastconv.conv2d_backward(go, x, w, algorithm=a, **kw)
            if torch is not None:
                fwd["torch"], bwd["torch"] = torch_conv2d(torch, x, w, go, **kw)
            yield Case(f"fwd auto={auto}", label, dtype, fwd, flops=flops, timer=settled_medians,
                       note=SETTLED_NOTE)
            yield Case(f"bwd auto={auto_bwd}", label, dtype, bwd, flops=2 * flops, timer=settled_medians,
                       note=SETTLED_NOTE)
    import scipy.signal

    for dtype in dtypes:
        a = rng.standard_normal(10 ** 6).astype(dtype)
        v = rng.standard_normal(101).astype(dtype)
        image = rng.standard_normal((2048, 2048)).astype(dtype)
        kernel = rng.standard_normal((5, 5)).astype(dtype)
        yield Case("convolve", "1e6*101", dtype,
                   {"fastconv": lambda: fastconv.convolve(a, v), "numpy": lambda: np.convolve(a, v)},
                   flops=2.0 * a.size * v.size)
        yield Case("convolve2d", "2048^2*5x5", dtype,
                   {"fastconv": lambda: fastconv.convolve2d(image, kernel),
                    "scipy": lambda: scipy.signal.convolve2d(image, kernel)},
                   flops=2.0 * 2052 ** 2 * 25)




COLUMN_CASES = {  # name: (N, C, H=W, kernel, stride, padding): the im2col of conv cases C2 and C4
    "C2": (8, 64, 56, 3, 1, 1),
    "C4": (8, 3, 227, 11, 4, 0),
}


def column_cases(torch, dtypes=("float32", "float64"), with_reference=True):
    """im2col / col2im (== torch unfold / fold): pure data movement, rated in GB/s."""
    rng = np.random.default_rng(0)
    for dtype in dtypes:
        for name, (N, C, H, k, s, p) in COLUMN_CASES.items():
            x = rng.standard_normal((N, C, H, H)).astype(dtype)
            cols = fastconv.im2col(x, k, stride=s, padding=p)
            moved = float(x.nbytes + cols.nbytes)
            label = f"{name} {(N, C, H, k, s, p)}".replace(" ", "")
            fwd = {"fastconv": lambda: fastconv.im2col(x, k, stride=s, padding=p)}
            adj = {"fastconv": lambda: fastconv.col2im(cols, H, k, stride=s, padding=p)}
            if with_reference:
                fwd["reference"] = lambda: reference.im2col(x, k, stride=s, padding=p)
                adj["reference"] = lambda: reference.col2im(cols, H, k, stride=s, padding=p)
            if torch is not None:
                tx, tcols = torch.from_numpy(x), torch.from_numpy(cols)
                F = torch.nn.functional
                fwd["torch"] = lambda: F.unfold(tx, k, stride=s, padding=p)
                adj["torch"] = lambda: F.fold(tcols, H, k, stride=s, padding=p)
            yield Case("im2col", label, dtype, fwd, bytes=moved)
            yield Case("col2im", label, dtype, adj, bytes=moved)


POOL_SHAPE = (8, 64, 112, 112)
POOL_WINDOWS = {  # label: (kernel, stride, padding)
    "2x2s2": (2, 2, 0),
    "3x3s2p1": (3, 2, 1),    # ResNet's stem: overlapping windows
}
TORCH_BWD_NOTE = ("torch bwd: the aten backward op alone (max_pool2d_with_indices_backward / "
                  "avg_pool2d_backward), no forward")


def pool_cases(torch, dtypes=("float32", "float64"), with_reference=True):
    """Max / average / sum / global pooling on (8, 64, 112, 112): memory-bound, so each
    case carries the bytes it must move and the table shows GB/s and the memory floor."""
    rng = np.random.default_rng(0)
    for dtype in dtypes:
        x = rng.standard_normal(POOL_SHAPE).astype(dtype)
        tx = torch.from_numpy(x) if torch is not None else None
        for name, (k, s, p) in POOL_WINDOWS.items():
            label = f"{name} {POOL_SHAPE}".replace(" ", "")
            y, idx = fastconv.max_pool2d(x, k, s, p, return_indices=True)
            go = rng.standard_normal(y.shape).astype(dtype)
            io = x.nbytes + y.nbytes
            cases = {
                "max_pool2d fwd": ({"fastconv": lambda: fastconv.max_pool2d(x, k, s, p)}, io),
                "max_pool2d +idx": ({"fastconv": lambda: fastconv.max_pool2d(x, k, s, p, return_indices=True)},
                                    io + idx.nbytes),
                "max_pool2d bwd": ({"fastconv": lambda: fastconv.max_pool2d_backward(go, idx, x.shape)},
                                   go.nbytes + idx.nbytes + x.nbytes),
                "avg_pool2d fwd": ({"fastconv": lambda: fastconv.avg_pool2d(x, k, s, p)}, io),
                "avg_pool2d bwd": ({"fastconv": lambda: fastconv.avg_pool2d_backward(go, x.shape, k, s, p)},
                                   go.nbytes + x.nbytes),
                "sum_pool2d fwd": ({"fastconv": lambda: fastconv.sum_pool2d(x, k, s, p)}, io),
                "sum_pool2d bwd": ({"fastconv": lambda: fastconv.sum_pool2d_backward(go, x.shape, k, s, p)},
                                   go.nbytes + x.nbytes),
            }
            if with_reference:
                cases["max_pool2d fwd"][0]["reference"] = lambda: reference.max_pool2d(x, k, s, p)
                cases["max_pool2d +idx"][0]["reference"] = lambda: reference.max_pool2d(x, k, s, p, return_indices=True)
                cases["max_pool2d bwd"][0]["reference"] = lambda: reference.max_pool2d_backward(go, idx, x.shape)
                cases["avg_pool2d fwd"][0]["reference"] = lambda: reference.avg_pool2d(x, k, s, p)
                cases["avg_pool2d bwd"][0]["reference"] = lambda: reference.avg_pool2d_backward(go, x.shape, k, s, p)
                cases["sum_pool2d fwd"][0]["reference"] = lambda: reference.sum_pool2d(x, k, s, p)
                cases["sum_pool2d bwd"][0]["reference"] = lambda: reference.sum_pool2d_backward(go, x.shape, k, s, p)
            if torch is not None:
                F, aten = torch.nn.functional, torch.ops.aten
                tgo, tidx = torch.from_numpy(go), torch.from_numpy(idx)
                cases["max_pool2d fwd"][0]["torch"] = lambda: F.max_pool2d(tx, k, s, p)
                cases["max_pool2d +idx"][0]["torch"] = lambda: F.max_pool2d(tx, k, s, p, return_indices=True)
                cases["max_pool2d bwd"][0]["torch"] = lambda: aten.max_pool2d_with_indices_backward(
                    tgo, tx, [k, k], [s, s], [p, p], [1, 1], False, tidx)
                cases["avg_pool2d fwd"][0]["torch"] = lambda: F.avg_pool2d(tx, k, s, p)
                cases["avg_pool2d bwd"][0]["torch"] = lambda: aten.avg_pool2d_backward(
                    tgo, tx, [k, k], [s, s], [p, p], False, True, None)
                cases["sum_pool2d fwd"][0]["torch"] = lambda: F.avg_pool2d(tx, k, s, p, divisor_override=1)
                cases["sum_pool2d bwd"][0]["torch"] = lambda: aten.avg_pool2d_backward(
                    tgo, tx, [k, k], [s, s], [p, p], False, True, 1)
            for op, (impls, nbytes) in cases.items():
                note = TORCH_BWD_NOTE if op.endswith("bwd") and "torch" in impls else ""
                yield Case(op, label, dtype, impls, bytes=nbytes, note=note, timer=settled_medians)
        label = f"global {POOL_SHAPE}".replace(" ", "")
        io = x.nbytes + x.nbytes // (POOL_SHAPE[2] * POOL_SHAPE[3])
        g_avg = {"fastconv": lambda: fastconv.global_avg_pool2d(x)}
        g_max = {"fastconv": lambda: fastconv.global_max_pool2d(x)}
        if with_reference:
            g_avg["reference"] = lambda: reference.global_avg_pool2d(x)
            g_max["reference"] = lambda: reference.global_max_pool2d(x)
        if torch is not None:
            g_avg["torch"] = lambda: torch.nn.functional.adaptive_avg_pool2d(tx, 1)
            g_max["torch"] = lambda: torch.nn.functional.adaptive_max_pool2d(tx, 1)
        yield Case("global_avg fwd", label, dtype, g_avg, bytes=io, timer=settled_medians,
                   note=settled_note("pooling"))
        yield Case("global_max fwd", label, dtype, g_max, bytes=io, timer=settled_medians)


def concurrency_cases(torch, dtypes=("float32", "float64"), with_reference=True):
    """Two Python threads, each running one long call with ``threads(1)``, against
    the same two calls one after the other. The kernels release the GIL, so on two
    free cores the pair takes about as long as one call: in the table "fastconv"
    is the concurrent pair, "reference" the sequential pair, and "vs ref" the
    speed-up of running them concurrently (2x at best)."""
    import threading

    rng = np.random.default_rng(0)
    for dtype in dtypes:
        x = [rng.standard_normal((8, 64, 56, 56)).astype(dtype) for _ in range(2)]
        w = rng.standard_normal((64, 64, 3, 3)).astype(dtype)
        y = fastconv.conv2d(x[0], w, padding=1)
        go = [rng.standard_normal(y.shape).astype(dtype) for _ in range(2)]
        p = [rng.standard_normal((16, 64, 112, 112)).astype(dtype) for _ in range(2)]
        calls = {
            "conv2d fwd": (lambda i: fastconv.conv2d(x[i], w, padding=1), 2.0 * y.size * 64 * 9),
            "conv2d bwd": (lambda i: fastconv.conv2d_backward(go[i], x[i], w, padding=1), 4.0 * y.size * 64 * 9),
            "max_pool2d": (lambda i: fastconv.max_pool2d(p[i], 3, 2, 1), 0.0),
        }
        for op, (call, flops) in calls.items():
            if not hasattr(fastconv, op.split()[0]):
                continue

            def one(i, call=call):
                with fastconv.threads(1):
                    call(i)

            def concurrent(one=one):
                pair = [threading.Thread(target=one, args=(i,)) for i in range(2)]
                for t in pair:
                    t.start()
                for t in pair:
                    t.join()

            def sequential(one=one):
                one(0)
                one(1)

            yield Case("2 callers", f"{op} threads(1) x2", dtype, {"fastconv": concurrent, "reference": sequential},
                       flops=2 * flops, bytes=0.0 if flops else 2.0 * p[0].nbytes * 1.25)


VIZ_NOTE = ("viz.occlusion: fastconv is the call itself (the windowed path: each patch position recomputes "
            "only the windows of the conv/pool layers its patch reaches); reference is the plain loop, every "
            "occluded image through the whole model (viz._occlusion_by_forward), on the reference layers")


def viz_cases(torch, dtypes=("float32", "float64"), with_reference=True):
    """`viz.occlusion` of one 28x28 digit by a 4x4 patch at stride 1 (625 positions)
    on the main job's LeNet widened to 28x28 inputs, against the plain loop on the
    reference layers (the issue's target: >= 20x)."""
    import copy

    from fastconv import viz

    rng = np.random.default_rng(0)
    for dtype in dtypes:
        model = fastconv.Sequential(
            fastconv.Conv2D(1, 16, 3, padding=1, dtype=dtype, rng=rng), fastconv.ReLU(), fastconv.MaxPool2D(2),
            fastconv.Conv2D(16, 32, 3, padding=1, dtype=dtype, rng=rng), fastconv.ReLU(), fastconv.MaxPool2D(2),
            fastconv.Flatten(), fastconv.Linear(32 * 7 * 7, 10, dtype=dtype, rng=rng))
        x = rng.standard_normal((1, 1, 28, 28)).astype(dtype)
        impls = {"fastconv": lambda model=model, x=x: viz.occlusion(model, x, 3, patch=4)}
        if with_reference:
            slow = copy.deepcopy(model).set_backend(reference)
            target = np.array([3])
            impls["reference"] = lambda slow=slow, x=x: viz._occlusion_by_forward(slow, x, target, (4, 4), (1, 1), 0.0)
        yield Case("viz.occlusion", "digit 28x28, patch 4, stride 1", dtype, impls, note=VIZ_NOTE)


BN_SHAPE = (32, 64, 56, 56)
ADAPTIVE_CASES = {"14->5": ((32, 64, 14, 14), 5), "13->6": ((32, 256, 13, 13), 6), "7->1": ((32, 512, 7, 7), 1)}
#: conv_transpose2d: (x shape, weight shape, keywords): a 2x upsampling of 128 channels.
CONVT_CASE = ((8, 128, 14, 14), (128, 64, 3, 3), dict(stride=2, padding=1, output_padding=1))


def ops_cases(torch, dtypes=("float32", "float64"), with_reference=True):
    """batch_norm2d (training and eval, forward and backward) on (32, 64, 56, 56) and adaptive
    pooling: memory-bound, so each case carries the bytes it must move (training forward:
    x read twice, out written; backward: x and grad_output read twice, grad_x written);
    and conv_transpose2d forward and backward (all three gradients), with GFLOP/s. Timed
    settled (`settled_medians`), as the direct section."""
    rng = np.random.default_rng(0)
    for dtype in dtypes:
        x = rng.standard_normal(BN_SHAPE).astype(dtype)
        g = rng.standard_normal(BN_SHAPE).astype(dtype)
        C = BN_SHAPE[1]
        rm, rv = np.zeros(C, dtype), np.ones(C, dtype)
        w, b = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
        label = f"{BN_SHAPE}".replace(" ", "")
        cases = {
            "bn train fwd": ({"fastconv": lambda: fastconv.batch_norm2d(x, rm, rv, w, b, training=True)}, 3 * x.nbytes),
            "bn eval fwd": ({"fastconv": lambda: fastconv.batch_norm2d(x, rm, rv, w, b)}, 2 * x.nbytes),
            "bn train bwd": ({"fastconv": lambda: fastconv.batch_norm2d_backward(g, x, w)}, 5 * x.nbytes),
            "bn eval bwd": ({"fastconv": lambda: fastconv.batch_norm2d_backward(
                g, x, w, training=False, running_mean=rm, running_var=rv)}, 3 * x.nbytes),
        }
        if with_reference:
            cases["bn train fwd"][0]["reference"] = lambda: reference.batch_norm2d(
                x, rm.copy(), rv.copy(), w, b, training=True)
            cases["bn eval fwd"][0]["reference"] = lambda: reference.batch_norm2d(x, rm, rv, w, b)
            cases["bn train bwd"][0]["reference"] = lambda: reference.batch_norm2d_backward(g, x, w)
            cases["bn eval bwd"][0]["reference"] = lambda: reference.batch_norm2d_backward(
                g, x, w, training=False, running_mean=rm, running_var=rv)
        if torch is not None:
            F = torch.nn.functional
            tx, tg, tw, tb = map(torch.from_numpy, (x, g, w, b))
            trm, trv = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
            _, tmean, tinvstd = torch.ops.aten.native_batch_norm(tx, tw, tb, None, None, True, 0.1, 1e-5)
            cases["bn train fwd"][0]["torch"] = lambda: F.batch_norm(tx, trm, trv, tw, tb, training=True)
            cases["bn eval fwd"][0]["torch"] = lambda: F.batch_norm(tx, trm, trv, tw, tb)
            cases["bn train bwd"][0]["torch"] = lambda: torch.ops.aten.native_batch_norm_backward(
                tg, tx, tw, None, None, tmean, tinvstd, True, 1e-5, [True, True, True])
        for op, (impls, nbytes) in cases.items():
            note = {"bn train fwd": settled_note("ops"), "bn train bwd": "torch bn train bwd: aten.native_batch_norm_backward "
                    "given the forward's saved mean and invstd" if "torch" in impls else ""}.get(op, "")
            yield Case(op, label, dtype, impls, bytes=nbytes, note=note, timer=settled_medians)
        for name, (shape, size) in ADAPTIVE_CASES.items():
            xa = rng.standard_normal(shape).astype(dtype)
            ya, ia = fastconv.adaptive_max_pool2d(xa, size, return_indices=True)
            ga = rng.standard_normal(ya.shape).astype(dtype)
            label = f"{name} {shape}".replace(" ", "")
            cases = {
                "adapt_avg fwd": ({"fastconv": lambda: fastconv.adaptive_avg_pool2d(xa, size)},
                                     xa.nbytes + ya.nbytes),
                "adapt_max fwd": ({"fastconv": lambda: fastconv.adaptive_max_pool2d(xa, size, True)},
                                     xa.nbytes + ya.nbytes + ia.nbytes),
                "adapt_avg bwd": ({"fastconv": lambda: fastconv.adaptive_avg_pool2d_backward(ga, xa.shape)},
                                     xa.nbytes + ya.nbytes),
            }
            if with_reference:
                cases["adapt_avg fwd"][0]["reference"] = lambda: reference.adaptive_avg_pool2d(xa, size)
                cases["adapt_max fwd"][0]["reference"] = lambda: reference.adaptive_max_pool2d(xa, size, True)
                cases["adapt_avg bwd"][0]["reference"] = lambda: reference.adaptive_avg_pool2d_backward(
                    ga, xa.shape)
            if torch is not None:
                F = torch.nn.functional
                txa, tga = torch.from_numpy(xa), torch.from_numpy(ga)
                cases["adapt_avg fwd"][0]["torch"] = lambda: F.adaptive_avg_pool2d(txa, size)
                cases["adapt_max fwd"][0]["torch"] = lambda: F.adaptive_max_pool2d(txa, size, True)
                cases["adapt_avg bwd"][0]["torch"] = lambda: torch.ops.aten._adaptive_avg_pool2d_backward(
                    tga, txa)
            for op, (impls, nbytes) in cases.items():
                yield Case(op, label, dtype, impls, bytes=nbytes, timer=settled_medians)
        yield from _conv_transpose_cases(torch, dtype, rng, with_reference)


def _conv_transpose_cases(torch, dtype, rng, with_reference):
    xs, ws, kw = CONVT_CASE
    x, w = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
    g = rng.standard_normal(fastconv.conv_transpose2d(x, w, **kw).shape).astype(dtype)
    flops = 2.0 * x.size * ws[1] * ws[2] * ws[3]
    fwd = {"fastconv": lambda: fastconv.conv_transpose2d(x, w, **kw)}
    bwd = {"fastconv": lambda: fastconv.conv_transpose2d_backward(g, x, w, **kw)}
    if with_reference:
        fwd["reference"] = lambda: reference.conv_transpose2d(x, w, **kw)
        bwd["reference"] = lambda: reference.conv_transpose2d_backward(g, x, w, **kw)
    if torch is not None:
        tx, tw = torch.from_numpy(x), torch.from_numpy(w)
        fwd["torch"] = lambda: torch.nn.functional.conv_transpose2d(tx, tw, **kw)
    label = f"{xs}x{ws[2]}x{ws[3]}s2".replace(" ", "")
    yield Case("convT fwd", label, dtype, fwd, flops=flops, timer=settled_medians)
    yield Case("convT bwd", label, dtype, bwd, flops=2 * flops, timer=settled_medians)


NEIGHBOUR_CASES = ("C1", "C2")
#: Timed epochs of the main job at each thread count beside the busy core (~0.1 s each).
MAIN_JOB_EPOCHS = 5
#: Seconds the busy neighbour process may run at most (it is stopped sooner).
BUSY_SECONDS = 120
BUSY_LOOP = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


def alone_and_beside(a, b, repeats):
    """Median seconds of `a` and of `b` called alone (back to back, before and after)
    and interleaved (a, b, a, b, ...): {"a": .., "b": .., "a beside b": .., "b beside a": ..}."""
    def timed(fn, samples):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)

    alone = {"a": [], "b": []}
    beside = {"a": [], "b": []}
    a(), b()
    for half in range(2):
        for name, fn in (("a", a), ("b", b)):
            fn()
            for _ in range(repeats):
                timed(fn, alone[name])
        if half == 0:
            for _ in range(repeats):
                timed(a, beside["a"])
                timed(b, beside["b"])
    med = statistics.median
    return {"a": med(alone["a"]), "b": med(alone["b"]),
            "a beside b": med(beside["a"]), "b beside a": med(beside["b"])}


def sklearn_openmp_call():
    """A short call into scikit-learn's own OpenMP runtime (k-means label assignment,
    a prange over samples), or None when scikit-learn is not installed."""
    try:
        from sklearn.cluster import KMeans
    except ImportError:
        return None
    points = np.random.default_rng(0).standard_normal((4096, 16)).astype(np.float32)
    km = KMeans(8, n_init=1, max_iter=2, random_state=0).fit(points)
    return lambda: km.predict(points)


@contextlib.contextmanager
def busy_neighbour(seconds=BUSY_SECONDS):
    """Another process keeping one core busy (a pure-Python loop), for at most `seconds`."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP.format(seconds=seconds)])
    try:
        time.sleep(0.2)   # let it start and take its core
        yield proc
    finally:
        proc.kill()
        proc.wait()


def main_job_images_per_second(num_threads, epochs=1):
    """Images/s of the main job's training (`fastconv.training.train`, batch 32) at `num_threads`."""
    import io

    from fastconv import training

    x, y, _, _ = training.load_digits()
    with fastconv.threads(num_threads):
        stats = training.train(training.lenet(rng=0), x, y, epochs=epochs, batch_size=32, stream=io.StringIO())
    return stats["images"] / sum(stats["step_seconds"])


def neighbour_cases(torch, dtypes=("float32",), with_reference=True):
    """C1 and C2 forward timed alone and interleaved with torch's conv2d and with a
    scikit-learn OpenMP call (its own runtime), in one process: the slowdown each
    library suffers beside the other. Then the main job's training speed at 1 and 2
    threads while another process keeps one core busy."""
    rng = np.random.default_rng(0)
    sk = sklearn_openmp_call()
    missing = [f"the runs beside {name}" for name, lib in (("torch", torch), ("scikit-learn", sk)) if lib is None]
    missing += ["the main job (its digits come from scikit-learn)"] if sk is None else []
    if missing:
        warnings.warn(f"bench neighbours: not installed, so left out: {', '.join(missing)} "
                      f"(pip install 'fastconv[bench]')", stacklevel=2)
    explained = False
    for dtype in dtypes:
        for name in NEIGHBOUR_CASES:
            N, C, H, K, k, s, p = CONV_CASES[name]
            x = rng.standard_normal((N, C, H, H)).astype(dtype)
            w = rng.standard_normal((K, C, k, k)).astype(dtype)
            label = f"{name} {(N, C, H, K, k, s, p)}".replace(" ", "")
            fc = lambda: fastconv.conv2d(x, w, stride=s, padding=p)
            neighbours = {}
            if torch is not None:
                neighbours["torch"] = torch_conv2d(torch, x, w, np.zeros((1,), dtype), stride=s, padding=p)[0]
            if sk is not None:
                neighbours["sklearn"] = sk
            for other, call in neighbours.items():
                t = alone_and_beside(fc, call, repeats=15 if name == "C1" else 5)
                note = (f"{name} {dtype} beside {other}: fastconv {t['a beside b'] / t['a']:.2f}x its time alone, "
                        f"{other} {t['b beside a'] / t['b']:.2f}x its time alone")
                case = Case(f"beside {other}", label, dtype, {}, note=note if explained else NEIGHBOURS_NOTE + note)
                case.times = {"fastconv": t["a"], other: t["b"], "fastconv beside": t["a beside b"],
                              f"{other} beside": t["b beside a"]}
                explained = True
                yield case
    if sk is None:
        return
    rates = {1: [], 2: []}
    with busy_neighbour():
        for n in (1, 2):    # untimed: the first epoch at each count also calibrates `auto`
            main_job_images_per_second(n)
        for _ in range(MAIN_JOB_EPOCHS):
            for n in (1, 2):
                rates[n].append(main_job_images_per_second(n))
    case = Case("main job", "busy core, 1 vs 2 thr", "float32", {},
                note=f"main job: training images/s beside a process that keeps one core busy: "
                     f"{statistics.median(rates[1]):,.0f} at 1 thread, {statistics.median(rates[2]):,.0f} "
                     f"at 2 threads (medians of {len(rates[1])} epochs each, alternated)")
    case.times = {"fastconv": 1 / statistics.median(rates[2]), "1 thread": 1 / statistics.median(rates[1])}
    yield case


NEIGHBOURS_NOTE = ("beside X: fastconv's conv2d forward and X each timed alone (back to back) and "
                   "interleaved in one process; 'fastconv beside' / 'X beside': their times interleaved; "
                   "main job: seconds per image at 2 threads, '1 thread' at 1 thread.\n")


SECTIONS = {"conv": conv_cases, "columns": column_cases, "pool": pool_cases, "direct": direct_cases,
            "concurrency": concurrency_cases, "viz": viz_cases, "ops": ops_cases, "neighbours": neighbour_cases}


# ---------------------------------------------------------------------------

def _op_width(cases):
    """The op column's width: 16, or wider for a longer name ("bwd auto=winograd/direct")."""
    return max([16] + [len(c.op) + 1 for c in cases])


def format_table(cases, ceilings):
    fma = ceilings.get("fma", {})
    op_width = _op_width(cases)
    peaks = ", ".join(f"{dtype} {rate:.0f}" for dtype, rate in fma.items())
    lines = [
        f"ceilings: float32 GEMM {ceilings['gemm']:.0f} GFLOP/s, FMA peak {peaks or '-'} GFLOP/s, "
        f"copy {ceilings['copy']:.1f} GB/s (read + write); {fastconv.get_num_threads()} threads",
        "",
        f"{'op':<{op_width}}{'case':<30}{'dtype':<9}{'fastconv':>10}{'reference':>11}{'torch':>10}"
        f"{'rate':>14}{'vs torch':>10}{'vs ref':>9}",
    ]
    for c in cases:
        t = c.times
        ms = lambda name: f"{t[name] * 1e3:8.2f}ms" if name in t else f"{'-':>10}"
        rate = (f"{c.flops / t['fastconv'] / 1e9:8.1f}GFLOP/s" if c.flops
                else f"{c.bytes / t['fastconv'] / 1e9:9.2f}GB/s" if c.bytes else "")
        vs_torch = f"{t['fastconv'] / t['torch']:9.2f}x" if "torch" in t else f"{'-':>10}"
        ref = t["reference"] / t["fastconv"] if "reference" in t else None
        vs_ref = f"{'-':>9}" if ref is None else f"{ref:8.1f}x" if ref < 10 else f"{ref:8.0f}x"
        # Memory-bound ops: the time the bytes alone take at the measured copy bandwidth.
        floor = (f"  floor {c.bytes / (ceilings['copy'] * 1e9) * 1e3:.2f}ms "
                 f"({t['fastconv'] * ceilings['copy'] * 1e9 / c.bytes:.1f}x)" if c.bytes else "")
        # Compute-bound ops: the effective rate (the FLOPs of the direct convolution) over the FMA peak.
        peak = fma.get(c.dtype) if c.flops else None
        x_peak = lambda seconds: f"{c.flops / seconds / 1e9 / peak:.2f}x peak"  # noqa: E731
        if peak and "fastconv" in t:
            floor += f"  {x_peak(t['fastconv'])}"
        if c.flops and "torch" in t:
            floor += f"  torch {c.flops / t['torch'] / 1e9:.1f} GFLOP/s"
        # Other implementations timed beside fastconv (the direct section's algorithms, NumPy, SciPy).
        others = "".join(f"  {name} {t[name] * 1e3:.2f}ms = {t[name] / t['fastconv']:.2f}x fastconv"
                         + (f" {t[name] / t['torch']:.2f}x torch" if "torch" in t else "")
                         + (f", {x_peak(t[name])}" if peak else "")
                         for name in t if name not in ("fastconv", "reference", "torch"))
        lines.append(f"{c.op:<{op_width}}{c.label:<30}{c.dtype:<9}{ms('fastconv')}{ms('reference'):>11}{ms('torch')}"
                     f"{rate:>14}{vs_torch}{vs_ref}{floor}{others}")
    lines.append("")
    lines.append("vs torch: fastconv time / torch time (< 1 is faster); vs ref: reference time / fastconv time.")
    if any(set(c.times) - {"fastconv", "reference", "torch"} for c in cases):
        lines.append("further columns: other implementations' times as multiples of fastconv's (and torch's).")
    if fma and any(c.flops for c in cases):
        lines.append("GFLOP/s: the direct convolution's FLOPs (2 per multiply-add) / time (fastconv's, and torch's "
                     "beside); x peak: that rate / the FMA peak (Winograd does fewer multiplies, so it can pass 1x).")
    if any(c.bytes for c in cases):
        lines.append("GB/s: bytes read + written / fastconv time; floor: those bytes at the copy bandwidth "
                     "(and fastconv time / floor).")
    for note in dict.fromkeys(c.note for c in cases if c.note):
        lines.append(note + ".")
    if any(c.op == "2 callers" for c in cases):
        lines.append("2 callers: fastconv = two Python threads each running the call at once, reference = the "
                     "two calls in sequence; vs ref = speed-up from running them concurrently (at most 2x).")
    return "\n".join(lines)


def run(sections=None, repeats=7, num_threads=None, with_reference=True, dtypes=("float32", "float64"),
        out=print):
    """Time the chosen sections and print the table; returns the timed cases."""
    num_threads = num_threads or fastconv.get_num_threads()
    torch = load_torch(num_threads)
    cases = []
    with fastconv.threads(num_threads):
        ceilings = {"gemm": gemm_rate(), "copy": copy_bandwidth(), "fma": {d: fma_peak(d) for d in dtypes}}
        for name in sections or DEFAULT_SECTIONS:
            for case in SECTIONS[name](torch, dtypes=dtypes, with_reference=with_reference):
                case.times = case.times or (case.timer or interleaved_medians)(case.impls, repeats)
                cases.append(case)
    out(format_table(cases, ceilings))
    return cases


def format_scaling(cases, counts):
    lo, hi = counts
    op_width = _op_width(cases)
    lines = [
        f"thread scaling: fastconv at {lo} and {hi} threads, timed interleaved in one process",
        "",
        f"{'op':<{op_width}}{'case':<30}{'dtype':<9}{f'{lo} thread':>11}{f'{hi} threads':>12}{'speed-up':>10}"
        f"{'copy':>8}{'vs copy':>9}",
    ]
    for c in cases:
        t_lo, t_hi = c.times[lo], c.times[hi]
        copy = (f"{c.times['copy', lo] / c.times['copy', hi]:7.2f}x{t_lo / c.times['copy', lo]:8.2f}x"
                if ("copy", lo) in c.times else "")
        lines.append(f"{c.op:<{op_width}}{c.label:<30}{c.dtype:<9}{t_lo * 1e3:9.2f}ms{t_hi * 1e3:10.2f}ms"
                     f"{t_lo / t_hi:9.2f}x{copy}")
    speedups = [c.times[lo] / c.times[hi] for c in cases]
    if speedups:
        lines += ["", f"speed-up = time at {lo} / time at {hi}; geometric mean "
                      f"{float(np.exp(np.mean(np.log(speedups)))):.2f}x over {len(speedups)} cases "
                      f"(ideal {hi / lo:.0f}x; {_openmp.num_procs()} processors)"]
    if any(("copy", lo) in c.times for c in cases):
        lines.append(f"copy: the speed-up of a parallel copy of the op's bytes (read + written), timed in the "
                     f"same rounds: what the memory system gave from {lo} to {hi} threads just then; "
                     f"vs copy: the op's time at {lo} thread(s) / that copy's. An op near 1x vs copy is "
                     f"bandwidth-bound and cannot scale past the copy.")
    return "\n".join(lines)


def run_scaling(sections=None, repeats=7, counts=(1, 2), dtypes=("float32",), out=print):
    """Time fastconv's callable of every case at two thread counts, interleaved, and
    print the speed-ups: the check that the OpenMP loops (and BLAS) really scale.
    Cases that carry their bytes are timed beside a parallel copy of as many bytes at
    the same two thread counts, in the same rounds: on a machine whose memory bandwidth
    does not double with the second core, that copy's speed-up is the ceiling."""
    lo, hi = counts
    cases = []
    for name in sections or DEFAULT_SECTIONS:
        for case in SECTIONS[name](None, dtypes=dtypes, with_reference=False):
            fn = case.impls["fastconv"]

            def at(n, fn=fn):
                def call():
                    with fastconv.threads(n):
                        fn()
                return call

            calls = {lo: at(lo), hi: at(hi)}
            if case.bytes:
                src = np.ones(int(case.bytes) // 16)   # read half the bytes, write the other half
                dst = np.empty_like(src)
                for n in (lo, hi):
                    calls["copy", n] = lambda n=n, src=src, dst=dst: _openmp.parallel_copy(src, dst, n)
            case.times = interleaved_medians(calls, repeats)
            cases.append(case)
    out(format_scaling(cases, counts))
    return cases


# Whole networks (fastconv.nn.models) against torch twins with the same weights.
from fastconv._bench_nets import net_cases  # noqa: E402

SECTIONS["nets"] = net_cases


# ---------------------------------------------------------------------------
# fastconv.dask on a LocalCluster

#: The dask section's sizes: an 8192x8192 float32 image by a 5x5 kernel in 2048x2048 chunks,
#: and 200,000 digits (1x8x8) scored in batches of 10,000, on a LocalCluster of 2 worker
#: processes with 1 thread each.
DASK_IMAGE, DASK_KERNEL, DASK_CHUNK = 8192, 5, 2048
DASK_IMAGES, DASK_BATCH, DASK_WORKERS, DASK_THREADS = 200_000, 10_000, 2, 1


def dask_cases(torch, dtypes=("float32", "float64"), with_reference=True):
    """`fastconv.dask` on a LocalCluster (float32 only), used as on a cluster: the input
    lives on the workers (persisted once), each call computes its result there (persist
    and wait; nothing comes back to this process). ``convolve2d`` against
    ``dask_image.ndfilters.convolve`` (scipy.ndimage's true convolution, zero boundary) on
    the same cluster, input and chunks, and against in-memory ``fastconv.convolve2d`` in
    this process with as many threads as the cluster has; then the same three on one
    machine as dask runs there by default (``dask threads``: the image's chunks in this
    process, dask's threaded scheduler with that many threads, the result's chunks kept);
    ``predict`` of the digits model against its in-memory forward in the same batches.
    Needs ``pip install fastconv[dask]`` (the section is empty without it); the dask-image
    column needs ``pip install dask-image`` (in the ``[bench]`` extra)."""
    if "float32" not in dtypes:
        return
    try:
        import dask.array as da
        import distributed
    except ImportError:
        return
    try:
        from dask_image import ndfilters
    except ImportError:
        ndfilters = None
    import fastconv.dask as fd
    from fastconv.training import lenet

    cluster = distributed.LocalCluster(n_workers=DASK_WORKERS, threads_per_worker=DASK_THREADS, processes=True,
                                       dashboard_address=None)
    client = distributed.Client(cluster)
    try:
        def on_cluster(make):
            def call():
                distributed.wait(client.persist(make()))
            return call

        def in_memory(fn):
            def call():
                with fastconv.threads(DASK_WORKERS * DASK_THREADS):
                    fn()
            return call

        n, c = DASK_IMAGE, DASK_CHUNK
        image = client.persist(da.random.default_rng(0).standard_normal((n, n), dtype=np.float32, chunks=c))
        kernel = np.random.default_rng(1).standard_normal((DASK_KERNEL, DASK_KERNEL)).astype(np.float32)
        local = image.compute()
        # They agree to rounding (dask-image's scipy sums in another order; fastconv.dask's columns
        # beside a chunk border are computed apart, in the kernel's scalar tail).
        corner = (slice(c - 8, c + 8),) * 2
        want = fastconv.convolve2d(local[:c + 16, :c + 16], kernel, "same")[corner]
        got = fd.convolve2d(image, kernel, "same")[corner].compute()
        impls = {"fastconv": on_cluster(lambda: fd.convolve2d(image, kernel, "same")),
                 "in-memory": in_memory(lambda: fastconv.convolve2d(local, kernel, "same"))}
        assert np.allclose(got, want, rtol=1e-5, atol=1e-5)
        if ndfilters is not None:
            theirs = ndfilters.convolve(image, kernel, mode="constant", cval=0.0)[corner].compute()
            assert np.allclose(theirs, want, rtol=1e-4, atol=1e-4)
            impls["dask-image"] = on_cluster(lambda: ndfilters.convolve(image, kernel, mode="constant", cval=0.0))
        yield Case("dask convolve2d", f"{n}x{n}*{DASK_KERNEL}x{DASK_KERNEL} chunks {c}", "float32", impls,
                   flops=2.0 * n * n * DASK_KERNEL ** 2, note=DASK_NOTE)
        # One machine as dask runs on it by default: the threaded scheduler in this process, the
        # same image (the same chunks, made here), the result's chunks kept in memory (persist).
        threaded = dict(scheduler="threads", num_workers=DASK_WORKERS * DASK_THREADS)
        here = da.random.default_rng(0).standard_normal((n, n), dtype=np.float32, chunks=c).persist(**threaded)
        impls = {"fastconv": lambda: fd.convolve2d(here, kernel, "same").persist(**threaded),
                 "in-memory": impls["in-memory"]}
        if ndfilters is not None:
            impls["dask-image"] = lambda: ndfilters.convolve(here, kernel, mode="constant",
                                                             cval=0.0).persist(**threaded)
        yield Case("dask threads", f"{n}x{n}*{DASK_KERNEL}x{DASK_KERNEL} chunks {c}", "float32", impls,
                   flops=2.0 * n * n * DASK_KERNEL ** 2, note=DASK_NOTE)
        # One chunk's work as a worker thread does it (the t_chunk of docs/dask.rst's scaling).
        block = np.ascontiguousarray(local[:c + DASK_KERNEL - 1, :c + DASK_KERNEL - 1])

        def chunk():
            with fastconv.threads(DASK_THREADS):
                fastconv.convolve2d(block, kernel, "valid")

        yield Case("dask chunk", f"{c}x{c}*{DASK_KERNEL}x{DASK_KERNEL} 1 thread", "float32",
                   {"fastconv": chunk}, flops=2.0 * c * c * DASK_KERNEL ** 2, note=DASK_NOTE)

        model = lenet(rng=0)
        images = client.persist(da.random.default_rng(2).random((DASK_IMAGES, 1, 8, 8), dtype=np.float32,
                                                                chunks=(DASK_BATCH, 1, 8, 8)))
        local_images = images.compute()

        def batches():
            for i in range(0, DASK_IMAGES, DASK_BATCH):
                model.forward(local_images[i:i + DASK_BATCH], training=False)

        impls = {"fastconv": on_cluster(lambda: fd.predict(model, images)), "in-memory": in_memory(batches)}
        yield Case("dask predict", f"digits lenet {DASK_IMAGES} imgs", "float32", impls, note=DASK_NOTE)
    finally:
        client.close()
        cluster.close()


DASK_NOTE = (f"dask: fastconv = fastconv.dask on a LocalCluster of {DASK_WORKERS} worker processes x "
             f"{DASK_THREADS} thread, input persisted on the workers, result persisted there; dask-image the "
             f"same; in-memory = the op on the whole image in this process at {DASK_WORKERS * DASK_THREADS} "
             f"threads, into a new array; dask threads = the same image's chunks in this process, on dask's "
             f"threaded scheduler with {DASK_WORKERS * DASK_THREADS} threads, result chunks kept (persist), "
             f"dask-image the same; dask chunk = the in-memory op on one chunk and its halo, as a worker's "
             f"thread runs it")
SECTIONS["dask"] = dask_cases
#: What runs without --sections: all but dask, which starts a cluster and needs dask installed.
DEFAULT_SECTIONS = [name for name in SECTIONS if name != "dask"]
