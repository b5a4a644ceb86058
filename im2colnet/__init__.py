"""im2colnet: convolutional networks on the CPU, im2col + GEMM with Cython kernels.

The package in layers, lowest first; a module imports only from below it (or from its
own package), never inside a function (tests/test_import_order.py checks this):

    _kernels          the compiled Cython loops (one file per kernel family)
    _check_build      imports the kernels, or says how to build them; build_info()
    _checks           argument validation at the Python boundary
    _config           the config round trip of layers, losses, optimizers, schedules
    runtime/          BLAS discovery, products on our threads, thread counts, tuning
    functional/       the operations (reference.py and numpy_im2col.py: the two
                      independent references; info.py, datasets.py beside them)
    layers/           thin layer objects, one file per functional file of the same name
    losses, optim     objective functions and optimizers; state_dict (PyTorch's weight names)
    model             Model: the stack of layers, inference, evaluation, summary, config;
                      Residual, the layer that holds Models
    training/         the fit loop, callbacks, progress bar, Ctrl-C between steps
    serialization     the HDF5 model file (save_model, read_model)
    sequential        the public Sequential = Model + fit + save; load_model
    models/           the zoo (lenet5, vgg_small), installed as im2colnet.models;
                      onnx/ beside it (export, load; needs the onnx extra, imported by
                      nothing but the command's export, when it runs)
    this file         the public namespace
    apps/             the im2colnet command (cli), its demo and bench, the PyTorch peer
"""
from ._version import __version__  # noqa: F401
from ._check_build import build_info  # noqa: F401  (imports the kernels, or says how to build them)
from ._check_build import set_kernel_level as _set_kernel_level  # noqa: F401  (for tests)
from .runtime.threads import one_thread_in_forked_children as _one_thread_in_forked_children

# A child forked after our kernels ran would hang at its first parallel kernel
# (GNU OpenMP's pool does not survive fork): it runs them on one thread instead.
_one_thread_in_forked_children()

from . import functional  # noqa: E402
from . import functional as F  # noqa: E402
from . import datasets, info, layers, losses, optim, runtime, training  # noqa: E402,F401
from .layers import *  # noqa: E402,F401,F403
from .training import Callback, EarlyStopping, History, LambdaCallback, ModelCheckpoint  # noqa: E402
from .model import Residual  # noqa: E402,F401
from .serialization import ModelFormatError  # noqa: E402,F401
from .sequential import Sequential, load_model  # noqa: E402,F401
from . import models  # noqa: E402,F401

# API section 2 names im2colnet.layers.Sequential, Residual and the callbacks: the same objects,
# offered there too (they live above the layers, so the layers package cannot import them).
for _name in ("Sequential", "Residual", "Callback", "History", "LambdaCallback", "EarlyStopping",
              "ModelCheckpoint"):
    setattr(layers, _name, globals()[_name])

