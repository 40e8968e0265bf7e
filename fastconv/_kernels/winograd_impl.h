/* One dtype's Winograd kernels (included by winograd.h with WG_T, WG_SUF, WG_M,
 * WG_BT, WG_AT defined). A task is a chunk of up to WG_NV * WG_L consecutive
 * tiles of the flattened (image, tile row, tile column) grid; it runs in its
 * thread's workspace, laid out (values)
 *
 *     V  [WG_P points][Cg channels][TS]   transformed input tiles, tile-fastest (points
 *                                         wg_point_stride(Cg) apart: Cg * TS + WG_L)
 *     Mb [WG_P points][WG_MR channels][T] their products with one block of weights
 *     P  [WG_N rows][WG_M phases][TS]     one tile row's input rows, columns split
 *     Z  [WG_N points][WG_M phases][TS]   ... by phase mod WG_M, and their column transform
 *                                         (each WG_N * WG_N * TS: wg_input_tiles's layout)
 *                                         (float with AVX-512: P holds the WG_P row-transformed
 *                                         vectors of wg_input_segment16)
 *     Y  [WG_M][TS] + [WG_M][WG_M][WG_L]  one padded input row, or one vector of output tiles
 *
 * with T = WG_NV * WG_L tiles and TS = T + WG_L (room for a vector past a segment).
 * Splitting columns by phase mod WG_M puts column j of tile tx at phase j % WG_M,
 * index tx + j / WG_M: contiguous in tx, so both transforms run on whole vectors
 * of tiles, one tile per lane. */

#if WG_VECTORS
typedef WG_T WG_V __attribute__((vector_size(WG_VBYTES)));
#else
typedef WG_T WG_V;
#endif

WG_INLINE WG_V WG_FN(wg_load)(const WG_T *p) { WG_V v; memcpy(&v, p, sizeof v); return v; }
WG_INLINE void WG_FN(wg_store)(WG_T *p, WG_V v) { memcpy(p, &v, sizeof v); }
/* s - 0 broadcasts (and folds); s + 0 would turn -0 into +0 */
WG_INLINE WG_V WG_FN(wg_bcast)(WG_T s) { WG_V zero = {0}; return s - zero; }

/* float's AVX-512 build runs rows of 5-8 tiles two to a vector (wg_input_pair16,
 * wg_output_pair16): tile row 2v + h of a chunk at lanes 8h .. 8h + tw of its vector v. One
 * row to a vector would leave half of every transform's lanes empty (C1: 32x32 images). */
#undef WG_PAIRS /* defined for each dtype */
#if WG_VECTORS && defined(__AVX512F__) && WG_M == 4
#  define WG_PAIRS 1
#else
#  define WG_PAIRS 0
#endif

/* Whether rows of tw tiles run two to a vector. */
WG_INLINE int WG_FN(wg_paired)(ptrdiff_t tw) { return WG_PAIRS && tw >= WG_NARROW_BELOW && 2 * tw <= WG_L; }

/* Tiles per chunk for rows of tw tiles: one register tile's width, or, where rows run two
 * to a vector, its 2 * WG_NV whole rows. */
static ptrdiff_t WG_FN(wg_chunk_tiles)(ptrdiff_t tw) { return WG_FN(wg_paired)(tw) ? 2 * WG_NV * tw : WG_NV * WG_L; }

/* Values between two transform points of V: Cg * TS and one vector more, so that the
 * points of one tile (stored together by the input transforms) fall in different sets
 * of the L1 cache, not all in one when Cg * TS is a multiple of 4 KiB (Cg = 64). */
WG_INLINE ptrdiff_t WG_FN(wg_point_stride)(ptrdiff_t Cg) { return Cg * (WG_NV * WG_L + WG_L) + WG_L; }

/* Values of one thread's workspace for Cg input and Kp output channels (Kp a
 * multiple of WG_MR). */
static ptrdiff_t WG_FN(wg_workspace)(ptrdiff_t Cg, ptrdiff_t Kp)
{
    const ptrdiff_t T = WG_NV * WG_L, TS = T + WG_L;
    (void)Kp;
    return WG_P * WG_FN(wg_point_stride)(Cg) + WG_P * WG_MR * T + 2 * WG_P * TS + WG_M * TS + WG_M * WG_M * WG_L;
}

/* U[point*step + r] = (G w_r G^T)[point], r < WG_MR, for the 3x3 filters w_r = w + r*wk
 * (r < nr; zero filters past them; with `flip` their taps read in reverse, the filters
 * turned 180 degrees), in double and rounded once: one input channel of one block of
 * output channels of the transformed weights. G: WG_N x 3. */
static void WG_FN(wg_transform_filters)(const WG_T *w, ptrdiff_t wk, int flip, ptrdiff_t nr, const double *G,
                                        WG_T *U, ptrdiff_t step)
{
    double f[9][WG_MR], t[WG_N][3][WG_MR];
    ptrdiff_t i, j, a, r;
    for (a = 0; a < 9; a++)
        for (r = 0; r < WG_MR; r++)
            f[a][r] = r < nr ? (double)w[r * wk + (flip ? 8 - a : a)] : 0.0;
    for (i = 0; i < WG_N; i++)
        for (j = 0; j < 3; j++)
            for (r = 0; r < WG_MR; r++)
                t[i][j][r] = G[i * 3] * f[j][r] + G[i * 3 + 1] * f[3 + j][r] + G[i * 3 + 2] * f[6 + j][r];
    for (i = 0; i < WG_N; i++)
        for (j = 0; j < WG_N; j++)
            for (r = 0; r < WG_MR; r++)
                U[(i * WG_N + j) * step + r] =
                    (WG_T)(t[i][0][r] * G[j * 3] + t[i][1][r] * G[j * 3 + 1] + t[i][2][r] * G[j * 3 + 2]);
}

#if WG_PAIRS
/* One vector of values at p, lanes m: streamed past the caches (a non-temporal
 * store, no read for ownership) where `stream` is set and the vector is one whole aligned
 * cache line, else stored through them. The callers stream only output rows of whole
 * lines, so that a line is never part streamed, part stored. */
WG_INLINE void WG_FN(wg_put16)(WG_T *p, __mmask16 m, __m512 v, int stream)
{
    if (stream && m == 0xFFFF && !((uintptr_t)p & 63))
        _mm512_stream_ps(p, v);
    else
        _mm512_mask_storeu_ps(p, m, v);
}
#endif

/* wg_transform_filters for channels 0 .. Cg of one block of output channels, filter
 * (r, c) at w + r*rs + c*cs (turned 180 degrees with `flip`): U[point*step + c*WG_MR + r].
 * float's AVX-512 build transforms two channels' 16 filters at once, a filter to a lane,
 * in float (taps gathered, the products in registers, a point's 16 values one store).
 * The double arithmetic one value at a time, through a stack array, took 1.4 ms for
 * 256 x 256 filters on one core (Zen 4), as long as that layer's products on 4 x 4
 * maps; this takes 0.3 ms on two. Its rounding (1e-7 of the largest transformed
 * weight) is far inside RTOL. */
static void WG_FN(wg_transform_block)(const WG_T *w, ptrdiff_t rs, ptrdiff_t cs, int flip, ptrdiff_t Cg,
                                      ptrdiff_t nr, const double *G, WG_T *U, ptrdiff_t step)
{
    ptrdiff_t c = 0;
#if WG_PAIRS && WG_MR == 8
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7);
    const __m512i second = _mm512_mask_blend_epi32(0xFF00, _mm512_setzero_si512(), _mm512_set1_epi32((int)cs));
    const __m512i at = _mm512_add_epi32(_mm512_mullo_epi32(lane, _mm512_set1_epi32((int)rs)), second);
    const __mmask16 live = _mm512_cmplt_epi32_mask(lane, _mm512_set1_epi32((int)nr));
    __m512 g[WG_N * 3];
    ptrdiff_t i, j, a;
    for (i = 0; i < WG_N * 3; i++)
        g[i] = _mm512_set1_ps((float)G[i]);
    for (; c + 2 <= Cg && 7 * rs + cs <= INT32_MAX; c += 2) { /* the gathers' lane offsets: int32 */
        __m512 f[9];
        for (a = 0; a < 9; a++)
            f[a] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), live, at, w + c * cs + (flip ? 8 - a : a), 4);
        for (i = 0; i < WG_N; i++) {
            __m512 t[3];
            for (j = 0; j < 3; j++)
                t[j] = _mm512_fmadd_ps(g[i * 3], f[j], _mm512_fmadd_ps(g[i * 3 + 1], f[3 + j],
                                                                     _mm512_mul_ps(g[i * 3 + 2], f[6 + j])));
            for (j = 0; j < WG_N; j++)
                _mm512_storeu_ps(U + (i * WG_N + j) * step + c * WG_MR,
                                 _mm512_fmadd_ps(t[0], g[j * 3], _mm512_fmadd_ps(t[1], g[j * 3 + 1],
                                                                                _mm512_mul_ps(t[2], g[j * 3 + 2]))));
        }
    }
#endif
    for (; c < Cg; c++)
        WG_FN(wg_transform_filters)(w + c * cs, rs, flip, nr, G, U + c * WG_MR, step);
}

/* M[r*ms + t] = sum_{c < Cg} U[c*WG_MR + r] * V[c*vs + t], r < WG_MR, t < nv * WG_L (nv <=
 * WG_NV, a literal at each call: a chunk's last vectors of tiles may be empty): the
 * accumulators stay in registers over the whole channel sum. */
WG_INLINE void WG_FN(wg_gemm)(const WG_T *U, const WG_T *V, ptrdiff_t Cg, ptrdiff_t vs, WG_T *M, ptrdiff_t ms,
                              const int nv)
{
    WG_V acc[WG_MR][WG_NV];
    int r, v;
    ptrdiff_t c;
    WG_UNROLL
    for (r = 0; r < WG_MR; r++) {
        WG_UNROLL
        for (v = 0; v < nv; v++)
            acc[r][v] = WG_FN(wg_bcast)(0);
    }
    for (c = 0; c < Cg; c++) {
        WG_V x[WG_NV];
        WG_UNROLL
        for (v = 0; v < nv; v++)
            x[v] = WG_FN(wg_load)(V + c * vs + v * WG_L);
        WG_UNROLL
        for (r = 0; r < WG_MR; r++) {
            const WG_V w = WG_FN(wg_bcast)(U[c * WG_MR + r]);
            WG_UNROLL
            for (v = 0; v < nv; v++)
                acc[r][v] += w * x[v];
        }
    }
    WG_UNROLL
    for (r = 0; r < WG_MR; r++) {
        WG_UNROLL
        for (v = 0; v < nv; v++)
            WG_FN(wg_store)(M + r * ms + v * WG_L, acc[r][v]);
    }
}

/* The input transforms of `len` tiles of one tile row of one channel: tile l's
 * input is plane rows iy0 .. iy0 + WG_N, columns ix0 + l*WG_M .. + WG_N (zero outside
 * the H x W plane); point (a, b) of tile l goes to V[(a*WG_N + b)*vs + l]. Writes up to
 * a vector past l = len - 1 (TS leaves room). */
WG_NOINLINE void WG_FN(wg_input_segment)(const WG_T *plane, ptrdiff_t H, ptrdiff_t W, ptrdiff_t iy0, ptrdiff_t ix0,
                                    ptrdiff_t len, WG_T *P, WG_T *Z, WG_T *V, ptrdiff_t vs, const WG_T *ahead)
{
    const ptrdiff_t L = WG_L, TS = WG_NV * WG_L + WG_L;
    /* Z is needed at q <= len (tile l reads columns of q = l and l + 1); lanes past
     * len - 1 compute garbage that no output reads */
    const ptrdiff_t nq = (len + L - 1) / L * L, nz = (len + 1 + L - 1) / L * L;
    ptrdiff_t i, ph, q, a, b, j;
    for (i = 0; i < WG_N; i++) {
        const ptrdiff_t iy = iy0 + i;
        WG_T *prow = P + i * WG_M * TS;
        if (iy < 0 || iy >= H) {
            for (ph = 0; ph < WG_M; ph++)
                memset(prow + ph * TS, 0, nz * sizeof(WG_T));
            continue;
        }
        /* columns ix0 + q*WG_M + ph, zero outside the row: q in [q0, q1) wholly inside it
         * (a fixed-size inner loop the compiler vectorises; no copy of the row, whose
         * stores would stall the vector loads that follow them) */
        const WG_T *row = plane + iy * W, *src = row + ix0;
        if (ahead) { /* the same row of a later channel: rows far apart defeat the hardware prefetcher */
            const char *first = (const char *)(ahead + iy * W + (ix0 > 0 ? ix0 : 0));
            const char *last = (const char *)(ahead + iy * W + (ix0 + nz * WG_M < W ? ix0 + nz * WG_M : W)) - 1;
            for (; first <= last; first += 64)
                WG_PREFETCH(first);
            WG_PREFETCH(last);
        }
        ptrdiff_t q0 = ix0 >= 0 ? 0 : (-ix0 + WG_M - 1) / WG_M;
        ptrdiff_t q1 = W - ix0 >= WG_M ? (W - ix0 - WG_M) / WG_M + 1 : 0;
        q1 = q1 < nz ? q1 : nz;
        q0 = q0 < q1 ? q0 : q1;
        for (q = 0; q < nz; q++) {
            if (q == q0 && q1 > q0) {
                for (; q < q1; q++) {
                    WG_UNROLL
                    for (ph = 0; ph < WG_M; ph++)
                        prow[ph * TS + q] = src[q * WG_M + ph];
                }
                if (q == nz)
                    break;
            }
            for (ph = 0; ph < WG_M; ph++) {
                const ptrdiff_t col = ix0 + q * WG_M + ph;
                prow[ph * TS + q] = (col >= 0 && col < W) ? row[col] : (WG_T)0;
            }
        }
    }
    for (ph = 0; ph < WG_M; ph++)
        for (q = 0; q < nz; q += L) {
            WG_V d[WG_N], z[WG_N];
            WG_UNROLL
            for (i = 0; i < WG_N; i++)
                d[i] = WG_FN(wg_load)(P + (i * WG_M + ph) * TS + q);
            WG_BT(WG_V, WG_T, d, z);
            WG_UNROLL
            for (a = 0; a < WG_N; a++)
                WG_FN(wg_store)(Z + (a * WG_M + ph) * TS + q, z[a]);
        }
    for (a = 0; a < WG_N; a++)
        for (q = 0; q < nq; q += L) {
            WG_V d[WG_N], z[WG_N];
            WG_UNROLL
            for (j = 0; j < WG_N; j++)
                d[j] = WG_FN(wg_load)(Z + (a * WG_M + j % WG_M) * TS + q + j / WG_M);
            WG_BT(WG_V, WG_T, d, z);
            WG_UNROLL
            for (b = 0; b < WG_N; b++)
                WG_FN(wg_store)(V + (a * WG_N + b) * vs + q, z[b]);
        }
}

#if WG_VECTORS && defined(__AVX512F__) && WG_M == 4
/* wg_input_segment for F(4x4) in the AVX-512 build (16 tiles per vector), the input
 * tile's columns split by phase in registers: each input row's 4*16 + 2 columns are
 * read by five masked loads (zero outside [0, W), and nothing outside it is read), and
 * two-source permutes deal them out into the 6 vectors of column j = 0..5 of the 16
 * tiles (column j of tile l at 4l + j); the row transform runs on those, the rows go
 * to P (36 vectors), and the column transform reads them back. Same arguments and
 * result as wg_input_segment, with P as scratch and Z unused. */

/* lanes [lo, hi) of a 16-lane mask (clamped to [0, 16)) */
WG_INLINE __mmask16 WG_FN(wg_lanes)(ptrdiff_t lo, ptrdiff_t hi)
{
    lo = lo < 0 ? 0 : lo;
    hi = hi > 16 ? 16 : hi;
    return hi > lo ? (__mmask16)((((uint32_t)1 << hi) - 1) & ~(((uint32_t)1 << lo) - 1)) : (__mmask16)0;
}

/* Prefetch the cache lines of row[lo .. hi), clipped to [0, W). */
WG_INLINE void WG_FN(wg_prefetch_cols)(const WG_T *row, ptrdiff_t lo, ptrdiff_t hi, ptrdiff_t W)
{
    lo = lo > 0 ? lo : 0;
    hi = hi < W ? hi : W;
    if (hi > lo) {
        const char *first = (const char *)(row + lo), *last = (const char *)(row + hi) - 1;
        for (; first <= last; first += 64)
            WG_PREFETCH(first);
        WG_PREFETCH(last);
    }
}

/* Row i of the input tiles' transform: columns 0-3 of the 16 tiles from two vectors'
 * even (e0, e1) and odd (o0, o1) phases, columns 4 and 5 by the permutes idx4 and idx5
 * of columns 0 and 1 with X (the values past them); B^T along the row, into Pi. */
WG_INLINE void WG_FN(wg_row16)(__m512 e0, __m512 e1, __m512 o0, __m512 o1, __m512 X, __m512i idx4,
                                __m512i idx5, WG_T *Pi)
{
    WG_V d[WG_N], z[WG_N];
    ptrdiff_t b;
    d[0] = (WG_V)_mm512_shuffle_f32x4(e0, e1, 0x44);
    d[1] = (WG_V)_mm512_shuffle_f32x4(e0, e1, 0xEE);
    d[2] = (WG_V)_mm512_shuffle_f32x4(o0, o1, 0x44);
    d[3] = (WG_V)_mm512_shuffle_f32x4(o0, o1, 0xEE);
    d[4] = (WG_V)_mm512_permutex2var_ps((__m512)d[0], idx4, X);
    d[5] = (WG_V)_mm512_permutex2var_ps((__m512)d[1], idx5, X);
    WG_BT(WG_V, WG_T, d, z);
    WG_UNROLL
    for (b = 0; b < WG_N; b++)
        WG_FN(wg_store)(Pi + b * 16, z[b]);
}

/* The column transform of the rows in P: B^T down each column, into V[(a*WG_N + b)*vs]. */
WG_INLINE void WG_FN(wg_columns16)(const WG_T *P, WG_T *V, ptrdiff_t vs)
{
    ptrdiff_t a, b, i;
    WG_UNROLL
    for (b = 0; b < WG_N; b++) {
        WG_V d[WG_N], z[WG_N];
        WG_UNROLL
        for (i = 0; i < WG_N; i++)
            d[i] = WG_FN(wg_load)(P + (i * WG_N + b) * 16);
        WG_BT(WG_V, WG_T, d, z);
        WG_UNROLL
        for (a = 0; a < WG_N; a++)
            WG_FN(wg_store)(V + (a * WG_N + b) * vs, z[a]);
    }
}

WG_NOINLINE void WG_FN(wg_input_segment16)(const WG_T *plane, ptrdiff_t H, ptrdiff_t W, ptrdiff_t iy0, ptrdiff_t ix0,
                                      ptrdiff_t len, WG_T *P, WG_T *V, ptrdiff_t vs, const WG_T *ahead)
{
    /* lanes 0-7: column 4l (+2 for odd) of tiles l = 0..7 of a pair of vectors, lanes
     * 8-15: column 4l + 1 (+2) */
    const __m512i even = _mm512_set_epi32(29, 25, 21, 17, 13, 9, 5, 1, 28, 24, 20, 16, 12, 8, 4, 0);
    const __m512i odd = _mm512_set_epi32(31, 27, 23, 19, 15, 11, 7, 3, 30, 26, 22, 18, 14, 10, 6, 2);
    /* lane l <- lane l + 1, the last from the second source's lane 0 (next0) or 1 (next1) */
    const __m512i next0 = _mm512_set_epi32(16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1);
    const __m512i next1 = _mm512_set_epi32(17, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1);
    ptrdiff_t q, i, k;
    for (q = 0; q < len; q += 16) {
        const ptrdiff_t c0 = ix0 + 4 * q;
        __mmask16 m[5];
        for (k = 0; k < 5; k++)
            m[k] = WG_FN(wg_lanes)(-(c0 + 16 * k), W - (c0 + 16 * k));
        m[4] &= 3;
        for (i = 0; i < WG_N; i++) {
            const ptrdiff_t iy = iy0 + i;
            const int inside = iy >= 0 && iy < H;
            /* a row outside the plane: all lanes masked off (zeros), from the plane's start */
            const WG_T *src = inside ? plane + iy * W + c0 : plane;
            const __mmask16 on = inside ? (__mmask16)0xFFFF : (__mmask16)0;
            if (ahead && inside)
                WG_FN(wg_prefetch_cols)(ahead + iy * W, c0, c0 + 66, W);
            const __m512 A = _mm512_maskz_loadu_ps(m[0] & on, src), B = _mm512_maskz_loadu_ps(m[1] & on, src + 16);
            const __m512 C = _mm512_maskz_loadu_ps(m[2] & on, src + 32), D = _mm512_maskz_loadu_ps(m[3] & on, src + 48);
            const __m512 E = _mm512_maskz_loadu_ps(m[4] & on, src + 64);
            const __m512 e0 = _mm512_permutex2var_ps(A, even, B), e1 = _mm512_permutex2var_ps(C, even, D);
            const __m512 o0 = _mm512_permutex2var_ps(A, odd, B), o1 = _mm512_permutex2var_ps(C, odd, D);
            WG_FN(wg_row16)(e0, e1, o0, o1, E, next0, next1, P + i * WG_N * 16);
        }
        WG_FN(wg_columns16)(P, V + q, vs);
    }
}

/* wg_input_segment16 for two rows of 5-8 tiles (tw <= 8, so 4 * 8 + 2 input columns a row)
 * in one vector: tile row A's tile l at lane l, row B's at lane 8 + l. Input rows iyA + i
 * of planeA and iyB + i of planeB (NULL: no row B, zeros), columns ix0 + 4l + j; the
 * transforms go to V[(a*WG_N + b)*vs + lane]. Each input row is read by two masked
 * loads (and a pair of values past them), split by phase with the segments' permutes,
 * and the two rows' halves joined by 128-bit shuffles. */
WG_NOINLINE void WG_FN(wg_input_pair16)(const WG_T *planeA, const WG_T *planeB, ptrdiff_t H, ptrdiff_t W,
                                   ptrdiff_t iyA, ptrdiff_t iyB, ptrdiff_t ix0, WG_T *P, WG_T *V, ptrdiff_t vs,
                                   const WG_T *aheadA, const WG_T *aheadB)
{
    const __m512i even = _mm512_set_epi32(29, 25, 21, 17, 13, 9, 5, 1, 28, 24, 20, 16, 12, 8, 4, 0);
    const __m512i odd = _mm512_set_epi32(31, 27, 23, 19, 15, 11, 7, 3, 30, 26, 22, 18, 14, 10, 6, 2);
    /* lane l <- lane l + 1 of each half, the halves' last from lanes 0 (A) and 2 (B) of the
     * values past the rows (next4), or 1 and 3 (next5) */
    const __m512i next4 = _mm512_set_epi32(18, 15, 14, 13, 12, 11, 10, 9, 16, 7, 6, 5, 4, 3, 2, 1);
    const __m512i next5 = _mm512_set_epi32(19, 15, 14, 13, 12, 11, 10, 9, 17, 7, 6, 5, 4, 3, 2, 1);
    const __mmask16 m0 = WG_FN(wg_lanes)(-ix0, W - ix0), m1 = WG_FN(wg_lanes)(-(ix0 + 16), W - (ix0 + 16));
    /* columns ix0 + 32, + 33: lanes 0, 1 of a load from there (A), lanes 2, 3 of one from two before (B) */
    const __mmask16 mA = WG_FN(wg_lanes)(-(ix0 + 32), W - (ix0 + 32)) & 3;
    const __mmask16 mB = WG_FN(wg_lanes)(-(ix0 + 30), W - (ix0 + 30)) & 0xC;
    ptrdiff_t i;
    for (i = 0; i < WG_N; i++) {
        const int inA = iyA + i >= 0 && iyA + i < H, inB = planeB && iyB + i >= 0 && iyB + i < H;
        /* a row outside its plane (or no row B): all lanes masked off (zeros), from a plane's start */
        const WG_T *srcA = inA ? planeA + (iyA + i) * W + ix0 : planeA;
        const WG_T *srcB = inB ? planeB + (iyB + i) * W + ix0 : planeA;
        const __mmask16 onA = inA ? (__mmask16)0xFFFF : 0, onB = inB ? (__mmask16)0xFFFF : 0;
        if (aheadA && inA)
            WG_FN(wg_prefetch_cols)(aheadA + (iyA + i) * W, ix0, ix0 + 34, W);
        if (aheadB && inB)
            WG_FN(wg_prefetch_cols)(aheadB + (iyB + i) * W, ix0, ix0 + 34, W);
        const __m512 A0 = _mm512_maskz_loadu_ps(m0 & onA, srcA), A1 = _mm512_maskz_loadu_ps(m1 & onA, srcA + 16);
        const __m512 B0 = _mm512_maskz_loadu_ps(m0 & onB, srcB), B1 = _mm512_maskz_loadu_ps(m1 & onB, srcB + 16);
        const __m512 X = _mm512_mask_loadu_ps(_mm512_maskz_loadu_ps(mA & onA, srcA + 32), mB & onB, srcB + 30);
        const __m512 eA = _mm512_permutex2var_ps(A0, even, A1), eB = _mm512_permutex2var_ps(B0, even, B1);
        const __m512 oA = _mm512_permutex2var_ps(A0, odd, A1), oB = _mm512_permutex2var_ps(B0, odd, B1);
        WG_FN(wg_row16)(eA, eB, oA, oB, X, next4, next5, P + i * WG_N * 16);
    }
    WG_FN(wg_columns16)(P, V, vs);
}
#endif

#if WG_VECTORS
#  define WG_MASK WG_FN(wg_mask)
#  if WG_M == 6
typedef long long WG_MASK __attribute__((vector_size(WG_VBYTES)));
#  else
typedef int WG_MASK __attribute__((vector_size(WG_VBYTES)));
#  endif
#endif

/* max(v, 0) lane by lane, as `v < 0 ? 0 : v` (NaN stays NaN, as torch's relu). */
WG_INLINE WG_V WG_FN(wg_relu)(WG_V v)
{
#if WG_VECTORS
    const WG_V zero = {0};
    return (WG_V)((WG_MASK)v & ~(WG_MASK)(v < zero));
#else
    return v < 0 ? (WG_T)0 : v;
#endif
}

/* Y[(r*WG_M + s)*WG_L + l] = output (r, s) of tile l plus bias (with `relu`: max(that,
 * 0)), for the vector of tiles whose products are at Mk[point*ms + l]. */
WG_INLINE void WG_FN(wg_output_vector)(const WG_T *Mk, ptrdiff_t ms, WG_V b, int relu, WG_T *Y)
{
    const ptrdiff_t L = WG_L;
    ptrdiff_t a, j, r, s;
    WG_V rows[WG_N][WG_M];
    WG_UNROLL
    for (a = 0; a < WG_N; a++) {
        WG_V m[WG_N];
        WG_UNROLL
        for (j = 0; j < WG_N; j++)
            m[j] = WG_FN(wg_load)(Mk + (a * WG_N + j) * ms);
        WG_AT(WG_V, WG_T, m, rows[a]);
    }
    WG_UNROLL
    for (s = 0; s < WG_M; s++) {
        WG_V col[WG_N], y[WG_M];
        WG_UNROLL
        for (a = 0; a < WG_N; a++)
            col[a] = rows[a][s];
        WG_AT(WG_V, WG_T, col, y);
        WG_UNROLL
        for (r = 0; r < WG_M; r++)
            WG_FN(wg_store)(Y + (r * WG_M + s) * L, relu ? WG_FN(wg_relu)(y[r] + b) : y[r] + b);
    }
}

/* The output transforms of `len` tiles of one tile row of one output channel:
 * tile l's products at Mk[point*ms + l]; its WG_M x WG_M outputs plus `bias` go to
 * o[(oy0 + r)*Wo + ox0 + l*WG_M + s], clipped to Ho x Wo. Y: one vector of tiles. */
WG_NOINLINE void WG_FN(wg_output_segment)(const WG_T *Mk, ptrdiff_t ms, WG_T bias, int relu, WG_T *o, ptrdiff_t Ho,
                                     ptrdiff_t Wo, ptrdiff_t oy0, ptrdiff_t ox0, ptrdiff_t len, WG_T *Y)
{
    const ptrdiff_t L = WG_L;
    const WG_V b = WG_FN(wg_bcast)(bias);
    ptrdiff_t q, r, s, l;
    for (q = 0; q < len; q += L) {
        WG_FN(wg_output_vector)(Mk + q, ms, b, relu, Y);
        /* lanes [0, full) are tiles wholly inside the row: their WG_M values interleave
         * into one contiguous run (a fixed-size loop nest the compiler vectorises) */
        const ptrdiff_t lanes = len - q < L ? len - q : L, ox = ox0 + q * WG_M;
        const ptrdiff_t inside = (Wo - ox) / WG_M, full = inside < lanes ? inside : lanes;
        for (r = 0; r < WG_M && oy0 + r < Ho; r++) {
            WG_T *FC_RESTRICT_WG orow = o + (oy0 + r) * Wo + ox;
            const WG_T *FC_RESTRICT_WG yr = Y + r * WG_M * L;
            for (l = 0; l < full; l++) {
                WG_UNROLL
                for (s = 0; s < WG_M; s++)
                    orow[l * WG_M + s] = yr[s * L + l];
            }
            if (full < lanes) /* the row's last tile, clipped */
                for (s = 0; ox + full * WG_M + s < Wo; s++)
                    orow[full * WG_M + s] = yr[s * L + full];
        }
    }
}

#if WG_VECTORS && defined(__AVX512F__) && WG_M == 4
/* y[r][s] = output (r, s) of the 16 tiles whose products are at Mk[point*ms + l], plus
 * b (with `relu`: max(that, 0)), in registers. */
WG_INLINE void WG_FN(wg_output_regs16)(const WG_T *Mk, ptrdiff_t ms, WG_V b, int relu, WG_V y[WG_M][WG_M])
{
    WG_V rows[WG_N][WG_M];
    ptrdiff_t a, j, r, s;
    WG_UNROLL
    for (a = 0; a < WG_N; a++) {
        WG_V m[WG_N];
        WG_UNROLL
        for (j = 0; j < WG_N; j++)
            m[j] = WG_FN(wg_load)(Mk + (a * WG_N + j) * ms);
        WG_AT(WG_V, WG_T, m, rows[a]);
    }
    WG_UNROLL
    for (s = 0; s < WG_M; s++) {
        WG_V col[WG_N], t[WG_M];
        WG_UNROLL
        for (a = 0; a < WG_N; a++)
            col[a] = rows[a][s];
        WG_AT(WG_V, WG_T, col, t);
        WG_UNROLL
        for (r = 0; r < WG_M; r++)
            y[r][s] = relu ? WG_FN(wg_relu)(t[r] + b) : t[r] + b;
    }
}

/* w[v] = values 16v .. 16v + 16 of one output row of 16 tiles, 4 values a tile, from
 * yr[s] = column s of the tiles (lane l: tile l): tiles 0-7 in w[0], w[1], 8-15 in w[2], w[3]. */
WG_INLINE void WG_FN(wg_interleave16)(const WG_V yr[WG_M], __m512 w[4])
{
    /* lanes 2l, 2l + 1: lane l (l < 8; + 8 for hi) of the first and the second source */
    const __m512i pair_lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i pair_hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    /* lanes 4t .. 4t + 3: lanes 2t, 2t + 1 of the first source, then of the second
     * (t < 4; lanes 8 + 2t, ... for hi) */
    const __m512i quad_lo = _mm512_set_epi32(23, 22, 7, 6, 21, 20, 5, 4, 19, 18, 3, 2, 17, 16, 1, 0);
    const __m512i quad_hi = _mm512_set_epi32(31, 30, 15, 14, 29, 28, 13, 12, 27, 26, 11, 10, 25, 24, 9, 8);
    const __m512 p0 = _mm512_permutex2var_ps((__m512)yr[0], pair_lo, (__m512)yr[1]);
    const __m512 p1 = _mm512_permutex2var_ps((__m512)yr[0], pair_hi, (__m512)yr[1]);
    const __m512 p2 = _mm512_permutex2var_ps((__m512)yr[2], pair_lo, (__m512)yr[3]);
    const __m512 p3 = _mm512_permutex2var_ps((__m512)yr[2], pair_hi, (__m512)yr[3]);
    w[0] = _mm512_permutex2var_ps(p0, quad_lo, p2);
    w[1] = _mm512_permutex2var_ps(p0, quad_hi, p2);
    w[2] = _mm512_permutex2var_ps(p1, quad_lo, p3);
    w[3] = _mm512_permutex2var_ps(p1, quad_hi, p3);
}

/* wg_output_segment for F(4x4) in the AVX-512 build: each vector of 16 tiles' 4 x 4
 * outputs stay in registers, and each output row's 4 vectors (column s of the 16
 * tiles) are interleaved by permutes into the row's 64 contiguous values, stored
 * with masks that clip them to the tiles of the segment and to Wo. */
WG_NOINLINE void WG_FN(wg_output_segment16)(const WG_T *Mk, ptrdiff_t ms, WG_T bias, int relu, int stream, WG_T *o,
                                       ptrdiff_t Ho, ptrdiff_t Wo, ptrdiff_t oy0, ptrdiff_t ox0, ptrdiff_t len)
{
    const WG_V b = WG_FN(wg_bcast)(bias);
    ptrdiff_t q, r, v;
    for (q = 0; q < len; q += 16) {
        WG_V y[WG_M][WG_M];
        WG_FN(wg_output_regs16)(Mk + q, ms, b, relu, y);
        const ptrdiff_t ox = ox0 + 4 * q;
        const ptrdiff_t n = 4 * (len - q) < Wo - ox ? 4 * (len - q) : Wo - ox; /* values in each row */
        for (r = 0; r < WG_M && oy0 + r < Ho; r++) {
            WG_T *orow = o + (oy0 + r) * Wo + ox;
            __m512 w[4];
            WG_FN(wg_interleave16)(y[r], w);
            WG_UNROLL
            for (v = 0; v < 4; v++)
                if (n > 16 * v)
                    WG_FN(wg_put16)(orow + 16 * v, WG_FN(wg_lanes)(0, n - 16 * v), w[v], stream);
        }
    }
}

/* wg_output_segment16 for two rows of 5-8 tiles in one vector (wg_input_pair16's lanes):
 * row A's outputs to oA's rows oyA .. oyA + 4, row B's (oB NULL: none) to oB's rows oyB ..,
 * each row's Wo <= 32 values by two masked stores. */
WG_NOINLINE void WG_FN(wg_output_pair16)(const WG_T *Mk, ptrdiff_t ms, WG_T bias, int relu, int stream, WG_T *oA,
                                    WG_T *oB, ptrdiff_t Ho, ptrdiff_t Wo, ptrdiff_t oyA, ptrdiff_t oyB)
{
    const __mmask16 lo = WG_FN(wg_lanes)(0, Wo), hi = WG_FN(wg_lanes)(0, Wo - 16);
    WG_V y[WG_M][WG_M];
    ptrdiff_t r;
    WG_FN(wg_output_regs16)(Mk, ms, WG_FN(wg_bcast)(bias), relu, y);
    for (r = 0; r < WG_M; r++) {
        __m512 w[4];
        WG_FN(wg_interleave16)(y[r], w);
        if (oyA + r < Ho) {
            WG_FN(wg_put16)(oA + (oyA + r) * Wo, lo, w[0], stream);
            WG_FN(wg_put16)(oA + (oyA + r) * Wo + 16, hi, w[1], stream);
        }
        if (oB && oyB + r < Ho) {
            WG_FN(wg_put16)(oB + (oyB + r) * Wo, lo, w[2], stream);
            WG_FN(wg_put16)(oB + (oyB + r) * Wo + 16, hi, w[3], stream);
        }
    }
}
#endif

/* Rows of fewer tiles than a vector: the transforms run on the chunk's tiles in order,
 * one per lane whatever its row, from their own WG_N x WG_N inputs (no phase split:
 * P[(i*WG_N + j)*TS + q] is input (i, j) of tile q) and write their outputs tile by tile. */
WG_NOINLINE void WG_FN(wg_input_tiles)(const WG_T *x, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W, ptrdiff_t ch,
                                  ptrdiff_t first, ptrdiff_t count, ptrdiff_t tw, ptrdiff_t per_image,
                                  ptrdiff_t pt, ptrdiff_t pl, WG_T *P, WG_T *Z, WG_T *V, ptrdiff_t vs)
{
    const ptrdiff_t L = WG_L, TS = WG_NV * WG_L + WG_L, nq = (count + L - 1) / L * L;
    ptrdiff_t q, i, j, a, b;
    for (q = 0; q < nq; q++) {
        const ptrdiff_t u = first + (q < count ? q : 0), img = u / per_image, ty = u % per_image / tw, tx = u % tw;
        const WG_T *plane = x + (img * C + ch) * H * W;
        for (i = 0; i < WG_N; i++) {
            const ptrdiff_t iy = ty * WG_M - pt + i;
            for (j = 0; j < WG_N; j++) {
                const ptrdiff_t ix = tx * WG_M - pl + j;
                P[(i * WG_N + j) * TS + q] = (q < count && iy >= 0 && iy < H && ix >= 0 && ix < W)
                                                 ? plane[iy * W + ix] : (WG_T)0;
            }
        }
    }
    for (j = 0; j < WG_N; j++)
        for (q = 0; q < nq; q += L) {
            WG_V d[WG_N], z[WG_N];
            WG_UNROLL
            for (i = 0; i < WG_N; i++)
                d[i] = WG_FN(wg_load)(P + (i * WG_N + j) * TS + q);
            WG_BT(WG_V, WG_T, d, z);
            WG_UNROLL
            for (a = 0; a < WG_N; a++)
                WG_FN(wg_store)(Z + (a * WG_N + j) * TS + q, z[a]);
        }
    for (a = 0; a < WG_N; a++)
        for (q = 0; q < nq; q += L) {
            WG_V d[WG_N], z[WG_N];
            WG_UNROLL
            for (j = 0; j < WG_N; j++)
                d[j] = WG_FN(wg_load)(Z + (a * WG_N + j) * TS + q);
            WG_BT(WG_V, WG_T, d, z);
            WG_UNROLL
            for (b = 0; b < WG_N; b++)
                WG_FN(wg_store)(V + (a * WG_N + b) * vs + q, z[b]);
        }
}

WG_NOINLINE void WG_FN(wg_output_tiles)(const WG_T *Mk, ptrdiff_t ms, WG_T bias, int relu, WG_T *out, ptrdiff_t K,
                                   ptrdiff_t k,
                                   ptrdiff_t Ho, ptrdiff_t Wo, ptrdiff_t first, ptrdiff_t count, ptrdiff_t tw,
                                   ptrdiff_t per_image, WG_T *Y)
{
    const ptrdiff_t L = WG_L;
    const WG_V b = WG_FN(wg_bcast)(bias);
    ptrdiff_t q, l, r, s;
    for (q = 0; q < count; q += L) {
        WG_FN(wg_output_vector)(Mk + q, ms, b, relu, Y);
        for (l = 0; l < L && q + l < count; l++) {
            const ptrdiff_t u = first + q + l, img = u / per_image, ty = u % per_image / tw, tx = u % tw;
            WG_T *o = out + (img * K + k) * Ho * Wo;
            for (r = 0; r < WG_M && ty * WG_M + r < Ho; r++)
                for (s = 0; s < WG_M && tx * WG_M + s < Wo; s++)
                    o[(ty * WG_M + r) * Wo + tx * WG_M + s] = Y[(r * WG_M + s) * L + l];
        }
    }
}

/* One chunk: tiles first .. first + count (count <= wg_chunk_tiles(tw); where rows run two
 * to a vector, whole tile rows) of the flattened
 * (image, tile row, tile column) grid of out (N, K, Ho, Wo) = conv2d(x, w) + bias (with
 * `relu`: max(that, 0), fused into the output transform's store),
 * x (N, C, H, W) read from offset (-pt, -pl), for every group, output channel blocks kb0 ..
 * kb1 of WG_MR channels of each (a part of the chunk's channels: small maps have too few
 * chunks for the threads). U: the transformed weights, (groups, WG_P, Kp / WG_MR, C / groups,
 * WG_MR); work: wg_workspace(...) values. Without `transform_input` (one group only), V in
 * `work` already holds these tiles' input transforms (the thread's previous part of the chunk). */
static void WG_FN(wg_forward_chunk)(const WG_T *x, ptrdiff_t C, ptrdiff_t H, ptrdiff_t W, const WG_T *U,
                                    ptrdiff_t Kp, const WG_T *bias, WG_T *out, ptrdiff_t K, ptrdiff_t Ho,
                                    ptrdiff_t Wo, ptrdiff_t groups, ptrdiff_t pt, ptrdiff_t pl,
                                    ptrdiff_t first, ptrdiff_t count, ptrdiff_t kb0, ptrdiff_t kb1,
                                    int transform_input, int relu, int stream, WG_T *work)
{
    const ptrdiff_t T = WG_NV * WG_L, TS = T + WG_L;
    const ptrdiff_t Cg = C / groups, Kg = K / groups;
    const ptrdiff_t tw = (Wo + WG_M - 1) / WG_M, per_image = (Ho + WG_M - 1) / WG_M * tw;
    const int narrow = tw < WG_NARROW_BELOW, paired = WG_FN(wg_paired)(tw);
    const ptrdiff_t nr = paired ? (count + tw - 1) / tw : 0; /* tile rows, where two share a vector */
    /* vectors of tiles this chunk fills */
    const int nv = (int)(paired ? (nr + 1) / 2 : (count + WG_L - 1) / WG_L);
    const ptrdiff_t VS = WG_FN(wg_point_stride)(Cg);
    WG_T *V = work, *Mb = V + WG_P * VS, *P = Mb + WG_P * WG_MR * T, *Z = P + WG_P * TS;
    WG_T *Y = Z + WG_P * TS;
    ptrdiff_t g, s, c, k, pt_i, kb, r;
    (void)nr;
    (void)r;
    for (g = 0; g < groups; g++) {
        if (transform_input) {
#if WG_PAIRS
            for (r = 0; r < nr; r += 2) { /* rows r and r + 1 (if any) of the chunk in vector r / 2 */
                const ptrdiff_t uA = first + r * tw, uB = uA + tw, imgA = uA / per_image, imgB = uB / per_image;
                const ptrdiff_t iyA = uA % per_image / tw * WG_M - pt, iyB = uB % per_image / tw * WG_M - pt;
                for (c = 0; c < Cg; c++) {
                    const WG_T *planeA = x + (imgA * C + g * Cg + c) * H * W;
                    const WG_T *planeB = r + 1 < nr ? x + (imgB * C + g * Cg + c) * H * W : NULL;
                    const int ahead = c + WG_AHEAD < Cg;
                    WG_FN(wg_input_pair16)(planeA, planeB, H, W, iyA, iyB, -pl, P, V + c * TS + r / 2 * WG_L, VS,
                                           ahead ? planeA + WG_AHEAD * H * W : NULL,
                                           ahead && planeB ? planeB + WG_AHEAD * H * W : NULL);
                }
            }
#endif
            if (narrow)
                for (c = 0; c < Cg; c++)
                    WG_FN(wg_input_tiles)(x, C, H, W, g * Cg + c, first, count, tw, per_image, pt, pl, P, Z,
                                          V + c * TS, VS);
            for (s = 0; s < count && !narrow && !paired;) {
                const ptrdiff_t u = first + s, img = u / per_image, ty = u % per_image / tw, tx = u % tw;
                const ptrdiff_t len = tw - tx < count - s ? tw - tx : count - s;
                for (c = 0; c < Cg; c++) {
                    const WG_T *plane = x + (img * C + g * Cg + c) * H * W;
#if WG_VECTORS && defined(__AVX512F__) && WG_M == 4
                    WG_FN(wg_input_segment16)(plane, H, W, ty * WG_M - pt, tx * WG_M - pl, len, P, V + c * TS + s,
                                              VS, c + WG_AHEAD < Cg ? plane + WG_AHEAD * H * W : NULL);
#else
                    WG_FN(wg_input_segment)(plane, H, W, ty * WG_M - pt, tx * WG_M - pl, len, P, Z, V + c * TS + s,
                                            VS, c + WG_AHEAD < Cg ? plane + WG_AHEAD * H * W : NULL);
#endif
                }
                s += len;
            }
        }
        /* one block of WG_MR output channels at a time: its products at all points, then
         * their output transforms, while they are still in cache */
        for (kb = kb0; kb < kb1; kb++) {
#if WG_PAIRS
            /* a vector (two rows) at a time: its products at all points, WG_P * WG_MR * WG_L
             * values, stay in L1 until their output transforms read them */
            for (r = 0; r < nr; r += 2) {
                const ptrdiff_t uA = first + r * tw, uB = uA + tw, imgA = uA / per_image, imgB = uB / per_image;
                for (pt_i = 0; pt_i < WG_P; pt_i++)
                    WG_FN(wg_gemm)(U + ((g * WG_P + pt_i) * Kp + kb * WG_MR) * Cg, V + pt_i * VS + r / 2 * WG_L, Cg,
                                   TS, Mb + pt_i * WG_MR * T, T, 1);
                for (k = kb * WG_MR; k < (kb + 1) * WG_MR && k < Kg; k++)
                    WG_FN(wg_output_pair16)(Mb + (k - kb * WG_MR) * T, WG_MR * T, bias[g * Kg + k],
                                            relu, stream, out + (imgA * K + g * Kg + k) * Ho * Wo,
                                            r + 1 < nr ? out + (imgB * K + g * Kg + k) * Ho * Wo : NULL, Ho, Wo,
                                            uA % per_image / tw * WG_M, uB % per_image / tw * WG_M);
            }
            if (paired)
                continue;
#endif
            for (pt_i = 0; pt_i < WG_P; pt_i++) {
                const WG_T *Ub = U + ((g * WG_P + pt_i) * Kp + kb * WG_MR) * Cg, *Vp = V + pt_i * VS;
                WG_T *Mp = Mb + pt_i * WG_MR * T;
                switch (nv) { /* literal widths: fully unrolled register tiles */
                case 1: WG_FN(wg_gemm)(Ub, Vp, Cg, TS, Mp, T, 1); break;
                case 2: WG_FN(wg_gemm)(Ub, Vp, Cg, TS, Mp, T, WG_NV < 2 ? WG_NV : 2); break;
                default: WG_FN(wg_gemm)(Ub, Vp, Cg, TS, Mp, T, WG_NV);
                }
            }
            if (narrow)
                for (k = kb * WG_MR; k < (kb + 1) * WG_MR && k < Kg; k++)
                    WG_FN(wg_output_tiles)(Mb + (k - kb * WG_MR) * T, WG_MR * T, bias[g * Kg + k], relu, out, K,
                                           g * Kg + k, Ho, Wo, first, count, tw, per_image, Y);
            for (s = 0; s < count && !narrow && !paired;) {
                const ptrdiff_t u = first + s, img = u / per_image, ty = u % per_image / tw, tx = u % tw;
                const ptrdiff_t len = tw - tx < count - s ? tw - tx : count - s;
                for (k = kb * WG_MR; k < (kb + 1) * WG_MR && k < Kg; k++)
#if WG_VECTORS && defined(__AVX512F__) && WG_M == 4
                    WG_FN(wg_output_segment16)(Mb + (k - kb * WG_MR) * T + s, WG_MR * T, bias[g * Kg + k], relu,
                                               stream, out + (img * K + g * Kg + k) * Ho * Wo, Ho, Wo, ty * WG_M,
                                               tx * WG_M, len);
#else
                    WG_FN(wg_output_segment)(Mb + (k - kb * WG_MR) * T + s, WG_MR * T, bias[g * Kg + k], relu,
                                             out + (img * K + g * Kg + k) * Ho * Wo, Ho, Wo, ty * WG_M,
                                             tx * WG_M, len, Y);
#endif
                s += len;
            }
        }
    }
#if WG_PAIRS
    if (stream)
        _mm_sfence(); /* the streamed stores are seen before the task is marked done */
#else
    (void)stream;
#endif
}

/* The FMA ceiling the register tiles above aim at: `iterations` steps of WG_MR * WG_NV
 * independent vector FMA chains (as many as wg_gemm's accumulators: enough to cover the
 * FMA latency on every current x86 core), acc = acc * half + half (half = 1/2, given at run
 * time: a constant would let the compiler fold a chain), which settle at 1 (no denormals,
 * no overflow). 2 * WG_MR * WG_NV * WG_L flops a step; the sum of the
 * accumulators is returned so that the loop is not optimised away. */
static WG_T WG_FN(wg_fma_chains)(ptrdiff_t iterations, WG_T half)
{
    /* as wg_gemm's register tile, [WG_MR][WG_NV] loops that WG_UNROLL unrolls fully, so
     * the accumulators stay in registers (one flat loop of 24 kept them in memory) */
    WG_V acc[WG_MR][WG_NV];
    const WG_V m = WG_FN(wg_bcast)(half), a = WG_FN(wg_bcast)(half);
    WG_T total = 0;
    ptrdiff_t i;
    int r, v;
    WG_UNROLL
    for (r = 0; r < WG_MR; r++) {
        WG_UNROLL
        for (v = 0; v < WG_NV; v++)
            acc[r][v] = WG_FN(wg_bcast)((WG_T)(r * WG_NV + v));
    }
    for (i = 0; i < iterations; i++) {
        WG_UNROLL
        for (r = 0; r < WG_MR; r++) {
            WG_UNROLL
            for (v = 0; v < WG_NV; v++)
                acc[r][v] = acc[r][v] * m + a;
        }
    }
    for (r = 0; r < WG_MR; r++)
        for (v = 0; v < WG_NV; v++) {
            WG_T lanes[WG_L];
            memcpy(lanes, &acc[r][v], sizeof lanes);
            total += lanes[0];
        }
    return total;
}
