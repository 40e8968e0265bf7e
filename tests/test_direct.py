"""conv2d / conv2d_backward with algorithm="direct" and "auto", on every compiled
build of the direct kernel the CPU runs (portable baseline, AVX+FMA, AVX-512)."""
import numpy as np
import pytest
from conftest import (
    DTYPES,
    TORCH,
    assert_close,
    assert_within_winograd_bound,
    numerical_gradient,
    requires_torch,
)
from test_conv2d import CASES, make

import fastconv
from fastconv import _direct, convolution, reference
from fastconv import _validation as v
from fastconv._kernels import runnable_builds

# Small versions of the benchmark cases (bench.CONV_CASES and depthwise):
# (N, C, H, W, K, kernel, stride, padding, dilation, groups)
BENCH_LIKE = [
    (3, 3, 12, 12, 32, 3, 1, 1, 1, 1),      # C1: few input channels
    (2, 16, 14, 14, 16, 3, 1, 1, 1, 1),     # C2
    (1, 32, 20, 20, 32, 3, 1, 1, 1, 1),     # C3
    (2, 3, 47, 47, 8, 11, 4, 0, 1, 1),      # C4: 11x11 stride 4
    (2, 24, 7, 7, 40, 1, 1, 0, 1, 1),       # C5: 1x1
    (2, 16, 14, 14, 16, 3, 1, 1, 1, 16),    # depthwise
]
EDGE = [
    (2, 5, 3, 40, 7, (1, 3), (1, 2), (0, 2), (1, 3), 1),   # wide rows, strided and dilated
    (1, 4, 6, 5, 6, 3, 1, 5, 1, 2),                         # windows wholly in the padding
    (2, 6, 9, 33, 9, (2, 4), (2, 3), (1, 0), (2, 1), 3),    # tails of every width
    (2, 3, 6, 7, 9, 3, 1, (4, 3), (1, 2), 1),               # stride 1, padding past the window: grad_x crops
    (1, 8, 30, 30, 13, (1, 3), 1, 1, 1, 1),                 # Kg = 13: a partial block of output channels
    (2, 2, 23, 29, 3, (3, 7), (5, 6), (2, 3), 1, 1),        # strides past the splitter's literal cases
]


@pytest.fixture(params=runnable_builds("conv_direct"), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def build(request, monkeypatch):
    monkeypatch.setattr(_direct, "kernel", request.param)
    return request.param


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES + BENCH_LIKE + EDGE)
def test_direct_matches_reference(build, rng, case, dtype):
    x, w, b, kw = make(rng, case, dtype)
    y = fastconv.conv2d(x, w, b, algorithm="direct", **kw)
    assert y.dtype == dtype and y.flags.c_contiguous
    assert_close(y, reference.conv2d(x, w, b, **kw))
    go = rng.standard_normal(y.shape).astype(dtype)
    got = fastconv.conv2d_backward(go, x, w, algorithm="direct", **kw)
    for g, want in zip(got, reference.conv2d_backward(go, x, w, **kw)):
        assert g.dtype == dtype and g.flags.c_contiguous
        assert_close(g, want)


@pytest.mark.parametrize("where", ["weight", "x", "grad_output"])
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("case", [BENCH_LIKE[1], BENCH_LIKE[5], CASES[0], EDGE[0], EDGE[3],
                                  (2, 3, 9, 8, 4, 3, 2, 1, 1, 1), (2, 1, 6, 6, 4, 3, 1, 1, 2, 1),
                                  (1, 1, 6, 4, 2, 3, 2, 0, 1, 1), (2, 2, 6, 7, 3, 2, 2, 1, 1, 1)])
def test_non_finite_values_stay_where_the_reference_has_them(build, rng, case, value, where):
    """The tiles multiply the planes' padding, the zeros of grad_x's phase windows and
    grad_weight's lanes past the output by the other factor in products the reference
    has not: an inf or NaN weight, input or output gradient must still give the
    reference's inf, -inf and NaN, and its numbers."""
    x, w, b, kw = make(rng, case, np.float64)
    go = rng.standard_normal(reference.conv2d(x, w, b, **kw).shape)
    target = {"weight": w, "x": x, "grad_output": go}[where]
    target.flat[rng.integers(target.size, size=2)] = value
    with np.errstate(invalid="ignore"):
        y = fastconv.conv2d(x, w, b, algorithm="direct", **kw)
        got = fastconv.conv2d_backward(go, x, w, algorithm="direct", **kw)
        want = reference.conv2d_backward(go, x, w, **kw)
        np.testing.assert_allclose(y, reference.conv2d(x, w, b, **kw), rtol=1e-9, atol=1e-9)
    for a, e in zip(got, want):
        np.testing.assert_allclose(a, e, rtol=1e-9, atol=1e-9)    # equal_nan: NaN where the reference's


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("height", [1, 2, 3, 4, 5, 6, 9, 13])
@pytest.mark.parametrize("width", [1, 2, 7, 8, 15, 16, 17, 31, 32, 33, 47, 56])
def test_depthwise_3x3_tiles(build, rng, relu, dtype, height, width):
    """Depthwise 3x3 at stride 1 and dilation 1 runs its own tiles (fc_dw3_block: 4 rows
    by 2 vectors of pixels): bands of every height around the tile's rows and rows of
    every width around its vectors, padding 0 to 2 (an output larger than the input),
    bias and a fused ReLU: each output written once, with its value, nothing around it."""
    C = 5
    for padding in (0, 1, 2):
        x = rng.standard_normal((2, C, height + 2 - 2 * padding + 2, width + 2 - 2 * padding + 2)).astype(dtype)
        x = x[:, :, 1:-1, 1:-1].copy()        # H, W = height/width + 2 - 2 * padding
        if min(x.shape[2:]) < 1:
            continue
        w = rng.standard_normal((C, 1, 3, 3)).astype(dtype)
        b = rng.standard_normal(C).astype(dtype)
        kw = dict(stride=1, padding=padding, groups=C)
        want = reference.conv2d(x, w, b, **kw)
        if relu:
            want = np.maximum(want, 0)
        assert want.shape[2:] == (height, width)
        guarded = np.full((want.shape[0] + 2,) + want.shape[1:], np.nan, dtype=dtype)
        g = v.conv_geometry(x.shape[2:], w.shape[2:], 1, padding, 1)
        _direct._forward_into(guarded[1:-1], x, w, b, g, C, 2, relu)
        assert_close(guarded[1:-1], want)
        assert np.isnan(guarded[0]).all() and np.isnan(guarded[-1]).all()


@pytest.mark.parametrize("tiles", ["pixel", "channel"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dilation", [1, 30])
@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 7, 8, 9, 11, 12, 13, 15, 16, 17, 23, 25, 37])
def test_forward_writes_only_its_output(build, rng, monkeypatch, tiles, dtype, dilation, width):
    """Output rows of every width around the pixel tiles' vector lengths (4, 8, 16
    values; a vector then spans one row, its end or several rows) and the channel
    tiles' widths (rows of 1-12 pixels, split in 2 to 4 near-equal tiles), and with
    dilation 30 phase planes far wider than the output (whole pixel tiles of no
    output): each output written once, with its value, and nothing around the
    output array. Channel tiles take two whole blocks of channels and pixel tiles
    the 3 after them."""
    K = 6
    if tiles == "channel":
        monkeypatch.setattr(_direct, "_channel_tiles_pay", lambda *args: True)
        K = 2 * build.channel_block(dtype == np.float64) + 3
    x = rng.standard_normal((2, 3, 9, width + 2 * dilation)).astype(dtype)
    w = rng.standard_normal((K, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    kw = dict(stride=1, padding=(1, 0), dilation=(1, dilation))
    want = reference.conv2d(x, w, b, **kw)
    assert want.shape[-1] == width
    guarded = np.full((want.shape[0] + 2,) + want.shape[1:], np.nan, dtype=dtype)
    g = v.conv_geometry(x.shape[2:], w.shape[2:], **kw)
    _direct._forward_into(guarded[1:-1], x, w, b, g, 1, 2)
    assert_close(guarded[1:-1], want)
    assert np.isnan(guarded[0]).all() and np.isnan(guarded[-1]).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [
    # K / groups is at least one whole block of channels on every build (32 at most)
    (2, 3, 9, 40, 32, 3, 1, 1, 1, 1),                   # whole blocks only (one in float32 on AVX-512)
    (1, 2, 7, 29, 45, (2, 3), 1, 0, 1, 1),              # whole blocks, then channels on pixel tiles
    (2, 4, 13, 47, 70, 11, 4, 0, 1, 2),                 # C4-like, in groups of 35 channels
    (1, 6, 11, 60, 68, 3, (2, 3), (1, 2), (2, 1), 2),   # strided, dilated, padded, grouped
    (3, 2, 5, 3, 40, 3, 1, 1, 1, 1),                    # rows narrower than one tile
    (2, 8, 5, 7, 40, 1, 1, 0, 1, 1),                    # pointwise
    (0, 3, 9, 9, 32, 3, 1, 1, 1, 1),                    # an empty batch
    (2, 0, 5, 5, 40, 3, 1, 0, 1, 1),                    # no input channels: no taps, bias only
])
def test_channel_tiles_match_reference(build, rng, monkeypatch, case, dtype):
    """The forward, and grad_x at stride 1 (a forward), with every whole block of
    channels on channel tiles, on every build."""
    monkeypatch.setattr(_direct, "_channel_tiles_pay", lambda *args: True)
    x, w, b, kw = make(rng, case, dtype)
    y = fastconv.conv2d(x, w, b, algorithm="direct", **kw)
    assert_close(y, reference.conv2d(x, w, b, **kw))
    go = rng.standard_normal(y.shape).astype(dtype)
    got = fastconv.conv2d_backward(go, x, w, algorithm="direct", **kw)
    for g, want in zip(got, reference.conv2d_backward(go, x, w, **kw)):
        assert_close(g, want)


def test_channel_tiles_where_they_pay(build):
    """Channel tiles on the AVX-512 build only, for many taps or rows short next to
    their planes, and only with at least one whole block of channels."""
    f32 = np.dtype(np.float32)
    c4 = v.conv_geometry((227, 227), (11, 11), stride=4, padding=0, dilation=1)
    c1 = v.conv_geometry((32, 32), (3, 3), stride=1, padding=1, dilation=1)
    short = v.conv_geometry((14, 14), (3, 3), stride=1, padding=1, dilation=1)
    avx512 = build.compiled_isa() == 2
    assert _direct._channel_tiles_pay(c4, 96, 363, f32) == avx512
    assert _direct._channel_tiles_pay(short, 64, 27, f32) == avx512
    assert not _direct._channel_tiles_pay(c1, 32, 27, f32)
    assert not _direct._channel_tiles_pay(c4, build.channel_block(False) - 1, 363, f32)


def test_channel_tiles_check_the_packed_weights(rng):
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((40, 27)).astype(np.float32)
    g = v.conv_geometry((8, 8), (3, 3), stride=1, padding=0, dilation=1)
    plan = _direct._plan(3, g, x.dtype, 6)
    block = _direct.kernel.channel_block(False)
    rows = 40 // block * 27      # 27 taps per whole block
    for shape in [(rows, block + 1), (rows - 1, block), (rows + 27, block)]:
        with pytest.raises(ValueError, match="packed must be"):
            _direct.kernel.conv2d_forward(x, w, np.zeros(40, np.float32), np.empty((1, 40, 6, 6), np.float32),
                                          g.struct(), 1, plan, np.empty((1, plan.size), np.float32), 1,
                                          np.zeros(shape, np.float32))


@pytest.mark.parametrize("algorithm", convolution.ALGORITHMS)
@pytest.mark.parametrize("case", BENCH_LIKE)
def test_every_algorithm_agrees(rng, case, algorithm):
    x, w, b, kw = make(rng, case, np.float64)
    assert_close(fastconv.conv2d(x, w, b, algorithm=algorithm, **kw), reference.conv2d(x, w, b, **kw))
    go = rng.standard_normal(reference.conv2d(x, w, **kw).shape)
    for got, want in zip(fastconv.conv2d_backward(go, x, w, algorithm=algorithm, **kw),
                         reference.conv2d_backward(go, x, w, **kw)):
        assert_close(got, want)


@pytest.mark.parametrize("waste", [-1, 2])       # every phase shape apart / one common window
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [
    (2, 5, 9, 8, 6, 3, 2, 1, 1, 1),      # 3x3 stride 2: sub-kernels 2x2, 2x1, 1x2, 1x1
    (1, 4, 11, 10, 3, 5, 3, 2, 1, 1),    # 5x5 stride 3, uneven taps
    (2, 6, 10, 9, 4, 3, 2, 1, 2, 2),     # dilation 2, groups
    (1, 3, 12, 13, 5, (3, 4), (2, 3), (1, 0), 1, 1),
])
def test_grad_x_phases_apart_or_together(build, rng, monkeypatch, case, dtype, waste):
    """grad_x at stride > 1 runs its phases in one common window, or those of each
    sub-kernel shape apart (`PHASE_WASTE`): the same values either way."""
    monkeypatch.setattr(_direct, "PHASE_WASTE", waste)
    x, w, _, kw = make(rng, case, dtype)
    y = reference.conv2d(x, w, **kw)
    go = rng.standard_normal(y.shape).astype(dtype)
    got = convolution.conv2d_backward(go, x, w, algorithm="direct", **kw)[0]
    assert_close(got, reference.conv2d_backward(go, x, w, **kw)[0])


@pytest.mark.parametrize("band_bytes", [1, 1 << 30])
def test_channel_chunks_and_small_workspace(build, rng, monkeypatch, band_bytes):
    # A tiny row budget forces one packed channel per pass (the accumulate paths);
    # band sizes from one output row per task to the whole image.
    monkeypatch.setattr(_direct, "ROW_BUDGET", 8)
    monkeypatch.setattr(_direct, "BAND_BYTES", band_bytes)
    for case in [BENCH_LIKE[1], EDGE[2], CASES[1]]:
        x, w, b, kw = make(rng, case, np.float64)
        assert_close(fastconv.conv2d(x, w, b, algorithm="direct", **kw), reference.conv2d(x, w, b, **kw))
        go = rng.standard_normal(reference.conv2d(x, w, **kw).shape)
        for got, want in zip(fastconv.conv2d_backward(go, x, w, algorithm="direct", **kw),
                             reference.conv2d_backward(go, x, w, **kw)):
            assert_close(got, want)


def test_random_shapes(build):
    rng = np.random.default_rng(11)
    for _ in range(25):
        g = int(rng.choice([1, 2, 3]))
        C, K = g * int(rng.integers(1, 6)), g * int(rng.integers(1, 7))
        kh, kw = rng.integers(1, 6, size=2)
        sh, sw = rng.integers(1, 4, size=2)
        dh, dw = rng.integers(1, 3, size=2)
        ph, pw = rng.integers(0, 4, size=2)
        H = int(dh * (kh - 1) + 1 + rng.integers(0, 8))
        W = int(dw * (kw - 1) + 1 + rng.integers(0, 30))
        x = rng.standard_normal((int(rng.integers(1, 3)), C, H, W)).astype(np.float32)
        w = rng.standard_normal((K, C // g, kh, kw)).astype(np.float32)
        kw_ = dict(stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), groups=g)
        y = fastconv.conv2d(x, w, algorithm="direct", **kw_)
        assert_close(y, reference.conv2d(x, w, **kw_))
        go = rng.standard_normal(y.shape).astype(np.float32)
        for got, want in zip(fastconv.conv2d_backward(go, x, w, algorithm="direct", **kw_),
                             reference.conv2d_backward(go, x, w, **kw_)):
            assert_close(got, want)


@pytest.mark.parametrize("case", [
    (1, 4, 6, 7, 4, 3, 2, (1, 2), (2, 1), 2),
    (1, 2, 13, 13, 3, 5, 4, 0, 1, 1),          # C4-like: large kernel, stride 4
    (1, 4, 6, 5, 4, 3, 1, 5, 1, 2),            # windows wholly in the padding
    (1, 3, 5, 21, 3, (2, 4), (2, 3), (1, 0), (2, 1), 3),
])
def test_direct_gradients_match_finite_differences(case):
    rng = np.random.default_rng(5)
    x, w, b, kw = make(rng, case, np.float64)
    go = rng.standard_normal(fastconv.conv2d(x, w, b, algorithm="direct", **kw).shape)

    def loss():
        return float(np.sum(fastconv.conv2d(x, w, b, algorithm="direct", **kw) * go))

    gx, gw, gb = fastconv.conv2d_backward(go, x, w, algorithm="direct", **kw)
    with fastconv.threads(1):
        np.testing.assert_allclose(gx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(gw, numerical_gradient(loss, w), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(gb, numerical_gradient(loss, b), rtol=1e-6, atol=1e-7)


def test_direct_workspace_is_small(rng):
    # Everything conv2d(algorithm="direct") allocates at 2 threads (the kernel itself
    # allocates nothing): the output and two band buffers, in all under 1 MiB more
    # than the output (issue #4's budget on C2).
    import tracemalloc

    x = rng.standard_normal((4, 64, 56, 56)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    with fastconv.threads(2):
        fastconv.conv2d(x[:1, :, :8], w, padding=1, algorithm="direct")
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            y = fastconv.conv2d(x, w, padding=1, algorithm="direct")
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
    assert peak - y.nbytes < 1 << 20


@pytest.mark.parametrize("algorithm", ["im2col", "direct"])
def test_no_input_channels_gives_the_bias(algorithm):
    x, w, b = np.zeros((2, 0, 5, 5)), np.zeros((3, 0, 3, 3)), np.arange(3.0)
    y = fastconv.conv2d(x, w, b, algorithm=algorithm)
    np.testing.assert_array_equal(y, np.broadcast_to(b[:, None, None], (2, 3, 3, 3)))
    gx, gw, gb = fastconv.conv2d_backward(np.ones_like(y), x, w, algorithm=algorithm)
    assert gx.shape == x.shape and gw.shape == w.shape
    np.testing.assert_array_equal(gb, [18.0, 18.0, 18.0])


def test_inputs_untouched_and_noncontiguous_accepted(rng):
    x, w, b, kw = make(rng, BENCH_LIKE[0], np.float32)
    xt = np.asfortranarray(x)
    wt = w[:, :, ::-1, ::-1]
    x0, w0 = xt.copy(), wt.copy()
    xt.setflags(write=False)
    y = fastconv.conv2d(xt, wt, b, algorithm="direct", **kw)
    assert_close(y, reference.conv2d(x, np.ascontiguousarray(wt), b, **kw))
    np.testing.assert_array_equal(xt, x0)
    np.testing.assert_array_equal(wt, w0)


def test_thread_count_does_not_change_results(rng):
    x, w, b, kw = make(rng, BENCH_LIKE[1], np.float64)
    with fastconv.threads(1):
        one = fastconv.conv2d(x, w, b, algorithm="direct", **kw)
    with fastconv.threads(3):
        three = fastconv.conv2d(x, w, b, algorithm="direct", **kw)
    np.testing.assert_array_equal(one, three)


def test_unknown_algorithm_lists_the_valid_ones(rng):
    x, w, b, kw = make(rng, CASES[0], np.float32)
    grad_output = np.zeros((2, 4, 7, 10), np.float32)
    for fn, args in [(fastconv.conv2d, (x, w)), (fastconv.conv2d_backward, (grad_output, x, w))]:
        with pytest.raises(ValueError, match="algorithm must be one of 'auto', 'im2col', 'direct', 'winograd'; got 'fft'"):
            fn(*args, padding=1, algorithm="fft")
        with pytest.raises(ValueError, match="algorithm"):
            fn(*args, padding=1, algorithm=None)


@pytest.mark.parametrize("dtype", DTYPES)
def test_auto_rule_on_the_benchmark_cases(build, dtype):
    # The rule auto follows without calibration (and takes as its prior): direct forward
    # except the pointwise C5 (there too in float64 on channel tiles); direct gradients
    # except the dense pointwise C5. Off these cases the rule also takes im2col (BLAS)
    # for dense layers whose output planes have at most 16 pixels (its taps' GEMMs:
    # ResNet-18's 4x4 layer's weight gradient 3.9 ms against direct's 5.1) and where
    # direct's planes do not fit its workspace.
    from fastconv import _autotune
    from fastconv._validation import conv_geometry
    from fastconv.bench import CONV_CASES

    for name, (N, C, H, K, k, s, p) in CONV_CASES.items():
        g = conv_geometry((H, H), k, s, p, 1)
        for groups in (1, C):
            shapes = (N, C, H, H), (K, C // groups, k, k)
            forward = _autotune.rule("forward", *shapes, g, groups, dtype)
            backward = _autotune.rule("grad_x", *shapes, g, groups, dtype)
            direct_c5 = dtype == np.float64 and groups == 1 and build.compiled_isa() == 2
            assert forward == ("im2col" if name == "C5" and not direct_c5 else "direct"), name
            assert backward == ("im2col" if name == "C5" and groups == 1 else "direct"), name


def _winograd_runs(w, kw):
    return w.shape[2:] == (3, 3) and kw.get("stride", 1) in (1, (1, 1)) and kw.get("dilation", 1) in (1, (1, 1))


@requires_torch
class TestAgainstTorch:
    torch = TORCH

    @pytest.mark.parametrize("algorithm", convolution.ALGORITHMS)
    @pytest.mark.parametrize("case", BENCH_LIKE + EDGE)
    def test_matches_torch(self, rng, case, algorithm):
        torch = self.torch
        x, w, b, kw = make(rng, case, np.float32)
        tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
        ty = torch.nn.functional.conv2d(tx, tw, tb, **kw)
        y = fastconv.conv2d(x, w, b, algorithm=algorithm, **kw)
        # "auto" may pick winograd where it runs (3x3, stride 1, dilation 1): its bound
        close = assert_within_winograd_bound if algorithm == "auto" and _winograd_runs(w, kw) else assert_close
        close(y, ty.detach().numpy())
        go = rng.standard_normal(y.shape).astype(np.float32)
        ty.backward(torch.from_numpy(go))
        gx, gw, gb = fastconv.conv2d_backward(go, x, w, algorithm=algorithm, **kw)
        close(gx, tx.grad.numpy())
        np.testing.assert_allclose(gw, tw.grad.numpy(), rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=1e-4, atol=1e-3)


def test_planes_wider_than_the_cap_fall_back_or_raise_memory_error():
    # dilation 2**24 with 'same' padding: every tap lands in the padding, and one
    # output row's phase planes would span 2**24 x 2**24 values.
    x = np.ones((1, 2, 1, 1))
    w = np.ones((3, 2, 2, 2))
    b = np.arange(3.0)
    kw = dict(padding="same", dilation=2**24)
    np.testing.assert_array_equal(fastconv.conv2d(x, w, b, **kw), b.reshape(1, 3, 1, 1))
    with pytest.raises(MemoryError, match="algorithm='im2col'"):
        fastconv.conv2d(x, w, b, algorithm="direct", **kw)
    for algorithm in convolution.ALGORITHMS:   # direct backward: grad_x on the row kernels
        gx, gw, gb = fastconv.conv2d_backward(np.ones((1, 3, 1, 1)), x, w, algorithm=algorithm, **kw)
        np.testing.assert_array_equal(gx, 0 * x)
        np.testing.assert_array_equal(gw, 0 * w)
        np.testing.assert_array_equal(gb, np.ones(3))
