/* Batch normalisation's loops over one (sample, channel) slice of n values, for float32 and
 * float64 (suffixes _f32, _f64).  Sums run in double, in BN_LANES partial sums (lane j
 * takes the values j, j + BN_LANES, ... of the whole groups of BN_LANES) added by a fixed
 * tree, then the values left over (fewer than BN_LANES) summed in order: every
 * instruction-set level gives the same result.  The element-wise steps run in the input's
 * precision, without fused multiply-adds (the same rounding on every level).
 *
 *   slice_stats:  *sum = sum x,  *m2 = sum (x - mean)^2 with mean = *sum / n  (n >= 1)
 *   slice_sums:   *sum_u = sum u,  *sum_uv = sum u * v
 *   normalize:    xhat = s * x + shift,  y = gamma * xhat + beta
 *   combine:      out = a * u + b * v + c  (v NULL: out = a * u + c)
 */
#ifndef IM2COLNET_BN_LOOPS_H
#define IM2COLNET_BN_LOOPS_H

#include <stdint.h>

#define BN_LANES 16

void bn_slice_stats_f32(const float *x, int64_t n, double *sum, double *m2);
void bn_slice_stats_f64(const double *x, int64_t n, double *sum, double *m2);
void bn_slice_sums_f32(const float *u, const float *v, int64_t n, double *sum_u, double *sum_uv);
void bn_slice_sums_f64(const double *u, const double *v, int64_t n, double *sum_u, double *sum_uv);
void bn_normalize_f32(const float *x, float *xhat, float *y, int64_t n, float s, float shift,
                      float gamma, float beta);
void bn_normalize_f64(const double *x, double *xhat, double *y, int64_t n, double s, double shift,
                      double gamma, double beta);
void bn_combine_f32(const float *u, const float *v, float *out, int64_t n, float a, float b, float c);
void bn_combine_f64(const double *u, const double *v, double *out, int64_t n, double a, double b,
                    double c);

#endif
