/* Register-blocked row kernels for conv_direct.pyx (direct convolution).
 *
 * Written with GCC/Clang vector extensions so that the accumulators of a
 * block of NK channels x a strip of FC_NV vectors of output pixels stay in
 * registers (gcc's auto-vectoriser spills them). The vector width follows the
 * compiler's target: 16 bytes on the portable baseline (SSE2, NEON), 32 bytes
 * when built with AVX, 64 with AVX-512F. Compilers without vector extensions (MSVC) get the same
 * loops on scalars: correct, just narrower.
 *
 * Every function is generated for float (suffix _f) and double (suffix _d).
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
#  define FC_VEC_TYPES(T, SUF) typedef T fc_vec_##SUF __attribute__((vector_size(FC_VBYTES)));       \
                               typedef T fc_tvec_##SUF __attribute__((vector_size(FC_TILE_VBYTES)));
#  define FC_LANES(T) (FC_VBYTES / (ptrdiff_t)sizeof(T))
#  define FC_TILE_LANES(T) (FC_TILE_VBYTES / (ptrdiff_t)sizeof(T))
#elif defined(_MSC_VER)
#  define FC_INLINE static __forceinline
#  define FC_VEC_TYPES(T, SUF) typedef T fc_vec_##SUF; typedef T fc_tvec_##SUF;
#  define FC_LANES(T) 1
#  define FC_TILE_LANES(T) 1
#else
#  define FC_INLINE static inline
#  define FC_VEC_TYPES(T, SUF) typedef T fc_vec_##SUF; typedef T fc_tvec_##SUF;
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

/* FC_STORE_LANES_f/_d(dst, v, first, count): dst[i] = lane first + i of a forward tile's vector
 * v, i < count: under AVX-512 one permute and one masked store, elsewhere fc_tstore_lanes. */
#if defined(__AVX512F__) && defined(FC_TILE_VBYTES) && FC_TILE_VBYTES == 64
#  include <immintrin.h>
#  define FC_STORE_LANES_f(dst, v, first, count)                                                     \
    _mm512_mask_storeu_ps((dst), (__mmask16)((1u << (count)) - 1),                                   \
        _mm512_permutexvar_ps(_mm512_add_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), \
                                               _mm512_set1_epi32((int)(first))), (__m512)(v)))
#  define FC_STORE_LANES_d(dst, v, first, count)                                                     \
    _mm512_mask_storeu_pd((dst), (__mmask8)((1u << (count)) - 1),                                    \
        _mm512_permutexvar_pd(_mm512_add_epi64(_mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7),             \
                                               _mm512_set1_epi64(first)), (__m512d)(v)))
#else
#  define FC_STORE_LANES_f fc_tstore_lanes_f
#  define FC_STORE_LANES_d fc_tstore_lanes_d
#endif

#define FC_DEFINE_ROWS(T, SUF)                                                                       \
FC_VEC_TYPES(T, SUF)                                                                                 \
                                                                                                     \
FC_INLINE fc_vec_##SUF fc_load_##SUF(const T *p) { fc_vec_##SUF v; memcpy(&v, p, sizeof v); return v; } \
FC_INLINE void fc_store_##SUF(T *p, fc_vec_##SUF v) { memcpy(p, &v, sizeof v); }                     \
FC_INLINE fc_vec_##SUF fc_bcast_##SUF(T s) { fc_vec_##SUF zero = {0}; return s - zero; } /* s - 0 folds; s + 0 does not (-0) */ \
FC_INLINE fc_tvec_##SUF fc_tload_##SUF(const T *p) { fc_tvec_##SUF v; memcpy(&v, p, sizeof v); return v; } \
FC_INLINE void fc_tstore_##SUF(T *p, fc_tvec_##SUF v) { memcpy(p, &v, sizeof v); }                   \
/* dst[i] = src[i], i < n <= one tile vector, as power-of-two runs: fixed-size copies, no memcpy   \
 * call (one costs more than the few values). */                                                     \
FC_INLINE void fc_copy_runs_##SUF(T *dst, const T *src, ptrdiff_t n)                                 \
{                                                                                                    \
    ptrdiff_t k;                                                                                     \
    FC_UNROLL                                                                                        \
    for (k = FC_TILE_LANES(T); k > 0; k /= 2)                                                        \
        if (n & k) {                                                                                 \
            memcpy(dst, src, k * sizeof(T));                                                         \
            dst += k;                                                                                \
            src += k;                                                                                \
        }                                                                                            \
}                                                                                                    \
/* dst[i] = v[first + i], i < count. */                                                              \
FC_INLINE void fc_tstore_lanes_##SUF(T *dst, fc_tvec_##SUF v, ptrdiff_t first, ptrdiff_t count)      \
{                                                                                                    \
    T lane[FC_TILE_LANES(T)];                                                                        \
    memcpy(lane, &v, sizeof v);                                                                      \
    fc_copy_runs_##SUF(dst, lane + first, count);                                                    \
}                                                                                                    \
FC_INLINE fc_tvec_##SUF fc_tbcast_##SUF(T s) { fc_tvec_##SUF zero = {0}; return s - zero; }          \
                                                                                                     \
/* Output pixels per strip (grad_x, grad_weight). */                                                 \
static ptrdiff_t fc_strip_##SUF(void) { return FC_NV * FC_LANES(T); }                                \
                                                                                                     \
/* Output pixels per forward tile. */                                                                \
static ptrdiff_t fc_tile_width_##SUF(void) { return FC_TV * FC_TILE_LANES(T); }                      \
                                                                                                     \
/* One forward tile: mr (<= FC_MR) channels x FC_TV vectors of the band's pixels p = y*Wq + ox..  \
 * (pixel y*Wq + ox is output pixel (y, ox) when ox < Wo), summed in registers                     \
 *     bias[m] + sum_{t < taps} a[m*lda + t] * src[off[t] + pixel]                                   \
 * and stored into out[m*out_k + y*Wo + ox] for ox < Wo, y < rows: a vector inside one row as a    \
 * whole, one that meets a row's end as its runs of output pixels. Each tap loads FC_TV input      \
 * vectors once and feeds mr * FC_TV multiply-adds. */                                               \
FC_INLINE void fc_tile_##SUF(const T *src, const ptrdiff_t *off, ptrdiff_t taps, const T *a,         \
        ptrdiff_t lda, const T *bias, T *out, ptrdiff_t out_k, ptrdiff_t p, ptrdiff_t y, ptrdiff_t ox, \
        ptrdiff_t rows, ptrdiff_t Wq, ptrdiff_t Wo, const int mr)                                    \
{                                                                                                    \
    const ptrdiff_t L = FC_TILE_LANES(T);                                                            \
    fc_tvec_##SUF acc[FC_MR][FC_TV];                                                                 \
    int m, v;                                                                                        \
    ptrdiff_t t;                                                                                     \
    for (m = 0; m < mr; m++)                                                                         \
        for (v = 0; v < FC_TV; v++)                                                                  \
            acc[m][v] = fc_tbcast_##SUF(bias[m]);                                                    \
    for (t = 0; t < taps; t++) {                                                                     \
        const T *s = src + p + off[t];                                                               \
        fc_tvec_##SUF x[FC_TV];                                                                      \
        for (v = 0; v < FC_TV; v++)                                                                  \
            x[v] = fc_tload_##SUF(s + v * L);                                                        \
        for (m = 0; m < mr; m++) {                                                                   \
            fc_tvec_##SUF w = fc_tbcast_##SUF(a[m * lda + t]);                                       \
            for (v = 0; v < FC_TV; v++)                                                              \
                acc[m][v] += w * x[v];                                                               \
        }                                                                                            \
    }                                                                                                \
    FC_UNROLL /* acc stays in registers only if every index is a constant */                         \
    for (v = 0; v < FC_TV; v++) {                                                                    \
        if (ox + L <= Wo && y < rows) {                                                              \
            for (m = 0; m < mr; m++)                                                                 \
                fc_tstore_##SUF(out + m * out_k + y * Wo + ox, acc[m][v]);                           \
        } else {                                                                                     \
            ptrdiff_t l, ry = y, rx = ox; /* lane l is pixel (ry, rx) */                             \
            for (l = 0; l < L && ry < rows; l += Wq - rx, rx = 0, ry++)                              \
                if (rx < Wo) {                                                                       \
                    const ptrdiff_t count = Wo - rx < L - l ? Wo - rx : L - l;                       \
                    for (m = 0; m < mr; m++)                                                         \
                        FC_STORE_LANES_##SUF(out + m * out_k + ry * Wo + rx, acc[m][v], l, count);   \
                }                                                                                    \
        }                                                                                            \
        for (ox += L; ox >= Wq; ox -= Wq)                                                            \
            y++;                                                                                     \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
/* One block of mr channels over a band of `rows` output rows, tile by tile (skipping tiles with   \
 * no output pixel, between rows of planes much wider than the output), while `pf`'s lines are     \
 * prefetched, spread over the tiles. */                                                         \
FC_INLINE void fc_block_##SUF(const T *src, const ptrdiff_t *off, ptrdiff_t taps, const T *a,        \
        ptrdiff_t lda, const T *bias, T *out, ptrdiff_t out_k, ptrdiff_t rows, ptrdiff_t Wq,         \
        ptrdiff_t Wo, fc_prefetch *pf, const int mr)                                                 \
{                                                                                                    \
    const ptrdiff_t S = FC_TV * FC_TILE_LANES(T), n = (rows - 1) * Wq + Wo, tiles = (n + S - 1) / S; \
    const ptrdiff_t per_tile = (pf->per_block + tiles - 1) / tiles;                                  \
    ptrdiff_t p, y = 0, ox = 0; /* pixel p is (y, ox) */                                             \
    for (p = 0; p < n; p += S) {                                                                     \
        if (pf->count > 0)                                                                           \
            fc_prefetch_next(pf, per_tile);                                                          \
        if (ox < Wo || ox + S > Wq) /* else every pixel of the tile is past its row's outputs */     \
            fc_tile_##SUF(src, off, taps, a, lda, bias, out, out_k, p, y, ox, rows, Wq, Wo, mr);     \
        for (ox += S; ox >= Wq; ox -= Wq)                                                            \
            y++;                                                                                     \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
static void fc_tiles_##SUF(const T *src, const ptrdiff_t *off, ptrdiff_t taps, const T *a,           \
        ptrdiff_t lda, const T *bias, T *out, ptrdiff_t out_k, int mr, ptrdiff_t rows, ptrdiff_t Wq, \
        ptrdiff_t Wo, fc_prefetch *pf)                                                               \
{                                                                                                    \
    switch (mr) { /* literal block sizes: fully unrolled bodies */                                   \
    case 4: fc_block_##SUF(src, off, taps, a, lda, bias, out, out_k, rows, Wq, Wo, pf, 4); break;    \
    case 3: fc_block_##SUF(src, off, taps, a, lda, bias, out, out_k, rows, Wq, Wo, pf, 3); break;    \
    case 2: fc_block_##SUF(src, off, taps, a, lda, bias, out, out_k, rows, Wq, Wo, pf, 2); break;    \
    default: fc_block_##SUF(src, off, taps, a, lda, bias, out, out_k, rows, Wq, Wo, pf, 1);          \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
/* dst[c*dst_c + ow] += sum_{k < Kg} w[k*w_k + c*w_c] * go[k*go_k + ow], c < nc, ow < Wo. */         \
FC_INLINE void fc_grad_x_strip_##SUF(const T *go, ptrdiff_t go_k, const T *w, ptrdiff_t w_k,         \
        ptrdiff_t w_c, ptrdiff_t Kg, T *dst, ptrdiff_t dst_c, const int nc, ptrdiff_t skip)          \
{                                                                                                    \
    const ptrdiff_t L = FC_LANES(T);                                                                 \
    fc_vec_##SUF acc[FC_KB][FC_NV];                                                                  \
    int cb, v;                                                                                       \
    ptrdiff_t k, s;                                                                                  \
    for (cb = 0; cb < nc; cb++)                                                                      \
        for (v = 0; v < FC_NV; v++)                                                                  \
            acc[cb][v] = fc_bcast_##SUF(0);                                                          \
    for (k = 0; k < Kg; k++) {                                                                       \
        fc_vec_##SUF g[FC_NV];                                                                       \
        for (v = 0; v < FC_NV; v++)                                                                  \
            g[v] = fc_load_##SUF(go + k * go_k + v * L);                                             \
        for (cb = 0; cb < nc; cb++) {                                                                \
            fc_vec_##SUF wv = fc_bcast_##SUF(w[k * w_k + cb * w_c]);                                 \
            for (v = 0; v < FC_NV; v++)                                                              \
                acc[cb][v] += wv * g[v];                                                             \
        }                                                                                            \
    }                                                                                                \
    if (skip == 0) {                                                                                 \
        for (cb = 0; cb < nc; cb++)                                                                  \
            for (v = 0; v < FC_NV; v++)                                                              \
                fc_store_##SUF(dst + cb * dst_c + v * L, fc_load_##SUF(dst + cb * dst_c + v * L) + acc[cb][v]); \
    } else { /* an overlapping tail strip: add only the pixels past the first `skip` */              \
        T tmp[FC_NV * FC_LANES(T)];                                                                  \
        for (cb = 0; cb < nc; cb++) {                                                                \
            for (v = 0; v < FC_NV; v++)                                                              \
                fc_store_##SUF(tmp + v * L, acc[cb][v]);                                             \
            for (s = skip; s < FC_NV * L; s++)                                                       \
                dst[cb * dst_c + s] += tmp[s];                                                       \
        }                                                                                            \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
static void fc_grad_x_row_##SUF(const T *go, ptrdiff_t go_k, const T *w, ptrdiff_t w_k,              \
        ptrdiff_t w_c, ptrdiff_t Kg, T *dst, ptrdiff_t dst_c, ptrdiff_t Wo, int nc)                  \
{                                                                                                    \
    const ptrdiff_t S = FC_NV * FC_LANES(T);                                                         \
    ptrdiff_t ow0 = 0, k, s, skip = 0;                                                               \
    int cb;                                                                                          \
    for (;;) {                                                                                       \
        if (ow0 + S > Wo) {                                                                          \
            if (ow0 == Wo || Wo < S)                                                                 \
                break;                                                                               \
            skip = ow0 - (Wo - S); /* last strip: overlap the previous one */                        \
            ow0 = Wo - S;                                                                            \
        }                                                                                            \
        switch (nc) {                                                                                \
        case 4: fc_grad_x_strip_##SUF(go + ow0, go_k, w, w_k, w_c, Kg, dst + ow0, dst_c, 4, skip); break; \
        case 3: fc_grad_x_strip_##SUF(go + ow0, go_k, w, w_k, w_c, Kg, dst + ow0, dst_c, 3, skip); break; \
        case 2: fc_grad_x_strip_##SUF(go + ow0, go_k, w, w_k, w_c, Kg, dst + ow0, dst_c, 2, skip); break; \
        default: fc_grad_x_strip_##SUF(go + ow0, go_k, w, w_k, w_c, Kg, dst + ow0, dst_c, 1, skip);  \
        }                                                                                            \
        ow0 += S;                                                                                    \
        if (skip)                                                                                    \
            return;                                                                                  \
    }                                                                                                \
    for (cb = 0; cb < nc; cb++) /* rows narrower than one strip */                                   \
        for (s = ow0; s < Wo; s++) {                                                                 \
            T acc = 0;                                                                               \
            for (k = 0; k < Kg; k++)                                                                 \
                acc += w[k * w_k + cb * w_c] * go[k * go_k + s];                                     \
            dst[cb * dst_c + s] += acc;                                                              \
        }                                                                                            \
}                                                                                                    \
                                                                                                     \
/* part[k*part_k + s] += sum over ow = s (mod strip) of go[k*go_k + ow] * row[ow], k < nk:           \
 * lane-wise partial sums of nk dot products (the caller adds the lanes up). */                      \
FC_INLINE void fc_grad_w_dots_##SUF(T *part, ptrdiff_t part_k, const T *go, ptrdiff_t go_k,          \
        const T *row, ptrdiff_t Wo, const int nk)                                                    \
{                                                                                                    \
    const ptrdiff_t L = FC_LANES(T), S = FC_NV * FC_LANES(T);                                        \
    fc_vec_##SUF acc[FC_KB][FC_NV];                                                                  \
    int kb, v;                                                                                       \
    ptrdiff_t ow0 = 0, s;                                                                            \
    for (kb = 0; kb < nk; kb++)                                                                      \
        for (v = 0; v < FC_NV; v++)                                                                  \
            acc[kb][v] = fc_load_##SUF(part + kb * part_k + v * L);                                  \
    for (; ow0 + S <= Wo; ow0 += S) {                                                                \
        fc_vec_##SUF x[FC_NV];                                                                       \
        for (v = 0; v < FC_NV; v++)                                                                  \
            x[v] = fc_load_##SUF(row + ow0 + v * L);                                                 \
        for (kb = 0; kb < nk; kb++)                                                                  \
            for (v = 0; v < FC_NV; v++)                                                              \
                acc[kb][v] += fc_load_##SUF(go + kb * go_k + ow0 + v * L) * x[v];                    \
    }                                                                                                \
    for (; ow0 + L <= Wo; ow0 += L) { /* whole vectors left over, before the scalar tail */         \
        fc_vec_##SUF x = fc_load_##SUF(row + ow0);                                                   \
        for (kb = 0; kb < nk; kb++)                                                                  \
            acc[kb][0] += fc_load_##SUF(go + kb * go_k + ow0) * x;                                   \
    }                                                                                                \
    for (kb = 0; kb < nk; kb++)                                                                      \
        for (v = 0; v < FC_NV; v++)                                                                  \
            fc_store_##SUF(part + kb * part_k + v * L, acc[kb][v]);                                  \
    for (kb = 0; kb < nk; kb++)                                                                      \
        for (s = 0; ow0 + s < Wo; s++)                                                               \
            part[kb * part_k + s] += go[kb * go_k + ow0 + s] * row[ow0 + s];                         \
}                                                                                                    \
                                                                                                     \
static void fc_grad_w_row_##SUF(T *part, ptrdiff_t part_k, const T *go, ptrdiff_t go_k,              \
        const T *row, ptrdiff_t Wo, int nk)                                                          \
{                                                                                                    \
    switch (nk) {                                                                                    \
    case 4: fc_grad_w_dots_##SUF(part, part_k, go, go_k, row, Wo, 4); break;                         \
    case 3: fc_grad_w_dots_##SUF(part, part_k, go, go_k, row, Wo, 3); break;                         \
    case 2: fc_grad_w_dots_##SUF(part, part_k, go, go_k, row, Wo, 2); break;                         \
    default: fc_grad_w_dots_##SUF(part, part_k, go, go_k, row, Wo, 1);                               \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
/* gw[t0 + u] += sum_{p < n} go[p] * src[off[t0 + u] + p], u < nt: FC_TAPS_B taps' dots over a      \
 * band's pixels at once, two vectors of pixels per step (n a multiple of 2 vectors). */             \
FC_INLINE void fc_grad_w_taps_block_##SUF(const T *go, ptrdiff_t n, const T *src, const ptrdiff_t *off, \
        ptrdiff_t t0, T *gw, const int nt)                                                           \
{                                                                                                    \
    const ptrdiff_t L = FC_TILE_LANES(T);                                                            \
    fc_tvec_##SUF acc[FC_TAPS_B][2];                                                                 \
    T lane[FC_TILE_LANES(T)];                                                                        \
    int u;                                                                                           \
    ptrdiff_t p, l;                                                                                  \
    for (u = 0; u < nt; u++)                                                                         \
        acc[u][0] = acc[u][1] = fc_tbcast_##SUF(0);                                                  \
    for (p = 0; p < n; p += 2 * L) {                                                                 \
        const fc_tvec_##SUF g0 = fc_tload_##SUF(go + p), g1 = fc_tload_##SUF(go + p + L);            \
        for (u = 0; u < nt; u++) {                                                                   \
            const T *x = src + off[t0 + u] + p;                                                      \
            acc[u][0] += g0 * fc_tload_##SUF(x);                                                     \
            acc[u][1] += g1 * fc_tload_##SUF(x + L);                                                 \
        }                                                                                            \
    }                                                                                                \
    for (u = 0; u < nt; u++) {                                                                       \
        const fc_tvec_##SUF sum = acc[u][0] + acc[u][1];                                             \
        T total = 0;                                                                                 \
        memcpy(lane, &sum, sizeof sum);                                                              \
        for (l = 0; l < L; l++)                                                                      \
            total += lane[l];                                                                        \
        gw[t0 + u] += total;                                                                         \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
/* gw[t] += sum_{p < n} go[p] * src[off[t] + p], t < taps: one output channel's grad_weight over a  \
 * band's phase planes (src, as the forward reads them), go zero at the pixels that are no output. */ \
static void fc_grad_w_taps_##SUF(const T *go, ptrdiff_t n, const T *src, const ptrdiff_t *off,       \
        ptrdiff_t taps, T *gw)                                                                       \
{                                                                                                    \
    ptrdiff_t t0;                                                                                    \
    for (t0 = 0; t0 + FC_TAPS_B <= taps; t0 += FC_TAPS_B)                                            \
        fc_grad_w_taps_block_##SUF(go, n, src, off, t0, gw, FC_TAPS_B);                              \
    switch (taps - t0) {                                                                             \
    case 3: fc_grad_w_taps_block_##SUF(go, n, src, off, t0, gw, 3); break;                           \
    case 2: fc_grad_w_taps_block_##SUF(go, n, src, off, t0, gw, 2); break;                           \
    case 1: fc_grad_w_taps_block_##SUF(go, n, src, off, t0, gw, 1); break;                           \
    default: break;                                                                                  \
    }                                                                                                \
}

#define FC_DEFINE_CORRELATE(T, SUF)                                                                  \
/* y[s] (+)= sum_{i < nrows, j < kw} k[i*kw + j] * rows[i*row_len + j + s], s < n: one channel's     \
 * cross-correlation over packed (zero-padded) rows, a strip of FC_NV1 vectors at a time. */         \
static void fc_correlate_rows_##SUF(const T *rows, ptrdiff_t row_len, ptrdiff_t nrows, const T *k,   \
        ptrdiff_t kw, T *y, ptrdiff_t n, int accumulate)                                             \
{                                                                                                    \
    const ptrdiff_t L = FC_LANES(T), S = FC_NV1 * FC_LANES(T);                                       \
    ptrdiff_t t0 = 0, i, j, s;                                                                       \
    int v;                                                                                           \
    for (; t0 + S <= n; t0 += S) {                                                                   \
        fc_vec_##SUF acc[FC_NV1];                                                                    \
        for (v = 0; v < FC_NV1; v++)                                                                 \
            acc[v] = accumulate ? fc_load_##SUF(y + t0 + v * L) : fc_bcast_##SUF(0);                 \
        for (i = 0; i < nrows; i++) {                                                                \
            const T *src = rows + i * row_len + t0;                                                  \
            for (j = 0; j < kw; j++) {                                                               \
                fc_vec_##SUF kv = fc_bcast_##SUF(k[i * kw + j]);                                     \
                for (v = 0; v < FC_NV1; v++)                                                         \
                    acc[v] += kv * fc_load_##SUF(src + j + v * L);                                   \
            }                                                                                        \
        }                                                                                            \
        for (v = 0; v < FC_NV1; v++)                                                                 \
            fc_store_##SUF(y + t0 + v * L, acc[v]);                                                  \
    }                                                                                                \
    for (s = t0; s < n; s++) {                                                                       \
        T acc = accumulate ? y[s] : 0;                                                               \
        for (i = 0; i < nrows; i++)                                                                  \
            for (j = 0; j < kw; j++)                                                                 \
                acc += k[i * kw + j] * rows[i * row_len + j + s];                                    \
        y[s] = acc;                                                                                  \
    }                                                                                                \
}

#define FC_DEFINE_LANES(T, SUF)                                                                      \
/* y[s] = sum_{j < kw} k[j] * xz[first + s + j], s < n <= L*M, xz zero outside x[0, W): lane l of    \
 * every vector computes the run of outputs [l*M, (l+1)*M). The input goes into `work` transposed,   \
 * work[u*L + l] = xz[first + l*M + u], so that a tap's values for a vector of outputs are one       \
 * aligned load, and a block of FC_LR output vectors x FC_LJ taps loads FC_LR + FC_LJ - 1 vectors    \
 * for FC_LR * FC_LJ multiply-adds. M is a multiple of FC_LR; work holds (M + kw - 1) * L values     \
 * from its first 64-byte boundary on. Each output sums its taps in order, whatever M is. */         \
static void fc_correlate_lanes_##SUF(const T *x, ptrdiff_t W, ptrdiff_t first, const T *k,           \
        ptrdiff_t kw, T *y, ptrdiff_t n, ptrdiff_t M, T *work)                                       \
{                                                                                                    \
    const ptrdiff_t L = FC_TILE_LANES(T), U = M + kw - 1;                                            \
    T *FC_RESTRICT buf = (T *)(((uintptr_t)work + 63) & ~(uintptr_t)63);                             \
    T block[FC_LR * FC_TILE_LANES(T)];                                                               \
    ptrdiff_t l, u, t, j, i, s;                                                                      \
    int r, jj;                                                                                       \
    /* L rows of `work` at a time, every lane: a row is a cache line, and filled lane by lane over   \
     * all rows it would leave L1 before its last lane came. */                                      \
    for (u = 0; u < U; u += L) {                                                                     \
        const ptrdiff_t nu = U - u < L ? U - u : L;                                                  \
        for (l = 0; l < L; l++) {                                                                    \
            const ptrdiff_t base = first + l * M + u;                                                \
            if (nu == L && base >= 0 && base + L <= W) {                                             \
                FC_UNROLL_ALL                                                                        \
                for (i = 0; i < FC_TILE_LANES(T); i++)                                               \
                    buf[(u + i) * L + l] = x[base + i];                                              \
            } else {                                                                                 \
                for (i = 0; i < nu; i++)                                                             \
                    buf[(u + i) * L + l] = base + i >= 0 && base + i < W ? x[base + i] : 0;          \
            }                                                                                        \
        }                                                                                            \
    }                                                                                                \
    for (t = 0; t < M; t += FC_LR) {                                                                 \
        const T *src = buf + t * L;                                                                  \
        fc_tvec_##SUF acc[FC_LR];                                                                    \
        for (r = 0; r < FC_LR; r++)                                                                  \
            acc[r] = fc_tbcast_##SUF(0);                                                             \
        for (j = 0; j + FC_LJ <= kw; j += FC_LJ) {                                                   \
            fc_tvec_##SUF kb[FC_LJ];                                                                 \
            for (jj = 0; jj < FC_LJ; jj++)                                                           \
                kb[jj] = fc_tbcast_##SUF(k[j + jj]);                                                 \
            FC_UNROLL_ALL                                                                            \
            for (u = 0; u < FC_LR + FC_LJ - 1; u++) {                                                \
                const fc_tvec_##SUF xv = fc_tload_##SUF(src + (j + u) * L);                          \
                FC_UNROLL_ALL                                                                        \
                for (r = 0; r < FC_LR; r++)                                                          \
                    if (u - r >= 0 && u - r < FC_LJ)                                                 \
                        acc[r] += kb[u - r] * xv;                                                    \
            }                                                                                        \
        }                                                                                            \
        for (; j < kw; j++) {                                                                        \
            const fc_tvec_##SUF kv = fc_tbcast_##SUF(k[j]);                                          \
            for (r = 0; r < FC_LR; r++)                                                              \
                acc[r] += kv * fc_tload_##SUF(src + (j + r) * L);                                    \
        }                                                                                            \
        if ((L - 1) * M + t + FC_LR <= n) { /* every lane's outputs */                               \
            fc_store_transposed_##SUF(y + t, M, acc, FC_LR);                                         \
        } else {                                                                                     \
            for (r = 0; r < FC_LR; r++)                                                              \
                fc_tstore_##SUF(block + r * L, acc[r]);                                              \
            for (l = 0; l < L; l++)                                                                  \
                for (r = 0, s = l * M + t; r < FC_LR && s < n; r++, s++)                             \
                    y[s] = block[r * L + l];                                                         \
        }                                                                                            \
    }                                                                                                \
}                                                                                                    \
/* Outputs per lane run of fc_correlate_lanes come in multiples of this; lanes per vector. */        \
static ptrdiff_t fc_lane_block_##SUF(void) { return FC_LR; }                                         \
static ptrdiff_t fc_lanes_##SUF(void) { return FC_TILE_LANES(T); }

#define FC_SPLIT_LOOP(SW) for (m = lo; m < hi; m++) for (r = 0; r < SW; r++) dst[r * ds + m] = src[m * SW + r - pl]

/* Keep a function's copy loops as loops: a libc memcpy call costs more than the short rows that
 * depthwise planes and grad_output rows copy (gcc turns such loops into calls; clang's
 * no_builtin would turn the vector loads' fixed-size memcpys into calls too, so it goes without). */
#if defined(__GNUC__) && !defined(__clang__)
#  define FC_NO_MEMCPY_CALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#  define FC_NO_MEMCPY_CALLS
#endif

#define FC_DEFINE_SPLIT(T, SUF)                                                                      \
/* One input row split into its sw stride phases, zero-padded:                                       \
 *     dst[r*ds + m] = src[m*sw + r - pl]  (0 outside [0, W)),  r < sw, m < M.                       \
 * pl < 0 crops. The interior (every phase in bounds) runs with a literal stride for sw <= 4,        \
 * one pass over the source, so that the compiler vectorises the deinterleave. */                    \
FC_NO_MEMCPY_CALLS static void fc_split_##SUF(const T *FC_RESTRICT src, ptrdiff_t W, T *FC_RESTRICT dst, ptrdiff_t ds, \
        ptrdiff_t M, ptrdiff_t sw, ptrdiff_t pl)                                                     \
{                                                                                                    \
    ptrdiff_t lo, hi, m, r, u;                                                                       \
    if (sw == 1) { /* a copy between zero pads: rows as short as a depthwise map's, no divisions */  \
        lo = pl <= 0 ? 0 : pl < M ? pl : M;                                                          \
        hi = W + pl < M ? W + pl : M;                                                                \
        for (m = 0; m < lo; m++)                                                                     \
            dst[m] = 0;                                                                              \
        for (; m + FC_TILE_LANES(T) <= hi; m += FC_TILE_LANES(T))                                    \
            fc_tstore_##SUF(dst + m, fc_tload_##SUF(src + m - pl));                                  \
        if (m < hi) {                                                                                \
            fc_copy_runs_##SUF(dst + m, src + m - pl, hi - m);                                       \
            m = hi;                                                                                  \
        }                                                                                            \
        for (; m < M; m++)                                                                           \
            dst[m] = 0;                                                                              \
        return;                                                                                      \
    }                                                                                                \
    lo = pl <= 0 ? 0 : (pl + sw - 1) / sw;    /* first m with m*sw - pl >= 0 */                      \
    hi = W - sw + pl < 0 ? 0 : (W - sw + pl) / sw + 1; /* past the last m ending < W */              \
    lo = lo < M ? lo : M;                                                                            \
    hi = hi < M ? hi : M;                                                                            \
    hi = hi > lo ? hi : lo;                                                                          \
    for (r = 0; r < sw; r++) {                                                                       \
        for (m = 0; m < lo; m++) {                                                                   \
            u = m * sw + r - pl;                                                                     \
            dst[r * ds + m] = u >= 0 && u < W ? src[u] : 0;                                          \
        }                                                                                            \
        for (m = hi; m < M; m++) {                                                                   \
            u = m * sw + r - pl;                                                                     \
            dst[r * ds + m] = u >= 0 && u < W ? src[u] : 0;                                          \
        }                                                                                            \
    }                                                                                                \
    switch (sw) {                                                                                    \
    case 2: FC_SPLIT_LOOP(2); break;                                                                 \
    case 3: FC_SPLIT_LOOP(3); break;                                                                 \
    case 4: FC_SPLIT_LOOP(4); break;                                                                 \
    default: FC_SPLIT_LOOP(sw);                                                                      \
    }                                                                                                \
}

FC_DEFINE_ROWS(float, f)
FC_DEFINE_ROWS(double, d)
/* fc_scatter_f/_d(out, out_k, r, count): out[l*out_k + i] = lane l of r[i], i < count, for every
 * lane l (r: one tile vector per pixel, a vector's lanes the channels). Under AVX-512 the vectors are
 * transposed in registers and each channel's run goes out in one masked store. */
#if defined(__AVX512F__) && defined(FC_TILE_VBYTES) && FC_TILE_VBYTES == 64
FC_INLINE void fc_scatter_f(float *out, ptrdiff_t out_k, fc_tvec_f r[16], ptrdiff_t count)
{
    __m512 t[16], u[16];
    int i;
    for (i = 0; i < 16; i += 2) { /* 2x2 blocks of pairs, then of 4, 8 and 16 values */
        t[i] = _mm512_unpacklo_ps((__m512)r[i], (__m512)r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps((__m512)r[i], (__m512)r[i + 1]);
    }
    for (i = 0; i < 16; i += 4) {
        u[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(u[i], u[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(u[i], u[i + 4], 0xDD);
        t[i + 8] = _mm512_shuffle_f32x4(u[i + 8], u[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(u[i + 8], u[i + 12], 0xDD);
    }
    for (i = 0; i < 4; i++) {
        u[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        u[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
        u[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
        u[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xDD);
    }
    for (i = 0; i < 16; i++)
        _mm512_mask_storeu_ps(out + i * out_k, (__mmask16)((1u << count) - 1), u[i]);
}
FC_INLINE void fc_scatter_d(double *out, ptrdiff_t out_k, fc_tvec_d r[8], ptrdiff_t count)
{
    __m512d t[8], u[8];
    int i;
    for (i = 0; i < 8; i += 2) {
        t[i] = _mm512_unpacklo_pd((__m512d)r[i], (__m512d)r[i + 1]);
        t[i + 1] = _mm512_unpackhi_pd((__m512d)r[i], (__m512d)r[i + 1]);
    }
    for (i = 0; i < 8; i += 4) {
        u[i] = _mm512_shuffle_f64x2(t[i], t[i + 2], 0x88);
        u[i + 1] = _mm512_shuffle_f64x2(t[i], t[i + 2], 0xDD);
        u[i + 2] = _mm512_shuffle_f64x2(t[i + 1], t[i + 3], 0x88);
        u[i + 3] = _mm512_shuffle_f64x2(t[i + 1], t[i + 3], 0xDD);
    }
    t[0] = _mm512_shuffle_f64x2(u[0], u[4], 0x88);
    t[4] = _mm512_shuffle_f64x2(u[0], u[4], 0xDD);
    t[2] = _mm512_shuffle_f64x2(u[1], u[5], 0x88);
    t[6] = _mm512_shuffle_f64x2(u[1], u[5], 0xDD);
    t[1] = _mm512_shuffle_f64x2(u[2], u[6], 0x88);
    t[5] = _mm512_shuffle_f64x2(u[2], u[6], 0xDD);
    t[3] = _mm512_shuffle_f64x2(u[3], u[7], 0x88);
    t[7] = _mm512_shuffle_f64x2(u[3], u[7], 0xDD);
    for (i = 0; i < 8; i++)
        _mm512_mask_storeu_pd(out + i * out_k, (__mmask8)((1u << count) - 1), t[i]);
}
#else
#  define FC_DEFINE_SCATTER(T, SUF)                                                                  \
FC_INLINE void fc_scatter_##SUF(T *out, ptrdiff_t out_k, fc_tvec_##SUF r[], ptrdiff_t count)       \
{                                                                                                    \
    T lane[FC_TILE_LANES(T)];                                                                        \
    ptrdiff_t i, l;                                                                                  \
    for (i = 0; i < count; i++) {                                                                    \
        memcpy(lane, &r[i], sizeof lane);                                                            \
        for (l = 0; l < FC_TILE_LANES(T); l++)                                                       \
            out[l * out_k + i] = lane[l];                                                            \
    }                                                                                                \
}
FC_DEFINE_SCATTER(float, f)
FC_DEFINE_SCATTER(double, d)
#endif

#define FC_DEFINE_CHANNELS(T, SUF)                                                                   \
/* out[l*out_k + i] = lane l of v[i], i < n, for every lane l: the vectors transposed into rows,    \
 * in runs of at most one vector's lanes (n a literal, so that v can stay in registers). */         \
FC_INLINE void fc_store_transposed_##SUF(T *out, ptrdiff_t out_k, const fc_tvec_##SUF *v, const int n) \
{                                                                                                    \
    const ptrdiff_t L = FC_TILE_LANES(T);                                                            \
    fc_tvec_##SUF r[FC_TILE_LANES(T)];                                                               \
    ptrdiff_t c0, i;                                                                                 \
    FC_UNROLL_ALL                                                                                    \
    for (c0 = 0; c0 < n; c0 += L) {                                                                  \
        FC_UNROLL_ALL                                                                                \
        for (i = 0; i < L; i++)                                                                      \
            r[i] = c0 + i < n ? v[c0 + i] : fc_tbcast_##SUF(0);                                      \
        fc_scatter_##SUF(out + c0, out_k, r, n - c0 < L ? n - c0 : L);                               \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
/* Output channels per channel tile: the packed weights' row length. */                              \
static ptrdiff_t fc_channel_block_##SUF(void) { return FC_CV * FC_TILE_LANES(T); }                   \
                                                                                                     \
/* One channel tile: B = fc_channel_block channels k x P output pixels i of one row,                 \
 *     bias[k] + sum_{t < taps} w[t*B + k] * src[off[t] + i]                                         \
 * stored into out[k*out_k + i]. Its vectors run over channels: each tap loads FC_CV weight          \
 * vectors and broadcasts P inputs, and no lane is spent past the row's end. */                      \
FC_INLINE void fc_ctile_##SUF(const T *src, const ptrdiff_t *off, ptrdiff_t taps, const T *w,        \
        const T *bias, T *out, ptrdiff_t out_k, const int P)                                         \
{                                                                                                    \
    const ptrdiff_t L = FC_TILE_LANES(T), B = FC_CV * FC_TILE_LANES(T);                              \
    fc_tvec_##SUF acc[FC_CV][FC_CP];                                                                 \
    int i, v;                                                                                        \
    ptrdiff_t t;                                                                                     \
    FC_UNROLL_ALL                                                                                    \
    for (i = 0; i < P; i++)                                                                          \
        for (v = 0; v < FC_CV; v++)                                                                  \
            acc[v][i] = fc_tload_##SUF(bias + v * L);                                                \
    for (t = 0; t < taps; t++) {                                                                     \
        const T *s = src + off[t];                                                                   \
        fc_tvec_##SUF wv[FC_CV];                                                                     \
        for (v = 0; v < FC_CV; v++)                                                                  \
            wv[v] = fc_tload_##SUF(w + t * B + v * L);                                               \
        FC_UNROLL_ALL                                                                                \
        for (i = 0; i < P; i++) {                                                                    \
            const fc_tvec_##SUF x = fc_tbcast_##SUF(s[i]);                                           \
            for (v = 0; v < FC_CV; v++)                                                              \
                acc[v][i] += x * wv[v];                                                              \
        }                                                                                            \
    }                                                                                                \
    FC_UNROLL_ALL /* acc stays in registers only if every index is a constant */                     \
    for (v = 0; v < FC_CV; v++)                                                                      \
        fc_store_transposed_##SUF(out + v * L * out_k, out_k, acc[v], P);                            \
}                                                                                                    \
                                                                                                     \
/* One channel tile's channels over a band of `rows` output rows, each row in near-equal channel    \
 * tiles of at most FC_CP pixels, while `pf`'s lines are prefetched, spread over the tiles. src,    \
 * w, bias and out as fc_ctile's, at the band's first pixel. */                                     \
static void fc_channel_tiles_##SUF(const T *src, const ptrdiff_t *off, ptrdiff_t taps, const T *w,   \
        const T *bias, T *out, ptrdiff_t out_k, ptrdiff_t rows, ptrdiff_t Wq, ptrdiff_t Wo,          \
        fc_prefetch *pf)                                                                             \
{                                                                                                    \
    const ptrdiff_t n = (Wo + FC_CP - 1) / FC_CP, P = Wo / n, wide = Wo % n; /* tiles j < wide: P+1 */ \
    const ptrdiff_t per_tile = (pf->per_block + rows * n - 1) / (rows * n);                          \
    ptrdiff_t y, j, ox;                                                                              \
    for (y = 0; y < rows; y++)                                                                       \
        for (j = 0, ox = 0; j < n; ox += P + (j < wide), j++) {                                      \
            const T *s = src + y * Wq + ox;                                                          \
            T *o = out + y * Wo + ox;                                                                \
            if (pf->count > 0)                                                                       \
                fc_prefetch_next(pf, per_tile);                                                      \
            switch (P + (j < wide)) { /* literal pixel counts: fully unrolled bodies */              \
            case 12: fc_ctile_##SUF(s, off, taps, w, bias, o, out_k, 12); break;                     \
            case 11: fc_ctile_##SUF(s, off, taps, w, bias, o, out_k, 11); break;                     \
            case 10: fc_ctile_##SUF(s, off, taps, w, bias, o, out_k, 10); break;                     \
            case 9: fc_ctile_##SUF(s, off, taps, w, bias, o, out_k, 9); break;                       \
            case 8: fc_ctile_##SUF(s, off, taps, w, bias, o, out_k, 8); break;                       \
            case 7: fc_ctile_##SUF(s, off, taps, w, bias, o, out_k, 7); break;                       \
            case 6: fc_ctile_##SUF(s, off, taps, w, bias, o, out_k, 6); break;                       \
            case 5: fc_ctile_##SUF(s, off, taps, w, bias, o, out_k, 5); break;                       \
            case 4: fc_ctile_##SUF(s, off, taps, w, bias, o, out_k, 4); break;                       \
            case 3: fc_ctile_##SUF(s, off, taps, w, bias, o, out_k, 3); break;                       \
            case 2: fc_ctile_##SUF(s, off, taps, w, bias, o, out_k, 2); break;                       \
            default: fc_ctile_##SUF(s, off, taps, w, bias, o, out_k, 1);                             \
            }                                                                                        \
        }                                                                                            \
}

FC_DEFINE_CHANNELS(float, f)
FC_DEFINE_CHANNELS(double, d)
FC_DEFINE_CORRELATE(float, f)
FC_DEFINE_CORRELATE(double, d)
FC_DEFINE_SPLIT(float, f)
FC_DEFINE_SPLIT(double, d)
FC_DEFINE_LANES(float, f)
FC_DEFINE_LANES(double, d)

#include "isa.h"

#endif
