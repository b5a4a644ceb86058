# cython: language_level=3
"""ReLU and LeakyReLU kernels over flat C-contiguous memory.

The arrays are cut into blocks of BLOCK elements; blocks run in a ``prange``
loop (each block is written by one thread) when ``parallel`` is true, else on
the calling thread. The wrappers in :mod:`im2colnet.functional.activation`
make the inputs contiguous and the outputs the right size first, and ask
:func:`im2colnet.runtime.threads.threads_worth` whether the array is worth the threads.
"""
from cython.parallel cimport prange
from .window cimport floating

# Elements per parallel block (256 KiB of float32): big enough to hide the
# cost of handing a block to a thread, small enough to split typical activations.
cdef enum:
    BLOCK = 65536


cdef inline void _relu_block(const floating* x, floating* y, Py_ssize_t n) noexcept nogil:
    # y = max(0, x); a NaN passes through (it is not <= 0), as in max(0, x).
    cdef Py_ssize_t k
    for k in range(n):
        y[k] = 0 if x[k] <= 0 else x[k]


cdef inline void _relu_backward_block(const floating* dy, const floating* x, floating* dx,
                                      Py_ssize_t n) noexcept nogil:
    # dx = dy where x > 0, else 0 (also at x == 0 and for NaN x). dy is read
    # unconditionally so the compiler can turn the branch into a vector select.
    cdef Py_ssize_t k
    cdef floating g
    for k in range(n):
        g = dy[k]
        dx[k] = g if x[k] > 0 else 0


def relu_forward(const floating[::1] x, floating[::1] y, bint parallel=True):
    """y = max(0, x) elementwise; x, y flat arrays of one length (y may be x's copy)."""
    cdef Py_ssize_t n = x.shape[0], blocks = (n + BLOCK - 1) // BLOCK, b, start
    if n == 0:
        return
    for b in prange(blocks, nogil=True, schedule="static", use_threads_if=parallel and blocks > 1):
        start = b * BLOCK
        _relu_block(&x[start], &y[start], BLOCK if start + BLOCK <= n else n - start)


def relu_backward(const floating[::1] dy, const floating[::1] x, floating[::1] dx, bint parallel=True):
    """dx = dy * (x > 0) elementwise; dy, x, dx flat arrays of one length."""
    cdef Py_ssize_t n = x.shape[0], blocks = (n + BLOCK - 1) // BLOCK, b, start
    if n == 0:
        return
    for b in prange(blocks, nogil=True, schedule="static", use_threads_if=parallel and blocks > 1):
        start = b * BLOCK
        _relu_backward_block(&dy[start], &x[start], &dx[start],
                             BLOCK if start + BLOCK <= n else n - start)


# ------------------------------------------------------------------ LeakyReLU

cdef inline void _leaky_relu_block(const floating* x, floating* y, Py_ssize_t n,
                                   floating slope) noexcept nogil:
    # y = x for x > 0, slope * x otherwise; a NaN stays NaN (slope * NaN).
    cdef Py_ssize_t k
    cdef floating v
    for k in range(n):
        v = x[k]
        y[k] = v if v > 0 else slope * v


cdef inline void _leaky_relu_backward_block(const floating* dy, const floating* x, floating* dx,
                                            Py_ssize_t n, floating slope) noexcept nogil:
    # dx = dy where x > 0, slope * dy otherwise (at x == 0 too, as PyTorch).
    cdef Py_ssize_t k
    cdef floating g
    for k in range(n):
        g = dy[k]
        dx[k] = g if x[k] > 0 else slope * g


def leaky_relu_forward(const floating[::1] x, floating[::1] y, double negative_slope,
                       bint parallel=True):
    """y = x if x > 0 else negative_slope * x, elementwise; x, y flat arrays of one length."""
    cdef Py_ssize_t n = x.shape[0], blocks = (n + BLOCK - 1) // BLOCK, b, start
    cdef floating slope = <floating>negative_slope
    if n == 0:
        return
    for b in prange(blocks, nogil=True, schedule="static", use_threads_if=parallel and blocks > 1):
        start = b * BLOCK
        _leaky_relu_block(&x[start], &y[start], BLOCK if start + BLOCK <= n else n - start, slope)


def leaky_relu_backward(const floating[::1] dy, const floating[::1] x, floating[::1] dx,
                        double negative_slope, bint parallel=True):
    """dx = dy if x > 0 else negative_slope * dy, elementwise; flat arrays of one length."""
    cdef Py_ssize_t n = x.shape[0], blocks = (n + BLOCK - 1) // BLOCK, b, start
    cdef floating slope = <floating>negative_slope
    if n == 0:
        return
    for b in prange(blocks, nogil=True, schedule="static", use_threads_if=parallel and blocks > 1):
        start = b * BLOCK
        _leaky_relu_backward_block(&dy[start], &x[start], &dx[start],
                                   BLOCK if start + BLOCK <= n else n - start, slope)
