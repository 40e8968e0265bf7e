"""Hypothesis strategies for every public op, shared by the property tests
(tests/test_properties.py) and the fuzz harness (tools/fuzz.py).

Each op is one `OpSpec` in `OPS`: the function, its reference, a strategy of
random *valid* calls (shapes with 0 and 1 sizes, strides, every padding form,
dilation, groups, both dtypes, C/F-ordered, strided, reversed and read-only
arrays) and the kind of each argument, from which random *invalid* calls are
made by breaking one argument at a time. Adding an op is one entry in `OPS`.
"""
import math
import re
from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

import fastconv
from fastconv import _validation as v
from fastconv import reference

DTYPES = (np.float32, np.float64)
TOL = {np.dtype(np.float32): dict(rtol=2e-4, atol=2e-4), np.dtype(np.float64): dict(rtol=1e-10, atol=1e-10)}
LAYOUTS = ("C", "C", "F", "strided", "reversed", "readonly")
MAX = v.MAX_SIZE


# ---------------------------------------------------------------------------
# Calls and arrays

@dataclass
class Call:
    """Keyword arguments of one call; repr summarises arrays (shape, dtype, layout)."""
    kwargs: dict

    def __repr__(self):
        def show(a):
            if isinstance(a, np.ndarray):
                layout = ("C" if a.flags.c_contiguous else "F" if a.flags.f_contiguous else "view")
                ro = "" if a.flags.writeable else ",readonly"
                return f"<{a.dtype} {a.shape} {layout}{ro} strides={a.strides}>"
            return repr(a)
        return "Call(" + ", ".join(f"{k}={show(a)}" for k, a in self.kwargs.items()) + ")"


def relayout(a, layout):
    """Same values as `a`, in a different memory layout."""
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided":
        big = np.full(tuple(2 * s + 1 for s in a.shape), np.nan, a.dtype)
        view = big[tuple(slice(1, None, 2) for _ in a.shape)]
        view[...] = a
        return view
    if layout == "reversed" and a.ndim:
        return a[..., ::-1].copy()[..., ::-1]
    if layout == "readonly":
        a = a.copy()
        a.flags.writeable = False
    return a


@st.composite
def arrays(draw, shape, dtype):
    seed = draw(st.integers(0, 2**32 - 1))
    a = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    return relayout(a, draw(st.sampled_from(LAYOUTS)))


@st.composite
def int_arg(draw, a, b=None):
    """An int or a pair in one of the accepted spellings: int, tuple, list, NumPy ints."""
    b = a if b is None else b
    forms = ["tuple", "list", "ndarray"] + (["int", "int", "npint"] if a == b else [])
    form = draw(st.sampled_from(forms))
    if form == "int":
        return a
    if form == "npint":
        return np.int64(a)
    if form == "tuple":
        return (a, b)
    if form == "list":
        return [a, b]
    return np.array([a, b])


def _pairs(lo, hi):
    return st.tuples(st.integers(lo, hi), st.integers(lo, hi))


@st.composite
def window(draw, kernel=None, max_kernel=4):
    """kernel, stride, dilation (pairs) and a padding argument with its (top+bottom, left+right)."""
    kernel = kernel or draw(_pairs(1, max_kernel))
    stride = draw(st.one_of(st.just((1, 1)), _pairs(1, 3)))
    dilation = draw(st.one_of(st.just((1, 1)), _pairs(1, 3)))
    form = draw(st.sampled_from(["int", "pair", "valid", "same"] if stride == (1, 1) else ["int", "pair", "valid"]))
    if form in ("valid", "same"):
        padding = form
    elif form == "int":
        padding = draw(st.integers(0, 3))
    else:
        padding = draw(int_arg(draw(st.integers(0, 3)), draw(st.integers(0, 3))))
    (pt, pb), (pl, pr) = v.conv_padding(padding, kernel, stride, dilation)
    return dict(kernel=kernel, stride=stride, dilation=dilation, padding=padding, pad=(pt + pb, pl + pr))


def spans(w):
    return tuple(d * (k - 1) + 1 for k, d in zip(w["kernel"], w["dilation"]))


@st.composite
def image_size(draw, w, extra=6):
    """(H, W) >= 1 on which the window fits."""
    return tuple(max(1, s - p) + draw(st.integers(0, extra)) for s, p in zip(spans(w), w["pad"]))


@st.composite
def spelled(draw, w):
    """stride/padding/dilation keyword arguments of a window, in random spellings."""
    return dict(stride=draw(int_arg(*w["stride"])), padding=w["padding"], dilation=draw(int_arg(*w["dilation"])))


# ---------------------------------------------------------------------------
# Valid calls, per op

@st.composite
def conv2d_call(draw, backward=False):
    dtype = draw(st.sampled_from(DTYPES))
    groups = draw(st.integers(1, 3))
    Cg, Kg = draw(st.integers(0, 3)), draw(st.integers(1, 3))
    N = draw(st.integers(0, 3))
    w = draw(window())
    H, W = draw(image_size(w))
    x = draw(arrays((N, Cg * groups, H, W), dtype))
    weight = draw(arrays((Kg * groups, Cg) + w["kernel"], dtype))
    kw = dict(x=x, weight=weight)
    if backward:
        g = v.conv_geometry((H, W), w["kernel"], w["stride"], w["padding"], w["dilation"])
        kw = dict(grad_output=draw(arrays((N, Kg * groups, g.out_h, g.out_w), dtype)), **kw)
    else:
        kw["bias"] = draw(st.one_of(st.none(), arrays((Kg * groups,), dtype)))
    kw.update(draw(spelled(w)))
    kw["groups"] = draw(st.sampled_from([groups, np.int32(groups)]))
    return Call(kw)


@st.composite
def im2col_call(draw):
    dtype = draw(st.sampled_from(DTYPES))
    w = draw(window(max_kernel=5))
    H, W = draw(image_size(w))
    shape = (draw(st.integers(1, 3)), H, W)
    if draw(st.booleans()):
        shape = (draw(st.integers(0, 3)), draw(st.integers(0, 3)), H, W)
    kw = dict(x=draw(arrays(shape, dtype)), kernel_size=draw(int_arg(*w["kernel"])))
    kw.update(draw(spelled(w)))
    return Call(kw)


@st.composite
def col2im_call(draw):
    dtype = draw(st.sampled_from(DTYPES))
    w = draw(window(max_kernel=5))
    H, W = draw(image_size(w))
    g = v.conv_geometry((H, W), w["kernel"], w["stride"], w["padding"], w["dilation"])
    rows = draw(st.integers(0, 3)) * g.kernel_h * g.kernel_w
    shape = (rows, g.out_h * g.out_w)
    if draw(st.booleans()):
        shape = (draw(st.integers(0, 3)),) + shape
    kw = dict(cols=draw(arrays(shape, dtype)), output_size=draw(int_arg(H, W)),
              kernel_size=draw(int_arg(*w["kernel"])))
    kw.update(draw(spelled(w)))
    return Call(kw)


@st.composite
def output_size_call(draw):
    k, s, d = draw(st.integers(1, 6)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    ceil_mode = draw(st.booleans())
    # ceil_mode is pooling's, where padding <= kernel_size // 2 (torch): beyond that torch's
    # formula, which output_size follows, may keep windows lying wholly in the padding.
    p = draw(st.integers(0, k // 2 if ceil_mode else 3))
    n = max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, 20))
    return Call(dict(n=n, kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil_mode))


# ---------------------------------------------------------------------------
# References (where fastconv.reference takes a different form)

def _batched(ref, name, ndim):
    """Reference for an op whose fastconv form also takes unbatched arrays."""
    def call(**kw):
        a = np.asarray(kw[name])
        if a.ndim == ndim:
            return ref(**kw)
        return ref(**{**kw, name: a[None]})[0]
    return call


def output_size_reference(n, kernel_size, stride, padding, dilation, ceil_mode):
    """Count window starts o*stride by brute force (torch's rule, without its formula)."""
    span = dilation * (kernel_size - 1) + 1
    room = n + 2 * padding - span
    if ceil_mode:  # a partial last window is kept unless it starts in the bottom padding
        return sum(1 for o in range(n + 2 * padding + 1) if o * stride < room + stride and o * stride < n + padding)
    return sum(1 for o in range(n + 2 * padding + 1) if o * stride <= room)


# ---------------------------------------------------------------------------
# Invalid calls: break one argument

NOT_INT = [1.5, 2.0, float("nan"), float("inf"), -float("inf"), "2", b"2", None, True, False, np.bool_(True),
           2 + 0j, np.float32(2.0), np.float64("nan"), object(), {1: 2}, {1, 2}, np.array(1.0)]
BAD_PAIR = [(1, 2, 3), (), [1], [[1, 2], [3, 4]], np.array([1, 2, 3]), np.zeros((2, 2), np.int64),
            (1, 2.5), (1, None), ("1", 1), (True, 1), (1, float("nan")), [1.0, 2.0]]
HUGE = [MAX + 1, 2**32, 2**40, 2**63, 2**64, 2**100, 10**30, np.uint64(2**63)]
BAD = {
    "size": NOT_INT + BAD_PAIR + HUGE + [0, -1, -2, -2**31, -2**63, -10**30, (1, 0), (0, 1), (-1, 1), (1, MAX + 1),
                                        (2**100, 1), np.array([1, 0]), np.int64(0), np.int8(-1)],
    "padding": NOT_INT + BAD_PAIR + HUGE + [-1, -2**40, -10**30, (0, -1), (-1, 0), (0, MAX + 1), "full", "SAME",
                                           "", "same ", "causal", np.int64(-1)],
    "groups": NOT_INT + BAD_PAIR[:4] + [0, -1, -2**63, 2**64 + 1, 10**30 + 7, np.int64(0)],
    "choice": ["winograd", "", "AUTO", None, 1, 0, True, b"auto", ("auto",), ["im2col"]],
    "n": NOT_INT + [0, -1, -2**63, -10**30],
    "n0": NOT_INT + [-1, -2**63, -10**30],
}


def _other(dtype):
    return np.float64 if np.dtype(dtype) == np.float32 else np.float32


def bad_arrays(value, ndims, partners):
    """(bad value, names the message may use instead) for an array argument."""
    a = np.asarray(value) if value is not None else np.zeros((2, 2, 2, 2), np.float32)
    wrong_ndim = [d for d in range(0, 7) if d not in ndims]
    out = [("text", ()), (b"bytes", ()), (3, ()), ([[1.0], [1.0, 2.0]], ()), ({"a": 1}, ()), (object(), ()),
           (a.astype(np.int32), ()), (a.astype(np.int64), ()), (a.astype(np.uint8), ()), (a.astype(np.complex64), ()),
           (a.astype(np.complex128), ()), (a.astype(np.float16), ()), (a.astype(bool), ()), (a.astype(object), ()),
           (a.astype(">f4"), ()), (a.astype(">f8"), ()), (a.astype("m8[s]"), ()),
           (a.tolist() if a.dtype.kind != "f" else a.astype(np.int16).tolist(), ())]
    out += [(np.zeros((1,) * d, a.dtype), ()) for d in wrong_ndim[:3]]
    if value is not None and partners:
        out.append((a.astype(_other(a.dtype)), partners))  # mixed float dtypes: either side may be named
    return out


@dataclass
class OpSpec:
    name: str
    fn: object
    ref: object
    valid: object                       # strategy of valid Calls
    kinds: dict                         # argument -> "array:<ndims>" / "size" / "padding" / "groups" / ...
    exact: bool = False                 # compare with == (copies) rather than allclose (sums)
    mismatches: list = field(default_factory=list)   # (name, fn(Call) -> (kwargs, allowed names) or None)

    def arrays(self):
        return [n for n, k in self.kinds.items() if k.startswith("array") or k.startswith("optarray")]


def bad_values(spec, call, name):
    kind = spec.kinds[name]
    if kind.startswith(("array", "optarray")):
        ndims = tuple(int(c) for c in kind.split(":")[1])
        partners = tuple(n for n in spec.arrays() if n != name)
        return bad_arrays(call.kwargs.get(name), ndims, partners)
    return [(b, ()) for b in BAD[kind]]


@st.composite
def invalid_call(draw, spec):
    """(Call, names): a valid call with one argument broken; the error must name one of `names`."""
    call = draw(spec.valid)
    options = [(n, None) for n in spec.kinds] + [(n, m) for n, m in spec.mismatches]
    name, mismatch = draw(st.sampled_from(options))
    if mismatch is not None:
        broken = mismatch(call)
        if broken is not None:
            kwargs, allowed = broken
            return Call({**call.kwargs, **kwargs}), (name,) + tuple(allowed)
    value, allowed = draw(st.sampled_from(bad_values(spec, call, name)))
    return Call({**call.kwargs, name: value}), (name,) + tuple(allowed)


def _grow(a, axis, by=1):
    shape = list(a.shape)
    shape[axis] += by
    return np.zeros(shape, a.dtype)


def _conv_mismatches(backward):
    def weight_channels(call):
        wt = call.kwargs["weight"]
        return dict(weight=_grow(wt, 1)), ("x", "groups")

    def huge_weight(call):
        x, wt = call.kwargs["x"], call.kwargs["weight"]
        return dict(weight=np.zeros(wt.shape[:2] + (x.shape[2] + 7, 1), wt.dtype), padding=0), ("x",)

    def empty_image(call):
        x = call.kwargs["x"]
        return dict(x=np.zeros(x.shape[:2] + (0, x.shape[3]), x.dtype)), ()

    def same_with_stride(call):
        return dict(padding="same", stride=2), ("stride",)

    out = [("weight", weight_channels), ("weight", huge_weight), ("x", empty_image), ("padding", same_with_stride)]
    if backward:
        def grad_shape(call):
            go = call.kwargs["grad_output"]
            return dict(grad_output=_grow(go, int(np.argmin(go.shape[1:])) + 1)), ()
        out.append(("grad_output", grad_shape))
    else:
        def bias_length(call):
            return dict(bias=np.zeros(call.kwargs["weight"].shape[0] + 1, call.kwargs["x"].dtype)), ()
        out.append(("bias", bias_length))
    return out


def _window_mismatches(image):
    def kernel_too_big(call):
        return dict(kernel_size=(10**6, 1), padding=0, dilation=1), (image, "dilation", "padding")

    def same_with_stride(call):
        return dict(padding="same", stride=(1, 2)), ("stride",)
    return [("kernel_size", kernel_too_big), ("padding", same_with_stride)]


def _col2im_mismatches():
    def rows(call):
        c = call.kwargs["cols"]
        kernel = v.pair(call.kwargs["kernel_size"], "k")
        if kernel == (1, 1):
            return None
        return dict(cols=_grow(c, c.ndim - 2)), ("kernel_size",)

    def windows(call):
        c = call.kwargs["cols"]
        return dict(cols=_grow(c, c.ndim - 1)), ("output_size", "kernel_size", "stride", "padding", "dilation")
    return [("cols", rows), ("cols", windows)] + _window_mismatches("output_size")


_WINDOW_KINDS = dict(kernel_size="size", stride="size", padding="padding", dilation="size")

OPS = [
    OpSpec("conv2d", fastconv.conv2d, reference.conv2d, conv2d_call(),
           dict(x="array:4", weight="array:4", bias="optarray:1", stride="size", padding="padding",
                dilation="size", groups="groups", algorithm="choice"),
           mismatches=_conv_mismatches(False)),
    OpSpec("conv2d_backward", fastconv.conv2d_backward, reference.conv2d_backward, conv2d_call(backward=True),
           dict(grad_output="array:4", x="array:4", weight="array:4", stride="size", padding="padding",
                dilation="size", groups="groups", algorithm="choice"),
           mismatches=_conv_mismatches(True)),
    OpSpec("im2col", fastconv.im2col, _batched(reference.im2col, "x", 4), im2col_call(),
           dict(x="array:34", **_WINDOW_KINDS), exact=True, mismatches=_window_mismatches("x")),
    OpSpec("col2im", fastconv.col2im, _batched(reference.col2im, "cols", 3), col2im_call(),
           dict(cols="array:23", output_size="size", **_WINDOW_KINDS), mismatches=_col2im_mismatches()),
    OpSpec("output_size", fastconv.output_size, output_size_reference, output_size_call(),
           dict(n="n", kernel_size="n", stride="n", padding="n0", dilation="n"), exact=True),
]
OPS_BY_NAME = {spec.name: spec for spec in OPS}


# ---------------------------------------------------------------------------
# Checks (shared by tests and the fuzz harness)

def snapshot(call):
    return {k: np.array(a, copy=True) for k, a in call.kwargs.items() if isinstance(a, np.ndarray)}


def assert_untouched(call, before):
    for k, old in before.items():
        np.testing.assert_array_equal(call.kwargs[k], old, err_msg=f"{k} was modified")


def assert_matches(spec, result, expected, call):
    results = result if isinstance(result, tuple) else (result,)
    expecteds = expected if isinstance(expected, tuple) else (expected,)
    assert len(results) == len(expecteds)
    dtype = next((a.dtype for a in call.kwargs.values() if isinstance(a, np.ndarray)), None)
    for r, e in zip(results, expecteds):
        if not isinstance(r, np.ndarray):
            assert r == e, (r, e)
            continue
        assert isinstance(r, np.ndarray) and type(r) is np.ndarray
        assert r.dtype == dtype and r.flags.c_contiguous, (r.dtype, r.flags)
        assert r.shape == np.shape(e), (r.shape, np.shape(e))
        if spec.exact:
            np.testing.assert_array_equal(r, e)
        else:
            np.testing.assert_allclose(r, e, **TOL[r.dtype])


def check_valid(spec, call):
    """fastconv == reference, fresh C-contiguous results of the input dtype, inputs untouched."""
    before = snapshot(call)
    result = spec.fn(**call.kwargs)
    assert_untouched(call, before)
    assert_matches(spec, result, spec.ref(**call.kwargs), call)


def names_argument(message, names):
    return any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", message) for n in names)


def check_invalid(spec, call, names):
    """The call raises ValueError or TypeError whose message names one of `names`."""
    try:
        spec.fn(**call.kwargs)
    except (ValueError, TypeError) as e:
        assert names_argument(str(e), names), f"{type(e).__name__}({str(e)!r}) names none of {names}"
        return e
    raise AssertionError(f"{spec.name}{call!r} raised nothing; expected an error naming {names}")
