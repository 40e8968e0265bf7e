# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Convolution as im2col + GEMM, fused per (image, band of output rows).

Each task builds the column matrix of one band of output rows in its thread's
own slice of `workspace` (sized by the caller to stay in cache), then calls
single-threaded BLAS on it, so columns are consumed while still in L2 and the
workspace is num_threads bands, whatever the batch size. A 1x1, stride-1,
unpadded convolution needs no columns: the input plane is the column matrix.

Weights are (G, K/G, C/G*kh*kw); outputs and gradients are viewed as (N, K, Ho*Wo).
"""
from cython cimport floating
from libc.stdint cimport int64_t
from cython.parallel cimport parallel, prange, threadid
from fastconv._kernels._openmp cimport fc_openmp_adopt
from scipy.linalg.cython_blas cimport dgemm, sgemm

from fastconv._kernels._columns cimport col2im_row, im2col_row
from fastconv._kernels._geometry cimport Geometry, check_shape, check_workspace, shape
from fastconv._kernels._tasks cimport openmp_state, run_tasks

fc_openmp_adopt(openmp_state())   # one choice of runtime per process (openmp_runtime.h)

import numpy as np


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
                      const floating* a, int lda, const floating* b, int ldb, floating beta,
                      floating* c, int ldc) noexcept nogil:
    """Row-major C (m x n) = alpha op(A) op(B) + beta C, through column-major BLAS
    (C^T = op(B)^T op(A)^T: swap the operands, keep the flags)."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda, &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda, &beta, c, &ldc)


cdef inline bint is_pointwise(Geometry g) noexcept nogil:
    return g.kh == 1 and g.kw == 1 and g.sh == 1 and g.sw == 1 and g.pt == 0 and g.pl == 0


cdef inline void fill_columns(const floating* image, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                              Geometry g, Py_ssize_t r0, Py_ssize_t rows, floating* cols) noexcept nogil:
    cdef Py_ssize_t c, tap, kk = g.kh * g.kw, ld = rows * g.out_w
    for c in range(C):
        for tap in range(kk):
            im2col_row(image + c * H * W, H, W, g, tap // g.kw, tap % g.kw, r0, rows,
                       cols + (c * kk + tap) * ld)


cdef int check_arrays(const floating[:, :, :, ::1] x, const floating[:, :, ::1] weight,
                      Py_ssize_t out_channels, Py_ssize_t out_values, floating[:, ::1] workspace, Geometry g,
                      Py_ssize_t band_rows, int num_threads) except -1:
    """ValueError unless the weights, output (`out_values` per channel) and workspace fit x and g."""
    cdef Py_ssize_t C = x.shape[1], G = weight.shape[0]
    if G < 1 or C % G or weight.shape[2] != C // G * g.kh * g.kw:
        raise ValueError(f"weight must be (groups, K/groups, C/groups*kh*kw) with groups dividing C={C}, "
                         f"got {shape(weight.shape, 3)}")
    check_shape("output", (out_channels, out_values), (G * weight.shape[1], g.out_h * g.out_w))
    if band_rows < 1:
        raise ValueError(f"band_rows must be at least 1, got {band_rows}")
    if is_pointwise(g):     # the input plane is the column matrix
        check_shape("x's plane", shape(&x.shape[2], 2), (g.out_h, g.out_w))
    check_workspace("workspace", workspace.shape[0], workspace.shape[1], num_threads,
                    0 if is_pointwise(g) else C * g.kh * g.kw * band_rows * g.out_w)
    return 0


cdef struct ForwardJob:
    # conv2d_forward's arrays (as floating*, by `double_precision`) and shapes, for its tasks
    const void* x
    const void* weight
    void* out
    void* workspace
    bint double_precision
    Geometry g
    Py_ssize_t C, H, W, G, Kg, CKg, L, band_rows, n_bands, work_stride


cdef void _forward_task(void* job, Py_ssize_t task, int slot) noexcept nogil:
    cdef ForwardJob* j = <ForwardJob*>job
    if j.double_precision:
        _forward_band(j, <double*>j.workspace + slot * j.work_stride, task)
    else:
        _forward_band(j, <float*>j.workspace + slot * j.work_stride, task)


cdef inline void _forward_band(ForwardJob* j, floating* cols, Py_ssize_t task) noexcept nogil:
    """Task `task` of conv2d_forward: one band of output rows of one image, every channel."""
    cdef const floating* image = <const floating*>j.x + (task // j.n_bands) * j.C * j.H * j.W
    cdef const floating* weight = <const floating*>j.weight
    cdef floating* out = <floating*>j.out + (task // j.n_bands) * j.G * j.Kg * j.L
    cdef Py_ssize_t r0 = (task % j.n_bands) * j.band_rows, rows = min(j.band_rows, j.g.out_h - r0)
    cdef Py_ssize_t ld, grp
    cdef const floating* b
    if is_pointwise(j.g):       # the input plane is the column matrix
        b, ld = image + r0 * j.g.out_w, j.L
    else:
        fill_columns(image, j.C, j.H, j.W, j.g, r0, rows, cols)
        b, ld = cols, rows * j.g.out_w
    for grp in range(j.G):
        gemm(False, False, j.Kg, rows * j.g.out_w, j.CKg, 1, weight + grp * j.Kg * j.CKg, j.CKg,
             b + grp * j.CKg * ld, ld, 0, out + grp * j.Kg * j.L + r0 * j.g.out_w, j.L)


def conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, ::1] weight,
                   floating[:, :, ::1] out, floating[:, ::1] workspace, Geometry g,
                   Py_ssize_t band_rows, int num_threads):
    """out (N, K, Ho*Wo) = conv(x, weight). workspace: (num_threads, C*kh*kw*band_rows*out_w).
    Tasks (image, band of output rows) run on the task pool (task_pool.h)."""
    cdef Py_ssize_t N = x.shape[0]
    check_arrays(x, weight, out.shape[1], out.shape[2], workspace, g, band_rows, num_threads)
    check_shape("out", (out.shape[0],), (N,))
    if N == 0 or out.shape[2] == 0:
        return
    cdef ForwardJob job
    job.x, job.weight, job.out, job.workspace = &x[0, 0, 0, 0], &weight[0, 0, 0], &out[0, 0, 0], &workspace[0, 0]
    job.double_precision, job.g, job.work_stride = floating is double, g, workspace.shape[1]
    job.C, job.H, job.W = x.shape[1], x.shape[2], x.shape[3]
    job.G, job.Kg, job.CKg, job.L = weight.shape[0], weight.shape[1], weight.shape[2], out.shape[2]
    job.band_rows, job.n_bands = band_rows, (g.out_h + band_rows - 1) // band_rows
    with nogil:
        run_tasks(_forward_task, &job, N * job.n_bands, max(1, N * job.n_bands // (4 * num_threads)), num_threads)


cdef inline void backward_band(const floating* image, const floating* weight, const floating* gout,
                               floating* grad_image, floating* grad_w, floating* cols,
                               Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t G, Py_ssize_t Kg,
                               Py_ssize_t CKg, Py_ssize_t L, Geometry g, Py_ssize_t r0,
                               Py_ssize_t rows, bint with_grad_x) noexcept nogil:
    """One band: grad_w += gout_band @ cols^T (unless grad_w is NULL: the input gradient
    alone, and `image` is not read), then (with_grad_x) grad_image += col2im(weight^T @ gout_band)."""
    cdef Py_ssize_t grp, c, tap, kk = g.kh * g.kw, ld = rows * g.out_w
    cdef const floating* go = gout + r0 * g.out_w
    if is_pointwise(g):
        for grp in range(G):
            if grad_w != NULL:
                gemm(False, True, Kg, CKg, ld, 1, go + grp * Kg * L, L, image + grp * CKg * L + r0 * g.out_w, L,
                     1, grad_w + grp * Kg * CKg, CKg)
            if with_grad_x:
                gemm(True, False, CKg, ld, Kg, 1, weight + grp * Kg * CKg, CKg, go + grp * Kg * L, L,
                     1, grad_image + grp * CKg * L + r0 * g.out_w, L)
        return
    if grad_w != NULL:
        fill_columns(image, C, H, W, g, r0, rows, cols)
    for grp in range(G):
        if grad_w != NULL:
            gemm(False, True, Kg, CKg, ld, 1, go + grp * Kg * L, L, cols + grp * CKg * ld, ld,
                 1, grad_w + grp * Kg * CKg, CKg)
        if with_grad_x:
            gemm(True, False, CKg, ld, Kg, 1, weight + grp * Kg * CKg, CKg, go + grp * Kg * L, L,
                 0, cols + grp * CKg * ld, ld)
    if not with_grad_x:
        return
    for c in range(C):
        for tap in range(kk):
            col2im_row(cols + (c * kk + tap) * ld, H, W, g, tap // g.kw, tap % g.kw, r0, rows,
                       grad_image + c * H * W)


cdef void backward_bands(const floating* x, const floating* weight, const floating* grad_out,
                         floating* grad_x, floating* grad_w_parts, floating* workspace,
                         Py_ssize_t work_stride, Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                         Py_ssize_t G, Py_ssize_t Kg, Py_ssize_t CKg, Py_ssize_t L, Geometry g,
                         Py_ssize_t band_rows, int num_threads, bint with_grad_x) noexcept nogil:
    """backward_band over every band of every image: even bands in parallel, then odd
    ones. grad_w_parts: a part of G * Kg * CKg per thread, or NULL (no weight gradient)."""
    cdef Py_ssize_t n_bands = (g.out_h + band_rows - 1) // band_rows
    cdef Py_ssize_t parity, per_image, task, n, r0
    # set in the region; initialised for their firstprivate copies
    cdef Py_ssize_t tid = 0
    cdef floating* part = NULL
    cdef const floating* image = NULL
    for parity in range(2):
        per_image = (n_bands - parity + 1) // 2
        with parallel(num_threads=num_threads):
            tid = threadid()
            part = NULL
            if grad_w_parts != NULL:
                part = grad_w_parts + tid * G * Kg * CKg
            for task in prange(N * per_image, schedule="static"):
                n = task // per_image
                r0 = (2 * (task % per_image) + parity) * band_rows
                image = NULL
                if x != NULL:
                    image = x + n * C * H * W
                backward_band(image, weight, grad_out + n * G * Kg * L, grad_x + n * C * H * W, part,
                              workspace + tid * work_stride, C, H, W, G, Kg, CKg, L, g, r0,
                              min(band_rows, g.out_h - r0), with_grad_x)


cdef int check_bands(Py_ssize_t band_rows, Geometry g) except -1:
    # bands two apart must not scatter into the same input rows
    if g.out_h > band_rows and band_rows * g.sh < g.dh * (g.kh - 1) + 1 - g.sh:
        raise ValueError(f"band_rows must be at least {-(-(g.dh * (g.kh - 1) + 1 - g.sh) // g.sh)}, got {band_rows}")
    return 0


def conv2d_backward(const floating[:, :, :, ::1] x, const floating[:, :, ::1] weight,
                    const floating[:, :, ::1] grad_out, floating[:, :, :, ::1] grad_x,
                    floating[:, :, :, ::1] grad_w_parts, floating[:, ::1] workspace, Geometry g,
                    Py_ssize_t band_rows, int num_threads, bint with_grad_x=True):
    """grad_x (zero on entry; untouched without `with_grad_x`, as for grad_weight alone) and
    grad_w_parts (num_threads, G, K/G, C/G*kh*kw; zero on
    entry, summed by the caller) from grad_out (N, K, Ho*Wo).

    Bands of one image overlap in the input rows they scatter into; with at
    least (span - stride) / stride rows per band (the caller's job), bands two
    apart never do, so even bands run in parallel first, then odd ones.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t G = weight.shape[0], Kg = weight.shape[1], CKg = weight.shape[2]
    cdef Py_ssize_t L = grad_out.shape[2]
    check_arrays(x, weight, grad_out.shape[1], L, workspace, g, band_rows, num_threads)
    check_shape("grad_out", (grad_out.shape[0],), (N,))
    if with_grad_x:
        check_shape("grad_x", shape(grad_x.shape, 4), shape(x.shape, 4))
    check_shape("grad_w_parts", shape(&grad_w_parts.shape[1], 3), (G, Kg, CKg))
    if grad_w_parts.shape[0] < num_threads:
        raise ValueError(f"grad_w_parts must have a part for each of {num_threads} threads, "
                         f"got {grad_w_parts.shape[0]}")
    check_bands(band_rows, g)
    if N == 0 or L == 0:
        return
    with nogil:
        backward_bands(&x[0, 0, 0, 0], &weight[0, 0, 0], &grad_out[0, 0, 0], &grad_x[0, 0, 0, 0],
                       &grad_w_parts[0, 0, 0, 0], &workspace[0, 0], workspace.shape[1], N, C, H, W, G, Kg, CKg,
                       L, g, band_rows, num_threads, with_grad_x)


def conv2d_grad_x(const floating[:, :, ::1] weight, const floating[:, :, ::1] grad_out,
                  floating[:, :, :, ::1] grad_x, floating[:, ::1] workspace, Geometry g,
                  Py_ssize_t band_rows, int num_threads):
    """grad_x (N, C, H, W; zero on entry) alone from grad_out (N, K, Ho*Wo): each band's
    weight^T @ grad_out_band summed in by col2im, as conv2d_backward's, with no weight
    gradient (conv_transpose2d's forward). workspace: as conv2d_forward's."""
    cdef Py_ssize_t N = grad_x.shape[0], C = grad_x.shape[1], H = grad_x.shape[2], W = grad_x.shape[3]
    cdef Py_ssize_t G = weight.shape[0], Kg = weight.shape[1], CKg = weight.shape[2]
    cdef Py_ssize_t L = grad_out.shape[2]
    check_arrays(grad_x, weight, grad_out.shape[1], L, workspace, g, band_rows, num_threads)
    check_shape("grad_out", (grad_out.shape[0],), (N,))
    check_bands(band_rows, g)
    if N == 0 or L == 0:
        return
    with nogil:
        backward_bands(NULL, &weight[0, 0, 0], &grad_out[0, 0, 0], &grad_x[0, 0, 0, 0], NULL, &workspace[0, 0],
                       workspace.shape[1], N, C, H, W, G, Kg, CKg, L, g, band_rows, num_threads, True)


cdef struct GroupsJob:
    # matmul_groups's operands (as floating*, by `double_precision`), its table and tasks
    const void* a
    const void* b
    void* c
    bint double_precision, trans_a, trans_b
    double beta
    const int64_t* table    # per group: m, n, k, a_offset, lda, b_offset, ldb, c_offset, ldc
    const int64_t* tasks    # per task: group, by rows, first row (column), rows (columns)


cdef void _groups_task(void* job, Py_ssize_t task, int slot) noexcept nogil:
    cdef GroupsJob* j = <GroupsJob*>job
    if j.double_precision:
        _group_part(j, <double*>j.c, task)
    else:
        _group_part(j, <float*>j.c, task)


cdef inline void _group_part(GroupsJob* j, floating* c, Py_ssize_t task) noexcept nogil:
    """Rows (or columns) [first, + size) of one group's product."""
    cdef const int64_t* t = j.tasks + 4 * task
    cdef const int64_t* g = j.table + 9 * t[0]
    cdef int m = <int>g[0], n = <int>g[1], k = <int>g[2], lda = <int>g[4], ldb = <int>g[6], ldc = <int>g[8]
    cdef int i0 = <int>t[2], size = <int>t[3]
    cdef const floating* a = <const floating*>j.a + g[3]
    cdef const floating* b = <const floating*>j.b + g[5]
    c += g[7]
    if t[1]:
        a += i0 if j.trans_a else <Py_ssize_t>i0 * lda
        gemm(j.trans_a, j.trans_b, size, n, k, 1, a, lda, b, ldb, <floating>j.beta, c + <Py_ssize_t>i0 * ldc, ldc)
    else:
        b += <Py_ssize_t>i0 * ldb if j.trans_b else i0
        gemm(j.trans_a, j.trans_b, m, size, k, 1, a, lda, b, ldb, <floating>j.beta, c + i0, ldc)


def _extent(name, int64_t offset, int64_t rows, int64_t cols, int64_t ld, Py_ssize_t size):
    if offset < 0 or ld < cols or offset + (rows - 1) * ld + cols > size:
        raise ValueError(f"{name}: a {rows} x {cols} matrix at offset {offset}, rows {ld} apart, does not "
                         f"fit in {size} values")


def matmul_groups(const floating[::1] a, const floating[::1] b, floating[::1] c, const int64_t[:, ::1] table,
                  bint trans_a=False, bint trans_b=False, double beta=0, int num_threads=1):
    """Several row-major GEMMs as one job on the task pool: for each row (m, n, k,
    a_offset, lda, b_offset, ldb, c_offset, ldc) of `table`, C (m x n) = op(A) op(B) +
    beta C, with A at a[a_offset:] (rows lda apart; k x m where trans_a), B at
    b[b_offset:] (rows ldb apart; n x k where trans_b) and C at c[c_offset:] (rows ldc
    apart). Each group is one single-threaded BLAS call, run whole where there are at
    least four a thread, else in chunks of its longer side; the tasks run largest
    first, so that the threads finish together (im2col's taps: one GEMM per kernel tap,
    of different heights). Groups must not write to the same values of c, nor c
    overlap a or b. All dimensions from 1 to 2**31 - 1."""
    if table.shape[1] != 9:
        raise ValueError(f"table must have 9 columns, got shape {tuple(table.shape)}")
    cdef Py_ssize_t G = table.shape[0], i
    cdef int64_t m, n, k
    for i in range(G):
        m, n, k = table[i, 0], table[i, 1], table[i, 2]
        if min(m, n, k) < 1 or max(m, n, k, table[i, 4], table[i, 6], table[i, 8]) >= 2**31:
            raise ValueError(f"matmul_groups needs dimensions from 1 to 2**31 - 1, got m={m}, n={n}, k={k} "
                             f"(group {i})")
        _extent(f"a of group {i}", table[i, 3], k if trans_a else m, m if trans_a else k, table[i, 4], a.shape[0])
        _extent(f"b of group {i}", table[i, 5], n if trans_b else k, k if trans_b else n, table[i, 6], b.shape[0])
        _extent(f"c of group {i}", table[i, 7], m, n, table[i, 8], c.shape[0])
    if G == 0:
        return
    num_threads = max(1, num_threads)
    t = np.asarray(table)
    by_rows = t[:, 0] > t[:, 1]
    side = np.where(by_rows, t[:, 0], t[:, 1])
    pieces = 1 if num_threads == 1 or G >= 4 * num_threads else -(-4 * num_threads // G)
    step = np.maximum(64, (-(-side // pieces) + 15) // 16 * 16) if pieces > 1 else side
    parts = []
    for i in range(G):
        for first in range(0, side[i], step[i]):
            size = min(step[i], side[i] - first)
            parts.append((i, by_rows[i], first, size, size * t[i, 2] * (t[i, 1] if by_rows[i] else t[i, 0])))
    parts.sort(key=lambda p: -p[4])
    tasks = np.ascontiguousarray(np.array(parts, dtype=np.int64)[:, :4])
    cdef const int64_t[:, ::1] task_view = tasks
    cdef GroupsJob job
    job.a, job.b, job.c = &a[0], &b[0], &c[0]
    job.double_precision, job.trans_a, job.trans_b, job.beta = floating is double, trans_a, trans_b, beta
    job.table, job.tasks = &table[0, 0], &task_view[0, 0]
    with nogil:
        run_tasks(_groups_task, &job, task_view.shape[0], 1, num_threads)


cdef struct SwapJob:
    # swap_last_axes's arrays (as floating*, by `double_precision`) and shapes
    const void* src
    void* dst
    bint double_precision
    Py_ssize_t rows, cols, per_task, count   # (I, J) of each matrix, matrices per task, K


cdef void _swap_task(void* job, Py_ssize_t task, int slot) noexcept nogil:
    cdef SwapJob* j = <SwapJob*>job
    if j.double_precision:
        _swap_matrices(j, <double*>j.dst, task)
    else:
        _swap_matrices(j, <float*>j.dst, task)


cdef extern from *:
    """
    /* dst (J x I) = src (I x J)^T, float: 4x4 blocks transposed in SSE registers (the
     * x86-64 baseline), the rest one value at a time. Elsewhere, one value at a time. */
    #if defined(__SSE2__) || defined(_M_X64)
    #include <xmmintrin.h>
    static void fc_transpose_float(const float *src, float *dst, Py_ssize_t I, Py_ssize_t J) {
        Py_ssize_t i, j, k;
        for (i = 0; i + 4 <= I; i += 4) {
            for (j = 0; j + 4 <= J; j += 4) {
                __m128 r0 = _mm_loadu_ps(src + i * J + j), r1 = _mm_loadu_ps(src + (i + 1) * J + j);
                __m128 r2 = _mm_loadu_ps(src + (i + 2) * J + j), r3 = _mm_loadu_ps(src + (i + 3) * J + j);
                _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
                _mm_storeu_ps(dst + j * I + i, r0);
                _mm_storeu_ps(dst + (j + 1) * I + i, r1);
                _mm_storeu_ps(dst + (j + 2) * I + i, r2);
                _mm_storeu_ps(dst + (j + 3) * I + i, r3);
            }
            for (; j < J; j++)
                for (k = 0; k < 4; k++) dst[j * I + i + k] = src[(i + k) * J + j];
        }
        for (; i < I; i++)
            for (j = 0; j < J; j++) dst[j * I + i] = src[i * J + j];
    }
    #else
    static void fc_transpose_float(const float *src, float *dst, Py_ssize_t I, Py_ssize_t J) {
        Py_ssize_t i, j;
        for (i = 0; i < I; i++)
            for (j = 0; j < J; j++) dst[j * I + i] = src[i * J + j];
    }
    #endif
    """
    void fc_transpose_float(const float* src, float* dst, Py_ssize_t I, Py_ssize_t J) noexcept nogil


cdef inline void _swap_matrices(SwapJob* job, floating* dst, Py_ssize_t task) noexcept nogil:
    """Matrices [task * per_task, + per_task) of swap_last_axes."""
    cdef Py_ssize_t I = job.rows, J = job.cols, k, i, j, i0, n
    cdef const floating* s
    cdef floating* d
    for k in range(task * job.per_task, min((task + 1) * job.per_task, job.count)):
        if floating is float:
            fc_transpose_float(<const float*>job.src + k * I * J, dst + k * I * J, I, J)
        else:
            # blocks of 64 i: each j writes a run of 64 values, from src rows still in L1
            for i0 in range(0, I, 64):
                n = min(64, I - i0)
                for j in range(J):
                    s = <const floating*>job.src + (k * I + i0) * J + j
                    d = dst + (k * J + j) * I + i0
                    for i in range(n):
                        d[i] = s[i * J]


def swap_last_axes(const floating[:, :, ::1] src, floating[:, :, ::1] dst, int num_threads=1):
    """dst[k, j, i] = src[k, i, j]: each of src's (I, J) matrices transposed (weights
    between (K, C, kh*kw) and the taps' (K, kh*kw, C)), chunks of k on the task pool."""
    cdef Py_ssize_t K = src.shape[0], I = src.shape[1], J = src.shape[2]
    check_shape("dst", shape(dst.shape, 3), (K, J, I))
    if K == 0 or I == 0 or J == 0:
        return
    cdef SwapJob job
    job.src, job.dst = &src[0, 0, 0], &dst[0, 0, 0]
    job.double_precision = floating is double
    job.rows, job.cols, job.count = I, J, K
    num_threads = max(1, num_threads)
    # a few chunks per thread (a thread held off its core costs one chunk)
    job.per_task = max(1, (K + 4 * num_threads - 1) // (4 * num_threads))
    with nogil:
        run_tasks(_swap_task, &job, (K + job.per_task - 1) // job.per_task, 1, num_threads)
