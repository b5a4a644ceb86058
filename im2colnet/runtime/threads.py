"""How many threads our kernels and products use: when a kernel is worth them, how many, and
what a forked child does."""
import ctypes
import functools
import os

__all__ = ["threads_worth", "parallel_min_work", "thread_count", "set_thread_count",
           "one_thread_in_forked_children"]


def _thread_count():
    """The threads a product is split over: OMP_NUM_THREADS when set, else the usable CPUs."""
    try:
        count = int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0])
    except ValueError:
        count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, count or 1)


_PIECES = _thread_count()


@functools.lru_cache(maxsize=None)
def parallel_min_work():
    """Elements of work from which an element-wise kernel (ReLU, max pooling, batch
    norm) runs on several OpenMP threads rather than on the calling one.

    It depends on how idle OpenMP threads wait (read once, at the first call):
    - OMP_WAIT_POLICY=PASSIVE (the user's choice): waking the threads for a
      parallel region costs what one thread needs to stream ~300,000 float32
      values, so threads from 2**20 elements;
    - otherwise idle threads spin for a while (libgomp's GOMP_SPINCOUNT, 300,000 by
      default, or the user's), the second thread is awake, and threads win from about
      100,000 elements: from 2**16.
    docs/performance.md has the kernel sweeps behind both figures.
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
