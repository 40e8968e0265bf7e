/* Body of batch_norm.h, included once per element type: T is the type and SUF
 * the suffix of the generated names. No include guard (on purpose). */
#define FC_BN_FN(name) FC_BN_CAT(name, SUF)

/* part[FC_BN_*] of the segment x[0:n]: its length, the shift K, sum(d), sum(d*d)
 * with d = x - K, and, when g is not NULL, sum(g) and sum(g*d). */
static void FC_BN_FN(fc_bn_segment)(const T *x, const T *g, ptrdiff_t n, double *part)
{
    ptrdiff_t head = n < FC_BN_HEAD ? n : FC_BN_HEAD;
    double k = 0.0, s1 = 0.0, s2 = 0.0, sg = 0.0, sgd = 0.0;
    FC_BN_SIMD("omp simd reduction(+:k)")
    for (ptrdiff_t i = 0; i < head; i++)
        k += (double)x[i];
    k = head > 0 ? k / (double)head : 0.0;
    if (g == NULL) {
        FC_BN_SIMD("omp simd reduction(+:s1, s2)")
        for (ptrdiff_t i = 0; i < n; i++) {
            double d = (double)x[i] - k;
            s1 += d;
            s2 += d * d;
        }
    } else {
        FC_BN_SIMD("omp simd reduction(+:s1, s2, sg, sgd)")
        for (ptrdiff_t i = 0; i < n; i++) {
            double d = (double)x[i] - k, gi = (double)g[i];
            s1 += d;
            s2 += d * d;
            sg += gi;
            sgd += gi * d;
        }
    }
    part[FC_BN_COUNT] = (double)n;
    part[FC_BN_SHIFT] = k;
    part[FC_BN_S1] = s1;
    part[FC_BN_S2] = s2;
    part[FC_BN_SG] = sg;
    part[FC_BN_SGD] = sgd;
}

/* out = x * scale + shift, rounded after each operation as NumPy's two ufuncs do. */
static void FC_BN_FN(fc_bn_affine)(const T *x, T *out, ptrdiff_t n, T scale, T shift)
{
    FC_BN_SIMD("omp simd")
    for (ptrdiff_t i = 0; i < n; i++) {
        T y = x[i] * scale;
        out[i] = y + shift;
    }
}

/* Training grad_x = k*g - c1*(x - mean) - b, in double. */
static void FC_BN_FN(fc_bn_backward_input)(const T *g, const T *x, T *gx, ptrdiff_t n, double k, double c1,
                                           double mean, double b)
{
    FC_BN_SIMD("omp simd")
    for (ptrdiff_t i = 0; i < n; i++)
        gx[i] = (T)(k * (double)g[i] - c1 * ((double)x[i] - mean) - b);
}

/* Eval: grad_x = k*g, and part[FC_BN_SG], part[FC_BN_SGD] = sum(g), sum(g*(x - mean)). */
static void FC_BN_FN(fc_bn_backward_eval)(const T *g, const T *x, T *gx, ptrdiff_t n, double k, double mean,
                                          double *part)
{
    double sg = 0.0, sgd = 0.0;
    FC_BN_SIMD("omp simd reduction(+:sg, sgd)")
    for (ptrdiff_t i = 0; i < n; i++) {
        double gi = (double)g[i];
        sg += gi;
        sgd += gi * ((double)x[i] - mean);
        gx[i] = (T)(k * gi);
    }
    part[FC_BN_SG] = sg;
    part[FC_BN_SGD] = sgd;
}

#undef FC_BN_FN
