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

__all__ = ["gemm_threads", "SMALL_GEMM_FLOPS", "blas_info", "quiet_idle_threads",
           "IDLE_TIMEOUT_LOG2", "matmul", "threaded_gemm", "enable_threaded_gemm",
           "THREADED_GEMM_POSSIBLE", "threads_worth", "parallel_min_work", "matmul_each",
           "matmul_each_sum", "one_thread_in_forked_children", "thread_count",
           "set_thread_count"]

SMALL_GEMM_FLOPS = 3e8

# OpenBLAS's OPENBLAS_THREAD_TIMEOUT: idle threads spin for 2**this cycles, then
# sleep. 4 is its smallest value (its default is 28).
IDLE_TIMEOUT_LOG2 = 4


def _openblas_libraries():
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
    for lib in _openblas_libraries():
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
    for lib in _openblas_libraries():
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
def _one_blas_thread():
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


def gemm_threads(flops):
    """Run the enclosed product(s) on one BLAS thread when ``flops`` < SMALL_GEMM_FLOPS."""
    if _OPENBLAS is None or flops >= SMALL_GEMM_FLOPS:
        return contextlib.nullcontext()
    return _one_blas_thread()


# ------------------------------------------------ products on our own threads

def _cblas_gemm_addresses():
    """(sgemm, dgemm): addresses of the ILP64 cblas_sgemm/cblas_dgemm of the OpenBLAS
    NumPy loaded (the ``...64_`` symbols of NumPy's wheels), or None."""
    for lib in _openblas_libraries():
        for prefix in ("scipy_cblas_", "cblas_"):
            sgemm = getattr(lib, f"{prefix}sgemm64_", None)
            dgemm = getattr(lib, f"{prefix}dgemm64_", None)
            if sgemm is not None and dgemm is not None:
                return tuple(ctypes.cast(f, ctypes.c_void_p).value for f in (sgemm, dgemm))
    return None


def _thread_count():
    """The threads a product is split over: OMP_NUM_THREADS when set, else the usable CPUs."""
    try:
        count = int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0])
    except ValueError:
        count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, count or 1)


# Products run on our OpenMP threads (see _kernels/gemm.pyx) when NumPy's OpenBLAS
# exports the ILP64 CBLAS functions and its thread count can be set to 1 (so that a
# piece does not start OpenBLAS's own threads), unless IM2COLNET_THREADED_GEMM=0.
_CBLAS_GEMM = _cblas_gemm_addresses() if _OPENBLAS is not None else None
THREADED_GEMM_POSSIBLE = (_CBLAS_GEMM is not None
                          and os.environ.get("IM2COLNET_THREADED_GEMM", "1").strip() != "0")
_gemm_kernel = None   # the gemm kernel module, once enable_threaded_gemm() succeeded
_PIECES = _thread_count()
# Below this many result columns per thread, a product is split along its inner
# dimension instead (a weight gradient: a small result summed over many pixels).
_MIN_COLUMNS_PER_PIECE = 64


def enable_threaded_gemm():
    """Run matmul() on our threads from now on; True when in use.

    Registers the BLAS functions with the kernel, then checks a few small products
    (both dtypes, both splits, transposed operands) against np.matmul; on any
    difference the kernel is unregistered and matmul() keeps using np.matmul.
    """
    global _gemm_kernel
    if not THREADED_GEMM_POSSIBLE:
        return False
    from ._kernels import gemm
    gemm.register(*_CBLAS_GEMM)
    _gemm_kernel = gemm
    rng = numpy.random.default_rng(0)
    try:
        for dtype in (numpy.float32, numpy.float64):
            for m, k, n in ((3, 5, 2 * _PIECES * _MIN_COLUMNS_PER_PIECE + 7), (9, 300, 4)):
                a = rng.standard_normal((k, m)).astype(dtype).T   # a transposed operand
                b = rng.standard_normal((k, n)).astype(dtype)
                out = numpy.empty((m, n), dtype)
                if not numpy.allclose(matmul(a, b, out), a @ b, rtol=1e-4, atol=1e-4):
                    raise ArithmeticError(f"threaded {numpy.dtype(dtype).name} product differs")
    except Exception:
        gemm.register(0, 0)
        _gemm_kernel = None
        return False
    return True


def threaded_gemm():
    """True when matmul() runs products on our threads."""
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
    if _gemm_kernel is None:  # the caller chose the BLAS's thread count (gemm_threads)
        if accumulate:
            out += a @ b
        else:
            numpy.matmul(a, b, out=out)
        return out
    m, k, n = a.shape[0], a.shape[1], b.shape[1]
    a, a_t, lda = _matrices(a)
    b, b_t, ldb = _matrices(b)
    with _one_blas_thread():
        if n >= _PIECES * _MIN_COLUMNS_PER_PIECE or k < n:
            _gemm_kernel.matmul_split_columns(a, a_t, lda, b, b_t, ldb, out, accumulate, _PIECES)
            return out
        partial = numpy.empty((_PIECES, m, n), dtype=out.dtype)
        _gemm_kernel.matmul_split_sum(a, a_t, lda, b, b_t, ldb, partial)
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
    if _gemm_kernel is None:
        return numpy.matmul(a, b, out=out)
    stored, out_t, ldc = _matrices(out)
    if stored is not out or out_t:
        raise ValueError("matmul_each: out needs contiguous rows that do not overlap")
    a, a_t, lda = _matrices(a)
    b, b_t, ldb = _matrices(b)
    with _one_blas_thread():
        _gemm_kernel.matmul_each(a, a_t, lda, b, b_t, ldb, out, ldc)
    return out


def matmul_each_sum(a, b, out, accumulate=False):
    """out = sum over s of a[s] @ b[s] (out += ... with accumulate); returns out.

    a (S, m, k), b (S, k, n): views as in matmul_each; out (m, n) C-contiguous.
    With threaded_gemm() the samples are cut into one range per thread, each
    range summed into its own partial result, the partials added in a fixed
    order; else np.matmul and a sum.
    """
    if _gemm_kernel is None:
        partial = numpy.matmul(a, b).sum(axis=0, keepdims=True)
    else:
        a, a_t, lda = _matrices(a)
        b, b_t, ldb = _matrices(b)
        partial = numpy.empty((_PIECES,) + out.shape, dtype=out.dtype)
        with _one_blas_thread():
            _gemm_kernel.matmul_each_sum(a, a_t, lda, b, b_t, ldb, partial)
    return _add_pieces(partial, out, accumulate)


# ------------------------------------------ when a kernel is worth our threads

@functools.lru_cache(maxsize=None)
def parallel_min_work():
    """Elements of work from which an element-wise kernel (ReLU, max pooling, batch
    norm) runs on several OpenMP threads rather than on the calling one.

    It depends on how idle OpenMP threads wait, which im2colnet's import fixed
    (read once, at the first call). Measured on 2 cores (kernel sweeps, serial
    against threaded):
    - passive waiting (OMP_WAIT_POLICY=PASSIVE): starting a parallel region costs
      15-40 us, what one thread needs to stream ~300,000 float32 values: ReLU on
      300k elements 44 us serial against 59 threaded, on 1M 139 / 132, on 3M
      474 / 297; so threads from 2**20 elements.
    - active waiting for a while (GOMP_SPINCOUNT, the default with our threaded
      products): the second thread is awake and threads win from about 100k
      elements (ReLU on 102k: 12 us serial, 8 threaded; on 301k: 32 / 22; the
      max-pool scatter on (64,16,28,28): 148 / 76 us); so from 2**16.
    """
    passive = os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"
    return 1 << 20 if passive else 1 << 16


def threads_worth(work):
    """Should a kernel with this much work (elements, counted once per pass) use threads?"""
    return work >= parallel_min_work()


# ------------------------------------------------------------ forked children

_gnu_omp_set_num_threads = None   # found once GNU OpenMP is loaded (with our kernels)


def _gnu_openmp_set_num_threads():
    """omp_set_num_threads of the GNU OpenMP runtime this process loaded, or None."""
    global _gnu_omp_set_num_threads
    if _gnu_omp_set_num_threads is not None:
        return _gnu_omp_set_num_threads
    try:
        with open("/proc/self/maps") as fh:
            paths = sorted({line.split()[-1] for line in fh if "libgomp" in line})
    except OSError:
        return None
    for path in paths:
        try:
            function = ctypes.CDLL(path).omp_set_num_threads
        except (OSError, AttributeError):
            continue
        function.argtypes, function.restype = [ctypes.c_int], None
        _gnu_omp_set_num_threads = function
        return function
    return None


def thread_count():
    """The threads our products are split over (and our kernels use, see set_thread_count)."""
    return _PIECES


def set_thread_count(n):
    """Run our products and kernels on n threads from now on (the kernels through GNU
    OpenMP's omp_set_num_threads; another OpenMP runtime keeps OMP_NUM_THREADS)."""
    global _PIECES
    _PIECES = max(1, int(n))
    set_openmp_threads = _gnu_openmp_set_num_threads()
    if set_openmp_threads is not None:
        set_openmp_threads(_PIECES)


def one_thread_in_forked_children():
    """A child process forked after our kernels ran (multiprocessing's default on
    Linux) runs them on one thread.

    GNU OpenMP does not survive fork: the child inherits the parent's thread
    pool without its threads, and its first parallel region for more than one
    thread waits forever for them. With one thread no region needs the pool.
    Returns True when the handler is installed (GNU OpenMP found).
    """
    if _gnu_openmp_set_num_threads() is None or not hasattr(os, "register_at_fork"):
        return False
    os.register_at_fork(after_in_child=functools.partial(set_thread_count, 1))
    return True
