"""Layers and models: thin objects over im2colnet.functional (API section 2)."""
from .base import Layer
from .conv import Conv2d
from .dense import Linear, Flatten, Dropout, Softmax
from .activations import ReLU, Tanh, Sigmoid, ELU, Maxout
from .pooling import MaxPool2d, AvgPool2d
from .normalization import BatchNorm2d, BatchNorm1d
from .recurrent import RNN, LSTM, GRU, LastTimeStep
from .sequential import Sequential
from .callbacks import Callback, History, LambdaCallback, EarlyStopping, ModelCheckpoint

#: Every public layer by class name (the model loader rebuilds layers only from here).
LAYERS = {cls.__name__: cls for cls in (
    Conv2d, Linear, ReLU, Tanh, Sigmoid, ELU, Maxout, MaxPool2d, AvgPool2d,
    BatchNorm2d, BatchNorm1d, Dropout, Flatten, Softmax, RNN, LSTM, GRU, LastTimeStep)}

__all__ = ["Layer", *LAYERS, "LAYERS", "Sequential", "Callback", "History", "LambdaCallback",
           "EarlyStopping", "ModelCheckpoint"]
