# cython: language_level=3
"""Direct convolution: the definition as loops, no im2col, no BLAS.

    Conv_F:    y[n,k,i,j]  = sum_{c,p,q} w[k,c,p,q] x[n, c, i*sh - pt + p*dh, j*sw - pl + q*dw]
    Conv_BF:   dx[n,c,r,s] = sum_{k,p,q,i,j : r = i*sh - pt + p*dh, s = j*sw - pl + q*dw} w[k,c,p,q] dy[n,k,i,j]
    Conv_grad: dw[k,c,p,q] = sum_{n,i,j} dy[n,k,i,j] x[n, c, i*sh - pt + p*dh, j*sw - pl + q*dw]

It is the reference the im2col path is tested against and the baseline it is
benchmarked against, so it is written plainly but not slowly: the innermost
loop runs over the output columns j that read inside the image (no branch per
pixel), which the compiler vectorises for stride 1.

Each ``prange`` task owns what it writes: one (n, k) output plane (forward),
one (n, c) input-gradient plane (backward data), one (k, c) kernel slice
(backward weights).

``groups=G`` splits the C input and K output channels into G consecutive groups:
kernel k sees only the C/G channels of its group, w is (K, C/G, kh, kw), and c in
the formulas above runs over k's group (w's channel index is c - g*C/G).

The wrappers in :mod:`im2colnet.functional.conv` validate
every shape first; any padding, negative (crop) included, stays in bounds
through the ranges of first_inside/end_inside (window.pxd).
"""
from cython.parallel cimport prange
from .window cimport end_inside, first_inside, floating
from libc.string cimport memset


cdef int _check_groups(Py_ssize_t groups, Py_ssize_t K, Py_ssize_t Cg, Py_ssize_t C) except -1:
    """The kernels' own guard (the wrappers check first): G >= 1 divides K, and C = G * C/G."""
    if groups < 1 or K % groups or Cg * groups != C:
        raise ValueError(f"groups {groups} does not split {K} kernels of {Cg} channels over {C} channels")
    return 0


def conv_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                 floating[:, :, :, ::1] y,
                 Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                 Py_ssize_t pt, Py_ssize_t pl, bint parallel=True, Py_ssize_t groups=1):
    """Conv_F: y (N, K, Ho, Wo) += x (N, C, H, W) correlated with w (K, C/groups, kh, kw).

    Accumulates into y, which the caller fills with the bias (or zeros).
    """
    cdef Py_ssize_t N = x.shape[0], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = w.shape[0], Cg = w.shape[1], kh = w.shape[2], kw = w.shape[3]
    cdef Py_ssize_t Kg = K // groups
    cdef Py_ssize_t Ho = y.shape[2], Wo = y.shape[3]
    cdef Py_ssize_t task, n, k, c, c0, p, q, i, j, r_off, c_off, i_lo, i_hi, j_lo, j_hi, src
    cdef floating weight
    cdef floating* out
    cdef const floating* plane
    _check_groups(groups, K, Cg, x.shape[1])
    if N * K == 0 or Ho * Wo == 0:
        return
    for task in prange(N * K, nogil=True, schedule="static", use_threads_if=parallel and N * K > 1):
        n = task // K
        k = task % K
        out = &y[n, k, 0, 0]
        c0 = k // Kg * Cg
        for c in range(Cg):
            plane = &x[n, c0 + c, 0, 0]
            for p in range(kh):
                r_off = p * dh - pt
                i_lo = first_inside(r_off, sh)
                i_hi = end_inside(r_off, sh, H, Ho)
                for q in range(kw):
                    c_off = q * dw - pl
                    j_lo = first_inside(c_off, sw)
                    j_hi = end_inside(c_off, sw, W, Wo)
                    weight = w[k, c, p, q]
                    for i in range(i_lo, i_hi):
                        src = (i * sh + r_off) * W + c_off
                        for j in range(j_lo, j_hi):
                            out[i * Wo + j] += weight * plane[src + j * sw]


def conv_backward_data(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] w,
                       floating[:, :, :, ::1] dx,
                       Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                       Py_ssize_t pt, Py_ssize_t pl, bint parallel=True, Py_ssize_t groups=1):
    """Conv_BF: overwrite dx (N, C, H, W) with the adjoint of conv_forward applied to dy (N, K, Ho, Wo)."""
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t K = w.shape[0], Cg = w.shape[1], kh = w.shape[2], kw = w.shape[3]
    cdef Py_ssize_t Kg = K // groups
    cdef Py_ssize_t Ho = dy.shape[2], Wo = dy.shape[3]
    cdef Py_ssize_t task, n, k, k0, c, cl, p, q, i, j, r_off, c_off, i_lo, i_hi, j_lo, j_hi, dst
    cdef floating weight
    cdef floating* plane
    cdef const floating* grad
    _check_groups(groups, K, Cg, C)
    if N * C == 0 or H * W == 0:
        return
    for task in prange(N * C, nogil=True, schedule="static", use_threads_if=parallel and N * C > 1):
        n = task // C
        c = task % C
        plane = &dx[n, c, 0, 0]
        memset(plane, 0, H * W * sizeof(floating))
        k0 = c // Cg * Kg      # the group's first kernel
        cl = c - c // Cg * Cg  # c's index within its group
        for k in range(k0, k0 + Kg if Ho * Wo > 0 else k0):
            grad = &dy[n, k, 0, 0]
            for p in range(kh):
                r_off = p * dh - pt
                i_lo = first_inside(r_off, sh)
                i_hi = end_inside(r_off, sh, H, Ho)
                for q in range(kw):
                    c_off = q * dw - pl
                    j_lo = first_inside(c_off, sw)
                    j_hi = end_inside(c_off, sw, W, Wo)
                    weight = w[k, cl, p, q]
                    for i in range(i_lo, i_hi):
                        dst = (i * sh + r_off) * W + c_off
                        for j in range(j_lo, j_hi):
                            plane[dst + j * sw] += weight * grad[i * Wo + j]


def conv_backward_weights(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] x,
                          floating[:, :, :, ::1] dw_out,
                          Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                          Py_ssize_t pt, Py_ssize_t pl, bint parallel=True, Py_ssize_t groups=1):
    """Conv_grad: overwrite dw_out (K, C/groups, kh, kw) with sum_{n,i,j} dy[n,k,i,j] x[n, c, r, s].

    Each tap's sum runs in double precision (it adds N*Ho*Wo products).
    """
    cdef Py_ssize_t N = x.shape[0], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = dw_out.shape[0], C = dw_out.shape[1], kh = dw_out.shape[2], kw = dw_out.shape[3]
    cdef Py_ssize_t Kg = K // groups
    cdef Py_ssize_t Ho = dy.shape[2], Wo = dy.shape[3]
    cdef Py_ssize_t task, n, k, c, c0, p, q, i, j, r_off, c_off, i_lo, i_hi, j_lo, j_hi, src
    cdef double total
    cdef const floating* plane
    cdef const floating* grad
    _check_groups(groups, K, C, x.shape[1])
    if K * C == 0 or kh * kw == 0:
        return
    for task in prange(K * C, nogil=True, schedule="static", use_threads_if=parallel and K * C > 1):
        k = task // C
        c = task % C
        c0 = k // Kg * C
        for p in range(kh):
            r_off = p * dh - pt
            i_lo = first_inside(r_off, sh)
            i_hi = end_inside(r_off, sh, H, Ho)
            for q in range(kw):
                c_off = q * dw - pl
                j_lo = first_inside(c_off, sw)
                j_hi = end_inside(c_off, sw, W, Wo)
                total = 0.0
                for n in range(N):
                    plane = &x[n, c0 + c, 0, 0]
                    grad = &dy[n, k, 0, 0]
                    for i in range(i_lo, i_hi):
                        src = (i * sh + r_off) * W + c_off
                        for j in range(j_lo, j_hi):
                            total = total + grad[i * Wo + j] * plane[src + j * sw]
                dw_out[k, c, p, q] = <floating>total
