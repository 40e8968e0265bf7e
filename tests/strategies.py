"""Hypothesis strategies for every public op, shared by the property tests
(tests/test_properties.py) and the fuzz harness (tools/fuzz.py).

Each op is one `OpSpec` in `OPS`: the function, its reference, a strategy of
random *valid* calls (shapes with 0 and 1 sizes, strides, every padding form,
dilation, groups, both dtypes, C/F-ordered, strided, reversed and read-only
arrays) and the kind of each argument, from which random *invalid* calls are
made by breaking one argument at a time. Adding an op is one entry in `OPS`
(batch norm has one per mode: training and eval). An entry's `updates` names the
arrays the op updates in place as documented (batch norm's running statistics),
the one exception to "inputs untouched".
"""
import re
from dataclasses import dataclass, field

import numpy as np
from hypothesis import assume
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
    if a.ndim == 0:
        return a
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided":
        big = np.full(tuple(2 * s + 1 for s in a.shape), np.nan if a.dtype.kind == "f" else -7, a.dtype)
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
def arrays(draw, shape, dtype, low=None, layouts=LAYOUTS):
    """Standard normal values (`low` + their magnitudes, with `low`) in one of `layouts`."""
    seed = draw(st.integers(0, 2**32 - 1))
    a = np.random.default_rng(seed).standard_normal(shape)
    if low is not None:
        a = low + np.abs(a)
    return relayout(a.astype(dtype), draw(st.sampled_from(layouts)))


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
    kw["algorithm"] = draw(st.sampled_from(fastconv.convolution.ALGORITHMS))
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


@st.composite
def pool_window(draw, dilation=True):
    """kernel, stride (or None), padding <= kernel // 2, dilation, ceil_mode, and an (H, W) they fit."""
    kernel = draw(_pairs(1, 4))
    stride = draw(st.one_of(st.none(), _pairs(1, 3)))
    pad = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    dil = draw(_pairs(1, 2)) if dilation else (1, 1)
    ceil_mode = draw(st.sampled_from([False, True, np.bool_(True)]))
    hw = tuple(max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, 6)) for k, p, d in zip(kernel, pad, dil))
    try:  # with dilation a window can fall wholly in the padding: torch rejects that too
        g = v.pool_geometry(hw, kernel, stride, pad, dil, bool(ceil_mode))
    except ValueError:
        assume(False)
    kw = dict(kernel_size=draw(int_arg(*kernel)),
              stride=None if stride is None else draw(int_arg(*stride)),
              padding=draw(int_arg(*pad)), ceil_mode=ceil_mode)
    if dilation:
        kw["dilation"] = draw(int_arg(*dil))
    return kw, hw, g


@st.composite
def pool_input_shape(draw, hw):
    if draw(st.booleans()):
        return (draw(st.integers(0, 3)),) + hw
    return (draw(st.integers(0, 3)), draw(st.integers(0, 3))) + hw


def _spell_shape(draw, shape):
    return draw(st.sampled_from([tuple(shape), list(shape), np.array(shape)]))


@st.composite
def max_pool_call(draw):
    dtype = draw(st.sampled_from(DTYPES))
    kw, hw, g = draw(pool_window())
    x = draw(arrays(draw(pool_input_shape(hw)), dtype))
    return Call(dict(x=x, **kw, return_indices=draw(st.booleans())))


@st.composite
def max_pool_backward_call(draw):
    dtype = draw(st.sampled_from(DTYPES))
    kw, hw, g = draw(pool_window())
    shape = draw(pool_input_shape(hw))
    x = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).standard_normal(shape).astype(dtype)
    _, indices = reference.max_pool2d(x, **kw, return_indices=True)
    go = draw(arrays(indices.shape, dtype))
    return Call(dict(grad_output=go, indices=relayout(indices, draw(st.sampled_from(LAYOUTS))),
                     input_shape=_spell_shape(draw, shape)))


@st.composite
def avg_pool_call(draw, kind="avg", backward=False):
    dtype = draw(st.sampled_from(DTYPES))
    kw, hw, g = draw(pool_window(dilation=False))
    shape = draw(pool_input_shape(hw))
    if kind == "avg":
        kw["count_include_pad"] = draw(st.booleans())
        kw["divisor_override"] = draw(st.one_of(st.none(), st.integers(1, 5), st.integers(-3, -1)))
    if backward:
        go = draw(arrays(shape[:-2] + (g.out_h, g.out_w), dtype))
        return Call(dict(grad_output=go, input_shape=_spell_shape(draw, shape), **kw))
    return Call(dict(x=draw(arrays(shape, dtype)), **kw))


@st.composite
def global_pool_call(draw, kind, backward=False):
    dtype = draw(st.sampled_from(DTYPES))
    hw = (draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    shape = draw(pool_input_shape(hw))
    keepdims = draw(st.booleans())
    if not backward:
        kw = dict(x=draw(arrays(shape, dtype)), keepdims=keepdims)
        if kind == "max":
            kw["return_indices"] = draw(st.booleans())
        return Call(kw)
    lead = shape[:-2] + ((1, 1) if keepdims else ())
    kw = dict(grad_output=draw(arrays(lead, dtype)))
    if kind == "max":
        x = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).standard_normal(shape).astype(dtype)
        kw["indices"] = reference.global_max_pool2d(x, keepdims=keepdims, return_indices=True)[1]
    kw["input_shape"] = _spell_shape(draw, shape)
    return Call(kw)


@st.composite
def length_arg(draw, n):
    """A 1-D window argument in one of the accepted spellings: int, NumPy int, 1-tuple,
    1-list, 0-d or 1-element array."""
    return draw(st.sampled_from([n, n, np.int64(n), (n,), [n], np.array(n), np.array([n])]))


@st.composite
def conv1d_call(draw, backward=False):
    dtype = draw(st.sampled_from(DTYPES))
    groups = draw(st.integers(1, 3))
    Cg, Kg = draw(st.integers(0, 3)), draw(st.integers(1, 3))
    N = draw(st.integers(0, 3))
    k = draw(st.integers(1, 5))
    stride = draw(st.one_of(st.just(1), st.integers(1, 4)))
    dilation = draw(st.one_of(st.just(1), st.integers(1, 3)))
    span = dilation * (k - 1) + 1
    form = draw(st.sampled_from(["int", "spelled", "valid", "same"] if stride == 1 else ["int", "spelled", "valid"]))
    if form in ("valid", "same"):
        padding, pad = form, (span - 1 if form == "same" else 0)
    else:
        p = draw(st.integers(0, 3))
        padding, pad = (p if form == "int" else draw(length_arg(p))), 2 * p
    # Mostly short signals; sometimes long enough for several vector widths of the direct kernel.
    L = max(1, span - pad) + draw(st.one_of(st.integers(0, 8), st.integers(0, 80)))
    x = draw(arrays((N, Cg * groups, L), dtype))
    weight = draw(arrays((Kg * groups, Cg, k), dtype))
    kw = dict(x=x, weight=weight)
    if backward:
        out_length = (L + pad - span) // stride + 1
        kw = dict(grad_output=draw(arrays((N, Kg * groups, out_length), dtype)), **kw)
    else:
        kw["bias"] = draw(st.one_of(st.none(), arrays((Kg * groups,), dtype)))
    kw.update(stride=draw(length_arg(stride)), padding=padding, dilation=draw(length_arg(dilation)))
    kw["groups"] = draw(st.sampled_from([groups, np.int32(groups)]))
    kw["algorithm"] = draw(st.sampled_from(fastconv.convolution.ALGORITHMS))
    return Call(kw)


MODES = ("full", "same", "valid")


@st.composite
def convolve_call(draw):
    """Two signals of lengths >= 1 in either order (the second may be the longer one)."""
    dtype = draw(st.sampled_from(DTYPES))
    n, m = (draw(st.one_of(st.integers(1, 12), st.integers(1, 300))) for _ in range(2))
    return Call(dict(a=draw(arrays((n,), dtype)), v=draw(arrays((m,), dtype)), mode=draw(st.sampled_from(MODES))))


@st.composite
def convolve2d_call(draw):
    """Two images in either order; for "valid" one is at least as large as the other in both axes."""
    dtype = draw(st.sampled_from(DTYPES))
    mode = draw(st.sampled_from(MODES))
    s1 = (draw(st.integers(1, 9)), draw(st.one_of(st.integers(1, 9), st.integers(1, 60))))
    if mode == "valid":
        s2 = tuple(draw(st.integers(1, s)) for s in s1)
        if draw(st.booleans()):
            s1, s2 = s2, s1
    else:
        s2 = (draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    return Call(dict(in1=draw(arrays(s1, dtype)), in2=draw(arrays(s2, dtype)), mode=mode))


def _count(hi=3):
    """A count from 1 to `hi`, sometimes 0 (mostly non-empty arrays)."""
    return st.sampled_from(list(range(1, hi + 1)) * 2 + [0])


@st.composite
def conv_transpose_call(draw, backward=False):
    """conv_transpose2d's geometry: output_padding below the stride or the dilation per axis,
    padding that leaves an output of at least one row and column."""
    dtype = draw(st.sampled_from(DTYPES))
    Cg, Kg = draw(_count()), draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3)) if Cg else 1     # no channels: one group (K would grow with it)
    N = draw(_count())
    kernel = draw(_pairs(1, 4))
    stride = draw(st.one_of(st.just((1, 1)), _pairs(1, 3)))
    dilation = draw(st.one_of(st.just((1, 1)), _pairs(1, 3)))
    out_pad = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    H, W = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    room = [(n - 1) * s + d * (k - 1) + op for n, s, d, k, op in zip((H, W), stride, dilation, kernel, out_pad)]
    pad = tuple(draw(st.integers(0, min(3, r // 2))) for r in room)
    out_hw = tuple(r - 2 * p + 1 for r, p in zip(room, pad))
    x = draw(arrays((N, Cg * groups, H, W), dtype))
    weight = draw(arrays((Cg * groups, Kg) + kernel, dtype))
    kw = dict(x=x, weight=weight)
    if backward:
        kw = dict(grad_output=draw(arrays((N, Kg * groups) + out_hw, dtype)), **kw)
    else:
        kw["bias"] = draw(st.one_of(st.none(), arrays((Kg * groups,), dtype)))
    kw.update(stride=draw(int_arg(*stride)), padding=draw(int_arg(*pad)),
              output_padding=draw(int_arg(*out_pad)), groups=draw(st.sampled_from([groups, np.int32(groups)])),
              dilation=draw(int_arg(*dilation)))
    if not backward:
        kw["algorithm"] = draw(st.sampled_from(fastconv.convolution.ALGORITHMS))
    return Call(kw)


#: Writable layouts: running statistics are updated in place in training.
WRITABLE = tuple(lay for lay in LAYOUTS if lay != "readonly")


@st.composite
def batch_norm_call(draw, training, backward=False):
    """Training (more than one value per channel) or eval (running statistics required);
    running statistics in training and the affine weight/bias each given or not."""
    dtype = draw(st.sampled_from(DTYPES))
    training = draw(st.sampled_from([training, np.bool_(training)]))
    N, C, H, W = draw(_count()), draw(_count()), draw(st.integers(1, 5)), draw(st.integers(1, 5))
    if training and N * H * W < 2:
        N = 2
    x = draw(arrays((N, C, H, W), dtype))
    # running statistics: read in eval (any layout); in the forward's training written (writable layouts),
    # in the backward's training ignored
    layouts = WRITABLE if training and not backward else LAYOUTS
    stats = draw(st.sampled_from(["both", "mean", "var", "none"])) if training else "both"
    rm = draw(arrays((C,), dtype, layouts=layouts)) if stats in ("both", "mean") else None
    rv = draw(arrays((C,), dtype, low=0.1, layouts=layouts)) if stats in ("both", "var") else None
    weight = draw(st.one_of(st.none(), arrays((C,), dtype)))
    eps = draw(st.sampled_from([1e-5, 1e-5, 1e-3, 0.5, 1, 0.0, np.float32(1e-3), np.float64(1e-5)]))
    if backward:
        return Call(dict(grad_output=draw(arrays((N, C, H, W), dtype)), x=x, weight=weight, eps=eps,
                         training=training, running_mean=rm, running_var=rv))
    momentum = draw(st.one_of(st.floats(0, 1), st.sampled_from([0, 1, 0.1, np.float32(0.5), np.float64(0.9)])))
    return Call(dict(x=x, running_mean=rm, running_var=rv, weight=weight,
                     bias=draw(st.one_of(st.none(), arrays((C,), dtype))), training=training,
                     momentum=momentum, eps=eps))


@st.composite
def adaptive_size(draw, hw):
    """(Ho, Wo), each 0 to 8 (may exceed the input's), and an output_size that spells it:
    an int, a NumPy int, a tuple or a list (whose None elements keep the input's size)."""
    o = (draw(_count(8)), draw(_count(8)))
    form = draw(st.sampled_from(["int", "npint", "tuple", "list", "none"]))
    if form in ("int", "npint"):
        o = (o[0], o[0])
        return o, (o[0] if form == "int" else np.int64(o[0]))
    spelled = [None if draw(st.booleans()) and form == "none" else n for n in o]
    o = tuple(n if s is not None else h for n, s, h in zip(o, spelled, hw))
    return o, (tuple(spelled) if form != "list" else spelled)


@st.composite
def adaptive_pool_call(draw, kind, backward=False):
    dtype = draw(st.sampled_from(DTYPES))
    hw = (draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    shape = (draw(_count()),) + hw if draw(st.booleans()) else (draw(_count()), draw(_count())) + hw
    out_hw, output_size = draw(adaptive_size(hw))
    if not backward:
        kw = dict(x=draw(arrays(shape, dtype)), output_size=output_size)
        if kind == "max":
            kw["return_indices"] = draw(st.booleans())
        return Call(kw)
    go = draw(arrays(shape[:-2] + out_hw, dtype))
    if kind == "avg":
        return Call(dict(grad_output=go, input_shape=_spell_shape(draw, shape)))
    x = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).standard_normal(shape).astype(dtype)
    _, indices = reference.adaptive_max_pool2d(x, output_size, return_indices=True)
    return Call(dict(grad_output=go, indices=relayout(indices, draw(st.sampled_from(LAYOUTS))),
                     input_shape=_spell_shape(draw, shape)))


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


def convolve_reference(a, v, mode="full"):
    """fastconv.reference.convolve, whose second argument is spelled `v_`."""
    return reference.convolve(a, v, mode)


def output_size_reference(n, kernel_size, stride=1, padding=0, dilation=1, ceil_mode=False):
    """torch's pooling_output_shape, literally (output_size computes it differently)."""
    n, kernel_size, stride, padding, dilation = (int(a) for a in (n, kernel_size, stride, padding, dilation))
    span = dilation * (kernel_size - 1) + 1
    out = (n + 2 * padding - span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= n + padding:  # the last window must start in the image
        out -= 1
    return out


def count_windows(n, kernel_size, stride, padding, dilation, ceil_mode):
    """Brute force: window starts that fit (floor) or start before the right padding (ceil)."""
    room = n + 2 * padding - dilation * (kernel_size - 1) - 1
    if ceil_mode:
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
    "choice": ["fft", "", "AUTO", None, 1, 0, True, b"auto", ("auto",), ["im2col"]],
    "n": NOT_INT + [0, -1, -2**63, -10**30],
    "n0": NOT_INT + [-1, -2**63, -10**30],
    "bool": [],  # anything: truthiness, as in torch
    "flag": [0, 1, None, "True", 1.0, np.int64(1), (True,), np.array([True])],
    "divisor": [0, np.int64(0), 1.5, float("nan"), "2", True, (2,), 2**63, -2**63 - 1, 2**100, -10**30],
    "shape": [None, "abc", 5, 2.0, (), (3,), (1, 2), (1, 2, 3, 4, 5), (1, 1, 0, 4), (1, 1, 4, 0), (-1, 1, 4, 4),
              (1.0, 1, 4, 4), ("1", 1, 4, 4), (True, 1, 4, 4), [None, 1, 4, 4], {1, 2, 3}],
}
BAD["optsize"] = [b for b in BAD["size"] if b is not None]
# batch norm's momentum (any finite real) and eps (finite, >= 0)
BAD["real"] = [float("nan"), float("inf"), -float("inf"), np.float64("nan"), np.float32("inf"), "0.1", b"1", None,
               True, False, np.bool_(True), 1 + 0j, (0.1,), [0.1], np.array([0.1]), object()]
BAD["real0"] = BAD["real"] + [-1e-5, -1, np.float32(-0.5)]
# adaptive pooling's output_size: an int >= 0, or a pair of them and None
BAD["osize"] = [b for b in NOT_INT if b is not None] + [b for b in BAD_PAIR if not (isinstance(b, tuple) and None in b)] + \
    [-1, -2**63, -10**30, MAX + 1, 2**63, 2**100, np.int8(-1), (1, -1), (-1, None), (None, MAX + 1), [2, 2**64]]


def _one_length(value, minimum):
    """Whether `value` is a 1-element sequence of an int >= minimum: a valid 1-D window argument."""
    return (isinstance(value, (tuple, list, np.ndarray)) and np.ndim(value) == 1 and len(value) == 1
            and isinstance(value[0], (int, np.integer)) and not isinstance(value[0], (bool, np.bool_))
            and value[0] >= minimum)


# conv1d's window arguments: an int or a 1-element sequence, so a pair is invalid there.
_BAD_LENGTH = [(1, 1), [2, 2], (1, 2), np.array([1, 1]), (1.5,), ("1",), (None,), (True,), [np.float64(1)],
               ((1,),), ([1],), (MAX + 1,), [2**63], (-2**63,)]
BAD["length"] = [b for b in BAD["size"] if not _one_length(b, 1)] + _BAD_LENGTH + [(0,), [-1], [np.int8(-1)]]
BAD["length_padding"] = [b for b in BAD["padding"] if not _one_length(b, 0)] + _BAD_LENGTH + \
    [(-1,), [-2**40], ("same",), ["valid"]]


def _other(dtype):
    return np.float64 if np.dtype(dtype) == np.float32 else np.float32


def bad_arrays(value, ndims, partners):
    """(bad value, names the message may use instead) for an array argument."""
    a = np.asarray(value) if value is not None else np.zeros((2, 2, 2, 2), np.float32)
    wrong_ndim = [d for d in range(0, 7) if d not in ndims]
    out = [("text", ()), (b"bytes", ()), (3, ()), ([[1.0], [1.0, 2.0]], ()), ({"a": 1}, ()), (object(), ()),
           (a.astype(np.int32), ()), (a.astype(np.int64), ()), (a.astype(np.uint8), ()), (a.astype(np.complex64), ()),
           (a.astype(np.complex128), ()), (a.astype(np.float16), ()), (a.astype(bool), ()), (a.astype(object), ()),
           (a.astype(">f4"), ()), (a.astype(">f8"), ()), (a.astype("m8[s]"), ())]
    if a.size:  # (an empty list is an empty float64 array: maybe valid)
        out.append((a.astype(np.int16).tolist(), ()))
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
    updates: tuple = ()                 # arrays the op updates in place, as documented (the only ones)

    def arrays(self):
        return [n for n, k in self.kinds.items() if k.startswith("array") or k.startswith("optarray")]


def bad_indices(value):
    a = np.asarray(value) if value is not None else np.zeros((1, 1, 1, 1), np.int64)
    return [(None, ()), ("idx", ()), (a.astype(np.float64), ()), (a.astype(bool), ()), (a.astype(object), ()),
            (np.zeros(a.shape + (1,), np.int64), ("grad_output",)), (np.zeros((1,) * 7, np.int64), ("grad_output",)),
            (np.full(a.shape, -1, np.int64), ("input_shape",)) if a.size else (None, ()),
            (np.full(a.shape, 2**40, np.int64), ("input_shape",)) if a.size else (None, ()),
            (np.full(a.shape, 2**63 - 1, np.uint64), ("input_shape",)) if a.size else (None, ())]


def bad_values(spec, call, name):
    kind = spec.kinds[name]
    if kind == "indices":
        return bad_indices(call.kwargs.get(name))
    if kind.startswith(("array", "optarray")):
        ndims = tuple(int(c) for c in kind.split(":")[1])
        partners = tuple(n for n in spec.arrays() if n != name)
        return bad_arrays(call.kwargs.get(name), ndims, partners)
    return [(b, ()) for b in BAD[kind]]


@st.composite
def invalid_call(draw, spec):
    """(Call, names): a valid call with one argument broken; the error must name one of `names`."""
    call = draw(spec.valid)
    options = [(n, None) for n in spec.kinds if bad_values(spec, call, n)] + list(spec.mismatches)
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


def _grad_output_grown(call):
    """A backward's grad_output one longer along its shortest spatial or channel axis."""
    go = call.kwargs["grad_output"]
    return dict(grad_output=_grow(go, int(np.argmin(go.shape[1:])) + 1)), ()


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
        out.append(("grad_output", _grad_output_grown))
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


def _conv1d_mismatches(backward):
    def weight_channels(call):
        return dict(weight=_grow(call.kwargs["weight"], 1)), ("x", "groups")

    def long_weight(call):
        x, wt = call.kwargs["x"], call.kwargs["weight"]
        return dict(weight=np.zeros(wt.shape[:2] + (x.shape[2] + 7,), wt.dtype), padding=0), ("x",)

    def empty_signal(call):
        x = call.kwargs["x"]
        return dict(x=np.zeros(x.shape[:2] + (0,), x.dtype)), ()

    def same_with_stride(call):
        return dict(padding="same", stride=2), ("stride",)

    out = [("weight", weight_channels), ("weight", long_weight), ("x", empty_signal),
           ("padding", same_with_stride)]
    if backward:
        def grad_shape(call):
            return dict(grad_output=_grow(call.kwargs["grad_output"], 2)), ()

        def grad_channels(call):
            return dict(grad_output=_grow(call.kwargs["grad_output"], 1)), ()
        out += [("grad_output", grad_shape), ("grad_output", grad_channels)]
    else:
        def bias_length(call):
            return dict(bias=np.zeros(call.kwargs["weight"].shape[0] + 1, call.kwargs["x"].dtype)), ()
        out.append(("bias", bias_length))
    return out


def _signal_mismatches(first, second, ndim):
    def empty(name, axis):
        def broken(call):
            shape = list(call.kwargs[name].shape)
            shape[axis] = 0
            return {name: np.zeros(shape, call.kwargs[name].dtype)}, ()
        return broken

    out = [(name, empty(name, axis)) for name in (first, second) for axis in range(ndim)]
    if ndim == 2:
        def crossed(call):
            # "valid" needs one input at least as large as the other in both axes.
            (H, W), dtype = call.kwargs[first].shape, call.kwargs[first].dtype
            if W >= 2:
                other = (H + 1, W - 1)
            elif H >= 2:
                other = (H - 1, W + 1)
            else:
                return None
            return {second: np.zeros(other, dtype), "mode": "valid"}, (first,)
        out.append((second, crossed))
    return out


def _conv_transpose_mismatches(backward):
    def weight_channels(call):
        return dict(weight=_grow(call.kwargs["weight"], 0)), ("x",)

    def no_outputs_per_group(call):
        wt = call.kwargs["weight"]
        return dict(weight=np.zeros((wt.shape[0], 0) + wt.shape[2:], wt.dtype)), ()

    def empty_image(call):
        x = call.kwargs["x"]
        return dict(x=np.zeros(x.shape[:2] + (x.shape[2], 0), x.dtype)), ()

    def groups_not_dividing(call):
        C = call.kwargs["x"].shape[1]
        return (dict(groups=C + 1), ("x", "weight")) if C else None

    def groups_without_channels(call):     # any groups divides C=0; K would grow with it
        return None if call.kwargs["x"].shape[1] else (dict(groups=2), ())

    def same_padding(call):
        return dict(padding="same"), ()

    def output_padding_too_large(call):
        return dict(stride=(2, 1), dilation=(1, 3), output_padding=(2, 0)), ("stride", "dilation")

    def no_output(call):
        return dict(padding=(0, 10**6)), ("stride", "dilation", "output_padding", "x")

    out = [("weight", weight_channels), ("weight", no_outputs_per_group), ("x", empty_image),
           ("groups", groups_not_dividing), ("groups", groups_without_channels), ("padding", same_padding),
           ("output_padding", output_padding_too_large), ("padding", no_output)]
    if backward:
        out.append(("grad_output", _grad_output_grown))
    else:
        def bias_length(call):
            return dict(bias=np.zeros(call.kwargs["weight"].shape[1] * int(call.kwargs["groups"]) + 1,
                                      call.kwargs["x"].dtype)), ()
        out.append(("bias", bias_length))
    return out


def _batch_norm_mismatches(backward):
    def shape(call):
        return call.kwargs["x"].shape, call.kwargs["x"].dtype

    def vector_length(name):
        def broken(call):
            (_, C, _, _), dtype = shape(call)
            return {name: np.zeros(C + 1, dtype)}, ()
        return broken

    def one_value_per_channel(call):
        (_, C, _, _), dtype = shape(call)
        x = np.zeros((1, C, 1, 1), dtype)
        return dict(x=x, training=True, **(dict(grad_output=x.copy()) if backward else {})), ("training",)

    def eval_without_statistics(call):
        return dict(training=False, running_mean=None), ("running_var",)

    out = [("running_mean", vector_length("running_mean")), ("running_var", vector_length("running_var")),
           ("weight", vector_length("weight")), ("x", one_value_per_channel),
           ("running_mean", eval_without_statistics)]
    if backward:
        def grad_shape(call):
            return dict(grad_output=_grow(call.kwargs["grad_output"], 3)), ()
        return out + [("grad_output", grad_shape)]

    def training_with(name, make):
        def broken(call):
            (N, C, H, W), dtype = shape(call)
            # (the other running statistic, given in eval, may be read-only: the error may name it)
            return ({"training": True, name: make(C, dtype)}, ("running_mean", "running_var")) \
                if N * H * W > 1 else None
        return broken

    def readonly(C, dtype):
        a = np.zeros(C, dtype)
        a.flags.writeable = False
        return a
    return out + [("bias", vector_length("bias")),
                  ("running_mean", training_with("running_mean", readonly)),         # updated in place
                  ("running_var", training_with("running_var", readonly)),
                  ("running_var", training_with("running_var", lambda C, dtype: [1.0] * C)),  # not an ndarray
                  ("running_mean", training_with("running_mean", lambda C, dtype: np.zeros(C, _other(dtype))))]


def _adaptive_mismatches(image=None):
    def empty_image(call):
        x = call.kwargs[image]
        return {image: np.zeros(x.shape[:-1] + (0,), x.dtype)}, ()
    return [(image, empty_image)]


_WINDOW_KINDS = dict(kernel_size="size", stride="size", padding="padding", dilation="size")
_CONV1D_KINDS = dict(stride="length", padding="length_padding", dilation="length", groups="groups",
                     algorithm="choice")

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
           dict(n="n", kernel_size="n", stride="n", padding="n0", dilation="n", ceil_mode="bool"), exact=True),
    OpSpec("conv1d", fastconv.conv1d, reference.conv1d, conv1d_call(),
           dict(x="array:3", weight="array:3", bias="optarray:1", **_CONV1D_KINDS),
           mismatches=_conv1d_mismatches(False)),
    OpSpec("conv1d_backward", fastconv.conv1d_backward, reference.conv1d_backward, conv1d_call(backward=True),
           dict(grad_output="array:3", x="array:3", weight="array:3", **_CONV1D_KINDS),
           mismatches=_conv1d_mismatches(True)),
    OpSpec("convolve", fastconv.convolve, convolve_reference, convolve_call(),
           dict(a="array:1", v="array:1", mode="choice"), mismatches=_signal_mismatches("a", "v", 1)),
    OpSpec("convolve2d", fastconv.convolve2d, reference.convolve2d, convolve2d_call(),
           dict(in1="array:2", in2="array:2", mode="choice"), mismatches=_signal_mismatches("in1", "in2", 2)),
]


def _pool_mismatches(backward=False, indices=False):
    def pad_over_half(call):
        return dict(kernel_size=(1, 1), padding=(1, 0)), ("kernel_size",)

    def grad_shape(call):
        go = call.kwargs["grad_output"]
        return dict(grad_output=_grow(go, go.ndim - 1)), ("indices", "input_shape")

    def batch_mismatch(call):
        shape = tuple(int(n) for n in call.kwargs["input_shape"])
        return dict(input_shape=(shape[0] + 1,) + shape[1:]), ("grad_output",)

    if backward:
        return [("grad_output", grad_shape), ("input_shape", batch_mismatch)] + \
            ([] if indices else [("padding", pad_over_half)])
    return [("padding", pad_over_half)]


_POOL_KINDS = dict(kernel_size="size", stride="optsize", padding="padding", ceil_mode="flag")
_AVG_KINDS = dict(_POOL_KINDS, count_include_pad="flag", divisor_override="divisor")

if hasattr(fastconv, "max_pool2d"):
    OPS += [
        OpSpec("max_pool2d", fastconv.max_pool2d, reference.max_pool2d, max_pool_call(),
               dict(x="array:34", **_POOL_KINDS, dilation="size", return_indices="flag"), exact=True,
               mismatches=_pool_mismatches()),
        OpSpec("max_pool2d_backward", fastconv.max_pool2d_backward, reference.max_pool2d_backward,
               max_pool_backward_call(), dict(grad_output="array:34", indices="indices", input_shape="shape"),
               mismatches=_pool_mismatches(True, True)[:1]),
        OpSpec("avg_pool2d", fastconv.avg_pool2d, reference.avg_pool2d, avg_pool_call(),
               dict(x="array:34", **_AVG_KINDS), mismatches=_pool_mismatches()),
        OpSpec("avg_pool2d_backward", fastconv.avg_pool2d_backward, reference.avg_pool2d_backward,
               avg_pool_call(backward=True), dict(grad_output="array:34", input_shape="shape", **_AVG_KINDS),
               mismatches=_pool_mismatches(True)),
        OpSpec("sum_pool2d", fastconv.sum_pool2d, reference.sum_pool2d, avg_pool_call("sum"),
               dict(x="array:34", **_POOL_KINDS), mismatches=_pool_mismatches()),
        OpSpec("sum_pool2d_backward", fastconv.sum_pool2d_backward, reference.sum_pool2d_backward,
               avg_pool_call("sum", backward=True), dict(grad_output="array:34", input_shape="shape", **_POOL_KINDS),
               mismatches=_pool_mismatches(True)),
        OpSpec("global_avg_pool2d", fastconv.global_avg_pool2d, reference.global_avg_pool2d,
               global_pool_call("avg"), dict(x="array:34", keepdims="flag")),
        OpSpec("global_avg_pool2d_backward", fastconv.global_avg_pool2d_backward,
               reference.global_avg_pool2d_backward, global_pool_call("avg", backward=True),
               dict(grad_output="array:1234", input_shape="shape")),
        OpSpec("global_max_pool2d", fastconv.global_max_pool2d, reference.global_max_pool2d,
               global_pool_call("max"), dict(x="array:34", keepdims="flag", return_indices="flag"), exact=True),
        OpSpec("global_max_pool2d_backward", fastconv.global_max_pool2d_backward,
               reference.global_max_pool2d_backward, global_pool_call("max", backward=True),
               dict(grad_output="array:1234", indices="indices", input_shape="shape")),
    ]

_CONV_TRANSPOSE_KINDS = dict(x="array:4", weight="array:4", stride="size", padding="padding",
                             output_padding="padding", groups="groups", dilation="size")
_BN_VECTORS = dict(running_mean="optarray:1", running_var="optarray:1", weight="optarray:1")

OPS += [
    OpSpec("conv_transpose2d", fastconv.conv_transpose2d, reference.conv_transpose2d, conv_transpose_call(),
           dict(_CONV_TRANSPOSE_KINDS, bias="optarray:1", algorithm="choice"),
           mismatches=_conv_transpose_mismatches(False)),
    OpSpec("conv_transpose2d_backward", fastconv.conv_transpose2d_backward, reference.conv_transpose2d_backward,
           conv_transpose_call(backward=True), dict(grad_output="array:4", **_CONV_TRANSPOSE_KINDS),
           mismatches=_conv_transpose_mismatches(True)),
] + [
    # batch norm: one entry per mode, so that each runs on every test's examples
    OpSpec(f"batch_norm2d_{mode}", fastconv.batch_norm2d, reference.batch_norm2d, batch_norm_call(mode == "train"),
           dict(x="array:4", **_BN_VECTORS, bias="optarray:1", training="flag", momentum="real", eps="real0"),
           mismatches=_batch_norm_mismatches(False), updates=("running_mean", "running_var"))
    for mode in ("train", "eval")
] + [
    OpSpec(f"batch_norm2d_backward_{mode}", fastconv.batch_norm2d_backward, reference.batch_norm2d_backward,
           batch_norm_call(mode == "train", backward=True),
           dict(grad_output="array:4", x="array:4", eps="real0", training="flag", **_BN_VECTORS),
           mismatches=_batch_norm_mismatches(True))
    for mode in ("train", "eval")
] + [
    OpSpec("adaptive_avg_pool2d", fastconv.adaptive_avg_pool2d, reference.adaptive_avg_pool2d,
           adaptive_pool_call("avg"), dict(x="array:34", output_size="osize"), mismatches=_adaptive_mismatches("x")),
    OpSpec("adaptive_avg_pool2d_backward", fastconv.adaptive_avg_pool2d_backward,
           reference.adaptive_avg_pool2d_backward, adaptive_pool_call("avg", backward=True),
           dict(grad_output="array:34", input_shape="shape"), mismatches=_pool_mismatches(True, True)[1:]),
    OpSpec("adaptive_max_pool2d", fastconv.adaptive_max_pool2d, reference.adaptive_max_pool2d,
           adaptive_pool_call("max"), dict(x="array:34", output_size="osize", return_indices="flag"), exact=True,
           mismatches=_adaptive_mismatches("x")),
    OpSpec("adaptive_max_pool2d_backward", fastconv.adaptive_max_pool2d_backward,
           reference.adaptive_max_pool2d_backward, adaptive_pool_call("max", backward=True),
           dict(grad_output="array:34", indices="indices", input_shape="shape"),
           mismatches=_pool_mismatches(True, True)[:1]),
]

OPS_BY_NAME = {spec.name: spec for spec in OPS}


# ---------------------------------------------------------------------------
# Checks (shared by tests and the fuzz harness)

def snapshot(call):
    """The bytes of every (non-object) array argument."""
    return {k: a.tobytes() for k, a in call.kwargs.items() if isinstance(a, np.ndarray) and a.dtype != object}


def assert_untouched(call, before, skip=()):
    """Every array of the snapshot `before` as it was, but those named in `skip`."""
    for k, old in before.items():
        if k not in skip:
            assert call.kwargs[k].tobytes() == old, f"{k} was modified"


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
        if r.dtype.kind in "iu":  # max pooling's indices
            assert r.dtype == np.int64 and r.flags.c_contiguous, (r.dtype, r.flags)
            np.testing.assert_array_equal(r, e)
            continue
        assert r.dtype == dtype and r.flags.c_contiguous, (r.dtype, r.flags)
        assert r.shape == np.shape(e), (r.shape, np.shape(e))
        if spec.exact:
            np.testing.assert_array_equal(r, e)
        else:
            np.testing.assert_allclose(r, e, **TOL[r.dtype])


def check_valid(spec, call):
    """fastconv == reference, fresh C-contiguous results of the input dtype, inputs untouched
    but the arrays in `spec.updates`, which must end as the reference leaves copies of them
    (and byte for byte as they were where it leaves them so, as batch norm's in eval)."""
    before = snapshot(call)
    updated = [n for n in spec.updates if isinstance(call.kwargs.get(n), np.ndarray)]
    ref_kwargs = {**call.kwargs, **{n: call.kwargs[n].copy() for n in updated}}
    result = spec.fn(**call.kwargs)
    assert_untouched(call, before, skip=updated)
    assert_matches(spec, result, spec.ref(**ref_kwargs), call)
    for n in updated:
        got, want = call.kwargs[n], ref_kwargs[n]
        if want.tobytes() == before[n]:
            assert got.tobytes() == before[n], f"{n} was modified"
        else:
            np.testing.assert_allclose(got, want, **TOL[want.dtype], err_msg=f"{n} updated wrongly")


def on_copies(spec):
    """`spec.fn` on copies of the arrays it updates in place (returned after its result):
    one call that may run many times, at once too, with the same results."""
    if not spec.updates:
        return spec.fn

    def call(**kwargs):
        own = {n: np.array(kwargs[n]) for n in spec.updates if isinstance(kwargs.get(n), np.ndarray)}
        result = spec.fn(**{**kwargs, **own})
        return (result, *own.values()) if own else result
    return call


#: Argument names that are also English words: named only as the subject of the message
#: ("a must be 1-D") or quoted, or every message with the article "a" would name `a`.
WORDS = {"a"}


def names_argument(message, names):
    def named(n):
        if n in WORDS:
            return re.match(rf"{n} ", message) or re.search(rf"['`\"]{n}['`\"]|(?<![A-Za-z0-9_]){n}=", message)
        return re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", message)
    return any(named(n) for n in names)


def check_invalid(spec, call, names):
    """The call raises ValueError or TypeError whose message names one of `names`."""
    try:
        spec.fn(**call.kwargs)
    except (ValueError, TypeError) as e:
        assert names_argument(str(e), names), f"{type(e).__name__}({str(e)!r}) names none of {names}"
        return e
    raise AssertionError(f"{spec.name}{call!r} raised nothing; expected an error naming {names}")
