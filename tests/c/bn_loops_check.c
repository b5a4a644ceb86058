/* Batch norm's slice loops (csrc/bn_loops.c) alone, against naive loops, on slices of every
 * length up to 80 and random longer ones, float32 and float64, each array allocated to its
 * exact length (AddressSanitizer then catches a read or write past it).  Built by
 * tests/c/run.sh once per instruction set the CPU has; each build prints a hash of every
 * result's bits, and run.sh checks that the builds agree (bn_loops.h: the same numbers on
 * every level).  Exits non-zero on the first wrong value. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bn_loops.h"
#include "check_random.h"

static uint64_t hash = 1469598103934665603ULL;   /* FNV-1a over the results' bytes */
static void mix(const void *p, size_t bytes)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < bytes; i++)
        hash = (hash ^ b[i]) * 1099511628211ULL;
}

static int close_to(const char *what, double got, long double want, long double scale, long n)
{
    if (fabsl((long double)got - want) <= 1e-13L * scale)
        return 0;
    printf("WRONG %s, n %ld: %.17g instead of %.17Lg\n", what, n, got, want);
    return 1;
}

static int same(const char *what, double got, double want, long n, long k)
{
    if (got == want)
        return 0;
    printf("WRONG %s, n %ld, at %ld: %.9g instead of %.9g\n", what, n, k, got, want);
    return 1;
}

/* One slice length for one element type T (suffix SFX): every loop, the references in long
 * double (sums) or in T step by step (the element-wise loops, no fused multiply-add). */
#define CHECK_TYPE(T, SFX)                                                                     \
    static int check_##SFX(long n, double offset)                                              \
    {                                                                                          \
        T *x = malloc(n * sizeof(T)), *v = malloc(n * sizeof(T));                              \
        T *xhat = malloc(n * sizeof(T)), *y = malloc(n * sizeof(T));                           \
        T *out = malloc(n * sizeof(T)), *out1 = malloc(n * sizeof(T));                         \
        for (long k = 0; k < n; k++) {                                                         \
            x[k] = (T)(offset + 2.0 * uniform() - 1.0);                                        \
            v[k] = (T)(2.0 * uniform() - 1.0);                                                 \
        }                                                                                      \
        long double sum = 0, sum_abs = 0, sum_xv = 0, sum_xv_abs = 0, m2 = 0, m2_abs = 0;      \
        for (long k = 0; k < n; k++) {                                                         \
            sum += x[k];                                                                       \
            sum_abs += fabsl((long double)x[k]);                                               \
            sum_xv += (long double)x[k] * v[k];                                                \
            sum_xv_abs += fabsl((long double)x[k] * v[k]);                                     \
        }                                                                                      \
        for (long k = 0; k < n; k++) {   /* around the mean the loop divides out in double */  \
            const long double d = x[k] - (long double)((double)sum / (double)n);               \
            m2 += d * d;                                                                       \
            m2_abs += d * d + fabsl(d) * sum_abs / n;                                          \
        }                                                                                      \
        double got_sum, got_m2, got_u, got_uv;                                                 \
        bn_slice_stats_##SFX(x, n, &got_sum, &got_m2);                                         \
        bn_slice_sums_##SFX(x, v, n, &got_u, &got_uv);                                         \
        int bad = close_to("slice_stats sum", got_sum, sum, sum_abs, n)                        \
                  || close_to("slice_stats m2", got_m2, m2, m2_abs, n)                         \
                  || close_to("slice_sums sum_u", got_u, sum, sum_abs, n)                      \
                  || close_to("slice_sums sum_uv", got_uv, sum_xv, sum_xv_abs, n);             \
        const T s = (T)0.75, shift = (T)-0.3, gamma = (T)1.5, beta = (T)0.25;                  \
        const T a = (T)0.5, b = (T)-1.25, c = (T)0.125;                                        \
        bn_normalize_##SFX(x, xhat, y, n, s, shift, gamma, beta);                              \
        bn_combine_##SFX(x, v, out, n, a, b, c);                                               \
        bn_combine_##SFX(x, NULL, out1, n, a, b, c);                                           \
        for (long k = 0; k < n && !bad; k++) {                                                 \
            const T h = s * x[k] + shift, sx = a * x[k], sv = b * v[k];                        \
            const T hy = gamma * h, both = sx + sv;                                            \
            bad = same("normalize xhat", xhat[k], h, n, k) || same("normalize y", y[k], hy + beta, n, k) \
                  || same("combine", out[k], both + c, n, k) || same("combine, no v", out1[k], sx + c, n, k); \
        }                                                                                      \
        mix(&got_sum, sizeof got_sum);                                                         \
        mix(&got_m2, sizeof got_m2);                                                           \
        mix(&got_u, sizeof got_u);                                                             \
        mix(&got_uv, sizeof got_uv);                                                           \
        mix(xhat, n * sizeof(T));                                                              \
        mix(y, n * sizeof(T));                                                                 \
        mix(out, n * sizeof(T));                                                               \
        mix(out1, n * sizeof(T));                                                              \
        free(x), free(v), free(xhat), free(y), free(out), free(out1);                          \
        return bad;                                                                            \
    }

CHECK_TYPE(float, f32)
CHECK_TYPE(double, f64)

int main(int argc, char **argv)
{
    const long random_lengths = argc > 1 ? atol(argv[1]) : 300;
    long slices = 0;
    for (long i = 0; i < 80 + random_lengths; i++) {
        const long n = i < 80 ? i + 1 : 1 + (long)(uniform() * 5000);
        const double offset = i % 3 == 0 ? 1000.0 : 0.0;   /* a mean far from 0 */
        if (check_f32(n, offset) || check_f64(n, offset))
            return 1;
        slices += 2;
    }
    printf("bn_loops: %ld slices right, results hash %016llx\n", slices, (unsigned long long)hash);
    return 0;
}
