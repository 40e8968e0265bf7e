"""Time-bounded fuzzing of fastconv's public API, driven by hypothesis.

    python tools/fuzz.py --seconds 600 [--ops conv2d im2col ...] [--hang-seconds 60]

Three modes take turns on every op of tests/strategies.py's table:

  valid    random valid calls (under a random thread count): == fastconv.reference,
           inputs untouched, fresh C-contiguous results of the input dtype
  invalid  one argument broken: ValueError/TypeError naming the argument
  wild     valid calls with 1-3 arguments replaced by anything (wrong types, NaN/inf
           data, huge/negative sizes, 0-size axes, odd dtypes and layouts) and wholly
           random calls: the op returns (then == reference when the data is finite) or
           raises ValueError/TypeError naming some argument, or MemoryError

A crash (segfault, ASan/UBSan report) kills the process: run it under
tools/sanitize.sh to turn memory errors into reports. A call that runs longer
than --hang-seconds dumps every thread's traceback and exits with status 3.
To keep wild sizes from exhausting the machine, allocations inside fastconv above
--budget-mb (and below the 16 TiB that no machine grants) raise MemoryError; they
are counted as "over budget". Exit status: 0 when nothing was found, 1 otherwise.
"""
import argparse
import collections
import faulthandler
import json
import math
import os
import sys
import time
import traceback
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import strategies as S  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fastconv  # noqa: E402

BUDGET_PREFIX = "fuzz budget:"


class BudgetedNumpy:
    """numpy, but empty/zeros/*_like above the budget raise MemoryError."""

    def __init__(self, limit):
        self._limit = limit

    def __getattr__(self, name):
        return getattr(np, name)

    def _check(self, shape, dtype):
        try:
            shape = tuple(shape)
        except TypeError:
            shape = (shape,)
        nbytes = math.prod(int(s) for s in shape) * np.dtype(dtype).itemsize
        if self._limit < nbytes < 2**44:
            raise MemoryError(f"{BUDGET_PREFIX} {shape} {np.dtype(dtype)} = {nbytes} bytes")

    def empty(self, shape, dtype=float, *args, **kwargs):
        self._check(shape, dtype)
        return np.empty(shape, dtype, *args, **kwargs)

    def zeros(self, shape, dtype=float, *args, **kwargs):
        self._check(shape, dtype)
        return np.zeros(shape, dtype, *args, **kwargs)

    def empty_like(self, a, dtype=None, *args, **kwargs):
        self._check(np.shape(a), dtype or a.dtype)
        return np.empty_like(a, dtype, *args, **kwargs)

    def zeros_like(self, a, dtype=None, *args, **kwargs):
        self._check(np.shape(a), dtype or a.dtype)
        return np.zeros_like(a, dtype, *args, **kwargs)


def install_budget(limit):
    proxy = BudgetedNumpy(limit)
    for name, mod in list(sys.modules.items()):
        if name.startswith("fastconv") and getattr(mod, "np", None) is np:
            mod.np = proxy


# ---------------------------------------------------------------------------
# Wild arguments

NAN, INF = float("nan"), float("inf")
WILD_SCALARS = [0, 1, 2, 3, 4, 5, 7, -1, -3, S.MAX, S.MAX + 1, 2**24, 2**62, 2**63, -2**63, 10**30, True, False,
                1.0, 2.5, NAN, INF, None, "same", "valid", "2", "", (1, 2), (2, 1), (0, 1), (1, 2, 3), (), [3, 3],
                np.int64(2), np.uint8(3), np.array([2, 2]), np.array(2), np.array(2.0), (2**24, 1), (1, S.MAX),
                (S.MAX, S.MAX), "auto", "im2col", b"auto", 1 + 1j, object()]


@st.composite
def wild_array(draw, ndims):
    ndim = draw(st.one_of(st.sampled_from(ndims), st.integers(0, 5)))
    shape = tuple(draw(st.sampled_from([0, 1, 1, 2, 3, 4, 5, 8])) for _ in range(ndim))
    kind = draw(st.sampled_from(["f32", "f64", "f32", "f64", "f16", "i32", "c64", "bool", "obj", ">f4", "list",
                                 "none", "str", "scalar"]))
    if kind == "none":
        return None
    if kind == "str":
        return "x" * len(shape)
    if kind == "scalar":
        return draw(st.sampled_from([1.0, 3, NAN, np.float32(1.0)]))
    a = np.asarray(np.random.default_rng(draw(st.integers(0, 2**32 - 1))).standard_normal(shape))
    fill = draw(st.sampled_from([None, None, NAN, INF, -INF, 1e38, 1e-310, 0.0]))
    if fill is not None and a.size:
        a.flat[draw(st.integers(0, a.size - 1))] = fill
    if kind == "list":
        return a.tolist()
    a = a.astype({"f32": np.float32, "f64": np.float64, "f16": np.float16, "i32": np.int32, "c64": np.complex64,
                  "bool": bool, "obj": object, ">f4": ">f4"}[kind])
    return S.relayout(a, draw(st.sampled_from(S.LAYOUTS)))


def wild_value(kind):
    if kind.startswith(("array", "optarray")):
        return wild_array(tuple(int(c) for c in kind.split(":")[1]))
    return st.one_of(st.integers(-3, 9), st.sampled_from(WILD_SCALARS))


@st.composite
def poisoned(draw, a):
    """`a` with the same shape and dtype but NaN/inf/huge/subnormal values, in any layout."""
    a = np.array(a, copy=True)
    if a.size:
        for _ in range(draw(st.integers(1, 3))):
            a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([NAN, INF, -INF, 1e38, -1e38, 1e-40]))
    return S.relayout(a, draw(st.sampled_from(S.LAYOUTS)))


@st.composite
def wild_call(draw, spec):
    flavour = draw(st.sampled_from(["poison", "near", "near", "random"]))
    if flavour == "poison":  # a valid call with extreme data in its arrays
        kwargs = dict(draw(spec.valid).kwargs)
        for name, a in kwargs.items():
            if isinstance(a, np.ndarray) and a.dtype.kind == "f" and draw(st.booleans()):
                kwargs[name] = draw(poisoned(a))
    elif flavour == "near":  # a valid call with 1-3 arguments replaced by anything
        kwargs = dict(draw(spec.valid).kwargs)
        for name in draw(st.lists(st.sampled_from(sorted(spec.kinds)), min_size=1, max_size=3, unique=True)):
            kwargs[name] = draw(wild_value(spec.kinds[name]))
    else:
        kwargs = {name: draw(wild_value(kind)) for name, kind in spec.kinds.items()}
    return S.Call(kwargs)


def finite_and_moderate(call):
    for a in call.kwargs.values():
        if isinstance(a, (list, tuple)):  # arrays passed as nested lists count too
            try:
                a = np.asarray(a)
            except (ValueError, TypeError):
                continue
        if isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.size:
            if not np.all(np.isfinite(a)) or np.max(np.abs(a)) > 1e6:
                return False
    return True


# ---------------------------------------------------------------------------

class Stats:
    def __init__(self):
        self.counts = collections.Counter()
        self.findings = []

    def finding(self, op, mode, call, exc):
        self.findings.append(dict(op=op, mode=mode, call=repr(call),
                                  error="".join(traceback.format_exception_only(type(exc), exc)).strip()[:2000]))


def run_wild(spec, call, stats):
    before = S.snapshot(call)
    returned = False
    try:
        result = spec.fn(**call.kwargs)
        returned = True
    except MemoryError as e:
        stats.counts[(spec.name, "wild", "over budget" if str(e).startswith(BUDGET_PREFIX) else "MemoryError")] += 1
        return
    except (ValueError, TypeError) as e:
        assert S.names_argument(str(e), list(spec.kinds)), f"{type(e).__name__}({e!r}) names no argument"
        stats.counts[(spec.name, "wild", type(e).__name__)] += 1
        return
    finally:
        # even a failed call must leave its inputs alone; one that returned, all but those it updates
        S.assert_untouched(call, before, skip=spec.updates if returned else ())
    stats.counts[(spec.name, "wild", "returned")] += 1
    if finite_and_moderate(call):
        try:
            want = spec.ref(**call.kwargs)
        except MemoryError:  # the oracle pads to the full window: huge dilation or padding
            stats.counts[(spec.name, "wild", "returned; reference out of memory")] += 1
            return
        except ValueError as e:
            if "array is too big" not in str(e):
                raise
            stats.counts[(spec.name, "wild", "returned; reference out of memory")] += 1
            return
        S.assert_matches(spec, result, want, call)


def make_runner(spec, mode, stats, hang_seconds, cfg):
    strategy = {"valid": st.tuples(spec.valid, st.integers(1, 4)),
                "invalid": S.invalid_call(spec), "wild": wild_call(spec)}[mode]

    @settings(cfg)
    @given(strategy)
    def run(case):
        faulthandler.dump_traceback_later(hang_seconds, exit=True)
        try:
            stats.counts[(spec.name, mode, "examples")] += 1
            if mode == "valid":
                call, n = case
                with fastconv.threads(n):
                    S.check_valid(spec, call)
            elif mode == "invalid":
                S.check_invalid(spec, *case)
            else:
                run_wild(spec, case, stats)
        finally:
            faulthandler.cancel_dump_traceback_later()
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--ops", nargs="*", default=[s.name for s in S.OPS], choices=[s.name for s in S.OPS])
    parser.add_argument("--modes", nargs="*", default=["valid", "invalid", "wild"],
                        choices=["valid", "invalid", "wild"])
    parser.add_argument("--batch", type=int, default=100, help="examples per hypothesis run")
    parser.add_argument("--hang-seconds", type=float, default=120)
    parser.add_argument("--budget-mb", type=float, default=256)
    parser.add_argument("--json", help="write the summary here")
    args = parser.parse_args(argv)

    faulthandler.enable()
    warnings.simplefilter("ignore", RuntimeWarning)  # NaN/inf/overflow in poisoned data is expected
    install_budget(int(args.budget_mb * 2**20))
    stats = Stats()
    cfg = settings(max_examples=args.batch, deadline=None, database=None, derandomize=False,
                   phases=[Phase.generate, Phase.shrink], print_blob=True,
                   suppress_health_check=list(HealthCheck))
    runners = [(op, mode, make_runner(S.OPS_BY_NAME[op], mode, stats, args.hang_seconds, cfg))
               for op in args.ops for mode in args.modes]
    start = time.monotonic()
    stop = start + args.seconds
    last_report, rounds = start, 0
    while time.monotonic() < stop:
        rounds += 1
        for op, mode, runner in runners:
            if time.monotonic() >= stop:
                break
            try:
                runner()
            except Exception as e:  # hypothesis re-raises the shrunk failing example
                stats.finding(op, mode, " | ".join(getattr(e, "__notes__", [])), e)
                traceback.print_exc()
        if time.monotonic() - last_report > 60:
            last_report = time.monotonic()
            total = sum(c for k, c in stats.counts.items() if k[2] == "examples")
            print(f"[fuzz] {last_report - start:6.0f}s  {total} examples  {len(stats.findings)} findings", flush=True)

    elapsed = time.monotonic() - start
    per_op = collections.defaultdict(dict)
    for (op, mode, what), c in sorted(stats.counts.items()):
        per_op[op][f"{mode} {what}"] = c
    summary = dict(seconds=round(elapsed, 1), rounds=rounds,
                   examples=sum(c for k, c in stats.counts.items() if k[2] == "examples"),
                   per_op=per_op, findings=stats.findings,
                   sanitized=bool(os.environ.get("FASTCONV_SANITIZED")), threads=fastconv.get_num_threads())
    text = json.dumps(summary, indent=1, default=str)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    return 1 if stats.findings else 0


if __name__ == "__main__":
    sys.exit(main())
