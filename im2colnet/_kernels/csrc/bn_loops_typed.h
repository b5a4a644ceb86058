/* The loops of bn_loops.h for the element type T, named TYPED(name) (included by
 * bn_loops.c once per type). */

CLONES void TYPED(bn_slice_stats)(const T *restrict x, int64_t n, double *sum, double *m2)
{
    const int64_t body = n - n % BN_LANES;
    double acc[BN_LANES] = {0}, rest = 0.0;
    for (int64_t k = 0; k < body; k += BN_LANES)
        for (int j = 0; j < BN_LANES; j++)
            acc[j] += (double)x[k + j];
    for (int64_t k = body; k < n; k++)
        rest += (double)x[k];
    const double total = lanes_total(acc) + rest, mean = total / (double)n;
    for (int j = 0; j < BN_LANES; j++)
        acc[j] = 0.0;
    rest = 0.0;
    for (int64_t k = 0; k < body; k += BN_LANES)   /* the slice again, from cache */
        for (int j = 0; j < BN_LANES; j++) {
            const double d = (double)x[k + j] - mean;
            acc[j] += d * d;
        }
    for (int64_t k = body; k < n; k++) {
        const double d = (double)x[k] - mean;
        rest += d * d;
    }
    *sum = total;
    *m2 = lanes_total(acc) + rest;
}

CLONES void TYPED(bn_slice_sums)(const T *restrict u, const T *restrict v, int64_t n,
                                 double *sum_u, double *sum_uv)
{
    const int64_t body = n - n % BN_LANES;
    double su[BN_LANES] = {0}, suv[BN_LANES] = {0}, rest_u = 0.0, rest_uv = 0.0;
    for (int64_t k = 0; k < body; k += BN_LANES)
        for (int j = 0; j < BN_LANES; j++) {
            su[j] += (double)u[k + j];
            suv[j] += (double)u[k + j] * (double)v[k + j];
        }
    for (int64_t k = body; k < n; k++) {
        rest_u += (double)u[k];
        rest_uv += (double)u[k] * (double)v[k];
    }
    *sum_u = lanes_total(su) + rest_u;
    *sum_uv = lanes_total(suv) + rest_uv;
}

CLONES void TYPED(bn_normalize)(const T *restrict x, T *restrict xhat, T *restrict y, int64_t n,
                                T s, T shift, T gamma, T beta)
{
    for (int64_t k = 0; k < n; k++) {
        const T h = s * x[k] + shift;
        xhat[k] = h;
        y[k] = gamma * h + beta;
    }
}

CLONES void TYPED(bn_combine)(const T *restrict u, const T *restrict v, T *restrict out, int64_t n,
                              T a, T b, T c)
{
    if (!v) {
        for (int64_t k = 0; k < n; k++)
            out[k] = a * u[k] + c;
        return;
    }
    for (int64_t k = 0; k < n; k++)
        out[k] = a * u[k] + b * v[k] + c;
}
