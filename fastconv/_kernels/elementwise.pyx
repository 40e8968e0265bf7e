# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Elementwise kernels over flat arrays, float32/float64: ReLU, its backward, and
ReLU of a sum (a residual block's output). Memory-bound: the parallel tasks are
blocks of FC_EW_BLOCK values in memory order, handed out statically (the result
does not depend on the thread count: every value is computed alone)."""
from cython cimport floating
from cython.parallel cimport prange
from fastconv._kernels._openmp cimport fc_openmp_adopt
from fastconv._kernels._tasks cimport openmp_state

fc_openmp_adopt(openmp_state())   # one choice of runtime per process (openmp_runtime.h)

cdef extern from "elementwise.h" nogil:
    void fc_relu_f(const float* x, float* out, Py_ssize_t n)
    void fc_relu_d(const double* x, double* out, Py_ssize_t n)
    void fc_relu_backward_f(const float* g, const float* y, float* out, Py_ssize_t n)
    void fc_relu_backward_d(const double* g, const double* y, double* out, Py_ssize_t n)
    void fc_add_relu_f(const float* a, const float* b, float* out, Py_ssize_t n)
    void fc_add_relu_d(const double* a, const double* b, double* out, Py_ssize_t n)

# Values per task: 64 KiB of float32, large enough that scheduling costs nothing.
cdef enum:
    BLOCK = 16384


cdef inline Py_ssize_t _blocks(Py_ssize_t n) noexcept nogil:
    return (n + BLOCK - 1) // BLOCK


cdef inline Py_ssize_t _len(Py_ssize_t n, Py_ssize_t b) noexcept nogil:
    return BLOCK if n - b * BLOCK > BLOCK else n - b * BLOCK


def _check(Py_ssize_t n, *others):
    for m in others:
        if m != n:
            raise ValueError("the arrays must have the same length")


def relu(const floating[::1] x, floating[::1] out, int num_threads):
    """out[i] = max(x[i], 0) (a NaN stays NaN); out may be x."""
    cdef Py_ssize_t n = x.shape[0], b, o
    _check(n, out.shape[0])
    if n == 0:
        return
    for b in prange(_blocks(n), nogil=True, schedule="static", num_threads=num_threads):
        o = b * BLOCK
        if floating is float:
            fc_relu_f(&x[0] + o, &out[0] + o, _len(n, b))
        else:
            fc_relu_d(&x[0] + o, &out[0] + o, _len(n, b))


def relu_backward(const floating[::1] g, const floating[::1] y, floating[::1] out, int num_threads):
    """out[i] = g[i] where y[i] > 0, else 0; out may be g."""
    cdef Py_ssize_t n = g.shape[0], b, o
    _check(n, y.shape[0], out.shape[0])
    if n == 0:
        return
    for b in prange(_blocks(n), nogil=True, schedule="static", num_threads=num_threads):
        o = b * BLOCK
        if floating is float:
            fc_relu_backward_f(&g[0] + o, &y[0] + o, &out[0] + o, _len(n, b))
        else:
            fc_relu_backward_d(&g[0] + o, &y[0] + o, &out[0] + o, _len(n, b))


def add_relu(const floating[::1] a, const floating[::1] b, floating[::1] out, int num_threads):
    """out[i] = max(a[i] + b[i], 0) (a NaN stays NaN); out may be a or b."""
    cdef Py_ssize_t n = a.shape[0], k, o
    _check(n, b.shape[0], out.shape[0])
    if n == 0:
        return
    for k in prange(_blocks(n), nogil=True, schedule="static", num_threads=num_threads):
        o = k * BLOCK
        if floating is float:
            fc_add_relu_f(&a[0] + o, &b[0] + o, &out[0] + o, _len(n, k))
        else:
            fc_add_relu_d(&a[0] + o, &b[0] + o, &out[0] + o, _len(n, k))
