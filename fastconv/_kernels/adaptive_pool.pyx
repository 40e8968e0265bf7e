# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Adaptive average and max pooling over (P, H, W) planes, float32/float64.

torch's windows: along an axis of length n pooled to `out`, output i covers
``[floor(i*n/out), ceil((i+1)*n/out))``; windows may overlap, and `out` may
exceed n. The forward kernels run one task per output row (prange over P * Ho),
the backward one task per plane, in dynamic chunks of a quarter of a thread's
share (on shared cores a descheduled thread then holds back one chunk, not
half the op; the results do not depend on which thread runs a task), (each thread owns its planes, so overlapping
windows accumulate without races). Max follows torch's CPU kernel: row-major
scan from -inf, a value replaces the max when it is larger or NaN (ties keep
the first, the last NaN wins), indices are flat positions in the plane.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from fastconv._kernels._geometry cimport check_shape
from fastconv._kernels._openmp cimport fc_openmp_adopt
from fastconv._kernels._tasks cimport openmp_state, run_tasks
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

import functools

import numpy as np

fc_openmp_adopt(openmp_state())   # one choice of runtime per process (openmp_runtime.h)


cdef inline bint _same_shape(const Py_ssize_t* a, const Py_ssize_t* b) noexcept:
    """Whether two 3-D memoryviews have the same shape."""
    return a[0] == b[0] and a[1] == b[1] and a[2] == b[2]


cdef extern from "isa.h" nogil:
    int fc_compiled_isa()
    int fc_cpu_isa()


def compiled_isa():
    """The instruction set this module was compiled for: an index into fastconv._kernels.ISA_NAMES."""
    return fc_compiled_isa()


def cpu_isa():
    """The highest level of fastconv._kernels.ISA_NAMES the CPU and OS run (0 off x86 or unknown)."""
    return fc_cpu_isa()


cdef extern from "adaptive_pool.h" nogil:
    float fc_ap_window_sum_f(const float* plane, Py_ssize_t W, Py_ssize_t h0, Py_ssize_t h1, Py_ssize_t w0,
                             Py_ssize_t w1)
    double fc_ap_window_sum_d(const double* plane, Py_ssize_t W, Py_ssize_t h0, Py_ssize_t h1, Py_ssize_t w0,
                              Py_ssize_t w1)
    float fc_ap_window_max_f(const float* plane, Py_ssize_t W, Py_ssize_t h0, Py_ssize_t h1, Py_ssize_t w0,
                             Py_ssize_t w1, int64_t* idx)
    double fc_ap_window_max_d(const double* plane, Py_ssize_t W, Py_ssize_t h0, Py_ssize_t h1, Py_ssize_t w0,
                              Py_ssize_t w1, int64_t* idx)
    float fc_ap_plane_max_f(const float* r, Py_ssize_t L, int64_t* idx)
    double fc_ap_plane_max_d(const double* r, Py_ssize_t L, int64_t* idx)
    void fc_ap_plane_means_f(const float* x, Py_ssize_t L, Py_ssize_t count, float* dst)
    void fc_ap_plane_means_d(const double* x, Py_ssize_t L, Py_ssize_t count, double* dst)
    void fc_ap_avg_row_f(const float* plane, Py_ssize_t W, Py_ssize_t h0, Py_ssize_t h1, const Py_ssize_t* ws,
                         const Py_ssize_t* we, Py_ssize_t Wo, float* col_sum, float* dst)
    void fc_ap_avg_row_d(const double* plane, Py_ssize_t W, Py_ssize_t h0, Py_ssize_t h1, const Py_ssize_t* ws,
                         const Py_ssize_t* we, Py_ssize_t Wo, double* col_sum, double* dst)
    void fc_ap_max_row_f(const float* plane, Py_ssize_t W, Py_ssize_t h0, Py_ssize_t h1, const Py_ssize_t* ws,
                         const Py_ssize_t* we, Py_ssize_t Wo, float* col_max, int32_t* col_row, float* dst,
                         int64_t* idx)
    void fc_ap_max_row_d(const double* plane, Py_ssize_t W, Py_ssize_t h0, Py_ssize_t h1, const Py_ssize_t* ws,
                         const Py_ssize_t* we, Py_ssize_t Wo, double* col_max, int32_t* col_row, double* dst,
                         int64_t* idx)
    void fc_ap_window_add_f(float* plane, Py_ssize_t W, Py_ssize_t h0, Py_ssize_t h1, Py_ssize_t w0,
                            Py_ssize_t w1, float g)
    void fc_ap_window_add_d(double* plane, Py_ssize_t W, Py_ssize_t h0, Py_ssize_t h1, Py_ssize_t w0,
                            Py_ssize_t w1, double g)


cdef inline Py_ssize_t _chunk(Py_ssize_t tasks, int num_threads) noexcept:
    return max(1, tasks // (4 * num_threads))


@functools.lru_cache(maxsize=64)
def _bounds(Py_ssize_t n, Py_ssize_t out):
    """(starts, ends) of the windows, as read-only Py_ssize_t arrays, cached: building
    them took ~5 us a call, a tenth of a 7x7 -> 1 pooling of batch 32 x 512 channels."""
    i = np.arange(out, dtype=np.intp)
    starts, ends = np.ascontiguousarray((i * n) // out), np.ascontiguousarray(-((-(i + 1) * n) // out))
    starts.flags.writeable = ends.flags.writeable = False
    return starts, ends


cdef void _avg_row(const floating* plane, floating* dst, Py_ssize_t h0, Py_ssize_t h1, const Py_ssize_t* ws,
                   const Py_ssize_t* we, Py_ssize_t W, Py_ssize_t Wo) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating s
    for j in range(Wo):
        if floating is float:
            s = fc_ap_window_sum_f(plane, W, h0, h1, ws[j], we[j])
        else:
            s = fc_ap_window_sum_d(plane, W, h0, h1, ws[j], we[j])
        dst[j] = s / <floating> ((h1 - h0) * (we[j] - ws[j]))


cdef void _max_row_scan(const floating* plane, floating* dst, int64_t* idx, Py_ssize_t h0, Py_ssize_t h1,
                        const Py_ssize_t* ws, const Py_ssize_t* we, Py_ssize_t W, Py_ssize_t Wo) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(Wo):
        if floating is float:
            dst[j] = fc_ap_window_max_f(plane, W, h0, h1, ws[j], we[j], idx + j)
        else:
            dst[j] = fc_ap_window_max_d(plane, W, h0, h1, ws[j], we[j], idx + j)


cdef struct MeansJob:
    # global_avg_pool2d's arrays (as floating*, by `double_precision`) and sizes
    const void* x
    void* out
    bint double_precision
    Py_ssize_t P, L, per


cdef void _means_task(void* job, Py_ssize_t task, int slot) noexcept nogil:
    cdef MeansJob* j = <MeansJob*>job
    cdef Py_ssize_t p = task * j.per, count = min(j.per, j.P - task * j.per)
    if j.double_precision:
        fc_ap_plane_means_d(<const double*>j.x + p * j.L, j.L, count, <double*>j.out + p)
    else:
        fc_ap_plane_means_f(<const float*>j.x + p * j.L, j.L, count, <float*>j.out + p)


def global_avg_pool2d(const floating[:, ::1] x, floating[::1] out, int num_threads):
    """out[p] = mean of x[p, :] (NaN for L = 0), summed in an order fixed by L alone
    (adaptive_pool.h): tasks of whole groups of 8 planes, on the task pool. A 50 us op
    (ResNet's (32, 512, 7, 7) in float64): an OpenMP region's barrier waits for a
    thread woken late, or gives way to one thread; the pool's caller starts at once."""
    cdef Py_ssize_t P = x.shape[0], L = x.shape[1]
    check_shape("out", (out.shape[0],), (P,))
    if P == 0:
        return
    cdef MeansJob job
    job.x, job.out = &x[0, 0], &out[0]     # (an empty row: its data pointer, never read)
    job.double_precision = floating is double
    job.P, job.L = P, L
    job.per = (_chunk(P, max(1, num_threads)) + 7) // 8 * 8
    with nogil:
        run_tasks(_means_task, &job, (P + job.per - 1) // job.per, 1, num_threads)


def global_max_pool2d(const floating[:, ::1] x, floating[::1] out, int64_t[::1] indices,
                      bint with_indices, int num_threads):
    """out[p] = torch's max of x[p, :] (the first maximum, or the last NaN; L >= 1);
    indices[p] its position when `with_indices`."""
    cdef Py_ssize_t P = x.shape[0], L = x.shape[1], p
    check_shape("out", (out.shape[0],), (P,))
    if with_indices:
        check_shape("indices", (indices.shape[0],), (P,))
    if P == 0 or L == 0:
        return
    cdef int64_t* idx = &indices[0] if with_indices else NULL
    cdef Py_ssize_t chunk = _chunk(P, num_threads)
    for p in prange(P, nogil=True, num_threads=num_threads, schedule="dynamic", chunksize=chunk):
        if floating is float:
            out[p] = fc_ap_plane_max_f(&x[p, 0], L, idx + p if with_indices else NULL)
        else:
            out[p] = fc_ap_plane_max_d(&x[p, 0], L, idx + p if with_indices else NULL)


def adaptive_avg_pool2d(const floating[:, :, ::1] x, floating[:, :, ::1] out, int num_threads):
    """out[p, i, j] = mean of x[p] over window (i, j)."""
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2], Ho = out.shape[1], Wo = out.shape[2]
    cdef Py_ssize_t t, p, i
    cdef floating* col_sum = NULL
    if out.shape[0] != P:
        raise ValueError("x and out must have the same number of planes")
    if P == 0 or Ho == 0 or Wo == 0:
        return
    if H == 0 or W == 0:
        raise ValueError("x must have non-zero height and width")
    hs_a, he_a = _bounds(H, Ho)
    ws_a, we_a = _bounds(W, Wo)
    cdef const Py_ssize_t[::1] hs = hs_a, he = he_a, ws = ws_a, we = we_a
    cdef Py_ssize_t chunk = _chunk(P * Ho, num_threads)
    with nogil, parallel(num_threads=num_threads):
        col_sum = <floating*> malloc(W * sizeof(floating))   # this thread's column sums
        for t in prange(P * Ho, schedule="dynamic", chunksize=chunk):
            p = t // Ho
            i = t % Ho
            if col_sum == NULL:
                _avg_row(&x[p, 0, 0], &out[p, i, 0], hs[i], he[i], &ws[0], &we[0], W, Wo)
            elif floating is float:
                fc_ap_avg_row_f(&x[p, 0, 0], W, hs[i], he[i], &ws[0], &we[0], Wo, col_sum, &out[p, i, 0])
            else:
                fc_ap_avg_row_d(&x[p, 0, 0], W, hs[i], he[i], &ws[0], &we[0], Wo, col_sum, &out[p, i, 0])
        free(col_sum)


def adaptive_max_pool2d(const floating[:, :, ::1] x, floating[:, :, ::1] out, int64_t[:, :, ::1] indices,
                        int num_threads):
    """out[p, i, j] = max of x[p] over window (i, j); indices[p, i, j] its flat position h*W + w."""
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2], Ho = out.shape[1], Wo = out.shape[2]
    cdef Py_ssize_t t, p, i
    cdef floating* col_max = NULL
    cdef int32_t* col_row = NULL
    if out.shape[0] != P or not _same_shape(indices.shape, out.shape):
        raise ValueError("x, out and indices must have matching shapes")
    if P == 0 or Ho == 0 or Wo == 0:
        return
    if H == 0 or W == 0:
        raise ValueError("x must have non-zero height and width")
    hs_a, he_a = _bounds(H, Ho)
    ws_a, we_a = _bounds(W, Wo)
    cdef const Py_ssize_t[::1] hs = hs_a, he = he_a, ws = ws_a, we = we_a
    cdef Py_ssize_t chunk = _chunk(P * Ho, num_threads)
    # Per thread: one row of column maxima and their rows (malloc'd inside the
    # parallel block, so each thread gets its own). A failed malloc (or a plane
    # taller than int32 rows) falls back to scanning each window whole.
    with nogil, parallel(num_threads=num_threads):
        if H <= 2147483647:     # rows are stored as int32
            col_max = <floating*> malloc(W * sizeof(floating))
            col_row = <int32_t*> malloc(W * sizeof(int32_t))
        for t in prange(P * Ho, schedule="dynamic", chunksize=chunk):
            p = t // Ho
            i = t % Ho
            if col_max != NULL and col_row != NULL:
                if floating is float:
                    fc_ap_max_row_f(&x[p, 0, 0], W, hs[i], he[i], &ws[0], &we[0], Wo, col_max, col_row,
                                    &out[p, i, 0], &indices[p, i, 0])
                else:
                    fc_ap_max_row_d(&x[p, 0, 0], W, hs[i], he[i], &ws[0], &we[0], Wo, col_max, col_row,
                                    &out[p, i, 0], &indices[p, i, 0])
            else:
                _max_row_scan(&x[p, 0, 0], &out[p, i, 0], &indices[p, i, 0], hs[i], he[i], &ws[0], &we[0], W, Wo)
        free(col_max)
        free(col_row)


cdef void _avg_backward_plane(const floating* go, floating* gi, const Py_ssize_t* hs, const Py_ssize_t* he,
                              const Py_ssize_t* ws, const Py_ssize_t* we, Py_ssize_t H, Py_ssize_t W,
                              Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef floating g
    if Ho == 1 and Wo == 1:     # global: every value gets the same share, one pass of writes
        g = go[0] / <floating> (H * W)
        for i in range(H * W):
            gi[i] = g
        return
    memset(gi, 0, H * W * sizeof(floating))
    for i in range(Ho):
        for j in range(Wo):
            g = go[i * Wo + j] / <floating> ((he[i] - hs[i]) * (we[j] - ws[j]))
            if floating is float:
                fc_ap_window_add_f(gi, W, hs[i], he[i], ws[j], we[j], g)
            else:
                fc_ap_window_add_d(gi, W, hs[i], he[i], ws[j], we[j], g)


def adaptive_avg_pool2d_backward(const floating[:, :, ::1] grad_output, floating[:, :, ::1] grad_input,
                                 int num_threads):
    """The adjoint of `adaptive_avg_pool2d`; grad_input (P, H, W) is fully overwritten."""
    cdef Py_ssize_t P = grad_input.shape[0], H = grad_input.shape[1], W = grad_input.shape[2]
    cdef Py_ssize_t Ho = grad_output.shape[1], Wo = grad_output.shape[2]
    cdef Py_ssize_t p
    if grad_output.shape[0] != P:
        raise ValueError("grad_output and grad_input must have the same number of planes")
    if P == 0 or H == 0 or W == 0:
        return
    if Ho == 0 or Wo == 0:
        grad_input[:, :, :] = 0
        return
    hs_a, he_a = _bounds(H, Ho)
    ws_a, we_a = _bounds(W, Wo)
    cdef const Py_ssize_t[::1] hs = hs_a, he = he_a, ws = ws_a, we = we_a
    cdef Py_ssize_t chunk = _chunk(P, num_threads)
    for p in prange(P, nogil=True, schedule="dynamic", chunksize=chunk, num_threads=num_threads):
        _avg_backward_plane(&grad_output[p, 0, 0], &grad_input[p, 0, 0], &hs[0], &he[0], &ws[0], &we[0],
                            H, W, Ho, Wo)
