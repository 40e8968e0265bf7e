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
