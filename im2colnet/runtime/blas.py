"""How many threads NumPy's BLAS may use for one matrix product.

OpenBLAS's worker threads keep spinning for a while after each product. Our
own kernels (OpenMP) and NumPy's element-wise work then run beside a spinning
thread, and on a machine with few cores that costs more than a small product
gains from a second thread: LeNet-5 training on 2 cores ran at 2,346 images/s
with OpenBLAS on 2 threads and 12,164 images/s with small products on one
(benchmarks/lenet5_throughput.py, same run conditions). Large products (a VGG
layer, ~1 GFLOP) still run about 1.9x faster on 2 threads, so they keep them.

The spinning itself is cut short too: ``quiet_idle_threads()`` (run once at
import) makes OpenBLAS's idle threads go to sleep right after a product
instead of spinning for 2**28 cycles (~0.1 s), so a multi-threaded product
(a VGG layer) no longer leaves a spinning thread that the next im2col has to
share a core with: VGG 64->64 at 14x14, N=64: the im2col blocks after each
product took 4.3-5.2 ms with spinning threads and 1.4-3.1 ms without (runs
of the same script), and VGG-small trained at 331 images/s against 368
(py-spy showed im2col's share fall from 19% to 9%). A thread asleep costs one wake-up (microseconds) at
the next multi-threaded product, which only the large products get.

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


_OPENBLAS = _find_openblas()


def quiet_idle_threads(environ=os.environ):
    """Make OpenBLAS's idle threads sleep right after a product (see the module docstring).

    OpenBLAS reads OPENBLAS_THREAD_TIMEOUT when it starts its threads, which
    happened when NumPy was imported. So this sets the variable, has OpenBLAS
    read its environment again (``openblas_read_env``) and stops its threads
    (``blas_thread_shutdown_``, what OpenBLAS itself does before a fork); the
    next multi-threaded product starts them again with the short timeout.
    A user's own OPENBLAS_THREAD_TIMEOUT wins (28 is OpenBLAS's default).
    Returns True when the timeout is now in force.
    """
    if "OPENBLAS_THREAD_TIMEOUT" in environ:
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
        environ["OPENBLAS_THREAD_TIMEOUT"] = str(IDLE_TIMEOUT_LOG2)
        read_env()
        if timeout() != IDLE_TIMEOUT_LOG2:
            return False
        with _lock:  # not while a gemm_threads window changes the thread count
            shutdown()
        return True
    return False


def blas_info():
    """{'openblas_found': bool, 'threads': the BLAS's current thread count or None}."""
    return {"openblas_found": _OPENBLAS is not None,
            "threads": None if _OPENBLAS is None else _OPENBLAS[1]()}


_lock = threading.Lock()
_inside = 0          # threads currently inside a single-thread window
_restore_to = None   # the thread count to restore when the last one leaves


@contextlib.contextmanager
def one_blas_thread():
    """OpenBLAS on one thread inside the block (a window shared by concurrent callers)."""
    global _inside, _restore_to
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


def set_blas_threads(n):
    """Let OpenBLAS's own products use n threads from now on; False when OpenBLAS was not
    found. Inside a one_blas_thread window the count takes effect when the window closes."""
    global _restore_to
    if _OPENBLAS is None:
        return False
    with _lock:
        if _inside:
            _restore_to = int(n)
        else:
            _OPENBLAS[0](int(n))
    return True


def gemm_threads(flops):
    """Run the enclosed product(s) on one BLAS thread when ``flops`` < SMALL_GEMM_FLOPS."""
    if _OPENBLAS is None or flops >= SMALL_GEMM_FLOPS:
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
