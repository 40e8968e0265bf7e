import numpy as np
import pytest
from conftest import DTYPES, TORCH, assert_close, requires_torch

import fastconv
from fastconv import reference

# (N, C, H, W, kernel, stride, padding, dilation)
CASES = [
    (2, 3, 7, 9, (3, 2), 1, 1, 1),
    (3, 4, 10, 11, 3, 2, (1, 2), (2, 1)),
    (1, 1, 5, 5, 5, 1, 0, 1),
    (2, 2, 9, 8, (2, 4), (3, 2), 2, (1, 2)),
    (0, 3, 6, 6, 3, 1, 1, 1),
    (1, 5, 13, 7, 1, 1, 0, 1),
    (2, 3, 8, 8, 3, 4, 3, 1),                 # windows in the padding only
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_im2col_col2im_match_reference(rng, case, dtype):
    N, C, H, W, k, s, p, d = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    cols = fastconv.im2col(x, k, s, p, d)
    assert cols.dtype == dtype
    np.testing.assert_array_equal(cols, reference.im2col(x, k, s, p, d))
    back = fastconv.col2im(cols, (H, W), k, s, p, d)
    assert_close(back, reference.col2im(cols, (H, W), k, s, p, d))


def test_col2im_is_the_adjoint_of_im2col(rng):
    x = rng.standard_normal((2, 3, 9, 10))
    cols = rng.standard_normal(fastconv.im2col(x, 3, 2, 1, 2).shape)
    lhs = np.sum(fastconv.im2col(x, 3, 2, 1, 2) * cols)
    rhs = np.sum(x * fastconv.col2im(cols, (9, 10), 3, 2, 1, 2))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)


def test_unbatched_input(rng):
    x = rng.standard_normal((3, 6, 7))
    cols = fastconv.im2col(x, 2, padding=1)
    np.testing.assert_array_equal(cols, fastconv.im2col(x[None], 2, padding=1)[0])
    np.testing.assert_array_equal(fastconv.col2im(cols, (6, 7), 2, padding=1),
                                  fastconv.col2im(cols[None], (6, 7), 2, padding=1)[0])


@pytest.mark.parametrize("bad, exc, word", [
    (dict(x=np.zeros((2, 3))), ValueError, "x"),
    (dict(x=np.zeros((1, 1, 4, 4), dtype=np.int32)), TypeError, "x"),
    (dict(kernel_size=0), ValueError, "kernel_size"),
    (dict(kernel_size=5), ValueError, "kernel_size"),
    (dict(stride=0), ValueError, "stride"),
    (dict(padding=-1), ValueError, "padding"),
    (dict(dilation=(1, 0)), ValueError, "dilation"),
    (dict(kernel_size=2.0), TypeError, "kernel_size"),
])
def test_im2col_rejects_bad_arguments(bad, exc, word):
    args = dict(x=np.zeros((1, 1, 4, 4)), kernel_size=3, stride=1, padding=0, dilation=1)
    args.update(bad)
    with pytest.raises(exc, match=word):
        fastconv.im2col(**args)


def test_col2im_rejects_inconsistent_columns():
    with pytest.raises(ValueError, match="cols"):
        fastconv.col2im(np.zeros((1, 10, 4)), (3, 3), 2)   # 10 rows not divisible by 4
    with pytest.raises(ValueError, match="cols"):
        fastconv.col2im(np.zeros((1, 4, 5)), (3, 3), 2)    # 2x2 windows on 3x3 are 4, not 5
    with pytest.raises(ValueError, match="output_size"):
        fastconv.col2im(np.zeros((1, 4, 4)), (0, 3), 2)


@requires_torch
class TestAgainstTorch:
    torch = TORCH

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("case", CASES)
    def test_unfold_fold(self, rng, case, dtype):
        F = self.torch.nn.functional
        N, C, H, W, k, s, p, d = case
        x = rng.standard_normal((N, C, H, W)).astype(dtype)
        cols = fastconv.im2col(x, k, s, p, d)
        np.testing.assert_array_equal(cols, F.unfold(self.torch.tensor(x), k, d, p, s).numpy())
        assert_close(fastconv.col2im(cols, (H, W), k, s, p, d),
                     F.fold(self.torch.tensor(cols), (H, W), k, d, p, s).numpy())
