# cython: language_level=3
"""Matrix products split over our OpenMP threads, each piece one single-threaded
call of the BLAS's ``cblas_sgemm`` / ``cblas_dgemm``.

NumPy's OpenBLAS runs a product on its own thread pool, whose threads sleep
between products; waking one costs tens of microseconds, which a training step
would pay at every product. Running the products on our own OpenMP threads lets
one pool do all the work, and the next kernel or product finds its threads
awake (docs/performance.md).

The BLAS functions are found at run time in the OpenBLAS that NumPy loaded
(``im2colnet.runtime.blas``) and handed over here as addresses. Only the ILP64
interface (64-bit integer arguments, the ``...64_`` symbols NumPy's wheels
ship) is used; without it nothing is registered and the callers use np.matmul.

Each operand is passed as its own (m, k) or (k, n) view, whatever its strides,
with how BLAS reads it: ``trans`` false when its rows are contiguous, true
when its columns are (a transposed array, read as the transpose of a row-major
matrix), and ``ld`` the stride in elements between those rows or columns.
Indexing the view then gives the address of any piece: ``&b[0, n0]`` is where
columns n0.. start, however b is stored. Results are C-contiguous (rows
contiguous, also inside a bigger array for matmul_each).

These functions trust their arguments: call them through :mod:`im2colnet.runtime.gemm`
(matmul, matmul_each, matmul_each_sum), which checks layouts first.
"""
from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.string cimport memset
from .window cimport floating

ctypedef void (*sgemm_t)(int order, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                         float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
                         float beta, float* c, int64_t ldc) noexcept nogil
ctypedef void (*dgemm_t)(int order, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                         double alpha, const double* a, int64_t lda, const double* b, int64_t ldb,
                         double beta, double* c, int64_t ldc) noexcept nogil

cdef enum:
    ROW_MAJOR = 101    # CBLAS_ORDER CblasRowMajor
    NO_TRANS = 111     # CBLAS_TRANSPOSE CblasNoTrans
    TRANS = 112        # CblasTrans
    # Columns of a piece are a multiple of this (64 bytes of float32): the two
    # threads' pieces of a row of C never share a cache line.
    COLUMN_GRAIN = 16

cdef sgemm_t _sgemm = NULL
cdef dgemm_t _dgemm = NULL


def register(size_t sgemm_address, size_t dgemm_address):
    """Use these addresses of ILP64 cblas_sgemm and cblas_dgemm (0, 0 unregisters)."""
    global _sgemm, _dgemm
    if (sgemm_address == 0) != (dgemm_address == 0):
        raise ValueError("register both functions or neither")
    _sgemm = <sgemm_t>sgemm_address
    _dgemm = <dgemm_t>dgemm_address


def registered():
    """True when products can run here (both BLAS functions registered)."""
    return _sgemm != NULL and _dgemm != NULL


cdef inline void _gemm(bint trans_a, bint trans_b, int64_t m, int64_t n, int64_t k,
                       const floating* a, int64_t lda, const floating* b, int64_t ldb,
                       floating beta, floating* c, int64_t ldc) noexcept nogil:
    # c (m, n; row stride ldc) = op(a) op(b) + beta c, one BLAS call on the calling thread
    if floating is float:
        _sgemm(ROW_MAJOR, TRANS if trans_a else NO_TRANS, TRANS if trans_b else NO_TRANS,
               m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc)
    else:
        _dgemm(ROW_MAJOR, TRANS if trans_a else NO_TRANS, TRANS if trans_b else NO_TRANS,
               m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc)


cdef inline Py_ssize_t _piece_end(Py_ssize_t start, Py_ssize_t size, Py_ssize_t total) noexcept nogil:
    # The end of the piece [start, start + size) of [0, total): the last piece is shorter.
    # (A function that wrote start and end through pointers would make prange treat
    # them as shared between the threads: each thread must assign its own.)
    return start + size if start + size < total else total


def matmul_split_columns(const floating[:, :] a, bint trans_a, Py_ssize_t lda,
                         const floating[:, :] b, bint trans_b, Py_ssize_t ldb,
                         floating[:, ::1] c, bint accumulate, int pieces):
    """c (+)= a b, the columns of c cut into `pieces` ranges, one per thread."""
    cdef int64_t m = c.shape[0], n = c.shape[1], k = a.shape[1]
    cdef Py_ssize_t width, piece, n0, n1
    cdef int64_t row
    cdef floating beta = 1 if accumulate else 0
    if m == 0 or n == 0:
        return
    width = (n + pieces - 1) // pieces
    width = (width + COLUMN_GRAIN - 1) // COLUMN_GRAIN * COLUMN_GRAIN
    for piece in prange(pieces, nogil=True, schedule="static", num_threads=pieces,
                        use_threads_if=pieces > 1):
        n0 = piece * width
        n1 = _piece_end(n0, width, n)
        if n1 <= n0:
            continue
        if k == 0:  # an empty sum: c = beta c
            if not accumulate:
                for row in range(m):
                    memset(&c[row, n0], 0, (n1 - n0) * sizeof(floating))
            continue
        _gemm(trans_a, trans_b, m, n1 - n0, k, &a[0, 0], lda, &b[0, n0], ldb,
              beta, &c[0, n0], c.shape[1])


def matmul_split_sum(const floating[:, :] a, bint trans_a, Py_ssize_t lda,
                     const floating[:, :] b, bint trans_b, Py_ssize_t ldb,
                     floating[:, :, ::1] partial):
    """partial[p] = a[:, K_p] b[K_p, :] for `pieces` = partial.shape[0] ranges K_p of the
    inner dimension; the caller adds the pieces up (their sum is a b).

    For products with a long inner dimension and a small result (a weight gradient).
    """
    cdef int pieces = partial.shape[0]
    cdef int64_t m = partial.shape[1], n = partial.shape[2], k = a.shape[1]
    cdef Py_ssize_t depth, piece, k0, k1
    if m == 0 or n == 0:
        return
    depth = (k + pieces - 1) // pieces
    for piece in prange(pieces, nogil=True, schedule="static", num_threads=pieces,
                        use_threads_if=pieces > 1):
        k0 = piece * depth
        k1 = _piece_end(k0, depth, k)
        if k1 <= k0:  # nothing of the sum falls in this piece
            memset(&partial[piece, 0, 0], 0, m * n * sizeof(floating))
            continue
        _gemm(trans_a, trans_b, m, n, k1 - k0, &a[0, k0], lda, &b[k0, 0], ldb,
              0, &partial[piece, 0, 0], n)


def matmul_each(const floating[:, :] a, bint trans_a, Py_ssize_t lda,
                const floating[:, :, :] b, bint trans_b, Py_ssize_t ldb,
                floating[:, :, :] c, Py_ssize_t ldc):
    """c[s] = a b[s] for every s, the samples s split over the threads.

    c's rows are contiguous with stride ldc: NCHW activations and column blocks are
    read and written in place, without a layout copy.
    """
    cdef Py_ssize_t samples = c.shape[0], s
    cdef int64_t m = c.shape[1], n = c.shape[2], row
    cdef int64_t k = a.shape[1]
    if samples == 0 or m == 0 or n == 0:
        return
    for s in prange(samples, nogil=True, schedule="static", use_threads_if=samples > 1):
        if k == 0:
            for row in range(m):
                memset(&c[s, row, 0], 0, n * sizeof(floating))
        else:
            _gemm(trans_a, trans_b, m, n, k, &a[0, 0], lda, &b[s, 0, 0], ldb,
                  0, &c[s, 0, 0], ldc)


def matmul_each_sum(const floating[:, :, :] a, bint trans_a, Py_ssize_t lda,
                    const floating[:, :, :] b, bint trans_b, Py_ssize_t ldb,
                    floating[:, :, ::1] partial):
    """partial[p] = sum over the samples s of piece p of a[s] b[s]; the pieces are
    partial.shape[0] fixed ranges of consecutive samples (the caller adds them up).

    """
    cdef int pieces = partial.shape[0]
    cdef Py_ssize_t samples = a.shape[0], size, piece, s, s0, s1
    cdef int64_t m = partial.shape[1], n = partial.shape[2]
    cdef int64_t k = a.shape[2]
    if m == 0 or n == 0:
        return
    size = (samples + pieces - 1) // pieces
    for piece in prange(pieces, nogil=True, schedule="static", num_threads=pieces,
                        use_threads_if=pieces > 1):
        memset(&partial[piece, 0, 0], 0, m * n * sizeof(floating))
        s0 = piece * size
        s1 = _piece_end(s0, size, samples)
        if k == 0:
            continue
        for s in range(s0, s1):
            _gemm(trans_a, trans_b, m, n, k, &a[s, 0, 0], lda, &b[s, 0, 0], ldb,
                  1, &partial[piece, 0, 0], n)
