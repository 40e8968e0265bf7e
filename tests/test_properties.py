"""Property tests: for random valid arguments every public op equals
fastconv.reference (and leaves its inputs untouched); for random invalid ones it
raises ValueError/TypeError naming the argument. The ops and their argument
strategies are the table in tests/strategies.py."""
import numpy as np
import pytest
import scipy.signal
from hypothesis import given
from strategies import (
    OPS,
    TOL,
    check_invalid,
    check_valid,
    convolve2d_call,
    convolve_call,
    count_windows,
    invalid_call,
    output_size_call,
)

import fastconv
from fastconv import reference


@pytest.mark.parametrize("spec", OPS, ids=lambda s: s.name)
def test_valid_arguments_match_the_reference(spec):
    @given(spec.valid)
    def check(call):
        check_valid(spec, call)
    check()


@pytest.mark.parametrize("spec", OPS, ids=lambda s: s.name)
def test_invalid_arguments_raise_errors_that_name_them(spec):
    @given(invalid_call(spec))
    def check(case):
        call, names = case
        check_invalid(spec, call, names)
    check()


@given(output_size_call())
def test_output_size_counts_the_windows(call):
    # Independent of torch's formula: count window starts by brute force (ceil_mode in
    # pooling's domain, padding <= kernel_size // 2, where the two agree).
    assert fastconv.output_size(**call.kwargs) == count_windows(**call.kwargs)


@given(convolve_call())
def test_convolve_reference_is_numpy_convolve(call):
    # The oracle itself, on the property tests' calls: swapped arguments, every mode.
    a, v, mode = call.kwargs["a"], call.kwargs["v"], call.kwargs["mode"]
    np.testing.assert_allclose(reference.convolve(a, v, mode), np.convolve(a, v, mode), **TOL[a.dtype])


@given(convolve2d_call())
def test_convolve2d_reference_is_scipy_convolve2d(call):
    in1, in2, mode = call.kwargs["in1"], call.kwargs["in2"], call.kwargs["mode"]
    np.testing.assert_allclose(reference.convolve2d(in1, in2, mode), scipy.signal.convolve2d(in1, in2, mode),
                               **TOL[in1.dtype])
