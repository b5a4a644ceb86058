"""ReLU and LeakyReLU forward and backward (Cython loops over flat contiguous memory)."""
import numpy as np

from ..runtime.threads import threads_worth
from .._checks import as_float, check_number
from .._kernels import relu as _relu

__all__ = ["relu_forward", "relu_backward", "leaky_relu_forward", "leaky_relu_backward"]


def _forward(kernel, x, *args):
    """y = kernel(x) elementwise: x of any shape -> y of its shape and dtype (C order)."""
    x = np.ascontiguousarray(as_float(x, "x"))
    y = np.empty_like(x)
    kernel(x.reshape(-1), y.reshape(-1), *args, threads_worth(x.size))
    return y


def _backward(kernel, dy, x, *args):
    """dx = kernel(dy, x) elementwise: dy, x of one shape -> dx of that shape, dy's dtype."""
    dy = np.ascontiguousarray(as_float(dy, "dy"))
    x = np.ascontiguousarray(as_float(x, "x", dtype=dy.dtype))
    if dy.shape != x.shape:
        raise ValueError(f"dy: shape {dy.shape} does not match x's shape {x.shape}")
    dx = np.empty_like(dy)
    kernel(dy.reshape(-1), x.reshape(-1), dx.reshape(-1), *args, threads_worth(x.size))
    return dx


def relu_forward(x):
    """y = max(0, x) elementwise. x: any shape -> y: same shape and dtype (C order).

    A NaN stays NaN, as in max(0, x).
    """
    return _forward(_relu.relu_forward, x)


def relu_backward(dy, x):
    """dx = dy where x > 0, else 0 (also 0 at x == 0). dy, x: one shape -> dx: that shape, dy's dtype."""
    return _backward(_relu.relu_backward, dy, x)


def leaky_relu_forward(x, negative_slope=0.01):
    """y = x where x > 0, else negative_slope * x. x: any shape -> y: same shape and dtype."""
    return _forward(_relu.leaky_relu_forward, x, check_number(negative_slope, "negative_slope"))


def leaky_relu_backward(dy, x, negative_slope=0.01):
    """dx = dy where x > 0, else negative_slope * dy (also at x == 0, as PyTorch).

    dy, x: one shape (x the forward input) -> dx: that shape, dy's dtype.
    """
    return _backward(_relu.leaky_relu_backward, dy, x, check_number(negative_slope, "negative_slope"))
