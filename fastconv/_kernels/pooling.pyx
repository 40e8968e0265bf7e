# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Max / average / sum pooling, forward and backward, over (P, H, W) planes.

The public ops flatten (N, C) into P planes. Forward kernels run one task per
output row (prange over P * out_h, static schedule), backward kernels one task
per plane (each thread owns its planes, so overlapping windows accumulate
without races). Every row is split into interior columns, whose windows lie
wholly inside the input and are computed by contiguous loops over the output
width that the compiler vectorises, and the few border columns, computed by a
scalar loop over the clipped window. Padding is never materialised.

Window order and comparisons follow torch's CPU kernels: elements are visited
row-major, a candidate replaces the running max when it is larger or NaN
(so ties keep the first element, and a NaN, once taken, stays).
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport INFINITY, NAN
from libc.stdint cimport int64_t
from libc.string cimport memset

from fastconv._kernels._geometry cimport Geometry, check_shape, check_workspace, shape
from fastconv._kernels._openmp cimport fc_openmp_adopt, omp_get_thread_num
from fastconv._kernels._tasks cimport openmp_state

fc_openmp_adopt(openmp_state())   # one choice of runtime per process (openmp_runtime.h)


# [_first(...), _end(...)): the steps t (0 <= t < limit) whose position
# offset + t*step lies in [0, size). Two functions, not one with pointer
# outputs: a local whose address is taken is shared inside prange.
cdef inline Py_ssize_t _first(Py_ssize_t offset, Py_ssize_t step) noexcept nogil:
    return 0 if offset >= 0 else (-offset + step - 1) // step


cdef inline Py_ssize_t _end(Py_ssize_t offset, Py_ssize_t step, Py_ssize_t size,
                            Py_ssize_t limit) noexcept nogil:
    cdef Py_ssize_t end = 0 if size - 1 - offset < 0 else (size - 1 - offset) // step + 1
    return end if end < limit else limit


cdef inline bint _takes(floating v, floating m) noexcept nogil:
    # torch's rule: larger, or NaN. Bitwise | keeps the loop branch-free.
    return (v > m) | (v != v)


# ---------------------------------------------------------------------------
# Max pooling

# Fused loops for the common 2x2 and 3x3 stride-2 windows, and the vectorised max
# of a plane: plain C in pooling_impl.h, one pass over the output width with every
# window element in registers, which the compiler vectorises (pooling.h says why C).
cdef extern from "pooling.h" nogil:
    void fastconv_max_2x2s2_f(float* dst, const float* r0, const float* r1,
                              Py_ssize_t lo, Py_ssize_t hi) noexcept nogil
    void fastconv_max_2x2s2_d(double* dst, const double* r0, const double* r1,
                              Py_ssize_t lo, Py_ssize_t hi) noexcept nogil
    void fastconv_max_3x3s2_f(float* dst, const float* r0, const float* r1, const float* r2,
                              Py_ssize_t lo, Py_ssize_t hi) noexcept nogil
    void fastconv_max_3x3s2_d(double* dst, const double* r0, const double* r1, const double* r2,
                              Py_ssize_t lo, Py_ssize_t hi) noexcept nogil
    void fastconv_avg_2x2s2_f(float* dst, const float* r0, const float* r1,
                              Py_ssize_t lo, Py_ssize_t hi, float div) noexcept nogil
    void fastconv_avg_2x2s2_d(double* dst, const double* r0, const double* r1,
                              Py_ssize_t lo, Py_ssize_t hi, double div) noexcept nogil
    void fastconv_avg_3x3s2_f(float* dst, const float* r0, const float* r1, const float* r2,
                              Py_ssize_t lo, Py_ssize_t hi, float div) noexcept nogil
    void fastconv_avg_3x3s2_d(double* dst, const double* r0, const double* r1, const double* r2,
                              Py_ssize_t lo, Py_ssize_t hi, double div) noexcept nogil
    void fastconv_spread_2s2_f(float* row, const float* g, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil
    void fastconv_spread_2s2_d(double* row, const double* g, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil
    void fastconv_spread_3s2_f(float* row, const float* g, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil
    void fastconv_spread_3s2_d(double* row, const double* g, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil
    void fastconv_max_2x2s2_idx_f(float* dst, int64_t* idx, const float* r0, const float* r1,
                                  Py_ssize_t lo, Py_ssize_t hi, int64_t base, int64_t W) noexcept nogil
    void fastconv_max_2x2s2_idx_d(double* dst, int64_t* idx, const double* r0, const double* r1,
                                  Py_ssize_t lo, Py_ssize_t hi, int64_t base, int64_t W) noexcept nogil
    void fastconv_max_3x3s2_idx_f(float* dst, int64_t* idx, const float* r0, const float* r1,
                                  const float* r2, Py_ssize_t lo, Py_ssize_t hi, int64_t base,
                                  int64_t W) noexcept nogil
    void fastconv_max_3x3s2_idx_d(double* dst, int64_t* idx, const double* r0, const double* r1,
                                  const double* r2, Py_ssize_t lo, Py_ssize_t hi, int64_t base,
                                  int64_t W) noexcept nogil


cdef inline void _max_2x2s2(floating* dst, const floating* r0, const floating* r1,
                            Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    if floating is float:
        fastconv_max_2x2s2_f(dst, r0, r1, lo, hi)
    else:
        fastconv_max_2x2s2_d(dst, r0, r1, lo, hi)


cdef inline void _max_3x3s2(floating* dst, const floating* r0, const floating* r1, const floating* r2,
                            Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    if floating is float:
        fastconv_max_3x3s2_f(dst, r0, r1, r2, lo, hi)
    else:
        fastconv_max_3x3s2_d(dst, r0, r1, r2, lo, hi)


cdef inline void _max_row_first(floating* dst, const floating* src, Py_ssize_t lo, Py_ssize_t hi,
                                Py_ssize_t sw) noexcept nogil:
    cdef Py_ssize_t ow
    for ow in range(lo, hi):
        dst[ow] = src[ow * sw]


cdef inline void _max_row(floating* dst, const floating* src, Py_ssize_t lo, Py_ssize_t hi,
                          Py_ssize_t sw) noexcept nogil:
    cdef Py_ssize_t ow
    cdef floating v, m
    for ow in range(lo, hi):
        v = src[ow * sw]
        m = dst[ow]
        dst[ow] = v if _takes(v, m) else m


cdef inline void _max_row_indexed(floating* dst, int64_t* idx, const floating* src,
                                  Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t sw,
                                  int64_t base, bint first) noexcept nogil:
    # src[ow*sw] is flat element base + ow*sw of the plane.
    cdef Py_ssize_t ow
    cdef floating v, m
    cdef bint t
    if first:
        for ow in range(lo, hi):
            dst[ow] = src[ow * sw]
            idx[ow] = base + ow * sw
        return
    for ow in range(lo, hi):
        v = src[ow * sw]
        m = dst[ow]
        t = _takes(v, m)
        dst[ow] = v if t else m
        idx[ow] = base + ow * sw if t else idx[ow]


cdef inline void _max_pool_row(const floating* plane, floating* dst, int64_t* dst_idx, bint with_indices,
                               Py_ssize_t oh, Py_ssize_t H, Py_ssize_t W, Py_ssize_t out_w,
                               Py_ssize_t c_lo, Py_ssize_t c_hi, Py_ssize_t kh, Py_ssize_t kw,
                               Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl,
                               Py_ssize_t dh, Py_ssize_t dw) noexcept nogil:
    """One output row: interior columns by contiguous passes, border columns clipped."""
    cdef Py_ssize_t ih0 = oh * sh - pt, i_lo, i_hi, i, j, ih, off, t, ow, iw0, iw, j_lo, j_hi
    cdef const floating* row
    cdef bint started, fused
    cdef floating v, m
    cdef int64_t k
    if ih0 >= 0 and ih0 + (kh - 1) * dh < H:
        i_lo, i_hi = 0, kh
    else:
        i_lo = _first(ih0, dh)
        i_hi = _end(ih0, dh, H, kh)
    if c_lo < c_hi:
        row = plane + ih0 * W - pl
        fused = dh == 1 and dw == 1 and sw == 2 and i_lo == 0 and i_hi == kh
        if fused and kh == kw == 2 and not with_indices:
            _max_2x2s2(dst, row, row + W, c_lo, c_hi)
        elif fused and kh == kw == 3 and not with_indices:
            _max_3x3s2(dst, row, row + W, row + 2 * W, c_lo, c_hi)
        elif fused and kh == kw == 2:
            if floating is float:
                fastconv_max_2x2s2_idx_f(dst, dst_idx, row, row + W, c_lo, c_hi, ih0 * W - pl, W)
            else:
                fastconv_max_2x2s2_idx_d(dst, dst_idx, row, row + W, c_lo, c_hi, ih0 * W - pl, W)
        elif fused and kh == kw == 3:
            if floating is float:
                fastconv_max_3x3s2_idx_f(dst, dst_idx, row, row + W, row + 2 * W, c_lo, c_hi, ih0 * W - pl, W)
            else:
                fastconv_max_3x3s2_idx_d(dst, dst_idx, row, row + W, row + 2 * W, c_lo, c_hi, ih0 * W - pl, W)
        else:
            for i in range(i_lo, i_hi):
                ih = ih0 + i * dh
                for j in range(kw):
                    off = j * dw - pl
                    if with_indices:
                        _max_row_indexed(dst, dst_idx, plane + ih * W + off, c_lo, c_hi, sw,
                                         ih * W + off, i == i_lo and j == 0)
                    elif i == i_lo and j == 0:
                        if sw == 1:
                            _max_row_first(dst, plane + ih * W + off, c_lo, c_hi, 1)
                        elif sw == 2:
                            _max_row_first(dst, plane + ih * W + off, c_lo, c_hi, 2)
                        else:
                            _max_row_first(dst, plane + ih * W + off, c_lo, c_hi, sw)
                    elif sw == 1:
                        _max_row(dst, plane + ih * W + off, c_lo, c_hi, 1)
                    elif sw == 2:
                        _max_row(dst, plane + ih * W + off, c_lo, c_hi, 2)
                    else:
                        _max_row(dst, plane + ih * W + off, c_lo, c_hi, sw)
    # Border columns (windows that reach into the padding): clip to the input.
    for t in range(out_w - (c_hi - c_lo)):
        ow = t if t < c_lo else t + (c_hi - c_lo)
        iw0 = ow * sw - pl
        j_lo = _first(iw0, dw)
        j_hi = _end(iw0, dw, W, kw)
        started = False
        m = -INFINITY
        k = 0
        for i in range(i_lo, i_hi):
            ih = ih0 + i * dh
            for j in range(j_lo, j_hi):
                iw = iw0 + j * dw
                v = plane[ih * W + iw]
                if not started or _takes(v, m):
                    m = v
                    k = ih * W + iw
                    started = True
        dst[ow] = m
        if with_indices:
            dst_idx[ow] = k


cdef void _max_pool_rows(const floating* plane, floating* out, int64_t* out_idx, Py_ssize_t oh_lo,
                         Py_ssize_t oh_hi, Py_ssize_t H, Py_ssize_t W, Py_ssize_t out_w,
                         Py_ssize_t c_lo, Py_ssize_t c_hi, Py_ssize_t kh, Py_ssize_t kw,
                         Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl,
                         Py_ssize_t dh, Py_ssize_t dw) noexcept nogil:
    """Output rows [oh_lo, oh_hi) of one plane (`out`, `out_idx`: the plane's outputs)."""
    cdef Py_ssize_t oh
    for oh in range(oh_lo, oh_hi):
        _max_pool_row(plane, out + oh * out_w, out_idx + oh * out_w if out_idx != NULL else NULL,
                      out_idx != NULL, oh, H, W, out_w, c_lo, c_hi, kh, kw, sh, sw, pt, pl, dh, dw)


cdef inline Py_ssize_t _row_blocks(Py_ssize_t planes, Py_ssize_t rows, int num_threads) noexcept nogil:
    """Blocks per plane: whole planes when there are plenty, else enough row blocks
    to give every thread several tasks."""
    cdef Py_ssize_t want = 4 * num_threads
    if planes >= want:
        return 1
    want = (want + planes - 1) // planes
    return want if want < rows else rows


def max_pool2d(const floating[:, :, ::1] x, floating[:, :, ::1] out, int64_t[:, :, ::1] indices,
               bint with_indices, Geometry g, int num_threads):
    """out[p, oh, ow] = max of x[p] under window (oh, ow); indices (flat in H*W) when
    `with_indices` (else `indices` is not touched and may be a dummy).
    Every window must contain at least one input element."""
    check_shape("out", shape(out.shape, 3), (x.shape[0], g.out_h, g.out_w))
    if with_indices:
        check_shape("indices", shape(indices.shape, 3), shape(out.shape, 3))
    if out.shape[0] == 0 or out.shape[1] == 0 or out.shape[2] == 0:
        return
    with nogil:
        _pool_forward(x, out, &indices[0, 0, 0] if with_indices else NULL, True,
                      g.kh, g.kw, g.sh, g.sw, g.pt, g.pl, g.dh, g.dw, False, 0, num_threads)


def max_pool2d_backward(const floating[:, ::1] grad_output, const int64_t[:, ::1] indices,
                        floating[:, ::1] grad_input, int num_threads):
    """grad_input[p, indices[p, o]] += grad_output[p, o]; grad_input is fully overwritten.

    Returns the number of indices outside [0, H*W); those are skipped, never written."""
    cdef Py_ssize_t P = grad_output.shape[0], L = grad_output.shape[1], HW = grad_input.shape[1]
    check_shape("indices", shape(indices.shape, 2), (P, L))
    check_shape("grad_input", (grad_input.shape[0],), (P,))
    cdef Py_ssize_t p, o
    cdef int64_t k
    cdef Py_ssize_t bad = 0
    cdef floating* gi
    cdef const floating* go
    cdef const int64_t* idx
    if P == 0 or HW == 0:
        return 0
    for p in prange(P, nogil=True, schedule="static", num_threads=num_threads):
        gi = &grad_input[p, 0]
        memset(gi, 0, HW * sizeof(floating))
        if L == 0:
            continue
        go = &grad_output[p, 0]
        idx = &indices[p, 0]
        for o in range(L):
            k = idx[o]
            # One unsigned compare rejects negatives and values past the plane.
            if <unsigned long long> k < <unsigned long long> HW:
                gi[k] += go[o]
            else:
                bad += 1
    return bad


# ---------------------------------------------------------------------------
# Average / sum pooling
#
# The divisor of window (oh, ow) is torch's: `divisor` when non-zero (an
# override; sum pooling passes 1), else the window's height times width,
# clipped to the padded input (count_include_pad) or to the input.

cdef inline Py_ssize_t _count(Py_ssize_t start, Py_ssize_t k, Py_ssize_t n, Py_ssize_t pad,
                              bint include_pad) noexcept nogil:
    """Window length along one axis: clipped to [-pad, n + pad) or to [0, n)."""
    cdef Py_ssize_t end = start + k
    if end > n + pad:
        end = n + pad
    if include_pad:
        return end - start
    if start < 0:
        start = 0
    if end > n:
        end = n
    return end - start


cdef inline void _avg_2x2s2(floating* dst, const floating* r0, const floating* r1,
                            Py_ssize_t lo, Py_ssize_t hi, floating div) noexcept nogil:
    if floating is float:
        fastconv_avg_2x2s2_f(dst, r0, r1, lo, hi, div)
    else:
        fastconv_avg_2x2s2_d(dst, r0, r1, lo, hi, div)


cdef inline void _avg_3x3s2(floating* dst, const floating* r0, const floating* r1, const floating* r2,
                            Py_ssize_t lo, Py_ssize_t hi, floating div) noexcept nogil:
    if floating is float:
        fastconv_avg_3x3s2_f(dst, r0, r1, r2, lo, hi, div)
    else:
        fastconv_avg_3x3s2_d(dst, r0, r1, r2, lo, hi, div)


cdef inline void _sum_row(floating* dst, const floating* src, Py_ssize_t lo, Py_ssize_t hi,
                          Py_ssize_t sw, bint first) noexcept nogil:
    cdef Py_ssize_t ow
    if first:
        for ow in range(lo, hi):
            dst[ow] = src[ow * sw]
    else:
        for ow in range(lo, hi):
            dst[ow] = dst[ow] + src[ow * sw]


cdef inline void _divide_row(floating* dst, Py_ssize_t lo, Py_ssize_t hi, floating d) noexcept nogil:
    cdef Py_ssize_t ow
    for ow in range(lo, hi):
        dst[ow] = dst[ow] / d


cdef inline void _avg_pool_row(const floating* plane, floating* dst, Py_ssize_t oh, Py_ssize_t H,
                               Py_ssize_t W, Py_ssize_t out_w, Py_ssize_t c_lo, Py_ssize_t c_hi,
                               Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                               Py_ssize_t pt, Py_ssize_t pl,
                               bint count_include_pad, long long divisor) noexcept nogil:
    """One output row: interior columns by contiguous passes, border columns clipped."""
    cdef Py_ssize_t ih0 = oh * sh - pt, i_lo, i_hi, i, j, t, ow, iw0, j_lo, j_hi
    cdef Py_ssize_t rows = _count(ih0, kh, H, pt, count_include_pad)
    cdef const floating* row = plane + ih0 * W - pl
    cdef floating s, d
    i_lo = _first(ih0, 1)
    i_hi = _end(ih0, 1, H, kh)
    if c_lo < c_hi:
        # Interior windows are kw wide whether or not padding counts.
        d = <floating> divisor if divisor else <floating> (rows * kw)
        if sw == 2 and kh == kw == 2 and i_lo == 0 and i_hi == 2:
            _avg_2x2s2(dst, row, row + W, c_lo, c_hi, d)
        elif sw == 2 and kh == kw == 3 and i_lo == 0 and i_hi == 3:
            _avg_3x3s2(dst, row, row + W, row + 2 * W, c_lo, c_hi, d)
        else:
            for i in range(i_lo, i_hi):
                for j in range(kw):
                    if sw == 1:
                        _sum_row(dst, row + i * W + j, c_lo, c_hi, 1, i == i_lo and j == 0)
                    elif sw == 2:
                        _sum_row(dst, row + i * W + j, c_lo, c_hi, 2, i == i_lo and j == 0)
                    else:
                        _sum_row(dst, row + i * W + j, c_lo, c_hi, sw, i == i_lo and j == 0)
            if d != 1:
                _divide_row(dst, c_lo, c_hi, d)
    for t in range(out_w - (c_hi - c_lo)):
        ow = t if t < c_lo else t + (c_hi - c_lo)
        iw0 = ow * sw - pl
        j_lo = _first(iw0, 1)
        j_hi = _end(iw0, 1, W, kw)
        s = 0
        for i in range(i_lo, i_hi):
            for j in range(j_lo, j_hi):
                s = s + plane[(ih0 + i) * W + iw0 + j]
        d = <floating> divisor if divisor else <floating> (rows * _count(iw0, kw, W, pl, count_include_pad))
        dst[ow] = s / d


cdef void _avg_pool_rows(const floating* plane, floating* out, Py_ssize_t oh_lo, Py_ssize_t oh_hi,
                         Py_ssize_t H, Py_ssize_t W, Py_ssize_t out_w, Py_ssize_t c_lo, Py_ssize_t c_hi,
                         Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                         Py_ssize_t pt, Py_ssize_t pl, bint count_include_pad,
                         long long divisor) noexcept nogil:
    """Output rows [oh_lo, oh_hi) of one plane (`out`: the plane's outputs)."""
    cdef Py_ssize_t oh
    for oh in range(oh_lo, oh_hi):
        _avg_pool_row(plane, out + oh * out_w, oh, H, W, out_w, c_lo, c_hi, kh, kw, sh, sw, pt, pl,
                      count_include_pad, divisor)


cdef void _pool_forward(const floating[:, :, ::1] x, floating[:, :, ::1] out,
                        int64_t* indices, bint is_max,
                        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                        Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t dh, Py_ssize_t dw,
                        bint count_include_pad, long long divisor, int num_threads) noexcept nogil:
    """Max (`is_max`; `indices`, shaped as `out`, when not NULL) or average pooling of
    every plane: the output rows, in blocks, are the parallel tasks."""
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t out_h = out.shape[1], out_w = out.shape[2]
    cdef Py_ssize_t task, p, blk, oh_end, c_lo, c_hi, blocks, rows_per_block
    if P == 0 or out_h == 0 or out_w == 0:
        return
    # Interior output columns: every window column inside [0, W).
    c_lo = _first(-pl, sw)
    c_hi = _end(-pl + (kw - 1) * dw, sw, W, out_w)
    if c_lo > c_hi:
        c_lo = c_hi
    blocks = _row_blocks(P, out_h, num_threads)
    rows_per_block = (out_h + blocks - 1) // blocks
    for task in prange(P * blocks, schedule="static", num_threads=num_threads):
        p = task // blocks
        blk = task % blocks
        oh_end = (blk + 1) * rows_per_block
        if oh_end > out_h:
            oh_end = out_h
        if is_max:
            _max_pool_rows(&x[p, 0, 0], &out[p, 0, 0], indices + p * out_h * out_w if indices != NULL else NULL,
                           blk * rows_per_block, oh_end, H, W, out_w, c_lo, c_hi, kh, kw, sh, sw, pt, pl, dh, dw)
        else:
            _avg_pool_rows(&x[p, 0, 0], &out[p, 0, 0], blk * rows_per_block, oh_end, H, W, out_w, c_lo, c_hi,
                           kh, kw, sh, sw, pt, pl, count_include_pad, divisor)


def avg_pool2d(const floating[:, :, ::1] x, floating[:, :, ::1] out, Geometry g,
               bint count_include_pad, long long divisor, int num_threads):
    """out[p, oh, ow] = sum of x[p] under window (oh, ow) / divisor (see above); g's dilation is 1."""
    check_shape("out", shape(out.shape, 3), (x.shape[0], g.out_h, g.out_w))
    with nogil:
        _pool_forward(x, out, NULL, False, g.kh, g.kw, g.sh, g.sw, g.pt, g.pl, 1, 1, count_include_pad, divisor,
                      num_threads)


cdef inline void _scatter_row(floating* dst, const floating* g, Py_ssize_t lo, Py_ssize_t hi,
                              Py_ssize_t sw) noexcept nogil:
    cdef Py_ssize_t ow
    for ow in range(lo, hi):
        dst[ow * sw] += g[ow]


cdef inline void _spread_row(floating* row, const floating* g, Py_ssize_t lo, Py_ssize_t hi,
                             Py_ssize_t kw, Py_ssize_t sw) noexcept nogil:
    """row[ow*sw + j] += g[ow] for the interior outputs ow in [lo, hi) and j < kw."""
    cdef Py_ssize_t j
    if sw == 2 and kw == 2:
        if floating is float:
            fastconv_spread_2s2_f(row, g, lo, hi)
        else:
            fastconv_spread_2s2_d(row, g, lo, hi)
    elif sw == 2 and kw == 3:
        if floating is float:
            fastconv_spread_3s2_f(row, g, lo, hi)
        else:
            fastconv_spread_3s2_d(row, g, lo, hi)
    else:
        for j in range(kw):
            if sw == 1:
                _scatter_row(row + j, g, lo, hi, 1)
            elif sw == 2:
                _scatter_row(row + j, g, lo, hi, 2)
            else:
                _scatter_row(row + j, g, lo, hi, sw)


def avg_pool2d_backward(const floating[:, :, ::1] grad_output, floating[:, :, ::1] grad_input,
                        floating[:, ::1] scratch, Geometry geometry, bint count_include_pad, long long divisor,
                        int num_threads):
    """The adjoint of `avg_pool2d` (same arguments); grad_input is fully overwritten.
    `scratch` is (num_threads, >= out_w): one row of scaled gradients per thread (rows
    that share a cache line make the threads contend for it)."""
    cdef Py_ssize_t kh = geometry.kh, kw = geometry.kw, sh = geometry.sh, sw = geometry.sw
    cdef Py_ssize_t pt = geometry.pt, pl = geometry.pl
    cdef Py_ssize_t P = grad_input.shape[0], H = grad_input.shape[1], W = grad_input.shape[2]
    cdef Py_ssize_t out_h = geometry.out_h, out_w = geometry.out_w
    cdef Py_ssize_t p, t, oh, ow, i, j, ih0, iw0, i_lo, i_hi, j_lo, j_hi, c_lo, c_hi, rows
    check_shape("grad_output", shape(grad_output.shape, 3), (P, out_h, out_w))
    check_workspace("scratch", scratch.shape[0], scratch.shape[1], num_threads, out_w)
    cdef floating* gi
    cdef floating* g
    cdef const floating* go
    cdef floating d
    if P == 0 or H == 0 or W == 0:
        return
    c_lo = _first(-pl, sw)
    c_hi = _end(-pl + kw - 1, sw, W, out_w)
    if c_lo > c_hi:
        c_lo = c_hi
    for p in prange(P, nogil=True, schedule="static", num_threads=num_threads):
        # This thread's row of scaled gradients: each output's share for each of its inputs.
        g = &scratch[omp_get_thread_num(), 0]
        gi = &grad_input[p, 0, 0]
        memset(gi, 0, H * W * sizeof(floating))
        for oh in range(out_h):
            go = &grad_output[p, oh, 0]
            ih0 = oh * sh - pt
            i_lo = _first(ih0, 1)
            i_hi = _end(ih0, 1, H, kh)
            rows = _count(ih0, kh, H, pt, count_include_pad)
            d = <floating> divisor if divisor else <floating> (rows * kw)
            for ow in range(c_lo, c_hi):
                g[ow] = go[ow] / d
            for t in range(out_w - (c_hi - c_lo)):
                ow = t if t < c_lo else t + (c_hi - c_lo)
                if not divisor:
                    d = <floating> (rows * _count(ow * sw - pl, kw, W, pl, count_include_pad))
                g[ow] = go[ow] / d
            for i in range(i_lo, i_hi):
                _spread_row(gi + (ih0 + i) * W - pl, g, c_lo, c_hi, kw, sw)
                for t in range(out_w - (c_hi - c_lo)):
                    ow = t if t < c_lo else t + (c_hi - c_lo)
                    iw0 = ow * sw - pl
                    j_lo = _first(iw0, 1)
                    j_hi = _end(iw0, 1, W, kw)
                    for j in range(j_lo, j_hi):
                        gi[(ih0 + i) * W + iw0 + j] += g[ow]


# ---------------------------------------------------------------------------
# Global pooling's backward of the average (its forward and the max are in
# adaptive_pool.pyx, built per instruction set).


def global_avg_pool2d_backward(const floating[::1] grad_output, floating[:, ::1] grad_input,
                               int num_threads):
    """grad_input[p, :] = grad_output[p] / L."""
    cdef Py_ssize_t P = grad_input.shape[0], L = grad_input.shape[1]
    check_shape("grad_output", (grad_output.shape[0],), (P,))
    cdef Py_ssize_t p, i
    cdef floating g
    cdef floating* dst
    if P == 0 or L == 0:
        return
    for p in prange(P, nogil=True, schedule="static", num_threads=num_threads):
        g = grad_output[p] / <floating> L
        dst = &grad_input[p, 0]
        for i in range(L):
            dst[i] = g
