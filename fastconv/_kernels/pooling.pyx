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
from libc.math cimport INFINITY
from libc.stdint cimport int64_t
from libc.string cimport memset

from fastconv._kernels._openmp cimport omp_get_thread_num


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


cdef inline void _max_2x2s2(floating* dst, const floating* r0, const floating* r1,
                            Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    # The common 2x2 stride-2 window in one pass: four loads, three selects.
    cdef Py_ssize_t ow
    cdef floating m, v
    for ow in range(lo, hi):
        m = r0[2 * ow]
        v = r0[2 * ow + 1]
        m = v if _takes(v, m) else m
        v = r1[2 * ow]
        m = v if _takes(v, m) else m
        v = r1[2 * ow + 1]
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


def max_pool2d(const floating[:, :, ::1] x, floating[:, :, ::1] out, int64_t[:, :, ::1] indices,
               bint with_indices, int kh, int kw, int sh, int sw, int pt, int pl, int dh, int dw,
               int num_threads):
    """out[p, oh, ow] = max of x[p] under window (oh, ow); indices (flat in H*W) when
    `with_indices` (else `indices` is not touched and may be a dummy).
    Every window must contain at least one input element."""
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t out_h = out.shape[1], out_w = out.shape[2]
    cdef Py_ssize_t task, t, p, oh, ow, i, j, ih0, iw0, i_lo, i_hi, j_lo, j_hi, c_lo, c_hi, off, k
    cdef Py_ssize_t ih, iw
    cdef bint started, fast_2x2
    cdef floating* dst
    cdef int64_t* dst_idx
    cdef const floating* plane
    cdef floating v, m
    if P == 0 or out_h == 0 or out_w == 0:
        return
    # Interior output columns: every window column inside [0, W).
    c_lo = _first(-pl, sw)
    c_hi = _end(-pl + (kw - 1) * dw, sw, W, out_w)
    if c_lo > c_hi:
        c_lo = c_hi
    fast_2x2 = kh == 2 and kw == 2 and sh == 2 and sw == 2 and dh == 1 and dw == 1 and not with_indices
    for task in prange(P * out_h, nogil=True, schedule="static", num_threads=num_threads):
        p = task // out_h
        oh = task % out_h
        plane = &x[p, 0, 0]
        dst = &out[p, oh, 0]
        dst_idx = &indices[p, oh, 0] if with_indices else NULL
        ih0 = oh * sh - pt
        i_lo = _first(ih0, dh)
        i_hi = _end(ih0, dh, H, kh)
        # Interior columns, one contiguous pass per window element.
        if c_lo < c_hi:
            if fast_2x2 and i_hi - i_lo == 2:
                _max_2x2s2(dst, plane + ih0 * W - pl, plane + (ih0 + 1) * W - pl, c_lo, c_hi)
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
        # Border columns: clip the window to the input.
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


def max_pool2d_backward(const floating[:, ::1] grad_output, const int64_t[:, ::1] indices,
                        floating[:, ::1] grad_input, int num_threads):
    """grad_input[p, indices[p, o]] += grad_output[p, o]; grad_input is fully overwritten.

    Returns the number of indices outside [0, H*W); those are skipped, never written."""
    cdef Py_ssize_t P = grad_output.shape[0], L = grad_output.shape[1], HW = grad_input.shape[1]
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
# The divisor of window (oh, ow) is torch's: `divisor` when given (> 0 here
# means "override", sum pooling passes 1), else the window's height times
# width, clipped to the padded input (count_include_pad) or to the input.

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


def avg_pool2d(const floating[:, :, ::1] x, floating[:, :, ::1] out, int kh, int kw, int sh, int sw,
               int pt, int pl, bint count_include_pad, long long divisor, int num_threads):
    """out[p, oh, ow] = sum of x[p] under window (oh, ow) / divisor (see above);
    `divisor` = 0: torch's default divisor, otherwise that constant (1: sum pooling)."""
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t out_h = out.shape[1], out_w = out.shape[2]
    cdef Py_ssize_t task, t, p, oh, ow, i, j, ih0, iw0, i_lo, i_hi, j_lo, j_hi, c_lo, c_hi, off, ih
    cdef Py_ssize_t rows
    cdef floating* dst
    cdef const floating* plane
    cdef floating s, d
    if P == 0 or out_h == 0 or out_w == 0:
        return
    c_lo = _first(-pl, sw)
    c_hi = _end(-pl + kw - 1, sw, W, out_w)
    if c_lo > c_hi:
        c_lo = c_hi
    for task in prange(P * out_h, nogil=True, schedule="static", num_threads=num_threads):
        p = task // out_h
        oh = task % out_h
        plane = &x[p, 0, 0]
        dst = &out[p, oh, 0]
        ih0 = oh * sh - pt
        i_lo = _first(ih0, 1)
        i_hi = _end(ih0, 1, H, kh)
        rows = _count(ih0, kh, H, pt, count_include_pad)
        if c_lo < c_hi:
            for i in range(i_lo, i_hi):
                for j in range(kw):
                    off = (ih0 + i) * W + j - pl
                    if sw == 1:
                        _sum_row(dst, plane + off, c_lo, c_hi, 1, i == i_lo and j == 0)
                    elif sw == 2:
                        _sum_row(dst, plane + off, c_lo, c_hi, 2, i == i_lo and j == 0)
                    else:
                        _sum_row(dst, plane + off, c_lo, c_hi, sw, i == i_lo and j == 0)
            if divisor != 1:
                # Interior windows are kw wide whether or not padding counts.
                d = <floating> divisor if divisor else <floating> (rows * kw)
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
            if divisor:
                d = <floating> divisor
            else:
                d = <floating> (rows * _count(iw0, kw, W, pl, count_include_pad))
            dst[ow] = s / d if divisor != 1 else s


cdef inline void _scatter_row(floating* dst, const floating* g, Py_ssize_t lo, Py_ssize_t hi,
                              Py_ssize_t sw) noexcept nogil:
    cdef Py_ssize_t ow
    for ow in range(lo, hi):
        dst[ow * sw] += g[ow]


def avg_pool2d_backward(const floating[:, :, ::1] grad_output, floating[:, :, ::1] grad_input,
                        floating[:, ::1] scratch, int kh, int kw, int sh, int sw, int pt, int pl,
                        bint count_include_pad, long long divisor, int num_threads):
    """The adjoint of `avg_pool2d` (same arguments); grad_input is fully overwritten.
    `scratch` is (num_threads, out_w): one row of scaled gradients per thread."""
    cdef Py_ssize_t P = grad_input.shape[0], H = grad_input.shape[1], W = grad_input.shape[2]
    cdef Py_ssize_t out_h = grad_output.shape[1], out_w = grad_output.shape[2]
    cdef Py_ssize_t p, t, oh, ow, i, j, ih0, iw0, i_lo, i_hi, j_lo, j_hi, c_lo, c_hi, rows
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
            for ow in range(out_w):
                if divisor:
                    d = <floating> divisor
                else:
                    d = <floating> (rows * _count(ow * sw - pl, kw, W, pl, count_include_pad))
                g[ow] = go[ow] / d if divisor != 1 else go[ow]
            for i in range(i_lo, i_hi):
                for j in range(kw):
                    if sw == 1:
                        _scatter_row(gi + (ih0 + i) * W + j - pl, g, c_lo, c_hi, 1)
                    elif sw == 2:
                        _scatter_row(gi + (ih0 + i) * W + j - pl, g, c_lo, c_hi, 2)
                    else:
                        _scatter_row(gi + (ih0 + i) * W + j - pl, g, c_lo, c_hi, sw)
                for t in range(out_w - (c_hi - c_lo)):
                    ow = t if t < c_lo else t + (c_hi - c_lo)
                    iw0 = ow * sw - pl
                    j_lo = _first(iw0, 1)
                    j_hi = _end(iw0, 1, W, kw)
                    for j in range(j_lo, j_hi):
                        gi[(ih0 + i) * W + iw0 + j] += g[ow]


# ---------------------------------------------------------------------------
# Global pooling: one value per plane. The per-plane work sits in helpers so
# their lane arrays are per call (a C array declared in the prange function
# would be shared between the threads).

cdef inline floating _plane_sum(const floating* src, Py_ssize_t L) noexcept nogil:
    # Eight partial sums: a reduction the compiler vectorises without -ffast-math.
    cdef floating acc[8]
    cdef Py_ssize_t i, k, blocks = L // 8
    cdef floating s
    for k in range(8):
        acc[k] = 0
    for i in range(blocks):
        for k in range(8):
            acc[k] = acc[k] + src[8 * i + k]
    s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
    for i in range(8 * blocks, L):
        s = s + src[i]
    return s


cdef inline floating _plane_max(const floating* src, Py_ssize_t L) noexcept nogil:
    # Eight running maxima; a NaN, once in a lane, stays there and wins the merge.
    cdef floating lane[8]
    cdef Py_ssize_t i, k, blocks = L // 8
    cdef floating m = src[0], v
    if blocks:
        for k in range(8):
            lane[k] = src[k]
        for i in range(1, blocks):
            for k in range(8):
                v = src[8 * i + k]
                lane[k] = v if _takes(v, lane[k]) else lane[k]
        for k in range(8):
            m = lane[k] if _takes(lane[k], m) else m
    for i in range(8 * blocks, L):
        v = src[i]
        m = v if _takes(v, m) else m
    return m


cdef inline int64_t _plane_argmax(const floating* src, Py_ssize_t L) noexcept nogil:
    # torch's order: the first maximum, or the last NaN.
    cdef Py_ssize_t i
    cdef int64_t best = 0
    cdef floating m = src[0], v
    for i in range(1, L):
        v = src[i]
        if _takes(v, m):
            m = v
            best = i
    return best


def global_avg_pool2d(const floating[:, ::1] x, floating[::1] out, int num_threads):
    """out[p] = mean of x[p, :] (L >= 1)."""
    cdef Py_ssize_t P = x.shape[0], L = x.shape[1]
    cdef Py_ssize_t p
    if P == 0:
        return
    for p in prange(P, nogil=True, schedule="static", num_threads=num_threads):
        out[p] = _plane_sum(&x[p, 0], L) / <floating> L


def global_avg_pool2d_backward(const floating[::1] grad_output, floating[:, ::1] grad_input,
                               int num_threads):
    """grad_input[p, :] = grad_output[p] / L."""
    cdef Py_ssize_t P = grad_input.shape[0], L = grad_input.shape[1]
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


def global_max_pool2d(const floating[:, ::1] x, floating[::1] out, int64_t[::1] indices,
                      bint with_indices, int num_threads):
    """out[p] = max of x[p, :] (NaN propagates); indices[p] its position when `with_indices`."""
    cdef Py_ssize_t P = x.shape[0], L = x.shape[1]
    cdef Py_ssize_t p
    cdef int64_t k
    if P == 0 or L == 0:
        return
    for p in prange(P, nogil=True, schedule="static", num_threads=num_threads):
        if with_indices:
            k = _plane_argmax(&x[p, 0], L)
            indices[p] = k
            out[p] = x[p, k]
        else:
            out[p] = _plane_max(&x[p, 0], L)
