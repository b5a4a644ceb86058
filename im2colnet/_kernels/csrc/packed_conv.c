/* The packed convolution GEMM's driver: blocking, packing (im2col into the panels),
 * threads.  The micro-kernels (gemm_avx512.c, gemm_avx2.c, gemm_portable.c) are the
 * only code that depends on the instruction set.
 *
 * Column blocks.  The output pixels of the batch are cut into blocks: a group of whole
 * samples when a sample has few pixels, else a band of output rows of one sample.  A
 * block's input is first copied into a zero-padded band `pad` (nb samples x cc channels
 * x band_h rows x wp columns) that holds exactly the input cells (and padding zeros)
 * its windows read, so that
 *     phi^T[tap t, column j] = pad[tap_off[t] + col_src[j]]
 * with tap_off[t] = c*band_h*wp + p*dh*wp + q*dw for t = (c*kh + p)*kw + q, and
 * col_src[j] = (b*cc*band_h + (i - i0)*sh)*wp + jj*sw for output pixel (i, jj) of the
 * block's sample b.  Any padding (negative: a crop), stride, dilation and anchor are
 * absorbed here; the loops below never test a bound.  Consecutive columns of one output
 * row are a "run": src advances by sw, so packing a tap's run is a (strided) copy.
 *
 * Panels.  phi^T of a block is packed tap chunk by tap chunk into NR-column slivers,
 * Bp[s][t][NR] (zero beyond the block's columns): the B panel of Goto's GEMM, bounded
 * by PANEL_BYTES, one sliver (kc x NR) small enough for L1.  The weights are packed
 * once per call into MR-row panels Ap[m][t][MR] (the A panel).
 *
 * Passes (per block; see packed_gemm.h for the products):
 *   forward: for each tap chunk, each sliver, each MR rows of kernels: the outer-product
 *     micro-kernel writes straight into y (NCHW) when its tile lies in one sample and
 *     inside K, else into a scratch tile that is then copied; later chunks accumulate;
 *     the bias is added by the first.
 *   weight gradient: dY of the block is packed too, and the micro-kernel sums phi x dY
 *     along the pixels into the thread's partial (K, CKK): pix_outer (outer products of a
 *     pixel's taps and its kernels, dY^T in PN-kernel panels) where the level has it and
 *     the kernels fill its lanes, else dot (dY in slivers Dp[s][k][NR]).
 *   data gradient: dphi^T = A^T dY, MR taps at a time into a chunk buffer in sliver
 *     layout, then scatter-added into a zero-padded band (col2im, the adjoint of the
 *     packing), whose inside is added into dx.
 *
 * Batch in the lanes.  Where the level has the kernel and pg_batch_applies holds (small
 * outputs, full lane groups), the forward skips the panels: BN samples of one input cell
 * lie side by side, and each output pixel's list of taps drives the micro-kernel (see the
 * section's comment below).
 *
 * Threads (OpenMP, when compiled with it): forward and weight gradient split the blocks
 * into contiguous ranges, one per thread (the weight gradient's partial sums are added
 * by the caller in thread order: the same result on every run with the same thread
 * count).  The data gradient's tasks are (samples, channel range) pairs, so no two
 * threads add into the same dx cell.
 */
#include "packed_gemm.h"
#include "clones.h"   /* the packing loops: the same arithmetic on every instruction set */

#include <stdlib.h>
#include <string.h>
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

/* ------------------------------------------------------------------ levels */

int pg_best_level(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (pg_avx512_compiled() && __builtin_cpu_supports("avx512f"))
        return 2;
    if (pg_avx2_compiled() && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return 1;
#endif
    return 0;
}

const pg_level *pg_level_by_index(int index)
{
    if (index == 2 && pg_avx512_compiled())
        return &pg_level_avx512;
    if (index == 1 && pg_avx2_compiled())
        return &pg_level_avx2;
    return &pg_level_portable;
}

/* ----------------------------------------------------------- cache sizes */

/* Test hooks (pg_set_cache_bytes): cache sizes to plan for instead of the machine's, so
 * that small tests run many blocks, bands and tap chunks.  0: the machine's. */
static int64_t forced_cache[3];

void pg_set_cache_bytes(int64_t l1, int64_t l2)
{
    forced_cache[1] = l1;
    forced_cache[2] = l2;
}

static int64_t cache_bytes(int level)
{
    long size = -1;
    if (forced_cache[level] > 0)
        return forced_cache[level];
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE)
    size = sysconf(level == 1 ? _SC_LEVEL1_DCACHE_SIZE : _SC_LEVEL2_CACHE_SIZE);
#endif
    if (size <= 0)
        size = level == 1 ? 32 * 1024 : 512 * 1024;
    return size;
}

/* Taps per chunk: one B sliver (kc x NR floats) fills at most L1. */
static int64_t tap_chunk(const pg_level *lv, int64_t taps)
{
    int64_t kc_max = cache_bytes(1) / (lv->nr * (int64_t)sizeof(float));
    if (kc_max < 16)
        kc_max = 16;
    int64_t chunks = (taps + kc_max - 1) / kc_max;
    return (taps + chunks - 1) / chunks;
}

/* Bytes of the B panel (a block's packed columns of one tap chunk): half of L2, the
 * other half for the A panel streaming through. */
static int64_t panel_bytes(void) { return cache_bytes(2) / 2; }

static int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

/* Taps per chunk of the weight gradient (at most; see pg_backward_weights). */
#define WEIGHTS_TAP_CHUNK 96

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* ------------------------------------------------------- per-thread scratch */

/* Scratch arrays of the calling thread, grown on demand and kept from call to call (the
 * OpenMP pool's threads live on), so a call does not fault in fresh pages.  Bounded: a
 * few panels of PANEL_BYTES plus one block's padded band.  Freed when the thread ends
 * (a POSIX thread key's destructor: OpenMP ends threads when the thread count drops). */
enum { S_PAD, S_PANEL, S_DY, S_COLS, S_TAPS, S_RUNS, S_GROUP, S_LIST, S_SLOTS };
typedef struct { void *ptr[S_SLOTS]; size_t bytes[S_SLOTS]; } pg_scratch;

static void free_scratch(void *arg)
{
    pg_scratch *sc = arg;
    for (int i = 0; i < S_SLOTS; i++)
        free(sc->ptr[i]);
    free(sc);
}

#if defined(_WIN32)
static _Thread_local pg_scratch *thread_scratch;
static pg_scratch *get_scratch(void)
{
    if (!thread_scratch)
        thread_scratch = calloc(1, sizeof(pg_scratch));
    return thread_scratch;
}
#else
#include <pthread.h>
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_key_ok;

static void make_scratch_key(void) { scratch_key_ok = pthread_key_create(&scratch_key, free_scratch) == 0; }

static pg_scratch *get_scratch(void)
{
    pthread_once(&scratch_once, make_scratch_key);
    if (!scratch_key_ok)
        return NULL;
    pg_scratch *sc = pthread_getspecific(scratch_key);
    if (!sc) {
        sc = calloc(1, sizeof(pg_scratch));
        if (sc && pthread_setspecific(scratch_key, sc) != 0) {
            free(sc);
            sc = NULL;
        }
    }
    return sc;
}
#endif

static void *scratch(int slot, size_t bytes)
{
    pg_scratch *sc = get_scratch();
    if (!sc)
        return NULL;
    if (sc->bytes[slot] < bytes) {
        free(sc->ptr[slot]);
        size_t rounded = (size_t)round_up((int64_t)bytes + 64, 4096);
        sc->ptr[slot] = aligned_alloc(64, rounded);
        sc->bytes[slot] = sc->ptr[slot] ? rounded : 0;
    }
    return sc->ptr[slot];
}

/* ------------------------------------------------------------------ blocks */

typedef struct {
    int64_t n0, nb, i0, i1;   /* samples n0 .. n0+nb-1, output rows [i0, i1) */
    int64_t ncols, nsl;       /* columns nb*(i1-i0)*Wo, NR-wide slivers */
    int64_t cc, band_h, wp;   /* the padded band: channels, rows, columns */
    int64_t r0;               /* the input row of band row 0 */
} pg_block;

typedef struct {
    int whole;        /* blocks of whole samples, else bands of `rows` output rows */
    int64_t rows, bands, count;
} pg_plan;

/* Blocks of about `cols` columns, at least `min_blocks` of them where the batch allows.  Whole
 * samples are spread evenly over a multiple of min_blocks blocks (64 samples in 6 blocks: 10 or
 * 11 each), so that threads taking equal runs of blocks get equal work. */
static pg_plan make_plan(const pg_geom *g, int64_t cols, int64_t min_blocks)
{
    pg_plan pl;
    const int64_t P = g->Ho * g->Wo;
    if (min_blocks > 1)
        cols = min64(cols, max64(1, (g->N * P + min_blocks - 1) / min_blocks));
    if (P <= cols) {
        const int64_t samples = min64(g->N, max64(1, (cols + P / 2) / P));   /* the nearest whole count */
        pl.whole = 1;
        pl.rows = g->Ho;
        pl.bands = 1;
        pl.count = min64(g->N, round_up((g->N + samples - 1) / samples, min_blocks));
    } else {
        pl.whole = 0;
        pl.rows = max64(1, cols / g->Wo);
        pl.bands = (g->Ho + pl.rows - 1) / pl.rows;
        pl.count = g->N * pl.bands;
    }
    return pl;
}

static pg_block get_block(const pg_geom *g, const pg_level *lv, const pg_plan *pl,
                          int64_t index, int64_t cc)
{
    pg_block b;
    if (pl->whole) {
        b.n0 = g->N * index / pl->count;
        b.nb = g->N * (index + 1) / pl->count - b.n0;
        b.i0 = 0;
        b.i1 = g->Ho;
    } else {
        b.n0 = index / pl->bands;
        b.nb = 1;
        b.i0 = (index % pl->bands) * pl->rows;
        b.i1 = min64(g->Ho, b.i0 + pl->rows);
    }
    b.ncols = b.nb * (b.i1 - b.i0) * g->Wo;
    b.nsl = (b.ncols + lv->nr - 1) / lv->nr;
    b.cc = cc;
    b.band_h = (b.i1 - b.i0 - 1) * g->sh + (g->kh - 1) * g->dh + 1;
    b.wp = (g->Wo - 1) * g->sw + (g->kw - 1) * g->dw + 1;
    b.r0 = b.i0 * g->sh - g->pt;
    return b;
}

/* to[u] = from[u] for u < len: 8- and 4-float pieces, the last one overlapping the one
 * before it (so nothing outside the run is read or written), single floats below 4
 * (written out: a loop there becomes a call to memmove). */
static inline void copy_run(float *restrict to, const float *restrict from, int64_t len)
{
    if (len >= 8) {
        for (int64_t u = 0; u + 8 < len; u += 8)
            memcpy(to + u, from + u, 8 * sizeof(float));
        memcpy(to + len - 8, from + len - 8, 8 * sizeof(float));
    } else if (len >= 4) {
        memcpy(to, from, 4 * sizeof(float));
        memcpy(to + len - 4, from + len - 4, 4 * sizeof(float));
    } else {
        switch (len) {
        case 3: to[2] = from[2]; /* fall through */
        case 2: to[1] = from[1]; /* fall through */
        case 1: to[0] = from[0]; /* fall through */
        default: break;
        }
    }
}

/* to[u] += from[u] for u < len, in 8- and 4-float pieces. */
static inline void add_run(float *restrict to, const float *restrict from, int64_t len)
{
    int64_t u = 0;
    for (; u + 8 <= len; u += 8)
        for (int v = 0; v < 8; v++)
            to[u + v] += from[u + v];
    for (; u + 4 <= len; u += 4)
        for (int v = 0; v < 4; v++)
            to[u + v] += from[u + v];
    for (; u < len; u++)
        to[u] += from[u];
}

/* pad[b][c][r][u] = x[n0+b, c0+c, r0+r, u-pl] inside the image, else 0. */
CLONES static void fill_pad(const pg_geom *g, const pg_block *b, const float *x, int64_t c0, float *pad)
{
    const int64_t u_lo = max64(0, min64(b->wp, g->pl)), u_hi = max64(u_lo, min64(b->wp, g->pl + g->W));
    for (int64_t s = 0; s < b->nb; s++)
        for (int64_t c = 0; c < b->cc; c++) {
            const float *plane = x + ((b->n0 + s) * g->C + c0 + c) * g->H * g->W;
            float *dst = pad + (s * b->cc + c) * b->band_h * b->wp;
            for (int64_t r = 0; r < b->band_h; r++, dst += b->wp) {
                const int64_t ih = b->r0 + r;
                if (ih < 0 || ih >= g->H) {
                    memset(dst, 0, b->wp * sizeof(float));
                    continue;
                }
                for (int64_t u = 0; u < u_lo; u++)
                    dst[u] = 0.0f;
                copy_run(dst + u_lo, plane + ih * g->W + (u_lo - g->pl), u_hi - u_lo);
                for (int64_t u = u_hi; u < b->wp; u++)
                    dst[u] = 0.0f;
            }
        }
}

/* dx[n0+b, c0+c, ih, iw] += pad[b][c][ih-r0][iw+pl] for the cells of the image the band covers. */
CLONES static void add_pad_inside(const pg_geom *g, const pg_block *b, const float *pad, int64_t c0, float *dx)
{
    const int64_t u_lo = max64(0, min64(b->wp, g->pl)), u_hi = max64(u_lo, min64(b->wp, g->pl + g->W));
    const int64_t r_lo = max64(0, -b->r0), r_hi = min64(b->band_h, g->H - b->r0);
    for (int64_t s = 0; s < b->nb; s++)
        for (int64_t c = 0; c < b->cc; c++) {
            float *plane = dx + ((b->n0 + s) * g->C + c0 + c) * g->H * g->W;
            const float *src = pad + (s * b->cc + c) * b->band_h * b->wp;
            for (int64_t r = r_lo; r < r_hi; r++) {
                float *row = plane + (b->r0 + r) * g->W + (u_lo - g->pl);
                const float *from = src + r * b->wp + u_lo;
                for (int64_t u = 0; u < u_hi - u_lo; u++)
                    row[u] += from[u];
            }
        }
}

/* One run of consecutive columns of an output row inside a sliver: sliver columns
 * [jj, jj + len) read pad[tap_off + src + u*sw] and are the pixels out + u of an NCHW
 * array of K planes per sample (y, dY: out = n*K*P + i*Wo + j). */
typedef struct { int64_t jj, len, src, out; } pg_run;

/* The runs of every sliver (sliver s: runs[first[s] .. first[s+1])).  Returns the number
 * of runs. */
static int64_t make_runs(const pg_geom *g, const pg_level *lv, const pg_block *b,
                         pg_run *runs, int64_t *first)
{
    const int64_t rows = b->i1 - b->i0, P = g->Ho * g->Wo, nr = lv->nr;
    int64_t count = 0;
    for (int64_t s = 0; s < b->nsl; s++) {
        first[s] = count;
        int64_t col = s * nr, end = min64(b->ncols, col + nr);
        while (col < end) {
            const int64_t smp = col / (rows * g->Wo), rem = col % (rows * g->Wo);
            const int64_t i = b->i0 + rem / g->Wo, j = rem % g->Wo;
            const int64_t len = min64(end - col, g->Wo - j);
            runs[count].jj = col - s * nr;
            runs[count].len = len;
            runs[count].src = (smp * b->cc * b->band_h + (i - b->i0) * g->sh) * b->wp + j * g->sw;
            runs[count].out = (b->n0 + smp) * g->K * P + i * g->Wo + j;
            count++;
            col += len;
        }
    }
    first[b->nsl] = count;
    return count;
}

/* tap_off[t - t0] for taps t in [t0, t1) of channels counted from c0 (see the top). */
static void make_taps(const pg_geom *g, const pg_block *b, int64_t t0, int64_t t1, int64_t c0,
                      int64_t *tap_off)
{
    const int64_t khw = g->kh * g->kw;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t c = t / khw - c0, p = (t % khw) / g->kw, q = t % g->kw;
        tap_off[t - t0] = (c * b->band_h + p * g->dh) * b->wp + q * g->dw;
    }
}

/* Bp[s][t][NR] = phi^T[t0 + t, s*NR + jj] for t < kc, 0 for kc <= t < kcp and beyond
 * the block's columns (tap_off holds the chunk's kc taps).  Run by run, the taps inside:
 * one run's copy has the same length for every tap. */
CLONES static void pack_phi(const pg_geom *g, const pg_level *lv, const pg_block *b, const float *pad,
                     const pg_run *runs, const int64_t *first, const int64_t *tap_off,
                     int64_t kc, int64_t kcp, float *Bp)
{
    const int64_t nr = lv->nr, sw = g->sw;
    for (int64_t s = 0; s < b->nsl; s++) {
        float *sliver = Bp + s * kcp * nr;
        const int64_t filled = min64(nr, b->ncols - s * nr);
        for (int64_t k = first[s]; k < first[s + 1]; k++) {
            const float *src = pad + runs[k].src;
            float *to = sliver + runs[k].jj;
            const int64_t len = runs[k].len;
            if (sw == 1)
                for (int64_t t = 0; t < kc; t++)
                    copy_run(to + t * nr, src + tap_off[t], len);
            else
                for (int64_t t = 0; t < kc; t++) {
                    const float *from = src + tap_off[t];
                    float *row = to + t * nr;
                    for (int64_t u = 0; u < len; u++)
                        row[u] = from[u * sw];
                }
        }
        if (filled < nr)
            for (int64_t t = 0; t < kc; t++)
                memset(sliver + t * nr + filled, 0, (nr - filled) * sizeof(float));
        if (kcp > kc)
            memset(sliver + kc * nr, 0, (kcp - kc) * nr * sizeof(float));
    }
}

/* The adjoint of pack_phi: pad[tap_off[t] + src + u*sw] += Cb[s][t][jj + u]. */
CLONES static void unpack_add(const pg_geom *g, const pg_level *lv, const pg_block *b, float *pad,
                       const pg_run *runs, const int64_t *first, const int64_t *tap_off,
                       int64_t kc, int64_t kcp, const float *Cb)
{
    const int64_t nr = lv->nr, sw = g->sw;
    for (int64_t t = 0; t < kc; t++) {
        float *base = pad + tap_off[t];
        for (int64_t s = 0; s < b->nsl; s++) {
            const float *from = Cb + (s * kcp + t) * nr;
            for (int64_t k = first[s]; k < first[s + 1]; k++) {
                float *dst = base + runs[k].src;
                const float *src = from + runs[k].jj;
                const int64_t len = runs[k].len;
                if (sw == 1)
                    add_run(dst, src, len);
                else
                    for (int64_t u = 0; u < len; u++)
                        dst[u * sw] += src[u];
            }
        }
    }
}

/* Dp[s][k][NR] = dy[n, k, pixel] of the sliver's columns for k < K, 0 for K <= k < kp. */
CLONES static void pack_dy(const pg_geom *g, const pg_level *lv, const pg_block *b, const float *dy,
                    const int64_t *first, const pg_run *runs, int64_t kp, float *Dp)
{
    const int64_t nr = lv->nr, P = g->Ho * g->Wo;
    /* plane by plane: dY is read in order, one stream at a time */
    for (int64_t k = 0; k < g->K; k++)
        for (int64_t s = 0; s < b->nsl; s++) {
            float *dst = Dp + (s * kp + k) * nr;
            for (int64_t r = first[s]; r < first[s + 1]; r++)
                copy_run(dst + runs[r].jj, dy + runs[r].out + k * P, runs[r].len);
        }
    const int64_t filled = b->ncols - (b->nsl - 1) * nr;   /* columns of the last sliver */
    for (int64_t k = 0; k < g->K; k++)
        for (int64_t j = filled; j < nr; j++)
            Dp[((b->nsl - 1) * kp + k) * nr + j] = 0.0f;
    if (kp > g->K)
        for (int64_t s = 0; s < b->nsl; s++)
            memset(Dp + (s * kp + g->K) * nr, 0, (kp - g->K) * nr * sizeof(float));
}

/* bias[k] += the sum of dY's plane k over the block: the packed slivers added lane by lane
 * (zeros beyond the block's columns), then the lanes in double. */
CLONES static void add_dy_sums(const pg_level *lv, const pg_block *b, int64_t K, int64_t kp,
                               const float *Dp, double *bias)
{
    const int64_t nr = lv->nr;
    float lanes[PG_MAX_NR];
    for (int64_t k = 0; k < K; k++) {
        for (int64_t j = 0; j < nr; j++)
            lanes[j] = 0.0f;
        for (int64_t s = 0; s < b->nsl; s++) {
            const float *row = Dp + (s * kp + k) * nr;
            for (int64_t j = 0; j < nr; j++)
                lanes[j] += row[j];
        }
        double total = 0.0;
        for (int64_t j = 0; j < nr; j++)
            total += lanes[j];
        bias[k] += total;
    }
}

/* Dt[g][j][PN] = dy[n, g*PN + k, pixel of block column j] for k < PN (0 for kernels >= K and
 * columns >= ncols, up to nsl*NR): dY^T in PN-kernel panels, for pix_outer.  Written through
 * the level's 16 x 16 transpose where it has one, else one pixel's PN kernels at a time (a
 * whole cache line of Dt), reading PN planes side by side. */
CLONES static void pack_dy_t(const pg_geom *g, const pg_level *lv, const pg_block *b, const float *dy,
                             const int64_t *first, const pg_run *runs, int64_t kpn, float *Dt)
{
    const int64_t nr = lv->nr, pn = lv->pn, P = g->Ho * g->Wo, cols = b->nsl * nr;
    const int by_transpose = lv->transpose && pn == 16;
    for (int64_t k0 = 0; k0 < kpn; k0 += pn) {
        const int64_t nk = min64(pn, g->K - k0);
        float *panel = Dt + k0 * cols;
        for (int64_t s = 0; s < b->nsl; s++)
            for (int64_t r = first[s]; r < first[s + 1]; r++) {
                const int64_t jj = runs[r].jj, out = runs[r].out;
                int64_t len = runs[r].len;
                const float *from = dy + out + k0 * P;
                float *to = panel + (s * nr + jj) * pn;
                if (by_transpose) {
                    /* runs that follow each other in dY and in the sliver (whole output rows) as one */
                    for (; r + 1 < first[s + 1] && runs[r + 1].jj == jj + len && runs[r + 1].out == out + len; r++)
                        len += runs[r + 1].len;
                    for (int64_t u0 = 0; u0 < len; u0 += 16) {   /* 16 kernels x 16 pixels at a time */
                        const int64_t n = min64(16, len - u0);
                        lv->transpose(from + u0, P, nk, n, to + u0 * pn, pn, n, pn, 0.0f);
                    }
                    continue;
                }
                for (int64_t u = 0; u < len; u++, to += pn) {
                    for (int64_t k = 0; k < nk; k++)
                        to[k] = from[k * P + u];
                    for (int64_t k = nk; k < pn; k++)
                        to[k] = 0.0f;
                }
            }
        memset(panel + b->ncols * pn, 0, (size_t)((cols - b->ncols) * pn) * sizeof(float));
    }
}

/* Kernels per lane block of add_dy_t_sums: pix_outer needs PN a multiple of it. */
#define SUM_LANES 16

/* bias[k] += the sum of dY's plane k over the block, from Dt (pack_dy_t), in double:
 * SUM_LANES kernels at a time, their sums held in registers. */
CLONES static void add_dy_t_sums(const pg_level *lv, const pg_block *b, int64_t K, int64_t kpn,
                                 const float *Dt, double *bias)
{
    const int64_t pn = lv->pn, cols = b->nsl * lv->nr;
    for (int64_t k0 = 0; k0 < kpn; k0 += pn)
        for (int64_t j0 = 0; j0 < pn; j0 += SUM_LANES) {
            const float *lanes = Dt + k0 * cols + j0;
            double sums[SUM_LANES] = {0};
            for (int64_t c = 0; c < cols; c++)
                for (int j = 0; j < SUM_LANES; j++)
                    sums[j] += lanes[c * pn + j];
            for (int64_t j = 0; j < SUM_LANES && k0 + j0 + j < K; j++)
                bias[k0 + j0 + j] += sums[j];
        }
}

/* The weights as the forward reads them: w(k, c, p, q) = at[k*sk + c*sc + p*sp + q*sq]. */
typedef struct { const float *at; int64_t sk, sc, sp, sq; } pg_weights;

/* w (K, C, kh, kw) as it is. */
static pg_weights plain_weights(const pg_geom *g, const float *w)
{
    const pg_weights v = {w, g->C * g->kh * g->kw, g->kh * g->kw, g->kw, 1};
    return v;
}

/* The adjoint's w'[k, c, p, q] = wf[c, k, kh-1-p, kw-1-q] (see pg_forward_adjoint). */
static pg_weights adjoint_weights(const pg_geom *g, const float *wf)
{
    const pg_weights v = {wf + (g->kh - 1) * g->kw + g->kw - 1, g->kh * g->kw, g->K * g->kh * g->kw,
                          -g->kw, -1};
    return v;
}

/* Ap[m][t][mr] = w(m*mr + r, tap t) (0 for rows >= K): the weights in mr-row panels.  Called
 * by every thread of a parallel region: thread tid of nth packs its share of the panels,
 * then waits at a barrier until all of them are packed. */
static void pack_weights(int64_t mr, const pg_geom *g, pg_weights w, float *Ap, int64_t tid, int64_t nth)
{
    const int64_t K = g->K, panels = (K + mr - 1) / mr;
    for (int64_t m = panels * tid / nth * mr; m < panels * (tid + 1) / nth * mr; m += mr) {
        float *to = Ap + m * g->C * g->kh * g->kw;
        for (int64_t c = 0; c < g->C; c++)
            for (int64_t p = 0; p < g->kh; p++)
                for (int64_t q = 0; q < g->kw; q++) {
                    const float *kernel_m = w.at + m * w.sk + c * w.sc + p * w.sp + q * w.sq;
                    for (int64_t r = 0; r < mr; r++)
                        *to++ = m + r < K ? kernel_m[r * w.sk] : 0.0f;
                }
    }
#ifdef _OPENMP
#pragma omp barrier
#endif
}

/* At[m][k][MR] = w[k, m*MR + r] (0 for taps >= CKK): the transposed weights in MR-tap
 * panels, a share per thread and then a barrier (as pack_weights). */
static void pack_weights_t(const pg_level *lv, int64_t K, int64_t taps, const float *w, float *At,
                           int64_t tid, int64_t nth)
{
    const int64_t mr = lv->mr, panels = (taps + mr - 1) / mr;
    for (int64_t m = panels * tid / nth * mr; m < panels * (tid + 1) / nth * mr; m += mr) {
        float *to = At + m * K;
        for (int64_t k = 0; k < K; k++)
            for (int64_t r = 0; r < mr; r++)
                *to++ = m + r < taps ? w[k * taps + m + r] : 0.0f;
    }
#ifdef _OPENMP
#pragma omp barrier
#endif
}

/* The threads the work runs on: 1 without OpenMP. */
static int usable_threads(int threads)
{
#ifdef _OPENMP
    return threads > 1 ? threads : 1;
#else
    (void)threads;
    return 1;
#endif
}

static int thread_index(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static int thread_total(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

/* ----------------------------------------------------------------- forward */

/* y[out + (row r)*P + u] (+)= tile[r*nr + jj + u] for the runs [run, end) of a sliver and
 * rows r < rows: consecutive runs of one sample (one block of y) are copied as one. */
CLONES static void write_tile(const float *tile, int64_t nr, const pg_run *run, const pg_run *end,
                       float *y, int64_t P, int64_t rows, int accumulate)
{
    while (run < end) {
        const int64_t jj = run->jj, out = run->out;
        int64_t len = run->len;
        for (run++; run < end && run->out == out + len; run++)
            len += run->len;
        for (int64_t r = 0; r < rows; r++) {
            if (accumulate)
                add_run(y + out + r * P, tile + r * nr + jj, len);
            else
                copy_run(y + out + r * P, tile + r * nr + jj, len);
        }
    }
}

/* One block of the forward pass; 0, or -1 without scratch memory. */
static int forward_block(const pg_level *lv, const pg_geom *g, const pg_plan *pl, int64_t index,
                         const float *x, const float *Ap, const float *biasp, float *y, int64_t kc_max)
{
    const int64_t taps = g->C * g->kh * g->kw, P = g->Ho * g->Wo;
    const int64_t mr = lv->mr, nr = lv->nr, K = g->K;
    const int64_t mc = max64(mr, panel_bytes() / (kc_max * (int64_t)sizeof(float)) / mr * mr);
    pg_block b = get_block(g, lv, pl, index, g->C);
    float *pad = scratch(S_PAD, (size_t)(b.nb * b.cc * b.band_h * b.wp) * sizeof(float));
    float *Bp = scratch(S_PANEL, (size_t)(b.nsl * kc_max * nr) * sizeof(float));
    pg_run *runs = scratch(S_RUNS, (size_t)(b.ncols + b.nsl) * sizeof(pg_run));
    int64_t *first = scratch(S_COLS, (size_t)(b.nsl + 1) * sizeof(int64_t));
    int64_t *tap_off = scratch(S_TAPS, (size_t)kc_max * sizeof(int64_t));
    if (!pad || !Bp || !runs || !first || !tap_off)
        return -1;
    float tile[PG_MAX_MR * PG_MAX_NR];
    fill_pad(g, &b, x, 0, pad);
    make_runs(g, lv, &b, runs, first);
    for (int64_t t0 = 0; t0 < taps; t0 += kc_max) {
        const int64_t kc = min64(kc_max, taps - t0);
        const int accumulate = t0 > 0;
        make_taps(g, &b, t0, t0 + kc, 0, tap_off);
        pack_phi(g, lv, &b, pad, runs, first, tap_off, kc, kc, Bp);
        /* rows of kernels in blocks of mc: their A panel (mc x kc) stays in L2 */
        for (int64_t m0 = 0; m0 < K; m0 += mc)
        for (int64_t s = 0; s < b.nsl; s++) {
            const float *bs = Bp + s * kc * nr;
            const pg_run *run = runs + first[s], *end = runs + first[s + 1], *last = end - 1;
            /* the sliver's columns are nr consecutive pixels of one sample: write in place */
            const int in_place = last->jj + last->len == nr && last->out + last->len - run->out == nr;
            for (int64_t m = m0; m < min64(K, m0 + mc); m += mr) {
                const float *am = Ap + (m * taps + t0 * mr);
                const float *bias = (biasp && !accumulate) ? biasp + m : NULL;
                if (in_place && m + mr <= K) {
                    lv->outer(kc, am, bs, y + run->out + m * P, P, accumulate, bias);
                    continue;
                }
                lv->outer(kc, am, bs, tile, nr, 0, bias);
                write_tile(tile, nr, run, end, y + m * P, P, min64(mr, K - m), accumulate);
            }
        }
    }
    return 0;
}

/* ------------------------------------------- forward, the batch in the lanes */

/* A direct convolution (Conv_BF) with the samples in the vector lanes:
 *     y[n, k, i, j] = bias[k] + sum over the taps (c, p, q) inside the image of
 *                     w[k, c, p, q] * x[n, c, i*sh - pt + p*dh, j*sw - pl + q*dw].
 * Samples go in groups of BN (zeros beyond N).  A group's input is laid out as
 * xg[c][h][w][BN], each channel one cache line longer than its cells so that the taps of
 * successive channels do not crowd the same L1 sets: one tap of one output pixel is then
 * BN consecutive floats.  For each output pixel the list of its taps inside the image
 * (weight index, offset in xg) drives the micro-kernel, as the indirection buffer of
 * Dukhan's indirect convolution: taps on the padding are skipped, not multiplied by zero,
 * and nothing but the weights is packed.  The list is cut into chunks whose input cells
 * fit half of L2 where BM >= 8 (one chunk on layers of up to 4096 taps here: each kernel
 * call then sums the whole window, its tile written once), else half of L1; each chunk
 * runs every BM rows of kernels, accumulating into a BM x BN tile per row block, and the
 * pixel's K x BN results are written out with the bias at the end.
 * Threads: groups in rounds of one per thread (fewer in the last round, each then shared
 * by a team of threads).  Each thread gathers its group (or its share of the channels) into
 * its team's buffer; after a barrier, the round's work is taken in units of a pixel block
 * times BM kernels, each thread from its own group's front or another's back, so that a
 * thread slowed down (a busy core, an interrupt) is helped at the end instead of waited
 * for.  Every output cell is computed by one thread by the same arithmetic: the same
 * result on every run. */

static int batch_rule;

void pg_set_batch_rule(int rule) { batch_rule = rule; }

/* The scratch of one thread's gathered group: BN samples per cell, each channel padded by
 * a cache line (its cs), and the bound the rule keeps it under. */
#define BATCH_GROUP_BYTES ((int64_t)8 << 20)
static int64_t group_channel_stride(const pg_level *lv, const pg_geom *g) { return g->H * g->W * lv->bn + 16; }
static int64_t group_floats(const pg_level *lv, const pg_geom *g) { return g->C * group_channel_stride(lv, g); }

/* Measured against the packed route (docs/performance.md).  It needs whole lane groups (the
 * threads share a group where there are fewer than them), and at least 4 taps
 * per kernel: each output cell costs a transposed write-out, where the packed route's
 * packing is shared by all K kernels (3 channels into 64 kernels ran at half the speed).
 * Without a vector transpose (AVX2), it wins only where the packed route loses most to
 * packing and to the taps on the padding: outputs of 14x14 pixels or fewer, or few taps.
 * A thread's gathered group (the input of BN samples) is at most BATCH_GROUP_BYTES. */
int pg_batch_applies(const pg_level *lv, const pg_geom *g)
{
    if (!lv->batch || batch_rule < 0)
        return 0;
    if (batch_rule > 0)
        return 1;
    const int64_t groups = (g->N + lv->bn - 1) / lv->bn, taps = g->C * g->kh * g->kw;
    const int lanes_full = g->N >= lv->bn && 8 * groups * lv->bn <= 9 * g->N;  /* 1 in 9 idle at most */
    const int small = lv->transpose || g->Ho * g->Wo <= 196 || taps <= 32;
    const int fits = group_floats(lv, g) <= BATCH_GROUP_BYTES / (int64_t)sizeof(float);
    return lanes_full && taps >= 4 * g->K && small && fits;
}

/* Output pixels go in blocks of PIXEL_BLOCK: the gather and the write-out move whole
 * cache lines of x and y (a sample's plane is often a multiple of 4 KiB, so reading or
 * writing the BN samples of one pixel at a time would crowd a single L1 set). */
#define PIXEL_BLOCK 16

/* The gather reads a pixel block of BN sample planes at a time, rows a sample's size apart:
 * more streams than the hardware prefetcher follows, so each block asks for the rows of the
 * block GATHER_AHEAD on (docs/performance.md). */
#define GATHER_AHEAD 2

/* xg[c*cs + (h*W + w)*BN + s] = x[n0 + s, c, h, w] for s < ns, 0 for ns <= s < BN, and
 * the channels c0 <= c < c1. */
CLONES static void gather_group(const pg_level *lv, const pg_geom *g, int64_t n0, int64_t ns,
                                int64_t cs, int64_t c0, int64_t c1, const float *x, float *xg)
{
    const int64_t HW = g->H * g->W, bn = lv->bn, plane_blocks = (HW + PIXEL_BLOCK - 1) / PIXEL_BLOCK;
    for (int64_t c = c0; c < c1; c++)
        for (int64_t u0 = 0; u0 < HW; u0 += PIXEL_BLOCK) {
            const int64_t nu = min64(PIXEL_BLOCK, HW - u0);
            const int64_t ahead = c * plane_blocks + u0 / PIXEL_BLOCK + GATHER_AHEAD;
            if (ahead < c1 * plane_blocks)   /* a hint: never an access */
                for (int64_t s = 0; s < ns; s++)
                    __builtin_prefetch(x + ((n0 + s) * g->C + ahead / plane_blocks) * HW
                                       + ahead % plane_blocks * PIXEL_BLOCK);
            float *to = xg + c * cs + u0 * bn;
            if (lv->transpose) {   /* 16 samples x 16 pixels at a time */
                for (int64_t s0 = 0; s0 < bn; s0 += 16) {
                    const int64_t rows = max64(0, min64(16, ns - s0));
                    const float *from = rows ? x + ((n0 + s0) * g->C + c) * HW + u0 : x;
                    lv->transpose(from, g->C * HW, rows, nu, to + s0, bn, nu, 16, 0.0f);
                }
                continue;
            }
            for (int64_t s = 0; s < ns; s++) {
                const float *from = x + ((n0 + s) * g->C + c) * HW + u0;
                for (int64_t u = 0; u < nu; u++)
                    to[u * bn + s] = from[u];
            }
            for (int64_t u = 0; u < nu; u++)
                for (int64_t s = ns; s < bn; s++)
                    to[u * bn + s] = 0.0f;
        }
}

/* The window of output pixel (i, j) inside the image: kernel rows [p0, p1) and columns
 * [q0, q1) (a range each: the input row grows with p, the column with q). */
typedef struct { int64_t p0, p1, q0, q1; } pg_window;

static pg_window pixel_window(const pg_geom *g, int64_t i, int64_t j)
{
    pg_window v = {0, 0, 0, 0};
    const int64_t ih = i * g->sh - g->pt, iw = j * g->sw - g->pl;
    while (v.p0 < g->kh && ih + v.p0 * g->dh < 0)
        v.p0++;
    for (v.p1 = v.p0; v.p1 < g->kh && ih + v.p1 * g->dh < g->H; v.p1++) {}
    while (v.q0 < g->kw && iw + v.q0 * g->dw < 0)
        v.q0++;
    for (v.q1 = v.q0; v.q1 < g->kw && iw + v.q1 * g->dw < g->W; v.q1++) {}
    return v;
}

/* The taps of a window: tap[m] the weight index, off[m] the cell's offset in xg from the
 * window's first cell (p0, q0).  Returns their count (C times the window's cells). */
static int64_t window_taps(const pg_geom *g, int64_t bn, int64_t cs, pg_window v, int64_t *tap, int64_t *off)
{
    const int64_t khw = g->kh * g->kw;
    int64_t inside = 0;
    for (int64_t p = v.p0; p < v.p1; p++)
        for (int64_t q = v.q0; q < v.q1; q++) {
            tap[inside] = p * g->kw + q;
            off[inside] = ((p - v.p0) * g->dh * g->W + (q - v.q0) * g->dw) * bn;
            inside++;
        }
    for (int64_t c = 1; c < g->C; c++)
        for (int64_t m = 0; m < inside; m++) {
            tap[c * inside + m] = tap[m] + c * khw;
            off[c * inside + m] = off[m] + c * cs;
        }
    return g->C * inside;
}

/* Output pixels [u0, u1) (at most PIXEL_BLOCK) of the samples [n0, n0 + ns), kernels
 * [k0, k1) (multiples of BM, or K), from their group's xg: each pixel's results into acc
 * (one kp x BN tile per pixel of the block), then written into y, a run of pixels per
 * sample and kernel. */
static void batch_pixels(const pg_level *lv, const pg_geom *g, int64_t n0, int64_t ns, int64_t cs,
                         const float *xg, const float *Ab, const float *bias, int64_t u0, int64_t u1,
                         int64_t k0, int64_t k1, int64_t kc, int64_t *tap, int64_t *off, float *acc,
                         float *y)
{
    const int64_t bm = lv->bm, bn = lv->bn, K = g->K, P = g->Ho * g->Wo;
    const int64_t taps = g->C * g->kh * g->kw, kp = round_up(K, bm), tile = kp * bn;
    const int64_t nv = u1 - u0;
    pg_window last = {-1, -1, -1, -1};
    int64_t nt = 0;
    for (int64_t v = 0; v < nv; v++) {
        const int64_t u = u0 + v, i = u / g->Wo, j = u % g->Wo;
        const pg_window w = pixel_window(g, i, j);
        if (w.p0 != last.p0 || w.p1 != last.p1 || w.q0 != last.q0 || w.q1 != last.q1)
            nt = window_taps(g, bn, cs, w, tap, off);   /* pixels inside share one list */
        last = w;
        /* the window's first cell; no tap is read when the window is empty */
        const float *first = nt ? xg + ((i * g->sh - g->pt + w.p0 * g->dh) * g->W
                                        + j * g->sw - g->pl + w.q0 * g->dw) * bn : xg;
        float *out = acc + v * tile;
        if (nt == 0)
            memset(out + k0 * bn, 0, (size_t)((round_up(k1, bm) - k0) * bn) * sizeof(float));
        for (int64_t t0 = 0; t0 < nt; t0 += kc)
            for (int64_t m = k0; m < k1; m += bm)
                lv->batch(min64(kc, nt - t0), tap + t0, off + t0, Ab + m * taps, first, out + m * bn, t0 > 0);
    }
    for (int64_t k = k0; k < min64(k1, K); k++) {
        const float add = bias ? bias[k] : 0.0f;
        if (lv->transpose) {   /* 16 pixels x 16 samples at a time */
            for (int64_t s0 = 0; s0 < ns; s0 += 16)
                lv->transpose(acc + k * bn + s0, tile, nv, 16, y + ((n0 + s0) * K + k) * P + u0,
                              K * P, min64(16, ns - s0), nv, add);
            continue;
        }
        for (int64_t s = 0; s < ns; s++) {
            float *row = y + ((n0 + s) * K + k) * P + u0;
            for (int64_t v = 0; v < nv; v++)
                row[v] = acc[v * tile + k * bn + s] + add;
        }
    }
}

/* The work of one gathered group not yet taken, [front, back) in units of PIXEL_BLOCK
 * output pixels times BM kernels (unit u: pixel block u / rows, kernel rows u % rows). */
typedef struct { int64_t front, back; } pg_span;

/* Takes the next units [*v0, *v1) of a group: its leader (the thread whose buffer holds
 * it) from the front, any other thread from the back, so that they meet at the end; a
 * pixel block's worth (`rows` units) at a time, fewer as the group runs out when other
 * threads may share it, so that they finish together.  0 when the group is done. */
static int take_units(pg_span *span, int leader, int64_t rows, int64_t nth, int64_t *v0, int64_t *v1)
{
    int got = 0;
#ifdef _OPENMP
#pragma omp critical(pg_take_units)
#endif
    {
        const int64_t left = span->back - span->front;
        if (left > 0) {
            const int64_t n = nth > 1 ? max64(1, min64(rows, left / (2 * nth))) : rows;
            if (leader) {
                *v0 = span->front;
                span->front += n;
                *v1 = span->front;
            } else {
                *v1 = span->back;
                span->back -= n;
                *v0 = span->back;
            }
            got = 1;
        }
    }
    return got;
}

/* The team of thread tid of nth in a round of ng <= nth groups: it works on group
 * tid * ng / nth, with the threads [first, first + size) (first leads it). */
typedef struct { int64_t group, first, size; } pg_team;

static pg_team team_of(int64_t tid, int64_t ng, int64_t nth)
{
    pg_team t;
    t.group = tid * ng / nth;
    t.first = (t.group * nth + ng - 1) / ng;
    t.size = ((t.group + 1) * nth + ng - 1) / ng - t.first;
    return t;
}

static int forward_batch(const pg_level *lv, const pg_geom *g, const float *x, pg_weights w,
                         const float *bias, float *y, int threads)
{
    const int64_t bm = lv->bm, bn = lv->bn, taps = g->C * g->kh * g->kw, P = g->Ho * g->Wo;
    const int64_t kp = round_up(g->K, bm), cs = group_channel_stride(lv, g);
    const int64_t groups = (g->N + bn - 1) / bn;
    const int64_t rows = kp / bm, blocks = (P + PIXEL_BLOCK - 1) / PIXEL_BLOCK;
    const size_t group_bytes = (size_t)group_floats(lv, g) * sizeof(float);
    /* input cells of one chunk of taps: half of L2 where a pass over them serves 8 kernels
     * or more (AVX-512), else half of L1 (AVX2's 3-kernel tile would read them from L2 too
     * often: 0.85x; docs/performance.md) */
    const int64_t kc = max64(16, cache_bytes(bm >= 8 ? 2 : 1) / 2 / (bn * (int64_t)sizeof(float)));
    threads = usable_threads(threads);
    /* per group of a round: the buffer it is gathered into, and its units not yet taken */
    float *Ab = malloc((size_t)(kp * taps) * sizeof(float));
    float **round_xg = malloc((size_t)threads * sizeof(float *));
    pg_span *spans = malloc((size_t)threads * sizeof(pg_span));
    if (!Ab || !round_xg || !spans) {
        free(Ab);
        free(round_xg);
        free(spans);
        return -1;
    }
    int failed = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) if (threads > 1)
#endif
    {
        const int64_t tid = thread_index(), nth = thread_total();
        /* a buffer for every thread that leads a group in some round */
        const int leads = groups >= nth || team_of(tid, groups, nth).first == tid;
        float *xg = leads ? scratch(S_GROUP, group_bytes) : NULL;
        int64_t *list = scratch(S_LIST, (size_t)(2 * taps) * sizeof(int64_t));
        float *acc = scratch(S_PANEL, (size_t)(PIXEL_BLOCK * kp * bn) * sizeof(float));
        if ((leads && !xg) || !list || !acc) {
#ifdef _OPENMP
#pragma omp atomic write
#endif
            failed = 1;
        }
        pack_weights(bm, g, w, Ab, tid, nth);   /* ends with a barrier */
        /* rounds of nth groups (fewer in the last): each member of a team gathers a share
         * of its group's channels into the leader's buffer; then every thread computes
         * units, first of its own group, then of the others */
        for (int64_t r0 = 0; !failed && r0 < groups; r0 += nth) {
            const int64_t ng = min64(nth, groups - r0);
            const pg_team team = team_of(tid, ng, nth);
            const int64_t gi = team.group, first = team.first;
            const int64_t n0 = (r0 + gi) * bn, ns = min64(bn, g->N - n0);
            if (r0 > 0) {
#ifdef _OPENMP
#pragma omp barrier
#endif
            }
            if (tid == first) {
                round_xg[gi] = xg;
                spans[gi].front = 0;
                spans[gi].back = blocks * rows;
            }
#ifdef _OPENMP
#pragma omp barrier
#endif
            gather_group(lv, g, n0, ns, cs, g->C * (tid - first) / team.size,
                         g->C * (tid - first + 1) / team.size, x, round_xg[gi]);
#ifdef _OPENMP
#pragma omp barrier
#endif
            for (int64_t k = 0; k < ng; k++) {
                const int64_t gk = (gi + k) % ng, nk0 = (r0 + gk) * bn;
                const int leader = k == 0 && tid == first;
                int64_t v0, v1;
                while (take_units(&spans[gk], leader, rows, nth, &v0, &v1))
                    for (int64_t v = v0; v < v1;) {   /* a call per pixel block */
                        const int64_t block = v / rows, m0 = v % rows, m1 = min64(rows, m0 + v1 - v);
                        batch_pixels(lv, g, nk0, min64(bn, g->N - nk0), cs, round_xg[gk], Ab, bias,
                                     block * PIXEL_BLOCK, min64(P, (block + 1) * PIXEL_BLOCK),
                                     m0 * bm, min64(g->K, m1 * bm), kc, list, list + taps, acc, y);
                        v += m1 - m0;
                    }
            }
        }
    }
    free(Ab);
    free(round_xg);
    free(spans);
    return failed ? -1 : 0;
}

static int forward(const pg_level *lv, const pg_geom *g, const float *x, pg_weights w,
                   const float *bias, float *y, int threads)
{
    if (pg_batch_applies(lv, g))
        return forward_batch(lv, g, x, w, bias, y, threads);
    const int64_t taps = g->C * g->kh * g->kw, kpad = round_up(g->K, lv->mr);
    const int64_t kc_max = tap_chunk(lv, taps);
    threads = usable_threads(threads);
    pg_plan pl = make_plan(g, max64(lv->nr, panel_bytes() / (kc_max * (int64_t)sizeof(float))), threads);
    float *Ap = malloc((size_t)(kpad * taps + kpad) * sizeof(float));
    if (!Ap)
        return -1;
    float *biasp = NULL;
    if (bias) {
        biasp = Ap + kpad * taps;
        for (int64_t k = 0; k < kpad; k++)
            biasp[k] = k < g->K ? bias[k] : 0.0f;
    }
    int failed = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) if (threads > 1 && pl.count > 1) reduction(| : failed)
#endif
    {
        const int64_t tid = thread_index(), nth = thread_total();
        pack_weights(lv->mr, g, w, Ap, tid, nth);
        for (int64_t i = pl.count * tid / nth; i < pl.count * (tid + 1) / nth; i++)
            failed |= forward_block(lv, g, &pl, i, x, Ap, biasp, y, kc_max) != 0;
    }
    free(Ap);
    return failed ? -1 : 0;
}

int pg_forward(const pg_level *lv, const pg_geom *g, const float *x, const float *w,
               const float *bias, float *y, int threads)
{
    return forward(lv, g, x, plain_weights(g, w), bias, y, threads);
}

int pg_forward_adjoint(const pg_level *lv, const pg_geom *g, const float *dy, const float *wf,
                       float *dx, int threads)
{
    return forward(lv, g, dy, adjoint_weights(g, wf), NULL, dx, threads);
}

/* --------------------------------------------------------- weight gradient */

/* The weight gradient's kernel: pix_outer where the level has it and the kernels fill its
 * lanes (at most 1 in 9 idle: LeNet's 6 kernels in 16 lanes ran at half dot's speed) and the
 * taps its rows (at most 1 in 4 idle: a first layer's 27 taps in 48 rows ran at 0.7 of dot's
 * speed, 9 taps in 24 at 0.86; 18 in 24 at 1.06), else dot.  (Its bias sums take PN in
 * blocks of SUM_LANES.) */
static int by_pix_outer(const pg_level *lv, const pg_geom *g)
{
    const int64_t taps = g->C * g->kh * g->kw;
    return lv->pix_outer && lv->pn % SUM_LANES == 0 && 8 * round_up(g->K, lv->pn) <= 9 * g->K
           && 3 * round_up(taps, lv->pm) <= 4 * taps;
}

/* Its tile: taps x kernels. */
static int64_t tap_tile(const pg_level *lv, const pg_geom *g) { return by_pix_outer(lv, g) ? lv->pm : lv->dn; }
static int64_t kernel_tile(const pg_level *lv, const pg_geom *g) { return by_pix_outer(lv, g) ? lv->pn : lv->dm; }

/* out[(k0 + j)*taps + t + r] += tile[j*ldt + r] for the kernels and taps inside K and kc. */
static void add_tile(const float *tile, int64_t ldt, int64_t kernels, int64_t tps, float *out, int64_t taps)
{
    for (int64_t j = 0; j < kernels; j++)
        for (int64_t r = 0; r < tps; r++)
            out[j * taps + r] += tile[j * ldt + r];
}

static int weights_block(const pg_level *lv, const pg_geom *g, const pg_plan *pl, int64_t index,
                         const float *dy, const float *x, float *out, double *bias, int64_t kc_max)
{
    const int64_t taps = g->C * g->kh * g->kw;
    const int64_t nr = lv->nr, tt = tap_tile(lv, g), kt = kernel_tile(lv, g), K = g->K, kp = round_up(K, kt);
    const int64_t kcp_max = round_up(kc_max, tt);
    pg_block b = get_block(g, lv, pl, index, g->C);
    float *pad = scratch(S_PAD, (size_t)(b.nb * b.cc * b.band_h * b.wp) * sizeof(float));
    float *Bp = scratch(S_PANEL, (size_t)(b.nsl * kcp_max * nr) * sizeof(float));
    float *Dp = scratch(S_DY, (size_t)(b.nsl * kp * nr) * sizeof(float));
    pg_run *runs = scratch(S_RUNS, (size_t)(b.ncols + b.nsl) * sizeof(pg_run));
    int64_t *first = scratch(S_COLS, (size_t)(b.nsl + 1) * sizeof(int64_t));
    int64_t *tap_off = scratch(S_TAPS, (size_t)kc_max * sizeof(int64_t));
    if (!pad || !Bp || !Dp || !runs || !first || !tap_off)
        return -1;
    float tile[PG_MAX_NR * PG_MAX_MR];
    fill_pad(g, &b, x, 0, pad);
    make_runs(g, lv, &b, runs, first);
    const int pix = by_pix_outer(lv, g);
    if (pix) {
        pack_dy_t(g, lv, &b, dy, first, runs, kp, Dp);
        if (bias)
            add_dy_t_sums(lv, &b, K, kp, Dp, bias);
    } else {
        pack_dy(g, lv, &b, dy, first, runs, kp, Dp);
        if (bias)
            add_dy_sums(lv, &b, K, kp, Dp, bias);
    }
    for (int64_t t0 = 0; t0 < taps; t0 += kc_max) {
        const int64_t kc = min64(kc_max, taps - t0), kcp = round_up(kc, tt);
        make_taps(g, &b, t0, t0 + kc, 0, tap_off);
        pack_phi(g, lv, &b, pad, runs, first, tap_off, kc, kcp, Bp);
        for (int64_t t = 0; t < kcp; t += tt)
            for (int64_t m = 0; m < kp; m += kt) {
                /* c[j*ldc + r]: kernel m + j, tap t0 + t + r; edge tiles go through `tile` */
                const int full = m + kt <= K && t + tt <= kc;
                float *to = out + m * taps + t0 + t, *c = full ? to : tile;
                const int64_t ldc = full ? taps : tt;
                if (!full)
                    memset(tile, 0, (size_t)(kt * tt) * sizeof(float));
                if (pix)
                    lv->pix_outer(b.nsl, Bp + t * nr, kcp * nr, Dp + m * b.nsl * nr, c, ldc);
                else
                    lv->dot(b.nsl, Dp + m * nr, kp * nr, Bp + t * nr, kcp * nr, c, ldc);
                if (!full)
                    add_tile(tile, tt, min64(kt, K - m), min64(tt, kc - t), to, taps);
            }
    }
    return 0;
}

int pg_backward_weights(const pg_level *lv, const pg_geom *g, const float *dy, const float *x,
                        float *partial, double *bias_partial, int threads)
{
    const int64_t taps = g->C * g->kh * g->kw;
    /* Short tap chunks and long blocks: each kernel call sums along many slivers before it
     * writes its tile.  The chunk's phi panel and dY's panel share the L2 budget. */
    const int64_t kc_max = min64(tap_chunk(lv, taps), round_up(WEIGHTS_TAP_CHUNK, tap_tile(lv, g)));
    const int64_t per_col = (round_up(kc_max, tap_tile(lv, g)) + round_up(g->K, kernel_tile(lv, g))) * (int64_t)sizeof(float);
    memset(partial, 0, (size_t)threads * g->K * taps * sizeof(float));
    if (bias_partial)
        memset(bias_partial, 0, (size_t)threads * g->K * sizeof(double));
    threads = usable_threads(threads);
    pg_plan pl = make_plan(g, max64(lv->nr, 3 * panel_bytes() / 2 / per_col), threads);
    int failed = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) if (threads > 1 && pl.count > 1) reduction(| : failed)
#endif
    {
        const int64_t tid = thread_index(), nth = thread_total();
        float *out = partial + tid * g->K * taps;
        double *bias = bias_partial ? bias_partial + tid * g->K : NULL;
        for (int64_t i = pl.count * tid / nth; i < pl.count * (tid + 1) / nth; i++)
            failed |= weights_block(lv, g, &pl, i, dy, x, out, bias, kc_max) != 0;
    }
    return failed ? -1 : 0;
}

/* ----------------------------------------------------------- data gradient */

/* The samples of task unit u (a block of whole samples, or one sample cut into bands), its
 * channels [c0, c1): dx of those is written (zeroed first, then every band added). */
static int data_task(const pg_level *lv, const pg_geom *g, const pg_plan *pl, int64_t unit,
                     int64_t c0, int64_t c1, const float *dy, const float *At, float *dx)
{
    const int64_t taps = g->C * g->kh * g->kw, khw = g->kh * g->kw;
    const int64_t mr = lv->mr, nr = lv->nr, K = g->K;
    const int64_t t_lo = c0 * khw, t_hi = c1 * khw, t_first = t_lo / mr * mr;
    const int64_t first_block = pl->whole ? unit : unit * pl->bands;
    const int64_t last_block = pl->whole ? unit + 1 : (unit + 1) * pl->bands;
    {
        pg_block b = get_block(g, lv, pl, first_block, c1 - c0);
        for (int64_t s = 0; s < b.nb; s++)
            memset(dx + ((b.n0 + s) * g->C + c0) * g->H * g->W, 0,
                   (size_t)((c1 - c0) * g->H * g->W) * sizeof(float));
    }
    for (int64_t index = first_block; index < last_block; index++) {
        pg_block b = get_block(g, lv, pl, index, c1 - c0);
        /* taps per chunk: the chunk's results (tc x the block's columns) fit the panel budget */
        const int64_t tc = max64(mr, panel_bytes() / (b.nsl * nr * (int64_t)sizeof(float)) / mr * mr);
        const size_t pad_size = (size_t)(b.nb * b.cc * b.band_h * b.wp);
        float *pad = scratch(S_PAD, pad_size * sizeof(float));
        float *Cb = scratch(S_PANEL, (size_t)(b.nsl * tc * nr) * sizeof(float));
        float *Dp = scratch(S_DY, (size_t)(b.nsl * K * nr) * sizeof(float));
        pg_run *runs = scratch(S_RUNS, (size_t)(b.ncols + b.nsl) * sizeof(pg_run));
        int64_t *first = scratch(S_COLS, (size_t)(b.nsl + 1) * sizeof(int64_t));
        int64_t *tap_off = scratch(S_TAPS, (size_t)tc * sizeof(int64_t));
        if (!pad || !Cb || !Dp || !runs || !first || !tap_off)
            return -1;
        memset(pad, 0, pad_size * sizeof(float));
        make_runs(g, lv, &b, runs, first);
        pack_dy(g, lv, &b, dy, first, runs, K, Dp);
        for (int64_t t0 = t_first; t0 < t_hi; t0 += tc) {
            const int64_t t1 = min64(t_hi, t0 + tc);
            /* dphi^T of taps [t0, t1) (MR-aligned panels; rows below t_lo are not added) */
            for (int64_t s = 0; s < b.nsl; s++)
                for (int64_t m = t0; m < t1; m += mr)
                    lv->outer(K, At + m * K, Dp + s * K * nr, Cb + (s * tc + (m - t0)) * nr, nr, 0, NULL);
            const int64_t a0 = max64(t0, t_lo);
            make_taps(g, &b, a0, t1, c0, tap_off);
            unpack_add(g, lv, &b, pad, runs, first, tap_off, t1 - a0, tc, Cb + (a0 - t0) * nr);
        }
        add_pad_inside(g, &b, pad, c0, dx);
    }
    (void)taps;
    return 0;
}

int pg_backward_data(const pg_level *lv, const pg_geom *g, const float *dy, const float *w,
                     float *dx, int threads)
{
    const int64_t taps = g->C * g->kh * g->kw, tpad = round_up(taps, lv->mr);
    threads = usable_threads(threads);
    /* columns per block: the packed dY (K x cols) fits the panel budget */
    pg_plan pl = make_plan(g, max64(lv->nr, panel_bytes() / (g->K * (int64_t)sizeof(float))), 1);
    const int64_t units = pl.whole ? pl.count : g->N;
    /* fewer units than threads: split the channels too */
    const int64_t splits = units >= threads ? 1 : min64(g->C, (threads + units - 1) / units);
    const int64_t tasks = units * splits;
    float *At = malloc((size_t)(tpad * g->K) * sizeof(float));
    if (!At)
        return -1;
    int failed = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) if (threads > 1 && tasks > 1) reduction(| : failed)
#endif
    {
        const int64_t tid = thread_index(), nth = thread_total();
        pack_weights_t(lv, g->K, taps, w, At, tid, nth);
        for (int64_t i = tasks * tid / nth; i < tasks * (tid + 1) / nth; i++) {
            const int64_t unit = i / splits, part = i % splits;
            const int64_t c0 = g->C * part / splits, c1 = g->C * (part + 1) / splits;
            failed |= data_task(lv, g, &pl, unit, c0, c1, dy, At, dx) != 0;
        }
    }
    free(At);
    return failed ? -1 : 0;
}
