"""Exact Winograd transform matrices (Toom-Cook), shared by fastconv._winograd and
tools/gen_winograd.py (which writes the kernels' transforms from them); pure Python,
importable without the compiled kernels."""
import math
from fractions import Fraction

import numpy as np

#: Output tile size m and the n - 1 = m + 1 finite interpolation points, per dtype.
POINTS = {
    np.dtype(np.float32): (4, (0, 1, -1, Fraction(1, 2), Fraction(-1, 2))),
    np.dtype(np.float64): (6, (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2))),
}

def _solve(E):
    """E^-1 by Gauss-Jordan elimination over fractions."""
    n = len(E)
    A = [list(row) + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(E)]
    for c in range(n):
        p = next(r for r in range(c, n) if A[r][c] != 0)
        A[c], A[p] = A[p], A[c]
        pivot = A[c][c]
        A[c] = [a / pivot for a in A[c]]
        for r in range(n):
            if r != c and A[r][c] != 0:
                f = A[r][c]
                A[r] = [a - f * b for a, b in zip(A[r], A[c])]
    return [row[n:] for row in A]


def matrices(m, points, r=3):
    """Exact (A^T (m x n), G (n x r), B^T (n x n)) of F(m, r) on the finite `points`
    and infinity (Toom-Cook; the filter is the transposed linear convolution).
    Each row of B^T is scaled to coprime integers, its inverse scale moved into G."""
    n = m + r - 1
    pts = [Fraction(p) for p in points]
    if len(pts) != n - 1 or len(set(pts)) != n - 1:
        raise ValueError(f"F({m}, {r}) needs {n - 1} distinct finite points, got {points}")

    def evaluation(cols):
        return [[p ** i for i in range(cols)] for p in pts] + [[Fraction(int(i == cols - 1)) for i in range(cols)]]

    A, G, E = evaluation(m), evaluation(r), evaluation(n)
    B = _solve(E)
    BT = [[B[i][j] for i in range(n)] for j in range(n)]
    for j in range(n):
        den = math.lcm(*(x.denominator for x in BT[j]))
        num = math.gcd(*(int(x * den) for x in BT[j]))
        scale = Fraction(den, num)
        BT[j] = [x * scale for x in BT[j]]
        G[j] = [x / scale for x in G[j]]
    AT = [[A[j][i] for j in range(n)] for i in range(m)]
    return AT, G, BT


def tile_size(dtype):
    """(m, n): output and input tile sizes for `dtype`."""
    m = POINTS[np.dtype(dtype)][0]
    return m, m + 2
