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
 * Separable, so that most of the work is a vectorisable pass over whole rows:
 * first each column's max down the rows (col_max, and its row in col_row: the
 * topmost maximum, or the lowest NaN), then each window's best column. Both
 * passes keep torch's row-major choice, which is the smallest (row, column)
 * among equal maxima and the largest (row, column) among NaNs. col_max and
 * col_row hold W values each (rows as int32, so that the column pass
 * vectorises; fastconv caps H below 2**31). */
static void FC_AP_FN(fc_ap_max_row)(const T *plane, ptrdiff_t W, ptrdiff_t h0, ptrdiff_t h1, const ptrdiff_t *ws,
                                    const ptrdiff_t *we, ptrdiff_t Wo, T *restrict col_max,
                                    int32_t *restrict col_row, T *dst, int64_t *idx)
{
    for (ptrdiff_t w = 0; w < W; w++) {
        col_max[w] = -INFINITY;
        col_row[w] = (int32_t)h0;
    }
    for (ptrdiff_t h = h0; h < h1; h++) {
        const T *restrict row = plane + h * W;
        const int32_t hh = (int32_t)h;
        for (ptrdiff_t w = 0; w < W; w++) {
            T v = row[w], m = col_max[w];
            int32_t r = col_row[w];
            int take = (v > m) | (v != v);
            col_max[w] = take ? v : m;
            col_row[w] = take ? hh : r;
        }
    }
    for (ptrdiff_t j = 0; j < Wo; j++) {
        ptrdiff_t best = ws[j];
        T m = col_max[best];
        int64_t r = col_row[best];
        for (ptrdiff_t w = ws[j] + 1; w < we[j]; w++) {
            T v = col_max[w];
            int64_t rw = col_row[w];   /* rows fit: H < 2**31 */
            int take = v != v ? (m == m) | (rw >= r) : (m == m) & ((v > m) | ((v == m) & (rw < r)));
            if (take) {
                m = v;
                r = rw;
                best = w;
            }
        }
        dst[j] = m;
        idx[j] = r * (int64_t)W + (int64_t)best;
    }
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
