/* Per-segment loops of batch_norm.pyx: every function is generated for float
 * (suffix _f) and double (suffix _d) by including batch_norm_impl.h twice.
 *
 * A segment is a contiguous run of one channel's values (part of an (H, W)
 * plane). Its statistics are sums of deviations d = x - K from a shift K, the
 * mean of the segment's first FC_BN_HEAD values: accumulating d and d^2 in
 * double then loses nothing to cancellation even when |mean| >> std (K is
 * within sqrt(FC_BN_SEGMENT / FC_BN_HEAD) standard deviations of the mean),
 * while reading the segment from memory once. The elementwise loops are
 * `omp simd` (plain loops when the compiler has no OpenMP); the reductions keep
 * FC_BN_LANES partial sums, so they vectorise without -ffast-math, and their
 * loop over the lanes is `omp simd` too (lane j stays sum j: the same adds in
 * the same order, but vectorised without the shuffles gcc otherwise chose).
 */
#ifndef FASTCONV_BATCH_NORM_H
#define FASTCONV_BATCH_NORM_H

#include <stddef.h>

/* Values per segment (a task of the parallel loops); a constant, so that the
 * results do not depend on the number of threads. */
#define FC_BN_SEGMENT 8192
#define FC_BN_HEAD 128
/* Planes of fewer values than this run the elementwise passes image by image, all
 * of an image's planes in one loop, with the per-channel coefficients spread to
 * every value: a task (or a loop) per plane of a few values costs more than its
 * values (ResNet-18's 2x2 and 4x4 maps). */
#define FC_BN_SMALL_PLANE 64
/* Independent partial sums per reduction: 4 SSE2 registers of doubles. */
#define FC_BN_LANES 8
/* ... and with g's two sums too (four sums of eight would not fit in 16 registers). */
#define FC_BN_GLANES 4

/* Partial sums of one segment, in this order. */
enum { FC_BN_COUNT, FC_BN_SHIFT, FC_BN_S1, FC_BN_S2, FC_BN_SG, FC_BN_SGD, FC_BN_PART };

#if defined(_OPENMP)
#  define FC_BN_SIMD(clauses) _Pragma(clauses)
#else
#  define FC_BN_SIMD(clauses)
#endif

#define FC_BN_CAT_(a, b) a##_##b
#define FC_BN_CAT(a, b) FC_BN_CAT_(a, b)

#define T float
#define SUF f
#include "batch_norm_impl.h"
#undef T
#undef SUF

#define T double
#define SUF d
#include "batch_norm_impl.h"
#undef T
#undef SUF

#endif
