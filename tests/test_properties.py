"""Property tests: for random valid arguments every public op equals
fastconv.reference (and leaves its inputs untouched); for random invalid ones it
raises ValueError/TypeError naming the argument. The ops and their argument
strategies are the table in tests/strategies.py."""
import pytest
from hypothesis import given

import fastconv
from strategies import OPS, check_invalid, check_valid, count_windows, invalid_call, output_size_call


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
