# cython: language_level=3
"""The packed convolution GEMM (float32): thin wrappers around csrc/packed_conv.c.

Y^T = C^T phi^T per sample with phi^T packed straight from x one cache-sized panel
at a time (see csrc/packed_conv.c for the blocking, packing and threads) and a
register-tiled micro-kernel of one instruction-set level: "avx512", "avx2" or
"portable", the best this CPU runs unless IM2COLNET_KERNEL names another (read
once, at import) or set_level() chose one.

These functions trust their arguments (C-contiguous float32 arrays whose shapes
match the geometry): call them through im2colnet.functional.conv, which
validates everything first.
"""
import os
import warnings

from libc.stdint cimport int64_t

cdef extern from "packed_gemm.h" nogil:
    ctypedef struct pg_level:
        const char *name
        int mr, nr, dm, dn, pm, pn, bm, bn
    ctypedef struct pg_geom:
        int64_t N, C, H, W, K, kh, kw, sh, sw, dh, dw, pt, pl, Ho, Wo
    void pg_set_cache_bytes(int64_t l1, int64_t l2)
    void pg_set_batch_rule(int rule)
    int pg_batch_applies(const pg_level *lv, const pg_geom *g)
    int pg_best_level()
    const pg_level *pg_level_by_index(int index)
    int pg_forward(const pg_level *lv, const pg_geom *g, const float *x, const float *w,
                   const float *bias, float *y, int threads)
    int pg_forward_adjoint(const pg_level *lv, const pg_geom *g, const float *dy, const float *wf,
                           float *dx, int threads)
    int pg_backward_data(const pg_level *lv, const pg_geom *g, const float *dy, const float *w,
                         float *dx, int threads)
    int pg_backward_weights(const pg_level *lv, const pg_geom *g, const float *dy, const float *x,
                            float *partial, double *bias_partial, int threads)

LEVELS = ("portable", "avx2", "avx512")   # index = the C driver's level number

cdef int _level = pg_best_level()


def supported_levels():
    """The levels this CPU (and this build) can run, slowest first."""
    return LEVELS[:pg_best_level() + 1]


def level():
    """The name of the micro-kernel level in use."""
    return LEVELS[_level]


def set_level(name):
    """Use micro-kernel level `name` from now on (for tests and for chasing a problem);
    returns the previous level's name. A level this CPU cannot run is a ValueError."""
    global _level
    if name not in LEVELS:
        raise ValueError(f"kernel level: expected one of {LEVELS}, got {name!r}")
    if LEVELS.index(name) > pg_best_level():
        raise ValueError(f"kernel level: this CPU (or build) runs only {supported_levels()}, "
                         f"not {name!r}")
    previous = LEVELS[_level]
    _level = LEVELS.index(name)
    return previous


def tiles():
    """{'mr', 'nr', 'dm', 'dn', 'pm', 'pn', 'bm', 'bn'}: the register tiles of the level in
    use (outer product, dot, pixel outer product, batch; 0 where the level has no such kernel)."""
    cdef const pg_level *lv = pg_level_by_index(_level)
    return {"mr": lv.mr, "nr": lv.nr, "dm": lv.dm, "dn": lv.dn, "pm": lv.pm, "pn": lv.pn,
            "bm": lv.bm, "bn": lv.bn}


def _plan_for_caches(Py_ssize_t l1=0, Py_ssize_t l2=0):
    """Plan blocks and tap chunks for these L1/L2 sizes in bytes (0: the machine's): a
    test hook, so small shapes run many blocks, bands and chunks."""
    pg_set_cache_bytes(l1, l2)


def _batch_rule(int rule=0):
    """When the forward runs with the batch in the vector lanes: 0 by the driver's rule, 1
    whenever the level has that kernel, -1 never: a test hook."""
    pg_set_batch_rule(rule)


def _batch_route(tuple x_shape, Py_ssize_t K, tuple window, Py_ssize_t Ho, Py_ssize_t Wo):
    """Whether the forward of this geometry (window as in forward()) takes the batch-lanes
    route on the level in use: a test hook for the driver's rule."""
    cdef pg_geom g = _geometry(x_shape[0], x_shape[1], x_shape[2], x_shape[3], K, window, Ho, Wo)
    return bool(pg_batch_applies(pg_level_by_index(_level), &g))


def _level_from_environment():
    forced = os.environ.get("IM2COLNET_KERNEL", "").strip().lower()
    if forced:
        try:
            set_level(forced)
        except ValueError as exc:
            warnings.warn(f"IM2COLNET_KERNEL={forced!r} ignored: {exc}", RuntimeWarning)


_level_from_environment()


cdef pg_geom _geometry(Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t K,
                       tuple window, Py_ssize_t Ho, Py_ssize_t Wo):
    cdef pg_geom g
    g.N, g.C, g.H, g.W, g.K = N, C, H, W, K
    g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl = window
    g.Ho, g.Wo = Ho, Wo
    return g


def forward(const float[:, :, :, ::1] x, const float[:, ::1] w, const float[::1] b,
            float[:, :, :, ::1] y, tuple window, int threads):
    """y = conv(x, w) + b; window = (kh, kw, sh, sw, dh, dw, pt, pl); b may be None."""
    cdef pg_geom g = _geometry(x.shape[0], x.shape[1], x.shape[2], x.shape[3], w.shape[0],
                               window, y.shape[2], y.shape[3])
    cdef const pg_level *lv = pg_level_by_index(_level)
    cdef const float *bias = NULL if b is None else &b[0]
    cdef int status
    with nogil:
        status = pg_forward(lv, &g, &x[0, 0, 0, 0], &w[0, 0], bias, &y[0, 0, 0, 0], threads)
    if status != 0:
        raise MemoryError("packed convolution: no memory for its panels")


def forward_adjoint(const float[:, :, :, ::1] dy, const float[:, :, :, ::1] w, float[:, :, :, ::1] dx,
                    tuple window, int threads):
    """dx = the stride-1 data gradient as a forward pass of dy with w (K, C, kh, kw), the
    forward's own weights, turned 180 degrees and their channel axes swapped as they are
    packed; window = the adjoint's (functional.conv._adjoint_window)."""
    cdef pg_geom g = _geometry(dy.shape[0], dy.shape[1], dy.shape[2], dy.shape[3], dx.shape[1],
                               window, dx.shape[2], dx.shape[3])
    cdef const pg_level *lv = pg_level_by_index(_level)
    cdef int status
    with nogil:
        status = pg_forward_adjoint(lv, &g, &dy[0, 0, 0, 0], &w[0, 0, 0, 0], &dx[0, 0, 0, 0], threads)
    if status != 0:
        raise MemoryError("packed convolution: no memory for its panels")


def backward_data(const float[:, :, :, ::1] dy, const float[:, ::1] w, float[:, :, :, ::1] dx,
                  tuple window, int threads):
    """dx = col2im(w^T dy)."""
    cdef pg_geom g = _geometry(dx.shape[0], dx.shape[1], dx.shape[2], dx.shape[3], w.shape[0],
                               window, dy.shape[2], dy.shape[3])
    cdef const pg_level *lv = pg_level_by_index(_level)
    cdef int status
    with nogil:
        status = pg_backward_data(lv, &g, &dy[0, 0, 0, 0], &w[0, 0], &dx[0, 0, 0, 0], threads)
    if status != 0:
        raise MemoryError("packed convolution: no memory for its panels")


def backward_weights(const float[:, :, :, ::1] dy, const float[:, :, :, ::1] x,
                     float[:, :, ::1] partial, double[:, ::1] bias_partial, tuple window):
    """partial[t] (K, C*kh*kw) = the weight gradient of the samples thread t took, and
    bias_partial[t] (K) their bias gradient, for partial.shape[0] threads (zero where a thread
    took none); the caller adds them."""
    cdef pg_geom g = _geometry(x.shape[0], x.shape[1], x.shape[2], x.shape[3], dy.shape[1],
                               window, dy.shape[2], dy.shape[3])
    cdef const pg_level *lv = pg_level_by_index(_level)
    cdef int status, threads = partial.shape[0]
    if bias_partial.shape[0] != threads or bias_partial.shape[1] != dy.shape[1]:
        raise ValueError("bias_partial: expected shape (threads, K)")
    with nogil:
        status = pg_backward_weights(lv, &g, &dy[0, 0, 0, 0], &x[0, 0, 0, 0], &partial[0, 0, 0],
                                     &bias_partial[0, 0], threads)
    if status != 0:
        raise MemoryError("packed convolution: no memory for its panels")
