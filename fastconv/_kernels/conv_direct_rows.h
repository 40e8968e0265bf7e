/* Register-blocked row kernels for conv_direct.pyx (direct convolution).
 *
 * Written with GCC/Clang vector extensions so that the accumulators of a
 * block of NK channels x a strip of FC_NV vectors of output pixels stay in
 * registers (gcc's auto-vectoriser spills them). The vector width follows the
 * compiler's target: 16 bytes on the portable baseline (SSE2, NEON), 32 bytes
 * when built with AVX, 64 with AVX-512F. Compilers without vector extensions (MSVC) get the same
 * loops on scalars: correct, just narrower.
 *
 * Every function is written once, in conv_direct_rows_impl.h, included below for float
 * (names suffixed _f) and double (_d).
 * `nk` (channels in the block, 1..FC_KB) is dispatched to a literal so that
 * each block size gets its own fully unrolled body.
 */
#ifndef FASTCONV_CONV_DIRECT_ROWS_H
#define FASTCONV_CONV_DIRECT_ROWS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define FC_KB 4 /* channels per register block */
#define FC_NV 2 /* vectors per strip of output pixels */
#define FC_NV1 8 /* vectors per strip for one channel (no channel block to hide FMA latency) */
#define FC_MR 4 /* channels per forward tile (fc_tiles' switch has a case for each size up to it) */
#define FC_TV 3 /* vectors of pixels per forward tile: FC_MR x FC_TV accumulators */
#define FC_DW_ROWS 4 /* output rows per depthwise 3x3 tile (fc_dw3_block's switch has a case for each) */
#define FC_DW_VECTORS 2 /* vectors of pixels per depthwise 3x3 tile row: 8 accumulators */
#define FC_CP 12 /* most output pixels per channel tile (fc_channel_tiles' switch has a case for each count) */
#if FC_CP != 12
#  error "fc_channel_tiles' switch covers tiles of 1..12 pixels (and fc_scatter's masks up to 16)"
#endif
#define FC_CV 2 /* vectors of output channels per channel tile: FC_CP x FC_CV accumulators */
#define FC_TAPS_B 4 /* taps per block of grad_weight dots over phase planes (fc_grad_w_taps' switch covers the rest) */
/* Lane correlation (fc_correlate_lanes): FC_LR accumulator vectors x FC_LJ taps in registers. */
#if defined(__AVX512F__)
#  define FC_LR 12
#  define FC_LJ 8
#else
#  define FC_LR 6
#  define FC_LJ 4
#endif

#if (defined(__GNUC__) || defined(__clang__)) && !defined(FC_NO_VECTOR_EXTENSIONS)
#  define FC_VECTORS 1
#  define FC_INLINE static inline __attribute__((always_inline))
#  if defined(__AVX__)
#    define FC_VBYTES 32
#  else
#    define FC_VBYTES 16
#  endif
/* The forward tiles take 64-byte vectors under AVX-512; the row kernels keep 32
 * (measured: their strips, twice as wide, lost 30-40% to tails on 56-pixel rows). */
#  if defined(__AVX512F__)
#    define FC_TILE_VBYTES 64
#  else
#    define FC_TILE_VBYTES FC_VBYTES
#  endif
#  define FC_LANES(T) (FC_VBYTES / (ptrdiff_t)sizeof(T))
#  define FC_TILE_LANES(T) (FC_TILE_VBYTES / (ptrdiff_t)sizeof(T))
#elif defined(_MSC_VER)
#  define FC_INLINE static __forceinline
#  define FC_VECTORS 0
#  define FC_LANES(T) 1
#  define FC_TILE_LANES(T) 1
#else
#  define FC_INLINE static inline
#  define FC_VECTORS 0
#  define FC_LANES(T) 1
#  define FC_TILE_LANES(T) 1
#endif

#if defined(__GNUC__) || defined(__clang__)
#  define FC_RESTRICT __restrict__
#elif defined(_MSC_VER)
#  define FC_RESTRICT __restrict
#else
#  define FC_RESTRICT
#endif

/* Unroll the next loop fully (a constant trip count). */
#if defined(__clang__)
#  define FC_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#  define FC_UNROLL _Pragma("GCC unroll 8")
#else
#  define FC_UNROLL
#endif
#if defined(__clang__)
#  define FC_UNROLL_ALL _Pragma("unroll")
#elif defined(__GNUC__)
#  define FC_UNROLL_ALL _Pragma("GCC unroll 32")
#else
#  define FC_UNROLL_ALL
#endif

#if defined(__GNUC__) || defined(__clang__)
#  define FC_PREFETCH(p) __builtin_prefetch((p), 0, 3)
#else
#  define FC_PREFETCH(p) ((void)(p))
#endif

/* A run of `count` cache lines to prefetch, from line `col` of `row` on, in a region of
 * rows row_lines lines long and `stride` bytes apart (input a later task will read),
 * about `per_block` of them while each block of tiles runs. */
typedef struct {
    const char *row;
    ptrdiff_t col, row_lines, stride, count, per_block;
} fc_prefetch;

/* Prefetch the next (up to) k lines of the run; the cursor moves only onto lines that follow. */
static inline void fc_prefetch_next(fc_prefetch *pf, ptrdiff_t k)
{
    for (; k > 0 && pf->count > 0; k--) {
        FC_PREFETCH(pf->row + pf->col * 64);
        if (--pf->count == 0)
            break;
        if (++pf->col == pf->row_lines) {
            pf->col = 0;
            pf->row += pf->stride;
        }
    }
}


/* Under AVX-512 the forward tiles' partial stores and transposes use intrinsics. */
#if defined(__AVX512F__) && defined(FC_TILE_VBYTES) && FC_TILE_VBYTES == 64
#  include <immintrin.h>
#  define FC_AVX512_TILES 1
#else
#  define FC_AVX512_TILES 0
#endif

#define FC_SPLIT_LOOP(SW) for (m = lo; m < hi; m++) for (r = 0; r < SW; r++) dst[r * ds + m] = src[m * SW + r - pl]

/* Keep a function's copy loops as loops: a libc memcpy call costs more than the short rows that
 * depthwise planes and grad_output rows copy (gcc turns such loops into calls; clang's
 * no_builtin would turn the vector loads' fixed-size memcpys into calls too, so it goes without). */
#if defined(__GNUC__) && !defined(__clang__)
#  define FC_NO_MEMCPY_CALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#  define FC_NO_MEMCPY_CALLS
#endif


/* The vector types and names of the dtype conv_direct_rows_impl.h is being included for. */
#define FC_CAT_(a, b) a##_##b
#define FC_CAT(a, b) FC_CAT_(a, b)
#define FC_FN(name) FC_CAT(name, SUF)
#define FC_VEC FC_FN(fc_vec)
#define FC_TVEC FC_FN(fc_tvec)

#define T float
#define SUF f
#define FC_DOUBLE 0
#include "conv_direct_rows_impl.h"
#undef T
#undef SUF
#undef FC_DOUBLE

#define T double
#define SUF d
#define FC_DOUBLE 1
#include "conv_direct_rows_impl.h"
#undef T
#undef SUF
#undef FC_DOUBLE

#include "isa.h"

#endif
