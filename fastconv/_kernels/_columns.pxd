# Inline helpers shared by the column kernels (im2col.pyx) and the fused
# im2col + GEMM convolution (conv_gemm.pyx): one row of the column matrix.
#
# Column layout is torch's `unfold`: row (c*kh + i)*kw + j, column r*out_w + ow
# holds x[c, (oh_start + r)*sh - pt + i*dh, ow*sw - pl + j*dw] (0 outside).
from cython cimport floating
from libc.string cimport memcpy, memset

from fastconv._kernels._geometry cimport Geometry


cdef inline Py_ssize_t _first(Py_ssize_t offset, Py_ssize_t stride) noexcept nogil:
    # First output column ow with ow*stride + offset >= 0.
    return 0 if offset >= 0 else (-offset + stride - 1) // stride


cdef inline Py_ssize_t _end(Py_ssize_t offset, Py_ssize_t stride, Py_ssize_t size,
                            Py_ssize_t out_w) noexcept nogil:
    # One past the last output column ow with ow*stride + offset < size.
    cdef Py_ssize_t end = 0 if size - 1 - offset < 0 else (size - 1 - offset) // stride + 1
    return end if end < out_w else out_w


cdef inline void im2col_row(const floating* plane, Py_ssize_t H, Py_ssize_t W, Geometry g,
                            Py_ssize_t i, Py_ssize_t j, Py_ssize_t oh_start, Py_ssize_t rows,
                            floating* dst) noexcept nogil:
    """Write the row for kernel tap (i, j) of one input plane over output rows
    [oh_start, oh_start + rows): rows*out_w values, zeros in the padding."""
    cdef Py_ssize_t r, ow, ih, off = j * g.dw - g.pl
    cdef Py_ssize_t lo = _first(off, g.sw), hi = _end(off, g.sw, W, g.out_w)
    cdef const floating* src
    if lo > hi:
        lo = hi
    for r in range(rows):
        ih = (oh_start + r) * g.sh - g.pt + i * g.dh
        if ih < 0 or ih >= H:
            memset(dst, 0, g.out_w * sizeof(floating))
        else:
            src = plane + ih * W
            if lo > 0:
                memset(dst, 0, lo * sizeof(floating))
            if hi < g.out_w:
                memset(dst + hi, 0, (g.out_w - hi) * sizeof(floating))
            if g.sw == 1:
                memcpy(dst + lo, src + lo + off, (hi - lo) * sizeof(floating))
            else:
                for ow in range(lo, hi):
                    dst[ow] = src[ow * g.sw + off]
        dst += g.out_w


cdef inline void col2im_row(const floating* src, Py_ssize_t H, Py_ssize_t W, Geometry g,
                            Py_ssize_t i, Py_ssize_t j, Py_ssize_t oh_start, Py_ssize_t rows,
                            floating* plane) noexcept nogil:
    """Adjoint of im2col_row: add the row for tap (i, j) back onto its input plane."""
    cdef Py_ssize_t r, ow, ih, off = j * g.dw - g.pl
    cdef Py_ssize_t lo = _first(off, g.sw), hi = _end(off, g.sw, W, g.out_w)
    cdef floating* dst
    for r in range(rows):
        ih = (oh_start + r) * g.sh - g.pt + i * g.dh
        if 0 <= ih < H:
            dst = plane + ih * W + off
            if g.sw == 1:
                for ow in range(lo, hi):
                    dst[ow] += src[ow]
            else:
                for ow in range(lo, hi):
                    dst[ow * g.sw] += src[ow]
        src += g.out_w
