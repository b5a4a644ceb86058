"""im2colnet: convolutional networks on the CPU, im2col + GEMM with Cython kernels."""
__version__ = "0.1.0"

import os as _os

# What the process environment held before this import set anything in it
# (see below), so that a peer library's child process can start without our
# settings (the benchmarks run PyTorch so: _untuned_environment()).
_ENV_BEFORE = {name: _os.environ.get(name) for name in ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")}

# Our prange loops and NumPy's BLAS threads take turns on the same cores. With
# OpenMP's default "active" waiting, idle OpenMP threads keep spinning after a
# kernel and slow the next matrix product down (measured: 8.0 ms instead of
# 1.0 ms for the LeNet conv1 weight gradient). Passive waiting hands the cores
# back. It must be set before the OpenMP runtime starts; a user's own setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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

from . import functional  # noqa: E402
from . import functional as F  # noqa: E402
from . import layers, losses, optim, info, datasets  # noqa: E402
from .layers import *  # noqa: E402,F401,F403
from .serialization import ModelFormatError, load_model  # noqa: E402,F401


def build_info():
    """How the compiled kernels were built: {'openmp': bool, 'boundscheck': bool}."""
    from . import _build_config
    return {"openmp": _build_config.OPENMP, "boundscheck": _build_config.BOUNDSCHECK}


def _untuned_environment():
    """A copy of os.environ without the variables this package's import set (OpenMP's
    wait policy, OpenBLAS's thread timeout): the environment a peer library's child
    process (PyTorch in the benchmarks) should get, so it runs with its own defaults."""
    env = dict(_os.environ)
    for name, value in _ENV_BEFORE.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env
