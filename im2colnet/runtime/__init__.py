"""How our kernels and products use the machine: NumPy's BLAS, our OpenMP threads, malloc.

    blas     finding NumPy's OpenBLAS (at first use); its thread count around small products
    gemm     matrix products on our own OpenMP threads (np.matmul as the fallback)
    threads  how many threads our kernels use, and when a kernel is worth them
    malloc   glibc's malloc settings for training loops

Importing im2colnet changes nothing in the process beyond loading the kernels (with
the OpenMP spin count they were tuned for, see _check_build.py) and a fork handler
(a forked child runs our kernels on one thread). The settings that
speed up training but touch the whole process are one call, ``tune()``, made by the
``im2colnet`` command (train, bench, demo) and by the benchmark scripts, and by any
program that wants them.
"""
from .blas import quiet_idle_threads
from .malloc import tune_malloc

__all__ = ["tune"]


def tune():
    """Apply the process-wide settings that speed up training; returns what took effect.

    - malloc (glibc): freed activations stay in the heap (M_MMAP_THRESHOLD 32 MiB,
      M_TOP_PAD 16 MiB), so a training step does not fault in fresh pages each time
      (runtime/malloc.py; a user's MALLOC_* or GLIBC_TUNABLES, or
      IM2COLNET_MALLOC_TUNING=0, leaves malloc alone);
    - OpenBLAS: its idle threads sleep right after a product instead of spinning for
      ~0.1 s beside our kernels (runtime/blas.py; a user's OPENBLAS_THREAD_TIMEOUT wins).

    os.environ is not changed. Returns {"malloc": bool, "openblas_idle_threads": bool}.
    """
    return {"malloc": tune_malloc(), "openblas_idle_threads": quiet_idle_threads()}
