"""The Layer base class: parameters, gradients, buffers, configuration, dtype.

A layer is a thin object over the operations in :mod:`im2colnet.functional`:
``forward`` keeps what ``backward`` needs (only when ``training=True``),
``backward`` fills ``grads`` and returns the gradient of its input.

Shapes: ``input_shape`` and ``output_shape`` are per sample, without the
batch axis, e.g. ``(1, 28, 28)`` for an MNIST image or ``(400,)`` for features.
"""
import inspect

import numpy as np

from .._checks import check_shape
from .._config import Configurable

__all__ = ["Layer", "ParamLayer", "as_generator", "to_json"]

_FLOATS = (np.float32, np.float64)


def as_generator(rng):
    """An np.random.Generator from a Generator (kept), a seed, or None (fresh entropy)."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def to_json(value):
    """Tuples (also nested) as lists, so a config survives a JSON round trip unchanged."""
    if isinstance(value, (tuple, list)):
        return [to_json(v) for v in value]
    return value


class Layer(Configurable):
    """Base class of every layer.

    Attributes:
        params:  dict name -> ndarray, trainable (updated in place by optimizers).
        grads:   dict with the same keys, filled by ``backward``.
        buffers: dict name -> ndarray, non-trainable state (e.g. running statistics).
        dtype:   float32 (default) or float64; see :meth:`astype`.

    Parameters exist from construction: a layer that knows its sizes (Conv2d,
    Linear, BatchNorm2d, the recurrent layers, ...) draws them in ``__init__``
    from ``rng`` (an ``np.random.Generator`` or a seed; None: fresh entropy, so
    different every run; ``Sequential(..., seed=)`` re-draws a whole model
    reproducibly). ``build(input_shape)`` checks that an input fits and creates
    the parameters of the few layers whose sizes depend on the input (they
    are not ``built`` before). ``reset_parameters(rng)`` draws them again.

    One dtype per layer: every parameter and buffer has ``dtype``. An array of
    another dtype put into ``params`` is never converted silently: the next
    ``forward`` raises a TypeError naming the layer, the parameter and both
    dtypes; ``astype`` (``Sequential.astype``) changes the whole layer (model).

    Subclasses override ``forward``, ``backward``, ``output_shape``,
    ``get_config`` and, when they own parameters, ``_init_params``.
    ``keeps_activation`` is True for layers that may sit between a weight layer and
    its activation without changing which initialisation suits it (normalisation,
    pooling, dropout, flatten): Sequential looks past them for the activation.
    """
    keeps_activation = False

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.buffers = {}
        self.dtype = np.dtype(np.float32)
        self.input_shape = None     # the per-sample shape of the last build
        self._built = True          # parameter-free, or parameters made in __init__

    # -- building -----------------------------------------------------------------
    @property
    def built(self):
        """True when the parameters exist (False only for layers whose sizes depend on the input)."""
        return self._built

    def _create_params(self, rng):
        """For __init__ of layers that know their sizes: the parameters, now."""
        self._init_params(None, as_generator(rng))
        self._built = True

    def build(self, input_shape, rng=None):
        """Check that a per-sample input_shape fits; create the parameters if they do not exist yet.

        Idempotent: existing parameters are kept (a shape they do not fit is a ValueError).
        rng: an ``np.random.Generator`` (or a seed) for parameters that are created.
        Returns the output shape.
        """
        shape = check_shape(input_shape)
        out = self.output_shape(shape)
        if not self.built:
            self._init_params(shape, as_generator(rng))
            self._built = True
        self.input_shape = shape
        return out

    def _init_params(self, input_shape, rng):
        """Create params/grads/buffers (input_shape is None for layers that know their sizes);
        nothing for parameter-free layers."""

    def output_shape(self, input_shape):
        """The per-sample output shape for a per-sample input shape (identity here)."""
        return tuple(input_shape)

    def reset_parameters(self, rng=None):
        """Draw the parameters (and reset the buffers) again from rng (a Generator or a seed),
        writing into the existing arrays so that optimizers keep their references. Returns self."""
        if self.built and (self.params or self.buffers):
            old = {name: dict(store) for name, store in (("params", self.params), ("buffers", self.buffers))}
            self._init_params(self.input_shape, as_generator(rng))
            for name, store in (("params", self.params), ("buffers", self.buffers)):
                for key, value in store.items():
                    kept = old[name].get(key)
                    if kept is not None and kept.shape == value.shape and kept.dtype == value.dtype:
                        np.copyto(kept, value)
                        store[key] = kept
        return self

    def children(self):
        """[(name, layer)] of the layers this one is made of (none here; see Residual)."""
        return []

    def _prepare(self, x):
        """At the start of forward: build a layer not built yet, then check the dtypes."""
        if not self.built:
            self.build(np.shape(x)[1:])
        self.check_dtypes()

    def check_dtypes(self):
        """A TypeError naming the layer, the array and both dtypes when a parameter or buffer
        does not have the layer's dtype (it would otherwise be converted silently)."""
        for kind, store in (("params", self.params), ("buffers", self.buffers)):
            for key, value in store.items():
                if getattr(value, "dtype", None) != self.dtype:
                    raise TypeError(
                        f"{type(self).__name__}: {kind}[{key!r}] is {getattr(value, 'dtype', type(value).__name__)} "
                        f"but the layer computes in {self.dtype}; assign a {self.dtype} array, or change "
                        f"the whole layer (model) with .astype(np.{np.dtype(getattr(value, 'dtype', self.dtype)).name})")

    # -- computing ------------------------------------------------------------------
    def forward(self, x, training=False):
        raise NotImplementedError

    def backward(self, dy, need_dx=True):
        """Fill ``grads`` and return dL/dx (None when need_dx is False and skipping saves work)."""
        raise NotImplementedError

    def _saved(self, value):
        """What forward stored for backward, or a clear error when there is none."""
        if value is None:
            raise RuntimeError(f"{type(self).__name__}.backward: call forward(x, training=True) first")
        return value

    # -- dtype ----------------------------------------------------------------------
    def astype(self, dtype):
        """Cast parameters, gradients and buffers to float32 or float64 (in place); returns self."""
        dtype = np.dtype(dtype)
        if dtype not in _FLOATS:
            raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
        for store in (self.params, self.grads, self.buffers):
            for key, value in store.items():
                if value is not None and value.dtype != dtype:
                    store[key] = value.astype(dtype)
        self.dtype = dtype
        return self

    def zero_grads(self):
        for key, value in self.params.items():
            self.grads[key] = np.zeros_like(value)

    def count_params(self):
        return int(sum(p.size for p in self.params.values()))

    def __repr__(self):
        """Only the arguments that differ from their defaults (PyTorch's habit)."""
        sig = inspect.signature(type(self).__init__).parameters
        parts = []
        for key, value in self.get_config().items():
            default = sig[key].default if key in sig else inspect.Parameter.empty
            if default is inspect.Parameter.empty:
                parts.append(repr(value))
            elif to_json(default) != value:
                parts.append(f"{key}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


class ParamLayer(Layer):
    """A layer with a weight (and optional bias) initialised from fan-in/fan-out.

    ``init`` chooses the weight initialisation: ``"he"`` (He et al. 2015:
    N(0, 2/fan_in), for layers followed by a ReLU) or ``"glorot"`` (Glorot &
    Bengio 2010: N(0, 2/(fan_in + fan_out))). A layer starts with He;
    Sequential.reset_parameters (also Sequential(..., seed=)) chooses from the
    following layers and draws again. Biases start at 0.
    """
    init = "he"

    def _init_weight(self, shape, fan_in, fan_out, rng, bias_size):
        if self.init == "he":
            std = np.sqrt(2.0 / fan_in)
        elif self.init == "glorot":
            std = np.sqrt(2.0 / (fan_in + fan_out))
        else:
            raise ValueError(f"init: expected 'he' or 'glorot', got {self.init!r}")
        # Drawn in float64 then cast: the same seed gives the same weights in either dtype.
        self.params["weight"] = (std * rng.standard_normal(shape)).astype(self.dtype)
        if bias_size is not None:
            self.params["bias"] = np.zeros(bias_size, dtype=self.dtype)
        self.zero_grads()
