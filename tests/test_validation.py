"""Every bad argument raises ValueError/TypeError naming it, before any kernel runs."""
import numpy as np
import pytest

import fastconv

X = np.zeros((2, 4, 8, 8), dtype=np.float32)
Wt = np.zeros((6, 4, 3, 3), dtype=np.float32)


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(x=np.zeros((4, 8, 8), np.float32)), ValueError, "x must be 4-D"),
    (dict(weight=np.zeros((6, 4, 3), np.float32)), ValueError, "weight must be 4-D"),
    (dict(weight=np.zeros((6, 3, 3, 3), np.float32)), ValueError, "channels"),
    (dict(groups=3), ValueError, "groups"),
    (dict(groups=4), ValueError, "groups"),                      # 6 output channels
    (dict(groups=0), ValueError, "groups"),
    (dict(stride=0), ValueError, "stride"),
    (dict(stride=(1, -2)), ValueError, "stride"),
    (dict(stride=(1, 2, 3)), ValueError, "stride"),
    (dict(padding=-1), ValueError, "padding"),
    (dict(padding="full"), ValueError, "padding"),
    (dict(padding="same", stride=2), ValueError, "same"),
    (dict(dilation=0), ValueError, "dilation"),
    (dict(weight=np.zeros((6, 4, 9, 9), np.float32)), ValueError, "kernel_size"),
    (dict(weight=np.zeros((6, 4, 3, 3), np.float32), dilation=5), ValueError, "kernel_size"),
    (dict(weight=np.zeros((6, 4, 3, 3), np.float64)), TypeError, "weight"),
    (dict(x=X.astype(np.int64), weight=Wt.astype(np.int64)), TypeError, "x"),
    (dict(x=X.astype(np.complex64)), TypeError, "x"),
    (dict(x=X.astype(np.float16)), TypeError, "x"),
    (dict(x=X.astype(bool)), TypeError, "x"),
    (dict(x="not an array"), TypeError, "x"),
    (dict(x=None), TypeError, "x"),
    (dict(bias=np.zeros(5, np.float32)), ValueError, "bias"),
    (dict(bias=np.zeros(6, np.float64)), TypeError, "bias"),
    (dict(stride=1.5), TypeError, "stride"),
    (dict(stride=True), TypeError, "stride"),
    (dict(padding=float("nan")), TypeError, "padding"),
    (dict(algorithm="fft"), ValueError, "algorithm"),
    (dict(x=np.zeros((2, 4, 0, 8), np.float32)), ValueError, "x"),
])
def test_conv2d_rejects(kwargs, exc, word):
    args = dict(x=X, weight=Wt)
    args.update(kwargs)
    with pytest.raises(exc, match=word):
        fastconv.conv2d(**args)


@pytest.mark.parametrize("grad_output, exc, word", [
    (np.zeros((2, 6, 6, 5), np.float32), ValueError, "grad_output"),
    (np.zeros((2, 6, 6), np.float32), ValueError, "grad_output"),
    (np.zeros((2, 6, 6, 6), np.float64), TypeError, "grad_output"),
    (np.zeros((2, 6, 6, 6), np.int32), TypeError, "grad_output"),
])
def test_conv2d_backward_rejects(grad_output, exc, word):
    with pytest.raises(exc, match=word):
        fastconv.conv2d_backward(grad_output, X, Wt)


def test_output_size():
    assert fastconv.output_size(32, 3, 1, 1) == 32
    assert fastconv.output_size(227, 11, 4) == 55
    assert fastconv.output_size(5, 2, 2) == 2
    assert fastconv.output_size(5, 2, 2, ceil_mode=True) == 3
    assert fastconv.output_size(6, 3, 2, padding=1, ceil_mode=True) == 4
    assert fastconv.output_size(5, 2, 2, padding=1, ceil_mode=True) == 3   # last window starts in padding: dropped
    assert fastconv.output_size(7, 3, dilation=3) == 1
    with pytest.raises(ValueError, match="kernel_size"):
        fastconv.output_size(4, 5)
    with pytest.raises(ValueError, match="stride"):
        fastconv.output_size(4, 2, 0)
    with pytest.raises(TypeError, match="n"):
        fastconv.output_size(4.0, 2)


def test_threads_api():
    n = fastconv.get_num_threads()
    assert n >= 1
    with fastconv.threads(1):
        assert fastconv.get_num_threads() == 1
    assert fastconv.get_num_threads() == n
    fastconv.set_num_threads(1)
    try:
        assert fastconv.get_num_threads() == 1
    finally:
        fastconv.set_num_threads(n)
    with pytest.raises(ValueError, match="num_threads"):
        fastconv.set_num_threads(0)
    with pytest.raises(TypeError, match="num_threads"):
        with fastconv.threads("2"):
            pass


def test_omp_num_threads_is_honoured():
    import subprocess
    import sys

    code = "import fastconv; print(fastconv.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", code], env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "1"


def test_show_config(capsys):
    fastconv.show_config()
    out = capsys.readouterr().out
    assert "OpenMP" in out and "BLAS" in out and fastconv.__version__ in out


def test_small_ops_use_fewer_threads(monkeypatch):
    from fastconv import _threads

    monkeypatch.setattr(_threads, "WORK_PER_THREAD", 1000)
    with fastconv.threads(4):
        assert _threads.num_threads_for(0) == 1
        assert _threads.num_threads_for(1999) == 1
        assert _threads.num_threads_for(2000) == 2
        assert _threads.num_threads_for(10**9) == 4
