/* Window loops of adaptive_pool.pyx: every function is generated for float
 * (suffix _f) and double (suffix _d) by including adaptive_pool_impl.h twice.
 * Plain C so that the max scan compiles to selects, not branches (a branch per
 * element mispredicts on every new maximum), and the sums to `omp simd`
 * reductions (vectorised without -ffast-math; serial without OpenMP).
 */
#ifndef FASTCONV_ADAPTIVE_POOL_H
#define FASTCONV_ADAPTIVE_POOL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#if defined(_OPENMP)
#  define FC_AP_SIMD(clauses) _Pragma(clauses)
#else
#  define FC_AP_SIMD(clauses)
#endif

#define FC_AP_CAT_(a, b) a##_##b
#define FC_AP_CAT(a, b) FC_AP_CAT_(a, b)

/* The global average's sums with AVX (fc_ap_lanes, fc_ap_group_means in
 * adaptive_pool_impl.h): per plane, the lanes of one vector in four accumulators (a,
 * b, c, d take 4 vectors in turn, then 2 vectors go to a and b, 1 to a, the last
 * values, fewer than a vector, to b by a masked load), then (a + b) + (c + d); a group
 * of planes, one per lane, finishes with one transposing add of their vectors. A
 * horizontal reduction and a scalar tail per plane took longer than reading the plane:
 * ResNet's 32x512x7x7 took 0.6-0.65x the time of the portable build's loop
 * (fc_ap_plane_mean) on one thread. The order is fixed by the plane's size alone.
 * FC_AP_V and FC_AP_OP name each element type's vector and intrinsics, FC_AP_MASK_PER
 * the 32-bit mask lanes per value. */
#if defined(__AVX__)
#include <immintrin.h>
#define FC_AP_GROUPED 1
/* Loading 8 values from fc_ap_tail_mask + 8 - n gives a mask of the first n 32-bit lanes. */
static const int32_t fc_ap_tail_mask[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
#else
#define FC_AP_GROUPED 0
#endif

#define T float
#define SUF f
#define FC_AP_V __m256
#define FC_AP_OP(name) _mm256_##name##_ps
#define FC_AP_MASK_PER 1
#include "adaptive_pool_impl.h"
#undef T
#undef SUF
#undef FC_AP_V
#undef FC_AP_OP
#undef FC_AP_MASK_PER

#define T double
#define SUF d
#define FC_AP_V __m256d
#define FC_AP_OP(name) _mm256_##name##_pd
#define FC_AP_MASK_PER 2
#include "adaptive_pool_impl.h"
#undef T
#undef SUF
#undef FC_AP_V
#undef FC_AP_OP
#undef FC_AP_MASK_PER

#endif
