# cython: language_level=3
"""Spatial batch normalisation over (N, C, L) arrays (L = H*W): statistics per channel c
over (n, l), one ``prange`` task per sample.

NumPy's expressions for the same formulas pass over the activations about 14
times in the forward and 16 times in the backward (one pass per ufunc and
reduction); these loops pass twice in each (the statistics read a (sample,
channel) slice twice, the second time from cache), and run the samples on
both cores when ``parallel`` (the wrappers decide: im2colnet.runtime.threads.threads_worth).
The loops over a slice are C (csrc/bn_loops.c, vectorised for the CPU, the same
arithmetic on every instruction set). Each thread reads whole samples, in memory
order; the per-slice sums are combined in sample order afterwards, so the result
does not depend on the thread count. Sums accumulate in double whatever the input
dtype; the element-wise steps run in the input's precision, as NumPy's did.

    forward:  per slice s of L values: S_s = sum(x), m2_s = sum((x - S_s/L)^2);
              mean = sum_s S_s / M, var = sum_s (m2_s + L (S_s/L - mean)^2) / M
              (Chan, Golub and LeVeque's pairwise update: exact for large means),
              inv_std = 1 / sqrt(var + eps),
              xhat = (x - mean) * inv_std, y = gamma * xhat + beta
    backward: dbeta = sum(dy), dgamma = sum(dy * xhat),
              training:  dx = gamma * inv_std / M * (M dy - dbeta - xhat * dgamma)
              inference: dx = gamma * inv_std * dy
with M = N*L values per statistic and the sums over (n, l).

The functions trust their arguments (shapes that agree, M >= 1): call them
through :mod:`im2colnet.functional.batchnorm`, which validates first.
"""
from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.stdint cimport int64_t
from .window cimport floating

import numpy as np


cdef extern from "bn_loops.h" nogil:
    void bn_slice_stats_f32(const float *x, int64_t n, double *sum, double *m2)
    void bn_slice_stats_f64(const double *x, int64_t n, double *sum, double *m2)
    void bn_slice_sums_f32(const float *u, const float *v, int64_t n, double *sum_u, double *sum_uv)
    void bn_slice_sums_f64(const double *u, const double *v, int64_t n, double *sum_u, double *sum_uv)
    void bn_normalize_f32(const float *x, float *xhat, float *y, int64_t n, float s, float shift,
                          float gamma, float beta)
    void bn_normalize_f64(const double *x, double *xhat, double *y, int64_t n, double s, double shift,
                          double gamma, double beta)
    void bn_combine_f32(const float *u, const float *v, float *out, int64_t n, float a, float b, float c)
    void bn_combine_f64(const double *u, const double *v, double *out, int64_t n, double a, double b,
                        double c)


cdef inline void _slice_stats(const floating* x, Py_ssize_t n, double* total, double* m2) noexcept nogil:
    if floating is float:
        bn_slice_stats_f32(x, n, total, m2)
    else:
        bn_slice_stats_f64(x, n, total, m2)


cdef inline void _slice_sums(const floating* u, const floating* v, Py_ssize_t n, double* sum_u,
                             double* sum_uv) noexcept nogil:
    if floating is float:
        bn_slice_sums_f32(u, v, n, sum_u, sum_uv)
    else:
        bn_slice_sums_f64(u, v, n, sum_u, sum_uv)


cdef inline void _normalize(const floating* x, floating* xhat, floating* y, Py_ssize_t n, floating s,
                            floating shift, floating gamma, floating beta) noexcept nogil:
    if floating is float:
        bn_normalize_f32(x, xhat, y, n, s, shift, gamma, beta)
    else:
        bn_normalize_f64(x, xhat, y, n, s, shift, gamma, beta)


cdef inline void _combine(const floating* u, const floating* v, floating* out, Py_ssize_t n,
                          floating a, floating b, floating c) noexcept nogil:
    if floating is float:
        bn_combine_f32(u, v, out, n, a, b, c)
    else:
        bn_combine_f64(u, v, out, n, a, b, c)


def forward(const floating[:, :, ::1] x, const floating[::1] gamma, const floating[::1] beta,
            double[::1] mean, double[::1] var, double eps, bint training,
            floating[:, :, ::1] xhat, floating[:, :, ::1] y, floating[::1] inv_std,
            bint parallel=True):
    """y and xhat (N, C, L) from x; in training, mean and var (C,) are computed (biased
    variance) and written, else they are read (the running statistics). inv_std (C,) out."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2]
    cdef Py_ssize_t c, n
    cdef double total, m2, d, s
    cdef double[:, :, ::1] part = np.empty((2, N, C))
    cdef double[::1] shift = np.empty(C)
    cdef bint threaded = parallel and N > 1
    if training:
        for n in prange(N, nogil=True, schedule="static", use_threads_if=threaded):
            for c in range(C):
                _slice_stats(&x[n, c, 0], L, &part[0, n, c], &part[1, n, c])
        for c in range(C):
            total = 0
            for n in range(N):
                total = total + part[0, n, c]
            mean[c] = total / (N * L)
            m2 = 0
            for n in range(N):
                d = part[0, n, c] / L - mean[c]
                m2 = m2 + (part[1, n, c] + L * (d * d))
            var[c] = m2 / (N * L)
    for c in range(C):
        s = 1.0 / sqrt(var[c] + eps)
        inv_std[c] = <floating>s
        shift[c] = -s * mean[c]
    for n in prange(N, nogil=True, schedule="static", use_threads_if=threaded):
        for c in range(C):
            _normalize(&x[n, c, 0], &xhat[n, c, 0], &y[n, c, 0], L, inv_std[c], <floating>shift[c],
                       gamma[c], beta[c])


def backward(const floating[:, :, ::1] dy, const floating[:, :, ::1] xhat,
             const floating[::1] gamma, const floating[::1] inv_std, bint training,
             floating[:, :, ::1] dx, floating[::1] dgamma, floating[::1] dbeta,
             bint parallel=True):
    """dx (N, C, L), dgamma and dbeta (C,) from dy and the forward pass's xhat, inv_std."""
    cdef Py_ssize_t N = dy.shape[0], C = dy.shape[1], L = dy.shape[2]
    cdef Py_ssize_t c, n
    cdef double sum_dy, sum_dy_xhat, scale, count = N * L
    cdef double[:, :, ::1] part = np.empty((2, N, C))
    cdef double[:, ::1] coef = np.empty((3, C))
    cdef bint threaded = parallel and N > 1
    for n in prange(N, nogil=True, schedule="static", use_threads_if=threaded):
        for c in range(C):
            _slice_sums(&dy[n, c, 0], &xhat[n, c, 0], L, &part[0, n, c], &part[1, n, c])
    for c in range(C):
        sum_dy = 0
        sum_dy_xhat = 0
        for n in range(N):
            sum_dy = sum_dy + part[0, n, c]
            sum_dy_xhat = sum_dy_xhat + part[1, n, c]
        dbeta[c] = <floating>sum_dy
        dgamma[c] = <floating>sum_dy_xhat
        scale = <double>gamma[c] * inv_std[c]
        coef[0, c] = scale
        coef[1, c] = -scale * sum_dy_xhat / count
        coef[2, c] = -scale * sum_dy / count
    for n in prange(N, nogil=True, schedule="static", use_threads_if=threaded):
        for c in range(C):
            if training:
                _combine(&dy[n, c, 0], &xhat[n, c, 0], &dx[n, c, 0], L, <floating>coef[0, c],
                         <floating>coef[1, c], <floating>coef[2, c])
            else:
                _combine(&dy[n, c, 0], NULL, &dx[n, c, 0], L, <floating>coef[0, c], 0, 0)
