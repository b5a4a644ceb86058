"""Layers: thin objects over im2colnet.functional (API section 2).

Each file wraps the functional file of the same name (conv, conv_transpose, linear,
activation, pool, batchnorm, softmax); recurrent holds the RNN cells. ``im2colnet.layers.Sequential``
and the training callbacks are also offered here (set by im2colnet/__init__.py):
they live above the layers, in im2colnet.sequential and im2colnet.training.
"""
from .base import Layer
from .conv import Conv2d
from .conv_transpose import ConvTranspose2d
from .linear import Linear, Flatten, Dropout
from .softmax import Softmax, LogSoftmax
from .activation import ReLU, LeakyReLU, Tanh, Sigmoid, ELU, Maxout
from .pool import MaxPool2d, AvgPool2d, GlobalAvgPool2d, AdaptiveAvgPool2d
from .batchnorm import BatchNorm2d, BatchNorm1d
from .recurrent import RNN, LSTM, GRU, LastTimeStep

#: Every public layer by class name (the model loader rebuilds layers only from here).
LAYERS = {cls.__name__: cls for cls in (
    Conv2d, ConvTranspose2d, Linear, ReLU, LeakyReLU, Tanh, Sigmoid, ELU, Maxout, MaxPool2d, AvgPool2d,
    GlobalAvgPool2d, AdaptiveAvgPool2d, BatchNorm2d, BatchNorm1d, Dropout, Flatten, Softmax,
    LogSoftmax, RNN, LSTM, GRU, LastTimeStep)}

__all__ = ["Layer", *LAYERS, "LAYERS"]
