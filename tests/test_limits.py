"""Arguments at the edges of the integer and memory ranges: clean errors, never
OverflowError, a NumPy message that names nothing, or a crash (regressions found
by the fuzz harness, tools/fuzz.py)."""
import numpy as np
import pytest

import fastconv

X = np.zeros((1, 2, 5, 5), np.float32)
W = np.zeros((3, 2, 3, 3), np.float32)
HUGE = [2**31, 2**40, 2**63, 2**100, np.int64(2**62), np.uint64(2**64 - 1)]


@pytest.mark.parametrize("value", HUGE)
@pytest.mark.parametrize("name", ["stride", "padding", "dilation"])
def test_huge_window_arguments_are_value_errors(name, value):
    # The kernels take these as C ints: they used to raise OverflowError.
    with pytest.raises(ValueError, match=name):
        fastconv.conv2d(X, W, **{name: value})
    with pytest.raises(ValueError, match=name):
        fastconv.im2col(X, 3, **{name: (1, value)})


@pytest.mark.parametrize("value", HUGE)
def test_huge_kernel_size_and_output_size(value):
    with pytest.raises(ValueError, match="kernel_size"):
        fastconv.im2col(X, value)
    with pytest.raises(ValueError, match="output_size"):
        fastconv.col2im(np.zeros((9, 1), np.float32), value, 3)


def test_same_padding_beyond_the_int_range():
    w = np.zeros((1, 2, 5, 5), np.float32)
    with pytest.raises(ValueError, match="padding"):
        fastconv.conv2d(X, w, padding="same", dilation=2**31 - 1)


def test_ragged_and_zero_d_arguments_are_named():
    with pytest.raises(ValueError, match="x must be an array"):
        fastconv.conv2d([[1.0], [1.0, 2.0]], W)
    with pytest.raises(ValueError, match="weight must be an array"):
        fastconv.conv2d(X, [[[[1.0]]], [[[1.0, 2.0]]]])
    # 0-d integer arrays are ints; 0-d float arrays are rejected by name.
    np.testing.assert_array_equal(fastconv.im2col(X, np.array(3)), fastconv.im2col(X, 3))
    with pytest.raises(TypeError, match="stride"):
        fastconv.im2col(X, 3, stride=np.array(1.0))


@pytest.mark.parametrize("call", [
    lambda: fastconv.im2col(X, 1, padding=2**24),                      # 8 PiB: NumPy's MemoryError
    lambda: fastconv.im2col(X, 3, padding=2**30),                      # beyond the address space
    lambda: fastconv.conv2d(X, W, padding=2**31 - 1),
    lambda: fastconv.conv2d(X, W, padding=(2**20, 2**20)),
    lambda: fastconv.col2im(np.zeros((2, 18, 1), np.float32), 2**31 - 1, 3, stride=2**31 - 1),
    lambda: fastconv.conv_transpose2d(X, W.swapaxes(0, 1), stride=2**31 - 1),
    lambda: fastconv.adaptive_avg_pool2d(X, 2**31 - 1),
    lambda: fastconv.adaptive_max_pool2d(X, (2**31 - 1, 2**31 - 1)),
], ids=["im2col-pib", "im2col-too-big", "conv2d-too-big", "conv2d-tib", "col2im-too-big", "conv-transpose-too-big",
        "adaptive-avg-too-big", "adaptive-max-too-big"])
def test_outputs_that_cannot_be_allocated_raise_memory_error(call):
    with pytest.raises(MemoryError):
        call()


def test_absurd_thread_counts_are_rejected():
    # 100000 OpenMP threads used to segfault the process.
    n = fastconv.get_num_threads()
    for bad in (10**5, 2**40):
        with pytest.raises(ValueError, match="num_threads"):
            fastconv.set_num_threads(bad)
        with pytest.raises(ValueError, match="num_threads"):
            with fastconv.threads(bad):
                pass
    assert fastconv.get_num_threads() == n


def test_conv2d_names_the_weight_when_its_kernel_does_not_fit():
    with pytest.raises(ValueError, match=r"\bweight\b"):
        fastconv.conv2d(X, np.zeros((3, 2, 7, 7), np.float32))


@pytest.mark.parametrize("value", [2**63, -2**63 - 1, 2**100])
def test_divisor_override_beyond_long_long(value):
    # The kernels take it as a C long long: it used to raise OverflowError.
    x = np.ones((1, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match="divisor_override"):
        fastconv.avg_pool2d(x, 2, divisor_override=value)
    with pytest.raises(ValueError, match="divisor_override"):
        fastconv.avg_pool2d_backward(np.ones((1, 1, 2, 2), np.float32), x.shape, 2, divisor_override=value)
    np.testing.assert_array_equal(fastconv.avg_pool2d(x, 2, divisor_override=2**63 - 1), 4 / (2**63 - 1))
