/* Portable micro-kernels (plain C; the compiler vectorises the NR loops for the
 * baseline instruction set).  MR x NR = 4 x 16 outer-product tile, 4 x 4 dot tile. */
#include "packed_gemm.h"

#define MR 4
#define NR 16
#define DM 4
#define DN 4

static void outer_portable(int64_t kc, const float *a, const float *b, float *c,
                           int64_t ldc, int accumulate, const float *bias)
{
    float acc[MR][NR] = {{0}};
    for (int64_t t = 0; t < kc; t++) {
        for (int r = 0; r < MR; r++) {
            const float ar = a[t * MR + r];
            for (int j = 0; j < NR; j++)
                acc[r][j] += ar * b[t * NR + j];
        }
    }
    for (int r = 0; r < MR; r++) {
        const float add = bias ? bias[r] : 0.0f;
        float *row = c + r * ldc;
        for (int j = 0; j < NR; j++)
            row[j] = (accumulate ? row[j] : 0.0f) + acc[r][j] + add;
    }
}

static void dot_portable(int64_t ns, const float *a, int64_t a_step, const float *b,
                         int64_t b_step, float *c, int64_t ldc)
{
    float acc[DM][DN][NR] = {{{0}}};
    for (int64_t s = 0; s < ns; s++) {
        const float *as = a + s * a_step, *bs = b + s * b_step;
        for (int r = 0; r < DM; r++)
            for (int t = 0; t < DN; t++)
                for (int j = 0; j < NR; j++)
                    acc[r][t][j] += as[r * NR + j] * bs[t * NR + j];
    }
    for (int r = 0; r < DM; r++)
        for (int t = 0; t < DN; t++) {
            float sum = 0.0f;
            for (int j = 0; j < NR; j++)
                sum += acc[r][t][j];
            c[r * ldc + t] += sum;
        }
}

const pg_level pg_level_portable = {"portable", MR, NR, DM, DN, outer_portable, dot_portable, 0, 0, 0, 0, 0, 0, 0};
