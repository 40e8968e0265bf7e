"""No public op writes to its inputs: compared byte for byte before and after,
for read-only arrays, broadcast (zero-stride) views, arguments that are views of
one shared buffer (even the same array twice), and calls that fail validation.
(The property tests check the same on every random valid call.)"""
import numpy as np
import pytest

import fastconv

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
