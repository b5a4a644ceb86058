"""Matrix products on our own OpenMP threads: one single-threaded BLAS call per thread
(_kernels/gemm.pyx), with np.matmul as the fallback when that is not possible."""
import os
import threading

import numpy

from .._kernels import gemm as _gemm_module
from . import threads
from .blas import cblas_gemm_addresses, one_blas_thread, openblas

__all__ = ["matmul", "matmul_each", "matmul_each_sum", "threaded_gemm"]


# Below this many result columns per thread, a product is split along its inner
# dimension instead (a weight gradient: a small result summed over many pixels).
_MIN_COLUMNS_PER_PIECE = 64

_gemm_kernel = None      # the gemm kernel module once registered and checked, else None
_decided = False         # set by the first threaded_gemm() call (the first product)
_decide_lock = threading.Lock()


def _checked_kernel():
    """The gemm kernel with NumPy's ILP64 cblas_?gemm registered, after a few small
    products (both dtypes, both splits, a transposed operand) agreed with np.matmul;
    None (and nothing registered) when that is not possible or they differ."""
    if os.environ.get("IM2COLNET_THREADED_GEMM", "1").strip() == "0" or openblas() is None:
        return None
    addresses = cblas_gemm_addresses()
    if addresses is None:
        return None
    _gemm_module.register(*addresses)
    rng = numpy.random.default_rng(0)
    try:
        for dtype in (numpy.float32, numpy.float64):
            for m, k, n in ((3, 5, 2 * threads.thread_count() * _MIN_COLUMNS_PER_PIECE + 7), (9, 300, 4)):
                a = rng.standard_normal((k, m)).astype(dtype).T   # a transposed operand
                b = rng.standard_normal((k, n)).astype(dtype)
                out = numpy.empty((m, n), dtype)
                if not numpy.allclose(_threaded_matmul(_gemm_module, a, b, out, False), a @ b,
                                      rtol=1e-4, atol=1e-4):
                    raise ArithmeticError(f"threaded {numpy.dtype(dtype).name} product differs")
    except Exception:  # noqa: BLE001 -- any failure: stay on np.matmul
        _gemm_module.register(0, 0)
        return None
    return _gemm_module


def threaded_gemm():
    """True when matmul() runs products on our threads: NumPy's OpenBLAS exports the
    ILP64 CBLAS functions, its thread count can be set to 1 (so that a piece does not
    start OpenBLAS's own threads), a self-check agrees, and IM2COLNET_THREADED_GEMM is
    not 0. Decided at the first call (the first product), not at import."""
    global _gemm_kernel, _decided
    if not _decided:
        with _decide_lock:
            if not _decided:
                _gemm_kernel = _checked_kernel()
                _decided = True
    return _gemm_kernel is not None


def _matrices(x):
    """How BLAS reads the matrices x[..., :, :] in place: (x, transposed, row stride in
    elements) when the rows (or, transposed, the columns) of every matrix are
    contiguous and do not overlap; else the same for a C-contiguous copy of x."""
    item = x.itemsize
    rows, cols = x.shape[-2], x.shape[-1]
    row_step = x.strides[-2] // item if rows > 1 else None
    col_step = x.strides[-1] // item if cols > 1 else None
    if (all(s % item == 0 for s in x.strides)
            and all(s > 0 for s, size in zip(x.strides, x.shape) if size > 1)):
        if col_step in (None, 1) and (row_step is None or row_step >= cols):
            return x, False, max(1, cols, row_step or 1)
        if row_step in (None, 1) and (col_step is None or col_step >= rows):
            return x, True, max(1, rows, col_step or 1)
    return numpy.ascontiguousarray(x), False, max(1, cols)


def matmul(a, b, out, accumulate=False):
    """out = a @ b (out += a @ b with accumulate), returns out.

    a (m, k), b (k, n): 2-D arrays of out's float dtype (any strides: see _matrices);
    out (m, n) C-contiguous. With threaded_gemm(), the product is cut
    into one piece per thread (by columns of out, or for a narrow result along k, the
    pieces then added up in a fixed order), each piece one single-threaded BLAS call
    on an OpenMP thread; else it is np.matmul, on as many BLAS threads as the
    caller's gemm_threads() window allows.
    """
    if not threaded_gemm():  # the caller chose the BLAS's thread count (gemm_threads)
        if accumulate:
            out += a @ b
        else:
            numpy.matmul(a, b, out=out)
        return out
    return _threaded_matmul(_gemm_kernel, a, b, out, accumulate)


def _threaded_matmul(kernel, a, b, out, accumulate):
    """matmul on our threads through the gemm kernel module ``kernel``."""
    m, k, n = a.shape[0], a.shape[1], b.shape[1]
    a, a_t, lda = _matrices(a)
    b, b_t, ldb = _matrices(b)
    with one_blas_thread():
        if n >= threads.thread_count() * _MIN_COLUMNS_PER_PIECE or k < n:
            kernel.matmul_split_columns(a, a_t, lda, b, b_t, ldb, out, accumulate, threads.thread_count())
            return out
        partial = numpy.empty((threads.thread_count(), m, n), dtype=out.dtype)
        kernel.matmul_split_sum(a, a_t, lda, b, b_t, ldb, partial)
    return _add_pieces(partial, out, accumulate)


def _add_pieces(partial, out, accumulate):
    """out = the sum of the partial results (out += with accumulate), in a fixed order."""
    if accumulate:
        out += partial[0]
    else:
        out[...] = partial[0]
    for piece in partial[1:]:
        out += piece
    return out


def matmul_each(a, b, out):
    """out[s] = a @ b[s] for every s; returns out.

    a (m, k); b (S, k, n) and out (S, m, n) may be views into bigger arrays (a
    sample's slice of NCHW activations, of a column block) as long as the last
    axis of out is contiguous. With threaded_gemm() the samples are split over
    our threads, one BLAS call each, reading and writing the views in place;
    else it is np.matmul.
    """
    if not threaded_gemm():
        return numpy.matmul(a, b, out=out)
    stored, out_t, ldc = _matrices(out)
    if stored is not out or out_t:
        raise ValueError("matmul_each: out needs contiguous rows that do not overlap")
    a, a_t, lda = _matrices(a)
    b, b_t, ldb = _matrices(b)
    with one_blas_thread():
        _gemm_kernel.matmul_each(a, a_t, lda, b, b_t, ldb, out, ldc)
    return out


def matmul_each_sum(a, b, out, accumulate=False):
    """out = sum over s of a[s] @ b[s] (out += ... with accumulate); returns out.

    a (S, m, k), b (S, k, n): views as in matmul_each; out (m, n) C-contiguous.
    With threaded_gemm() the samples are cut into one range per thread, each
    range summed into its own partial result, the partials added in a fixed
    order; else np.matmul and a sum.
    """
    if not threaded_gemm():
        partial = numpy.matmul(a, b).sum(axis=0, keepdims=True)
    else:
        a, a_t, lda = _matrices(a)
        b, b_t, ldb = _matrices(b)
        partial = numpy.empty((threads.thread_count(),) + out.shape, dtype=out.dtype)
        with one_blas_thread():
            _gemm_kernel.matmul_each_sum(a, a_t, lda, b, b_t, ldb, partial)
    return _add_pieces(partial, out, accumulate)
