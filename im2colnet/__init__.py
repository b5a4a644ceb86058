"""im2colnet: convolutional networks on the CPU, im2col + GEMM with Cython kernels."""
__version__ = "0.1.0"

import os as _os

# What the process environment held before this import set anything in it
# (see below), so that a peer library's child process can start without our
# settings (the benchmarks run PyTorch so: _untuned_environment()).
_ENV_BEFORE = {name: _os.environ.get(name) for name in
               ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_THREAD_TIMEOUT")}

from ._blas import THREADED_GEMM_POSSIBLE as _THREADED_GEMM_POSSIBLE  # noqa: E402

# How idle OpenMP threads wait; it must be set before the OpenMP runtime starts,
# and a user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
# - Our matrix products run on our OpenMP threads (_blas.matmul): then nothing
#   else needs the cores between two kernels, and a thread that waits actively
#   for a moment (30,000 spins: about 1 ms here) is awake for the next kernel
#   or product instead of paying a wake-up of tens of microseconds each time.
# - Otherwise (another BLAS) the products run on the BLAS's own threads, and our
#   idle threads must not spin beside them: passive waiting (spinning threads
#   made the LeNet conv1 weight gradient 8.0 ms instead of 1.0 ms).
if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
    if _THREADED_GEMM_POSSIBLE:
        _os.environ["GOMP_SPINCOUNT"] = "30000"
    else:
        _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

# Freed activations stay in the heap, so the next step does not fault in fresh
# pages (see _malloc.py; IM2COLNET_MALLOC_TUNING=0 turns this off).
from ._malloc import tune_malloc as _tune_malloc

_tune_malloc()

# OpenBLAS's idle threads sleep right after a product instead of spinning for
# ~0.1 s against our kernels (see _blas.py; OPENBLAS_THREAD_TIMEOUT=28 keeps
# OpenBLAS's default).
from ._blas import quiet_idle_threads as _quiet_idle_threads

_quiet_idle_threads()

from ._check_build import import_kernels as _import_kernels

_import_kernels()

from ._blas import enable_threaded_gemm as _enable_threaded_gemm  # noqa: E402
from ._blas import one_thread_in_forked_children as _one_thread_in_forked_children  # noqa: E402

_enable_threaded_gemm()
# A forked child (multiprocessing on Linux) would hang at its first parallel kernel.
_one_thread_in_forked_children()

from . import functional  # noqa: E402
from . import functional as F  # noqa: E402
from . import layers, losses, optim, info, datasets  # noqa: E402
from .layers import *  # noqa: E402,F401,F403
from .serialization import ModelFormatError, load_model  # noqa: E402,F401


def build_info():
    """How the compiled kernels were built and which micro-kernels run:
    {'openmp': bool, 'boundscheck': bool, 'kernel': the packed GEMM's level in use
    ("avx512", "avx2" or "portable"; IM2COLNET_KERNEL forces one),
    'kernels_supported': the levels this CPU runs}."""
    from . import _build_config
    from ._kernels import packed_conv
    return {"openmp": _build_config.OPENMP, "boundscheck": _build_config.BOUNDSCHECK,
            "kernel": packed_conv.level(), "kernels_supported": packed_conv.supported_levels()}


def _set_kernel_level(name):
    """Run the packed GEMM's micro-kernel level `name` from now on; returns the previous
    one (for tests: the process-wide choice IM2COLNET_KERNEL makes at import)."""
    from ._kernels import packed_conv
    return packed_conv.set_level(name)


def _untuned_environment():
    """A copy of os.environ without the variables this package's import set (OpenMP's
    wait policy or spin count, OpenBLAS's thread timeout): the environment a peer library's child
    process (PyTorch in the benchmarks) should get, so it runs with its own defaults."""
    env = dict(_os.environ)
    for name, value in _ENV_BEFORE.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env
