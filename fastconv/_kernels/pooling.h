/* Fused row loops of pooling.pyx for the common 2x2 and 3x3 stride-2 windows, and
 * the vectorised max of a plane: every function is generated for float (suffix _f)
 * and double (suffix _d) by including pooling_impl.h twice.
 *
 * Plain C because `v > m ? v : m` then compiles to maxps/maxpd, where Cython's
 * if/else form becomes a four-instruction blend. maxps drops a NaN in v, so the
 * max loops flag NaNs separately (x != x) and put one back: NaN still propagates.
 * Sums run in torch's order (row-major) and divide once, as torch does.
 */
#ifndef FASTCONV_POOLING_H
#define FASTCONV_POOLING_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#define FASTCONV_MAX(v, m) ((v) > (m) ? (v) : (m))

#define FC_POOL_CAT_(a, b) a##_##b
#define FC_POOL_CAT(a, b) FC_POOL_CAT_(a, b)
#define FC_POOL_FN(name) FC_POOL_CAT(name, SUF)

#define T float
#define SUF f
#include "pooling_impl.h"
#undef T
#undef SUF

#define T double
#define SUF d
#include "pooling_impl.h"
#undef T
#undef SUF

#endif
