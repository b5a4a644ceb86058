/* The packed GEMM's C code alone, against naive loops, for every micro-kernel level, on
 * random geometries (every padding sign, stride, dilation, sizes off the tiles), built
 * with AddressSanitizer and UndefinedBehaviorSanitizer by tests/c/run.sh.  The AVX-512
 * level runs through SIMDe's emulation when the CPU lacks it (PG_EMULATE_AVX512).
 * Prints one line per level and exits non-zero on the first wrong value. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "packed_gemm.h"
#include "check_random.h"

static long pick(long lo, long hi) { return lo + (long)(uniform() * (double)(hi - lo + 1)); }

static float *randoms(size_t n)
{
    float *a = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        a[i] = (float)(2.0 * uniform() - 1.0);
    return a;
}

/* x[n, c, ih, iw] for output pixel (i, j) and tap (c, p, q), or -1 outside the image. */
static long source(const pg_geom *g, long n, long c, long i, long j, long p, long q)
{
    long ih = i * g->sh - g->pt + p * g->dh, iw = j * g->sw - g->pl + q * g->dw;
    if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W)
        return -1;
    return ((n * g->C + c) * g->H + ih) * g->W + iw;
}

static int compare(const char *what, const float *got, const double *want, size_t n, const pg_geom *g)
{
    double scale = 1.0;
    for (size_t i = 0; i < n; i++)
        scale = fmax(scale, fabs(want[i]));
    for (size_t i = 0; i < n; i++)
        if (!(fabs(got[i] - want[i]) <= 1e-4 * scale)) {
            printf("WRONG %s at %zu: %g instead of %g (N %ld C %ld H %ld W %ld K %ld k %ldx%ld "
                   "s %ld,%ld d %ld,%ld pad %ld,%ld)\n", what, i, got[i], want[i], (long)g->N,
                   (long)g->C, (long)g->H, (long)g->W, (long)g->K, (long)g->kh, (long)g->kw,
                   (long)g->sh, (long)g->sw, (long)g->dh, (long)g->dw, (long)g->pt, (long)g->pl);
            return 1;
        }
    return 0;
}

static int check(const pg_level *lv, const pg_geom *g, int threads)
{
    const long taps = g->C * g->kh * g->kw, P = g->Ho * g->Wo;
    const size_t nx = g->N * g->C * g->H * g->W, ny = g->N * g->K * P, nw = g->K * taps;
    float *x = randoms(nx), *w = randoms(nw), *bias = randoms(g->K), *dy = randoms(ny);
    float *y = malloc(ny * sizeof(float)), *dx = malloc(nx * sizeof(float));
    float *part = malloc(threads * nw * sizeof(float));
    double *bias_part = malloc(threads * g->K * sizeof(double)), *rdb = calloc(g->K, sizeof(double));
    double *ry = calloc(ny, sizeof(double)), *rdx = calloc(nx, sizeof(double));
    double *rdw = calloc(nw, sizeof(double));
    for (long n = 0; n < g->N; n++)
        for (long k = 0; k < g->K; k++)
            for (long i = 0; i < g->Ho; i++)
                for (long j = 0; j < g->Wo; j++) {
                    const long o = ((n * g->K + k) * g->Ho + i) * g->Wo + j;
                    ry[o] = bias[k];
                    rdb[k] += dy[o];
                    for (long c = 0; c < g->C; c++)
                        for (long p = 0; p < g->kh; p++)
                            for (long q = 0; q < g->kw; q++) {
                                const long s = source(g, n, c, i, j, p, q);
                                const long t = (c * g->kh + p) * g->kw + q;
                                if (s < 0)
                                    continue;
                                ry[o] += (double)w[k * taps + t] * x[s];
                                rdx[s] += (double)w[k * taps + t] * dy[o];
                                rdw[k * taps + t] += (double)dy[o] * x[s];
                            }
                }
    int bad = pg_forward(lv, g, x, w, bias, y, threads) != 0
           || pg_backward_data(lv, g, dy, w, dx, threads) != 0
           || pg_backward_weights(lv, g, dy, x, part, bias_part, threads) != 0;
    float *db = malloc(g->K * sizeof(float));
    for (int t = 1; t < threads; t++) {
        for (size_t i = 0; i < nw; i++)
            part[i] += part[t * nw + i];
        for (long k = 0; k < g->K; k++)
            bias_part[k] += bias_part[t * g->K + k];
    }
    for (long k = 0; k < g->K; k++)
        db[k] = (float)bias_part[k];
    bad = bad || compare("forward", y, ry, ny, g);
    if (!bad && lv->batch) {   /* the forward with the batch in the lanes, forced */
        pg_set_batch_rule(1);
        bad = pg_forward(lv, g, x, w, bias, y, threads) != 0 || compare("batch forward", y, ry, ny, g);
        pg_set_batch_rule(0);
    }
    bad = bad || compare("backward-data", dx, rdx, nx, g)
              || compare("backward-weights", part, rdw, nw, g)
              || compare("bias gradient", db, rdb, g->K, g);
    if (!bad && g->sh == 1 && g->sw == 1) {   /* the data gradient as a forward pass of dy */
        const pg_geom a = {g->N, g->K, g->Ho, g->Wo, g->C, g->kh, g->kw, 1, 1, g->dh, g->dw,
                           g->dh * (g->kh - 1) - g->pt, g->dw * (g->kw - 1) - g->pl, g->H, g->W};
        for (int rule = 0; rule <= (lv->batch ? 1 : 0) && !bad; rule++) {
            pg_set_batch_rule(rule);
            bad = pg_forward_adjoint(lv, &a, dy, w, dx, threads) != 0
                  || compare(rule ? "batch adjoint forward" : "adjoint forward", dx, rdx, nx, g);
        }
        pg_set_batch_rule(0);
    }
    free(x); free(w); free(bias); free(dy); free(y); free(dx); free(part);
    free(ry); free(rdx); free(rdw); free(bias_part); free(rdb); free(db);
    return bad;
}

/* The level's 16 x 16 transpose (where it has one) for every count of rows and columns read
 * and written, into a buffer whose cells outside the written block must keep a marker. */
static int check_transpose(const pg_level *lv)
{
    enum { STEP = 19, SIZE = 16 * STEP };
    float from[SIZE], to[SIZE];
    for (int i = 0; i < SIZE; i++)
        from[i] = (float)(i + 1);
    for (int fr = 0; fr <= 16; fr++)
        for (int fc = 0; fc <= 16; fc++)
            for (int tr = 0; tr <= 16; tr++)
                for (int tc = 0; tc <= 16; tc++) {
                    for (int i = 0; i < SIZE; i++)
                        to[i] = -1.0f;
                    lv->transpose(from, STEP, fr, fc, to, STEP, tr, tc, 0.5f);
                    for (int j = 0; j < 16; j++)
                        for (int i = 0; i < STEP; i++) {
                            const float v = i < 16 && i < fr && j < fc ? from[i * STEP + j] : 0.0f;
                            const float want = j < tr && i < tc ? v + 0.5f : -1.0f;
                            if (to[j * STEP + i] != want) {
                                printf("%s transpose: rows %d cols %d -> rows %d cols %d: [%d][%d] %g, not %g\n",
                                       lv->name, fr, fc, tr, tc, j, i, to[j * STEP + i], want);
                                return 1;
                            }
                        }
                }
    return 0;
}

int main(int argc, char **argv)
{
    const int cases = argc > 1 ? atoi(argv[1]) : 300;
    for (int index = 0; index < 3; index++) {
        const pg_level *lv = pg_level_by_index(index);
        if (index > 0 && lv == pg_level_by_index(0)) {
            printf("%d: not compiled here\n", index);
            continue;
        }
#ifndef PG_EMULATE_AVX512
        if (index > pg_best_level()) {
            printf("%s: not run (this CPU lacks it, and SIMDe is not installed)\n", lv->name);
            continue;
        }
#endif
        if (lv->transpose && check_transpose(lv))
            return 1;
        state = 88172645463325252ULL;
        for (int n = 0; n < cases; n++) {
            pg_geom g;
            g.N = pick(1, 4); g.C = pick(1, 9); g.K = pick(1, 19);
            if (n % 8 == 5)   /* several lane groups: rounds of a group per thread, teams */
                g.N = pick(33, 99);
            g.kh = pick(1, 5); g.kw = pick(1, 5); g.sh = pick(1, 3); g.sw = pick(1, 3);
            g.dh = pick(1, 2); g.dw = pick(1, 2);
            g.H = pick(1, 17); g.W = pick(1, 35);
            long pb, pr;
            g.pt = pick(-2, 4); pb = pick(-2, 4); g.pl = pick(-2, 4); pr = pick(-2, 4);
            g.Ho = (g.H + g.pt + pb - g.dh * (g.kh - 1) - 1) / g.sh + 1;
            g.Wo = (g.W + g.pl + pr - g.dw * (g.kw - 1) - 1) / g.sw + 1;
            if (g.H + g.pt + pb - g.dh * (g.kh - 1) - 1 < 0 || g.W + g.pl + pr - g.dw * (g.kw - 1) - 1 < 0) {
                n--;
                continue;
            }
            /* every fourth case plans for tiny caches: many blocks, bands and chunks */
            pg_set_cache_bytes(n % 4 == 0 ? 256 : 0, n % 4 == 0 ? 4096 : 0);
            if (check(lv, &g, 1 + n % 3))
                return 1;
        }
        printf("%s: %d geometries right\n", lv->name, cases);
    }
    return 0;
}
