/* AVX-512F micro-kernels, compiled for that target by function attribute (the rest of
 * the build stays baseline) and chosen at run time.
 *   outer: 8 x 32 tile (16 zmm accumulators): per tap, two 16-float loads of the
 *          packed pixels and 8 broadcasts of the packed weights, 16 FMAs.
 *   dot:   4 x 4 tile (16 zmm accumulators) along 32-pixel slivers, one horizontal
 *          sum per result at the end.
 *   pix_outer: 24 taps x 16 kernels (24 zmm accumulators): per pixel, one 16-kernel load
 *          of dY^T and 24 broadcasts of phi, 24 FMAs (the weight gradient).
 *   batch: 8 kernels x 32 samples (16 zmm accumulators): per tap, two 16-sample loads of
 *          the input through the tap's offset and 8 broadcasts of the weights.
 *   transpose: a 16 x 16 block in registers (pairs, quads, then 128-bit blocks twice),
 *          masked loads and stores at the edges. */
#include "packed_gemm.h"

#define MR 8
#define NR 32
#define DM 4
#define DN 4
#define PM 24
#define PN 16
#define BM 8
#define BN 32

#if defined(PG_EMULATE_AVX512)
/* Tests only (tests/c/packed_gemm_check.c): SIMDe's portable AVX-512, so this kernel's
 * arithmetic can be checked on a CPU without AVX-512. */
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#define TARGET
#define PG_AVX512 1
#elif defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define TARGET __attribute__((target("avx512f,fma")))
#define PG_AVX512 1
#endif

#ifdef PG_AVX512

TARGET static void outer_avx512(int64_t kc, const float *a, const float *b, float *c,
                                int64_t ldc, int accumulate, const float *bias)
{
    __m512 c00 = _mm512_setzero_ps(), c01 = _mm512_setzero_ps();
    __m512 c10 = _mm512_setzero_ps(), c11 = _mm512_setzero_ps();
    __m512 c20 = _mm512_setzero_ps(), c21 = _mm512_setzero_ps();
    __m512 c30 = _mm512_setzero_ps(), c31 = _mm512_setzero_ps();
    __m512 c40 = _mm512_setzero_ps(), c41 = _mm512_setzero_ps();
    __m512 c50 = _mm512_setzero_ps(), c51 = _mm512_setzero_ps();
    __m512 c60 = _mm512_setzero_ps(), c61 = _mm512_setzero_ps();
    __m512 c70 = _mm512_setzero_ps(), c71 = _mm512_setzero_ps();
    for (int64_t t = 0; t < kc; t++) {
        const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
        __m512 ar;
        ar = _mm512_set1_ps(a[0]); c00 = _mm512_fmadd_ps(ar, b0, c00); c01 = _mm512_fmadd_ps(ar, b1, c01);
        ar = _mm512_set1_ps(a[1]); c10 = _mm512_fmadd_ps(ar, b0, c10); c11 = _mm512_fmadd_ps(ar, b1, c11);
        ar = _mm512_set1_ps(a[2]); c20 = _mm512_fmadd_ps(ar, b0, c20); c21 = _mm512_fmadd_ps(ar, b1, c21);
        ar = _mm512_set1_ps(a[3]); c30 = _mm512_fmadd_ps(ar, b0, c30); c31 = _mm512_fmadd_ps(ar, b1, c31);
        ar = _mm512_set1_ps(a[4]); c40 = _mm512_fmadd_ps(ar, b0, c40); c41 = _mm512_fmadd_ps(ar, b1, c41);
        ar = _mm512_set1_ps(a[5]); c50 = _mm512_fmadd_ps(ar, b0, c50); c51 = _mm512_fmadd_ps(ar, b1, c51);
        ar = _mm512_set1_ps(a[6]); c60 = _mm512_fmadd_ps(ar, b0, c60); c61 = _mm512_fmadd_ps(ar, b1, c61);
        ar = _mm512_set1_ps(a[7]); c70 = _mm512_fmadd_ps(ar, b0, c70); c71 = _mm512_fmadd_ps(ar, b1, c71);
        a += MR;
        b += NR;
    }
    __m512 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31},
                         {c40, c41}, {c50, c51}, {c60, c61}, {c70, c71}};
    for (int r = 0; r < MR; r++) {
        float *row = c + r * ldc;
        __m512 lo = acc[r][0], hi = acc[r][1];
        if (bias) {
            const __m512 add = _mm512_set1_ps(bias[r]);
            lo = _mm512_add_ps(lo, add);
            hi = _mm512_add_ps(hi, add);
        }
        if (accumulate) {
            lo = _mm512_add_ps(lo, _mm512_loadu_ps(row));
            hi = _mm512_add_ps(hi, _mm512_loadu_ps(row + 16));
        }
        _mm512_storeu_ps(row, lo);
        _mm512_storeu_ps(row + 16, hi);
    }
}

/* The four sums of x0..x3 in one 128-bit vector. */
TARGET static inline __m128 sum4_avx512(__m512 x0, __m512 x1, __m512 x2, __m512 x3)
{
    __m256 y0 = _mm256_add_ps(_mm512_castps512_ps256(x0), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x0), 1)));
    __m256 y1 = _mm256_add_ps(_mm512_castps512_ps256(x1), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x1), 1)));
    __m256 y2 = _mm256_add_ps(_mm512_castps512_ps256(x2), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x2), 1)));
    __m256 y3 = _mm256_add_ps(_mm512_castps512_ps256(x3), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x3), 1)));
    __m256 h01 = _mm256_hadd_ps(y0, y1);          /* pairs of x0, x1 per 128-bit lane */
    __m256 h23 = _mm256_hadd_ps(y2, y3);
    __m256 h = _mm256_hadd_ps(h01, h23);          /* x0 x1 x2 x3 per lane */
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

TARGET static void dot_avx512(int64_t ns, const float *a, int64_t a_step, const float *b,
                              int64_t b_step, float *c, int64_t ldc)
{
    __m512 acc[DM][DN];
    for (int r = 0; r < DM; r++)
        for (int t = 0; t < DN; t++)
            acc[r][t] = _mm512_setzero_ps();
    for (int64_t s = 0; s < ns; s++) {
        const float *as = a + s * a_step, *bs = b + s * b_step;
        for (int half = 0; half < NR; half += 16) {
            const __m512 a0 = _mm512_loadu_ps(as + 0 * NR + half), a1 = _mm512_loadu_ps(as + 1 * NR + half);
            const __m512 a2 = _mm512_loadu_ps(as + 2 * NR + half), a3 = _mm512_loadu_ps(as + 3 * NR + half);
            for (int t = 0; t < DN; t++) {
                const __m512 bt = _mm512_loadu_ps(bs + t * NR + half);
                acc[0][t] = _mm512_fmadd_ps(a0, bt, acc[0][t]);
                acc[1][t] = _mm512_fmadd_ps(a1, bt, acc[1][t]);
                acc[2][t] = _mm512_fmadd_ps(a2, bt, acc[2][t]);
                acc[3][t] = _mm512_fmadd_ps(a3, bt, acc[3][t]);
            }
        }
    }
    for (int r = 0; r < DM; r++) {
        float *row = c + r * ldc;
        _mm_storeu_ps(row, _mm_add_ps(_mm_loadu_ps(row),
                                      sum4_avx512(acc[r][0], acc[r][1], acc[r][2], acc[r][3])));
    }
}

TARGET static void pix_outer_avx512(int64_t ns, const float *a, int64_t a_step, const float *b,
                                    float *c, int64_t ldc)
{
    __m512 acc[PM];
    for (int r = 0; r < PM; r++)
        acc[r] = _mm512_setzero_ps();
    for (int64_t s = 0; s < ns; s++) {
        const float *as = a + s * a_step;
        for (int p = 0; p < NR; p++) {
            const __m512 b0 = _mm512_loadu_ps(b);
#pragma GCC unroll 24
            for (int r = 0; r < PM; r++)
                acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(as[r * NR + p]), b0, acc[r]);
            b += PN;
        }
    }
    float out[PM][PN];
    for (int r = 0; r < PM; r++)
        _mm512_storeu_ps(out[r], acc[r]);
    for (int j = 0; j < PN; j++)
        for (int r = 0; r < PM; r++)
            c[j * ldc + r] += out[r][j];
}

TARGET static void batch_avx512(int64_t nt, const int64_t *tap, const int64_t *off, const float *a,
                                const float *b, float *c, int accumulate)
{
    __m512 acc[BM][2];
    for (int r = 0; r < BM; r++)
        acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nt; i++) {
        const float *bi = b + off[i], *ai = a + tap[i] * BM;
        const __m512 b0 = _mm512_loadu_ps(bi), b1 = _mm512_loadu_ps(bi + 16);
#pragma GCC unroll 8
        for (int r = 0; r < BM; r++) {
            const __m512 ar = _mm512_set1_ps(ai[r]);
            acc[r][0] = _mm512_fmadd_ps(ar, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(ar, b1, acc[r][1]);
        }
    }
    for (int r = 0; r < BM; r++)
        for (int v = 0; v < 2; v++) {
            float *to = c + r * BN + 16 * v;
            _mm512_storeu_ps(to, accumulate ? _mm512_add_ps(acc[r][v], _mm512_loadu_ps(to)) : acc[r][v]);
        }
}

/* For each pair (i, i + d) with bit d of i clear: to[i] = blocks 0, 2 of from[i] and blocks
 * 0, 2 of from[i + d]; to[i + d] = their blocks 1, 3 (the 128-bit rounds of the transpose). */
TARGET static inline void pair_blocks(const __m512 *from, int d, __m512 *to)
{
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++)
        if (!(i & d)) {
            to[i] = _mm512_shuffle_f32x4(from[i], from[i + d], 0x88);
            to[i + d] = _mm512_shuffle_f32x4(from[i], from[i + d], 0xdd);
        }
}

TARGET static void transpose_avx512(const float *from, int64_t from_step, int64_t from_rows,
                                    int64_t from_cols, float *to, int64_t to_step, int64_t to_rows,
                                    int64_t to_cols, float add)
{
    const __mmask16 load = (__mmask16)((1u << from_cols) - 1), store = (__mmask16)((1u << to_cols) - 1);
    __m512 r[16], t[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++)
        r[i] = i < from_rows ? _mm512_maskz_loadu_ps(load, from + i * from_step) : _mm512_setzero_ps();
    /* pairs: t[2q] = rows 2q, 2q+1 interleaved (columns 0,1 | 4,5 | ...), t[2q+1] the rest */
#pragma GCC unroll 8
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    /* quads: r[4q + c] holds column c, c+4, c+8, c+12 of rows 4q..4q+3, a 128-bit block each */
#pragma GCC unroll 4
    for (int q = 0; q < 16; q += 4) {
        r[q] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[q]), _mm512_castps_pd(t[q + 2])));
        r[q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[q]), _mm512_castps_pd(t[q + 2])));
        r[q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[q + 1]), _mm512_castps_pd(t[q + 3])));
        r[q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[q + 1]), _mm512_castps_pd(t[q + 3])));
    }
    /* 128-bit blocks, twice: rows 0-7 and 8-15 hold columns c, c+8 / c+4, c+12 (pairs 4
     * apart), then whole columns (pairs 8 apart) */
    pair_blocks(r, 4, t);
    pair_blocks(t, 8, r);
    const __m512 addv = _mm512_set1_ps(add);
#pragma GCC unroll 16
    for (int j = 0; j < 16; j++)
        if (j < to_rows)
            _mm512_mask_storeu_ps(to + j * to_step, store, _mm512_add_ps(r[j], addv));
}

const pg_level pg_level_avx512 = {"avx512", MR, NR, DM, DN, outer_avx512, dot_avx512, PM, PN, pix_outer_avx512, BM, BN, batch_avx512, transpose_avx512};
int pg_avx512_compiled(void) { return 1; }
#else
const pg_level pg_level_avx512 = {"avx512", MR, NR, DM, DN, 0, 0, PM, PN, 0, BM, BN, 0, 0};
int pg_avx512_compiled(void) { return 0; }
#endif
