"""No public op writes to its inputs: compared byte for byte before and after,
for read-only arrays, broadcast (zero-stride) views, arguments that are views of
one shared buffer (even the same array twice), and calls that fail validation.
(The property tests check the same on every random valid call.)"""
import numpy as np
import pytest

import fastconv
from fastconv import reference

TOL = {np.dtype(np.float32): dict(rtol=2e-4, atol=2e-4), np.dtype(np.float64): dict(rtol=1e-10, atol=1e-10)}
rng = np.random.default_rng(2024)


def _bytes(args):
    return [a.tobytes() if isinstance(a, np.ndarray) else None for a in args]


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _shared_conv(dtype):
    """x, weight, bias and grad_output all views of one buffer."""
    buf = rng.standard_normal(2 * 3 * 8 * 8 + 4 * 3 * 3 * 3 + 4 + 2 * 4 * 8 * 8).astype(dtype)
    x = buf[:384].reshape(2, 3, 8, 8)
    w = buf[384:492].reshape(4, 3, 3, 3)
    b = buf[492:496]
    go = buf[496:].reshape(2, 4, 8, 8)
    return buf, x, w, b, go


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_with_views_of_one_buffer(dtype):
    buf, x, w, b, go = _shared_conv(dtype)
    before = buf.tobytes()
    y = fastconv.conv2d(x, w, b, padding=1)
    gx, gw, gb = fastconv.conv2d_backward(go, x, w, padding=1)
    assert buf.tobytes() == before
    for out in (y, gx, gw, gb):
        assert not np.shares_memory(out, buf)


def test_the_same_array_as_several_arguments():
    # conv2d_backward(a, a, w): grad_output and x are one array (shapes coincide with
    # K == C, 'same' padding); col2im(im2col) round trips over one buffer.
    a = rng.standard_normal((2, 3, 6, 6))
    w = rng.standard_normal((3, 3, 3, 3))
    before = _bytes([a, w])
    fastconv.conv2d_backward(a, a, w, padding="same")
    fastconv.conv2d(a, a[:, :, :3, :3], a[0, 0, 0, :2], padding=1)
    assert _bytes([a, w]) == before
    cols = fastconv.im2col(a, 3, padding=1)
    cb = cols.tobytes()
    fastconv.col2im(cols, (6, 6), 3, padding=1)
    assert cols.tobytes() == cb


@pytest.mark.parametrize("make", [
    _readonly,
    lambda a: np.broadcast_to(a[:1], a.shape),                 # read-only, zero stride on axis 0
    lambda a: np.swapaxes(np.swapaxes(a, -1, -2).copy(), -1, -2),
    lambda a: a[..., ::-1, ::-1],                              # negative strides
], ids=["readonly", "broadcast", "transposed", "reversed"])
def test_read_only_and_odd_views(make):
    x = make(rng.standard_normal((2, 4, 9, 7)).astype(np.float32))
    w = make(rng.standard_normal((6, 4, 3, 3)).astype(np.float32))
    go = make(rng.standard_normal((2, 6, 4, 3)).astype(np.float32))
    before = _bytes([x, w, go])
    fastconv.conv2d(x, w, stride=2)
    fastconv.conv2d_backward(go, x, w, stride=2)
    cols = make(fastconv.im2col(x, 3, stride=2))
    cb = cols.tobytes()
    fastconv.col2im(cols, (9, 7), 3, stride=2)
    assert _bytes([x, w, go]) == before and cols.tobytes() == cb


@pytest.mark.parametrize("call", [
    lambda x, w: fastconv.conv2d(x, w, stride=0),
    lambda x, w: fastconv.conv2d(x, w.astype(np.float64)),
    lambda x, w: fastconv.conv2d_backward(x, x, w),
    lambda x, w: fastconv.im2col(x, 30),
    lambda x, w: fastconv.col2im(x[0], (5, 5), 3),
], ids=["stride", "dtype", "grad-shape", "kernel", "cols-shape"])
def test_failed_calls_leave_inputs_alone(call):
    x = rng.standard_normal((2, 4, 9, 7)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    before = _bytes([x, w])
    with pytest.raises((ValueError, TypeError)):
        call(x, w)
    assert _bytes([x, w]) == before


# ---------------------------------------------------------------------------
# conv_transpose2d, batch_norm2d and the adaptive pools (and their backwards). Batch
# norm's running_mean and running_var are the one documented exception: updated in
# place by the training forward, and by nothing else.

def _views(buf, shapes):
    """Consecutive views of `buf` with these shapes."""
    out, start = [], 0
    for shape in shapes:
        n = int(np.prod(shape))
        out.append(buf[start:start + n].reshape(shape))
        start += n
    return out


def _new_op_calls(x, w, stats, go_t, go_pool, idx):
    """Calls of every new op on x (N, C, H, W), w (C, K, 3, 3), stats (5 vectors of C):
    running mean, running var, weight, bias, and grad_outputs of the shapes they need."""
    rm, rv, bw, bb = stats
    return [
        lambda: fastconv.conv_transpose2d(x, w, bb[:w.shape[1]], stride=2, padding=1, output_padding=1),
        lambda: fastconv.conv_transpose2d_backward(go_t, x, w, stride=2, padding=1, output_padding=1),
        lambda: fastconv.batch_norm2d(x, rm, rv, bw, bb),
        lambda: fastconv.batch_norm2d_backward(go_pool[0], x, bw, training=True),
        lambda: fastconv.batch_norm2d_backward(go_pool[0], x, bw, training=False, running_mean=rm, running_var=rv),
        lambda: fastconv.adaptive_avg_pool2d(x, (3, 5)),
        lambda: fastconv.adaptive_max_pool2d(x, (3, 5), return_indices=True),
        lambda: fastconv.adaptive_avg_pool2d_backward(go_pool[1], x.shape),
        lambda: fastconv.adaptive_max_pool2d_backward(go_pool[1], idx, x.shape),
    ]


def _shapes(N=2, C=4, H=5, W=6, K=3):
    go_t = (N, K, 2 * H, 2 * W)     # stride 2, padding 1, output_padding 1, 3x3
    return dict(x=(N, C, H, W), w=(C, K, 3, 3), stats=[(C,)] * 4, go_t=go_t, go_bn=(N, C, H, W),
                go_pool=(N, C, 3, 5))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_new_ops_with_views_of_one_buffer(dtype):
    s = _shapes()
    shapes = [s["x"], s["w"], *s["stats"], s["go_t"], s["go_bn"], s["go_pool"]]
    buf = rng.standard_normal(sum(int(np.prod(sh)) for sh in shapes)).astype(dtype)
    x, w, rm, rv, bw, bb, go_t, go_bn, go_pool = _views(buf, shapes)
    rv[...] = np.abs(rv) + 0.5
    idx = fastconv.adaptive_max_pool2d(x, (3, 5), return_indices=True)[1]
    before, ib = buf.tobytes(), idx.tobytes()
    for call in _new_op_calls(x, w, (rm, rv, bw, bb), go_t, (go_bn, go_pool), idx):
        out = call()
        for o in (out if isinstance(out, tuple) else (out,)):
            assert not np.shares_memory(o, buf) and not np.shares_memory(o, idx)
    assert buf.tobytes() == before and idx.tobytes() == ib


@pytest.mark.parametrize("make", [
    _readonly,
    lambda a: np.broadcast_to(a[:1], a.shape),                 # read-only, zero stride on axis 0
    lambda a: np.swapaxes(np.swapaxes(a, -1, -2).copy(), -1, -2),
    lambda a: a[..., ::-1],                                    # negative strides
], ids=["readonly", "broadcast", "transposed", "reversed"])
def test_new_ops_on_read_only_and_odd_views(make):
    s = _shapes()
    x, w, go_t, go_bn, go_pool = (make(rng.standard_normal(s[k]).astype(np.float32))
                                  for k in ("x", "w", "go_t", "go_bn", "go_pool"))
    stats = [make(rng.standard_normal((1, 4)).astype(np.float32))[0] for _ in range(4)]
    stats[1] = make(np.abs(rng.standard_normal((1, 4))).astype(np.float32) + 0.5)[0]
    idx = make(fastconv.adaptive_max_pool2d(x, (3, 5), return_indices=True)[1])
    arrays = [x, w, go_t, go_bn, go_pool, idx, *stats]
    before = _bytes(arrays)
    for call in _new_op_calls(x, w, stats, go_t, (go_bn, go_pool), idx):
        call()
    # training reads these too, and writes only its own running statistics
    rm, rv = np.zeros(4, np.float32), np.ones(4, np.float32)
    fastconv.batch_norm2d(x, rm, rv, stats[2], stats[3], training=True)
    assert _bytes(arrays) == before


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_training_writes_only_the_running_statistics(dtype):
    # x, weight, bias, running_mean and running_var all views of one buffer: after the
    # training forward only the running statistics' elements differ, and they are the
    # documented update (the reference's, on copies).
    N, C, H, W = 3, 5, 4, 6
    buf = rng.standard_normal(N * C * H * W + 4 * C).astype(dtype)
    x, bw, bb, rm, rv = _views(buf, [(N, C, H, W), (C,), (C,), (C,), (C,)])
    rv[...] = np.abs(rv) + 0.5
    want = buf.copy()
    wx, wbw, wbb, wrm, wrv = _views(want, [(N, C, H, W), (C,), (C,), (C,), (C,)])
    out = fastconv.batch_norm2d(x, rm, rv, bw, bb, training=True, momentum=0.3)
    ref = reference.batch_norm2d(wx, wrm, wrv, wbw, wbb, training=True, momentum=0.3)
    assert not np.shares_memory(out, buf)
    np.testing.assert_allclose(out, ref, **TOL[np.dtype(dtype)])
    stats = slice(N * C * H * W + 2 * C, None)
    assert buf[:stats.start].tobytes() == want[:stats.start].tobytes()
    np.testing.assert_allclose(buf[stats], want[stats], **TOL[np.dtype(dtype)])
    # one statistic alone (the other None): only its elements change
    for i, (name, stat) in enumerate([("running_mean", rm), ("running_var", rv)]):
        before = buf.copy()
        fastconv.batch_norm2d(x, weight=bw, bias=bb, training=True, **{name: stat})
        own = np.zeros(buf.shape, bool)
        own[stats.start + i * C:stats.start + (i + 1) * C] = True
        assert np.array_equal(buf[~own], before[~own]) and not np.array_equal(buf[own], before[own])


@pytest.mark.parametrize("training", [False, True])
def test_batch_norm_statistics_change_only_in_the_training_forward(training):
    x = rng.standard_normal((2, 3, 4, 4))
    go = rng.standard_normal(x.shape)
    rm, rv = rng.standard_normal(3), np.abs(rng.standard_normal(3)) + 0.5
    before = _bytes([x, go, rm, rv])
    fastconv.batch_norm2d_backward(go, x, training=training, running_mean=rm, running_var=rv)
    assert _bytes([x, go, rm, rv]) == before
    fastconv.batch_norm2d(x, rm, rv, training=training)
    assert _bytes([x, go]) == before[:2]
    assert (_bytes([rm, rv]) == before[2:]) == (not training)


@pytest.mark.parametrize("break_", [
    dict(weight=np.ones(4)),                                   # wrong length
    dict(bias=np.zeros(3, np.float32)),                        # wrong dtype
    dict(eps=float("nan")),
    dict(momentum=float("inf")),
    dict(training="yes"),
    dict(x=np.zeros((1, 3, 1, 1))),                            # one value per channel
    dict(running_var=_readonly(np.ones(3))),                   # the other statistic is read-only
    dict(running_var=[1.0, 1.0, 1.0]),                         # ... or not an ndarray
    dict(running_var=np.ones(4)),                              # ... or of the wrong length
], ids=["weight", "bias-dtype", "eps-nan", "momentum-inf", "training", "single-value", "var-readonly",
        "var-list", "var-length"])
def test_failed_batch_norm_calls_leave_the_running_statistics_alone(break_):
    x = rng.standard_normal((2, 3, 4, 4))
    kw = dict(x=x, running_mean=rng.standard_normal(3), running_var=np.ones(3), weight=np.ones(3),
              bias=np.zeros(3), training=True, momentum=0.5)
    kw.update(break_)
    before = _bytes(list(kw.values()))
    with pytest.raises((ValueError, TypeError)):
        fastconv.batch_norm2d(**kw)
    assert _bytes(list(kw.values())) == before


@pytest.mark.parametrize("call", [
    lambda x, w: fastconv.conv_transpose2d(x, w.swapaxes(0, 1), output_padding=5),
    lambda x, w: fastconv.conv_transpose2d_backward(x, x, w.swapaxes(0, 1)),
    lambda x, w: fastconv.adaptive_avg_pool2d(x, -1),
    lambda x, w: fastconv.adaptive_max_pool2d(x, (2, 2, 2)),
    lambda x, w: fastconv.adaptive_avg_pool2d_backward(x, (3, 4, 9, 7)),
    lambda x, w: fastconv.adaptive_max_pool2d_backward(x, np.full(x.shape, 63), x.shape),
    lambda x, w: fastconv.batch_norm2d_backward(x, x, w[0, :, 0]),
], ids=["transpose-output-padding", "transpose-grad-shape", "adaptive-size", "adaptive-pair", "adaptive-batch",
        "adaptive-index", "batch-norm-weight"])
def test_failed_new_op_calls_leave_inputs_alone(call):
    test_failed_calls_leave_inputs_alone(call)
