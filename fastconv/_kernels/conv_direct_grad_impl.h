/* One dtype's grad_weight tiles: the body of conv_direct_grad.h, included there once per
 * element type with T, SUF and FC_DOUBLE defined (as conv_direct_rows_impl.h, whose vector
 * types and loads it uses). No include guard (on purpose). */

/* Output channels per grad_weight tile: the transposed grad_output's row length. */
static ptrdiff_t FC_FN(fc_grad_w_block)(void) { return FC_GV * FC_TILE_LANES(T); }

/* One grad_weight tile: B = fc_grad_w_block channels k x nt taps t,
 *     gw[t*ldg + k] += sum_{y < rows, ox < Wo} go[(y*Wo + ox)*B + k] * src[off[t] + y*Wq + ox]
 * (src: a band's phase planes, pixel y*Wq + ox as in the forward). */
FC_INLINE void FC_FN(fc_grad_w_tile)(const T *go, const T *src, const ptrdiff_t *off, T *gw,
        ptrdiff_t ldg, ptrdiff_t rows, ptrdiff_t Wq, ptrdiff_t Wo, const int nt)
{
    const ptrdiff_t L = FC_TILE_LANES(T), B = FC_GV * FC_TILE_LANES(T);
    FC_TVEC acc[FC_GV][FC_GT];
    ptrdiff_t o[FC_GT];
    ptrdiff_t y, ox;
    int t, v;
    FC_UNROLL_ALL
    for (t = 0; t < nt; t++) {
        o[t] = off[t];
        for (v = 0; v < FC_GV; v++)
            acc[v][t] = FC_FN(fc_tbcast)(0);
    }
    for (y = 0; y < rows; y++) {
        const T *s = src + y * Wq, *g = go + y * Wo * B;
        for (ox = 0; ox < Wo; ox++) {
            FC_TVEC gv[FC_GV];
            for (v = 0; v < FC_GV; v++)
                gv[v] = FC_FN(fc_tload)(g + ox * B + v * L);
            FC_UNROLL_ALL
            for (t = 0; t < nt; t++) {
                const FC_TVEC x = FC_FN(fc_tbcast)(s[o[t] + ox]);
                for (v = 0; v < FC_GV; v++)
                    acc[v][t] += x * gv[v];
            }
        }
    }
    FC_UNROLL_ALL /* acc stays in registers only if every index is a constant */
    for (t = 0; t < nt; t++)
        for (v = 0; v < FC_GV; v++)
            FC_FN(fc_tstore)(gw + t * ldg + v * L, FC_FN(fc_tload)(gw + t * ldg + v * L) + acc[v][t]);
}

/* One block of B channels over every tap t < taps: gw[t*ldg + k] += as fc_grad_w_tile, the
 * taps in near-equal tiles of at most FC_GT. */
static void FC_FN(fc_grad_w_tiles)(const T *go, const T *src, const ptrdiff_t *off, ptrdiff_t taps,
        T *gw, ptrdiff_t ldg, ptrdiff_t rows, ptrdiff_t Wq, ptrdiff_t Wo)
{
    const ptrdiff_t n = (taps + FC_GT - 1) / FC_GT, P = n ? taps / n : 0, wide = n ? taps % n : 0;
    ptrdiff_t j, t0;
    for (j = 0, t0 = 0; j < n; t0 += P + (j < wide), j++) {
        const T *a = src;
        const ptrdiff_t *b = off + t0;
        T *c = gw + t0 * ldg;
        switch (P + (j < wide)) { /* literal tap counts: fully unrolled bodies */
#if FC_GT >= 12
        case 12: FC_FN(fc_grad_w_tile)(go, a, b, c, ldg, rows, Wq, Wo, 12); break;
#endif
#if FC_GT >= 11
        case 11: FC_FN(fc_grad_w_tile)(go, a, b, c, ldg, rows, Wq, Wo, 11); break;
#endif
#if FC_GT >= 10
        case 10: FC_FN(fc_grad_w_tile)(go, a, b, c, ldg, rows, Wq, Wo, 10); break;
#endif
#if FC_GT >= 9
        case 9: FC_FN(fc_grad_w_tile)(go, a, b, c, ldg, rows, Wq, Wo, 9); break;
#endif
#if FC_GT >= 8
        case 8: FC_FN(fc_grad_w_tile)(go, a, b, c, ldg, rows, Wq, Wo, 8); break;
#endif
#if FC_GT >= 7
        case 7: FC_FN(fc_grad_w_tile)(go, a, b, c, ldg, rows, Wq, Wo, 7); break;
#endif
        case 6: FC_FN(fc_grad_w_tile)(go, a, b, c, ldg, rows, Wq, Wo, 6); break;
        case 5: FC_FN(fc_grad_w_tile)(go, a, b, c, ldg, rows, Wq, Wo, 5); break;
        case 4: FC_FN(fc_grad_w_tile)(go, a, b, c, ldg, rows, Wq, Wo, 4); break;
        case 3: FC_FN(fc_grad_w_tile)(go, a, b, c, ldg, rows, Wq, Wo, 3); break;
        case 2: FC_FN(fc_grad_w_tile)(go, a, b, c, ldg, rows, Wq, Wo, 2); break;
        default: FC_FN(fc_grad_w_tile)(go, a, b, c, ldg, rows, Wq, Wo, 1);
        }
    }
}

/* dst[(y*Wo + ox)*B + k] = go[k*go_k + y*Wo + ox] for k < nk, 0 for nk <= k < B (y*Wo + ox < n):
 * nk channels of a band of grad_output, transposed channel-fastest for fc_grad_w_tiles, in
 * blocks of pixels that stay in L1. */
static void FC_FN(fc_grad_w_transpose)(const T *go, ptrdiff_t go_k, ptrdiff_t nk, T *dst, ptrdiff_t n)
{
    const ptrdiff_t B = FC_GV * FC_TILE_LANES(T), P = 64;
    ptrdiff_t p0, p, k, np;
    for (p0 = 0; p0 < n; p0 += P) {
        np = n - p0 < P ? n - p0 : P;
        for (k = 0; k < nk; k++) {
            const T *s = go + k * go_k + p0;
            T *d = dst + p0 * B + k;
            for (p = 0; p < np; p++)
                d[p * B] = s[p];
        }
        if (nk < B)
            for (p = 0; p < np; p++)
                for (k = nk; k < B; k++)
                    dst[(p0 + p) * B + k] = 0;
    }
}
