"""What the bench knows of the machine: the product threads, the measured one-core peak,
the versions in its header, and the process's peak memory."""
import os
import platform
import sys

import numpy as np

from .. import functional as F
from .._check_build import build_info
from ..runtime.blas import blas_info
from ..runtime.blas import set_blas_threads as _set_openblas_threads
from ..runtime.gemm import threaded_gemm
from ..runtime.threads import set_thread_count, thread_count
from ._timing import time_calls
from .bench_peer import torch_version

__all__ = ["blas_threads", "set_blas_threads", "measure_peak", "machine_info", "peak_rss_mib"]


def blas_threads():
    """The threads our products run on now: ours (im2colnet.runtime.gemm.matmul) or, when the
    products go through np.matmul, NumPy's OpenBLAS's (None when it cannot be found)."""
    return thread_count() if threaded_gemm() else blas_info()["threads"]


def set_blas_threads(n):
    """Run the products, and our kernels, on n threads from now on: NumPy's OpenBLAS
    (its products below the engine's small-product threshold still run on one) and
    our OpenMP threads. False when OpenBLAS cannot be found."""
    if not _set_openblas_threads(n):
        return False
    set_thread_count(n)
    return True


def _blas_name():
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas.get('version', '')}".strip()
    except Exception:  # noqa: BLE001 -- older NumPy: the name is a nicety
        return "unknown"


def measure_peak(size=1024, repeats=5):
    """The machine's one-core peak in GFLOP/s: the better of our packed micro-kernel (a 1x1
    convolution of `size` channels to `size` kernels over `size` pixels) and NumPy's BLAS
    on a `size`^3 product, each the median of `repeats` calls on one thread.
    Returns {"gflops", "ours", "blas"}."""
    rng = np.random.default_rng(0)
    side = int(round(size ** 0.5))
    x = rng.standard_normal((1, size, side, size // side)).astype(np.float32)
    w = rng.standard_normal((size, size, 1, 1)).astype(np.float32)
    a = rng.standard_normal((size, size)).astype(np.float32)
    out = np.empty_like(a)
    flops = 2.0 * size * size * side * (size // side)
    before = blas_threads()
    set_blas_threads(1)
    set_thread_count(1)
    try:
        ours = time_calls(lambda: F.conv2d_forward(x, w), 0, repeats)[0]
        blas = time_calls(lambda: np.matmul(a, a, out=out), 0, repeats)[0]
    finally:
        if before is not None:
            set_blas_threads(before)
            set_thread_count(before)
    result = {"ours": flops / ours / 1e9, "blas": 2.0 * size ** 3 / blas / 1e9}
    result["gflops"] = max(result.values())
    return result


def machine_info():
    return {
        "python": platform.python_version(), "numpy": np.__version__, "blas": _blas_name(),
        "platform": platform.platform(), "cpus": os.cpu_count(),
        "blas_threads": blas_threads(),
        "im2colnet_build": build_info(),
        "products_on_our_threads": threaded_gemm(),
        "torch": torch_version(),
    }


def peak_rss_mib():
    """The process's peak resident set size so far (MiB), or None where unknown."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB
