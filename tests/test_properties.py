"""Property tests: for random valid arguments every public op equals
fastconv.reference (and leaves its inputs untouched); for random invalid ones it
raises ValueError/TypeError naming the argument. The ops and their argument
strategies are the table in tests/strategies.py."""
import pytest
from hypothesis import given

from strategies import OPS, check_invalid, check_valid, invalid_call


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
