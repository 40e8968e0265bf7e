/* Winograd F(m x m, 3 x 3) convolution kernels for conv_winograd.pyx.
 *
 * winograd_impl.h is included once per dtype: float runs F(4x4, 3x3) (WG_BT4 /
 * WG_AT4), double F(6x6, 3x3) (WG_BT6 / WG_AT6), both from the generated
 * winograd_transforms.h. Vectors are GCC/Clang vector extensions whose width
 * follows the compiler's target, as in conv_direct_rows.h: 16 bytes on the
 * portable baseline, 32 with AVX, 64 with AVX-512F; other compilers get scalars.
 */
#ifndef FASTCONV_WINOGRAD_H
#define FASTCONV_WINOGRAD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "winograd_transforms.h"

#if (defined(__GNUC__) || defined(__clang__)) && !defined(FC_NO_VECTOR_EXTENSIONS)
#  define WG_VECTORS 1
#  define WG_INLINE static inline __attribute__((always_inline))
#  define WG_NOINLINE static __attribute__((noinline))
#  if defined(__AVX512F__)
#    include <immintrin.h>
#    define WG_VBYTES 64
#  elif defined(__AVX__)
#    define WG_VBYTES 32
#  else
#    define WG_VBYTES 16
#  endif
#else
#  define WG_VECTORS 0
#  define WG_NOINLINE static
#  if defined(_MSC_VER)
#    define WG_INLINE static __forceinline
#  else
#    define WG_INLINE static inline
#  endif
#endif

/* Register tile of the per-point GEMMs: WG_MR output channels x WG_NV vectors of
 * tiles (a chunk of tiles is exactly WG_NV vectors wide). AVX-512 has 32 vector
 * registers for the 24 accumulators; SSE2/AVX have 16, for 12. */
#if defined(__AVX512F__)
#  define WG_MR 8
#  define WG_NV 3
#else
#  define WG_MR 4
#  define WG_NV 3
#endif

#if defined(__GNUC__) || defined(__clang__)
#  define FC_RESTRICT_WG __restrict__
#else
#  define FC_RESTRICT_WG
#endif

#if defined(__GNUC__) || defined(__clang__)
#  define WG_PREFETCH(p) __builtin_prefetch((p), 0, 3)
#else
#  define WG_PREFETCH(p) ((void)(p))
#endif
/* Rows of fewer tiles than this take the per-tile path (wg_input_tiles / wg_output_tiles). */
#ifndef WG_NARROW_BELOW
#  if defined(__AVX512F__) && WG_VECTORS
/* float's segments (wg_input_segment16) beat the per-tile path from 5 tiles a row on */
#    define WG_NARROW_BELOW (WG_M == 4 ? 5 : WG_L)
#  else
#    define WG_NARROW_BELOW WG_L
#  endif
#endif
/* Channels ahead whose input rows the input transform prefetches. */
#define WG_AHEAD 2

#if defined(__clang__)
#  define WG_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#  define WG_UNROLL _Pragma("GCC unroll 16")
#else
#  define WG_UNROLL
#endif

/* Names and sizes of the dtype winograd_impl.h is being included for. */
#define WG_CAT_(a, b) a##_##b
#define WG_CAT(a, b) WG_CAT_(a, b)
#define WG_FN(name) WG_CAT(name, WG_SUF)
#define WG_V WG_FN(wg_vec)
#define WG_N (WG_M + 2)
#define WG_P (WG_N * WG_N)
#if WG_VECTORS
#  define WG_L ((ptrdiff_t)(WG_VBYTES / sizeof(WG_T)))
#else
#  define WG_L ((ptrdiff_t)1)
#endif

#define WG_T float
#define WG_SUF f
#define WG_M 4
#define WG_BT WG_BT4
#define WG_AT WG_AT4
#include "winograd_impl.h"
#undef WG_T
#undef WG_SUF
#undef WG_M
#undef WG_BT
#undef WG_AT

#define WG_T double
#define WG_SUF d
#define WG_M 6
#define WG_BT WG_BT6
#define WG_AT WG_AT6
#include "winograd_impl.h"
#undef WG_T
#undef WG_SUF
#undef WG_M
#undef WG_BT
#undef WG_AT

#include "isa.h"

#endif
