/* Body of pooling.h, included once per element type: T is the type and SUF the
 * suffix of the generated names (FC_POOL_FN(fastconv_max_2x2s2) is fastconv_max_2x2s2_f
 * for float). No include guard (on purpose). */

static void FC_POOL_FN(fastconv_max_2x2s2)(T *dst, const T *r0, const T *r1,
                                           ptrdiff_t lo, ptrdiff_t hi) {
    for (ptrdiff_t ow = lo; ow < hi; ow++) {
        T a = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];
        int nan = (a != a) | (b != b) | (c != c) | (d != d);
        T m = FASTCONV_MAX(FASTCONV_MAX(a, b), FASTCONV_MAX(c, d));
        dst[ow] = nan ? (T)NAN : m;
    }
}
static void FC_POOL_FN(fastconv_max_3x3s2)(T *dst, const T *r0, const T *r1, const T *r2,
                                           ptrdiff_t lo, ptrdiff_t hi) {
    for (ptrdiff_t ow = lo; ow < hi; ow++) {
        T a = r0[2 * ow], b = r0[2 * ow + 1], c = r0[2 * ow + 2];
        T d = r1[2 * ow], e = r1[2 * ow + 1], f = r1[2 * ow + 2];
        T g = r2[2 * ow], h = r2[2 * ow + 1], i = r2[2 * ow + 2];
        int nan = (a != a) | (b != b) | (c != c) | (d != d) | (e != e) | (f != f)
                  | (g != g) | (h != h) | (i != i);
        T m = FASTCONV_MAX(FASTCONV_MAX(FASTCONV_MAX(a, b), FASTCONV_MAX(c, d)),
                           FASTCONV_MAX(FASTCONV_MAX(e, f),
                                        FASTCONV_MAX(g, FASTCONV_MAX(h, i))));
        dst[ow] = nan ? (T)NAN : m;
    }
}
static void FC_POOL_FN(fastconv_avg_2x2s2)(T *dst, const T *r0, const T *r1,
                                           ptrdiff_t lo, ptrdiff_t hi, T div) {
    for (ptrdiff_t ow = lo; ow < hi; ow++)
        dst[ow] = (((r0[2 * ow] + r0[2 * ow + 1]) + r1[2 * ow]) + r1[2 * ow + 1]) / div;
}
static void FC_POOL_FN(fastconv_avg_3x3s2)(T *dst, const T *r0, const T *r1, const T *r2,
                                           ptrdiff_t lo, ptrdiff_t hi, T div) {
    for (ptrdiff_t ow = lo; ow < hi; ow++)
        dst[ow] = ((((((((r0[2 * ow] + r0[2 * ow + 1]) + r0[2 * ow + 2])
                        + r1[2 * ow]) + r1[2 * ow + 1]) + r1[2 * ow + 2])
                     + r2[2 * ow]) + r2[2 * ow + 1]) + r2[2 * ow + 2]) / div;
}
/* row[ow*2 + j] += g[ow] for j < 2 (windows side by side) */
static void FC_POOL_FN(fastconv_spread_2s2)(T *row, const T *g, ptrdiff_t lo, ptrdiff_t hi) {
    for (ptrdiff_t ow = lo; ow < hi; ow++) {
        row[2 * ow] += g[ow];
        row[2 * ow + 1] += g[ow];
    }
}
/* row[ow*2 + j] += g[ow] for j < 3: windows overlap by one column, so gather */
/* per input column (no dependence between iterations, unlike the scatter). */
static void FC_POOL_FN(fastconv_spread_3s2)(T *row, const T *g, ptrdiff_t lo, ptrdiff_t hi) {
    if (lo >= hi) return;
    row[2 * lo] += g[lo];
    row[2 * lo + 1] += g[lo];
    for (ptrdiff_t q = lo + 1; q < hi; q++) {
        row[2 * q] += g[q - 1] + g[q];
        row[2 * q + 1] += g[q];
    }
    row[2 * hi] += g[hi - 1];
}
/* With indices (flat, base = position of r0[0]): torch's choice is the first */
/* element equal to the max, or the last NaN; both picked by branch-free selects. */
static void FC_POOL_FN(fastconv_max_2x2s2_idx)(T *dst, int64_t *idx, const T *r0, const T *r1,
                                               ptrdiff_t lo, ptrdiff_t hi, int64_t base,
                                               int64_t W) {
    const int w = (int)W;
    for (ptrdiff_t ow = lo; ow < hi; ow++) {
        T a = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];
        T m = FASTCONV_MAX(FASTCONV_MAX(a, b), FASTCONV_MAX(c, d));
        int nan = (a != a) | (b != b) | (c != c) | (d != d);
        int first = c == m ? w : w + 1;
        first = b == m ? 1 : first;
        first = a == m ? 0 : first;
        int last = 0;
        last = b != b ? 1 : last;
        last = c != c ? w : last;
        last = d != d ? w + 1 : last;
        dst[ow] = nan ? (T)NAN : m;
        idx[ow] = base + 2 * ow + (nan ? last : first);
    }
}
static void FC_POOL_FN(fastconv_max_3x3s2_idx)(T *dst, int64_t *idx, const T *r0, const T *r1,
                                               const T *r2, ptrdiff_t lo, ptrdiff_t hi,
                                               int64_t base, int64_t W) {
    const int w = (int)W;
    for (ptrdiff_t ow = lo; ow < hi; ow++) {
        T a = r0[2 * ow], b = r0[2 * ow + 1], c = r0[2 * ow + 2];
        T d = r1[2 * ow], e = r1[2 * ow + 1], f = r1[2 * ow + 2];
        T g = r2[2 * ow], h = r2[2 * ow + 1], i = r2[2 * ow + 2];
        T m = FASTCONV_MAX(FASTCONV_MAX(FASTCONV_MAX(a, b), FASTCONV_MAX(c, d)),
                           FASTCONV_MAX(FASTCONV_MAX(e, f),
                                        FASTCONV_MAX(g, FASTCONV_MAX(h, i))));
        int nan = (a != a) | (b != b) | (c != c) | (d != d) | (e != e) | (f != f)
                  | (g != g) | (h != h) | (i != i);
        int first = h == m ? 2 * w + 1 : 2 * w + 2;
        first = g == m ? 2 * w : first;
        first = f == m ? w + 2 : first;
        first = e == m ? w + 1 : first;
        first = d == m ? w : first;
        first = c == m ? 2 : first;
        first = b == m ? 1 : first;
        first = a == m ? 0 : first;
        int last = 0;
        last = b != b ? 1 : last;
        last = c != c ? 2 : last;
        last = d != d ? w : last;
        last = e != e ? w + 1 : last;
        last = f != f ? w + 2 : last;
        last = g != g ? 2 * w : last;
        last = h != h ? 2 * w + 1 : last;
        last = i != i ? 2 * w + 2 : last;
        dst[ow] = nan ? (T)NAN : m;
        idx[ow] = base + 2 * ow + (nan ? last : first);
    }
}
