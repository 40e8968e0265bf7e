# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Batch normalisation kernels over (N, C, L) arrays (L = H*W), float32/float64.

Memory-bound, so each op reads its inputs as few times as the dependencies
allow: the statistics (and, in the backward, sum(g) and sum(g*(x - mean))) in
one pass, then the output in a second. The parallel tasks are segments of at
most FC_BN_SEGMENT values of one (n, c) plane, in memory order, so a small C
with a large N (or one large plane) still gives every thread work; each task
leaves its partial sums in a row of `parts`, which one task per channel then
combines (Chan et al.'s pairwise update, in a fixed order: the results do not
depend on the number of threads). Tasks are handed out in dynamic chunks of a
quarter of a thread's share: on shared cores a descheduled thread then holds
back one chunk, not half the op. Accumulation is in double for both dtypes.
"""
from cython cimport floating
from cython.parallel cimport prange
from fastconv._kernels._openmp cimport fc_openmp_adopt
from fastconv._kernels._tasks cimport openmp_state
from libc.math cimport NAN

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


cdef extern from "batch_norm.h" nogil:
    enum: FC_BN_SEGMENT
    enum: FC_BN_SMALL_PLANE
    enum: FC_BN_PART
    enum: FC_BN_COUNT
    enum: FC_BN_SHIFT
    enum: FC_BN_S1
    enum: FC_BN_S2
    enum: FC_BN_SG
    enum: FC_BN_SGD
    void fc_bn_segment_f(const float* x, const float* g, Py_ssize_t n, double* part)
    void fc_bn_segment_d(const double* x, const double* g, Py_ssize_t n, double* part)
    void fc_bn_normalize_f(const float* x, float* out, Py_ssize_t n, float mean_hi, float mean_lo, float scale,
                           float bias)
    void fc_bn_normalize_d(const double* x, double* out, Py_ssize_t n, double mean_hi, double mean_lo,
                           double scale, double bias)
    void fc_bn_by_channel_f(const float* x, float* out, Py_ssize_t N, Py_ssize_t C, Py_ssize_t L, Py_ssize_t c0,
                            Py_ssize_t c1)
    void fc_bn_by_channel_d(const double* x, double* out, Py_ssize_t N, Py_ssize_t C, Py_ssize_t L,
                            Py_ssize_t c0, Py_ssize_t c1)
    void fc_bn_normalize_spread_f(const float* x, float* out, Py_ssize_t n, const float* coef)
    void fc_bn_normalize_spread_d(const double* x, double* out, Py_ssize_t n, const double* coef)
    void fc_bn_backward_input_spread_f(const float* g, const float* x, float* gx, Py_ssize_t n,
                                       const double* coef)
    void fc_bn_backward_input_spread_d(const double* g, const double* x, double* gx, Py_ssize_t n,
                                       const double* coef)
    void fc_bn_backward_input_f(const float* g, const float* x, float* gx, Py_ssize_t n, double k, double c1,
                                double mean, double b)
    void fc_bn_backward_input_d(const double* g, const double* x, double* gx, Py_ssize_t n, double k,
                                double c1, double mean, double b)
    void fc_bn_backward_eval_f(const float* g, const float* x, float* gx, Py_ssize_t n, double k, double mean,
                               double* part)
    void fc_bn_backward_eval_d(const double* g, const double* x, double* gx, Py_ssize_t n, double k,
                               double mean, double* part)


ctypedef struct Geometry:
    Py_ssize_t N, C, L, S      # S: segments per plane


cdef Geometry _geometry(Py_ssize_t N, Py_ssize_t C, Py_ssize_t L):
    cdef Geometry geo
    geo.N, geo.C, geo.L = N, C, L
    geo.S = (L + FC_BN_SEGMENT - 1) // FC_BN_SEGMENT
    return geo


cdef inline Py_ssize_t _tasks(Geometry geo) noexcept nogil:
    return geo.N * geo.C * geo.S


cdef inline Py_ssize_t _chunk(Geometry geo, int num_threads) noexcept nogil:
    return max(1, _tasks(geo) // (4 * num_threads))


cdef inline Py_ssize_t _offset(Geometry geo, Py_ssize_t t) noexcept nogil:
    """Position of task t's first value: plane t // S, segment t % S."""
    return (t // geo.S) * geo.L + (t % geo.S) * FC_BN_SEGMENT


cdef inline Py_ssize_t _length(Geometry geo, Py_ssize_t t) noexcept nogil:
    cdef Py_ssize_t rest = geo.L - (t % geo.S) * FC_BN_SEGMENT
    return rest if rest < FC_BN_SEGMENT else FC_BN_SEGMENT


cdef inline Py_ssize_t _channel(Geometry geo, Py_ssize_t t) noexcept nogil:
    return (t // geo.S) % geo.C


cdef void _segment_sums(const floating* x, const floating* g, Geometry geo, double* parts,
                        int num_threads) noexcept nogil:
    cdef Py_ssize_t t, o
    cdef Py_ssize_t chunk = _chunk(geo, num_threads)
    for t in prange(_tasks(geo), schedule="dynamic", chunksize=chunk, num_threads=num_threads):
        o = _offset(geo, t)
        if floating is float:
            if g == NULL:
                fc_bn_segment_f(x + o, NULL, _length(geo, t), parts + t * FC_BN_PART)
            else:
                fc_bn_segment_f(x + o, g + o, _length(geo, t), parts + t * FC_BN_PART)
        else:
            if g == NULL:
                fc_bn_segment_d(x + o, NULL, _length(geo, t), parts + t * FC_BN_PART)
            else:
                fc_bn_segment_d(x + o, g + o, _length(geo, t), parts + t * FC_BN_PART)


cdef void _combine_channel(const double* parts, Geometry geo, Py_ssize_t c, double* mean, double* var,
                           double* sum_g, double* dot) noexcept nogil:
    """Channel c's mean, biased variance, sum(g) and sum(g*(x - mean)) from its tasks' parts."""
    cdef double count = 0.0, m = 0.0, m2 = 0.0, sg = 0.0, d = 0.0
    cdef double nb, mb, m2b, sgb, db, total, delta, m_new
    cdef const double* p
    cdef Py_ssize_t n, s
    for n in range(geo.N):
        for s in range(geo.S):
            p = parts + ((n * geo.C + c) * geo.S + s) * FC_BN_PART
            nb = p[FC_BN_COUNT]
            if nb == 0:
                continue
            # The segment's own mean, M2 and dot about its mean; then merge them in.
            mb = p[FC_BN_SHIFT] + p[FC_BN_S1] / nb
            m2b = p[FC_BN_S2] - p[FC_BN_S1] * (p[FC_BN_S1] / nb)
            sgb = p[FC_BN_SG]
            db = p[FC_BN_SGD] - (p[FC_BN_S1] / nb) * sgb
            if count == 0:
                count, m, m2, sg, d = nb, mb, m2b, sgb, db
                continue
            total = count + nb
            delta = mb - m
            m_new = m + delta * (nb / total)
            m2 = m2 + m2b + delta * delta * (count * nb / total)
            d = d + (m - m_new) * sg + db + (mb - m_new) * sgb
            sg = sg + sgb
            m = m_new
            count = total
    mean[c] = m
    if var != NULL:
        var[c] = (m2 if not m2 < 0 else 0.0) / count if count > 0 else NAN
    if sum_g != NULL:
        sum_g[c] = sg
        dot[c] = d


cdef void _combine(const double* parts, Geometry geo, double* mean, double* var, double* sum_g, double* dot,
                   int num_threads) noexcept nogil:
    cdef Py_ssize_t c
    if _tasks(geo) < 16384:
        num_threads = 1     # a few microseconds: not worth waking the team
    for c in prange(geo.C, schedule="static", num_threads=num_threads):
        _combine_channel(parts, geo, c, mean, var, sum_g, dot)


#: Channels per task of `_by_channel`: each image's runs are read 16 planes at a time.
cdef Py_ssize_t _GATHER_CHANNELS = 16


def _by_channel(const floating[:, :, ::1] x, int num_threads):
    """The statistics' input: (N, C, L) `x` itself, or for planes of fewer than
    FC_BN_SMALL_PLANE values from several images a (1, C, N * L) copy, each channel's
    values in one run. A segment per plane of a few values would cost more in calls
    and merges than its values (channel_stats on (32, 512, 4): 0.39 ms so, 0.11 ms
    gathered by NumPy)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2], t
    if L >= FC_BN_SMALL_PLANE or N <= 1:
        return x
    out = np.empty((1, C, N * L), dtype=np.asarray(x).dtype)
    cdef floating[:, :, ::1] o = out
    cdef Py_ssize_t tasks = (C + _GATHER_CHANNELS - 1) // _GATHER_CHANNELS
    if tasks == 0 or N * L == 0:
        return out
    for t in prange(tasks, nogil=True, schedule="static", num_threads=num_threads):
        if floating is float:
            fc_bn_by_channel_f(&x[0, 0, 0], &o[0, 0, 0], N, C, L, t * _GATHER_CHANNELS,
                               min(C, (t + 1) * _GATHER_CHANNELS))
        else:
            fc_bn_by_channel_d(&x[0, 0, 0], &o[0, 0, 0], N, C, L, t * _GATHER_CHANNELS,
                               min(C, (t + 1) * _GATHER_CHANNELS))
    return out


def channel_stats(const floating[:, :, ::1] x, double[::1] mean, double[::1] var, int num_threads):
    """mean[c], var[c] = mean and biased variance of x[:, c, :] (x of shape (N, C, L), N*L > 0)."""
    x = _by_channel(x, num_threads)
    cdef Geometry geo = _geometry(x.shape[0], x.shape[1], x.shape[2])
    if mean.shape[0] != geo.C or var.shape[0] != geo.C:
        raise ValueError("mean and var must have one value per channel")
    if _tasks(geo) == 0:
        return
    cdef double[:, ::1] parts = np.empty((_tasks(geo), FC_BN_PART))
    with nogil:
        _segment_sums(&x[0, 0, 0], <const floating*> NULL, geo, &parts[0, 0], num_threads)
        _combine(&parts[0, 0], geo, &mean[0], &var[0], NULL, NULL, num_threads)


def backward_stats(const floating[:, :, ::1] g, const floating[:, :, ::1] x, double[::1] mean, double[::1] var,
                   double[::1] sum_g, double[::1] dot, int num_threads):
    """As `channel_stats`, and in the same pass sum_g[c] = sum(g[:, c]) and
    dot[c] = sum(g[:, c] * (x[:, c] - mean[c])) (g shaped as x)."""
    if not _same_shape(g.shape, x.shape):
        raise ValueError("g and x must have the same shape")
    g, x = _by_channel(g, num_threads), _by_channel(x, num_threads)
    cdef Geometry geo = _geometry(x.shape[0], x.shape[1], x.shape[2])
    if mean.shape[0] != geo.C or var.shape[0] != geo.C or sum_g.shape[0] != geo.C or dot.shape[0] != geo.C:
        raise ValueError("mean, var, sum_g and dot must have one value per channel")
    if _tasks(geo) == 0:
        return
    cdef double[:, ::1] parts = np.empty((_tasks(geo), FC_BN_PART))
    with nogil:
        _segment_sums(&x[0, 0, 0], &g[0, 0, 0], geo, &parts[0, 0], num_threads)
        _combine(&parts[0, 0], geo, &mean[0], &var[0], &sum_g[0], &dot[0], num_threads)


def _spread(coefficients, L):
    """(4, C * L): the four rows of per-channel `coefficients` (4, C), each value
    repeated L times, for the elementwise passes over small planes, which run over an
    image's C * L values in one loop."""
    return np.repeat(coefficients, L, axis=1)


def normalize(const floating[:, :, ::1] x, const floating[:, ::1] coefficients, floating[:, :, ::1] out,
              int num_threads):
    """out[:, c] = ((x[:, c] - mean_hi) - mean_lo) * scale + bias, with
    (mean_hi, mean_lo, scale, bias) = coefficients[c]."""
    cdef Geometry geo = _geometry(x.shape[0], x.shape[1], x.shape[2])
    cdef Py_ssize_t t, o
    cdef const floating* k
    if not _same_shape(out.shape, x.shape):
        raise ValueError("out must have the shape of x")
    if coefficients.shape[0] != geo.C or coefficients.shape[1] != 4:
        raise ValueError("coefficients must have shape (C, 4)")
    if _tasks(geo) == 0:
        return
    cdef Py_ssize_t n
    cdef floating[:, ::1] spread
    if geo.L < FC_BN_SMALL_PLANE:
        spread = _spread(np.asarray(coefficients).T, geo.L)
        for n in prange(geo.N, nogil=True, schedule="dynamic", num_threads=num_threads):
            if floating is float:
                fc_bn_normalize_spread_f(&x[n, 0, 0], &out[n, 0, 0], geo.C * geo.L, &spread[0, 0])
            else:
                fc_bn_normalize_spread_d(&x[n, 0, 0], &out[n, 0, 0], geo.C * geo.L, &spread[0, 0])
        return
    cdef Py_ssize_t chunk = _chunk(geo, num_threads)
    for t in prange(_tasks(geo), nogil=True, schedule="dynamic", chunksize=chunk, num_threads=num_threads):
        o = _offset(geo, t)
        k = &coefficients[_channel(geo, t), 0]
        if floating is float:
            fc_bn_normalize_f(&x[0, 0, 0] + o, &out[0, 0, 0] + o, _length(geo, t), k[0], k[1], k[2], k[3])
        else:
            fc_bn_normalize_d(&x[0, 0, 0] + o, &out[0, 0, 0] + o, _length(geo, t), k[0], k[1], k[2], k[3])


def backward_input(const floating[:, :, ::1] g, const floating[:, :, ::1] x, const double[::1] k,
                   const double[::1] c1, const double[::1] mean, const double[::1] b,
                   floating[:, :, ::1] grad_x, int num_threads):
    """grad_x[:, c] = k[c] * g[:, c] - c1[c] * (x[:, c] - mean[c]) - b[c]."""
    cdef Geometry geo = _geometry(x.shape[0], x.shape[1], x.shape[2])
    cdef Py_ssize_t t, o, c
    if not _same_shape(g.shape, x.shape) or not _same_shape(grad_x.shape, x.shape):
        raise ValueError("g, x and grad_x must have the same shape")
    if k.shape[0] != geo.C or c1.shape[0] != geo.C or mean.shape[0] != geo.C or b.shape[0] != geo.C:
        raise ValueError("k, c1, mean and b must have one value per channel")
    if _tasks(geo) == 0:
        return
    cdef Py_ssize_t n
    cdef double[:, ::1] spread
    if geo.L < FC_BN_SMALL_PLANE:
        spread = _spread(np.stack([k, c1, mean, b]), geo.L)
        for n in prange(geo.N, nogil=True, schedule="dynamic", num_threads=num_threads):
            if floating is float:
                fc_bn_backward_input_spread_f(&g[n, 0, 0], &x[n, 0, 0], &grad_x[n, 0, 0], geo.C * geo.L,
                                              &spread[0, 0])
            else:
                fc_bn_backward_input_spread_d(&g[n, 0, 0], &x[n, 0, 0], &grad_x[n, 0, 0], geo.C * geo.L,
                                              &spread[0, 0])
        return
    cdef Py_ssize_t chunk = _chunk(geo, num_threads)
    for t in prange(_tasks(geo), nogil=True, schedule="dynamic", chunksize=chunk, num_threads=num_threads):
        o = _offset(geo, t)
        c = _channel(geo, t)
        if floating is float:
            fc_bn_backward_input_f(&g[0, 0, 0] + o, &x[0, 0, 0] + o, &grad_x[0, 0, 0] + o, _length(geo, t),
                                   k[c], c1[c], mean[c], b[c])
        else:
            fc_bn_backward_input_d(&g[0, 0, 0] + o, &x[0, 0, 0] + o, &grad_x[0, 0, 0] + o, _length(geo, t),
                                   k[c], c1[c], mean[c], b[c])


def backward_eval(const floating[:, :, ::1] g, const floating[:, :, ::1] x, const double[::1] mean,
                  const double[::1] k, floating[:, :, ::1] grad_x, double[::1] sum_g, double[::1] dot,
                  int num_threads):
    """In one pass: grad_x[:, c] = k[c] * g[:, c], sum_g[c] = sum(g[:, c]) and
    dot[c] = sum(g[:, c] * (x[:, c] - mean[c]))."""
    cdef Geometry geo = _geometry(x.shape[0], x.shape[1], x.shape[2])
    cdef Py_ssize_t t, o, c, n, s
    cdef double* p
    if not _same_shape(g.shape, x.shape) or not _same_shape(grad_x.shape, x.shape):
        raise ValueError("g, x and grad_x must have the same shape")
    if mean.shape[0] != geo.C or k.shape[0] != geo.C or sum_g.shape[0] != geo.C or dot.shape[0] != geo.C:
        raise ValueError("mean, k, sum_g and dot must have one value per channel")
    sum_g[:] = 0.0
    dot[:] = 0.0
    if _tasks(geo) == 0:
        return
    cdef double[:, ::1] parts = np.empty((_tasks(geo), FC_BN_PART))
    cdef Py_ssize_t chunk = _chunk(geo, num_threads)
    for t in prange(_tasks(geo), nogil=True, schedule="dynamic", chunksize=chunk, num_threads=num_threads):
        o = _offset(geo, t)
        c = _channel(geo, t)
        if floating is float:
            fc_bn_backward_eval_f(&g[0, 0, 0] + o, &x[0, 0, 0] + o, &grad_x[0, 0, 0] + o, _length(geo, t),
                                  k[c], mean[c], &parts[t, 0])
        else:
            fc_bn_backward_eval_d(&g[0, 0, 0] + o, &x[0, 0, 0] + o, &grad_x[0, 0, 0] + o, _length(geo, t),
                                  k[c], mean[c], &parts[t, 0])
    # Serial, in task order: a few values per plane.
    for n in range(geo.N):
        for c in range(geo.C):
            for s in range(geo.S):
                p = &parts[(n * geo.C + c) * geo.S + s, 0]
                sum_g[c] += p[FC_BN_SG]
                dot[c] += p[FC_BN_SGD]
