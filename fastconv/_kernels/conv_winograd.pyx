# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Winograd convolution (3x3, stride 1): conv2d's forward, and grad_x as one.

The C kernels are in winograd.h / winograd_impl.h (float: F(4x4, 3x3), double:
F(6x6, 3x3)); fastconv._winograd transforms the weights and sizes the workspace.
Tasks are chunks of chunk_tiles(...) consecutive output tiles of the flattened
(image, tile row, tile column) grid, run on the task pool (task_pool.h);
each runs in its slot's row of `workspace`.
"""
from cython cimport floating
from cython.parallel cimport prange
from fastconv._kernels._openmp cimport fc_openmp_adopt

from fastconv._kernels._geometry cimport check_workspace
from fastconv._kernels._tasks cimport openmp_state, run_tasks

import numpy as np

fc_openmp_adopt(openmp_state())   # one choice of runtime per process (openmp_runtime.h)

cdef extern from "winograd.h" nogil:
    int fc_compiled_isa()
    int fc_cpu_isa()
    enum: WG_MR
    enum: WG_NV
    Py_ssize_t wg_chunk_tiles_f(Py_ssize_t tw)
    Py_ssize_t wg_chunk_tiles_d(Py_ssize_t tw)
    void wg_transform_block_f(const float* w, Py_ssize_t rs, Py_ssize_t cs, int flip, Py_ssize_t Cg,
                              Py_ssize_t nr, const double* G, float* U, Py_ssize_t step)
    void wg_transform_block_d(const double* w, Py_ssize_t rs, Py_ssize_t cs, int flip, Py_ssize_t Cg,
                              Py_ssize_t nr, const double* G, double* U, Py_ssize_t step)
    Py_ssize_t wg_workspace_f(Py_ssize_t Cg, Py_ssize_t Kp)
    Py_ssize_t wg_workspace_d(Py_ssize_t Cg, Py_ssize_t Kp)
    void wg_forward_chunk_f(const float* x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, const float* U,
                            Py_ssize_t Kp, const float* bias, float* out, Py_ssize_t K, Py_ssize_t Ho,
                            Py_ssize_t Wo, Py_ssize_t groups, Py_ssize_t pt, Py_ssize_t pl,
                            Py_ssize_t first, Py_ssize_t count, Py_ssize_t kb0, Py_ssize_t kb1,
                            int transform_input, int relu, int stream, float* work)
    void wg_forward_chunk_d(const double* x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, const double* U,
                            Py_ssize_t Kp, const double* bias, double* out, Py_ssize_t K, Py_ssize_t Ho,
                            Py_ssize_t Wo, Py_ssize_t groups, Py_ssize_t pt, Py_ssize_t pl,
                            Py_ssize_t first, Py_ssize_t count, Py_ssize_t kb0, Py_ssize_t kb1,
                            int transform_input, int relu, int stream, double* work)
    float wg_fma_chains_f(Py_ssize_t iterations, float half)
    double wg_fma_chains_d(Py_ssize_t iterations, double half)


def compiled_isa():
    """The instruction set this module was compiled for: an index into fastconv._kernels.ISA_NAMES."""
    return fc_compiled_isa()


def cpu_isa():
    """The highest level of fastconv._kernels.ISA_NAMES the CPU and OS run (0 off x86 or unknown)."""
    return fc_cpu_isa()


def register_rows(bint double_precision):
    """Output channels per register tile: the transformed weights' padding unit."""
    return WG_MR


def chunk_tiles(bint double_precision, Py_ssize_t row_tiles=0):
    """Output tiles per task for rows of `row_tiles` tiles: one register tile's width (the
    most, and the default), or whole rows where two rows of tiles share a vector."""
    return wg_chunk_tiles_d(row_tiles) if double_precision else wg_chunk_tiles_f(row_tiles)


def workspace_values(Py_ssize_t Cg, Py_ssize_t Kp, bint double_precision):
    """Values of one thread's workspace for Cg input and Kp (padded) output channels per group."""
    return wg_workspace_d(Cg, Kp) if double_precision else wg_workspace_f(Cg, Kp)


cdef inline void _transform_block(const floating* w, Py_ssize_t rs, Py_ssize_t cs, int flip, Py_ssize_t Cg,
                                  Py_ssize_t nr, const double* G, floating* U, Py_ssize_t step) noexcept nogil:
    if floating is float:
        wg_transform_block_f(w, rs, cs, flip, Cg, nr, G, U, step)
    else:
        wg_transform_block_d(w, rs, cs, flip, Cg, nr, G, U, step)


cdef struct WeightJob:
    # transform_weights's arrays (as floating*, by `double_precision`) and shapes, for its tasks:
    # Kt output and Ct input channels per group of the transformed convolution, whose filter
    # (k, c) of group grp is at weight + grp * gs + k * rs + c * cs (turned 180 degrees: flip)
    const void* weight
    const double* G
    void* U
    bint double_precision, flip
    Py_ssize_t Kt, Ct, Kp, P, rs, cs, gs


cdef void _weight_task(void* job, Py_ssize_t task, int slot) noexcept nogil:
    cdef WeightJob* j = <WeightJob*>job
    if j.double_precision:
        _weight_block(j, <const double*>j.weight, <double*>j.U, task)
    else:
        _weight_block(j, <const float*>j.weight, <float*>j.U, task)


cdef inline void _weight_block(WeightJob* j, const floating* weight, floating* U, Py_ssize_t task) noexcept nogil:
    """Block task % (Kp / WG_MR) of WG_MR output channels of group task // (Kp / WG_MR): it
    writes WG_P runs of Ct * WG_MR values."""
    cdef Py_ssize_t blocks = j.Kp // WG_MR, grp = task // blocks, k = (task % blocks) * WG_MR
    _transform_block(weight + grp * j.gs + min(k, j.Kt - 1) * j.rs, j.rs, j.cs, j.flip, j.Ct,
                     min(WG_MR, max(j.Kt - k, 0)), j.G, U + (grp * j.P * j.Kp + k) * j.Ct, j.Kp * j.Ct)


def transform_weights(const floating[:, :, :, ::1] weight, const double[:, ::1] G, int groups, Py_ssize_t Kp,
                      floating[::1] U, int num_threads, bint flipped=False):
    """U = G w G^T of every filter, laid out (groups, n*n, Kp // MR, C/groups, MR) with
    each group's K/groups output channels padded with zeros to Kp (register_rows(...)
    divides it). G (n, 3): F(4x4) in float32, F(6x6) in float64. `flipped`: the filters
    of conv2d's input gradient instead, read in place: each group's transposed (C/groups
    output, K/groups input channels) and turned 180 degrees. One task per block of MR
    output channels, on the task pool (an OpenMP region would wait for threads that
    another runtime, e.g. torch's, keeps off the cores: 0.7 ms instead of 0.06 ms on C2)."""
    cdef Py_ssize_t K = weight.shape[0], Cg = weight.shape[1], n = G.shape[0], Kg = K // groups
    cdef Py_ssize_t Kt = Cg if flipped else Kg, Ct = Kg if flipped else Cg
    cdef bint dp = floating is double
    cdef WeightJob job
    if (G.shape[0] != (8 if dp else 6) or G.shape[1] != 3 or weight.shape[2] != 3
            or weight.shape[3] != 3 or Kp % WG_MR or Kp < Kt):
        raise ValueError("transform_weights needs 3x3 filters, the dtype's G (n, 3) and Kp a multiple of "
                         "register_rows")
    if U.shape[0] != groups * n * n * Kp * Ct:
        raise ValueError(f"U must have {groups * n * n * Kp * Ct} values")
    if U.shape[0] == 0:
        return
    job.weight, job.G, job.U, job.double_precision = &weight[0, 0, 0, 0], &G[0, 0], &U[0], dp
    job.Kt, job.Ct, job.Kp, job.P, job.flip = Kt, Ct, Kp, n * n, flipped
    job.rs, job.cs, job.gs = Cg * 9, 9, Kg * Cg * 9
    if flipped:
        job.rs, job.cs = 9, Cg * 9
    with nogil:
        run_tasks(_weight_task, &job, groups * (Kp // WG_MR), 1, num_threads)


cdef inline void _chunk(const floating* x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, const floating* U,
                        Py_ssize_t Kp, const floating* bias, floating* out, Py_ssize_t K, Py_ssize_t Ho,
                        Py_ssize_t Wo, Py_ssize_t groups, Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t first,
                        Py_ssize_t count, Py_ssize_t kb0, Py_ssize_t kb1, int transform_input, int relu,
                        int stream, floating* work) noexcept nogil:
    if floating is float:
        wg_forward_chunk_f(x, C, H, W, U, Kp, bias, out, K, Ho, Wo, groups, pt, pl, first, count, kb0, kb1,
                           transform_input, relu, stream, work)
    else:
        wg_forward_chunk_d(x, C, H, W, U, Kp, bias, out, K, Ho, Wo, groups, pt, pl, first, count, kb0, kb1,
                           transform_input, relu, stream, work)


cdef struct ForwardJob:
    # conv2d_forward's arrays (as floating*, by `double_precision`) and shapes, for its tasks
    const void* x
    const void* U
    const void* bias
    void* out
    void* workspace
    Py_ssize_t* done             # per slot: the chunk whose transformed input its workspace holds
    bint double_precision, relu, stream
    Py_ssize_t work_stride, C, H, W, Kp, K, Ho, Wo, groups, pt, pl, T, tiles, splits, blocks


cdef void _forward_task(void* job, Py_ssize_t task, int slot) noexcept nogil:
    cdef ForwardJob* j = <ForwardJob*>job
    if j.double_precision:
        _forward_chunk(j, <double*>j.workspace + slot * j.work_stride, task, slot)
    else:
        _forward_chunk(j, <float*>j.workspace + slot * j.work_stride, task, slot)


cdef inline void _forward_chunk(ForwardJob* j, floating* work, Py_ssize_t task, int slot) noexcept nogil:
    """Part task % splits of the output channel blocks of chunk task // splits; a slot that
    runs the next part of the chunk it has transformed (one group) skips the input transform."""
    cdef Py_ssize_t q = task // j.splits, part = task % j.splits, first = q * j.T
    _chunk(<const floating*>j.x, j.C, j.H, j.W, <const floating*>j.U, j.Kp, <const floating*>j.bias,
           <floating*>j.out, j.K, j.Ho, j.Wo, j.groups, j.pt, j.pl, first, min(j.T, j.tiles - first),
           part * j.blocks // j.splits, (part + 1) * j.blocks // j.splits, j.groups > 1 or j.done[slot] != q,
           j.relu, j.stream, work)
    j.done[slot] = q


def conv2d_forward(const floating[:, :, :, ::1] x, const floating[::1] U, Py_ssize_t Kp,
                   const floating[::1] bias, floating[:, :, :, ::1] out, int groups, Py_ssize_t pt,
                   Py_ssize_t pl, floating[:, ::1] workspace, int num_threads, Py_ssize_t splits=1,
                   bint relu=False, bint stream=False):
    """out (N, K, Ho, Wo) = the 3x3 stride-1 correlation of x (N, C, H, W) read from
    offset (-pt, -pl) (zero outside; negative: cropped) + bias (with `relu`: max(that,
    0), fused into the output transform), every element written. `stream`: the float32
    AVX-512 build writes `out`'s whole aligned cache lines past the caches, where its
    rows are whole lines (Wo a multiple of 16).
    U: fastconv._winograd.transform_weights(...) (groups * n*n * Kp * C/groups values);
    workspace (num_threads, workspace_values(C/groups, Kp, ...)). `splits`: each chunk's
    output channel blocks are shared out over that many tasks (small maps have fewer
    chunks than threads); a thread that runs the next part of the chunk it has
    transformed (one group) skips the input transform."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = out.shape[1], Ho = out.shape[2], Wo = out.shape[3]
    cdef bint dp = floating is double
    cdef Py_ssize_t m = 6 if dp else 4, n = m + 2
    cdef Py_ssize_t tw = (Wo + m - 1) // m
    cdef Py_ssize_t T = wg_chunk_tiles_d(tw) if dp else wg_chunk_tiles_f(tw)
    cdef Py_ssize_t tiles = N * ((Ho + m - 1) // m) * tw
    cdef Py_ssize_t chunks = (tiles + T - 1) // T, blocks = Kp // WG_MR
    if out.shape[0] != N or K % groups or C % groups or Kp % WG_MR or Kp < K // groups:
        raise ValueError("inconsistent shapes")
    if U.shape[0] != groups * n * n * Kp * (C // groups) or bias.shape[0] != K:
        raise ValueError(f"U must have {groups * n * n * Kp * (C // groups)} values and bias {K}")
    check_workspace("workspace", workspace.shape[0], workspace.shape[1], num_threads,
                    workspace_values(C // groups, Kp, dp))
    if splits < 1 or splits > max(blocks, 1):
        raise ValueError(f"splits must be between 1 and {max(blocks, 1)}, got {splits}")
    if tiles == 0:
        return
    cdef Py_ssize_t[::1] done = np.full(max(num_threads, 1), -1, dtype=np.intp)  # chunk in each slot's V
    cdef ForwardJob job
    job.x, job.U, job.bias, job.out = &x[0, 0, 0, 0], &U[0], &bias[0], &out[0, 0, 0, 0]
    job.workspace, job.work_stride, job.double_precision = &workspace[0, 0], workspace.shape[1], dp
    job.C, job.H, job.W, job.Kp, job.K, job.Ho, job.Wo = C, H, W, Kp, K, Ho, Wo
    job.groups, job.pt, job.pl, job.T, job.tiles = groups, pt, pl, T, tiles
    job.splits, job.blocks, job.relu, job.done = splits, blocks, relu, &done[0]
    job.stream = stream and Wo % 16 == 0
    # one part of a chunk of tiles per claim: a fraction of a millisecond, so a thread kept
    # off its core holds back little (the result does not depend on which thread runs it)
    with nogil:
        run_tasks(_forward_task, &job, chunks * splits, 1, num_threads)


def fma_step_flops(bint double_precision):
    """Floating-point operations of one step of `fma_peak`'s loop on one thread."""
    return 2 * WG_MR * WG_NV * (chunk_tiles(double_precision) // WG_NV)


def fma_peak(Py_ssize_t iterations, int num_threads, bint double_precision, double half=0.5):
    """`num_threads` threads each run `iterations` steps of independent vector FMA chains
    (fma_step_flops(...) flops a step, at this build's vector width): time it to measure
    the cores' FMA peak. `half` (1/2) comes in at run time so that the compiler cannot
    fold the chains. Returns their checksum: num_threads * accumulators once they settle."""
    cdef double total = 0
    cdef int t
    for t in prange(num_threads, nogil=True, num_threads=num_threads, schedule="static"):
        if double_precision:
            total += wg_fma_chains_d(iterations, half)
        else:
            total += wg_fma_chains_f(iterations, <float>half)
    return total
