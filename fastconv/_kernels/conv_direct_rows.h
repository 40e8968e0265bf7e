/* Register-blocked row kernels for conv_direct.pyx (direct convolution).
 *
 * Written with GCC/Clang vector extensions so that the accumulators of a
 * block of NK channels x a strip of FC_NV vectors of output pixels stay in
 * registers (gcc's auto-vectoriser spills them). The vector width follows the
 * compiler's target: 16 bytes on the portable baseline (SSE2, NEON), 32 bytes
 * when built with AVX. Compilers without vector extensions (MSVC) get the same
 * loops on scalars: correct, just narrower.
 *
 * Every function is generated for float (suffix _f) and double (suffix _d).
 * `nk` (channels in the block, 1..FC_KB) is dispatched to a literal so that
 * each block size gets its own fully unrolled body.
 */
#ifndef FASTCONV_CONV_DIRECT_ROWS_H
#define FASTCONV_CONV_DIRECT_ROWS_H

#include <stddef.h>
#include <string.h>

#define FC_KB 4 /* channels per register block */
#define FC_NV 2 /* vectors per strip of output pixels */
#define FC_NV1 8 /* vectors per strip for one channel (no channel block to hide FMA latency) */

#if (defined(__GNUC__) || defined(__clang__)) && !defined(FC_NO_VECTOR_EXTENSIONS)
#  define FC_INLINE static inline __attribute__((always_inline))
#  if defined(__AVX__)
#    define FC_VBYTES 32
#  else
#    define FC_VBYTES 16
#  endif
#  define FC_VEC_TYPES(T, SUF) typedef T fc_vec_##SUF __attribute__((vector_size(FC_VBYTES)));
#  define FC_LANES(T) (FC_VBYTES / (ptrdiff_t)sizeof(T))
#elif defined(_MSC_VER)
#  define FC_INLINE static __forceinline
#  define FC_VEC_TYPES(T, SUF) typedef T fc_vec_##SUF;
#  define FC_LANES(T) 1
#else
#  define FC_INLINE static inline
#  define FC_VEC_TYPES(T, SUF) typedef T fc_vec_##SUF;
#  define FC_LANES(T) 1
#endif

#define FC_DEFINE_ROWS(T, SUF)                                                                       \
FC_VEC_TYPES(T, SUF)                                                                                 \
                                                                                                     \
FC_INLINE fc_vec_##SUF fc_load_##SUF(const T *p) { fc_vec_##SUF v; memcpy(&v, p, sizeof v); return v; } \
FC_INLINE void fc_store_##SUF(T *p, fc_vec_##SUF v) { memcpy(p, &v, sizeof v); }                   \
FC_INLINE fc_vec_##SUF fc_bcast_##SUF(T s) { fc_vec_##SUF zero = {0}; return s - zero; } /* s - 0 folds; s + 0 does not (-0) */             \
                                                                                                     \
/* Output pixels per strip. */                                                                       \
static ptrdiff_t fc_strip_##SUF(void) { return FC_NV * FC_LANES(T); }                               \
                                                                                                     \
/* out[k, ow0 + s] (+)= sum_{c < nc, i_lo <= i < i_hi, j < kw} w[k*w_k + (c*kh + i)*kw + j]         \
 *                        * rows[(c*kh + i)*row_len + tap_off[j] + ow0 + s]   (one full strip) */   \
FC_INLINE void fc_forward_strip_##SUF(const T *rows, ptrdiff_t row_len, const ptrdiff_t *tap_off,    \
        const T *w, ptrdiff_t w_k, ptrdiff_t nc, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t i_lo,         \
        ptrdiff_t i_hi, T *out, ptrdiff_t out_k, const T *bias, int accumulate, const int nk)        \
{                                                                                                    \
    const ptrdiff_t L = FC_LANES(T);                                                                 \
    fc_vec_##SUF acc[FC_KB][FC_NV];                                                                  \
    int kb, v;                                                                                       \
    ptrdiff_t c, i, j;                                                                               \
    for (kb = 0; kb < nk; kb++)                                                                      \
        for (v = 0; v < FC_NV; v++)                                                                  \
            acc[kb][v] = accumulate ? fc_load_##SUF(out + kb * out_k + v * L) : fc_bcast_##SUF(bias[kb]); \
    for (c = 0; c < nc; c++) {                                                                       \
        for (i = i_lo; i < i_hi; i++) {                                                              \
            const T *row = rows + (c * kh + i) * row_len;                                            \
            const T *wp = w + (c * kh + i) * kw;                                                     \
            for (j = 0; j < kw; j++) {                                                               \
                const T *src = row + tap_off[j];                                                     \
                fc_vec_##SUF x[FC_NV];                                                               \
                for (v = 0; v < FC_NV; v++)                                                          \
                    x[v] = fc_load_##SUF(src + v * L);                                               \
                for (kb = 0; kb < nk; kb++) {                                                        \
                    fc_vec_##SUF wv = fc_bcast_##SUF(wp[kb * w_k + j]);                              \
                    for (v = 0; v < FC_NV; v++)                                                      \
                        acc[kb][v] += wv * x[v];                                                     \
                }                                                                                    \
            }                                                                                        \
        }                                                                                            \
    }                                                                                                \
    for (kb = 0; kb < nk; kb++)                                                                      \
        for (v = 0; v < FC_NV; v++)                                                                  \
            fc_store_##SUF(out + kb * out_k + v * L, acc[kb][v]);                                    \
}                                                                                                    \
                                                                                                     \
/* The same for `width` (< one strip) pixels, on scalars. */                                         \
static void fc_forward_tail_##SUF(const T *rows, ptrdiff_t row_len, const ptrdiff_t *tap_off,        \
        const T *w, ptrdiff_t w_k, ptrdiff_t nc, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t i_lo,         \
        ptrdiff_t i_hi, T *out, ptrdiff_t out_k, const T *bias, int accumulate, int nk,              \
        ptrdiff_t width)                                                                             \
{                                                                                                    \
    int kb;                                                                                          \
    ptrdiff_t c, i, j, s;                                                                            \
    for (kb = 0; kb < nk; kb++)                                                                      \
        for (s = 0; s < width; s++) {                                                                \
            T acc = accumulate ? out[kb * out_k + s] : bias[kb];                                     \
            for (c = 0; c < nc; c++)                                                                 \
                for (i = i_lo; i < i_hi; i++)                                                        \
                    for (j = 0; j < kw; j++)                                                         \
                        acc += w[kb * w_k + (c * kh + i) * kw + j]                                   \
                               * rows[(c * kh + i) * row_len + tap_off[j] + s];                      \
            out[kb * out_k + s] = acc;                                                               \
        }                                                                                            \
}                                                                                                    \
                                                                                                     \
/* One output row segment [0, Wo) of nk channels. */                                                 \
static void fc_forward_row_##SUF(const T *rows, ptrdiff_t row_len, const ptrdiff_t *tap_off,         \
        const T *w, ptrdiff_t w_k, ptrdiff_t nc, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t i_lo,         \
        ptrdiff_t i_hi, T *out, ptrdiff_t out_k, ptrdiff_t Wo, const T *bias, int accumulate, int nk) \
{                                                                                                    \
    const ptrdiff_t S = FC_NV * FC_LANES(T);                                                         \
    ptrdiff_t ow0 = 0;                                                                               \
    for (; ow0 + S <= Wo; ow0 += S) {                                                                \
        const T *r = rows + ow0;                                                                     \
        T *o = out + ow0;                                                                            \
        /* literal block sizes (and the common kernel width 3) give unrolled bodies */             \
        if (kw == 3) {                                                                               \
            switch (nk) {                                                                            \
            case 4: fc_forward_strip_##SUF(r, row_len, tap_off, w, w_k, nc, kh, 3, i_lo, i_hi, o, out_k, bias, accumulate, 4); break; \
            case 3: fc_forward_strip_##SUF(r, row_len, tap_off, w, w_k, nc, kh, 3, i_lo, i_hi, o, out_k, bias, accumulate, 3); break; \
            case 2: fc_forward_strip_##SUF(r, row_len, tap_off, w, w_k, nc, kh, 3, i_lo, i_hi, o, out_k, bias, accumulate, 2); break; \
            default: fc_forward_strip_##SUF(r, row_len, tap_off, w, w_k, nc, kh, 3, i_lo, i_hi, o, out_k, bias, accumulate, 1); \
            }                                                                                        \
        } else {                                                                                     \
            switch (nk) {                                                                            \
            case 4: fc_forward_strip_##SUF(r, row_len, tap_off, w, w_k, nc, kh, kw, i_lo, i_hi, o, out_k, bias, accumulate, 4); break; \
            case 3: fc_forward_strip_##SUF(r, row_len, tap_off, w, w_k, nc, kh, kw, i_lo, i_hi, o, out_k, bias, accumulate, 3); break; \
            case 2: fc_forward_strip_##SUF(r, row_len, tap_off, w, w_k, nc, kh, kw, i_lo, i_hi, o, out_k, bias, accumulate, 2); break; \
            default: fc_forward_strip_##SUF(r, row_len, tap_off, w, w_k, nc, kh, kw, i_lo, i_hi, o, out_k, bias, accumulate, 1); \
            }                                                                                        \
        }                                                                                            \
    }                                                                                                \
    if (ow0 < Wo && Wo >= S && !accumulate) /* an overlapping full strip: same values, vector speed */ \
        fc_forward_row_##SUF(rows + Wo - S, row_len, tap_off, w, w_k, nc, kh, kw, i_lo, i_hi,        \
                             out + Wo - S, out_k, S, bias, accumulate, nk);                          \
    else if (ow0 < Wo)                                                                               \
        fc_forward_tail_##SUF(rows + ow0, row_len, tap_off, w, w_k, nc, kh, kw, i_lo, i_hi,          \
                              out + ow0, out_k, bias, accumulate, nk, Wo - ow0);                     \
}                                                                                                    \
                                                                                                     \
/* dst[c*dst_c + ow] += sum_{k < Kg} w[k*w_k + c*w_c] * go[k*go_k + ow], c < nc, ow < Wo. */          \
FC_INLINE void fc_grad_x_strip_##SUF(const T *go, ptrdiff_t go_k, const T *w, ptrdiff_t w_k,        \
        ptrdiff_t w_c, ptrdiff_t Kg, T *dst, ptrdiff_t dst_c, const int nc, ptrdiff_t skip)           \
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
    } else { /* an overlapping tail strip: add only the pixels past the first `skip` */             \
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
static void fc_grad_x_row_##SUF(const T *go, ptrdiff_t go_k, const T *w, ptrdiff_t w_k,             \
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
FC_INLINE void fc_grad_w_dots_##SUF(T *part, ptrdiff_t part_k, const T *go, ptrdiff_t go_k,         \
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
    for (kb = 0; kb < nk; kb++)                                                                      \
        for (v = 0; v < FC_NV; v++)                                                                  \
            fc_store_##SUF(part + kb * part_k + v * L, acc[kb][v]);                                  \
    for (kb = 0; kb < nk; kb++)                                                                      \
        for (s = 0; ow0 + s < Wo; s++)                                                               \
            part[kb * part_k + s] += go[kb * go_k + ow0 + s] * row[ow0 + s];                         \
}                                                                                                    \
                                                                                                     \
static void fc_grad_w_row_##SUF(T *part, ptrdiff_t part_k, const T *go, ptrdiff_t go_k,             \
        const T *row, ptrdiff_t Wo, int nk)                                                          \
{                                                                                                    \
    switch (nk) {                                                                                    \
    case 4: fc_grad_w_dots_##SUF(part, part_k, go, go_k, row, Wo, 4); break;                         \
    case 3: fc_grad_w_dots_##SUF(part, part_k, go, go_k, row, Wo, 3); break;                         \
    case 2: fc_grad_w_dots_##SUF(part, part_k, go, go_k, row, Wo, 2); break;                         \
    default: fc_grad_w_dots_##SUF(part, part_k, go, go_k, row, Wo, 1);                               \
    }                                                                                                \
}

#define FC_DEFINE_CORRELATE(T, SUF)                                                                  \
/* y[s] (+)= sum_{i < nrows, j < kw} k[i*kw + j] * rows[i*row_len + j + s], s < n: one channel's     \
 * cross-correlation over packed (zero-padded) rows, a strip of FC_NV1 vectors at a time. */          \
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

FC_DEFINE_ROWS(float, f)
FC_DEFINE_ROWS(double, d)
FC_DEFINE_CORRELATE(float, f)
FC_DEFINE_CORRELATE(double, d)

/* Whether this translation unit was compiled for AVX + FMA. */
static int fc_compiled_for_avx_fma(void)
{
#if defined(__AVX__) && defined(__FMA__)
    return 1;
#else
    return 0;
#endif
}

/* Whether the running CPU (and OS) can execute AVX + FMA code. */
static int fc_cpu_has_avx_fma(void)
{
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

#endif
