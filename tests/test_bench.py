"""The bench's helpers that are not timings: the parallel copy and the scaling table."""
import numpy as np
import pytest

from fastconv import bench
from fastconv._kernels import _openmp


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
