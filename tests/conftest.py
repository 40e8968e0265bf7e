import numpy as np
import pytest

DTYPES = [np.float32, np.float64]
# Absolute/relative tolerance for comparing sums of products, per dtype.
TOL = {np.dtype(np.float32): dict(rtol=1e-4, atol=1e-4), np.dtype(np.float64): dict(rtol=1e-10, atol=1e-10)}


def assert_close(actual, expected):
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, **TOL[actual.dtype])


def assert_within_winograd_bound(actual, expected, sides=1):
    """max |actual - expected| <= sides * RTOL * max |expected|: the bound winograd (and so
    "auto", which may pick it) guarantees against the exact result on random data
    (fastconv._winograd.RTOL). sides=2 compares two results that may each carry it."""
    from fastconv import _winograd

    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if expected.size:
        err = np.abs(actual.astype(np.float64) - expected).max()
        assert err <= sides * _winograd.RTOL[actual.dtype] * np.abs(expected).max(), err


def numerical_gradient(f, x, eps=1e-6):
    """Central differences of the scalar f() with respect to every element of x (float64)."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = f()
        flat[i] = old - eps
        minus = f()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


try:
    import torch as TORCH
except ImportError:
    TORCH = None
#: For the classes that compare with torch. (`pytest.importorskip` in a class body runs
#: when the module is imported, and then skips every test of the module, not only the
#: class's: without torch, as in the wheel's test step, whole test files went unrun.)
requires_torch = pytest.mark.skipif(TORCH is None, reason="torch is not installed")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# Hypothesis profiles, chosen with HYPOTHESIS_PROFILE: "ci" (the default) keeps the
# property tests to a few seconds; "long" is for soak runs; "sanitize" is for the
# slow ASan/UBSan build (tools/sanitize.sh).
try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is in the test extras; tests that need it import it
    pass
else:
    _common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    # CI and sanitizer runs draw the same examples every time (fixed seeds); the
    # long soak explores afresh each run.
    settings.register_profile("ci", max_examples=30, derandomize=True, **_common)
    settings.register_profile("sanitize", max_examples=15, derandomize=True, **_common)
    settings.register_profile("long", max_examples=3000, **_common)
    settings.load_profile(__import__("os").environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def parallel_even_when_small(monkeypatch):
    """Tests use small arrays; make every op use all its threads anyway, so the
    parallel code paths (and any race in them) are what the tests exercise."""
    from fastconv import _threads

    monkeypatch.setattr(_threads, "WORK_PER_THREAD", 1)
# tests/test_big.py needs ~9 GB per test: collected only with FASTCONV_BIG_TESTS=1.
collect_ignore = [] if __import__("os").environ.get("FASTCONV_BIG_TESTS", "0") not in ("", "0") else ["test_big.py"]


@pytest.fixture(autouse=True)
def auto_as_requested(monkeypatch):
    """``FASTCONV_TEST_AUTO=winograd`` (or direct, im2col): "auto" takes that algorithm
    wherever it runs, instead of what calibration measures. What "auto" compares with
    must hold whatever it picks; run the suite so to check it."""
    import os

    forced = os.environ.get("FASTCONV_TEST_AUTO")
    if forced:
        from fastconv import _autotune

        monkeypatch.setattr(_autotune, "calibrate",
                            lambda pass_, *args: {name: float(name != forced) for name in args[-1]})
