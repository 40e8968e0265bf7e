# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""im2col / col2im over a band of output rows.

Column layout is torch's `unfold`: cols[n, (c*kh + i)*kw + j, r*out_w + ow]
holds x[n, c, (oh_start + r)*sh - pt + i*dh, ow*sw - pl + j*dw] (0 outside).
Working on a band of output rows [oh_start, oh_start + rows) is what lets
the convolution bound its workspace.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy, memset


# [_first(...), _end(...)): the output columns ow whose input column
# ow*stride + offset lies in [0, size). (Two functions, not one with pointer
# outputs: variables whose address is taken would be shared inside prange.)
cdef inline Py_ssize_t _first(Py_ssize_t offset, Py_ssize_t stride) noexcept nogil:
    return 0 if offset >= 0 else (-offset + stride - 1) // stride


cdef inline Py_ssize_t _end(Py_ssize_t offset, Py_ssize_t stride, Py_ssize_t size,
                            Py_ssize_t out_w) noexcept nogil:
    cdef Py_ssize_t end = 0 if size - 1 - offset < 0 else (size - 1 - offset) // stride + 1
    return end if end < out_w else out_w


def im2col(const floating[:, :, :, ::1] x, floating[:, :, ::1] cols,
           int kh, int kw, int sh, int sw, int pt, int pl, int dh, int dw,
           Py_ssize_t oh_start, Py_ssize_t out_w, int num_threads):
    """Fill cols (N, C*kh*kw, rows*out_w) from x (N, C, H, W). Every element is written."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t kk = <Py_ssize_t>kh * kw  # kh*kw in int could overflow
    cdef Py_ssize_t rows = cols.shape[2] // out_w if out_w > 0 else 0
    cdef Py_ssize_t task, n, c, i, j, r, ih, off, lo, hi, ow
    cdef floating* dst
    cdef const floating* src
    if N == 0 or rows == 0:
        return
    for task in prange(N * C * kk, nogil=True, schedule="static", num_threads=num_threads):
        n = task // (C * kk)
        c = (task // kk) % C
        i = (task % kk) // kw
        j = task % kw
        off = j * dw - pl
        lo = _first(off, sw)
        hi = _end(off, sw, W, out_w)
        if lo > hi:
            lo = hi
        for r in range(rows):
            dst = &cols[n, c * kk + i * kw + j, r * out_w]
            ih = (oh_start + r) * sh - pt + i * dh
            if ih < 0 or ih >= H:
                memset(dst, 0, out_w * sizeof(floating))
                continue
            src = &x[n, c, ih, 0]
            if lo > 0:
                memset(dst, 0, lo * sizeof(floating))
            if hi < out_w:
                memset(dst + hi, 0, (out_w - hi) * sizeof(floating))
            if sw == 1:
                memcpy(dst + lo, src + lo + off, (hi - lo) * sizeof(floating))
            else:
                for ow in range(lo, hi):
                    dst[ow] = src[ow * sw + off]


def col2im_add(const floating[:, :, ::1] cols, floating[:, :, :, ::1] x,
               int kh, int kw, int sh, int sw, int pt, int pl, int dh, int dw,
               Py_ssize_t oh_start, Py_ssize_t out_w, int num_threads):
    """x += fold(cols): the adjoint of im2col. Each (n, c) plane belongs to one thread,
    so overlapping windows are summed without races."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t kk = <Py_ssize_t>kh * kw  # kh*kw in int could overflow
    cdef Py_ssize_t rows = cols.shape[2] // out_w if out_w > 0 else 0
    cdef Py_ssize_t plane, n, c, i, j, r, ih, off, lo, hi, ow
    cdef floating* dst
    cdef const floating* src
    if N == 0 or rows == 0:
        return
    for plane in prange(N * C, nogil=True, schedule="static", num_threads=num_threads):
        n = plane // C
        c = plane % C
        for i in range(kh):
            for j in range(kw):
                off = j * dw - pl
                lo = _first(off, sw)
                hi = _end(off, sw, W, out_w)
                for r in range(rows):
                    ih = (oh_start + r) * sh - pt + i * dh
                    if ih < 0 or ih >= H:
                        continue
                    src = &cols[n, c * kk + i * kw + j, r * out_w]
                    dst = &x[n, c, ih, 0]
                    if sw == 1:
                        for ow in range(lo, hi):
                            dst[ow + off] += src[ow]
                    else:
                        for ow in range(lo, hi):
                            dst[ow * sw + off] += src[ow]
