/* The packed convolution GEMM: shared declarations.
 *
 * Per sample, in Caffe's layout, the three passes are products of small matrices:
 *   forward          Y^T (K, P)      = A (K, CKK)      . phi^T (CKK, P)      A = w
 *   weight gradient  dC^T (K, CKK)   = dY (K, P)       . phi (P, CKK)        summed over samples
 *   data gradient    dphi^T (CKK, P) = A^T (CKK, K)    . dY (K, P)           then col2im
 * with P = Ho*Wo output pixels and CKK = C*kh*kw kernel taps.  The driver
 * (packed_conv.c) cuts the pixels of the batch into column blocks, packs phi^T of
 * a block straight from x (never a whole sample's column matrix), and calls a
 * register-tiled micro-kernel of one instruction-set level.
 */
#ifndef IM2COLNET_PACKED_GEMM_H
#define IM2COLNET_PACKED_GEMM_H

#include <stdint.h>

/* Tile sizes: every level's tiles fit these bounds (the driver's scratch tiles). */
#define PG_MAX_MR 16
#define PG_MAX_NR 64

/* acc (MR x NR) = sum_t a[t*MR + r] * b[t*NR + j] over t < kc;
 * c[r*ldc + j] = (accumulate ? c[r*ldc + j] : 0) + acc + (bias ? bias[r] : 0). */
typedef void (*pg_outer_fn)(int64_t kc, const float *a, const float *b, float *c,
                            int64_t ldc, int accumulate, const float *bias);

/* c[r*ldc + t] += sum over s < ns, j < NR of a[s*a_step + r*NR + j] * b[s*b_step + t*NR + j]
 * for r < DM, t < DN: dot products along the pixels (the weight gradient). */
typedef void (*pg_dot_fn)(int64_t ns, const float *a, int64_t a_step, const float *b,
                          int64_t b_step, float *c, int64_t ldc);

/* c[j*ldc + r] += sum over s < ns, p < NR of a[s*a_step + r*NR + p] * b[(s*NR + p)*PN + j]
 * for r < PM taps, j < PN kernels: the weight gradient as outer products along the pixels,
 * a the phi^T slivers (broadcast), b dY^T packed PN kernels per pixel. */
typedef void (*pg_pix_outer_fn)(int64_t ns, const float *a, int64_t a_step, const float *b,
                                float *c, int64_t ldc);

/* c[r*BN + j] = (accumulate ? c[r*BN + j] : 0) + sum over i < nt of a[tap[i]*BM + r] * b[off[i] + j]
 * for r < BM kernels, j < BN samples: the forward with the batch in the vector lanes, a the
 * weights in BM-row panels, b the input with BN samples per cell, tap/off the taps of one
 * output pixel that land inside the image. */
typedef void (*pg_batch_fn)(int64_t nt, const int64_t *tap, const int64_t *off, const float *a,
                            const float *b, float *c, int accumulate);

/* A 16 x 16 block transposed: to[j*to_step + i] = v[i][j] + add for j < to_rows, i < to_cols,
 * where v[i][j] = from[i*from_step + j] for i < from_rows, j < from_cols, and 0 elsewhere
 * (nothing outside those is read or written; all counts at most 16).  The batch route's
 * gather (samples into the lanes) and write-out (back to NCHW). */
typedef void (*pg_transpose_fn)(const float *from, int64_t from_step, int64_t from_rows,
                                int64_t from_cols, float *to, int64_t to_step, int64_t to_rows,
                                int64_t to_cols, float add);

typedef struct {
    const char *name;   /* "avx512", "avx2", "portable" */
    int mr, nr;         /* outer-product tile: MR rows (kernels or taps) x NR pixels */
    int dm, dn;         /* dot tile: DM kernels x DN taps, along NR-pixel slivers */
    pg_outer_fn outer;
    pg_dot_fn dot;
    int pm, pn;         /* pixel-outer tile: PM taps x PN kernels */
    pg_pix_outer_fn pix_outer;   /* the weight gradient's kernel where set, else dot */
    int bm, bn;         /* batch tile: BM kernels x BN samples */
    pg_batch_fn batch;  /* the forward with the batch in the lanes, where set */
    pg_transpose_fn transpose;   /* where set (BN a multiple of 16), else scalar loops */
} pg_level;

/* The levels (NULL functions where the level is not compiled on this architecture). */
extern const pg_level pg_level_avx512;
extern const pg_level pg_level_avx2;
extern const pg_level pg_level_portable;
int pg_avx512_compiled(void);
int pg_avx2_compiled(void);

/* The geometry of one convolution (the normalised padding's top/left: bottom/right
 * follow from Ho, Wo). */
typedef struct {
    int64_t N, C, H, W, K, kh, kw, sh, sw, dh, dw, pt, pl, Ho, Wo;
} pg_geom;

/* Levels: 0 portable, 1 avx2, 2 avx512.  pg_best_level: what this CPU runs. */
int pg_best_level(void);
const pg_level *pg_level_by_index(int index);

/* Each pass returns 0, or -1 when its scratch memory could not be allocated.
 * y (N, K, Ho, Wo) = conv(x, w) + bias (bias may be NULL). */
int pg_forward(const pg_level *lv, const pg_geom *g, const float *x, const float *w,
                const float *bias, float *y, int threads);
/* At stride 1, the data gradient as a forward pass: dx (N, K, Ho, Wo) = conv(dy, w') with g
 * the adjoint's geometry (C = the forward's K, K = the forward's C) and w' the forward's
 * weights wf (C, K, kh, kw) turned 180 degrees, their two channel axes swapped:
 * w'[k, c, p, q] = wf[c, k, kh-1-p, kw-1-q] (read in place, never copied). */
int pg_forward_adjoint(const pg_level *lv, const pg_geom *g, const float *dy, const float *wf,
                       float *dx, int threads);
/* dx (N, C, H, W) = col2im(w^T dy). */
int pg_backward_data(const pg_level *lv, const pg_geom *g, const float *dy, const float *w,
                      float *dx, int threads);
/* partial[t] (K, CKK) = the sum of dy . phi over the samples thread t took (threads partials),
 * and bias_partial[t] (K) the sum of those samples' dy over the pixels (the bias gradient;
 * may be NULL); the caller adds them in order. */
int pg_backward_weights(const pg_level *lv, const pg_geom *g, const float *dy, const float *x,
                         float *partial, double *bias_partial, int threads);

/* Plan for these cache sizes (bytes; 0: the machine's), for tests. */
void pg_set_cache_bytes(int64_t l1, int64_t l2);
/* When the forward runs with the batch in the lanes: 0 by the rule (pg_batch_applies),
 * 1 whenever the level has the kernel, -1 never; for tests. */
void pg_set_batch_rule(int rule);
int pg_batch_applies(const pg_level *lv, const pg_geom *g);

#endif
