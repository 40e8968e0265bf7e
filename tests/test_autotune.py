"""algorithm="auto": calibration per shape class (fastconv._autotune), its cache, its
switch and its file; results against the reference within the bound of whatever it
picks (winograd's fastconv._winograd.RTOL)."""
import json
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import DTYPES

import fastconv
from fastconv import _autotune, _im2col, _winograd, convolution, reference
from fastconv import _validation as v

#: The calibration itself (conftest's FASTCONV_TEST_AUTO replaces it in the other tests).
REAL_CALIBRATE = _autotune.calibrate


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    """Each test starts with no calibrated class, calibration on and no cache file, and
    leaves the process as it found it."""
    monkeypatch.setattr(_autotune, "calibrate", REAL_CALIBRATE)
    monkeypatch.delenv(_autotune.ENABLE_VARIABLE, raising=False)
    monkeypatch.delenv(_autotune.CACHE_VARIABLE, raising=False)
    choices, state = dict(_autotune._choices), dict(_autotune._state)
    _autotune._choices.clear()
    _autotune._state.update(enabled=None, cache_file=None, cache_file_set=False, loaded=False, warned=set())
    yield
    _autotune._choices.clear()
    _autotune._choices.update(choices)
    _autotune._state.clear()
    _autotune._state.update(state)


class Counting:
    """Wraps calibrate: counts its calls and can make `fastest` win."""

    def __init__(self, monkeypatch, fastest=None):
        self.calls = []
        self.fastest = fastest
        real = _autotune.calibrate

        def calibrate(pass_, x_shape, weight_shape, g, groups, dtype, names):
            self.calls.append((pass_, tuple(x_shape), tuple(names)))
            if self.fastest is None:
                return real(pass_, x_shape, weight_shape, g, groups, dtype, names)
            return {name: 1.0 if name == self.fastest else 2.0 for name in names}

        monkeypatch.setattr(_autotune, "calibrate", calibrate)


def geometry(H, W, k, stride=1, padding=0, dilation=1):
    return v.conv_geometry((H, W), k, stride, padding, dilation)


def assert_bound(got, want):
    """What auto guarantees whatever it picks: winograd's bound, max |err| <= RTOL * max |ref|
    (direct and im2col are well within it)."""
    assert got.shape == want.shape
    if want.size:
        assert np.abs(got - want).max() <= _winograd.RTOL[got.dtype] * max(np.abs(want).max(), 1e-30)


# (N, C, H, W, K, kernel, stride, padding, dilation, groups)
SHAPES = [
    (2, 8, 12, 12, 8, 3, 1, 1, 1, 1),      # winograd runs it
    (1, 16, 9, 14, 4, 3, 1, 0, 1, 2),      # grouped, unpadded
    (3, 6, 10, 10, 6, 3, 1, 1, 1, 6),      # depthwise
    (2, 5, 11, 11, 7, 3, 2, 1, 1, 1),      # stride 2: no winograd
    (2, 5, 11, 11, 7, 3, 1, 2, 2, 1),      # dilation 2: no winograd
    (2, 4, 9, 9, 6, 5, 1, 2, 1, 1),        # 5x5: no winograd
    (2, 12, 7, 7, 9, 1, 1, 0, 1, 1),       # pointwise
]


def make(rng, shape, dtype):
    N, C, H, W, K, k, s, p, d, groups = shape
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C // groups, k, k)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    return x, w, b, dict(stride=s, padding=p, dilation=d, groups=groups)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_auto_matches_the_reference_within_the_bound(rng, shape, dtype):
    x, w, b, kw = make(rng, shape, dtype)
    y = fastconv.conv2d(x, w, b, **kw)
    assert_bound(y, reference.conv2d(x, w, b, **kw))
    go = rng.standard_normal(y.shape).astype(dtype)
    for got, want in zip(fastconv.conv2d_backward(go, x, w, **kw), reference.conv2d_backward(go, x, w, **kw)):
        assert_bound(got, want)


@pytest.mark.parametrize("pass_", ["forward", "grad_x", "grad_weight"])
@pytest.mark.parametrize("shape", SHAPES)
def test_calibration_picks_among_the_algorithms_that_run_the_geometry(shape, pass_):
    N, C, H, W, K, k, s, p, d, groups = shape
    g = geometry(H, W, k, s, p, d)
    names = _autotune.candidates(pass_, (N, C, H, W), (K, C // groups, k, k), g, groups, np.float32)
    assert ("winograd" in names) == ((k, s, d) == (3, 1, 1) and pass_ != "grad_weight")
    assert "direct" in names and "im2col" in names
    choice = _autotune.choose(pass_, (N, C, H, W), (K, C // groups, k, k), g, groups, np.float32)
    assert choice in names
    if len(names) == 1:             # nothing to time
        assert _autotune.autotune_choices() == []
        return
    seconds = _autotune.autotune_choices()[0]["seconds"]
    assert set(seconds) <= set(names) and all(t > 0 for t in seconds.values())


@pytest.mark.parametrize("shape", SHAPES[3:6])
def test_winograd_never_runs_a_geometry_it_cannot(monkeypatch, rng, shape):
    Counting(monkeypatch, fastest="winograd")
    x, w, b, kw = make(rng, shape, np.float32)
    y = fastconv.conv2d(x, w, b, **kw)        # would raise if winograd ran it
    np.testing.assert_allclose(y, reference.conv2d(x, w, b, **kw), rtol=1e-4, atol=1e-4)
    assert all(rec["choice"] != "winograd" for rec in _autotune.autotune_choices())


def test_the_fastest_wins_and_the_prior_keeps_near_ties(monkeypatch):
    g = geometry(20, 20, 3, padding=1)
    args = ((4, 16, 20, 20), (16, 16, 3, 3), g, 1, np.float32)
    monkeypatch.setattr(_autotune, "calibrate", lambda *a: {"im2col": 3.0, "direct": 1.0, "winograd": 0.5})
    assert _autotune.choose("forward", *args) == "winograd"
    _autotune.clear()
    prior = _autotune.rule("forward", *args)
    assert prior == "direct"
    monkeypatch.setattr(_autotune, "calibrate", lambda *a: {"im2col": 3.0, "direct": 1.0, "winograd": 0.97})
    assert _autotune.choose("forward", *args) == "direct"


def test_a_class_is_timed_once(monkeypatch, rng):
    counting = Counting(monkeypatch)
    x, w, b, kw = make(rng, SHAPES[0], np.float32)
    first = fastconv.conv2d(x, w, b, **kw)
    assert len(counting.calls) == 1
    np.testing.assert_array_equal(fastconv.conv2d(x, w, b, **kw), first)
    # another shape of the same class: N 2 -> 2, H 12 -> 11 (output pixels in the same bucket)
    fastconv.conv2d(x[:, :, :11], w, b, **kw)
    assert len(counting.calls) == 1
    # another class: a larger batch bucket
    fastconv.conv2d(np.concatenate([x] * 4), w, b, **kw)
    assert len(counting.calls) == 2


def test_the_switch_turns_calibration_off(monkeypatch, rng):
    counting = Counting(monkeypatch, fastest="winograd")
    x, w, b, kw = make(rng, SHAPES[0], np.float64)
    g = geometry(12, 12, 3, padding=1)
    fastconv.set_autotune(False)
    assert not fastconv.get_autotune()
    y = fastconv.conv2d(x, w, b, **kw)
    gx, gw, gb = fastconv.conv2d_backward(np.ones_like(y), x, w, **kw)
    assert counting.calls == [] and _autotune.autotune_choices() == []
    assert _autotune.choose("forward", x.shape, w.shape, g, 1, x.dtype) == "direct"
    # the rule's algorithm runs: bitwise what it gives when named
    np.testing.assert_array_equal(y, fastconv.conv2d(x, w, b, algorithm="direct", **kw))
    fastconv.set_autotune(True)
    assert fastconv.get_autotune()
    assert _autotune.choose("forward", x.shape, w.shape, g, 1, x.dtype) == "winograd"
    with pytest.raises(TypeError, match="enabled"):
        fastconv.set_autotune("no")


def test_the_environment_variable_turns_calibration_off(monkeypatch, rng):
    counting = Counting(monkeypatch, fastest="winograd")
    monkeypatch.setenv(_autotune.ENABLE_VARIABLE, "0")
    assert not fastconv.get_autotune()
    x, w, b, kw = make(rng, SHAPES[0], np.float32)
    fastconv.conv2d(x, w, b, **kw)
    assert counting.calls == []
    monkeypatch.setenv(_autotune.ENABLE_VARIABLE, "1")
    assert fastconv.get_autotune()


@pytest.mark.parametrize("dtype", DTYPES)
def test_batches_of_zero_and_one(monkeypatch, rng, dtype):
    counting = Counting(monkeypatch)
    x, w, b, kw = make(rng, SHAPES[0], dtype)
    empty = fastconv.conv2d(x[:0], w, b, **kw)
    assert empty.shape == (0, 8, 12, 12) and counting.calls == []
    gx, gw, gb = fastconv.conv2d_backward(empty, x[:0], w, **kw)
    assert gx.shape == (0, 8, 12, 12) and not gw.any() and not gb.any()
    y = fastconv.conv2d(x[:1], w, b, **kw)
    assert len(counting.calls) == 1
    assert_bound(y, reference.conv2d(x[:1], w, b, **kw))


def test_the_backward_takes_each_gradient_from_its_fastest(monkeypatch, rng):
    # auto's backward calibrates grad_x (winograd among its candidates) and grad_weight
    # apart, and runs each by its own choice
    x, w, b, kw = make(rng, SHAPES[0], np.float32)
    go = rng.standard_normal((2, 8, 12, 12)).astype(np.float32)
    g = geometry(12, 12, 3, padding=1)
    assert _autotune.candidates("grad_weight", x.shape, w.shape, g, 1, np.float32) == ["im2col", "direct"]
    fastest = {"grad_x": "winograd", "grad_weight": "im2col"}
    calls, ran = [], []
    monkeypatch.setattr(_autotune, "calibrate", lambda pass_, *a: calls.append((pass_, tuple(a[-1]))) or {
        name: 1.0 if name == fastest[pass_] else 2.0 for name in a[-1]})
    for name, module in convolution._MODULES.items():
        for fn in ("grad_x", "grad_weight", "backward"):
            if hasattr(module, fn):
                real = getattr(module, fn)
                monkeypatch.setattr(module, fn, lambda *a, real=real, key=(name, fn), **k: ran.append(key) or real(*a, **k))
    got = fastconv.conv2d_backward(go, x, w, **kw)
    assert calls == [("grad_x", ("im2col", "direct", "winograd")), ("grad_weight", ("im2col", "direct"))]
    # (im2col's grad_weight is its backward without grad_x)
    assert ran == [("winograd", "grad_x"), ("im2col", "grad_weight"), ("im2col", "backward")]
    for a, want in zip(got, reference.conv2d_backward(go, x, w, **kw)):
        assert_bound(a, want)
    # where both take the same algorithm, each gradient still runs alone
    _autotune.clear()
    fastest["grad_x"] = "im2col"
    calls.clear(), ran.clear()
    got = fastconv.conv2d_backward(go, x, w, **kw)
    assert ran == [("im2col", "grad_x"), ("im2col", "grad_weight"), ("im2col", "backward")]
    for a, want in zip(got, reference.conv2d_backward(go, x, w, **kw)):
        assert_bound(a, want)
    # winograd's own backward takes the grad_weight class's choice, without timing again
    calls.clear()
    fastconv.conv2d_backward(go, x, w, algorithm="winograd", **kw)
    assert calls == []


def test_threads_calibrate_each_class_once(monkeypatch, rng):
    counting = Counting(monkeypatch)
    real = _autotune.calibrate
    inside = threading.Event()

    def slow(*args):
        inside.set()
        return real(*args)

    monkeypatch.setattr(_autotune, "calibrate", slow)
    problems = [make(rng, shape, dtype) for shape in SHAPES[:3] for dtype in DTYPES]
    expected = [reference.conv2d(x, w, b, **kw) for x, w, b, kw in problems]

    def worker(t):
        out = []
        for i in np.random.default_rng(t).permutation(len(problems)):
            x, w, b, kw = problems[i]
            with fastconv.threads(1 + t % 2):
                out.append((i, fastconv.conv2d(x, w, b, **kw)))
        return out

    with ThreadPoolExecutor(6) as pool:
        results = [r for rs in pool.map(worker, range(6)) for r in rs]
    for i, y in results:
        assert_bound(y, expected[i])
    keys = [rec["class"] for rec in _autotune.autotune_choices()]
    # each class: its calibration, then at most one recheck (of two candidates)
    assert len(keys) == len(set(keys)) and len(keys) <= len(counting.calls) <= 2 * len(keys)
    # one thread count per worker parity, but small problems run on one thread: one class each
    assert len(keys) == len(problems)


def test_third_call_rechecks_the_two_fastest_and_keeps_the_faster_times(monkeypatch, rng):
    # the calibration ran in a disturbed moment: winograd looked slowest; the recheck sees it fastest
    times = iter([{"im2col": 2.0, "direct": 1.0, "winograd": 3.0}, {"im2col": 1.5, "direct": 1.2}])
    calls = []

    def calibrate(pass_, x_shape, weight_shape, g, groups, dtype, names):
        calls.append(tuple(names))
        return {name: t for name, t in next(times).items() if name in names}

    monkeypatch.setattr(_autotune, "calibrate", calibrate)
    x, w, b, kw = make(rng, SHAPES[0], np.float32)
    for _ in range(_autotune.RECHECK_CALLS):
        fastconv.conv2d(x, w, b, **kw)
    assert calls == [("im2col", "direct", "winograd")]
    [rec] = _autotune.autotune_choices()
    assert rec["choice"] == "direct"
    fastconv.conv2d(x, w, b, **kw)          # the RECHECK_CALLS-th call after calibrating
    assert calls[1:] == [("direct", "im2col")]
    [rec] = _autotune.autotune_choices()
    assert rec["seconds"] == {"im2col": 1.5, "direct": 1.0, "winograd": 3.0}
    assert rec["choice"] == "direct"
    for _ in range(5):                      # once only
        fastconv.conv2d(x, w, b, **kw)
    assert len(calls) == 2


def test_recheck_can_change_the_choice(monkeypatch, rng):
    times = iter([{"im2col": 2.0, "direct": 1.0, "winograd": 1.1}, {"direct": 1.2, "winograd": 0.5}])
    monkeypatch.setattr(_autotune, "calibrate", lambda *a: {n: t for n, t in next(times).items() if n in a[-1]})
    x, w, b, kw = make(rng, SHAPES[0], np.float32)
    for _ in range(1 + _autotune.RECHECK_CALLS):
        y = fastconv.conv2d(x, w, b, **kw)
    [rec] = _autotune.autotune_choices()
    assert rec["choice"] == "winograd" and rec["seconds"]["direct"] == 1.0
    assert_bound(y, reference.conv2d(x, w, b, **kw))


def test_disk_cache_round_trips(monkeypatch, tmp_path, rng):
    path = tmp_path / "autotune.json"
    counting = Counting(monkeypatch, fastest="winograd")
    fastconv.set_autotune_cache(path)
    x, w, b, kw = make(rng, SHAPES[0], np.float32)
    fastconv.conv2d(x, w, b, **kw)
    assert len(counting.calls) == 1
    data = json.loads(path.read_text())
    (entries,) = data["machines"].values()
    assert list(data["machines"]) == [_autotune.machine()]
    assert [rec["choice"] for rec in entries.values()] == ["winograd"]
    # a new process (the in-memory choices forgotten) reads it and times nothing
    _autotune.clear()
    counting.fastest = "im2col"
    for _ in range(1 + _autotune.RECHECK_CALLS):      # a saved choice is final: no recheck either
        fastconv.conv2d(x, w, b, **kw)
    assert len(counting.calls) == 1
    assert [rec["choice"] for rec in _autotune.autotune_choices()] == ["winograd"]
    # the environment variable names it too; another machine's entries are not used
    data["machines"] = {"another CPU": entries}
    path.write_text(json.dumps(data))
    _autotune._state["cache_file_set"] = False
    monkeypatch.setenv(_autotune.CACHE_VARIABLE, str(path))
    _autotune.clear()
    fastconv.conv2d(x, w, b, **kw)
    assert len(counting.calls) == 2
    assert set(json.loads(path.read_text())["machines"]) == {"another CPU", _autotune.machine()}
    with pytest.raises(TypeError, match="path"):
        fastconv.set_autotune_cache(3)


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00", b'{"format": "something else"}', b"[1, 2]"])
def test_a_corrupt_cache_file_is_ignored_and_left_alone(monkeypatch, tmp_path, rng, content):
    path = tmp_path / "autotune.json"
    path.write_bytes(content)
    counting = Counting(monkeypatch)
    fastconv.set_autotune_cache(path)
    x, w, b, kw = make(rng, SHAPES[0], np.float32)
    with pytest.warns(RuntimeWarning, match="not a fastconv autotune cache"):
        y = fastconv.conv2d(x, w, b, **kw)
    assert_bound(y, reference.conv2d(x, w, b, **kw))
    assert len(counting.calls) == 1 and path.read_bytes() == content
    with warnings.catch_warnings():
        warnings.simplefilter("error")       # warned once per file
        fastconv.conv2d(np.concatenate([x] * 4), w, b, **kw)


def test_extrapolation_through_two_slices():
    # fixed 2 + 0.5 per row, timed at 10 and 40 rows, called for 400
    assert _autotune._extrapolate([(10, 7.0), (40, 22.0)], 400) == pytest.approx(202.0)
    # noise: a smaller slice slower than the larger gives no negative cost per row
    assert _autotune._extrapolate([(10, 5.0), (40, 4.0)], 400) >= 4.0
    assert _autotune._extrapolate([(40, 3.0)], 40) == 3.0
    assert _autotune._extrapolate([(40, 3.0), (40, 3.0)], 80) == 6.0


@pytest.mark.parametrize("shape", [(8, 64, 56, 56, 64), (1, 128, 112, 112, 128), (1, 64, 224, 224, 64),
                                   (256, 512, 7, 7, 512), (64, 3, 32, 32, 32), (1, 512, 14, 14, 512),
                                   (2, 512, 9, 9, 512)])
@pytest.mark.parametrize("names", [("direct", "winograd"), ("im2col", "direct", "winograd")])
def test_slices_are_bounded(shape, names):
    N, C, H, W, K = shape
    g = geometry(H, W, 3, padding=1)
    for pass_ in ("forward", "grad_x"):
        slices = _autotune._slices((N, C, H, W), (K, C, 3, 3), g, np.float32, pass_, 2, names)
        for images, rows in slices:
            macs = _autotune._macs(pass_, (images, C, H, W), (K, C, 3, 3), g) * rows // g.out_h
            assert macs <= (_autotune.SLICE_EVEN_MAX if "im2col" in names else 2 * _autotune.SLICE_MACS_MAX)
        assert len(slices) == len(set(slices)) in (1, 2)
        assert [i * r for i, r in slices] == sorted(i * r for i, r in slices)


def test_busiest_thread_of_im2col_bands():
    # forward: the pool hands bands to the first free thread
    assert _autotune._busiest("forward", 28, 2, 1, 28) == 2.0       # one band: one thread works
    assert _autotune._busiest("forward", 28, 2, 2, 28) == 1.0
    assert _autotune._busiest("forward", 18, 2, 1, 28) == pytest.approx(18 / 14)
    assert _autotune._busiest("forward", 18, 2, 2, 28) == 1.0
    assert _autotune._busiest("forward", 8, 2, 1, 56) == pytest.approx(32 / 28)
    # the gradients: even bands, then odd ones, each in contiguous blocks
    assert _autotune._busiest("grad_x", 28, 2, 2, 28) == 1.0
    assert _autotune._busiest("grad_weight", 14, 2, 1, 28) == 2.0      # one band a phase
    assert _autotune._busiest("grad_x", 7, 2, 1, 28) == 1.0
    assert _autotune._busiest("grad_weight", 4, 1, 3, 13) == 1.0


# (N, C, H=W, K, kernel, stride, padding): pointwise on small maps (one im2col band an
# image), C4's 11x11 stride 4 (five bands an image), 3x3 (winograd tiles too)
EVEN_SHAPES = [(8, 256, 28, 512, 1, 1, 0), (8, 3, 227, 96, 11, 4, 0), (8, 64, 56, 64, 3, 1, 1),
               (1, 128, 112, 128, 3, 1, 1), (32, 256, 14, 256, 1, 1, 0), (3, 256, 28, 512, 1, 1, 0)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pass_", ["forward", "grad_x"])
@pytest.mark.parametrize("shape", EVEN_SHAPES)
def test_slices_keep_im2col_threads_as_busy_as_the_call(shape, pass_, dtype):
    N, C, H, K, k, s, p = shape
    g = geometry(H, H, k, s, p)
    x_shape, w_shape = (N, C, H, H), (K, C, k, k)
    names = _autotune.candidates(pass_, x_shape, w_shape, g, 1, dtype)
    slices = _autotune._slices(x_shape, w_shape, g, dtype, pass_, 2, names)
    band = _im2col._band_rows(C * k * k, g, np.dtype(dtype).itemsize)
    call = _autotune._busiest(pass_, band, 2, N, g.out_h)
    for images, rows in slices:
        assert 1 <= images <= N and 1 <= rows <= g.out_h
        if images < N:
            assert images == 1 or rows == g.out_h          # whole images, or a band of one
        if "im2col" in names and call <= _autotune.EVEN_SLACK:    # (3 one-band images leave one idle)
            assert _autotune._busiest(pass_, band, 2, images, rows) <= _autotune.EVEN_SLACK * call
        macs = _autotune._macs(pass_, (images, C, H, H), w_shape, g) * rows // g.out_h
        assert macs <= _autotune.SLICE_EVEN_MAX
    # one thread: nothing to keep even, the budget's slices
    assert _autotune._slices(x_shape, w_shape, g, dtype, pass_, 1, names) == \
        _autotune._slices(x_shape, w_shape, g, dtype, pass_, 1, [n for n in names if n != "im2col"])


def test_an_uneven_band_shrinks_before_the_slice_doubles():
    # C2 float32: im2col's bands are 8 rows, 7 an image (one thread gets 4 of 7): the small
    # slice takes 6 bands of one image rather than two whole images
    g = geometry(56, 56, 3, padding=1)
    slices = _autotune._slices((8, 64, 56, 56), (64, 64, 3, 3), g, np.float32, "forward", 2,
                               ["im2col", "direct", "winograd"])
    assert slices[0] == (1, 48) and slices[-1][0] <= 2
