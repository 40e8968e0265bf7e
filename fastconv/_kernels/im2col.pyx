# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""im2col / col2im (torch's unfold / fold), parallel over column-matrix rows or planes."""
from cython cimport floating
from cython.parallel cimport prange
from fastconv._kernels._openmp cimport fc_openmp_adopt
from fastconv._kernels._tasks cimport openmp_state

from fastconv._kernels._columns cimport col2im_row, im2col_row
from fastconv._kernels._geometry cimport Geometry, check_shape, shape

fc_openmp_adopt(openmp_state())   # one choice of runtime per process (openmp_runtime.h)


def im2col(const floating[:, :, :, ::1] x, floating[:, :, ::1] cols, Geometry g, int num_threads):
    """cols (N, C*kh*kw, Ho*Wo) <- x (N, C, H, W). Every element is written."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t kh = g.kh, kw = g.kw, kk = kh * kw, out_h = g.out_h
    cdef Py_ssize_t task, n, c, tap
    check_shape("cols", shape(cols.shape, 3), (N, C * kk, g.out_h * g.out_w))
    if out_h == 0:
        return
    for task in prange(N * C * kk, nogil=True, schedule="static", num_threads=num_threads):
        n = task // (C * kk)
        c = (task // kk) % C
        tap = task % kk
        im2col_row(&x[n, c, 0, 0], H, W, g, tap // kw, tap % kw, 0, out_h, &cols[n, c * kk + tap, 0])


def col2im(const floating[:, :, ::1] cols, floating[:, :, :, ::1] x, Geometry g, int num_threads):
    """x (N, C, H, W), zero on entry, += fold(cols). One thread owns each (n, c)
    plane, so overlapping windows are summed without races."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t kh = g.kh, kw = g.kw, kk = kh * kw, out_h = g.out_h
    cdef Py_ssize_t plane, n, c, tap
    check_shape("cols", shape(cols.shape, 3), (N, C * kk, g.out_h * g.out_w))
    if out_h == 0:
        return
    for plane in prange(N * C, nogil=True, schedule="static", num_threads=num_threads):
        n = plane // C
        c = plane % C
        for tap in range(kk):
            col2im_row(&cols[n, c * kk + tap, 0], H, W, g, tap // kw, tap % kw, 0, out_h, &x[n, c, 0, 0])
