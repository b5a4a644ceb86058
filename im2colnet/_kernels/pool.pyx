# cython: language_level=3
"""Pooling kernels: max pooling (with the winner's flat index) and average pooling.

Every function works on whole (N, C, H, W) arrays and runs one (sample, channel)
plane per iteration of a ``prange`` loop: a plane's outputs and its input
gradient belong to one thread, so no two threads ever write one element.
``parallel=False`` runs the same loops on the calling thread: the wrappers pass
it for max pooling of too little work (im2colnet.runtime.threads.threads_worth).

These functions trust their arguments (window geometry that keeps every window
inside the padded input, output arrays of the right shapes), except the winner
indices of the max backward, which it checks as it uses them. Call them
through :mod:`im2colnet.functional.pool`, which validates all of that first.

Window (i, j) of a plane covers input rows ``i*sh - pt + p*dh`` (p < kh) and
columns ``j*sw - pl + q*dw`` (q < kw); dilation (dh, dw) is 1 for average
pooling. Cells outside the image are padding (-inf for max, 0 for average)
and are never read; with ceil_mode a last window may also reach past the
bottom/right padding (cells that do not count at all).
"""
cimport cython
from cython.parallel cimport prange
from .window cimport end_inside, first_inside, floating
from libc.stdint cimport int64_t
from libc.string cimport memset


cdef inline Py_ssize_t _imax(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a > b else b


cdef inline Py_ssize_t _imin(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a < b else b


cdef inline bint _beats(floating v, floating best) noexcept nogil:
    """Does v replace the running maximum best?

    Strict '>' keeps the first maximum in row-major window order (the ties
    rule); a NaN beats every number and is then kept, so NaN propagates.
    Bitwise operators, not 'or'/'and': no branches, so loops can vectorise.
    """
    return (v > best) | ((v != v) & (best == best))


# ---------------------------------------------------------------- max, forward

cdef inline Py_ssize_t _window_argmax(const floating* x, Py_ssize_t W,
                                      Py_ssize_t r0, Py_ssize_t p_lo, Py_ssize_t p_hi, Py_ssize_t dh,
                                      Py_ssize_t c0, Py_ssize_t q_lo, Py_ssize_t q_hi,
                                      Py_ssize_t dw) noexcept nogil:
    """Flat index of the first maximum (by _beats) of the cells (r0 + p*dh, c0 + q*dw),
    p in [p_lo, p_hi), q in [q_lo, q_hi).

    The window must hold at least one cell (the validated geometry ensures it).
    """
    cdef Py_ssize_t p, q, at, best_at = (r0 + p_lo * dh) * W + c0 + q_lo * dw
    cdef floating best = x[best_at]
    for p in range(p_lo, p_hi):
        for q in range(q_lo, q_hi):
            at = (r0 + p * dh) * W + c0 + q * dw
            if _beats(x[at], best):
                best = x[at]
                best_at = at
    return best_at


cdef void _maxpool_plane(const floating* x, floating* y, int64_t* path,
                         Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo,
                         Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                         Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t pt, Py_ssize_t pl) noexcept nogil:
    """The general kernel (the source of truth): any window, stride, dilation and padding.

    Window (i, j) is clipped to the image (taps p in [first_inside, end_inside) of
    the tap index, see window.pxd); padding (-inf) never wins.
    """
    cdef Py_ssize_t i, j, at, r0, c0
    for i in range(Ho):
        r0 = i * sh - pt
        for j in range(Wo):
            c0 = j * sw - pl
            at = _window_argmax(x, W, r0, first_inside(r0, dh), end_inside(r0, dh, H, kh), dh,
                                c0, first_inside(c0, dw), end_inside(c0, dw, W, kw), dw)
            y[i * Wo + j] = x[at]
            path[i * Wo + j] = at


cdef enum:
    CHUNK = 256  # outputs per step of the 2x2 kernel (its scratch rows live on the stack)


cdef inline floating _later_if_greater(floating first, floating later) noexcept nogil:
    # The larger value, the earlier one on ties: the ties rule for two cells in order.
    return later if later > first else first


cdef void _maxpool2x2_plane(const floating* x, floating* y, int64_t* path,
                            Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    """The hot case 2x2, stride 2, no padding, in loops the compiler vectorises.

    For candidates a b / c d: upper = first max of (a, b), lower = first max of
    (c, d), and lower wins only if strictly greater -- the first maximum in
    row-major order, as in the general kernel. The winner's offset in the
    window (0, 1, W or W + 1) is built from 0/1 comparison results with
    arithmetic instead of branches (exact in floating point for W < 2**24,
    which the caller ensures). Comparisons with NaN do not follow the ties
    rule, so windows holding a NaN or an infinity (flagged by 0*(a+b+c+d),
    NaN exactly then) are redone by _window_argmax.
    """
    cdef floating offset[CHUNK]
    cdef floating flag[CHUNK]
    cdef Py_ssize_t i, j, chunk, j0, n, unusual, at
    cdef const floating* top
    cdef const floating* bottom
    cdef floating a, b, c, d, upper, lower, b_wins, d_wins, lower_wins
    cdef floating width = W
    for i in range(Ho):
        top = x + 2 * i * W
        bottom = top + W
        for chunk in range((Wo + CHUNK - 1) // CHUNK):
            j0 = chunk * CHUNK
            n = _imin(CHUNK, Wo - j0)
            for j in range(n):
                a = top[2 * (j0 + j)]
                b = top[2 * (j0 + j) + 1]
                c = bottom[2 * (j0 + j)]
                d = bottom[2 * (j0 + j) + 1]
                upper = _later_if_greater(a, b)
                lower = _later_if_greater(c, d)
                b_wins = <floating>(b > a)
                d_wins = <floating>(d > c)
                lower_wins = <floating>(lower > upper)
                y[i * Wo + j0 + j] = _later_if_greater(upper, lower)
                offset[j] = b_wins + lower_wins * (width + d_wins - b_wins)
                flag[j] = 0 * (a + b + c + d)
            unusual = 0
            for j in range(n):
                unusual += flag[j] != flag[j]
                path[i * Wo + j0 + j] = 2 * i * W + 2 * (j0 + j) + <Py_ssize_t>offset[j]
            if unusual:
                for j in range(n):
                    if flag[j] != flag[j]:
                        at = _window_argmax(x, W, 2 * i, 0, 2, 1, 2 * (j0 + j), 0, 2, 1)
                        y[i * Wo + j0 + j] = x[at]
                        path[i * Wo + j0 + j] = at


def maxpool_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] y,
                    int64_t[:, :, :, ::1] path,
                    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                    Py_ssize_t pt, Py_ssize_t pl, bint specialise=True,
                    bint parallel=True, Py_ssize_t dh=1, Py_ssize_t dw=1):
    """y[n, c, i, j] = max of window (i, j); path[n, c, i, j] = its flat index r*W + c.

    x: (N, C, H, W); y, path: (N, C, Ho, Wo), filled in place; (dh, dw) the dilation.
    specialise=False forces the general kernel (the tests compare the two).
    """
    cdef Py_ssize_t C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t Ho = y.shape[2], Wo = y.shape[3]
    cdef Py_ssize_t plane, n, c, planes = x.shape[0] * C
    # The 2x2 kernel reads rows 2i, 2i+1 and columns 2j, 2j+1 unclipped: only when
    # every window lies inside the image (bottom/right padding may add a window that does not).
    cdef bint fast = (specialise and kh == 2 and kw == 2 and sh == 2 and sw == 2
                      and dh == 1 and dw == 1
                      and pt == 0 and pl == 0 and 2 * Ho <= H and 2 * Wo <= W
                      and W < (1 << 24))
    if planes == 0 or Ho == 0 or Wo == 0:
        return
    for plane in prange(planes, nogil=True, schedule="static",
                        use_threads_if=parallel and planes > 1):
        n = plane // C
        c = plane % C
        if fast:
            _maxpool2x2_plane(&x[n, c, 0, 0], &y[n, c, 0, 0], &path[n, c, 0, 0], W, Ho, Wo)
        else:
            _maxpool_plane(&x[n, c, 0, 0], &y[n, c, 0, 0], &path[n, c, 0, 0],
                           H, W, Ho, Wo, kh, kw, sh, sw, dh, dw, pt, pl)


# --------------------------------------------------------------- max, backward

def maxpool_backward(const floating[:, ::1] dy, const int64_t[:, ::1] path,
                     floating[:, ::1] dx, bint parallel=True):
    """dx[plane, path[plane, o]] += dy[plane, o]: the scatter of dy to the winners.

    dy, path: (planes, Ho*Wo) with planes = N*C; dx: (planes, H*W), overwritten.
    Overlapping windows that share a winner add up. An index outside [0, H*W)
    is skipped, never written, and counted: the count is returned, and the
    caller rejects the call unless it is 0 (checking here, as each index is
    used, saves a separate pass over the path tensor).
    """
    cdef Py_ssize_t planes = dy.shape[0], outs = dy.shape[1], size = dx.shape[1]
    cdef Py_ssize_t plane, o, bad = 0
    cdef int64_t at
    cdef floating* dx_plane
    cdef const floating* dy_plane
    cdef const int64_t* path_plane
    if planes == 0 or outs == 0 or size == 0:
        return 0
    for plane in prange(planes, nogil=True, schedule="static",
                        use_threads_if=parallel and planes > 1):
        dx_plane = &dx[plane, 0]
        dy_plane = &dy[plane, 0]
        path_plane = &path[plane, 0]
        memset(dx_plane, 0, size * sizeof(floating))
        for o in range(outs):
            at = path_plane[o]
            if at < 0 or at >= size:
                bad += 1
            else:
                dx_plane[at] += dy_plane[o]
    return bad


# ------------------------------------------------------------ average pooling

cdef inline Py_ssize_t _divisor(Py_ssize_t start, Py_ssize_t k, Py_ssize_t size,
                                Py_ssize_t pad_end, bint count_include_pad) noexcept nogil:
    """The cells of a window along one axis that count in the average.

    count_include_pad: the window clipped to the padded input [-pad_start, size + pad_end)
    (only a ceil_mode window reaches past it); else clipped to the image [0, size).
    """
    if count_include_pad:
        return _imin(start + k, size + pad_end) - start
    return _imin(start + k, size) - _imax(start, 0)


cdef void _avgpool_plane(const floating* x, floating* y,
                         Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo,
                         Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                         Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t pb, Py_ssize_t pr,
                         bint count_include_pad) noexcept nogil:
    # y = (sum of the window's image cells) / (its cells that count, see _divisor):
    # padding adds 0 to the sum.
    cdef Py_ssize_t i, j, r, c, r0, c0
    cdef double total
    for i in range(Ho):
        r0 = i * sh - pt
        for j in range(Wo):
            c0 = j * sw - pl
            total = 0.0
            for r in range(_imax(r0, 0), _imin(r0 + kh, H)):
                for c in range(_imax(c0, 0), _imin(c0 + kw, W)):
                    total = total + x[r * W + c]
            y[i * Wo + j] = <floating>(total / (_divisor(r0, kh, H, pb, count_include_pad)
                                                * _divisor(c0, kw, W, pr, count_include_pad)))


cdef void _avgpool_backward_plane(const floating* dy, floating* dx,
                                  Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo,
                                  Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                                  Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t pb, Py_ssize_t pr,
                                  bint count_include_pad) noexcept nogil:
    # The adjoint of _avgpool_plane: each window spreads dy / divisor over its image cells.
    cdef Py_ssize_t i, j, r, c, r0, c0
    cdef floating share
    memset(dx, 0, H * W * sizeof(floating))
    for i in range(Ho):
        r0 = i * sh - pt
        for j in range(Wo):
            c0 = j * sw - pl
            share = <floating>(dy[i * Wo + j] / <double>(
                _divisor(r0, kh, H, pb, count_include_pad) * _divisor(c0, kw, W, pr, count_include_pad)))
            for r in range(_imax(r0, 0), _imin(r0 + kh, H)):
                for c in range(_imax(c0, 0), _imin(c0 + kw, W)):
                    dx[r * W + c] += share


def avgpool_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] y,
                    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                    Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t pb, Py_ssize_t pr,
                    bint count_include_pad=True, bint parallel=True):
    """y[n, c, i, j] = mean of window (i, j), padding as 0. x: (N, C, H, W); y: (N, C, Ho, Wo).

    The divisor is the window's cells inside the padded input (count_include_pad)
    or inside the image (not count_include_pad); every window must hold a cell that counts.
    """
    cdef Py_ssize_t C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t Ho = y.shape[2], Wo = y.shape[3]
    cdef Py_ssize_t plane, n, c, planes = x.shape[0] * C
    if planes == 0 or Ho == 0 or Wo == 0:
        return
    for plane in prange(planes, nogil=True, schedule="static",
                        use_threads_if=parallel and planes > 1):
        n = plane // C
        c = plane % C
        _avgpool_plane(&x[n, c, 0, 0], &y[n, c, 0, 0], H, W, Ho, Wo, kh, kw, sh, sw,
                       pt, pl, pb, pr, count_include_pad)


def avgpool_backward(const floating[:, :, :, ::1] dy, floating[:, :, :, ::1] dx,
                     Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                     Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t pb, Py_ssize_t pr,
                     bint count_include_pad=True, bint parallel=True):
    """dx = adjoint of avgpool_forward applied to dy. dy: (N, C, Ho, Wo); dx: (N, C, H, W), overwritten."""
    cdef Py_ssize_t C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t Ho = dy.shape[2], Wo = dy.shape[3]
    cdef Py_ssize_t plane, n, c, planes = dx.shape[0] * C
    if planes == 0 or H == 0 or W == 0 or Ho == 0 or Wo == 0:
        return
    for plane in prange(planes, nogil=True, schedule="static",
                        use_threads_if=parallel and planes > 1):
        n = plane // C
        c = plane % C
        _avgpool_backward_plane(&dy[n, c, 0, 0], &dx[n, c, 0, 0],
                                H, W, Ho, Wo, kh, kw, sh, sw, pt, pl, pb, pr, count_include_pad)
