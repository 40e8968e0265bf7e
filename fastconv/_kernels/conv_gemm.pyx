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
from cython.parallel cimport parallel, prange, threadid
from fastconv._kernels._openmp cimport fc_openmp_adopt
from scipy.linalg.cython_blas cimport dgemm, sgemm

from fastconv._kernels._columns cimport col2im_row, im2col_row
from fastconv._kernels._geometry cimport Geometry, check_shape, check_workspace, shape
from fastconv._kernels._tasks cimport openmp_state, run_tasks

fc_openmp_adopt(openmp_state())   # one choice of runtime per process (openmp_runtime.h)


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
    """One band: grad_w += gout_band @ cols^T, then (with_grad_x) grad_image += col2im(weight^T @ gout_band)."""
    cdef Py_ssize_t grp, c, tap, kk = g.kh * g.kw, ld = rows * g.out_w
    cdef const floating* go = gout + r0 * g.out_w
    if is_pointwise(g):
        for grp in range(G):
            gemm(False, True, Kg, CKg, ld, 1, go + grp * Kg * L, L, image + grp * CKg * L + r0 * g.out_w, L,
                 1, grad_w + grp * Kg * CKg, CKg)
            if with_grad_x:
                gemm(True, False, CKg, ld, Kg, 1, weight + grp * Kg * CKg, CKg, go + grp * Kg * L, L,
                     1, grad_image + grp * CKg * L + r0 * g.out_w, L)
        return
    fill_columns(image, C, H, W, g, r0, rows, cols)
    for grp in range(G):
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
    cdef Py_ssize_t L = grad_out.shape[2], out_h = g.out_h
    check_arrays(x, weight, grad_out.shape[1], L, workspace, g, band_rows, num_threads)
    check_shape("grad_out", (grad_out.shape[0],), (N,))
    if with_grad_x:
        check_shape("grad_x", shape(grad_x.shape, 4), shape(x.shape, 4))
    check_shape("grad_w_parts", shape(&grad_w_parts.shape[1], 3), (G, Kg, CKg))
    if grad_w_parts.shape[0] < num_threads:
        raise ValueError(f"grad_w_parts must have a part for each of {num_threads} threads, "
                         f"got {grad_w_parts.shape[0]}")
    # bands two apart must not scatter into the same input rows
    if out_h > band_rows and band_rows * g.sh < g.dh * (g.kh - 1) + 1 - g.sh:
        raise ValueError(f"band_rows must be at least {-(-(g.dh * (g.kh - 1) + 1 - g.sh) // g.sh)}, got {band_rows}")
    cdef Py_ssize_t n_bands = (out_h + band_rows - 1) // band_rows
    cdef Py_ssize_t parity, per_image, task, n, r0, tid
    if N == 0 or L == 0:
        return
    for parity in range(2):
        per_image = (n_bands - parity + 1) // 2
        with nogil, parallel(num_threads=num_threads):
            tid = threadid()
            for task in prange(N * per_image, schedule="static"):
                n = task // per_image
                r0 = (2 * (task % per_image) + parity) * band_rows
                backward_band(&x[n, 0, 0, 0], &weight[0, 0, 0], &grad_out[n, 0, 0], &grad_x[n, 0, 0, 0],
                              &grad_w_parts[tid, 0, 0, 0], &workspace[tid, 0], C, H, W, G, Kg, CKg, L, g,
                              r0, min(band_rows, out_h - r0), with_grad_x)


cdef struct MatmulJob:
    # matmul's operands (as floating*, by `double_precision`), shapes and column chunk
    const void* a
    const void* b
    void* c
    bint double_precision, trans_a, trans_b, by_rows
    int m, n, k, lda, ldb, ldc, cols
    double beta


cdef void _matmul_task(void* job, Py_ssize_t task, int slot) noexcept nogil:
    cdef MatmulJob* j = <MatmulJob*>job
    if j.double_precision:
        _matmul_columns(j, <double*>j.c, task)
    else:
        _matmul_columns(j, <float*>j.c, task)


cdef inline void _matmul_columns(MatmulJob* j, floating* c, Py_ssize_t task) noexcept nogil:
    """Columns (or, by_rows, rows) [task * cols, + cols) of C = op(A) op(B) + beta C."""
    cdef int i0 = <int>task * j.cols
    cdef int size = min(j.cols, (j.m if j.by_rows else j.n) - i0)
    cdef const floating* a = <const floating*>j.a
    cdef const floating* b = <const floating*>j.b
    if j.by_rows:
        a += i0 if j.trans_a else <Py_ssize_t>i0 * j.lda
        gemm(j.trans_a, j.trans_b, size, j.n, j.k, 1, a, j.lda, b, j.ldb, <floating>j.beta,
             c + <Py_ssize_t>i0 * j.ldc, j.ldc)
    else:
        b += <Py_ssize_t>i0 * j.ldb if j.trans_b else i0
        gemm(j.trans_a, j.trans_b, j.m, size, j.k, 1, a, j.lda, b, j.ldb, <floating>j.beta, c + i0, j.ldc)


def matmul(const floating[:, :] a, const floating[:, :] b, floating[:, :] c, bint trans_a=False,
           bint trans_b=False, double beta=0, int num_threads=1, by_rows=None):
    """c (m, n) = op(a) @ op(b) + beta * c, row-major (rows may be strided, as a view of
    every tap's weights in (K, kh*kw, C)), op transposing where asked: one
    single-threaded BLAS GEMM per chunk of c's rows or columns (the longer side), the
    chunks run on the task pool
    (the kernels' BLAS stays at one thread, fastconv._threads). All dimensions must be
    at least 1 and below 2**31; c must not overlap a or b. `by_rows` True/False forces the
    split (tests, timings)."""
    cdef Py_ssize_t m = a.shape[1] if trans_a else a.shape[0]
    cdef Py_ssize_t k = a.shape[0] if trans_a else a.shape[1]
    cdef Py_ssize_t n = b.shape[0] if trans_b else b.shape[1]
    check_shape("b", (b.shape[1] if trans_b else b.shape[0],), (k,))
    check_shape("c", shape(c.shape, 2), (m, n))
    if min(m, n, k) < 1 or max(m, n, k, a.strides[0], b.strides[0], c.strides[0]) >= 2**31:
        raise ValueError(f"matmul needs dimensions from 1 to 2**31 - 1, got m={m}, n={n}, k={k}")
    for name, view in (("a", a), ("b", b), ("c", c)):
        if (view.strides[1] != view.itemsize or view.strides[0] < view.shape[1] * view.itemsize
                or view.strides[0] % view.itemsize):
            raise ValueError(f"{name} must have contiguous rows that do not overlap, got strides {view.strides}")
    cdef MatmulJob job
    job.a, job.b, job.c = &a[0, 0], &b[0, 0], &c[0, 0]
    job.double_precision, job.trans_a, job.trans_b = floating is double, trans_a, trans_b
    job.m, job.n, job.k, job.beta = m, n, k, beta
    job.lda, job.ldb, job.ldc = (max(1, a.strides[0] // sizeof(floating)), max(1, b.strides[0] // sizeof(floating)),
                                 max(1, c.strides[0] // sizeof(floating)))
    # chunks of the longer side of c, a few per thread (a thread held off its core costs
    # one chunk), each a whole number of 64-byte lines and wide enough for BLAS's blocking
    job.by_rows = m > n if by_rows is None else bool(by_rows)
    cdef Py_ssize_t side = m if job.by_rows else n
    num_threads = max(1, num_threads)
    cdef Py_ssize_t per_chunk = (side + 2 * num_threads - 1) // (2 * num_threads)
    job.cols = <int>(max(64, (per_chunk + 15) // 16 * 16) if num_threads > 1 else side)
    cdef Py_ssize_t tasks = (side + job.cols - 1) // job.cols
    with nogil:
        run_tasks(_matmul_task, &job, tasks, 1, num_threads)


def swap_last_axes(const floating[:, :, ::1] src, floating[:, :, ::1] dst, int num_threads=1):
    """dst[k, j, i] = src[k, i, j]: each of src's (I, J) matrices transposed (weights
    between (K, C, kh*kw) and the taps' (K, kh*kw, C)), in parallel over k."""
    cdef Py_ssize_t K = src.shape[0], I = src.shape[1], J = src.shape[2], k, i, j, i0, i1
    check_shape("dst", shape(dst.shape, 3), (K, J, I))
    with nogil:
        # blocks of 64 i: each j writes a run of 64 values, from src rows still in L1
        for k in prange(K, num_threads=num_threads, schedule="static"):
            for i0 in range(0, I, 64):
                i1 = min(i0 + 64, I)
                for j in range(J):
                    for i in range(i0, i1):
                        dst[k, j, i] = src[k, i, j]
