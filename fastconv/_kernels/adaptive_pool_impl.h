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
