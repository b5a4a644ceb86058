/* AVX2+FMA micro-kernels, compiled for that target by function attribute and chosen
 * at run time (machines without AVX-512).
 *   outer:      4 x 24 tile (12 ymm accumulators + 3 pixel loads + 1 broadcast = 16 registers).
 *   dot:        4 x 3 tile (12 ymm accumulators + 3 tap loads + 1 kernel load) along 24-pixel
 *               slivers: 7 loads per 12 FMAs.
 *   pix_outer:  6 taps x 16 kernels (12 ymm accumulators): per pixel, 6 broadcasts of phi
 *               and two 8-kernel loads of dY^T; the weight gradient's kernel here, where it
 *               runs near the outer tile's speed and dot does not.
 *   batch:      3 kernels x 32 samples (12 ymm accumulators + 3 broadcasts + 1 load): per
 *               tap, four 8-sample loads of the input, read through the tap's offset. */
#include "packed_gemm.h"

#define MR 4
#define NR 24
#define DM 4
#define DN 3
#define PM 6
#define PN 16
#define BM 3
#define BN 32

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define TARGET __attribute__((target("avx2,fma")))

TARGET static void outer_avx2(int64_t kc, const float *a, const float *b, float *c,
                              int64_t ldc, int accumulate, const float *bias)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps(), c02 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps(), c12 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps(), c22 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps(), c32 = _mm256_setzero_ps();
    for (int64_t t = 0; t < kc; t++) {
        const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8), b2 = _mm256_loadu_ps(b + 16);
        __m256 ar;
        ar = _mm256_broadcast_ss(a + 0);
        c00 = _mm256_fmadd_ps(ar, b0, c00); c01 = _mm256_fmadd_ps(ar, b1, c01); c02 = _mm256_fmadd_ps(ar, b2, c02);
        ar = _mm256_broadcast_ss(a + 1);
        c10 = _mm256_fmadd_ps(ar, b0, c10); c11 = _mm256_fmadd_ps(ar, b1, c11); c12 = _mm256_fmadd_ps(ar, b2, c12);
        ar = _mm256_broadcast_ss(a + 2);
        c20 = _mm256_fmadd_ps(ar, b0, c20); c21 = _mm256_fmadd_ps(ar, b1, c21); c22 = _mm256_fmadd_ps(ar, b2, c22);
        ar = _mm256_broadcast_ss(a + 3);
        c30 = _mm256_fmadd_ps(ar, b0, c30); c31 = _mm256_fmadd_ps(ar, b1, c31); c32 = _mm256_fmadd_ps(ar, b2, c32);
        a += MR;
        b += NR;
    }
    __m256 acc[MR][3] = {{c00, c01, c02}, {c10, c11, c12}, {c20, c21, c22}, {c30, c31, c32}};
    for (int r = 0; r < MR; r++) {
        float *row = c + r * ldc;
        const __m256 add = _mm256_set1_ps(bias ? bias[r] : 0.0f);
        for (int v = 0; v < 3; v++) {
            __m256 out = _mm256_add_ps(acc[r][v], add);
            if (accumulate)
                out = _mm256_add_ps(out, _mm256_loadu_ps(row + 8 * v));
            _mm256_storeu_ps(row + 8 * v, out);
        }
    }
}

TARGET static inline float sum8_avx2(__m256 x)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

TARGET static void dot_avx2(int64_t ns, const float *a, int64_t a_step, const float *b,
                            int64_t b_step, float *c, int64_t ldc)
{
    __m256 acc[DM][DN];
    for (int r = 0; r < DM; r++)
        for (int t = 0; t < DN; t++)
            acc[r][t] = _mm256_setzero_ps();
    for (int64_t s = 0; s < ns; s++) {
        const float *as = a + s * a_step, *bs = b + s * b_step;
        for (int v = 0; v < NR; v += 8) {
            const __m256 b0 = _mm256_loadu_ps(bs + v), b1 = _mm256_loadu_ps(bs + NR + v);
            const __m256 b2 = _mm256_loadu_ps(bs + 2 * NR + v);
            for (int r = 0; r < DM; r++) {
                const __m256 ar = _mm256_loadu_ps(as + r * NR + v);
                acc[r][0] = _mm256_fmadd_ps(ar, b0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(ar, b1, acc[r][1]);
                acc[r][2] = _mm256_fmadd_ps(ar, b2, acc[r][2]);
            }
        }
    }
    for (int r = 0; r < DM; r++)
        for (int t = 0; t < DN; t++)
            c[r * ldc + t] += sum8_avx2(acc[r][t]);
}

TARGET static void pix_outer_avx2(int64_t ns, const float *a, int64_t a_step, const float *b,
                                  float *c, int64_t ldc)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    for (int64_t s = 0; s < ns; s++) {
        const float *as = a + s * a_step;
        for (int p = 0; p < NR; p++) {
            const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
            __m256 ar;
            ar = _mm256_broadcast_ss(as + p);
            c00 = _mm256_fmadd_ps(ar, b0, c00); c01 = _mm256_fmadd_ps(ar, b1, c01);
            ar = _mm256_broadcast_ss(as + NR + p);
            c10 = _mm256_fmadd_ps(ar, b0, c10); c11 = _mm256_fmadd_ps(ar, b1, c11);
            ar = _mm256_broadcast_ss(as + 2 * NR + p);
            c20 = _mm256_fmadd_ps(ar, b0, c20); c21 = _mm256_fmadd_ps(ar, b1, c21);
            ar = _mm256_broadcast_ss(as + 3 * NR + p);
            c30 = _mm256_fmadd_ps(ar, b0, c30); c31 = _mm256_fmadd_ps(ar, b1, c31);
            ar = _mm256_broadcast_ss(as + 4 * NR + p);
            c40 = _mm256_fmadd_ps(ar, b0, c40); c41 = _mm256_fmadd_ps(ar, b1, c41);
            ar = _mm256_broadcast_ss(as + 5 * NR + p);
            c50 = _mm256_fmadd_ps(ar, b0, c50); c51 = _mm256_fmadd_ps(ar, b1, c51);
            b += PN;
        }
    }
    float acc[PM][PN];
    _mm256_storeu_ps(acc[0], c00); _mm256_storeu_ps(acc[0] + 8, c01);
    _mm256_storeu_ps(acc[1], c10); _mm256_storeu_ps(acc[1] + 8, c11);
    _mm256_storeu_ps(acc[2], c20); _mm256_storeu_ps(acc[2] + 8, c21);
    _mm256_storeu_ps(acc[3], c30); _mm256_storeu_ps(acc[3] + 8, c31);
    _mm256_storeu_ps(acc[4], c40); _mm256_storeu_ps(acc[4] + 8, c41);
    _mm256_storeu_ps(acc[5], c50); _mm256_storeu_ps(acc[5] + 8, c51);
    for (int j = 0; j < PN; j++)
        for (int r = 0; r < PM; r++)
            c[j * ldc + r] += acc[r][j];
}

TARGET static void batch_avx2(int64_t nt, const int64_t *tap, const int64_t *off, const float *a,
                              const float *b, float *c, int accumulate)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c03 = c00;
    __m256 c10 = c00, c11 = c00, c12 = c00, c13 = c00;
    __m256 c20 = c00, c21 = c00, c22 = c00, c23 = c00;
    for (int64_t i = 0; i < nt; i++) {
        const float *bi = b + off[i], *ai = a + tap[i] * BM;
        const __m256 a0 = _mm256_broadcast_ss(ai), a1 = _mm256_broadcast_ss(ai + 1);
        const __m256 a2 = _mm256_broadcast_ss(ai + 2);
        __m256 bv;   /* one load live at a time: 12 + 3 + 1 registers, nothing spilled */
        bv = _mm256_loadu_ps(bi);
        c00 = _mm256_fmadd_ps(a0, bv, c00); c10 = _mm256_fmadd_ps(a1, bv, c10); c20 = _mm256_fmadd_ps(a2, bv, c20);
        bv = _mm256_loadu_ps(bi + 8);
        c01 = _mm256_fmadd_ps(a0, bv, c01); c11 = _mm256_fmadd_ps(a1, bv, c11); c21 = _mm256_fmadd_ps(a2, bv, c21);
        bv = _mm256_loadu_ps(bi + 16);
        c02 = _mm256_fmadd_ps(a0, bv, c02); c12 = _mm256_fmadd_ps(a1, bv, c12); c22 = _mm256_fmadd_ps(a2, bv, c22);
        bv = _mm256_loadu_ps(bi + 24);
        c03 = _mm256_fmadd_ps(a0, bv, c03); c13 = _mm256_fmadd_ps(a1, bv, c13); c23 = _mm256_fmadd_ps(a2, bv, c23);
    }
    __m256 acc[BM][4] = {{c00, c01, c02, c03}, {c10, c11, c12, c13}, {c20, c21, c22, c23}};
    for (int r = 0; r < BM; r++)
        for (int v = 0; v < 4; v++) {
            float *to = c + r * BN + 8 * v;
            _mm256_storeu_ps(to, accumulate ? _mm256_add_ps(acc[r][v], _mm256_loadu_ps(to)) : acc[r][v]);
        }
}

const pg_level pg_level_avx2 = {"avx2", MR, NR, DM, DN, outer_avx2, dot_avx2, PM, PN, pix_outer_avx2, BM, BN, batch_avx2, 0};
int pg_avx2_compiled(void) { return 1; }
#else
const pg_level pg_level_avx2 = {"avx2", MR, NR, DM, DN, 0, 0, PM, PN, 0, BM, BN, 0, 0};
int pg_avx2_compiled(void) { return 0; }
#endif
