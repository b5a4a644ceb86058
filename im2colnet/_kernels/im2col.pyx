# cython: language_level=3
"""im2col and col2im: the selection matrix M of a convolution and its adjoint.

The convolution's GEMM works on the *transposed* column matrix
    cols_t = phi(x)^T,  shape (C*kh*kw, nb*R*Wo),
for a block of ``nb`` samples starting at sample ``n0`` and their output rows
``i0 <= i < i1`` (R = i1 - i0; a block is whole samples, or rows of a single
sample too large to fit the workspace): row ``(c*kh + p)*kw + q`` (one kernel
tap), column ``b*R*Wo + (i - i0)*Wo + j`` (one output pixel of sample ``n0 + b``)
holds
    x[n0 + b, c, i*sh - pt + p*dh, j*sw - pl + q*dw]      (0 outside the image).
In this layout one (tap, output row) is a contiguous run of Wo values read
from one input row with stride sw: a plain copy when sw == 1. (Caffe's layout;
the public ``im2col`` returns its transpose as a view.)

Each (sample, channel) pair is one task of a ``prange`` loop: it writes the
kh*kw rows of its channel inside its sample's column block (im2col), or its
own input plane (col2im), so no two threads ever write one element.

These functions trust their arguments (array shapes that match the geometry,
``n0 + nb <= N``): call them through :mod:`im2colnet.functional.conv`, which
validates everything first. Any padding is allowed, negative (crop) included:
every read and write is inside the ranges computed by first_inside/end_inside (window.pxd).
"""
from cython.parallel cimport prange
from .window cimport end_inside, first_inside, floating
from libc.string cimport memcpy, memset


cdef void _im2col_plane_runs(const floating* x, floating* out, Py_ssize_t row_stride,
                             Py_ssize_t H, Py_ssize_t W, Py_ssize_t i0, Py_ssize_t i1,
                             Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t dh, Py_ssize_t dw,
                             Py_ssize_t pt, Py_ssize_t pl) noexcept nogil:
    """_im2col_plane for stride 1 and an output as wide as the input (Wo == W, e.g. 3x3
    with padding 1): output pixel (i, j) of tap (p, q) reads x[i + r_off, j + c_off],
    so the tap's rows are one contiguous run of x shifted by r_off*W + c_off, copied
    with one memcpy. The run also carries the |c_off| cells per row that wrap around
    from the neighbouring input row; they lie where the output reads padding and are
    overwritten with 0 afterwards. The run is clipped to the plane first, so nothing
    outside x is read (the clipped cells are such padding cells too).
    """
    cdef Py_ssize_t p, q, i, j, r_off, c_off, i_lo, i_hi, j_lo, j_hi, src, dst, count
    cdef floating* tap
    cdef floating* row
    for p in range(kh):
        r_off = p * dh - pt
        i_lo = first_inside(r_off, 1)
        i_hi = end_inside(r_off, 1, H, i1)
        if i_lo < i0:
            i_lo = i0
        if i_lo > i1:
            i_lo = i1
        if i_hi < i_lo:
            i_hi = i_lo
        for q in range(kw):
            c_off = q * dw - pl
            j_lo = first_inside(c_off, 1)
            j_hi = end_inside(c_off, 1, W, W)
            if j_lo > j_hi:
                j_lo = j_hi
            tap = out + (p * kw + q) * row_stride
            # rows whose input row is padding
            memset(tap, 0, (i_lo - i0) * W * sizeof(floating))
            memset(tap + (i_hi - i0) * W, 0, (i1 - i_hi) * W * sizeof(floating))
            if i_hi == i_lo:
                continue
            dst = (i_lo - i0) * W
            src = (i_lo + r_off) * W + c_off
            count = (i_hi - i_lo) * W
            if src < 0:                  # starts before the plane: padding cells of row i_lo
                dst = dst - src
                count = count + src
                src = 0
            if src + count > H * W:      # ends after it: padding cells of row i_hi - 1
                count = H * W - src
            if count > 0:
                memcpy(tap + dst, x + src, count * sizeof(floating))
            for i in range(i_lo, i_hi):  # the padding columns, wrapped or clipped
                row = tap + (i - i0) * W
                for j in range(j_lo):
                    row[j] = 0
                for j in range(j_hi, W):
                    row[j] = 0


cdef void _im2col_plane(const floating* x, floating* out, Py_ssize_t row_stride,
                        Py_ssize_t H, Py_ssize_t W, Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t Wo,
                        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                        Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t pt, Py_ssize_t pl) noexcept nogil:
    """Output rows i0 <= i < i1 of the kh*kw rows of one channel plane x (H, W).

    Tap (p, q) fills out + (p*kw + q)*row_stride; output pixel (i, j) sits at
    (i - i0)*Wo + j there and reads x[i*sh + (p*dh - pt), j*sw + (q*dw - pl)].
    """
    cdef Py_ssize_t p, q, i, j, r_off, c_off, i_lo, i_hi, j_lo, j_hi, src
    cdef floating* row
    if sh == 1 and sw == 1 and Wo == W:
        _im2col_plane_runs(x, out, row_stride, H, W, i0, i1, kh, kw, dh, dw, pt, pl)
        return
    for p in range(kh):
        r_off = p * dh - pt
        i_lo = first_inside(r_off, sh)
        i_hi = end_inside(r_off, sh, H, i1)
        for q in range(kw):
            c_off = q * dw - pl
            j_hi = end_inside(c_off, sw, W, Wo)
            j_lo = first_inside(c_off, sw)
            if j_lo > j_hi:
                j_lo = j_hi
            for i in range(i0, i1):
                row = out + (p * kw + q) * row_stride + (i - i0) * Wo
                if i < i_lo or i >= i_hi:  # the input row is padding
                    for j in range(Wo):
                        row[j] = 0
                    continue
                src = (i * sh + r_off) * W + c_off  # + j*sw is inside for j in [j_lo, j_hi)
                for j in range(j_lo):
                    row[j] = 0
                if sw == 1:  # a contiguous run: the compiler vectorises this copy
                    for j in range(j_lo, j_hi):
                        row[j] = x[src + j]
                elif sw == 2:
                    # the stride as a constant lets the compiler vectorise this copy too
                    for j in range(j_lo, j_hi):
                        row[j] = x[src + 2 * j]
                else:
                    for j in range(j_lo, j_hi):
                        row[j] = x[src + j * sw]
                for j in range(j_hi, Wo):
                    row[j] = 0


cdef void _col2im_plane(const floating* cols, Py_ssize_t row_stride, floating* dx,
                        Py_ssize_t H, Py_ssize_t W, Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t Wo,
                        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                        Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t pt, Py_ssize_t pl) noexcept nogil:
    """The adjoint of _im2col_plane for output rows [i0, i1): their entries are added back into dx (H, W).

    Entries that im2col read from the same input cell add up; padding entries
    are dropped. The chunk that starts at row 0 first clears the plane, so the
    chunks of one sample, run in order, leave the whole adjoint in dx.
    """
    cdef Py_ssize_t p, q, i, j, r_off, c_off, i_lo, i_hi, j_lo, j_hi, dst
    cdef const floating* row
    if i0 == 0:
        memset(dx, 0, H * W * sizeof(floating))
    for p in range(kh):
        r_off = p * dh - pt
        i_lo = first_inside(r_off, sh)
        i_hi = end_inside(r_off, sh, H, i1)
        if i_lo < i0:
            i_lo = i0
        for q in range(kw):
            c_off = q * dw - pl
            j_hi = end_inside(c_off, sw, W, Wo)
            j_lo = first_inside(c_off, sw)
            for i in range(i_lo, i_hi):
                row = cols + (p * kw + q) * row_stride + (i - i0) * Wo
                dst = (i * sh + r_off) * W + c_off
                for j in range(j_lo, j_hi):
                    dx[dst + j * sw] += row[j]


def im2col_t(const floating[:, :, :, ::1] x, Py_ssize_t n0, floating[:, ::1] cols_t,
             Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
             Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t pt, Py_ssize_t pl,
             Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t Wo, bint parallel=True):
    """Fill cols_t (C*kh*kw, nb*(i1-i0)*Wo) with the columns of output rows [i0, i1) of
    samples n0 .. n0+nb-1 (nb = cols_t.shape[1] // ((i1-i0)*Wo)); see the module docstring."""
    cdef Py_ssize_t C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t P = (i1 - i0) * Wo, row_stride = cols_t.shape[1]
    cdef Py_ssize_t nb, task, b, c
    if P <= 0 or row_stride == 0 or C == 0:
        return
    nb = row_stride // P
    for task in prange(nb * C, nogil=True, schedule="static",
                       use_threads_if=parallel and nb * C > 1):
        b = task // C
        c = task % C
        _im2col_plane(&x[n0 + b, c, 0, 0], &cols_t[c * kh * kw, b * P], row_stride,
                      H, W, i0, i1, Wo, kh, kw, sh, sw, dh, dw, pt, pl)


def col2im_t(const floating[:, ::1] cols_t, floating[:, :, :, ::1] dx, Py_ssize_t n0,
             Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
             Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t pt, Py_ssize_t pl,
             Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t Wo, bint parallel=True):
    """The adjoint of im2col_t on the same block: adds M^T cols into dx[n0:n0+nb]
    (overwriting it when i0 == 0; see _col2im_plane)."""
    cdef Py_ssize_t C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t P = (i1 - i0) * Wo, row_stride = cols_t.shape[1]
    cdef Py_ssize_t nb, task, b, c
    if P <= 0 or row_stride == 0 or C == 0 or H == 0 or W == 0:
        return
    nb = row_stride // P
    for task in prange(nb * C, nogil=True, schedule="static",
                       use_threads_if=parallel and nb * C > 1):
        b = task // C
        c = task % C
        _col2im_plane(&cols_t[c * kh * kw, b * P], row_stride, &dx[n0 + b, c, 0, 0],
                      H, W, i0, i1, Wo, kh, kw, sh, sw, dh, dw, pt, pl)
