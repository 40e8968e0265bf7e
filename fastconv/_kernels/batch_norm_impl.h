/* Body of batch_norm.h, included once per element type: T is the type and SUF
 * the suffix of the generated names. No include guard (on purpose). */
#define FC_BN_FN(name) FC_BN_CAT(name, SUF)

/* part[FC_BN_*] of the segment x[0:n]: its length, the shift K, sum(d), sum(d*d)
 * with d = x - K, and, when g is not NULL, sum(g) and sum(g*d). The sums run in
 * FC_BN_LANES independent lanes, which the compiler keeps in vector registers
 * (one accumulator would wait on the latency of each add); the lanes are added
 * at the end, so the result does not depend on the compiler's vectorisation. */
static void FC_BN_FN(fc_bn_segment)(const T *x, const T *g, ptrdiff_t n, double *part)
{
    ptrdiff_t head = n < FC_BN_HEAD ? n : FC_BN_HEAD, i = 0, j;
    double k = 0.0, s1 = 0.0, s2 = 0.0, sg = 0.0, sgd = 0.0;
    double a1[FC_BN_LANES] = {0}, a2[FC_BN_LANES] = {0}, ag[FC_BN_LANES] = {0}, agd[FC_BN_LANES] = {0};
    for (; i + FC_BN_LANES <= head; i += FC_BN_LANES)
        for (j = 0; j < FC_BN_LANES; j++)
            a1[j] += (double)x[i + j];
    for (j = 0; i + j < head; j++)
        a1[j] += (double)x[i + j];
    for (j = 0; j < FC_BN_LANES; j++) {
        k += a1[j];
        a1[j] = 0.0;
    }
    k = head > 0 ? k / (double)head : 0.0;
    /* The lane loops are `omp simd`: each lane is its own sum, so the order of
     * the adds, hence the result, stays that of the plain loops, but without the
     * directive gcc vectorised the (float64) lanes with shuffles and stack spills,
     * 15 GB/s on one core where they now run at 25-28 GB/s from memory. float32's
     * loop with g stays plain: the directive slowed the AVX-512 build (20 -> 16 GB/s). */
    i = 0;
    if (g == NULL) {
        for (; i + FC_BN_LANES <= n; i += FC_BN_LANES) {
            FC_BN_SIMD("omp simd")
            for (j = 0; j < FC_BN_LANES; j++) {
                double d = (double)x[i + j] - k;
                a1[j] += d;
                a2[j] += d * d;
            }
        }
    } else if (sizeof(T) == sizeof(double)) {
        for (; i + FC_BN_GLANES <= n; i += FC_BN_GLANES) {
            FC_BN_SIMD("omp simd")
            for (j = 0; j < FC_BN_GLANES; j++) {
                double d = (double)x[i + j] - k, gj = (double)g[i + j];
                a1[j] += d;
                a2[j] += d * d;
                ag[j] += gj;
                agd[j] += gj * d;
            }
        }
    } else {
        for (; i + FC_BN_GLANES <= n; i += FC_BN_GLANES)
            for (j = 0; j < FC_BN_GLANES; j++) {
                double d = (double)x[i + j] - k, gj = (double)g[i + j];
                a1[j] += d;
                a2[j] += d * d;
                ag[j] += gj;
                agd[j] += gj * d;
            }
    }
    for (j = 0; i + j < n; j++) {   /* the tail, into lanes 0.. */
        double d = (double)x[i + j] - k, gj = g == NULL ? 0.0 : (double)g[i + j];
        a1[j] += d;
        a2[j] += d * d;
        ag[j] += gj;
        agd[j] += gj * d;
    }
    for (j = 0; j < FC_BN_LANES; j++) {
        s1 += a1[j];
        s2 += a2[j];
        sg += ag[j];
        sgd += agd[j];
    }
    part[FC_BN_COUNT] = (double)n;
    part[FC_BN_SHIFT] = k;
    part[FC_BN_S1] = s1;
    part[FC_BN_S2] = s2;
    part[FC_BN_SG] = sg;
    part[FC_BN_SGD] = sgd;
}

/* out[c, n*L : (n+1)*L] = x[n, c, :] for the channels c0 <= c < c1 of (N, C, L) x:
 * small planes' values gathered by channel for the statistics, reading x's images
 * in runs of (c1 - c0) * L values (NumPy's transposing copy, a call per plane,
 * took 5x as long on (32, 512, 4)). */
static void FC_BN_FN(fc_bn_by_channel)(const T *x, T *out, ptrdiff_t N, ptrdiff_t C, ptrdiff_t L, ptrdiff_t c0,
                                       ptrdiff_t c1)
{
    for (ptrdiff_t n = 0; n < N; n++) {
        const T *src = x + (n * C + c0) * L;
        for (ptrdiff_t c = c0; c < c1; c++, src += L) {
            T *dst = out + (c * N + n) * L;
            for (ptrdiff_t i = 0; i < L; i++)
                dst[i] = src[i];
        }
    }
}

/* out = ((x - mean_hi) - mean_lo) * scale + bias. The mean comes as a sum of two
 * values of type T (mean_lo = the rounding error of mean_hi), so that x - mean
 * is nearly exact in float32 too: x * scale + (bias - mean * scale) would lose
 * the digits of x that the mean's magnitude hides (|mean| >> std). */
static void FC_BN_FN(fc_bn_normalize)(const T *x, T *out, ptrdiff_t n, T mean_hi, T mean_lo, T scale, T bias)
{
    FC_BN_SIMD("omp simd")
    for (ptrdiff_t i = 0; i < n; i++)
        out[i] = ((x[i] - mean_hi) - mean_lo) * scale + bias;
}

/* fc_bn_normalize with a mean_hi, mean_lo, scale and bias per value (`coef`: four
 * runs of n values): an image of small planes in one loop, not a few values per
 * channel (a call per plane of 4 values cost more than its values). */
static void FC_BN_FN(fc_bn_normalize_spread)(const T *x, T *out, ptrdiff_t n, const T *coef)
{
    const T *mean_hi = coef, *mean_lo = coef + n, *scale = coef + 2 * n, *bias = coef + 3 * n;
    FC_BN_SIMD("omp simd")
    for (ptrdiff_t i = 0; i < n; i++)
        out[i] = ((x[i] - mean_hi[i]) - mean_lo[i]) * scale[i] + bias[i];
}

/* Training grad_x = k*g - c1*(x - mean) - b, in double. */
static void FC_BN_FN(fc_bn_backward_input)(const T *g, const T *x, T *gx, ptrdiff_t n, double k, double c1,
                                           double mean, double b)
{
    FC_BN_SIMD("omp simd")
    for (ptrdiff_t i = 0; i < n; i++)
        gx[i] = (T)(k * (double)g[i] - c1 * ((double)x[i] - mean) - b);
}

/* fc_bn_backward_input with a k, c1, mean and b per value (`coef`: four runs of n
 * values), as fc_bn_normalize_spread. */
static void FC_BN_FN(fc_bn_backward_input_spread)(const T *g, const T *x, T *gx, ptrdiff_t n, const double *coef)
{
    const double *k = coef, *c1 = coef + n, *mean = coef + 2 * n, *b = coef + 3 * n;
    FC_BN_SIMD("omp simd")
    for (ptrdiff_t i = 0; i < n; i++)
        gx[i] = (T)(k[i] * (double)g[i] - c1[i] * ((double)x[i] - mean[i]) - b[i]);
}

/* Eval: grad_x = k*g, and part[FC_BN_SG], part[FC_BN_SGD] = sum(g), sum(g*(x - mean)). */
static void FC_BN_FN(fc_bn_backward_eval)(const T *g, const T *x, T *gx, ptrdiff_t n, double k, double mean,
                                          double *part)
{
    double ag[FC_BN_LANES] = {0}, agd[FC_BN_LANES] = {0}, sg = 0.0, sgd = 0.0;
    ptrdiff_t i = 0, j;
    for (; i + FC_BN_LANES <= n; i += FC_BN_LANES) {
        FC_BN_SIMD("omp simd")     /* as in fc_bn_segment: lanes stay lanes, 2.5-4x from L2 */
        for (j = 0; j < FC_BN_LANES; j++) {
            double gj = (double)g[i + j];
            ag[j] += gj;
            agd[j] += gj * ((double)x[i + j] - mean);
            gx[i + j] = (T)(k * gj);
        }
    }
    for (j = 0; i + j < n; j++) {
        double gj = (double)g[i + j];
        ag[j] += gj;
        agd[j] += gj * ((double)x[i + j] - mean);
        gx[i + j] = (T)(k * gj);
    }
    for (j = 0; j < FC_BN_LANES; j++) {
        sg += ag[j];
        sgd += agd[j];
    }
    part[FC_BN_SG] = sg;
    part[FC_BN_SGD] = sgd;
}

#undef FC_BN_FN
