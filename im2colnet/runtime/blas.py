"""NumPy's OpenBLAS, found at run time: its thread count around our small products.

OpenBLAS's worker threads spin for a while after each product, and our kernels
(OpenMP) and NumPy's element-wise work then share the cores with a spinning
thread: on 2 cores that costs more than a small product gains from a second
thread. ``gemm_threads(flops)`` runs the products below SMALL_GEMM_FLOPS on one
OpenBLAS thread (a VGG layer, ~1 GFLOP, still gains from two); see
docs/performance.md for the measurements.

The library is looked up the first time one of these functions needs it (Linux:
among the libraries in /proc/self/maps), never at import; with another BLAS, or
when it cannot be found, they do nothing.

The thread count is process-wide. Python threads that run small products at the
same time share one "single-thread" window (a counter under a lock): the count
drops to 1 when the first enters and comes back when the last leaves, so no
product runs on two threads while another expects one (OpenBLAS rounds some
small products differently on 1 and 2 threads).
"""
import contextlib
import ctypes
import functools
import os
import threading

import numpy  # noqa: F401  (loads NumPy's BLAS before we look for it)

__all__ = ["gemm_threads", "one_blas_thread", "SMALL_GEMM_FLOPS", "blas_info",
           "quiet_idle_threads", "IDLE_TIMEOUT_LOG2", "openblas_libraries", "set_blas_threads",
           "cblas_gemm_addresses"]

SMALL_GEMM_FLOPS = 3e8

# OpenBLAS's OPENBLAS_THREAD_TIMEOUT: idle threads spin for 2**this cycles, then
# sleep. 4 is its smallest value (its default is 28).
IDLE_TIMEOUT_LOG2 = 4


def openblas_libraries():
    """The OpenBLAS libraries NumPy loaded (Linux: found in /proc/self/maps), as CDLLs."""
    try:
        with open("/proc/self/maps") as fh:
            paths = sorted({line.split()[-1] for line in fh if "openblas" in line.lower()})
    except OSError:
        return []
    libraries = []
    for path in paths:
        try:
            libraries.append(ctypes.CDLL(path))
        except OSError:
            continue
    return libraries


def _find_openblas():
    """(set_num_threads, get_num_threads) of the OpenBLAS NumPy loaded, or None."""
    for lib in openblas_libraries():
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                set_threads = getattr(lib, f"{prefix}set_num_threads{suffix}", None)
                get_threads = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                if set_threads is not None and get_threads is not None:
                    set_threads.argtypes, set_threads.restype = [ctypes.c_int], None
                    get_threads.argtypes, get_threads.restype = [], ctypes.c_int
                    return set_threads, get_threads
    return None


@functools.lru_cache(maxsize=None)
def openblas():
    """(set_num_threads, get_num_threads) of the OpenBLAS NumPy loaded, or None (looked up once)."""
    return _find_openblas()


def quiet_idle_threads(environ=os.environ):
    """Make OpenBLAS's idle threads sleep right after a product instead of spinning for
    2**28 cycles (~0.1 s) beside our kernels; part of tune(), never run at import.

    OpenBLAS reads OPENBLAS_THREAD_TIMEOUT when it starts its threads. So this puts
    the variable in the environment just long enough for OpenBLAS to read it again
    (``openblas_read_env``), then stops OpenBLAS's threads (``blas_thread_shutdown_``,
    what OpenBLAS itself does before a fork); the next multi-threaded product starts
    them with the short timeout. os.environ is left as it was. A user's own
    OPENBLAS_THREAD_TIMEOUT (in ``environ``) wins. True when the timeout is in force.
    """
    if "OPENBLAS_THREAD_TIMEOUT" in environ or "OPENBLAS_THREAD_TIMEOUT" in os.environ:
        return False
    for lib in openblas_libraries():
        read_env = getattr(lib, "openblas_read_env", None)
        timeout = getattr(lib, "openblas_thread_timeout", None)
        shutdown = getattr(lib, "blas_thread_shutdown_", None)
        if read_env is None or timeout is None or shutdown is None:
            continue
        read_env.argtypes, read_env.restype = [], None
        timeout.argtypes, timeout.restype = [], ctypes.c_int
        shutdown.argtypes, shutdown.restype = [], ctypes.c_int
        os.environ["OPENBLAS_THREAD_TIMEOUT"] = str(IDLE_TIMEOUT_LOG2)
        try:
            read_env()
        finally:
            del os.environ["OPENBLAS_THREAD_TIMEOUT"]
        if timeout() != IDLE_TIMEOUT_LOG2:
            return False
        with _lock:  # not while a gemm_threads window changes the thread count
            shutdown()
        return True
    return False


def blas_info():
    """{'openblas_found': bool, 'threads': the BLAS's current thread count or None}."""
    found = openblas()
    return {"openblas_found": found is not None, "threads": None if found is None else found[1]()}


_lock = threading.Lock()
_inside = 0          # threads currently inside a single-thread window
_restore_to = None   # the thread count to restore when the last one leaves


@contextlib.contextmanager
def one_blas_thread():
    """OpenBLAS on one thread inside the block (a window shared by concurrent callers)."""
    global _inside, _restore_to
    set_threads, get_threads = openblas()
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


def set_blas_threads(n):
    """Let OpenBLAS's own products use n threads from now on; False when OpenBLAS was not
    found. Inside a one_blas_thread window the count takes effect when the window closes."""
    global _restore_to
    found = openblas()
    if found is None:
        return False
    with _lock:
        if _inside:
            _restore_to = int(n)
        else:
            found[0](int(n))
    return True


def gemm_threads(flops):
    """Run the enclosed product(s) on one BLAS thread when ``flops`` < SMALL_GEMM_FLOPS."""
    if flops >= SMALL_GEMM_FLOPS or openblas() is None:
        return contextlib.nullcontext()
    return one_blas_thread()


def cblas_gemm_addresses():
    """(sgemm, dgemm): addresses of the ILP64 cblas_sgemm/cblas_dgemm of the OpenBLAS
    NumPy loaded (the ``...64_`` symbols of NumPy's wheels), or None."""
    for lib in openblas_libraries():
        for prefix in ("scipy_cblas_", "cblas_"):
            sgemm = getattr(lib, f"{prefix}sgemm64_", None)
            dgemm = getattr(lib, f"{prefix}dgemm64_", None)
            if sgemm is not None and dgemm is not None:
                return tuple(ctypes.cast(f, ctypes.c_void_p).value for f in (sgemm, dgemm))
    return None
