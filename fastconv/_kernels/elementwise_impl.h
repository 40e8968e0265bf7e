/* Body of elementwise.h, included once per element type: T is the type and SUF
 * the suffix of the generated names. No include guard (on purpose). */
#define FC_EW_FN(name) FC_EW_CAT(name, SUF)

/* out = max(x, 0), NaN kept (as torch.relu: `x <= 0` is false for a NaN). out may be x. */
static void FC_EW_FN(fc_relu)(const T *x, T *out, ptrdiff_t n)
{
    FC_EW_SIMD("omp simd")
    for (ptrdiff_t i = 0; i < n; i++)
        out[i] = x[i] <= 0 ? (T)0 : x[i];
}

/* out = g where y > 0, else 0 (y the forward's output; torch's threshold_backward). */
static void FC_EW_FN(fc_relu_backward)(const T *g, const T *y, T *out, ptrdiff_t n)
{
    FC_EW_SIMD("omp simd")
    for (ptrdiff_t i = 0; i < n; i++) {
        T gi = g[i];    /* loaded whatever y says: a select, not a branch around the load */
        out[i] = y[i] > 0 ? gi : (T)0;
    }
}

/* out = max(a + b, 0), NaN kept. out may be a or b. */
static void FC_EW_FN(fc_add_relu)(const T *a, const T *b, T *out, ptrdiff_t n)
{
    FC_EW_SIMD("omp simd")
    for (ptrdiff_t i = 0; i < n; i++) {
        T s = a[i] + b[i];
        out[i] = s <= 0 ? (T)0 : s;
    }
}

#undef FC_EW_FN
