# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Direct 2-D convolution (cross-correlation): forward, grad_x, grad_weight,
and the one-channel correlation behind fastconv.convolve / convolve2d.

No column matrix: every output value is summed straight from the input. The
only scratch memory is one small buffer per thread (`workspace[thread]`): a
few input rows, zero-padded and split by stride phase, so that

    padded row u = iw + pad_left  is stored at  row[(u % sw) * M + u // sw]

and the input under output pixel ow, tap j is `row[(j*dw % sw) * M + j*dw // sw + ow]`:
contiguous in ow whatever the stride, with no bounds tests in the hot loop.

The row kernels (conv_direct_rows.h) are register-blocked: KB channels x a
strip of output pixels of vector accumulators, loops over the taps outside
and over the strip inside, so each loaded input vector feeds KB multiply-adds.
This file splits the work into independent tasks and packs the rows.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.string cimport memcpy, memset

import numpy as np

cdef extern from "conv_direct_rows.h" nogil:
    enum: FC_KB
    int fc_compiled_for_avx_fma()
    int fc_cpu_has_avx_fma()
    Py_ssize_t fc_strip_f()
    Py_ssize_t fc_strip_d()
    void fc_forward_row_f(const float* rows, Py_ssize_t row_len, const Py_ssize_t* tap_off,
                          const float* w, Py_ssize_t w_k, Py_ssize_t nc, Py_ssize_t kh, Py_ssize_t kw,
                          Py_ssize_t i_lo, Py_ssize_t i_hi, float* out, Py_ssize_t out_k, Py_ssize_t Wo,
                          const float* bias, int accumulate, int nk)
    void fc_forward_row_d(const double* rows, Py_ssize_t row_len, const Py_ssize_t* tap_off,
                          const double* w, Py_ssize_t w_k, Py_ssize_t nc, Py_ssize_t kh, Py_ssize_t kw,
                          Py_ssize_t i_lo, Py_ssize_t i_hi, double* out, Py_ssize_t out_k, Py_ssize_t Wo,
                          const double* bias, int accumulate, int nk)
    void fc_grad_x_row_f(const float* go, Py_ssize_t go_k, const float* w, Py_ssize_t w_k, Py_ssize_t w_c,
                         Py_ssize_t Kg, float* dst, Py_ssize_t dst_c, Py_ssize_t Wo, int nc)
    void fc_grad_x_row_d(const double* go, Py_ssize_t go_k, const double* w, Py_ssize_t w_k, Py_ssize_t w_c,
                         Py_ssize_t Kg, double* dst, Py_ssize_t dst_c, Py_ssize_t Wo, int nc)
    void fc_grad_w_row_f(float* part, Py_ssize_t part_k, const float* go, Py_ssize_t go_k,
                         const float* row, Py_ssize_t Wo, int nk)
    void fc_grad_w_row_d(double* part, Py_ssize_t part_k, const double* go, Py_ssize_t go_k,
                         const double* row, Py_ssize_t Wo, int nk)
    void fc_correlate_rows_f(const float* rows, Py_ssize_t row_len, Py_ssize_t nrows, const float* k,
                             Py_ssize_t kw, float* y, Py_ssize_t n, int accumulate)
    void fc_correlate_rows_d(const double* rows, Py_ssize_t row_len, Py_ssize_t nrows, const double* k,
                             Py_ssize_t kw, double* y, Py_ssize_t n, int accumulate)

cdef inline void _forward_row(const floating* rows, Py_ssize_t row_len, const Py_ssize_t* tap_off,
                              const floating* w, Py_ssize_t w_k, Py_ssize_t nc, Py_ssize_t kh, Py_ssize_t kw,
                              Py_ssize_t i_lo, Py_ssize_t i_hi, floating* out, Py_ssize_t out_k, Py_ssize_t Wo,
                              const floating* bias, bint accumulate, int nk) noexcept nogil:
    if floating is float:
        fc_forward_row_f(rows, row_len, tap_off, w, w_k, nc, kh, kw, i_lo, i_hi, out, out_k, Wo, bias,
                         accumulate, nk)
    else:
        fc_forward_row_d(rows, row_len, tap_off, w, w_k, nc, kh, kw, i_lo, i_hi, out, out_k, Wo, bias,
                         accumulate, nk)


cdef inline void _grad_x_row(const floating* go, Py_ssize_t go_k, const floating* w, Py_ssize_t w_k,
                             Py_ssize_t w_c, Py_ssize_t Kg, floating* dst, Py_ssize_t dst_c, Py_ssize_t Wo,
                             int nc) noexcept nogil:
    if floating is float:
        fc_grad_x_row_f(go, go_k, w, w_k, w_c, Kg, dst, dst_c, Wo, nc)
    else:
        fc_grad_x_row_d(go, go_k, w, w_k, w_c, Kg, dst, dst_c, Wo, nc)


cdef inline void _grad_w_row(floating* part, Py_ssize_t part_k, const floating* go, Py_ssize_t go_k,
                             const floating* row, Py_ssize_t Wo, int nk) noexcept nogil:
    if floating is float:
        fc_grad_w_row_f(part, part_k, go, go_k, row, Wo, nk)
    else:
        fc_grad_w_row_d(part, part_k, go, go_k, row, Wo, nk)


cdef inline void _pack_row(const floating* src, Py_ssize_t W, floating* dst, Py_ssize_t M,
                           Py_ssize_t sw, Py_ssize_t pl) noexcept nogil:
    """dst[p*M + m] = x[m*sw + p - pl] (0 outside [0, W)), for p < sw, m < M."""
    cdef Py_ssize_t p, m, iw, lo, hi
    if sw == 1:
        lo = pl if pl < M else M
        hi = W + pl if W + pl < M else M
        if lo > 0:
            memset(dst, 0, lo * sizeof(floating))
        if hi > lo:
            memcpy(dst + lo, src + lo - pl, (hi - lo) * sizeof(floating))
        if hi < M:
            memset(dst + hi, 0, (M - hi) * sizeof(floating))
        return
    for p in range(sw):
        for m in range(M):
            iw = m * sw + p - pl
            dst[p * M + m] = src[iw] if 0 <= iw < W else 0


cdef inline Py_ssize_t _first_tap(Py_ssize_t start, Py_ssize_t d) noexcept nogil:
    """Smallest i >= 0 with start + i*d >= 0."""
    return 0 if start >= 0 else (-start + d - 1) // d


cdef inline Py_ssize_t _end_tap(Py_ssize_t start, Py_ssize_t d, Py_ssize_t size, Py_ssize_t k) noexcept nogil:
    """One past the largest i < k with start + i*d < size."""
    cdef Py_ssize_t e
    if start > size - 1:
        return 0
    e = (size - 1 - start) // d + 1
    return e if e < k else k



# ---------------------------------------------------------------------------
# forward: each task owns one output row (n, oh) of every channel.

def conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                   const floating[::1] bias, floating[:, :, :, ::1] out, int groups,
                   int sh, int sw, int pt, int pl, int dh, int dw,
                   floating[:, ::1] workspace, Py_ssize_t chunk_channels, int num_threads):
    """out = conv2d(x, weight) + bias. One task per (image, output row); it packs the
    rows of `chunk_channels` input channels at a time into its workspace row, which
    must hold chunk_channels * kh * forward_row_len(...) values."""
    cdef Py_ssize_t N = x.shape[0], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = weight.shape[0], Cg = weight.shape[1], kh = weight.shape[2], kw = weight.shape[3]
    cdef Py_ssize_t Ho = out.shape[2], Wo = out.shape[3]
    cdef Py_ssize_t Kg = K // groups
    cdef Py_ssize_t M = ((Wo - 1) * sw + (kw - 1) * dw + 1 + sw - 1) // sw
    cdef Py_ssize_t row_len = sw * M, w_k = Cg * kh * kw, out_k = Ho * Wo
    cdef Py_ssize_t kbi, ci, task, n, oh, ih0, i_lo, i_hi, g, c0, c, i, nc, k0, ow, k
    cdef Py_ssize_t[::1] tap_off = _tap_offsets(kw, dw, sw, M)
    cdef floating* buf = NULL
    if N == 0 or Ho == 0 or Wo == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        buf = &workspace[threadid(), 0]
        for task in prange(N * Ho, schedule="static"):
            n = task // Ho
            oh = task % Ho
            ih0 = oh * sh - pt
            i_lo = _first_tap(ih0, dh)
            i_hi = _end_tap(ih0, dh, H, kh)
            if i_lo >= i_hi or Cg == 0:   # the window lies wholly in the padding, or no channels
                for k in range(K):
                    for ow in range(Wo):
                        out[n, k, oh, ow] = bias[k]
                continue
            for g in range(groups):
                for ci in range((Cg + chunk_channels - 1) // chunk_channels):
                    c0 = ci * chunk_channels
                    nc = min(chunk_channels, Cg - c0)
                    for c in range(nc):
                        for i in range(i_lo, i_hi):
                            _pack_row(&x[n, g * Cg + c0 + c, ih0 + i * dh, 0], W,
                                      buf + (c * kh + i) * row_len, M, sw, pl)
                    for kbi in range((Kg + FC_KB - 1) // FC_KB):
                        k0 = kbi * FC_KB
                        _forward_row(buf, row_len, &tap_off[0], &weight[g * Kg + k0, c0, 0, 0], w_k, nc,
                                     kh, kw, i_lo, i_hi, &out[n, g * Kg + k0, oh, 0], out_k, Wo,
                                     &bias[g * Kg + k0], c0 > 0, min(FC_KB, Kg - k0))


def _tap_offsets(Py_ssize_t kw, Py_ssize_t dw, Py_ssize_t sw, Py_ssize_t M):
    """Offset of tap j in a phase-split packed row: (j*dw % sw) * M + j*dw // sw."""
    cdef Py_ssize_t j
    cdef Py_ssize_t[::1] off = np.empty(kw, dtype=np.intp)
    for j in range(kw):
        off[j] = (j * dw % sw) * M + j * dw // sw
    return off


# ---------------------------------------------------------------------------
# grad_x: each task owns one input row (n, ih) of every channel.

def conv2d_grad_x(const floating[:, :, :, ::1] grad_output, const floating[:, :, :, ::1] weight,
                  floating[:, :, :, ::1] grad_x, int groups, int sh, int sw, int pt, int pl, int dh, int dw,
                  floating[:, ::1] workspace, Py_ssize_t chunk_channels, int num_threads):
    """grad_x = conv2d's input gradient (every element written). One task per input
    row (n, ih); it scatters into `chunk_channels` phase-split rows of its
    workspace (chunk_channels * grad_x_row_len(...) values), then unpacks them."""
    cdef Py_ssize_t N = grad_x.shape[0], H = grad_x.shape[2], W = grad_x.shape[3]
    cdef Py_ssize_t K = weight.shape[0], Cg = weight.shape[1], kh = weight.shape[2], kw = weight.shape[3]
    cdef Py_ssize_t Ho = grad_output.shape[2], Wo = grad_output.shape[3]
    cdef Py_ssize_t Kg = K // groups
    cdef Py_ssize_t span = (Wo - 1) * sw + (kw - 1) * dw + 1
    cdef Py_ssize_t M = ((span if span > W + pl else W + pl) + sw - 1) // sw
    cdef Py_ssize_t row_len = sw * M, w_k = Cg * kh * kw, w_c = kh * kw, go_k = Ho * Wo
    cdef Py_ssize_t cbi, ci, task, n, ih, g, c0, nc, c1, i, j, t, oh, tap, c, iw, u
    cdef floating* buf = NULL
    if N == 0 or H == 0 or W == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        buf = &workspace[threadid(), 0]
        for task in prange(N * H, schedule="static"):
            n = task // H
            ih = task % H
            for g in range(groups):
                for ci in range((Cg + chunk_channels - 1) // chunk_channels):
                    c0 = ci * chunk_channels
                    nc = min(chunk_channels, Cg - c0)
                    memset(buf, 0, nc * row_len * sizeof(floating))
                    for i in range(kh):
                        t = ih + pt - i * dh
                        if t < 0 or t % sh != 0 or t // sh >= Ho:
                            continue
                        oh = t // sh
                        for j in range(kw):
                            tap = j * dw
                            for cbi in range((nc + FC_KB - 1) // FC_KB):
                                c1 = cbi * FC_KB
                                _grad_x_row(&grad_output[n, g * Kg, oh, 0], go_k, &weight[g * Kg, c0 + c1, i, j],
                                            w_k, w_c, Kg, buf + c1 * row_len + (tap % sw) * M + tap // sw, row_len,
                                            Wo, min(FC_KB, nc - c1))
                    for c in range(nc):
                        for iw in range(W):
                            u = iw + pl
                            grad_x[n, g * Cg + c0 + c, ih, iw] = buf[c * row_len + (u % sw) * M + u // sw]


# ---------------------------------------------------------------------------
# grad_weight: each task owns FC_KB output channels x one input channel of the
# weight gradient and sums over the whole batch.

def conv2d_grad_weight(const floating[:, :, :, ::1] grad_output, const floating[:, :, :, ::1] x,
                       floating[:, :, :, ::1] grad_weight, int groups,
                       int sh, int sw, int pt, int pl, int dh, int dw,
                       floating[:, ::1] workspace, int num_threads):
    """grad_weight (K, C/groups, kh, kw), every element written. The workspace row
    holds grad_weight_workspace(...) values: lane-wise partial sums, then one
    packed input row."""
    cdef Py_ssize_t N = x.shape[0], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = grad_weight.shape[0], Cg = grad_weight.shape[1]
    cdef Py_ssize_t kh = grad_weight.shape[2], kw = grad_weight.shape[3]
    cdef Py_ssize_t Ho = grad_output.shape[2], Wo = grad_output.shape[3]
    cdef Py_ssize_t Kg = K // groups, nkb = (Kg + FC_KB - 1) // FC_KB
    cdef Py_ssize_t M = ((Wo - 1) * sw + (kw - 1) * dw + 1 + sw - 1) // sw
    cdef Py_ssize_t S = fc_strip_f() if floating is float else fc_strip_d()
    cdef Py_ssize_t row_len = sw * M, go_k = Ho * Wo, part_k = kh * kw * S
    cdef Py_ssize_t task, g, kbi, c, k0, nk, n, oh, ih, t, i, j, tap, kb, s
    cdef floating total
    cdef floating* part = NULL
    cdef floating* row = NULL
    with nogil, parallel(num_threads=num_threads):
        part = &workspace[threadid(), 0]
        row = part + FC_KB * part_k
        for task in prange(groups * nkb * Cg, schedule="static"):
            g = task // (nkb * Cg)
            kbi = (task // Cg) % nkb
            c = task % Cg
            k0 = kbi * FC_KB
            nk = min(FC_KB, Kg - k0)
            memset(part, 0, FC_KB * part_k * sizeof(floating))
            if Wo > 0:
                for n in range(N):
                    for ih in range(H):     # pack each input row once, for every window row using it
                        _pack_row(&x[n, g * Cg + c, ih, 0], W, row, M, sw, pl)
                        for i in range(kh):
                            t = ih + pt - i * dh
                            if t < 0 or t % sh != 0 or t // sh >= Ho:
                                continue
                            oh = t // sh
                            for j in range(kw):
                                tap = j * dw
                                _grad_w_row(part + (i * kw + j) * S, part_k, &grad_output[n, g * Kg + k0, oh, 0],
                                            go_k, row + (tap % sw) * M + tap // sw, Wo, nk)
            for kb in range(nk):
                for i in range(kh):
                    for j in range(kw):
                        total = 0
                        for s in range(S):
                            total = total + part[kb * part_k + (i * kw + j) * S + s]
                        grad_weight[g * Kg + k0 + kb, c, i, j] = total


# ---------------------------------------------------------------------------
# One image with one kernel (for fastconv.convolve / convolve2d, which flip it):
#     out[r, t] = sum_{i, j} x[r - pad_top + i, t - pad_left + j] * k[i, j]   (0 outside x)
# Tasks are (output row, chunk of `chunk` output columns), so one long 1-D signal
# is as parallel as a tall image. Each task packs `rows_per_pass` zero-padded
# input row segments at a time and adds their taps into the output chunk.

def correlate2d(const floating[:, ::1] x, const floating[:, ::1] kernel, floating[:, ::1] out,
                Py_ssize_t pad_top, Py_ssize_t pad_left, Py_ssize_t chunk, Py_ssize_t rows_per_pass,
                floating[:, ::1] workspace, int num_threads):
    """out, every element written; workspace holds rows_per_pass * (chunk + kw - 1) values per thread."""
    cdef Py_ssize_t H = x.shape[0], W = x.shape[1], kh = kernel.shape[0], kw = kernel.shape[1]
    cdef Py_ssize_t Ho = out.shape[0], Wo = out.shape[1]
    cdef Py_ssize_t nchunks = (Wo + chunk - 1) // chunk, row_len = chunk + kw - 1
    cdef Py_ssize_t task, r, t0, n, i, i0, i_lo, i_hi, nr, first, lo, hi, seg
    cdef bint accumulate
    cdef floating* buf = NULL
    if Ho == 0 or Wo == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        buf = &workspace[threadid(), 0]
        for task in prange(Ho * nchunks, schedule="static"):
            r = task // nchunks
            t0 = (task % nchunks) * chunk
            n = min(chunk, Wo - t0)
            seg = n + kw - 1
            first = t0 - pad_left          # buf[u] = x[row, first + u], zero outside
            lo = min(seg, max(0, -first))
            hi = max(lo, min(seg, W - first))
            i_lo = _first_tap(r - pad_top, 1)
            i_hi = _end_tap(r - pad_top, 1, H, kh)
            accumulate = False
            if hi > lo:
                for i0 in range((i_hi - i_lo + rows_per_pass - 1) // rows_per_pass if i_hi > i_lo else 0):
                    nr = min(rows_per_pass, i_hi - i_lo - i0 * rows_per_pass)
                    for i in range(nr):
                        memset(buf + i * row_len, 0, lo * sizeof(floating))
                        memcpy(buf + i * row_len + lo, &x[r - pad_top + i_lo + i0 * rows_per_pass + i, first + lo],
                               (hi - lo) * sizeof(floating))
                        memset(buf + i * row_len + hi, 0, (seg - hi) * sizeof(floating))
                    if floating is float:
                        fc_correlate_rows_f(buf, row_len, nr, &kernel[i_lo + i0 * rows_per_pass, 0], kw,
                                            &out[r, t0], n, accumulate)
                    else:
                        fc_correlate_rows_d(buf, row_len, nr, &kernel[i_lo + i0 * rows_per_pass, 0], kw,
                                            &out[r, t0], n, accumulate)
                    accumulate = True
            if not accumulate:             # no input under this chunk
                memset(&out[r, t0], 0, n * sizeof(floating))


# ---------------------------------------------------------------------------
# Which build this is (conv_direct_avx.pyx compiles this same source with AVX + FMA).

def compiled_for_avx_fma():
    """True when this module was compiled with AVX + FMA enabled."""
    return bool(fc_compiled_for_avx_fma())


def cpu_has_avx_fma():
    """True when the CPU and OS run AVX + FMA instructions (False off x86 or unknown)."""
    return bool(fc_cpu_has_avx_fma())


# ---------------------------------------------------------------------------
# Workspace sizes (values per thread), for the Python side to allocate.

def forward_row_len(Py_ssize_t sw, Py_ssize_t out_w, Py_ssize_t kw, Py_ssize_t dw):
    return sw * (((out_w - 1) * sw + (kw - 1) * dw + 1 + sw - 1) // sw)


def grad_x_row_len(Py_ssize_t sw, Py_ssize_t out_w, Py_ssize_t kw, Py_ssize_t dw, Py_ssize_t W, Py_ssize_t pl):
    cdef Py_ssize_t span = (out_w - 1) * sw + (kw - 1) * dw + 1
    return sw * (((span if span > W + pl else W + pl) + sw - 1) // sw)


def grad_weight_workspace(Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t row_len, bint double_precision):
    """Values per thread for conv2d_grad_weight."""
    cdef Py_ssize_t S = fc_strip_d() if double_precision else fc_strip_f()
    return FC_KB * kh * kw * S + row_len
