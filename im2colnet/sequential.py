"""The public Sequential: the Model (im2colnet.model) with its training loop (fit, from
im2colnet.training) and saving (save, from im2colnet.serialization); and load_model,
which reads a model file back into a Sequential.

It sits above both so that the model, the training loop and the file format each
import only what lies below them.
"""
from .model import Model
from .serialization import read_model, save_model
from .training import fit

__all__ = ["Sequential", "load_model"]


class Sequential(Model):
    __doc__ = Model.__doc__

    fit = fit
    save = save_model


def load_model(path, with_optimizer=False):
    """Read and verify a model file (im2colnet.serialization.read_model). Returns a built
    Sequential with ``.metadata``; with_optimizer=True returns (model, optimizer or None)
    to resume training exactly. A file that cannot be verified is a ModelFormatError."""
    return read_model(path, Sequential, with_optimizer=with_optimizer)
