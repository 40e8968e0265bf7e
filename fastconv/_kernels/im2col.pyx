# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""im2col / col2im (torch's unfold / fold), parallel over column-matrix rows or planes."""
from cython cimport floating
from cython.parallel cimport prange

from fastconv._kernels._columns cimport Window, col2im_row, im2col_row


def im2col(const floating[:, :, :, ::1] x, floating[:, :, ::1] cols,
           Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl,
           Py_ssize_t dh, Py_ssize_t dw,
           Py_ssize_t out_w, int num_threads):
    """cols (N, C*kh*kw, Ho*out_w) <- x (N, C, H, W). Every element is written."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t kk = kh * kw, out_h = cols.shape[2] // out_w if out_w else 0
    cdef Window g = Window(kh, kw, sh, sw, pt, pl, dh, dw, out_w)
    cdef Py_ssize_t task, n, c, tap
    if out_h == 0:
        return
    for task in prange(N * C * kk, nogil=True, schedule="static", num_threads=num_threads):
        n = task // (C * kk)
        c = (task // kk) % C
        tap = task % kk
        im2col_row(&x[n, c, 0, 0], H, W, g, tap // kw, tap % kw, 0, out_h, &cols[n, c * kk + tap, 0])


def col2im(const floating[:, :, ::1] cols, floating[:, :, :, ::1] x,
           Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl,
           Py_ssize_t dh, Py_ssize_t dw,
           Py_ssize_t out_w, int num_threads):
    """x (N, C, H, W), zero on entry, += fold(cols). One thread owns each (n, c)
    plane, so overlapping windows are summed without races."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t kk = kh * kw, out_h = cols.shape[2] // out_w if out_w else 0
    cdef Window g = Window(kh, kw, sh, sw, pt, pl, dh, dw, out_w)
    cdef Py_ssize_t plane, n, c, tap
    if out_h == 0:
        return
    for plane in prange(N * C, nogil=True, schedule="static", num_threads=num_threads):
        n = plane // C
        c = plane % C
        for tap in range(kk):
            col2im_row(&cols[n, c * kk + tap, 0], H, W, g, tap // kw, tap % kw, 0, out_h, &x[n, c, 0, 0])
