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

/* The global average's sums with AVX: per plane, the lanes of one vector in four
 * accumulators (a, b, c, d take 4 vectors in turn, then 2 vectors go to a and b, 1 to
 * a, the last values, fewer than a vector, to b by a masked load), then (a + b) + (c + d);
 * a group of planes, one per lane, finishes with one transposing add of their vectors.
 * A horizontal reduction and a scalar tail per plane took longer than reading the
 * plane: ResNet's 32x512x7x7 took 0.6-0.65x the time of the portable build's loop
 * (fc_ap_plane_mean) on one thread. The order is fixed by the plane's size alone. */
#if defined(__AVX__)
#include <immintrin.h>

/* Loading 8 values from fc_ap_tail_mask + 8 - n gives a mask of the first n 32-bit lanes. */
static const int32_t fc_ap_tail_mask[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

/* The lanes of the plane r[0 : L] (the masked load adds +0.0 past the plane, which
 * changes no sum: sums from +0.0 are never -0.0). */
static inline __m256d fc_ap_lanes_d(const double *r, ptrdiff_t L)
{
    __m256d a = _mm256_setzero_pd(), b = a, c = a, d = a;
    ptrdiff_t i = 0;
    for (; i + 16 <= L; i += 16) {
        a = _mm256_add_pd(a, _mm256_loadu_pd(r + i));
        b = _mm256_add_pd(b, _mm256_loadu_pd(r + i + 4));
        c = _mm256_add_pd(c, _mm256_loadu_pd(r + i + 8));
        d = _mm256_add_pd(d, _mm256_loadu_pd(r + i + 12));
    }
    if (i + 8 <= L) {
        a = _mm256_add_pd(a, _mm256_loadu_pd(r + i));
        b = _mm256_add_pd(b, _mm256_loadu_pd(r + i + 4));
        i += 8;
    }
    if (i + 4 <= L) {
        a = _mm256_add_pd(a, _mm256_loadu_pd(r + i));
        i += 4;
    }
    if (i < L)          /* two 32-bit mask lanes per value */
        b = _mm256_add_pd(b, _mm256_maskload_pd(
            r + i, _mm256_loadu_si256((const __m256i *)(fc_ap_tail_mask + 8 - 2 * (L - i)))));
    return _mm256_add_pd(_mm256_add_pd(a, b), _mm256_add_pd(c, d));
}

static inline __m256 fc_ap_lanes_f(const float *r, ptrdiff_t L)
{
    __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;
    ptrdiff_t i = 0;
    for (; i + 32 <= L; i += 32) {
        a = _mm256_add_ps(a, _mm256_loadu_ps(r + i));
        b = _mm256_add_ps(b, _mm256_loadu_ps(r + i + 8));
        c = _mm256_add_ps(c, _mm256_loadu_ps(r + i + 16));
        d = _mm256_add_ps(d, _mm256_loadu_ps(r + i + 24));
    }
    if (i + 16 <= L) {
        a = _mm256_add_ps(a, _mm256_loadu_ps(r + i));
        b = _mm256_add_ps(b, _mm256_loadu_ps(r + i + 8));
        i += 16;
    }
    if (i + 8 <= L) {
        a = _mm256_add_ps(a, _mm256_loadu_ps(r + i));
        i += 8;
    }
    if (i < L)
        b = _mm256_add_ps(b, _mm256_maskload_ps(
            r + i, _mm256_loadu_si256((const __m256i *)(fc_ap_tail_mask + 8 - (L - i)))));
    return _mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d));
}

/* dst[q] = mean of plane q (x + q*L) for q < n <= 4: (l0 + l1) + (l2 + l3) of its lanes. */
static void fc_ap_group_means_d(const double *x, ptrdiff_t L, ptrdiff_t n, double *dst)
{
    __m256d v[4];
    for (int q = 0; q < 4; q++)
        v[q] = q < n ? fc_ap_lanes_d(x + q * L, L) : _mm256_setzero_pd();
    __m256d h01 = _mm256_hadd_pd(v[0], v[1]), h23 = _mm256_hadd_pd(v[2], v[3]);
    __m256d s = _mm256_add_pd(_mm256_permute2f128_pd(h01, h23, 0x20), _mm256_permute2f128_pd(h01, h23, 0x31));
    s = _mm256_div_pd(s, _mm256_set1_pd((double)L));
    if (n == 4) {
        _mm256_storeu_pd(dst, s);
    } else {
        double t[4];
        _mm256_storeu_pd(t, s);
        for (int q = 0; q < n; q++)
            dst[q] = t[q];
    }
}

/* ... q < n <= 8: ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)). */
static void fc_ap_group_means_f(const float *x, ptrdiff_t L, ptrdiff_t n, float *dst)
{
    __m256 v[8];
    for (int q = 0; q < 8; q++)
        v[q] = q < n ? fc_ap_lanes_f(x + q * L, L) : _mm256_setzero_ps();
    __m256 g0 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    __m256 g1 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
    __m256 s = _mm256_add_ps(_mm256_permute2f128_ps(g0, g1, 0x20), _mm256_permute2f128_ps(g0, g1, 0x31));
    s = _mm256_div_ps(s, _mm256_set1_ps((float)L));
    if (n == 8) {
        _mm256_storeu_ps(dst, s);
    } else {
        float t[8];
        _mm256_storeu_ps(t, s);
        for (int q = 0; q < n; q++)
            dst[q] = t[q];
    }
}
#define FC_AP_GROUPED 1
#else
#define FC_AP_GROUPED 0
#endif

#define T float
#define SUF f
#include "adaptive_pool_impl.h"
#undef T
#undef SUF

#define T double
#define SUF d
#include "adaptive_pool_impl.h"
#undef T
#undef SUF

#endif
