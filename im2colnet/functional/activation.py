"""ReLU forward and backward (Cython loops over flat contiguous memory)."""
import numpy as np

from ..runtime.threads import threads_worth
from .._checks import as_float
from .._kernels import relu as _relu

__all__ = ["relu_forward", "relu_backward"]


def relu_forward(x):
    """y = max(0, x) elementwise. x: any shape -> y: same shape and dtype (C order).

    A NaN stays NaN, as in max(0, x).
    """
    x = np.ascontiguousarray(as_float(x, "x"))
    y = np.empty_like(x)
    _relu.relu_forward(x.reshape(-1), y.reshape(-1), threads_worth(x.size))
    return y


def relu_backward(dy, x):
    """dx = dy where x > 0, else 0 (also 0 at x == 0). dy, x: one shape -> dx: that shape, dy's dtype."""
    dy = np.ascontiguousarray(as_float(dy, "dy"))
    x = np.ascontiguousarray(as_float(x, "x", dtype=dy.dtype))
    if dy.shape != x.shape:
        raise ValueError(f"dy: shape {dy.shape} does not match x's shape {x.shape}")
    dx = np.empty_like(dy)
    _relu.relu_backward(dy.reshape(-1), x.reshape(-1), dx.reshape(-1), threads_worth(x.size))
    return dx
