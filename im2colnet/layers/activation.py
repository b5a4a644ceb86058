"""Elementwise activations (ReLU, LeakyReLU, Tanh, Sigmoid, ELU) and Maxout.

ReLU and LeakyReLU run on the Cython kernels of im2colnet.functional. Tanh, Sigmoid, ELU and
Maxout have no functional op; their few NumPy lines below cite the formula
they implement. Every one keeps the input's shape and dtype (Maxout divides
the channel axis by ``pieces``).
"""
import numpy as np

from .. import functional as F
from .._checks import as_float, check_int, check_number
from .base import Layer

__all__ = ["ReLU", "LeakyReLU", "Tanh", "Sigmoid", "ELU", "Maxout"]


class ReLU(Layer):
    """y = max(0, x); dx = dy where x > 0 (0 at x == 0). Any shape (N, ...)."""

    def __init__(self):
        super().__init__()
        self._x = None

    def forward(self, x, training=False):
        y = F.relu_forward(x)
        self._x = y if training else None   # y > 0 exactly where x > 0
        return y

    def backward(self, dy, need_dx=True):
        return F.relu_backward(dy, self._saved(self._x))


class LeakyReLU(Layer):
    """y = x for x > 0, negative_slope * x otherwise; dx = dy for x > 0, negative_slope * dy
    otherwise (also at x == 0, as PyTorch). Any shape (N, ...)."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = check_number(negative_slope, "negative_slope")
        self._x = None

    def forward(self, x, training=False):
        y = F.leaky_relu_forward(x, self.negative_slope)
        if training:
            # for a slope >= 0, y > 0 exactly where x > 0, so y serves as x (no copy kept)
            self._x = y if self.negative_slope >= 0 else np.array(x, dtype=y.dtype)
        return y

    def backward(self, dy, need_dx=True):
        return F.leaky_relu_backward(dy, self._saved(self._x), self.negative_slope)

    def get_config(self):
        return {"negative_slope": self.negative_slope}


class Tanh(Layer):
    """y = tanh(x); dx = dy * (1 - y^2). Any shape (N, ...)."""

    def __init__(self):
        super().__init__()
        self._y = None

    def forward(self, x, training=False):
        y = np.tanh(as_float(x, "x"))
        self._y = y if training else None
        return y

    def backward(self, dy, need_dx=True):
        y = self._saved(self._y)
        return as_float(dy, "dy", dtype=y.dtype) * (1 - y * y)


class Sigmoid(Layer):
    """y = 1 / (1 + exp(-x)), computed as (1 + tanh(x/2)) / 2 (no overflow for large |x|);
    dx = dy * y * (1 - y). Any shape (N, ...)."""

    def __init__(self):
        super().__init__()
        self._y = None

    def forward(self, x, training=False):
        x = as_float(x, "x")
        y = np.tanh(x * x.dtype.type(0.5))
        y += 1
        y *= 0.5
        self._y = y if training else None
        return y

    def backward(self, dy, need_dx=True):
        y = self._saved(self._y)
        return as_float(dy, "dy", dtype=y.dtype) * (y * (1 - y))


class ELU(Layer):
    """Exponential linear unit (Clevert et al. 2015), any shape (N, ...):
    y = x for x > 0, alpha * (exp(x) - 1) otherwise;
    dy/dx = 1 for x > 0, alpha * exp(x) = y + alpha otherwise."""

    def __init__(self, alpha=1.0):
        super().__init__()
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) \
                or not np.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha: expected a finite number >= 0, got {alpha!r}")
        self.alpha = float(alpha)
        self._x = self._y = None

    def forward(self, x, training=False):
        x = as_float(x, "x")
        # expm1 of min(x, 0): exact near 0, and no overflow from the positive side.
        y = np.where(x > 0, x, self.alpha * np.expm1(np.minimum(x, 0)))
        if training:
            self._x, self._y = x, y
        return y

    def backward(self, dy, need_dx=True):
        x, y = self._saved(self._x), self._y
        dy = as_float(dy, "dy", dtype=y.dtype)
        return dy * np.where(x > 0, 1, y + self.alpha).astype(y.dtype, copy=False)

    def get_config(self):
        return {"alpha": self.alpha}


class Maxout(Layer):
    """Maxout (Goodfellow et al. 2013) over channels (N, C, H, W) or features (N, F).

    The C channels form C // pieces groups of ``pieces`` consecutive channels:
    y[n, g, ...] = max_k x[n, g*pieces + k, ...], k < pieces. The gradient goes
    to the winner of each group (the first one on ties).
    Input (N, C, ...) with C divisible by pieces -> output (N, C // pieces, ...).
    """

    def __init__(self, pieces):
        super().__init__()
        self.pieces = check_int(pieces, "pieces")
        self._winner = self._x_shape = None

    def output_shape(self, input_shape):
        c = input_shape[0]
        if c % self.pieces:
            raise ValueError(f"input_shape: Maxout(pieces={self.pieces}) needs the channel/feature "
                             f"count divisible by pieces, got input_shape {tuple(input_shape)}")
        return (c // self.pieces,) + tuple(input_shape[1:])

    def _grouped(self, x):
        """x (N, C, ...) as (N, C // pieces, pieces, rest)."""
        if x.ndim < 2:
            raise ValueError(f"x: expected (N, C, ...) or (N, F), got shape {x.shape}")
        self.output_shape(x.shape[1:])
        return x.reshape(x.shape[0], x.shape[1] // self.pieces, self.pieces, -1)

    def forward(self, x, training=False):
        x = as_float(x, "x")
        groups = self._grouped(x)
        winner = groups.argmax(axis=2)[:, :, None]           # first maximum on ties
        y = np.take_along_axis(groups, winner, axis=2)
        if training:
            self._winner, self._x_shape = winner, x.shape
        return y.reshape((x.shape[0], x.shape[1] // self.pieces) + x.shape[2:])

    def backward(self, dy, need_dx=True):
        winner, shape = self._saved(self._winner), self._x_shape
        dy = as_float(dy, "dy")
        n, groups = shape[0], shape[1] // self.pieces
        dx = np.zeros((n, groups, self.pieces, winner.shape[-1]), dtype=dy.dtype)
        np.put_along_axis(dx, winner, dy.reshape(n, groups, 1, -1), axis=2)
        return dx.reshape(shape)

    def get_config(self):
        return {"pieces": self.pieces}
