"""64-bit indexing: ops whose column buffer, output or input plane has more than
2**31 elements. Opt-in (each needs about 9 GB of memory and tens of seconds):

    FASTCONV_BIG_TESTS=1 pytest tests/test_big.py

(tests/conftest.py leaves this module out otherwise.) Every check is cheap:
an exact known answer on the elements beyond index 2**31."""
import gc

import numpy as np
import pytest

import fastconv
from fastconv import reference

BIG = 2**31


def teardown_function():
    gc.collect()


def test_im2col_col2im_with_more_than_2_31_kernel_taps():
    # 46341**2 > 2**31 taps: the kernels' kh*kw used to overflow a C int (the columns
    # were left unwritten). One 1x1 image, padded so one window fits.
    k, p = 46341, 23170
    x = np.full((1, 1, 1, 1), 3.0, np.float32)
    cols = fastconv.im2col(x, k, padding=p)
    assert cols.shape == (1, k * k, 1) and cols.shape[1] > BIG
    centre = p * k + p
    assert cols[0, centre, 0] == 3.0
    assert np.count_nonzero(cols) == 1
    cols[0, -1, 0] = 5.0  # the last tap sees padding only: col2im must drop it
    back = fastconv.col2im(cols, (1, 1), k, padding=p)
    np.testing.assert_array_equal(back, x)


@pytest.mark.parametrize("algorithm", ["im2col", "direct"])
def test_conv2d_output_beyond_2_31_elements(algorithm):
    K, H = 512, 2049
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, (1, 1, H, H)).astype(np.float32)
    w = rng.integers(-2, 3, (K, 1, 3, 3)).astype(np.float32)
    b = np.arange(K, dtype=np.float32)
    out = fastconv.conv2d(x, w, b, padding=1, algorithm=algorithm)
    assert out.size > BIG
    # Small integers: every sum is exact, so planes compare with ==.
    for k in (0, 255, K - 2, K - 1):  # the last planes lie past element 2**31
        np.testing.assert_array_equal(out[:, k:k + 1], reference.conv2d(x, w[k:k + 1], b[k:k + 1], padding=1))
    del out
    gx, gw, gb = fastconv.conv2d_backward(np.ones((1, K, H, H), np.float32), x, w, padding=1, algorithm=algorithm)
    np.testing.assert_array_equal(gb, np.full(K, H * H, np.float32))
    np.testing.assert_array_equal(gx[0, 0, 1:-1, 1:-1], np.full((H - 2, H - 2), w.sum()))  # every tap
    np.testing.assert_array_equal(gw[-1], reference.conv2d_backward(np.ones((1, 1, H, H), np.float32), x,
                                                                    w[-1:], padding=1)[1][0])


def test_pooling_a_plane_beyond_2_31_elements():
    n = 46341
    x = np.zeros((1, 1, n, n), np.float32)
    x[0, 0, -1, -1] = 7.0
    x[0, 0, n // 2, 3] = -1.0
    out, idx = fastconv.global_max_pool2d(x, return_indices=True)
    assert out.item() == 7.0 and idx.item() == n * n - 1 and idx.item() > BIG
    g = fastconv.global_max_pool2d_backward(np.ones((1, 1, 1, 1), np.float32), idx, x.shape)
    assert g[0, 0, -1, -1] == 1.0 and np.count_nonzero(g) == 1
    del g
    y = fastconv.max_pool2d(x, (1, 2), ceil_mode=True)  # the last window holds the last column alone
    assert y.shape == (1, 1, n, n // 2 + 1) and y[0, 0, -1, -1] == 7.0 and y[0, 0, -1, -2] == 0.0
    assert y[0, 0, n // 2, 1] == 0.0 and y.min() == 0.0
    del y
    s = fastconv.sum_pool2d(x, (2, 1), ceil_mode=True)
    assert s[0, 0, -1, -1] == 7.0 and s[0, 0, n // 4, 3] == -1.0 and float(s.sum()) == 6.0
