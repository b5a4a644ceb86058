"""How many threads NumPy's BLAS may use for one matrix product.

OpenBLAS's worker threads keep spinning for a while after each product. Our
own kernels (OpenMP) and NumPy's element-wise work then run beside a spinning
thread, and on a machine with few cores that costs more than a small product
gains from a second thread: LeNet-5 training on 2 cores ran at 2,346 images/s
with OpenBLAS on 2 threads and 12,164 images/s with small products on one
(benchmarks/lenet5_throughput.py, same run conditions). Large products (a VGG
layer, ~1 GFLOP) still run about 1.9x faster on 2 threads, so they keep them.

``gemm_threads(flops)`` is a context manager that limits OpenBLAS to one
thread for products below SMALL_GEMM_FLOPS. It finds OpenBLAS among the
libraries NumPy loaded (Linux: /proc/self/maps); with another BLAS, or when it
cannot be found, it does nothing.

The thread count is process-wide. Python threads that run small products at
the same time share one "single-thread" window (a counter under a lock): the
count drops to 1 when the first enters and is restored when the last leaves.
Without that, one thread could restore 2 threads while another is inside its
product, and OpenBLAS rounds some small products differently on 1 and 2
threads: concurrent results would differ from sequential ones in the last bit.
"""
import contextlib
import ctypes
import threading

import numpy  # noqa: F401  (loads NumPy's BLAS before we look for it)

__all__ = ["gemm_threads", "SMALL_GEMM_FLOPS", "blas_info"]

SMALL_GEMM_FLOPS = 3e8


def _find_openblas():
    """(set_num_threads, get_num_threads) of the OpenBLAS NumPy loaded, or None."""
    try:
        with open("/proc/self/maps") as fh:
            paths = sorted({line.split()[-1] for line in fh if "openblas" in line.lower()})
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                set_threads = getattr(lib, f"{prefix}set_num_threads{suffix}", None)
                get_threads = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                if set_threads is not None and get_threads is not None:
                    set_threads.argtypes, set_threads.restype = [ctypes.c_int], None
                    get_threads.argtypes, get_threads.restype = [], ctypes.c_int
                    return set_threads, get_threads
    return None


_OPENBLAS = _find_openblas()


def blas_info():
    """{'openblas_found': bool, 'threads': the BLAS's current thread count or None}."""
    return {"openblas_found": _OPENBLAS is not None,
            "threads": None if _OPENBLAS is None else _OPENBLAS[1]()}


_lock = threading.Lock()
_inside = 0          # threads currently inside a single-thread window
_restore_to = None   # the thread count to restore when the last one leaves


@contextlib.contextmanager
def gemm_threads(flops):
    """Run the enclosed product(s) on one BLAS thread when ``flops`` < SMALL_GEMM_FLOPS."""
    global _inside, _restore_to
    if _OPENBLAS is None or flops >= SMALL_GEMM_FLOPS:
        yield
        return
    set_threads, get_threads = _OPENBLAS
    with _lock:
        if _inside == 0:
            _restore_to = get_threads()
            if _restore_to != 1:
                set_threads(1)
        _inside += 1
    try:
        yield
    finally:
        with _lock:
            _inside -= 1
            if _inside == 0 and _restore_to != 1:
                set_threads(_restore_to)
