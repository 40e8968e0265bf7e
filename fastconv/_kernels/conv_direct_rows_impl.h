/* One dtype's direct-convolution kernels: the body of conv_direct_rows.h, included
 * there once per element type with T (float or double), SUF (f or d: the suffix of
 * every name, FC_FN(fc_load) is fc_load_f) and FC_DOUBLE (0 or 1) defined. Plain C,
 * so that a compiler error, gdb or a sanitizer points at the line that runs.
 * No include guard (on purpose). */

#if FC_VECTORS
typedef T FC_VEC __attribute__((vector_size(FC_VBYTES)));
typedef T FC_TVEC __attribute__((vector_size(FC_TILE_VBYTES)));
#else
typedef T FC_VEC;
typedef T FC_TVEC;
#endif

FC_INLINE FC_VEC FC_FN(fc_load)(const T *p) { FC_VEC v; memcpy(&v, p, sizeof v); return v; }
FC_INLINE void FC_FN(fc_store)(T *p, FC_VEC v) { memcpy(p, &v, sizeof v); }
FC_INLINE FC_VEC FC_FN(fc_bcast)(T s) { FC_VEC zero = {0}; return s - zero; } /* s - 0 folds; s + 0 does not (-0) */
FC_INLINE FC_TVEC FC_FN(fc_tload)(const T *p) { FC_TVEC v; memcpy(&v, p, sizeof v); return v; }
FC_INLINE void FC_FN(fc_tstore)(T *p, FC_TVEC v) { memcpy(p, &v, sizeof v); }
/* dst[i] = src[i], i < n <= one tile vector, as power-of-two runs: fixed-size copies, no memcpy
 * call (one costs more than the few values). */
FC_INLINE void FC_FN(fc_copy_runs)(T *dst, const T *src, ptrdiff_t n)
{
    ptrdiff_t k;
    FC_UNROLL
    for (k = FC_TILE_LANES(T); k > 0; k /= 2)
        if (n & k) {
            memcpy(dst, src, k * sizeof(T));
            dst += k;
            src += k;
        }
}
/* dst[i] = v[first + i], i < count. */
FC_INLINE void FC_FN(fc_tstore_lanes)(T *dst, FC_TVEC v, ptrdiff_t first, ptrdiff_t count)
{
    T lane[FC_TILE_LANES(T)];
    memcpy(lane, &v, sizeof v);
    FC_FN(fc_copy_runs)(dst, lane + first, count);
}
FC_INLINE FC_TVEC FC_FN(fc_tbcast)(T s) { FC_TVEC zero = {0}; return s - zero; }
/* max(v, 0) lane by lane, as `v < 0 ? 0 : v`: NaN stays NaN (as torch's relu). The fused
 * activation of the forward's store (the comparison's all-ones lanes clear the negative ones). */
#if FC_VECTORS
#  if FC_DOUBLE
typedef long long FC_FN(fc_tmask) __attribute__((vector_size(FC_TILE_VBYTES)));
#  else
typedef int FC_FN(fc_tmask) __attribute__((vector_size(FC_TILE_VBYTES)));
#  endif
FC_INLINE FC_TVEC FC_FN(fc_relu)(FC_TVEC v)
{
    const FC_TVEC zero = {0};
    return (FC_TVEC)((FC_FN(fc_tmask))v & ~(FC_FN(fc_tmask))(v < zero));
}
#else
FC_INLINE FC_TVEC FC_FN(fc_relu)(FC_TVEC v) { return v < 0 ? (T)0 : v; }
#endif

/* dst[i] = lane first + i of a forward tile's vector v, i < count: under AVX-512 one permute and
 * one masked store, elsewhere fc_tstore_lanes. */
FC_INLINE void FC_FN(fc_store_lanes)(T *dst, FC_TVEC v, ptrdiff_t first, ptrdiff_t count)
{
#if FC_AVX512_TILES && FC_DOUBLE
    _mm512_mask_storeu_pd(dst, (__mmask8)((1u << count) - 1),
        _mm512_permutexvar_pd(_mm512_add_epi64(_mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7), _mm512_set1_epi64(first)),
                              (__m512d)v));
#elif FC_AVX512_TILES
    _mm512_mask_storeu_ps(dst, (__mmask16)((1u << count) - 1),
        _mm512_permutexvar_ps(_mm512_add_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                               _mm512_set1_epi32((int)first)),
                              (__m512)v));
#else
    FC_FN(fc_tstore_lanes)(dst, v, first, count);
#endif
}

/* Output pixels per strip (grad_x, grad_weight). */
static ptrdiff_t FC_FN(fc_strip)(void) { return FC_NV * FC_LANES(T); }

/* Output pixels per forward tile. */
static ptrdiff_t FC_FN(fc_tile_width)(void) { return FC_TV * FC_TILE_LANES(T); }

/* One forward tile: mr (<= FC_MR) channels x FC_TV vectors of the band's pixels p = y*Wq + ox..
 * (pixel y*Wq + ox is output pixel (y, ox) when ox < Wo), summed in registers
 *     bias[m] + sum_{t < taps} a[m*lda + t] * src[off[t] + pixel]
 * (with `relu`: max(that, 0)) and stored into out[m*out_k + y*Wo + ox] for ox < Wo, y < rows
 * (written once: bias and activation fused into the store): a vector inside one row as a
 * whole, one that meets a row's end as its runs of output pixels. Each tap loads FC_TV input
 * vectors once and feeds mr * FC_TV multiply-adds. */
FC_INLINE void FC_FN(fc_tile)(const T *src, const ptrdiff_t *off, ptrdiff_t taps, const T *a,
        ptrdiff_t lda, const T *bias, T *out, ptrdiff_t out_k, ptrdiff_t p, ptrdiff_t y, ptrdiff_t ox,
        ptrdiff_t rows, ptrdiff_t Wq, ptrdiff_t Wo, int relu, const int mr)
{
    const ptrdiff_t L = FC_TILE_LANES(T);
    FC_TVEC acc[FC_MR][FC_TV];
    int m, v;
    ptrdiff_t t;
    for (m = 0; m < mr; m++)
        for (v = 0; v < FC_TV; v++)
            acc[m][v] = FC_FN(fc_tbcast)(bias[m]);
    for (t = 0; t < taps; t++) {
        const T *s = src + p + off[t];
        FC_TVEC x[FC_TV];
        for (v = 0; v < FC_TV; v++)
            x[v] = FC_FN(fc_tload)(s + v * L);
        for (m = 0; m < mr; m++) {
            FC_TVEC w = FC_FN(fc_tbcast)(a[m * lda + t]);
            for (v = 0; v < FC_TV; v++)
                acc[m][v] += w * x[v];
        }
    }
    if (relu) {
        for (m = 0; m < mr; m++) {
            FC_UNROLL
            for (v = 0; v < FC_TV; v++)
                acc[m][v] = FC_FN(fc_relu)(acc[m][v]);
        }
    }
    FC_UNROLL /* acc stays in registers only if every index is a constant */
    for (v = 0; v < FC_TV; v++) {
        if (ox + L <= Wo && y < rows) {
            for (m = 0; m < mr; m++)
                FC_FN(fc_tstore)(out + m * out_k + y * Wo + ox, acc[m][v]);
        } else {
            ptrdiff_t l, ry = y, rx = ox; /* lane l is pixel (ry, rx) */
            for (l = 0; l < L && ry < rows; l += Wq - rx, rx = 0, ry++)
                if (rx < Wo) {
                    const ptrdiff_t count = Wo - rx < L - l ? Wo - rx : L - l;
                    for (m = 0; m < mr; m++)
                        FC_FN(fc_store_lanes)(out + m * out_k + ry * Wo + rx, acc[m][v], l, count);
                }
        }
        for (ox += L; ox >= Wq; ox -= Wq)
            y++;
    }
}

/* One block of mr channels over a band of `rows` output rows, tile by tile (skipping tiles with
 * no output pixel, between rows of planes much wider than the output), while `pf`'s lines are
 * prefetched, spread over the tiles; with `relu`, max(sum, 0) is stored. */
FC_INLINE void FC_FN(fc_block)(const T *src, const ptrdiff_t *off, ptrdiff_t taps, const T *a,
        ptrdiff_t lda, const T *bias, T *out, ptrdiff_t out_k, ptrdiff_t rows, ptrdiff_t Wq,
        ptrdiff_t Wo, int relu, fc_prefetch *pf, const int mr)
{
    const ptrdiff_t S = FC_TV * FC_TILE_LANES(T), n = (rows - 1) * Wq + Wo, tiles = (n + S - 1) / S;
    const ptrdiff_t per_tile = (pf->per_block + tiles - 1) / tiles;
    ptrdiff_t p, y = 0, ox = 0; /* pixel p is (y, ox) */
    for (p = 0; p < n; p += S) {
        if (pf->count > 0)
            fc_prefetch_next(pf, per_tile);
        if (ox < Wo || ox + S > Wq) /* else every pixel of the tile is past its row's outputs */
            FC_FN(fc_tile)(src, off, taps, a, lda, bias, out, out_k, p, y, ox, rows, Wq, Wo, relu, mr);
        for (ox += S; ox >= Wq; ox -= Wq)
            y++;
    }
}

static void FC_FN(fc_tiles)(const T *src, const ptrdiff_t *off, ptrdiff_t taps, const T *a,
        ptrdiff_t lda, const T *bias, T *out, ptrdiff_t out_k, int mr, ptrdiff_t rows, ptrdiff_t Wq,
        ptrdiff_t Wo, int relu, fc_prefetch *pf)
{
    switch (mr) { /* literal block sizes: fully unrolled bodies */
    case 4: FC_FN(fc_block)(src, off, taps, a, lda, bias, out, out_k, rows, Wq, Wo, relu, pf, 4); break;
    case 3: FC_FN(fc_block)(src, off, taps, a, lda, bias, out, out_k, rows, Wq, Wo, relu, pf, 3); break;
    case 2: FC_FN(fc_block)(src, off, taps, a, lda, bias, out, out_k, rows, Wq, Wo, relu, pf, 2); break;
    default: FC_FN(fc_block)(src, off, taps, a, lda, bias, out, out_k, rows, Wq, Wo, relu, pf, 1);
    }
}

/* One tile of a depthwise 3x3 convolution at stride 1 and dilation 1 (fc_dw3_block): output
 * rows y < nr (<= FC_DW_ROWS) by FC_DW_VECTORS vectors of pixels from ox, of one channel whose
 * plane (Wq wide, its band's rows from `src`) holds the zero-padded input:
 *     out[y*Wo + ox + p] = b + sum_{i, j < 3} w[3i + j] * src[(y + i)*Wq + ox + p + j]
 * (with `relu`: max(that, 0)), stored for ox + p < Wo. Each input row's three shifted loads
 * feed every output row of the tile that reads it (up to three). */
FC_INLINE void FC_FN(fc_dw3_tile)(const T *src, ptrdiff_t Wq, const FC_TVEC *w, FC_TVEC b, T *out,
        ptrdiff_t Wo, ptrdiff_t ox, int relu, const int nr)
{
    const ptrdiff_t L = FC_TILE_LANES(T);
    FC_TVEC acc[FC_DW_ROWS][FC_DW_VECTORS];
    int y, v, r, i, j;
    for (y = 0; y < nr; y++)
        FC_UNROLL
        for (v = 0; v < FC_DW_VECTORS; v++)
            acc[y][v] = b;
    FC_UNROLL
    for (r = 0; r < nr + 2; r++) {
        FC_UNROLL
        for (j = 0; j < 3; j++) {
            FC_TVEC x[FC_DW_VECTORS];
            FC_UNROLL
            for (v = 0; v < FC_DW_VECTORS; v++)
                x[v] = FC_FN(fc_tload)(src + r * Wq + ox + j + v * L);
            FC_UNROLL
            for (i = 0; i < 3; i++)
                if (r - i >= 0 && r - i < nr) {
                    FC_UNROLL
                    for (v = 0; v < FC_DW_VECTORS; v++)
                        acc[r - i][v] += w[3 * i + j] * x[v];
                }
        }
    }
    FC_UNROLL /* acc stays in registers only if every index is a constant */
    for (y = 0; y < nr; y++) {
        FC_UNROLL
        for (v = 0; v < FC_DW_VECTORS; v++) {
            const ptrdiff_t px = ox + v * L;
            FC_TVEC a = relu ? FC_FN(fc_relu)(acc[y][v]) : acc[y][v];
            if (px + L <= Wo)
                FC_FN(fc_tstore)(out + y * Wo + px, a);
            else if (px < Wo)
                FC_FN(fc_store_lanes)(out + y * Wo + px, a, 0, Wo - px);
        }
    }
}

/* A depthwise 3x3 convolution at stride 1 and dilation 1 over one channel's band of `rows`
 * output rows (the forward's plane at `src`, Wq wide, and its weights w[0..8]), tile by
 * tile of FC_DW_ROWS rows: the pixel tiles (fc_tiles), one channel over a run of pixels,
 * loaded each input vector for a single tap. */
static void FC_FN(fc_dw3_block)(const T *src, ptrdiff_t Wq, const T *w, T bias, T *out, ptrdiff_t rows,
        ptrdiff_t Wo, int relu)
{
    const ptrdiff_t S = FC_DW_VECTORS * FC_TILE_LANES(T);
    FC_TVEC wv[9], b = FC_FN(fc_tbcast)(bias);
    ptrdiff_t y0, ox;
    int t;
    for (t = 0; t < 9; t++)
        wv[t] = FC_FN(fc_tbcast)(w[t]);
    for (y0 = 0; y0 < rows; y0 += FC_DW_ROWS) {
        const T *s = src + y0 * Wq;
        T *o = out + y0 * Wo;
        for (ox = 0; ox < Wo; ox += S)
            switch (rows - y0 < FC_DW_ROWS ? rows - y0 : FC_DW_ROWS) { /* literal heights: unrolled bodies */
            case 4: FC_FN(fc_dw3_tile)(s, Wq, wv, b, o, Wo, ox, relu, 4); break;
            case 3: FC_FN(fc_dw3_tile)(s, Wq, wv, b, o, Wo, ox, relu, 3); break;
            case 2: FC_FN(fc_dw3_tile)(s, Wq, wv, b, o, Wo, ox, relu, 2); break;
            default: FC_FN(fc_dw3_tile)(s, Wq, wv, b, o, Wo, ox, relu, 1);
            }
    }
}

/* dst[c*dst_c + ow] += sum_{k < Kg} w[k*w_k + c*w_c] * go[k*go_k + ow], c < nc, ow < Wo. */
FC_INLINE void FC_FN(fc_grad_x_strip)(const T *go, ptrdiff_t go_k, const T *w, ptrdiff_t w_k,
        ptrdiff_t w_c, ptrdiff_t Kg, T *dst, ptrdiff_t dst_c, const int nc, ptrdiff_t skip)
{
    const ptrdiff_t L = FC_LANES(T);
    FC_VEC acc[FC_KB][FC_NV];
    int cb, v;
    ptrdiff_t k, s;
    for (cb = 0; cb < nc; cb++)
        for (v = 0; v < FC_NV; v++)
            acc[cb][v] = FC_FN(fc_bcast)(0);
    for (k = 0; k < Kg; k++) {
        FC_VEC g[FC_NV];
        for (v = 0; v < FC_NV; v++)
            g[v] = FC_FN(fc_load)(go + k * go_k + v * L);
        for (cb = 0; cb < nc; cb++) {
            FC_VEC wv = FC_FN(fc_bcast)(w[k * w_k + cb * w_c]);
            for (v = 0; v < FC_NV; v++)
                acc[cb][v] += wv * g[v];
        }
    }
    if (skip == 0) {
        for (cb = 0; cb < nc; cb++)
            for (v = 0; v < FC_NV; v++)
                FC_FN(fc_store)(dst + cb * dst_c + v * L, FC_FN(fc_load)(dst + cb * dst_c + v * L) + acc[cb][v]);
    } else { /* an overlapping tail strip: add only the pixels past the first `skip` */
        T tmp[FC_NV * FC_LANES(T)];
        for (cb = 0; cb < nc; cb++) {
            for (v = 0; v < FC_NV; v++)
                FC_FN(fc_store)(tmp + v * L, acc[cb][v]);
            for (s = skip; s < FC_NV * L; s++)
                dst[cb * dst_c + s] += tmp[s];
        }
    }
}

static void FC_FN(fc_grad_x_row)(const T *go, ptrdiff_t go_k, const T *w, ptrdiff_t w_k,
        ptrdiff_t w_c, ptrdiff_t Kg, T *dst, ptrdiff_t dst_c, ptrdiff_t Wo, int nc)
{
    const ptrdiff_t S = FC_NV * FC_LANES(T);
    ptrdiff_t ow0 = 0, k, s, skip = 0;
    int cb;
    for (;;) {
        if (ow0 + S > Wo) {
            if (ow0 == Wo || Wo < S)
                break;
            skip = ow0 - (Wo - S); /* last strip: overlap the previous one */
            ow0 = Wo - S;
        }
        switch (nc) {
        case 4: FC_FN(fc_grad_x_strip)(go + ow0, go_k, w, w_k, w_c, Kg, dst + ow0, dst_c, 4, skip); break;
        case 3: FC_FN(fc_grad_x_strip)(go + ow0, go_k, w, w_k, w_c, Kg, dst + ow0, dst_c, 3, skip); break;
        case 2: FC_FN(fc_grad_x_strip)(go + ow0, go_k, w, w_k, w_c, Kg, dst + ow0, dst_c, 2, skip); break;
        default: FC_FN(fc_grad_x_strip)(go + ow0, go_k, w, w_k, w_c, Kg, dst + ow0, dst_c, 1, skip);
        }
        ow0 += S;
        if (skip)
            return;
    }
    for (cb = 0; cb < nc; cb++) /* rows narrower than one strip */
        for (s = ow0; s < Wo; s++) {
            T acc = 0;
            for (k = 0; k < Kg; k++)
                acc += w[k * w_k + cb * w_c] * go[k * go_k + s];
            dst[cb * dst_c + s] += acc;
        }
}

/* part[k*part_k + s] += sum over ow = s (mod strip) of go[k*go_k + ow] * row[ow], k < nk:
 * lane-wise partial sums of nk dot products (the caller adds the lanes up). */
FC_INLINE void FC_FN(fc_grad_w_dots)(T *part, ptrdiff_t part_k, const T *go, ptrdiff_t go_k,
        const T *row, ptrdiff_t Wo, const int nk)
{
    const ptrdiff_t L = FC_LANES(T), S = FC_NV * FC_LANES(T);
    FC_VEC acc[FC_KB][FC_NV];
    int kb, v;
    ptrdiff_t ow0 = 0, s;
    for (kb = 0; kb < nk; kb++)
        for (v = 0; v < FC_NV; v++)
            acc[kb][v] = FC_FN(fc_load)(part + kb * part_k + v * L);
    for (; ow0 + S <= Wo; ow0 += S) {
        FC_VEC x[FC_NV];
        for (v = 0; v < FC_NV; v++)
            x[v] = FC_FN(fc_load)(row + ow0 + v * L);
        for (kb = 0; kb < nk; kb++)
            for (v = 0; v < FC_NV; v++)
                acc[kb][v] += FC_FN(fc_load)(go + kb * go_k + ow0 + v * L) * x[v];
    }
    for (; ow0 + L <= Wo; ow0 += L) { /* whole vectors left over, before the scalar tail */
        FC_VEC x = FC_FN(fc_load)(row + ow0);
        for (kb = 0; kb < nk; kb++)
            acc[kb][0] += FC_FN(fc_load)(go + kb * go_k + ow0) * x;
    }
    for (kb = 0; kb < nk; kb++)
        for (v = 0; v < FC_NV; v++)
            FC_FN(fc_store)(part + kb * part_k + v * L, acc[kb][v]);
    for (kb = 0; kb < nk; kb++)
        for (s = 0; ow0 + s < Wo; s++)
            part[kb * part_k + s] += go[kb * go_k + ow0 + s] * row[ow0 + s];
}

static void FC_FN(fc_grad_w_row)(T *part, ptrdiff_t part_k, const T *go, ptrdiff_t go_k,
        const T *row, ptrdiff_t Wo, int nk)
{
    switch (nk) {
    case 4: FC_FN(fc_grad_w_dots)(part, part_k, go, go_k, row, Wo, 4); break;
    case 3: FC_FN(fc_grad_w_dots)(part, part_k, go, go_k, row, Wo, 3); break;
    case 2: FC_FN(fc_grad_w_dots)(part, part_k, go, go_k, row, Wo, 2); break;
    default: FC_FN(fc_grad_w_dots)(part, part_k, go, go_k, row, Wo, 1);
    }
}

/* gw[t0 + u] += sum_{p < n} go[p] * src[off[t0 + u] + p], u < nt: FC_TAPS_B taps' dots over a
 * band's pixels at once, two vectors of pixels per step (n a multiple of 2 vectors). */
FC_INLINE void FC_FN(fc_grad_w_taps_block)(const T *go, ptrdiff_t n, const T *src, const ptrdiff_t *off,
        ptrdiff_t t0, T *gw, const int nt)
{
    const ptrdiff_t L = FC_TILE_LANES(T);
    FC_TVEC acc[FC_TAPS_B][2];
    T lane[FC_TILE_LANES(T)];
    int u;
    ptrdiff_t p, l;
    for (u = 0; u < nt; u++)
        acc[u][0] = acc[u][1] = FC_FN(fc_tbcast)(0);
    for (p = 0; p < n; p += 2 * L) {
        const FC_TVEC g0 = FC_FN(fc_tload)(go + p), g1 = FC_FN(fc_tload)(go + p + L);
        for (u = 0; u < nt; u++) {
            const T *x = src + off[t0 + u] + p;
            acc[u][0] += g0 * FC_FN(fc_tload)(x);
            acc[u][1] += g1 * FC_FN(fc_tload)(x + L);
        }
    }
    for (u = 0; u < nt; u++) {
        const FC_TVEC sum = acc[u][0] + acc[u][1];
        T total = 0;
        memcpy(lane, &sum, sizeof sum);
        for (l = 0; l < L; l++)
            total += lane[l];
        gw[t0 + u] += total;
    }
}

/* gw[t] += sum_{p < n} go[p] * src[off[t] + p], t < taps: one output channel's grad_weight over a
 * band's phase planes (src, as the forward reads them), go zero at the pixels that are no output. */
static void FC_FN(fc_grad_w_taps)(const T *go, ptrdiff_t n, const T *src, const ptrdiff_t *off,
        ptrdiff_t taps, T *gw)
{
    ptrdiff_t t0;
    for (t0 = 0; t0 + FC_TAPS_B <= taps; t0 += FC_TAPS_B)
        FC_FN(fc_grad_w_taps_block)(go, n, src, off, t0, gw, FC_TAPS_B);
    switch (taps - t0) {
    case 3: FC_FN(fc_grad_w_taps_block)(go, n, src, off, t0, gw, 3); break;
    case 2: FC_FN(fc_grad_w_taps_block)(go, n, src, off, t0, gw, 2); break;
    case 1: FC_FN(fc_grad_w_taps_block)(go, n, src, off, t0, gw, 1); break;
    default: break;
    }
}

/* fc_scatter(out, out_k, r, count): out[l*out_k + i] = lane l of r[i], i < count, for every
 * lane l (r: one tile vector per pixel, a vector's lanes the channels). Under AVX-512 the vectors are
 * transposed in registers and each channel's run goes out in one masked store. */
#if FC_AVX512_TILES && FC_DOUBLE
FC_INLINE void FC_FN(fc_scatter)(T *out, ptrdiff_t out_k, FC_TVEC r[8], ptrdiff_t count)
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
#elif FC_AVX512_TILES
FC_INLINE void FC_FN(fc_scatter)(T *out, ptrdiff_t out_k, FC_TVEC r[16], ptrdiff_t count)
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
#else
FC_INLINE void FC_FN(fc_scatter)(T *out, ptrdiff_t out_k, FC_TVEC r[], ptrdiff_t count)
{
    T lane[FC_TILE_LANES(T)];
    ptrdiff_t i, l;
    for (i = 0; i < count; i++) {
        memcpy(lane, &r[i], sizeof lane);
        for (l = 0; l < FC_TILE_LANES(T); l++)
            out[l * out_k + i] = lane[l];
    }
}
#endif

/* out[l*out_k + i] = lane l of v[i], i < n, for every lane l: the vectors transposed into rows,
 * in runs of at most one vector's lanes (n a literal, so that v can stay in registers). */
FC_INLINE void FC_FN(fc_store_transposed)(T *out, ptrdiff_t out_k, const FC_TVEC *v, const int n)
{
    const ptrdiff_t L = FC_TILE_LANES(T);
    FC_TVEC r[FC_TILE_LANES(T)];
    ptrdiff_t c0, i;
    FC_UNROLL_ALL
    for (c0 = 0; c0 < n; c0 += L) {
        FC_UNROLL_ALL
        for (i = 0; i < L; i++)
            r[i] = c0 + i < n ? v[c0 + i] : FC_FN(fc_tbcast)(0);
        FC_FN(fc_scatter)(out + c0, out_k, r, n - c0 < L ? n - c0 : L);
    }
}

/* Output channels per channel tile: the packed weights' row length. */
static ptrdiff_t FC_FN(fc_channel_block)(void) { return FC_CV * FC_TILE_LANES(T); }

/* One channel tile: B = fc_channel_block channels k x P output pixels i of one row,
 *     bias[k] + sum_{t < taps} w[t*B + k] * src[off[t] + i]
 * (with `relu`: max(that, 0)) stored into out[k*out_k + i]. Its vectors run over channels:
 * each tap loads FC_CV weight vectors and broadcasts P inputs, and no lane is spent past the
 * row's end. */
FC_INLINE void FC_FN(fc_ctile)(const T *src, const ptrdiff_t *off, ptrdiff_t taps, const T *w,
        const T *bias, T *out, ptrdiff_t out_k, int relu, const int P)
{
    const ptrdiff_t L = FC_TILE_LANES(T), B = FC_CV * FC_TILE_LANES(T);
    FC_TVEC acc[FC_CV][FC_CP];
    int i, v;
    ptrdiff_t t;
    FC_UNROLL_ALL
    for (i = 0; i < P; i++)
        for (v = 0; v < FC_CV; v++)
            acc[v][i] = FC_FN(fc_tload)(bias + v * L);
    for (t = 0; t < taps; t++) {
        const T *s = src + off[t];
        FC_TVEC wv[FC_CV];
        for (v = 0; v < FC_CV; v++)
            wv[v] = FC_FN(fc_tload)(w + t * B + v * L);
        FC_UNROLL_ALL
        for (i = 0; i < P; i++) {
            const FC_TVEC x = FC_FN(fc_tbcast)(s[i]);
            for (v = 0; v < FC_CV; v++)
                acc[v][i] += x * wv[v];
        }
    }
    if (relu) {
        FC_UNROLL_ALL
        for (i = 0; i < P; i++)
            for (v = 0; v < FC_CV; v++)
                acc[v][i] = FC_FN(fc_relu)(acc[v][i]);
    }
    FC_UNROLL_ALL /* acc stays in registers only if every index is a constant */
    for (v = 0; v < FC_CV; v++)
        FC_FN(fc_store_transposed)(out + v * L * out_k, out_k, acc[v], P);
}

/* One channel tile's channels over a band of `rows` output rows, each row in near-equal channel
 * tiles of at most FC_CP pixels, while `pf`'s lines are prefetched, spread over the tiles. src,
 * w, bias and out as fc_ctile's, at the band's first pixel. */
static void FC_FN(fc_channel_tiles)(const T *src, const ptrdiff_t *off, ptrdiff_t taps, const T *w,
        const T *bias, T *out, ptrdiff_t out_k, ptrdiff_t rows, ptrdiff_t Wq, ptrdiff_t Wo,
        int relu, fc_prefetch *pf)
{
    const ptrdiff_t n = (Wo + FC_CP - 1) / FC_CP, P = Wo / n, wide = Wo % n; /* tiles j < wide: P+1 */
    const ptrdiff_t per_tile = (pf->per_block + rows * n - 1) / (rows * n);
    ptrdiff_t y, j, ox;
    for (y = 0; y < rows; y++)
        for (j = 0, ox = 0; j < n; ox += P + (j < wide), j++) {
            const T *s = src + y * Wq + ox;
            T *o = out + y * Wo + ox;
            if (pf->count > 0)
                fc_prefetch_next(pf, per_tile);
            switch (P + (j < wide)) { /* literal pixel counts: fully unrolled bodies */
            case 12: FC_FN(fc_ctile)(s, off, taps, w, bias, o, out_k, relu, 12); break;
            case 11: FC_FN(fc_ctile)(s, off, taps, w, bias, o, out_k, relu, 11); break;
            case 10: FC_FN(fc_ctile)(s, off, taps, w, bias, o, out_k, relu, 10); break;
            case 9: FC_FN(fc_ctile)(s, off, taps, w, bias, o, out_k, relu, 9); break;
            case 8: FC_FN(fc_ctile)(s, off, taps, w, bias, o, out_k, relu, 8); break;
            case 7: FC_FN(fc_ctile)(s, off, taps, w, bias, o, out_k, relu, 7); break;
            case 6: FC_FN(fc_ctile)(s, off, taps, w, bias, o, out_k, relu, 6); break;
            case 5: FC_FN(fc_ctile)(s, off, taps, w, bias, o, out_k, relu, 5); break;
            case 4: FC_FN(fc_ctile)(s, off, taps, w, bias, o, out_k, relu, 4); break;
            case 3: FC_FN(fc_ctile)(s, off, taps, w, bias, o, out_k, relu, 3); break;
            case 2: FC_FN(fc_ctile)(s, off, taps, w, bias, o, out_k, relu, 2); break;
            default: FC_FN(fc_ctile)(s, off, taps, w, bias, o, out_k, relu, 1);
            }
        }
}

/* y[s] (+)= sum_{i < nrows, j < kw} k[i*kw + j] * rows[i*row_len + j + s], s < n: one channel's
 * cross-correlation over packed (zero-padded) rows, a strip of FC_NV1 vectors at a time. */
static void FC_FN(fc_correlate_rows)(const T *rows, ptrdiff_t row_len, ptrdiff_t nrows, const T *k,
        ptrdiff_t kw, T *y, ptrdiff_t n, int accumulate)
{
    const ptrdiff_t L = FC_LANES(T), S = FC_NV1 * FC_LANES(T);
    ptrdiff_t t0 = 0, i, j, s;
    int v;
    for (; t0 + S <= n; t0 += S) {
        FC_VEC acc[FC_NV1];
        for (v = 0; v < FC_NV1; v++)
            acc[v] = accumulate ? FC_FN(fc_load)(y + t0 + v * L) : FC_FN(fc_bcast)(0);
        for (i = 0; i < nrows; i++) {
            const T *src = rows + i * row_len + t0;
            for (j = 0; j < kw; j++) {
                FC_VEC kv = FC_FN(fc_bcast)(k[i * kw + j]);
                for (v = 0; v < FC_NV1; v++)
                    acc[v] += kv * FC_FN(fc_load)(src + j + v * L);
            }
        }
        for (v = 0; v < FC_NV1; v++)
            FC_FN(fc_store)(y + t0 + v * L, acc[v]);
    }
    for (s = t0; s < n; s++) {
        T acc = accumulate ? y[s] : 0;
        for (i = 0; i < nrows; i++)
            for (j = 0; j < kw; j++)
                acc += k[i * kw + j] * rows[i * row_len + j + s];
        y[s] = acc;
    }
}

/* One input row split into its sw stride phases, zero-padded:
 *     dst[r*ds + m] = src[m*sw + r - pl]  (0 outside [0, W)),  r < sw, m < M.
 * pl < 0 crops. The interior (every phase in bounds) runs with a literal stride for sw <= 4,
 * one pass over the source, so that the compiler vectorises the deinterleave. */
FC_NO_MEMCPY_CALLS static void FC_FN(fc_split)(const T *FC_RESTRICT src, ptrdiff_t W, T *FC_RESTRICT dst, ptrdiff_t ds,
        ptrdiff_t M, ptrdiff_t sw, ptrdiff_t pl)
{
    ptrdiff_t lo, hi, m, r, u;
    if (sw == 1) { /* a copy between zero pads: rows as short as a depthwise map's, no divisions */
        lo = pl <= 0 ? 0 : pl < M ? pl : M;
        hi = W + pl < M ? W + pl : M;
        for (m = 0; m < lo; m++)
            dst[m] = 0;
        for (; m + FC_TILE_LANES(T) <= hi; m += FC_TILE_LANES(T))
            FC_FN(fc_tstore)(dst + m, FC_FN(fc_tload)(src + m - pl));
        if (m < hi) {
            FC_FN(fc_copy_runs)(dst + m, src + m - pl, hi - m);
            m = hi;
        }
        for (; m < M; m++)
            dst[m] = 0;
        return;
    }
    lo = pl <= 0 ? 0 : (pl + sw - 1) / sw;    /* first m with m*sw - pl >= 0 */
    hi = W - sw + pl < 0 ? 0 : (W - sw + pl) / sw + 1; /* past the last m ending < W */
    lo = lo < M ? lo : M;
    hi = hi < M ? hi : M;
    hi = hi > lo ? hi : lo;
    for (r = 0; r < sw; r++) {
        for (m = 0; m < lo; m++) {
            u = m * sw + r - pl;
            dst[r * ds + m] = u >= 0 && u < W ? src[u] : 0;
        }
        for (m = hi; m < M; m++) {
            u = m * sw + r - pl;
            dst[r * ds + m] = u >= 0 && u < W ? src[u] : 0;
        }
    }
    switch (sw) {
    case 2: FC_SPLIT_LOOP(2); break;
    case 3: FC_SPLIT_LOOP(3); break;
    case 4: FC_SPLIT_LOOP(4); break;
    default: FC_SPLIT_LOOP(sw);
    }
}

/* y[s] = sum_{j < kw} k[j] * xz[first + s + j], s < n <= L*M, xz zero outside x[0, W): lane l of
 * every vector computes the run of outputs [l*M, (l+1)*M). The input goes into `work` transposed,
 * work[u*L + l] = xz[first + l*M + u], so that a tap's values for a vector of outputs are one
 * aligned load, and a block of FC_LR output vectors x FC_LJ taps loads FC_LR + FC_LJ - 1 vectors
 * for FC_LR * FC_LJ multiply-adds. M is a multiple of FC_LR; work holds (M + kw - 1) * L values
 * from its first 64-byte boundary on. Each output sums its taps in order, whatever M is. */
static void FC_FN(fc_correlate_lanes)(const T *x, ptrdiff_t W, ptrdiff_t first, const T *k,
        ptrdiff_t kw, T *y, ptrdiff_t n, ptrdiff_t M, T *work)
{
    const ptrdiff_t L = FC_TILE_LANES(T), U = M + kw - 1;
    T *FC_RESTRICT buf = (T *)(((uintptr_t)work + 63) & ~(uintptr_t)63);
    T block[FC_LR * FC_TILE_LANES(T)];
    ptrdiff_t l, u, t, j, i, s;
    int r, jj;
    /* L rows of `work` at a time, every lane: a row is a cache line, and filled lane by lane over
     * all rows it would leave L1 before its last lane came. */
    for (u = 0; u < U; u += L) {
        const ptrdiff_t nu = U - u < L ? U - u : L;
        for (l = 0; l < L; l++) {
            const ptrdiff_t base = first + l * M + u;
            if (nu == L && base >= 0 && base + L <= W) {
                FC_UNROLL_ALL
                for (i = 0; i < FC_TILE_LANES(T); i++)
                    buf[(u + i) * L + l] = x[base + i];
            } else {
                for (i = 0; i < nu; i++)
                    buf[(u + i) * L + l] = base + i >= 0 && base + i < W ? x[base + i] : 0;
            }
        }
    }
    for (t = 0; t < M; t += FC_LR) {
        const T *src = buf + t * L;
        FC_TVEC acc[FC_LR];
        for (r = 0; r < FC_LR; r++)
            acc[r] = FC_FN(fc_tbcast)(0);
        for (j = 0; j + FC_LJ <= kw; j += FC_LJ) {
            FC_TVEC kb[FC_LJ];
            for (jj = 0; jj < FC_LJ; jj++)
                kb[jj] = FC_FN(fc_tbcast)(k[j + jj]);
            FC_UNROLL_ALL
            for (u = 0; u < FC_LR + FC_LJ - 1; u++) {
                const FC_TVEC xv = FC_FN(fc_tload)(src + (j + u) * L);
                FC_UNROLL_ALL
                for (r = 0; r < FC_LR; r++)
                    if (u - r >= 0 && u - r < FC_LJ)
                        acc[r] += kb[u - r] * xv;
            }
        }
        for (; j < kw; j++) {
            const FC_TVEC kv = FC_FN(fc_tbcast)(k[j]);
            for (r = 0; r < FC_LR; r++)
                acc[r] += kv * FC_FN(fc_tload)(src + (j + r) * L);
        }
        if ((L - 1) * M + t + FC_LR <= n) { /* every lane's outputs */
            FC_FN(fc_store_transposed)(y + t, M, acc, FC_LR);
        } else {
            for (r = 0; r < FC_LR; r++)
                FC_FN(fc_tstore)(block + r * L, acc[r]);
            for (l = 0; l < L; l++)
                for (r = 0, s = l * M + t; r < FC_LR && s < n; r++, s++)
                    y[s] = block[r * L + l];
        }
    }
}
/* Outputs per lane run of fc_correlate_lanes come in multiples of this; lanes per vector. */
static ptrdiff_t FC_FN(fc_lane_block)(void) { return FC_LR; }
static ptrdiff_t FC_FN(fc_lanes)(void) { return FC_TILE_LANES(T); }
