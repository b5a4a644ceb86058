"""Linear, and the two layers that only reshape or mask its input: Flatten, Dropout."""
import numpy as np

from .. import functional as F
from .._checks import as_float, check_int, check_number
from .base import Layer, ParamLayer

__all__ = ["Linear", "Flatten", "Dropout"]


class Linear(ParamLayer):
    """Fully connected: y = x W^T + b (Full_F); weight (out_features, in_features), bias (out_features,).

    Input (N, in_features), or (N, C, H, W) with C*H*W = in_features (flattened
    row-major) -> output (N, out_features). A sequence (N, T, in_features) is
    mapped step by step -> (N, T, out_features).
    ``rng``: np.random.Generator or seed for the initial weight (He-normal), see Layer.
    """

    def __init__(self, in_features, out_features, bias=True, rng=None):
        super().__init__()
        self.in_features = check_int(in_features, "in_features")
        self.out_features = check_int(out_features, "out_features")
        self.bias = bool(bias)
        self._x = None
        self._create_params(rng)

    def _per_step(self, shape):
        """A sequence (T, in_features) is mapped step by step (the last axis)."""
        return len(shape) == 2 and shape[-1] == self.in_features and shape[0] > 1

    def output_shape(self, input_shape):
        if self._per_step(tuple(input_shape)):
            return (input_shape[0], self.out_features)
        size = int(np.prod(input_shape))
        if size != self.in_features:
            raise ValueError(f"input_shape: Linear({self.in_features}, {self.out_features}) expects "
                             f"{self.in_features} features, got input_shape {tuple(input_shape)} "
                             f"({size} features)")
        return (self.out_features,)

    def _init_params(self, input_shape, rng):
        self._init_weight((self.out_features, self.in_features), self.in_features,
                          self.out_features, rng, self.out_features if self.bias else None)

    def forward(self, x, training=False):
        self._prepare(x)
        shape = np.shape(x)
        if self._per_step(shape[1:]):     # (N, T, F): the steps as N*T rows
            y = self.forward(np.reshape(x, (-1, shape[-1])), training)
            return y.reshape(shape[0], shape[1], -1)
        self._x = x if training else None
        return F.linear_forward(x, self.params["weight"], self.params.get("bias"))

    def backward(self, dy, need_dx=True):
        x = self._saved(self._x)
        if np.ndim(dy) == 3:              # the sequence case of forward
            dx = self.backward(np.reshape(dy, (-1, np.shape(dy)[-1])), need_dx)
            return None if dx is None else dx.reshape(np.shape(dy)[0], np.shape(dy)[1], -1)
        dw, db = F.linear_backward_weights(dy, x)      # Full_grad: dW = dY^T x, db = sum dY
        self.grads["weight"] = dw
        if self.bias:
            self.grads["bias"] = db
        if not need_dx:
            return None
        return F.linear_backward_data(dy, self.params["weight"], x.shape)   # Full_BF: dx = dY W

    def get_config(self):
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.bias}


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1*d2*...) in row-major order; backward reshapes back."""
    keeps_activation = True

    def __init__(self):
        super().__init__()
        self._x_shape = None

    def output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

    def forward(self, x, training=False):
        x = as_float(x, "x")
        if x.ndim < 1:
            raise ValueError(f"x: expected a batch (N, ...), got shape {x.shape}")
        self._x_shape = x.shape if training else None
        return x.reshape(x.shape[0], -1)

    def backward(self, dy, need_dx=True):
        return as_float(dy, "dy").reshape(self._saved(self._x_shape))


class Dropout(Layer):
    """Inverted dropout (Srivastava et al. 2014): in training each value is dropped with
    probability p and the kept ones are scaled by 1/(1-p), so inference is the identity.

    The mask comes from ``self.rng`` (an np.random.Generator): ``seed`` seeds it for
    standalone use; Sequential.fit replaces it every step by a generator derived
    from (seed, epoch, step), which makes training reproducible.
    Any shape (N, ...) -> the same shape.
    """
    keeps_activation = True

    def __init__(self, p=0.5, seed=None):
        super().__init__()
        self.p = check_number(p, "p", 0.0, 1.0, high_open=True)   # the drop probability
        self.seed = None if seed is None else check_int(seed, "seed", low=0)
        self.rng = np.random.default_rng(seed)
        self._mask = None

    def forward(self, x, training=False):
        x = as_float(x, "x")
        if not training or self.p == 0:
            self._mask = None
            return x
        scale = x.dtype.type(1.0 / (1.0 - self.p))
        keep = self.rng.random(x.shape, dtype=x.dtype) >= self.p
        self._mask = keep * scale
        return x * self._mask

    def backward(self, dy, need_dx=True):
        dy = as_float(dy, "dy")
        if self._mask is None:          # p == 0 (or inference): the identity
            return dy
        return dy * self._mask

    def get_config(self):
        return {"p": self.p, "seed": self.seed}
