"""Batch normalisation layers over im2colnet.functional.batchnorm_forward/backward."""
import numpy as np

from .. import functional as F
from .._checks import check_batchnorm_mode, check_int, check_number
from .base import Layer

__all__ = ["BatchNorm2d", "BatchNorm1d"]



class _BatchNorm(Layer):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta.

    Training uses the batch statistics and updates the buffers ``running_mean``
    and ``running_var`` (momentum, unbiased variance); inference uses the buffers.
    Parameters ``gamma`` (init 1) and ``beta`` (init 0), made in __init__; with
    mode="per_activation" their shape (C, H, W) comes from the input, so they
    are made by build() (or the first forward).
    """
    keeps_activation = True

    def __init__(self, num_features, mode="spatial", eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features = check_int(num_features, "num_features")
        self.mode = check_batchnorm_mode(mode)
        self.eps = check_number(eps, "eps", 0.0, low_open=True)
        self.momentum = check_number(momentum, "momentum", 0.0, 1.0)
        self._cache = None
        if mode == "spatial":
            self._create_params(None)
        else:
            self._built = False

    def _check_fit(self, input_shape):
        """Built per-activation parameters fit only inputs of their own shape."""
        if "gamma" in self.params and self.mode == "per_activation" \
                and self.params["gamma"].shape != tuple(input_shape):
            raise ValueError(f"input_shape: {type(self).__name__}(mode='per_activation') has "
                             f"parameters of shape {self.params['gamma'].shape}, got input_shape "
                             f"{tuple(input_shape)}")

    def _init_params(self, input_shape, rng):
        shape = tuple(input_shape) if self.mode == "per_activation" else (self.num_features,)
        self.params["gamma"] = np.ones(shape, dtype=self.dtype)
        self.params["beta"] = np.zeros(shape, dtype=self.dtype)
        self.buffers["running_mean"] = np.zeros(shape, dtype=self.dtype)
        self.buffers["running_var"] = np.ones(shape, dtype=self.dtype)
        self.zero_grads()

    def forward(self, x, training=False):
        self._prepare(x)
        y, self._cache = F.batchnorm_forward(
            x, self.params["gamma"], self.params["beta"], self.mode, self.eps, training,
            self.buffers["running_mean"], self.buffers["running_var"], self.momentum)
        return y     # the cache is kept in inference too: backward then treats the statistics as constants

    def backward(self, dy, need_dx=True):
        dx, self.grads["gamma"], self.grads["beta"] = F.batchnorm_backward(dy, self._saved(self._cache))
        return dx

    def get_config(self):
        return {"num_features": self.num_features, "mode": self.mode, "eps": self.eps,
                "momentum": self.momentum}


class BatchNorm2d(_BatchNorm):
    """Batch norm of images (N, C, H, W), C = num_features.

    mode="spatial": one statistic per channel over (N, H, W), gamma/beta (C,);
    mode="per_activation": one per activation (c, i, j) over N, gamma/beta (C, H, W).
    """

    def output_shape(self, input_shape):
        if len(input_shape) != 3 or input_shape[0] != self.num_features:
            raise ValueError(f"input_shape: BatchNorm2d({self.num_features}) expects images "
                             f"({self.num_features}, H, W), got input_shape {tuple(input_shape)}")
        self._check_fit(input_shape)
        return tuple(input_shape)


class BatchNorm1d(_BatchNorm):
    """Batch norm of features (N, F), F = num_features: one statistic per feature over N
    (both modes coincide here); gamma/beta (F,)."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__(num_features, "spatial", eps, momentum)

    def output_shape(self, input_shape):
        if tuple(input_shape) != (self.num_features,):
            raise ValueError(f"input_shape: BatchNorm1d({self.num_features}) expects features "
                             f"({self.num_features},), got input_shape {tuple(input_shape)}")
        return tuple(input_shape)

    def get_config(self):
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum}
