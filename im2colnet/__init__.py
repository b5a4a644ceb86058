"""im2colnet: convolutional networks on the CPU, im2col + GEMM with Cython kernels.

The package in layers, lowest first; a module imports only from below it (or from its
own package), never inside a function (tests/test_import_order.py checks this):

    _kernels          the compiled Cython loops (one file per kernel family)
    _check_build      imports the kernels, or says how to build them; build_info()
    _checks           argument validation at the Python boundary
    runtime/          BLAS discovery, products on our threads, thread counts, tuning
    functional/       the operations (reference.py and numpy_im2col.py: the two
                      independent references; info.py, datasets.py beside them)
    layers/           thin layer objects, one file per functional file of the same name
    losses, optim     objective functions and optimizers
    model             Model: the stack of layers, inference, evaluation, summary, config
    training/         the fit loop, callbacks, progress bar, Ctrl-C between steps
    serialization     the HDF5 model file (save_model, read_model)
    sequential        the public Sequential = Model + fit + save; load_model
    models/           the zoo (lenet5, vgg_small), installed as im2colnet.models
    this file         the public namespace
    apps/             the im2colnet command (cli), its demo and bench, the PyTorch peer
"""
import os as _os

from ._version import __version__  # noqa: F401

# What the process environment held before this import set anything in it
# (see below), so that a peer library's child process can start without our
# settings (the benchmarks run PyTorch so: _untuned_environment()).
_ENV_BEFORE = {name: _os.environ.get(name) for name in
               ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_THREAD_TIMEOUT")}

from .runtime.blas import _OPENBLAS, cblas_gemm_addresses  # noqa: E402

_THREADED_GEMM_POSSIBLE = (_OPENBLAS is not None and cblas_gemm_addresses() is not None
                           and _os.environ.get("IM2COLNET_THREADED_GEMM", "1").strip() != "0")

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
from .runtime.malloc import tune_malloc as _tune_malloc

_tune_malloc()

# OpenBLAS's idle threads sleep right after a product instead of spinning for
# ~0.1 s against our kernels (see _blas.py; OPENBLAS_THREAD_TIMEOUT=28 keeps
# OpenBLAS's default).
from .runtime.blas import quiet_idle_threads as _quiet_idle_threads

_quiet_idle_threads()

from ._check_build import build_info  # noqa: E402,F401  (imports the kernels, or says how to build them)

from .runtime.gemm import enable_threaded_gemm as _enable_threaded_gemm  # noqa: E402
from .runtime.threads import one_thread_in_forked_children as _one_thread_in_forked_children  # noqa: E402

_enable_threaded_gemm()
# A forked child (multiprocessing on Linux) would hang at its first parallel kernel.
_one_thread_in_forked_children()

from . import functional  # noqa: E402
from . import functional as F  # noqa: E402
from . import layers, losses, optim, info, datasets, training  # noqa: E402
from .layers import *  # noqa: E402,F401,F403
from .training import Callback, History, LambdaCallback, EarlyStopping, ModelCheckpoint  # noqa: E402
from .model import Residual  # noqa: E402,F401
from .serialization import ModelFormatError  # noqa: E402,F401
from .sequential import Sequential, load_model  # noqa: E402
from . import models  # noqa: E402,F401

# API section 2 names im2colnet.layers.Sequential, Residual and the callbacks: the same objects,
# offered there too (they live above the layers, so the layers package cannot import them).
for _name in ("Sequential", "Residual", "Callback", "History", "LambdaCallback", "EarlyStopping",
              "ModelCheckpoint"):
    setattr(layers, _name, globals()[_name])


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
