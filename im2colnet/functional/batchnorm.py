"""Batch normalisation (Ioffe & Szegedy, 2015), forward and backward, in two modes.

mode="spatial": one mean/variance per channel over (N, H, W) for images
(N, C, H, W), per feature over N for (N, F); gamma, beta: (C,) or (F,).
mode="per_activation": one mean/variance per activation (c, i, j) over the
batch only ("one line" BN); gamma, beta: (C, H, W) (for (N, F): (F,)).

The spatial mode of images runs in a Cython kernel (im2colnet._kernels.batchnorm:
two passes over the activations instead of NumPy's ~14, samples on both
cores); the other cases are NumPy expressions of the same formulas.

Training normalises with the batch statistics (biased variance) and, when
running statistics are given, updates them in place:
    running_mean = (1 - momentum) * running_mean + momentum * mean
    running_var  = (1 - momentum) * running_var  + momentum * var * M / (M - 1)
(the unbiased variance; M values per statistic). Inference normalises with
the running statistics, which are then required.
"""
from collections import namedtuple

import numpy as np

from ..runtime.threads import threads_worth
from .._checks import as_float, check_batch, check_batchnorm_mode, check_number
from .._kernels import batchnorm as _bn

__all__ = ["batchnorm_forward", "batchnorm_backward", "BatchNormCache"]


BatchNormCache = namedtuple("BatchNormCache", "xhat inv_std gamma axes training")
BatchNormCache.__doc__ = """What batchnorm_backward needs from the forward pass.

xhat: the normalised input (x's shape); inv_std: 1/sqrt(var + eps), shaped to
broadcast against x; gamma: likewise broadcastable; axes: the reduction axes;
training: whether batch statistics (True) or running statistics were used."""


def _layout(shape, mode):
    """(reduction axes, parameter shape, broadcast shape) for an input shape and mode."""
    check_batchnorm_mode(mode)
    if len(shape) == 2:                      # (N, F): per feature in both modes
        return (0,), shape[1:], (1,) + shape[1:]
    if mode == "spatial":
        return (0, 2, 3), shape[1:2], (1, shape[1], 1, 1)
    return (0,), shape[1:], (1,) + shape[1:]


def _param(value, name, shape, bshape, dtype):
    arr = as_float(value, name, dtype=dtype)
    if arr.shape != shape:
        raise ValueError(f"{name}: expected shape {shape} for this input and mode, got {arr.shape}")
    return arr.reshape(bshape)


def _check_running(running_mean, running_var, shape, training):
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean, running_var: give both or neither")
    if running_mean is None:
        return
    for name, arr in (("running_mean", running_mean), ("running_var", running_var)):
        if training and not (isinstance(arr, np.ndarray) and arr.dtype.kind == "f"
                             and arr.flags.writeable):
            raise TypeError(f"{name}: must be a writeable float ndarray (it is updated in place)")
        if np.shape(arr) != shape:
            raise ValueError(f"{name}: expected shape {shape} for this input and mode, got {np.shape(arr)}")


def batchnorm_forward(x, gamma, beta, mode="spatial", eps=1e-5, training=True,
                      running_mean=None, running_var=None, momentum=0.1):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta.

    x: (N, C, H, W) or (N, F); gamma, beta: (C,) / (F,) for "spatial",
    (C, H, W) / (F,) for "per_activation"; running_mean, running_var: that
    shape too (float ndarrays, updated in place in training).
    Returns (y, cache): y has x's shape and dtype; cache goes to
    :func:`batchnorm_backward`.
    """
    x = as_float(x, "x")
    if x.ndim not in (2, 4):
        raise ValueError(f"x: expected (N, C, H, W) or (N, F), got shape {x.shape}")
    check_batch(x, "x")
    axes, pshape, bshape = _layout(x.shape, mode)
    gamma = _param(gamma, "gamma", pshape, bshape, x.dtype)
    beta = _param(beta, "beta", pshape, bshape, x.dtype)
    eps = check_number(eps, "eps", 0.0, low_open=True)
    momentum = check_number(momentum, "momentum", 0.0, 1.0)
    _check_running(running_mean, running_var, pshape, training)
    count = x.size // max(int(np.prod(pshape)), 1)
    if training and count < 2:
        raise ValueError(
            f"x: training batch norm needs more than one value per statistic "
            f"(shape {x.shape}, mode {mode!r}); use a larger batch")
    if not training:
        if running_mean is None:
            raise ValueError("running_mean, running_var: inference (training=False) needs the running statistics")
        if np.any(np.asarray(running_var) < 0):
            raise ValueError("running_var: variances must be >= 0")
    if x.ndim == 4 and mode == "spatial":
        y, xhat, inv_std, mean, var = _spatial_forward(x, gamma, beta, eps, training,
                                                       running_mean, running_var)
    else:
        if training:
            mean = x.mean(axis=axes, keepdims=True)
            xc = x - mean
            var = np.mean(xc * xc, axis=axes, keepdims=True)
        else:
            mean = as_float(running_mean, "running_mean", dtype=x.dtype).reshape(bshape)
            var = as_float(running_var, "running_var", dtype=x.dtype).reshape(bshape)
            xc = x - mean
        inv_std = 1.0 / np.sqrt(var + eps)     # eps > 0: constant inputs divide by sqrt(eps), not 0
        xhat = xc * inv_std
        y = gamma * xhat + beta
    if training and running_mean is not None:
        running_mean *= 1.0 - momentum
        running_mean += momentum * np.reshape(mean, pshape)
        running_var *= 1.0 - momentum
        running_var += (momentum * count / (count - 1)) * np.reshape(var, pshape)
    return y, BatchNormCache(xhat, inv_std, gamma, axes, bool(training))


def _spatial_forward(x, gamma, beta, eps, training, running_mean, running_var):
    """The spatial mode of an (N, C, H, W) input in the Cython kernel (two passes over x
    instead of NumPy's ~14; see im2colnet._kernels.batchnorm).
    Returns (y, xhat, inv_std (1, C, 1, 1), mean (C,), var (C,)); mean and var are the
    batch statistics in training, the running ones otherwise (float64)."""
    N, C = x.shape[:2]
    x3 = np.ascontiguousarray(x).reshape(N, C, -1)
    if training:
        mean, var = np.empty(C), np.empty(C)
    else:
        mean = np.array(running_mean, dtype=np.float64).reshape(C)
        var = np.array(running_var, dtype=np.float64).reshape(C)
    xhat, y = np.empty_like(x3), np.empty_like(x3)
    inv_std = np.empty(C, dtype=x.dtype)
    _bn.forward(x3, np.ascontiguousarray(gamma.reshape(C)), np.ascontiguousarray(beta.reshape(C)),
                mean, var, eps, training, xhat, y, inv_std, threads_worth(2 * x3.size))
    return y.reshape(x.shape), xhat.reshape(x.shape), inv_std.reshape(1, C, 1, 1), mean, var


def batchnorm_backward(dy, cache):
    """Gradients of batchnorm_forward. dy: x's shape -> (dx, dgamma, dbeta).

    dx has x's shape, dgamma and dbeta gamma's shape. In training the batch
    statistics depend on x; the compact closed form (Ioffe & Szegedy 2015,
    Alg. 1 back-propagated and simplified over the M values of a statistic) is
        dx = gamma * inv_std / M * (M dy - sum(dy) - xhat * sum(dy * xhat)),
    with the sums over the reduction axes; dgamma = sum(dy * xhat),
    dbeta = sum(dy). In inference mean and variance are constants:
    dx = gamma * inv_std * dy.
    """
    if not isinstance(cache, BatchNormCache):
        raise TypeError("cache: expected the cache returned by batchnorm_forward")
    xhat, inv_std, gamma, axes, training = cache
    dy = as_float(dy, "dy", dtype=xhat.dtype)
    if dy.shape != xhat.shape:
        raise ValueError(f"dy: shape {dy.shape} does not match the forward input's shape {xhat.shape}")
    pshape = tuple(s for k, s in enumerate(gamma.shape) if k not in axes)
    if xhat.ndim == 4 and axes == (0, 2, 3):   # the spatial mode of images: the kernel
        N, C = xhat.shape[:2]
        dx, dgamma, dbeta = np.empty((N, C, xhat[0, 0].size), dy.dtype), np.empty(C, dy.dtype), \
            np.empty(C, dy.dtype)
        _bn.backward(np.ascontiguousarray(dy).reshape(N, C, -1), xhat.reshape(N, C, -1),
                     np.ascontiguousarray(gamma.reshape(C)), np.ascontiguousarray(inv_std.reshape(C)),
                     training, dx, dgamma, dbeta, threads_worth(2 * dx.size))
        return dx.reshape(xhat.shape), dgamma, dbeta
    dbeta = dy.sum(axis=axes, keepdims=True)
    dgamma = np.sum(dy * xhat, axis=axes, keepdims=True)
    if training:
        count = dy.size // gamma.size
        dx = (gamma * inv_std / count) * (count * dy - dbeta - xhat * dgamma)
    else:
        dx = (gamma * inv_std) * dy
    return dx, dgamma.reshape(pshape), dbeta.reshape(pshape)
