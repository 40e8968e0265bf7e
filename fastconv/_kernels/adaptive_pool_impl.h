/* Body of adaptive_pool.h, included once per element type: T is the type and
 * SUF the suffix of the generated names. No include guard (on purpose). */
#define FC_AP_FN(name) FC_AP_CAT(name, SUF)

/* Sum of the window rows [h0, h1) x columns [w0, w1) of a plane W wide. */
static T FC_AP_FN(fc_ap_window_sum)(const T *plane, ptrdiff_t W, ptrdiff_t h0, ptrdiff_t h1, ptrdiff_t w0,
                                    ptrdiff_t w1)
{
    T total = 0;
    if (w0 == 0 && w1 == W) {   /* whole rows: one contiguous run (global pooling) */
        const T *run = plane + h0 * W;
        FC_AP_SIMD("omp simd reduction(+:total)")
        for (ptrdiff_t i = 0; i < (h1 - h0) * W; i++)
            total += run[i];
        return total;
    }
    for (ptrdiff_t h = h0; h < h1; h++) {
        const T *row = plane + h * W;
        T s = 0;
        FC_AP_SIMD("omp simd reduction(+:s)")
        for (ptrdiff_t w = w0; w < w1; w++)
            s += row[w];
        total += s;
    }
    return total;
}

/* torch's max of the window: a row-major scan from -inf in which a value
 * replaces the max when larger or NaN; *idx = its flat position h*W + w. */
static T FC_AP_FN(fc_ap_window_max)(const T *plane, ptrdiff_t W, ptrdiff_t h0, ptrdiff_t h1, ptrdiff_t w0,
                                    ptrdiff_t w1, int64_t *idx)
{
    T m = -INFINITY;
    int64_t k = (int64_t)(h0 * W + w0);
    for (ptrdiff_t h = h0; h < h1; h++) {
        const T *row = plane + h * W;
        for (ptrdiff_t w = w0; w < w1; w++) {
            T v = row[w];
            int take = (v > m) | (v != v);
            m = take ? v : m;
            k = take ? (int64_t)(h * W + w) : k;
        }
    }
    *idx = k;
    return m;
}

#if !FC_AP_GROUPED
/* The mean of the plane r[0 : L], portable: eight running sums, vectorised without
 * -ffast-math; from 512 values on, whole blocks of 32 go to 32 sums first, folded into
 * the eight (eight independent vector chains in the SSE2 float32 build, where eight
 * sums are two vectors and each add waits for the last); the values past the last
 * multiple of 8 after the fold. The order is fixed by L alone. */
static T FC_AP_FN(fc_ap_plane_mean)(const T *r, ptrdiff_t L)
{
    T acc[8] = {0};
    ptrdiff_t i = 0;
    if (L >= 512) {
        T wide[32] = {0};
        for (; i + 32 <= L; i += 32)
            for (int k = 0; k < 32; k++)
                wide[k] += r[i + k];
        for (int k = 0; k < 8; k++)
            acc[k] = (wide[k] + wide[k + 16]) + (wide[k + 8] + wide[k + 24]);
    }
    const ptrdiff_t blocks = (L - i) / 8;     /* counted: as `i + 8 <= L` it took 1.6x as long */
    for (ptrdiff_t j = 0; j < blocks; j++)
        for (int k = 0; k < 8; k++)
            acc[k] += r[i + 8 * j + k];
    i += 8 * blocks;
    T s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < L; i++)
        s += r[i];
    return s / (T)L;
}
#endif

#if FC_AP_GROUPED
/* The lanes of the plane r[0 : L] (adaptive_pool.h; the masked load adds +0.0 past the
 * plane, which changes no sum: sums from +0.0 are never -0.0). */
static inline FC_AP_V FC_AP_FN(fc_ap_lanes)(const T *r, ptrdiff_t L)
{
    enum { VL = 32 / sizeof(T) };
    FC_AP_V a = FC_AP_OP(setzero)(), b = a, c = a, d = a;
    ptrdiff_t i = 0;
    for (; i + 4 * VL <= L; i += 4 * VL) {
        a = FC_AP_OP(add)(a, FC_AP_OP(loadu)(r + i));
        b = FC_AP_OP(add)(b, FC_AP_OP(loadu)(r + i + VL));
        c = FC_AP_OP(add)(c, FC_AP_OP(loadu)(r + i + 2 * VL));
        d = FC_AP_OP(add)(d, FC_AP_OP(loadu)(r + i + 3 * VL));
    }
    if (i + 2 * VL <= L) {
        a = FC_AP_OP(add)(a, FC_AP_OP(loadu)(r + i));
        b = FC_AP_OP(add)(b, FC_AP_OP(loadu)(r + i + VL));
        i += 2 * VL;
    }
    if (i + VL <= L) {
        a = FC_AP_OP(add)(a, FC_AP_OP(loadu)(r + i));
        i += VL;
    }
    if (i < L)
        b = FC_AP_OP(add)(b, FC_AP_OP(maskload)(r + i, _mm256_loadu_si256(
            (const __m256i *)(fc_ap_tail_mask + 8 - FC_AP_MASK_PER * (L - i)))));
    return FC_AP_OP(add)(FC_AP_OP(add)(a, b), FC_AP_OP(add)(c, d));
}

/* dst[q] = mean of plane q (x + q*L) for q < n <= the lanes of a vector: neighbouring
 * lanes summed pairwise ((l0 + l1) + (l2 + l3)) + ..., each plane's vectors in turn
 * (hadd), the two halves added last (permute2f128). */
static void FC_AP_FN(fc_ap_group_means)(const T *x, ptrdiff_t L, ptrdiff_t n, T *dst)
{
    enum { VL = 32 / sizeof(T) };
    FC_AP_V v[VL];
    T t[VL];
    int q, m;
    for (q = 0; q < VL; q++)
        v[q] = q < n ? FC_AP_FN(fc_ap_lanes)(x + q * L, L) : FC_AP_OP(setzero)();
    for (m = VL; m > 2; m /= 2)
        for (q = 0; q < m / 2; q++)
            v[q] = FC_AP_OP(hadd)(v[2 * q], v[2 * q + 1]);
    FC_AP_V s = FC_AP_OP(add)(FC_AP_OP(permute2f128)(v[0], v[1], 0x20), FC_AP_OP(permute2f128)(v[0], v[1], 0x31));
    s = FC_AP_OP(div)(s, FC_AP_OP(set1)((T)L));
    if (n == VL) {
        FC_AP_OP(storeu)(dst, s);
        return;
    }
    FC_AP_OP(storeu)(t, s);
    for (q = 0; q < n; q++)
        dst[q] = t[q];
}
#endif

/* dst[p] = mean of the plane x[p*L : (p+1)*L] for p < count (global average pooling):
 * by groups of planes where the build has AVX (adaptive_pool.h), else plane by plane. */
static void FC_AP_FN(fc_ap_plane_means)(const T *x, ptrdiff_t L, ptrdiff_t count, T *dst)
{
#if FC_AP_GROUPED
    enum { GROUP = 32 / sizeof(T) };
    for (ptrdiff_t p = 0; p < count; p += GROUP)
        FC_AP_FN(fc_ap_group_means)(x + p * L, L, count - p < GROUP ? count - p : GROUP, dst + p);
#else
    for (ptrdiff_t p = 0; p < count; p++)
        dst[p] = FC_AP_FN(fc_ap_plane_mean)(x + p * L, L);
#endif
}

/* The first k with r[k] == m (one exists): by vectors (AVX) or blocks of 8 whose
 * equality flags are or-ed (portable), then the last few values one by one. A scan
 * value by value, one branch each, took longer than the max itself. */
static ptrdiff_t FC_AP_FN(fc_ap_find)(const T *r, ptrdiff_t L, T m)
{
    ptrdiff_t k = 0;
#if FC_AP_GROUPED
    enum { VL = 32 / sizeof(T) };
    const FC_AP_V mv = FC_AP_OP(set1)(m);
    for (; k + VL <= L; k += VL) {
        const int bits = FC_AP_OP(movemask)(FC_AP_OP(cmp)(FC_AP_OP(loadu)(r + k), mv, _CMP_EQ_OQ));
        if (bits)
            return k + __builtin_ctz((unsigned)bits);
    }
#else
    for (; k + 8 <= L; k += 8) {
        int any = 0;
        for (int j = 0; j < 8; j++)
            any |= r[k + j] == m;
        if (any)
            break;
    }
#endif
    while (!(r[k] == m))
        k++;
    return k;
}

/* torch's max of the plane r[0 : L] (L >= 1): the first maximum in order, or the
 * last NaN; *idx (when idx is not NULL) its position. A vectorised pass takes the
 * max with a flag, z += v - v, that stays 0 unless an inf or a NaN went in (AVX: two
 * vector accumulators and an overlapping last vector, a max being indifferent to
 * values seen twice; portable: eight lanes), then a scan finds the first value equal
 * to it, which also gives a zero its sign; a flagged plane takes torch's scan
 * (fc_ap_window_max). The pass it replaced, 64 lanes and a scalar tail, took 13x the
 * global average's time on 7x7 planes. */
static T FC_AP_FN(fc_ap_plane_max)(const T *r, ptrdiff_t L, int64_t *idx)
{
    T m, zz;
    ptrdiff_t i = 0, k;
#if FC_AP_GROUPED
    enum { VL = 32 / sizeof(T) };
    if (L >= VL) {
        FC_AP_V a = FC_AP_OP(loadu)(r), b = a, za = FC_AP_OP(sub)(a, a), zb = FC_AP_OP(setzero)();
        T t[VL], z[VL];
        for (i = VL; i + 2 * VL <= L; i += 2 * VL) {
            const FC_AP_V u = FC_AP_OP(loadu)(r + i), w = FC_AP_OP(loadu)(r + i + VL);
            a = FC_AP_OP(max)(u, a);
            b = FC_AP_OP(max)(w, b);
            za = FC_AP_OP(add)(za, FC_AP_OP(sub)(u, u));
            zb = FC_AP_OP(add)(zb, FC_AP_OP(sub)(w, w));
        }
        if (i + VL <= L) {
            const FC_AP_V u = FC_AP_OP(loadu)(r + i);
            a = FC_AP_OP(max)(u, a);
            za = FC_AP_OP(add)(za, FC_AP_OP(sub)(u, u));
            i += VL;
        }
        if (i < L) {
            const FC_AP_V w = FC_AP_OP(loadu)(r + L - VL);
            b = FC_AP_OP(max)(w, b);
            zb = FC_AP_OP(add)(zb, FC_AP_OP(sub)(w, w));
        }
        FC_AP_OP(storeu)(t, FC_AP_OP(max)(a, b));
        FC_AP_OP(storeu)(z, FC_AP_OP(add)(za, zb));
        m = t[0];
        zz = z[0];
        for (k = 1; k < VL; k++) {
            m = t[k] > m ? t[k] : m;
            zz += z[k];
        }
        i = L;
    } else
#endif
    {
        T lane[8], z[8];
        const ptrdiff_t blocks = L / 8;     /* counted, as fc_ap_plane_mean's */
        for (k = 0; k < 8; k++) {
            lane[k] = r[0];
            z[k] = 0;
        }
        for (ptrdiff_t j = 0; j < blocks; j++)
            for (k = 0; k < 8; k++) {
                const T v = r[8 * j + k];
                lane[k] = v > lane[k] ? v : lane[k];
                z[k] += v - v;
            }
        m = lane[0];
        zz = z[0];
        for (k = 1; k < 8; k++) {
            m = lane[k] > m ? lane[k] : m;
            zz += z[k];
        }
        i = 8 * blocks;
    }
    for (; i < L; i++) {
        m = r[i] > m ? r[i] : m;
        zz += r[i] - r[i];
    }
    if (zz != zz) {
        int64_t at;
        m = FC_AP_FN(fc_ap_window_max)(r, L, 0, 1, 0, L, &at);
        if (idx)
            *idx = at;
        return m;
    }
    if (idx || m == 0) {
        k = FC_AP_FN(fc_ap_find)(r, L, m);
        if (idx)
            *idx = (int64_t)k;
        m = r[k];
    }
    return m;
}

/* One output row of the average, separable as the max below: the column sums
 * down the rows [h0, h1) (a vectorised pass over whole rows, into col_sum, W
 * values), then each window's sum of its columns, divided once by its area. A
 * single window of whole rows (global pooling) is one contiguous sum. */
static void FC_AP_FN(fc_ap_avg_row)(const T *plane, ptrdiff_t W, ptrdiff_t h0, ptrdiff_t h1, const ptrdiff_t *ws,
                                    const ptrdiff_t *we, ptrdiff_t Wo, T *restrict col_sum, T *dst)
{
    if (Wo == 1) {
        dst[0] = FC_AP_FN(fc_ap_window_sum)(plane, W, h0, h1, 0, W) / (T)((h1 - h0) * W);
        return;
    }
    for (ptrdiff_t w = 0; w < W; w++)
        col_sum[w] = 0;
    for (ptrdiff_t h = h0; h < h1; h++) {
        const T *restrict row = plane + h * W;
        for (ptrdiff_t w = 0; w < W; w++)
            col_sum[w] += row[w];
    }
    for (ptrdiff_t j = 0; j < Wo; j++) {
        T s = 0;
        for (ptrdiff_t w = ws[j]; w < we[j]; w++)
            s += col_sum[w];
        dst[j] = s / (T)((h1 - h0) * (we[j] - ws[j]));
    }
}

/* One output row of the max: rows [h0, h1), windows [ws[j], we[j]) for j < Wo.
 * torch's answer is the first maximum in row-major order, i.e. the smallest
 * flat position h*W + w holding the window's max (a NaN wins, the last one).
 * Without NaNs that is found without a branch per element: a vectorised pass
 * down the rows keeps each column's max and its topmost row (col_max,
 * col_row: W values each, rows as int32 so that the pass vectorises; a
 * strict > keeps the topmost of equal values), then each window takes the
 * max of its columns and the smallest position among the columns that hold
 * it. A window of whole rows (global pooling) is one contiguous max reduction
 * and a scan to the first equal value. A row with a NaN takes torch's scan,
 * window by window. The memory floor is one read of the rows; the reference
 * (`fastconv.reference`) copies each window out and scans it thrice.
 * Re-measured by `python -m fastconv bench --sections ops` ("adapt_max fwd"). */
static void FC_AP_FN(fc_ap_max_row)(const T *plane, ptrdiff_t W, ptrdiff_t h0, ptrdiff_t h1, const ptrdiff_t *ws,
                                    const ptrdiff_t *we, ptrdiff_t Wo, T *restrict col_max,
                                    int32_t *restrict col_row, T *dst, int64_t *idx)
{
    int nan = 0;
    if (Wo == 1 && ws[0] == 0 && we[0] == W) {     /* whole rows: global pooling's plane max */
        dst[0] = FC_AP_FN(fc_ap_plane_max)(plane + h0 * W, (h1 - h0) * W, idx);
        idx[0] += (int64_t)(h0 * W);
        return;
    }
    for (ptrdiff_t w = 0; w < W; w++) {
        col_max[w] = -INFINITY;
        col_row[w] = (int32_t)h0;
    }
    /* For float, the NaN check is a loop of its own over the rows' one
     * contiguous run, which the compiler vectorises with the flag in a
     * register: as an `omp simd reduction` in the column pass, the flag's
     * vector was spilled and reloaded after a narrower store, a
     * store-forwarding stall per row (a quarter of the time on 14x14
     * planes). The double build has no such stall and the extra pass
     * cost it 5%, so it keeps the check in the column pass. */
    const int nan_pass = sizeof(T) == sizeof(float);
    if (nan_pass) {
        const T *run = plane + h0 * W;
        for (ptrdiff_t i = 0; i < (h1 - h0) * W; i++)
            nan |= run[i] != run[i];
    }
    for (ptrdiff_t h = h0; h < h1; h++) {
        const T *restrict row = plane + h * W;
        const int32_t hh = (int32_t)h;
        if (nan_pass) {
            FC_AP_SIMD("omp simd")
            for (ptrdiff_t w = 0; w < W; w++) {
                T v = row[w], m = col_max[w];
                int32_t r = col_row[w];
                int32_t larger = -(int32_t)(v > m);     /* a mask, not a branch: vectorises */
                col_max[w] = v > m ? v : m;
                col_row[w] = (hh & larger) | (r & ~larger);
            }
        } else {
            FC_AP_SIMD("omp simd reduction(|:nan)")
            for (ptrdiff_t w = 0; w < W; w++) {
                T v = row[w], m = col_max[w];
                int32_t r = col_row[w];
                int32_t larger = -(int32_t)(v > m);
                col_max[w] = v > m ? v : m;
                col_row[w] = (hh & larger) | (r & ~larger);
                nan |= v != v;
            }
        }
    }
    if (!nan) {
        for (ptrdiff_t j = 0; j < Wo; j++) {
            const ptrdiff_t w0 = ws[j], w1 = we[j];
            T m = col_max[w0];
            for (ptrdiff_t w = w0 + 1; w < w1; w++)
                m = col_max[w] > m ? col_max[w] : m;
            int64_t pos = INT64_MAX;
            for (ptrdiff_t w = w0; w < w1; w++) {
                int64_t k = (int64_t)col_row[w] * W + w;
                pos = (col_max[w] == m) & (k < pos) ? k : pos;
            }
            dst[j] = plane[pos];
            idx[j] = pos;
        }
        return;
    }
    for (ptrdiff_t j = 0; j < Wo; j++)
        dst[j] = FC_AP_FN(fc_ap_window_max)(plane, W, h0, h1, ws[j], we[j], idx + j);
}

/* row[w0:w1] += g for the window rows [h0, h1) (the backward of an average). */
static void FC_AP_FN(fc_ap_window_add)(T *plane, ptrdiff_t W, ptrdiff_t h0, ptrdiff_t h1, ptrdiff_t w0,
                                       ptrdiff_t w1, T g)
{
    if (w0 == 0 && w1 == W) {
        T *run = plane + h0 * W;
        FC_AP_SIMD("omp simd")
        for (ptrdiff_t i = 0; i < (h1 - h0) * W; i++)
            run[i] += g;
        return;
    }
    for (ptrdiff_t h = h0; h < h1; h++) {
        T *row = plane + h * W;
        FC_AP_SIMD("omp simd")
        for (ptrdiff_t w = w0; w < w1; w++)
            row[w] += g;
    }
}

#undef FC_AP_FN
