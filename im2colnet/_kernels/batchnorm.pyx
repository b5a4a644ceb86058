# cython: language_level=3
"""Spatial batch normalisation over (N, C, L) arrays (L = H*W): statistics per channel c
over (n, l), one ``prange`` task per sample.

NumPy's expressions for the same formulas pass over the activations about 14
times in the forward and 16 times in the backward (one pass per ufunc and
reduction); these loops pass three and two times, and run the samples on
both cores when ``parallel`` (the wrappers decide: im2colnet.runtime.threads.threads_worth).
Each thread reads whole samples, in memory order; the per-sample sums are added in
sample order afterwards, so the result does not depend on the thread count.
Sums accumulate in double whatever the input dtype; the element-wise steps
run in the input's precision, as NumPy's did.

    forward:  mean = sum(x) / M, var = sum((x - mean)^2) / M  (two passes, exact for
              large means), inv_std = 1 / sqrt(var + eps),
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
from .window cimport floating

import numpy as np


cdef inline double _sum(const floating* a, Py_ssize_t n) noexcept nogil:
    # Four partial sums: no single chain of dependent additions (a 4x faster loop).
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef Py_ssize_t k = 0
    while k + 4 <= n:
        s0 += a[k]
        s1 += a[k + 1]
        s2 += a[k + 2]
        s3 += a[k + 3]
        k += 4
    while k < n:
        s0 += a[k]
        k += 1
    return (s0 + s1) + (s2 + s3)


cdef inline double _sum_squared_deviations(const floating* a, Py_ssize_t n, double m) noexcept nogil:
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0, d0, d1, d2, d3
    cdef Py_ssize_t k = 0
    while k + 4 <= n:
        d0 = a[k] - m
        d1 = a[k + 1] - m
        d2 = a[k + 2] - m
        d3 = a[k + 3] - m
        s0 += d0 * d0
        s1 += d1 * d1
        s2 += d2 * d2
        s3 += d3 * d3
        k += 4
    while k < n:
        d0 = a[k] - m
        s0 += d0 * d0
        k += 1
    return (s0 + s1) + (s2 + s3)


cdef inline double _dot(const floating* a, const floating* b, Py_ssize_t n) noexcept nogil:
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef Py_ssize_t k = 0
    while k + 4 <= n:
        s0 += <double>a[k] * b[k]
        s1 += <double>a[k + 1] * b[k + 1]
        s2 += <double>a[k + 2] * b[k + 2]
        s3 += <double>a[k + 3] * b[k + 3]
        k += 4
    while k < n:
        s0 += <double>a[k] * b[k]
        k += 1
    return (s0 + s1) + (s2 + s3)


cdef inline void _affine(const floating* a, floating* out, Py_ssize_t n,
                         floating scale, floating shift) noexcept nogil:
    # out = scale * a + shift, in the input's precision (a loop the compiler vectorises)
    cdef Py_ssize_t k
    for k in range(n):
        out[k] = scale * a[k] + shift


cdef inline void _affine2(const floating* a, const floating* b, floating* out, Py_ssize_t n,
                          floating sa, floating sb, floating shift) noexcept nogil:
    # out = sa * a + sb * b + shift
    cdef Py_ssize_t k
    for k in range(n):
        out[k] = sa * a[k] + sb * b[k] + shift


def forward(const floating[:, :, ::1] x, const floating[::1] gamma, const floating[::1] beta,
            double[::1] mean, double[::1] var, double eps, bint training,
            floating[:, :, ::1] xhat, floating[:, :, ::1] y, floating[::1] inv_std,
            bint parallel=True):
    """y and xhat (N, C, L) from x; in training, mean and var (C,) are computed (biased
    variance) and written, else they are read (the running statistics). inv_std (C,) out."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2]
    cdef Py_ssize_t c, n
    cdef double total, s
    cdef double[:, ::1] part = np.empty((N, C))
    cdef double[::1] shift = np.empty(C)
    cdef bint threaded = parallel and N > 1
    if training:
        for n in prange(N, nogil=True, schedule="static", use_threads_if=threaded):
            for c in range(C):
                part[n, c] = _sum(&x[n, c, 0], L)
        for c in range(C):
            total = 0
            for n in range(N):
                total = total + part[n, c]
            mean[c] = total / (N * L)
        for n in prange(N, nogil=True, schedule="static", use_threads_if=threaded):
            for c in range(C):
                part[n, c] = _sum_squared_deviations(&x[n, c, 0], L, mean[c])
        for c in range(C):
            total = 0
            for n in range(N):
                total = total + part[n, c]
            var[c] = total / (N * L)
    for c in range(C):
        s = 1.0 / sqrt(var[c] + eps)
        inv_std[c] = <floating>s
        shift[c] = -s * mean[c]
    for n in prange(N, nogil=True, schedule="static", use_threads_if=threaded):
        for c in range(C):
            # xhat = s x - s m;  y = g xhat + b
            _affine(&x[n, c, 0], &xhat[n, c, 0], L, inv_std[c], <floating>shift[c])
            _affine(&xhat[n, c, 0], &y[n, c, 0], L, gamma[c], beta[c])


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
            part[0, n, c] = _sum(&dy[n, c, 0], L)
            part[1, n, c] = _dot(&dy[n, c, 0], &xhat[n, c, 0], L)
    for c in range(C):
        sum_dy = 0
        sum_dy_xhat = 0
        for n in range(N):
            sum_dy = sum_dy + part[0, n, c]
            sum_dy_xhat = sum_dy_xhat + part[1, n, c]
        dbeta[c] = <floating>sum_dy
        dgamma[c] = <floating>sum_dy_xhat
        scale = <double>gamma[c] * inv_std[c]
        # training: dx = scale dy - (scale/M) sum_dy_xhat xhat - (scale/M) sum_dy
        coef[0, c] = scale
        coef[1, c] = -scale * sum_dy_xhat / count
        coef[2, c] = -scale * sum_dy / count
    for n in prange(N, nogil=True, schedule="static", use_threads_if=threaded):
        for c in range(C):
            if training:
                _affine2(&dy[n, c, 0], &xhat[n, c, 0], &dx[n, c, 0], L, <floating>coef[0, c],
                         <floating>coef[1, c], <floating>coef[2, c])
            else:
                _affine(&dy[n, c, 0], &dx[n, c, 0], L, <floating>coef[0, c], 0)
