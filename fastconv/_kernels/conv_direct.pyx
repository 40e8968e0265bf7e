# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Direct 2-D convolution (cross-correlation): forward, grad_x, grad_weight,
and the one-channel correlation behind fastconv.convolve / convolve2d.

No column matrix: every output value is summed straight from the input.

The forward pass (also grad_x at stride 1, as a forward convolution) copies the
input under a band of output rows into per-thread planes, zero-padded and split
by stride phase, so that each tap is a fixed offset from the output pixel; the
tiles of conv_direct_rows.h then keep their sums in registers over all C*kh*kw
taps: pixel tiles FC_MR channels x FC_TV vectors of pixels, channel tiles FC_CP
pixels x FC_CV vectors of channels (see "forward" below).

grad_x at other strides runs its stride phases as the output channels of one
forward convolution (conv2d_forward_shuffle). grad_weight runs on the register
tiles of conv_direct_grad.h over the forward's planes (conv2d_grad_weight_tiles);
with one input channel per group (depthwise) it dots each output channel's
grad_output with the forward's planes of its input channel, tap by tap.
Where the planes would be too large, grad_x and grad_weight work row by row on a few input rows,
zero-padded and split by stride phase, so that

    padded row u = iw + pad_left  is stored at  row[(u % sw) * M + u // sw]

and the input under output pixel ow, tap j is `row[(j*dw % sw) * M + j*dw // sw + ow]`:
contiguous in ow whatever the stride, with no bounds tests in the hot loop;
their row kernels are register-blocked over KB channels x a strip of pixels.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from fastconv._kernels._openmp cimport fc_openmp_adopt
from libc.string cimport memcpy, memset

import numpy as np

from fastconv._kernels._geometry cimport Geometry, check_groups, check_shape, check_workspace, shape
from fastconv._kernels._tasks cimport openmp_state, run_tasks

fc_openmp_adopt(openmp_state())   # one choice of runtime per process (openmp_runtime.h)

cdef extern from "conv_direct_rows.h" nogil:
    ctypedef struct fc_prefetch:
        const char* row
        Py_ssize_t col, row_lines, stride, count, per_block
    enum: FC_KB
    enum: FC_MR
    enum: FC_TV
    int fc_compiled_isa()
    int fc_cpu_isa()
    Py_ssize_t fc_strip_f()
    Py_ssize_t fc_strip_d()
    Py_ssize_t fc_tile_width_f()
    Py_ssize_t fc_tile_width_d()
    void fc_tiles_f(const float* src, const Py_ssize_t* off, Py_ssize_t taps, const float* a, Py_ssize_t lda,
                    const float* bias, float* out, Py_ssize_t out_k, int mr, Py_ssize_t rows, Py_ssize_t Wq,
                    Py_ssize_t Wo, int relu, fc_prefetch* pf)
    void fc_tiles_d(const double* src, const Py_ssize_t* off, Py_ssize_t taps, const double* a, Py_ssize_t lda,
                    const double* bias, double* out, Py_ssize_t out_k, int mr, Py_ssize_t rows, Py_ssize_t Wq,
                    Py_ssize_t Wo, int relu, fc_prefetch* pf)
    Py_ssize_t fc_channel_block_f()
    Py_ssize_t fc_channel_block_d()
    void fc_dw3_block_f(const float* src, Py_ssize_t Wq, const float* w, float bias, float* out, Py_ssize_t rows,
                        Py_ssize_t Wo, int relu)
    void fc_dw3_block_d(const double* src, Py_ssize_t Wq, const double* w, double bias, double* out, Py_ssize_t rows,
                        Py_ssize_t Wo, int relu)
    void fc_channel_tiles_f(const float* src, const Py_ssize_t* off, Py_ssize_t taps, const float* w,
                            const float* bias, float* out, Py_ssize_t out_k, Py_ssize_t rows, Py_ssize_t Wq,
                            Py_ssize_t Wo, int relu, fc_prefetch* pf)
    void fc_channel_tiles_d(const double* src, const Py_ssize_t* off, Py_ssize_t taps, const double* w,
                            const double* bias, double* out, Py_ssize_t out_k, Py_ssize_t rows, Py_ssize_t Wq,
                            Py_ssize_t Wo, int relu, fc_prefetch* pf)
    void fc_grad_x_row_f(const float* go, Py_ssize_t go_k, const float* w, Py_ssize_t w_k, Py_ssize_t w_c,
                         Py_ssize_t Kg, float* dst, Py_ssize_t dst_c, Py_ssize_t Wo, int nc)
    void fc_grad_x_row_d(const double* go, Py_ssize_t go_k, const double* w, Py_ssize_t w_k, Py_ssize_t w_c,
                         Py_ssize_t Kg, double* dst, Py_ssize_t dst_c, Py_ssize_t Wo, int nc)
    void fc_grad_w_row_f(float* part, Py_ssize_t part_k, const float* go, Py_ssize_t go_k,
                         const float* row, Py_ssize_t Wo, int nk)
    void fc_grad_w_row_d(double* part, Py_ssize_t part_k, const double* go, Py_ssize_t go_k,
                         const double* row, Py_ssize_t Wo, int nk)
    void fc_grad_w_taps_f(const float* go, Py_ssize_t n, const float* src, const Py_ssize_t* off,
                          Py_ssize_t taps, float* gw)
    void fc_grad_w_taps_d(const double* go, Py_ssize_t n, const double* src, const Py_ssize_t* off,
                          Py_ssize_t taps, double* gw)
    void fc_split_f(const float* src, Py_ssize_t W, float* dst, Py_ssize_t ds, Py_ssize_t M,
                    Py_ssize_t sw, Py_ssize_t pl)
    void fc_split_d(const double* src, Py_ssize_t W, double* dst, Py_ssize_t ds, Py_ssize_t M,
                    Py_ssize_t sw, Py_ssize_t pl)
    void fc_correlate_rows_f(const float* rows, Py_ssize_t row_len, Py_ssize_t nrows, const float* k,
                             Py_ssize_t kw, float* y, Py_ssize_t n, int accumulate)
    void fc_correlate_rows_d(const double* rows, Py_ssize_t row_len, Py_ssize_t nrows, const double* k,
                             Py_ssize_t kw, double* y, Py_ssize_t n, int accumulate)
    void fc_correlate_lanes_f(const float* x, Py_ssize_t W, Py_ssize_t first, const float* k, Py_ssize_t kw,
                              float* y, Py_ssize_t n, Py_ssize_t M, float* work)
    void fc_correlate_lanes_d(const double* x, Py_ssize_t W, Py_ssize_t first, const double* k, Py_ssize_t kw,
                              double* y, Py_ssize_t n, Py_ssize_t M, double* work)
    Py_ssize_t fc_lane_block_f()
    Py_ssize_t fc_lane_block_d()
    Py_ssize_t fc_lanes_f()
    Py_ssize_t fc_lanes_d()

cdef extern from "conv_direct_grad.h" nogil:
    Py_ssize_t fc_grad_w_block_f()
    Py_ssize_t fc_grad_w_block_d()
    void fc_grad_w_tiles_f(const float* go, const float* src, const Py_ssize_t* off, Py_ssize_t taps, float* gw,
                           Py_ssize_t ldg, Py_ssize_t rows, Py_ssize_t Wq, Py_ssize_t Wo)
    void fc_grad_w_tiles_d(const double* go, const double* src, const Py_ssize_t* off, Py_ssize_t taps,
                           double* gw, Py_ssize_t ldg, Py_ssize_t rows, Py_ssize_t Wq, Py_ssize_t Wo)
    void fc_grad_w_transpose_f(const float* go, Py_ssize_t go_k, Py_ssize_t nk, float* dst, Py_ssize_t n)
    void fc_grad_w_transpose_d(const double* go, Py_ssize_t go_k, Py_ssize_t nk, double* dst, Py_ssize_t n)

cdef inline void _tiles(const floating* src, const Py_ssize_t* off, Py_ssize_t taps, const floating* a,
                        Py_ssize_t lda, const floating* bias, floating* out, Py_ssize_t out_k, int mr,
                        Py_ssize_t rows, Py_ssize_t Wq, Py_ssize_t Wo, int relu, fc_prefetch* pf) noexcept nogil:
    if floating is float:
        fc_tiles_f(src, off, taps, a, lda, bias, out, out_k, mr, rows, Wq, Wo, relu, pf)
    else:
        fc_tiles_d(src, off, taps, a, lda, bias, out, out_k, mr, rows, Wq, Wo, relu, pf)


cdef inline void _channel_tiles(const floating* src, const Py_ssize_t* off, Py_ssize_t taps, const floating* w,
                                const floating* bias, floating* out, Py_ssize_t out_k, Py_ssize_t rows,
                                Py_ssize_t Wq, Py_ssize_t Wo, int relu, fc_prefetch* pf) noexcept nogil:
    if floating is float:
        fc_channel_tiles_f(src, off, taps, w, bias, out, out_k, rows, Wq, Wo, relu, pf)
    else:
        fc_channel_tiles_d(src, off, taps, w, bias, out, out_k, rows, Wq, Wo, relu, pf)


def tile_rows():
    """Output channels per pixel tile of conv2d_forward."""
    return FC_MR


def channel_block(bint double_precision):
    """Output channels per channel tile of conv2d_forward."""
    return fc_channel_block_d() if double_precision else fc_channel_block_f()


cdef inline fc_prefetch _input_run(const floating* image, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                                   Py_ssize_t top, Py_ssize_t nrows, Py_ssize_t blocks) noexcept nogil:
    """The cache lines of rows [top, top + nrows) of every channel of `image`, clipped to
    its rows (whole lines inside it), to prefetch over `blocks` blocks of tiles."""
    cdef Py_ssize_t iy0 = max(top, 0), iy1 = min(top + nrows, H)
    cdef fc_prefetch pf
    pf.row = <const char*>(image + iy0 * W) if iy1 > iy0 else <const char*>image
    pf.col = 0
    pf.row_lines = ((iy1 - iy0) * W * <Py_ssize_t>sizeof(floating) + 63) // 64 if iy1 > iy0 else 0
    pf.stride = H * W * sizeof(floating)
    pf.count = C * pf.row_lines
    pf.per_block = (pf.count + blocks - 1) // blocks
    return pf


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


cdef inline void _grad_w_taps(const floating* go, Py_ssize_t n, const floating* src, const Py_ssize_t* off,
                              Py_ssize_t taps, floating* gw) noexcept nogil:
    if floating is float:
        fc_grad_w_taps_f(go, n, src, off, taps, gw)
    else:
        fc_grad_w_taps_d(go, n, src, off, taps, gw)


cdef inline void _pack_row(const floating* src, Py_ssize_t W, floating* dst, Py_ssize_t ds, Py_ssize_t M,
                           Py_ssize_t sw, Py_ssize_t pl) noexcept nogil:
    """dst[p*ds + m] = x[m*sw + p - pl] (0 outside [0, W)), for p < sw, m < M. pl may be
    negative (a transposed convolution's cropping)."""
    if floating is float:
        fc_split_f(src, W, dst, ds, M, sw, pl)
    else:
        fc_split_d(src, W, dst, ds, M, sw, pl)


cdef inline Py_ssize_t _output_row(Py_ssize_t ih, Py_ssize_t i, Py_ssize_t pt, Py_ssize_t dh,
                                   Py_ssize_t sh, Py_ssize_t Ho) noexcept nogil:
    """The output row whose window row i lies on input row ih, or -1 if none."""
    cdef Py_ssize_t t = ih + pt - i * dh
    if sh == 1:     # no division: this runs for every input row, channel and window row
        return t if 0 <= t < Ho else -1
    if t < 0 or t % sh != 0 or t // sh >= Ho:
        return -1
    return t // sh


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
# forward: each task owns one band of output rows (n, oy0 .. oy0 + rows) of every
# channel. It copies the input under the band into its workspace, zero-padded and
# split into stride phases: plane (c, b, r) holds padded input row sh*(oy0 + a) + b,
# column sw*q + r at [a, q] (Hb x Wq values). Then the input under output pixel
# (oy, ox), tap (c, i, j) is plane (c, i*dh % sh, j*dw % sw) at
#     [oy + i*dh // sh, ox + j*dw // sw] = flat index oy*Wq + ox + (i*dh // sh)*Wq + j*dw // sw,
# so with output pixels numbered p = oy*Wq + ox (Wq - Wo of them per row are
# thrown away), every tap is one fixed offset from p: a GEMM whose right-hand
# matrix is read straight from the planes, tile by tile, no columns. Pixel tiles
# (fc_tiles) run their vectors over pixels p, so a vector that meets a row's end
# spends Wq - Wo lanes on no output; channel tiles (fc_channel_tiles) run them over
# output channels, from weights packed channel-fastest, and cover each row exactly.

cdef class ForwardPlan:
    """Workspace layout of conv2d_forward (values per thread): `planes` phase planes
    of Hb x Wq values for a band of `band_rows` output rows (shapes from
    fastconv._direct._plane_shape), `filled` values in all, then the zeros the last
    tile reads past them, up to `size`."""
    cdef readonly Py_ssize_t band_rows, Wq, Hb, plane, filled, size

    def __init__(self, Py_ssize_t planes, Py_ssize_t Hb, Py_ssize_t Wq, Py_ssize_t band_rows,
                 bint double_precision):
        cdef Py_ssize_t S = fc_tile_width_d() if double_precision else fc_tile_width_f()
        self.band_rows = band_rows
        self.Wq = Wq
        self.Hb = Hb
        self.plane = Hb * Wq
        self.filled = planes * self.plane
        # the last tile reads less than one tile width past the band's last plane (a row to spare)
        self.size = self.filled + S + Wq

    cdef int check(self, Py_ssize_t C, Geometry g) except -1:
        """ValueError unless these are the planes of C input channels under the geometry's bands."""
        if (self.Wq != g.out_w + (g.kw - 1) * g.dw // g.sw or self.Hb != self.band_rows + (g.kh - 1) * g.dh // g.sh
                or self.band_rows < 1 or self.filled < C * g.sh * g.sw * self.plane):
            raise ValueError(f"plan (band_rows {self.band_rows}, {self.filled // max(self.plane, 1)} planes of "
                             f"{self.Hb}x{self.Wq}) does not fit {C} channels of this geometry")
        return 0


cdef Py_ssize_t[::1] _tap_offsets(ForwardPlan plan, Py_ssize_t Cg, Geometry g):
    """off[(c*kh + i)*kw + j]: where tap (c, i, j) of output pixel p reads, p + off
    into a group's planes (plane (c, i*dh % sh, j*dw % sw), i*dh // sh rows and
    j*dw // sw columns on)."""
    cdef Py_ssize_t kh = g.kh, kw = g.kw, sh = g.sh, sw = g.sw, dh = g.dh, dw = g.dw
    cdef Py_ssize_t[::1] off = np.empty(max(Cg * kh * kw, 1), dtype=np.intp)
    cdef Py_ssize_t c, i, j
    for c in range(Cg):
        for i in range(kh):
            for j in range(kw):
                off[(c * kh + i) * kw + j] = (((c * sh + i * dh % sh) * sw + j * dw % sw) * plan.plane
                                              + (i * dh // sh) * plan.Wq + j * dw // sw)
    return off


cdef inline void _fill_planes(const floating* image, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                              Py_ssize_t oy0, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl,
                              Py_ssize_t Hb, Py_ssize_t Wq, floating* planes) noexcept nogil:
    cdef Py_ssize_t c, b, r, a, iy
    cdef floating* row
    for c in range(C):
        for a in range(Hb):
            for b in range(sh):     # input rows in memory order
                iy = sh * (oy0 + a) + b - pt
                row = planes + ((c * sh + b) * sw * Hb + a) * Wq
                if 0 <= iy < H:
                    _pack_row(image + (c * H + iy) * W, W, row, Hb * Wq, Wq, sw, pl)
                else:
                    for r in range(sw):
                        memset(row + r * Hb * Wq, 0, Wq * sizeof(floating))


cdef struct ForwardJob:
    # conv2d_forward's arrays (as floating*, by `double_precision`) and shapes, for its tasks
    const void* x
    const void* weight
    const void* packed
    const void* bias
    void* out
    void* workspace
    const Py_ssize_t* off
    Py_ssize_t* copied           # per slot: the band whose planes its workspace holds
    bint double_precision, relu
    bint dw3                     # depthwise 3x3 at stride 1, dilation 1: fc_dw3_block
    Py_ssize_t C, H, W, K, Kg, taps, Ho, Wo, R, Wq, Hb, n_bands, n_tasks, group_planes, B, full, blocks
    Py_ssize_t splits, work_stride
    int sh, sw, pt, pl, groups


cdef void _forward_task(void* job, Py_ssize_t task, int slot) noexcept nogil:
    cdef ForwardJob* j = <ForwardJob*>job
    if j.double_precision:
        _forward_band(j, <double*>j.workspace, task, slot)
    else:
        _forward_band(j, <float*>j.workspace, task, slot)


cdef inline void _forward_band(ForwardJob* j, floating* workspace, Py_ssize_t task, int slot) noexcept nogil:
    """Task `task` of conv2d_forward: part task % splits of the output channels of one
    band of output rows of one image (its channel tiles and pixel tiles in near-equal runs)."""
    cdef const floating* x = <const floating*>j.x
    cdef const floating* weight = <const floating*>j.weight
    cdef const floating* packed = <const floating*>j.packed
    cdef const floating* bias = <const floating*>j.bias
    cdef floating* out = <floating*>j.out
    cdef floating* planes = workspace + slot * j.work_stride
    cdef Py_ssize_t band = task // j.splits, part = task % j.splits, bands = j.n_tasks // j.splits
    cdef Py_ssize_t image = j.C * j.H * j.W, n = band // j.n_bands, oy0 = (band % j.n_bands) * j.R
    cdef Py_ssize_t rows = min(j.R, j.Ho - oy0), grp, mb, k, nxt
    cdef Py_ssize_t c0 = part * j.full // j.splits, c1 = (part + 1) * j.full // j.splits
    cdef Py_ssize_t p0 = j.full + part * (j.blocks - j.full) // j.splits
    cdef Py_ssize_t p1 = j.full + (part + 1) * (j.blocks - j.full) // j.splits
    cdef int mr
    cdef fc_prefetch pf
    if j.copied[slot] != band:      # a slot that runs the next part of its band skips the copy
        _fill_planes(x + n * image, j.C, j.H, j.W, oy0, j.sh, j.sw, j.pt, j.pl, j.Hb, j.Wq, planes)
        j.copied[slot] = band
    if j.dw3:
        for grp in range(j.groups):
            if floating is float:
                fc_dw3_block_f(planes + grp * j.group_planes, j.Wq, weight + grp * 9, bias[grp],
                               out + ((n * j.K + grp) * j.Ho + oy0) * j.Wo, rows, j.Wo, j.relu)
            else:
                fc_dw3_block_d(planes + grp * j.group_planes, j.Wq, weight + grp * 9, bias[grp],
                               out + ((n * j.K + grp) * j.Ho + oy0) * j.Wo, rows, j.Wo, j.relu)
        return
    # the input rows of the next band (most often this slot's next task: tasks are claimed
    # in chunks), prefetched while this band's last part runs
    nxt = band + 1 if part == j.splits - 1 and band + 1 < bands else band
    pf = _input_run(x + (nxt // j.n_bands) * image, j.C, j.H, j.W, j.sh * (nxt % j.n_bands) * j.R - j.pt,
                    j.sh * j.Hb if nxt > band else 0, j.groups * max(1, c1 - c0 + p1 - p0))
    for grp in range(j.groups):
        for mb in range(c0, c1):
            k = grp * j.Kg + mb * j.B
            _channel_tiles(planes + grp * j.group_planes, j.off, j.taps,
                           packed + (grp * j.full + mb) * j.taps * j.B, bias + k,
                           out + ((n * j.K + k) * j.Ho + oy0) * j.Wo, j.Ho * j.Wo, rows, j.Wq, j.Wo, j.relu, &pf)
        for mb in range(p0, p1):
            k = grp * j.Kg + j.full * j.B + (mb - j.full) * FC_MR
            mr = <int>min(FC_MR, (grp + 1) * j.Kg - k)
            _tiles(planes + grp * j.group_planes, j.off, j.taps, weight + k * j.taps, j.taps, bias + k,
                   out + ((n * j.K + k) * j.Ho + oy0) * j.Wo, j.Ho * j.Wo, mr, rows, j.Wq, j.Wo, j.relu, &pf)


def conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, ::1] weight,
                   const floating[::1] bias, floating[:, :, :, ::1] out, Geometry g, int groups,
                   ForwardPlan plan, floating[:, ::1] workspace, int num_threads,
                   const floating[:, ::1] packed=None, Py_ssize_t splits=1, bint relu=False):
    """out = conv2d(x, weight) + bias (with `relu`: max(that, 0)), every element written.

    weight (K, C/groups * kh * kw); workspace (num_threads, plan.size). With
    `packed`, each group's full = (K/groups) // B whole blocks of B = channel_block(...)
    output channels run on channel tiles, from packed (groups * full * taps, B):
    row (g * full + b) * taps + t, column l holds tap t of channel g*K/groups + b*B + l;
    the group's other channels run on pixel tiles.

    `splits`: each band's output channels are shared out over that many tasks (each
    group's channel tiles and pixel tiles in near-equal runs), for a small map with
    fewer bands than the threads need: every task reads only its channels' weights,
    and a slot that runs the next split of the band it has copied skips the copy."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = weight.shape[0], Ho = g.out_h, Wo = g.out_w
    check_groups(groups, C, K)
    check_shape("weight", shape(weight.shape, 2), (K, C // groups * g.kh * g.kw))
    check_shape("bias", (bias.shape[0],), (K,))
    check_shape("out", shape(out.shape, 4), (N, K, Ho, Wo))
    plan.check(C, g)
    check_workspace("workspace", workspace.shape[0], workspace.shape[1], num_threads, plan.size)
    cdef ForwardJob job
    job.Kg = K // groups
    job.taps = C // groups * g.kh * g.kw
    job.B = fc_channel_block_d() if floating is double else fc_channel_block_f()
    job.full = 0 if packed is None else job.Kg // job.B     # channel tiles per group
    if packed is not None and (packed.shape[0] != groups * job.full * job.taps or packed.shape[1] != job.B):
        raise ValueError(f"packed must be ({groups * job.full * job.taps}, {job.B}), "
                         f"got ({packed.shape[0]}, {packed.shape[1]})")
    job.blocks = job.full + (job.Kg - job.full * job.B + FC_MR - 1) // FC_MR
    if splits < 1 or splits > max(job.blocks, 1):
        raise ValueError(f"splits must be between 1 and {max(job.blocks, 1)}, got {splits}")
    if N == 0 or K == 0 or Ho == 0 or Wo == 0:
        return
    cdef Py_ssize_t[::1] off = _tap_offsets(plan, C // groups, g)
    cdef Py_ssize_t[::1] copied = np.full(max(num_threads, 1), -1, dtype=np.intp)
    cdef Py_ssize_t t
    job.x, job.weight, job.bias, job.out = &x[0, 0, 0, 0], &weight[0, 0], &bias[0], &out[0, 0, 0, 0]
    job.packed = &packed[0, 0] if job.full else NULL
    job.workspace, job.off, job.copied = &workspace[0, 0], &off[0], &copied[0]
    job.double_precision, job.relu, job.splits = floating is double, relu, splits
    job.C, job.H, job.W, job.K, job.Ho, job.Wo = C, H, W, K, Ho, Wo
    job.R, job.Wq, job.Hb, job.work_stride = plan.band_rows, plan.Wq, plan.Hb, workspace.shape[1]
    job.n_bands = (Ho + job.R - 1) // job.R
    job.n_tasks = N * job.n_bands * splits
    job.group_planes = C // groups * g.sh * g.sw * plan.plane
    job.sh, job.sw, job.pt, job.pl, job.groups = g.sh, g.sw, g.pt, g.pl, groups
    # (one channel per group: no channel tiles and no splits, which need whole blocks)
    job.dw3 = groups == C == K and (g.kh, g.kw, g.sh, g.sw, g.dh, g.dw) == (3, 3, 1, 1, 1, 1)
    with nogil:
        for t in range(num_threads):    # the zeros the last tile reads past the planes
            memset(&workspace[t, plan.filled], 0, (plan.size - plan.filled) * sizeof(floating))
        # chunks of about a quarter of a thread's share: a thread kept off its core holds
        # back only the chunk it has claimed; within a chunk the next task is its own
        run_tasks(_forward_task, &job, job.n_tasks, max(1, job.n_tasks // (4 * num_threads)), num_threads)


# ---------------------------------------------------------------------------
# grad_x at stride > 1 (fastconv._direct._grad_x_phases): grad_x's stride phases as the
# output channels of one stride-1 forward convolution of grad_output, on the forward's
# tasks and tiles; each band's sums go to the task's scratch rows, then out to the
# phase's pixels of grad_x (a pixel shuffle).

def forward_shuffle_workspace(ForwardPlan plan, Py_ssize_t K, Py_ssize_t out_w):
    """Values per thread for conv2d_forward_shuffle: the planes, then one band of K output channels."""
    return plan.size + K * plan.band_rows * out_w


def conv2d_forward_shuffle(const floating[:, :, :, ::1] x, const floating[:, ::1] weight,
                           const floating[::1] bias, floating[:, :, :, ::1] out, const Py_ssize_t[:, ::1] place, Py_ssize_t sh_out,
                           Py_ssize_t sw_out, Geometry g, int groups, ForwardPlan plan,
                           floating[:, ::1] workspace, int num_threads, const floating[:, ::1] packed=None):
    """y = conv2d(x, weight) + bias as conv2d_forward, stored into `out`: output channel
    k's pixel (oy, ox) goes to out[n, c, fy + oy*sh_out, fx + ox*sw_out] for oy < hy and
    ox < wx, where place[k] = (c, fy, hy, fx, wx); the rest of y is dropped.
    workspace (num_threads, forward_shuffle_workspace(plan, K, out_w))."""
    cdef Py_ssize_t kh = g.kh, kw = g.kw, sh = g.sh, sw = g.sw, pt = g.pt, pl = g.pl
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = weight.shape[0], Ho = g.out_h, Wo = g.out_w
    cdef Py_ssize_t Hx = out.shape[2], Wx = out.shape[3]
    cdef Py_ssize_t k
    check_groups(groups, C, K)
    check_shape("weight", shape(weight.shape, 2), (K, C // groups * kh * kw))
    check_shape("bias", (bias.shape[0],), (K,))
    check_shape("place", shape(place.shape, 2), (K, 5))
    if out.shape[0] != N:
        raise ValueError(f"out must have {N} images, got {out.shape[0]}")
    if sh_out < 1 or sw_out < 1:
        raise ValueError(f"sh_out and sw_out must be at least 1, got {sh_out} and {sw_out}")
    for k in range(K):
        if not (0 <= place[k, 0] < out.shape[1] and 0 <= place[k, 2] <= Ho and 0 <= place[k, 4] <= Wo
                and place[k, 1] >= 0 and place[k, 3] >= 0
                and (place[k, 2] == 0 or place[k, 1] + (place[k, 2] - 1) * sh_out < Hx)
                and (place[k, 4] == 0 or place[k, 3] + (place[k, 4] - 1) * sw_out < Wx)):
            raise ValueError(f"place[{k}] = {tuple(place[k])} is outside out {tuple(out.shape)[:4]} "
                             f"or the {Ho}x{Wo} output")
    plan.check(C, g)
    check_workspace("workspace", workspace.shape[0], workspace.shape[1], num_threads,
                    forward_shuffle_workspace(plan, K, Wo))
    cdef Py_ssize_t Kg = K // groups, Cg = C // groups, taps = Cg * kh * kw
    cdef Py_ssize_t R = plan.band_rows, Wq = plan.Wq, Hb = plan.Hb
    cdef Py_ssize_t n_bands = (Ho + R - 1) // R, group_planes = Cg * sh * sw * plan.plane
    cdef Py_ssize_t B = fc_channel_block_d() if floating is double else fc_channel_block_f()
    cdef Py_ssize_t full = 0 if packed is None else Kg // B
    cdef Py_ssize_t blocks = full + (Kg - full * B + FC_MR - 1) // FC_MR
    cdef Py_ssize_t task, n, oy0, rows, grp, mb, mr, y, ox, ye, xe
    cdef fc_prefetch pf
    cdef Py_ssize_t[::1] off = _tap_offsets(plan, Cg, g)
    cdef floating* planes = NULL
    cdef floating* band = NULL
    cdef floating* src = NULL
    cdef floating* dst = NULL
    if packed is not None and (packed.shape[0] != groups * full * taps or packed.shape[1] != B):
        raise ValueError(f"packed must be ({groups * full * taps}, {B}), got ({packed.shape[0]}, {packed.shape[1]})")
    if N == 0 or K == 0 or Ho == 0 or Wo == 0:
        return
    pf.count = 0            # nothing to prefetch (fc_tiles reads the run only while count > 0)
    pf.per_block = 0
    with nogil, parallel(num_threads=num_threads):
        planes = &workspace[threadid(), 0]
        band = planes + plan.size
        memset(planes + plan.filled, 0, (plan.size - plan.filled) * sizeof(floating))
        for task in prange(N * n_bands, schedule="static"):
            n = task // n_bands
            oy0 = (task % n_bands) * R
            rows = min(R, Ho - oy0)
            _fill_planes(&x[n, 0, 0, 0], C, H, W, oy0, sh, sw, pt, pl, Hb, Wq, planes)
            for grp in range(groups):
                for mb in range(blocks):
                    if mb < full:
                        k = grp * Kg + mb * B
                        _channel_tiles(planes + grp * group_planes, &off[0], taps, &packed[(grp * full + mb) * taps, 0],
                                       &bias[k], band + k * rows * Wo, rows * Wo, rows, Wq, Wo, 0, &pf)
                    else:
                        k = grp * Kg + full * B + (mb - full) * FC_MR
                        mr = min(FC_MR, (grp + 1) * Kg - k)
                        _tiles(planes + grp * group_planes, &off[0], taps, &weight[k, 0], taps,
                               &bias[k], band + k * rows * Wo, rows * Wo, mr, rows, Wq, Wo, 0, &pf)
            for k in range(K):
                ye = min(rows, place[k, 2] - oy0)
                xe = place[k, 4]
                for y in range(ye):
                    src = band + (k * rows + y) * Wo
                    dst = &out[n, place[k, 0], place[k, 1] + (oy0 + y) * sh_out, place[k, 3]]
                    for ox in range(xe):
                        dst[ox * sw_out] = src[ox]


# ---------------------------------------------------------------------------
# grad_x: each task owns one input row (n, ih) of every channel.

def conv2d_grad_x(const floating[:, :, :, ::1] grad_output, const floating[:, :, :, ::1] weight,
                  floating[:, :, :, ::1] grad_x, Geometry geometry, int groups,
                  floating[:, ::1] workspace, Py_ssize_t chunk_channels, int num_threads):
    """grad_x = conv2d's input gradient (every element written). One task per input
    row (n, ih); it scatters into `chunk_channels` phase-split rows of its
    workspace (chunk_channels * grad_x_row_len(...) values), then unpacks them."""
    cdef int sh = geometry.sh, sw = geometry.sw, pt = geometry.pt, pl = geometry.pl, dh = geometry.dh, dw = geometry.dw
    cdef Py_ssize_t N = grad_x.shape[0], H = grad_x.shape[2], W = grad_x.shape[3]
    cdef Py_ssize_t K = weight.shape[0], Cg = weight.shape[1], kh = weight.shape[2], kw = weight.shape[3]
    cdef Py_ssize_t Ho = geometry.out_h, Wo = geometry.out_w
    check_groups(groups, grad_x.shape[1], K)
    check_shape("weight", shape(weight.shape, 4), (K, grad_x.shape[1] // groups, geometry.kh, geometry.kw))
    check_shape("grad_output", shape(grad_output.shape, 4), (N, K, Ho, Wo))
    if chunk_channels < 1:
        raise ValueError(f"chunk_channels must be at least 1, got {chunk_channels}")
    check_workspace("workspace", workspace.shape[0], workspace.shape[1], num_threads,
                    chunk_channels * grad_x_row_len(sw, Wo, kw, dw, W, pl))
    cdef Py_ssize_t Kg = K // groups
    cdef Py_ssize_t span = (Wo - 1) * sw + (kw - 1) * dw + 1
    cdef Py_ssize_t M = ((span if span > W + pl else W + pl) + sw - 1) // sw
    cdef Py_ssize_t row_len = sw * M, w_k = Cg * kh * kw, w_c = kh * kw, go_k = Ho * Wo
    cdef Py_ssize_t cbi, ci, task, n, ih, g, c0, nc, c1, i, j, oh, tap, c, iw, u
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
                        oh = _output_row(ih, i, pt, dh, sh, Ho)
                        if oh < 0:
                            continue
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
                       floating[:, :, :, ::1] grad_weight, Geometry geometry, int groups,
                       floating[:, ::1] workspace, int num_threads):
    """grad_weight (K, C/groups, kh, kw), every element written. The workspace row
    holds grad_weight_workspace(...) values: lane-wise partial sums, then one
    packed input row."""
    cdef int sh = geometry.sh, sw = geometry.sw, pt = geometry.pt, pl = geometry.pl, dh = geometry.dh, dw = geometry.dw
    cdef Py_ssize_t N = x.shape[0], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = grad_weight.shape[0], Cg = grad_weight.shape[1]
    cdef Py_ssize_t kh = grad_weight.shape[2], kw = grad_weight.shape[3]
    cdef Py_ssize_t Ho = geometry.out_h, Wo = geometry.out_w
    check_groups(groups, x.shape[1], K)
    check_shape("grad_weight", shape(grad_weight.shape, 4), (K, x.shape[1] // groups, geometry.kh, geometry.kw))
    check_shape("grad_output", shape(grad_output.shape, 4), (N, K, Ho, Wo))
    check_workspace("workspace", workspace.shape[0], workspace.shape[1], num_threads,
                    grad_weight_workspace(kh, kw, packed_row_len(sw, Wo, kw, dw), floating is double))
    cdef Py_ssize_t Kg = K // groups, nkb = (Kg + FC_KB - 1) // FC_KB
    cdef Py_ssize_t M = ((Wo - 1) * sw + (kw - 1) * dw + 1 + sw - 1) // sw
    cdef Py_ssize_t S = fc_strip_f() if floating is float else fc_strip_d()
    cdef Py_ssize_t row_len = sw * M, go_k = Ho * Wo, part_k = kh * kw * S
    cdef Py_ssize_t task, g, kbi, c, k0, nk, n, oh, ih, i, j, tap, kb, s
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
                        _pack_row(&x[n, g * Cg + c, ih, 0], W, row, M, M, sw, pl)
                        for i in range(kh):
                            oh = _output_row(ih, i, pt, dh, sh, Ho)
                            if oh < 0:
                                continue
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


def conv2d_grad_weight_planes(const floating[:, :, :, ::1] grad_output, const floating[:, :, :, ::1] x,
                              floating[:, :, :, ::1] grad_weight, Geometry g, int groups, ForwardPlan plan,
                              floating[:, ::1] workspace, int num_threads):
    """grad_weight (K, 1, kh, kw), added to (pass zeros), when each group has one input
    channel (depthwise): each task owns one output channel k and, for every image and
    band of output rows, dots k's grad_output rows (zero-padded to the planes' width,
    so pixel y*Wq + ox as in the forward) with the band's phase planes at each tap's
    offset: long dots in registers, where the row kernels would pay a call per row.

    workspace (num_threads, grad_weight_planes_workspace(plan, ...))."""
    cdef int sh = g.sh, sw = g.sw, pt = g.pt, pl = g.pl, dh = g.dh, dw = g.dw
    cdef Py_ssize_t N = x.shape[0], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = grad_weight.shape[0], kh = grad_weight.shape[2], kw = grad_weight.shape[3]
    cdef Py_ssize_t Ho = g.out_h, Wo = g.out_w
    check_groups(groups, x.shape[1], K)
    check_shape("grad_weight", shape(grad_weight.shape, 4), (K, 1, g.kh, g.kw))
    if x.shape[1] != groups:
        raise ValueError(f"x must have one channel per group ({groups}), got {x.shape[1]}")
    check_shape("grad_output", shape(grad_output.shape, 4), (N, K, Ho, Wo))
    plan.check(1, g)
    check_workspace("workspace", workspace.shape[0], workspace.shape[1], num_threads,
                    grad_weight_planes_workspace(plan, floating is double))
    cdef Py_ssize_t Kg = K // groups, taps = kh * kw
    cdef Py_ssize_t R = plan.band_rows, Wq = plan.Wq, Hb = plan.Hb, n_bands = (Ho + R - 1) // R
    cdef Py_ssize_t step = _dot_step(floating is double)
    cdef Py_ssize_t k, n, band, oy0, rows, y, m
    cdef Py_ssize_t[::1] off = _tap_offsets(plan, 1, g)
    cdef floating* planes = NULL
    cdef floating* go = NULL
    if N == 0 or K == 0 or Ho == 0 or Wo == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        planes = &workspace[threadid(), 0]
        go = planes + plan.size
        memset(planes + plan.filled, 0, (plan.size - plan.filled) * sizeof(floating))
        for k in prange(K, schedule="static"):
            for n in range(N):
                for band in range(n_bands):
                    oy0 = band * R
                    rows = min(R, Ho - oy0)
                    _fill_planes(&x[n, k // Kg, 0, 0], 1, H, W, oy0, sh, sw, pt, pl, Hb, Wq, planes)
                    for y in range(rows):
                        _pack_row(&grad_output[n, k, oy0 + y, 0], Wo, go + y * Wq, 0, Wq, 1, 0)
                    # pixels through the band's last output, in whole steps (zeros past it)
                    m = ((rows - 1) * Wq + Wo + step - 1) // step * step
                    if m > rows * Wq:
                        memset(go + rows * Wq, 0, (m - rows * Wq) * sizeof(floating))
                    _grad_w_taps(go, m, planes, &off[0], taps, &grad_weight[k, 0, 0, 0])


# ---------------------------------------------------------------------------
# grad_weight on register tiles (conv_direct_grad.h): each task owns one band of output
# rows (n, oy0 .. oy0 + rows), fills the forward's phase planes of every input channel
# under it, and for each block of B output channels transposes the band's grad_output
# channel-fastest and adds every tap's sums over the band's pixels into its thread's
# partial sums. The caller adds the threads' partial sums up: no atomics, no locks.

def grad_weight_block(bint double_precision):
    """Output channels per grad_weight tile (the partial sums' channels come in multiples of it)."""
    return fc_grad_w_block_d() if double_precision else fc_grad_w_block_f()


def grad_weight_tiles_workspace(ForwardPlan plan, Py_ssize_t out_w, bint double_precision):
    """Values per thread for conv2d_grad_weight_tiles: the planes, then one block of a band's
    grad_output, transposed."""
    return plan.size + grad_weight_block(double_precision) * plan.band_rows * out_w


def conv2d_grad_weight_tiles(const floating[:, :, :, ::1] grad_output, const floating[:, :, :, ::1] x,
                             floating[:, ::1] parts, Geometry g, int groups, Py_ssize_t K, ForwardPlan plan,
                             floating[:, ::1] workspace, int num_threads):
    """conv2d's weight gradient as per-thread partial sums, added to `parts` (pass zeros):
    parts (num_threads, groups * taps * ldg), taps = C/groups * kh * kw, ldg = K/groups
    rounded up to a multiple of grad_weight_block(...); thread r's sums for output channel
    grp * K/groups + k, tap t are at parts[r, (grp * taps + t) * ldg + k].
    workspace (num_threads, grad_weight_tiles_workspace(plan, out_w, ...))."""
    cdef Py_ssize_t kh = g.kh, kw = g.kw, sh = g.sh, sw = g.sw, pt = g.pt, pl = g.pl
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t Ho = g.out_h, Wo = g.out_w
    check_groups(groups, C, K)
    check_shape("grad_output", shape(grad_output.shape, 4), (N, K, Ho, Wo))
    plan.check(C, g)
    check_workspace("workspace", workspace.shape[0], workspace.shape[1], num_threads,
                    grad_weight_tiles_workspace(plan, Wo, floating is double))
    cdef Py_ssize_t B = grad_weight_block(floating is double)
    cdef Py_ssize_t Kg = K // groups, Cg = C // groups, taps = Cg * kh * kw
    cdef Py_ssize_t nkb = (Kg + B - 1) // B, ldg = nkb * B
    check_workspace("parts", parts.shape[0], parts.shape[1], num_threads, groups * taps * ldg)
    cdef Py_ssize_t R = plan.band_rows, Wq = plan.Wq, Hb = plan.Hb
    cdef Py_ssize_t n_bands = (Ho + R - 1) // R, group_planes = Cg * sh * sw * plan.plane
    cdef Py_ssize_t task, n, oy0, rows, grp, kb, k
    cdef Py_ssize_t[::1] off = _tap_offsets(plan, Cg, g)
    cdef floating* planes = NULL
    cdef floating* go = NULL
    cdef floating* part = NULL
    if N == 0 or K == 0 or Ho == 0 or Wo == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        planes = &workspace[threadid(), 0]
        go = planes + plan.size
        part = &parts[threadid(), 0]
        for task in prange(N * n_bands, schedule="static"):
            n = task // n_bands
            oy0 = (task % n_bands) * R
            rows = min(R, Ho - oy0)
            _fill_planes(&x[n, 0, 0, 0], C, H, W, oy0, sh, sw, pt, pl, Hb, Wq, planes)
            for grp in range(groups):
                for kb in range(nkb):
                    k = grp * Kg + kb * B
                    if floating is float:
                        fc_grad_w_transpose_f(&grad_output[n, k, oy0, 0], Ho * Wo, min(B, Kg - kb * B), go, rows * Wo)
                        fc_grad_w_tiles_f(go, planes + grp * group_planes, &off[0], taps,
                                          part + grp * taps * ldg + kb * B, ldg, rows, Wq, Wo)
                    else:
                        fc_grad_w_transpose_d(&grad_output[n, k, oy0, 0], Ho * Wo, min(B, Kg - kb * B), go, rows * Wo)
                        fc_grad_w_tiles_d(go, planes + grp * group_planes, &off[0], taps,
                                          part + grp * taps * ldg + kb * B, ldg, rows, Wq, Wo)


cdef Py_ssize_t _dot_step(bint double_precision) noexcept nogil:
    """Pixels per step of fc_grad_w_taps: two tile vectors."""
    return 2 * (fc_tile_width_d() if double_precision else fc_tile_width_f()) // FC_TV


def grad_weight_planes_workspace(ForwardPlan plan, bint double_precision):
    """Values per thread for conv2d_grad_weight_planes: the planes, then one band of
    grad_output rows and a step to spare."""
    return plan.size + plan.band_rows * plan.Wq + _dot_step(double_precision)


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
    if chunk < 1 or rows_per_pass < 1:
        raise ValueError(f"chunk and rows_per_pass must be at least 1, got {chunk} and {rows_per_pass}")
    check_workspace("workspace", workspace.shape[0], workspace.shape[1], num_threads, rows_per_pass * row_len)
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


cdef inline void _correlate_lanes(const floating* x, Py_ssize_t W, Py_ssize_t first, const floating* k,
                                  Py_ssize_t kw, floating* y, Py_ssize_t n, Py_ssize_t M,
                                  floating* work) noexcept nogil:
    if floating is float:
        fc_correlate_lanes_f(x, W, first, k, kw, y, n, M, work)
    else:
        fc_correlate_lanes_d(x, W, first, k, kw, y, n, M, work)


def correlate1d(const floating[::1] x, const floating[::1] kernel, floating[::1] out, Py_ssize_t first,
                Py_ssize_t run, floating[:, ::1] workspace, int num_threads):
    """out[s] = sum_j kernel[j] * x[first + s + j], x zero outside its bounds, in tasks of lanes * run
    outputs (lane_layout); workspace holds lane_workspace(run, kernel.shape[0]) values per thread."""
    cdef bint double_precision = sizeof(floating) == sizeof(double)
    cdef Py_ssize_t lanes, block
    lanes, block = lane_layout(double_precision)
    cdef Py_ssize_t n = out.shape[0], per_task = run * lanes, task, s0
    # the kernel's reads and writes stay inside the workspace only under these (run rounds the tasks)
    if run <= 0 or run % block:
        raise ValueError(f"run must be a positive multiple of {block}, got {run}")
    if (num_threads < 1 or workspace.shape[0] < num_threads
            or workspace.shape[1] < lane_workspace(run, kernel.shape[0], double_precision)):
        raise ValueError(f"workspace {tuple(workspace.shape)[:2]} is too small for {num_threads} threads of run {run}")
    if n == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        for task in prange((n + per_task - 1) // per_task, schedule="static"):
            s0 = task * per_task
            _correlate_lanes(&x[0], x.shape[0], first + s0, &kernel[0], kernel.shape[0], &out[s0],
                             min(per_task, n - s0), run, &workspace[threadid(), 0])


def lane_layout(bint double_precision):
    """(lanes per vector, block): correlate1d's tasks give each lane a run of outputs, a multiple of block."""
    if double_precision:
        return fc_lanes_d(), fc_lane_block_d()
    return fc_lanes_f(), fc_lane_block_f()


def lane_workspace(Py_ssize_t run, Py_ssize_t kw, bint double_precision):
    """Values per thread for correlate1d: the transposed input, plus room to align it to 64 bytes."""
    cdef Py_ssize_t lanes = lane_layout(double_precision)[0]
    return (run + kw) * lanes + <Py_ssize_t>(64 // (sizeof(double) if double_precision else sizeof(float)))


# ---------------------------------------------------------------------------
# Which build this is (conv_direct_avx*.pyx compile this same source for wider vectors).

def compiled_isa():
    """The instruction set this module was compiled for: an index into fastconv._kernels.ISA_NAMES."""
    return fc_compiled_isa()


def cpu_isa():
    """The highest level of fastconv._kernels.ISA_NAMES the CPU and OS run (0 off x86 or unknown)."""
    return fc_cpu_isa()


# ---------------------------------------------------------------------------
# Workspace sizes (values per thread), for the Python side to allocate.

def packed_row_len(Py_ssize_t sw, Py_ssize_t out_w, Py_ssize_t kw, Py_ssize_t dw):
    """Values of one phase-split input row under a row of output pixels (grad_weight)."""
    return sw * (((out_w - 1) * sw + (kw - 1) * dw + 1 + sw - 1) // sw)


def grad_x_row_len(Py_ssize_t sw, Py_ssize_t out_w, Py_ssize_t kw, Py_ssize_t dw, Py_ssize_t W, Py_ssize_t pl):
    cdef Py_ssize_t span = (out_w - 1) * sw + (kw - 1) * dw + 1
    return sw * (((span if span > W + pl else W + pl) + sw - 1) // sw)


def grad_weight_workspace(Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t row_len, bint double_precision):
    """Values per thread for conv2d_grad_weight."""
    cdef Py_ssize_t S = fc_strip_d() if double_precision else fc_strip_f()
    return FC_KB * kh * kw * S + row_len
