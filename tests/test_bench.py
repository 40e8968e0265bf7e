"""The bench's helpers that are not timings: the parallel copy, the FMA loop, the tables."""
import numpy as np
import pytest

from fastconv import bench
from fastconv._kernels import _openmp, runnable_builds


@pytest.mark.parametrize("num_threads", [1, 2, 3])
def test_parallel_copy_copies_every_element(rng, num_threads):
    src = rng.standard_normal(1001)
    dst = np.zeros(1000)
    _openmp.parallel_copy(src, dst, num_threads)
    np.testing.assert_array_equal(dst, src[:1000])


def test_scaling_table_shows_the_copy_beside_cases_that_move_bytes():
    moved = bench.Case("op a", "case a", "float32", {}, bytes=1e6)
    moved.times = {1: 4.0, 2: 2.5, ("copy", 1): 2.0, ("copy", 2): 1.6}
    computed = bench.Case("op b", "case b", "float32", {}, flops=1e6)
    computed.times = {1: 3.0, 2: 1.5}
    lines = bench.format_scaling([moved, computed], (1, 2)).splitlines()
    row_a = next(line for line in lines if line.startswith("op a"))
    row_b = next(line for line in lines if line.startswith("op b"))
    assert row_a.split()[-3:] == ["1.60x", "1.25x", "2.00x"]   # speed-up, copy's speed-up, vs copy
    assert row_b.split()[-1] == "2.00x"
    assert any(line.startswith("copy:") for line in lines)
    computed.op = "bwd auto=winograd/direct"         # a long op name keeps a space before the case's
    assert "bwd auto=winograd/direct case b " in bench.format_scaling([computed], (1, 2))


def test_neighbours_section_is_registered_and_its_helpers_run():
    assert "neighbours" in bench.SECTIONS
    calls = []
    t = bench.alone_and_beside(lambda: calls.append("a"), lambda: calls.append("b"), repeats=3)
    assert set(t) == {"a", "b", "a beside b", "b beside a"} and all(v >= 0 for v in t.values())
    assert "abab" in "".join(calls)                 # the interleaved rounds
    with bench.busy_neighbour(seconds=5) as proc:
        assert proc.poll() is None                  # running while the block runs
    assert proc.poll() is not None                  # stopped after it


def test_neighbours_section_says_what_it_leaves_out(monkeypatch):
    # without torch and scikit-learn nothing can run beside them, nor the main job
    monkeypatch.setattr(bench, "sklearn_openmp_call", lambda: None)
    with pytest.warns(UserWarning, match="beside torch, the runs beside scikit-learn, the main job"):
        assert list(bench.neighbour_cases(None)) == []


def test_neighbours_table_shows_both_slowdowns():
    case = bench.Case("beside torch", "C1", "float32", {}, note="C1 float32 beside torch: fastconv 1.10x")
    case.times = {"fastconv": 1e-3, "torch": 2e-3, "fastconv beside": 1.1e-3, "torch beside": 2.4e-3}
    text = bench.format_table([case], {"gemm": 100.0, "copy": 10.0})
    assert "torch beside 2.40ms" in text and "1.20x torch" in text and "fastconv 1.10x" in text


@pytest.mark.parametrize("kernel", runnable_builds("conv_winograd"), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_fma_peak_loop_counts_its_flops(kernel):
    for double in (False, True):
        accumulators = kernel.fma_step_flops(double) // (2 * kernel.chunk_tiles(double) // 3)
        assert accumulators == kernel.register_rows(double) * 3   # one chain per register-tile accumulator
        assert kernel.fma_peak(1000, 2, double) == 2 * accumulators    # each chain settles at 1
    assert bench.fma_peak(np.float32, iterations=1 << 14, repeats=1) > 0


def test_conv_table_shows_the_rate_against_the_fma_peak():
    case = bench.Case("fwd auto=winograd", "C2", "float32", {}, flops=2e9)
    case.times = {"fastconv": 0.01, "torch": 0.02, "direct": 0.04}
    text = bench.format_table([case], {"gemm": 100.0, "copy": 10.0, "fma": {"float32": 100.0}})
    assert "FMA peak float32 100 GFLOP/s" in text
    assert "2.00x peak" in text and "direct 40.00ms = 4.00x fastconv 2.00x torch, 0.50x peak" in text
    assert "torch 100.0 GFLOP/s" in text                 # torch's rate beside fastconv's 200
    # a long op name keeps a space before the case's
    case.op = "bwd auto=winograd/direct"
    assert "bwd auto=winograd/direct C2 " in bench.format_table([case], {"gemm": 100.0, "copy": 10.0})
