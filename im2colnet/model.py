"""Model: a stack of layers with inference, evaluation, summary and its config.

The public Sequential (im2colnet.sequential) adds training (fit, im2colnet.training)
and saving (save, im2colnet.serialization) to this class.

Shapes are per sample: ``input_shape`` is e.g. (1, 28, 28); batches add N in front.
Parameters are named "<layer index>/<param name>" (e.g. "0/weight") for optimizers.

Determinism: epoch e visits the samples in the order
``np.random.default_rng([seed, e]).permutation(N)``, and the dropout masks of
step s of epoch e come from ``np.random.default_rng([seed, e, s])``. So the same
seed gives bit-identical weights, and fit(epochs=2) equals fit(epochs=1), then
fit(epochs=2, initial_epoch=1) with the same seed (also after save/load when
the optimizer's state is saved with the model). Bit-identical means on the same
build with the same thread settings: BLAS and OpenMP thread counts change the
order of floating-point sums (OMP_NUM_THREADS=1 vs 2 differ in the last bits).
"""
import copy

import numpy as np

from ._checks import as_float, as_labels, check_config, check_int, check_shape
from .layers import LAYERS
from .layers.activation import LeakyReLU, ReLU
from .layers.base import Layer, ParamLayer, as_generator
from .losses import CrossEntropyLoss, get_loss
from .state_dict import load_state_dict, state_dict

__all__ = ["Model", "Residual", "count_correct", "LAYER_TYPES"]



def _common_dtype(layers, what):
    """The one dtype of the layers that hold arrays (float32 when none does); mixed is a TypeError."""
    found = {}
    for i, layer in enumerate(layers):
        if layer.params or layer.buffers:
            found.setdefault(np.dtype(layer.dtype), (i, layer))
    if len(found) > 1:
        named = ", ".join(f"layer {i} ({type(layer).__name__}) is {dtype}" for dtype, (i, layer) in found.items())
        raise TypeError(f"{what}: one dtype per model, but {named}; call .astype() on the layers "
                        f"(or the model) to make them agree")
    return next(iter(found), np.dtype(np.float32))


def count_correct(scores, target):
    """Number of samples whose predicted class matches the target.

    scores (B, K): argmax; (B, 1): the sign (binary); target: labels (B,)
    (0/1 or -1/+1 in the binary case) or rows (B, K) compared by argmax.
    """
    s = scores.reshape(scores.shape[0], -1)
    if s.shape[1] == 1:
        return int(np.count_nonzero((s[:, 0] > 0) == (np.asarray(target).reshape(-1) > 0)))
    pred = s.argmax(axis=1)
    if target.ndim > 1:
        target = target.reshape(target.shape[0], -1).argmax(axis=1)
    return int(np.count_nonzero(pred == target))


class Model:
    """Layers applied one after the other.

    Sequential(layers, input_shape=None, name=None, seed=None). With input_shape (per
    sample) the stack's shapes are checked at construction: a layer that does not fit
    is a ValueError naming its index and type. The layers bring their parameters
    (made in their __init__); with ``seed`` (an int or np.random.Generator) the model
    draws them all again at once, reproducibly, by reset_parameters(seed): He-normal
    for weight layers followed by ReLU or LeakyReLU, Glorot otherwise. Layers whose sizes depend
    on the input are built by build() (or the first fit/forward).

    dtype: one for the whole model (float32 by default); astype() changes it, and a
    parameter of another dtype is a TypeError at the next forward (see Layer).
    """

    def __init__(self, layers, input_shape=None, name=None, seed=None):
        layers = list(layers)
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layers: item {i} is not a Layer, got {type(layer).__name__}")
        self.layers = layers
        self.name = "sequential" if name is None else str(name)
        self.input_shape = None
        self.metadata = {}
        self.dtype = _common_dtype(layers, "layers")
        self.optimizer = self.loss = None
        self.stop_training = False
        self.seed = seed
        if input_shape is not None:
            self.input_shape = check_shape(input_shape)
            self._shapes(self.input_shape)
        if seed is not None:
            self.reset_parameters(seed)

    # -- structure ----------------------------------------------------------------------
    def __len__(self):
        return len(self.layers)

    def __getitem__(self, index):
        return self.layers[index]

    def __iter__(self):
        return iter(self.layers)

    def _shapes(self, input_shape):
        """Per-sample output shape of every layer; a misfit names the layer."""
        shapes, shape = [], tuple(input_shape)
        for i, layer in enumerate(self.layers):
            try:
                shape = tuple(layer.output_shape(shape))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"layer {i} ({type(layer).__name__}): input shape {shape} "
                                 f"does not fit: {exc}") from None
            shapes.append(shape)
        return shapes

    @property
    def output_shape(self):
        if self.input_shape is None:
            raise ValueError("input_shape: unknown until the model is built or given input_shape")
        return self._shapes(self.input_shape)[-1] if self.layers else self.input_shape

    @property
    def built(self):
        return self.input_shape is not None and all(layer.built for layer in self.layers)

    def _choose_inits(self):
        """He-normal for a weight layer whose next activation is ReLU or LeakyReLU (whose
        default slope, 0.01, changes He's gain sqrt(2 / (1 + a^2)) by 0.005%), Glorot otherwise."""
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, ParamLayer) or "init" in vars(layer):
                continue
            nxt = next((l for l in self.layers[i + 1:] if not l.keeps_activation), None)
            layer.init = "he" if isinstance(nxt, (ReLU, LeakyReLU)) else "glorot"

    def build(self, input_shape=None, seed=None):
        """Fix the per-sample input_shape, check every layer against it, and create the
        parameters of layers whose sizes depend on the input (idempotent; existing
        parameters are kept: reset_parameters draws them again).

        seed: int or np.random.Generator for parameters that are created (default:
        the model's seed, else 0). Returns self.
        """
        if input_shape is None:
            input_shape = self.input_shape
        if input_shape is None:
            raise ValueError("input_shape: give it to build() or to Sequential(...)")
        shape = check_shape(input_shape)
        if self.input_shape is not None and shape != self.input_shape:
            raise ValueError(f"input_shape: the model expects samples of shape {self.input_shape}, "
                             f"got {shape}")
        self._shapes(shape)
        self.input_shape = shape
        self._choose_inits()
        if seed is None:
            seed = 0 if self.seed is None or isinstance(self.seed, np.random.Generator) else self.seed
        rng = as_generator(seed)
        for layer in self.layers:
            if not layer.built:
                layer.astype(self.dtype)
            shape = layer.build(shape, rng)
        return self

    def reset_parameters(self, seed=None):
        """Draw every built layer's parameters again, in layer order, from one generator
        (seed: int, np.random.Generator, or None for fresh entropy): He-normal for weight
        layers whose next activation is ReLU or LeakyReLU, Glorot otherwise; biases 0, batch norm
        gamma 1, beta 0 and its running statistics reset. Returns self."""
        self._choose_inits()
        rng = as_generator(seed)
        for layer in self.layers:
            layer.reset_parameters(rng)
        return self

    def astype(self, dtype):
        """Cast every parameter, gradient and buffer to float32 or float64 (in place); returns self.

        Inputs are then converted to this dtype by forward/fit/predict.
        """
        for layer in self.layers:
            layer.astype(dtype)
        self.dtype = np.dtype(dtype)
        return self

    def parameters(self):
        """dict "<index>/<name>" -> parameter array (the arrays themselves, not copies)."""
        return {f"{i}/{k}": v for i, layer in enumerate(self.layers) for k, v in layer.params.items()}

    def gradients(self):
        """dict "<index>/<name>" -> gradient of the last backward."""
        return {f"{i}/{k}": v for i, layer in enumerate(self.layers) for k, v in layer.grads.items()}

    def count_params(self):
        return sum(layer.count_params() for layer in self.layers)

    def state_dict(self):
        """{PyTorch nn.Sequential name: array copy}, e.g. "0.weight", "1.running_mean"
        (im2colnet.state_dict.state_dict)."""
        return state_dict(self)

    def load_state_dict(self, state, strict=True):
        """Copy arrays named as by state_dict() (e.g. a PyTorch model's) into the model
        (im2colnet.state_dict.load_state_dict)."""
        return load_state_dict(self, state, strict)

    def state_copy(self):
        """Copies of every parameter and buffer (see load_state)."""
        return [({k: v.copy() for k, v in layer.params.items()},
                 {k: v.copy() for k, v in layer.buffers.items()}) for layer in self.layers]

    def load_state(self, state):
        """Write a state_copy() back into the existing arrays (optimizers keep their references)."""
        for layer, (params, buffers) in zip(self.layers, state):
            for store, saved in ((layer.params, params), (layer.buffers, buffers)):
                for key, value in saved.items():
                    np.copyto(store[key], value)

    # -- computing ----------------------------------------------------------------------
    def _input(self, x, name="x"):
        for i, layer in enumerate(self.layers):
            if layer.dtype != self.dtype and (layer.params or layer.buffers):
                raise TypeError(f"layer {i} ({type(layer).__name__}) computes in {layer.dtype} but the "
                                f"model in {self.dtype}; call model.astype(np.{self.dtype.name}) "
                                f"(or np.{layer.dtype.name}) to make them agree")
        x = as_float(x, name, dtype=self.dtype)
        if x.ndim < 2 or x.shape[0] == 0:
            raise ValueError(f"{name}: expected a non-empty batch (N, ...) of samples, got shape {x.shape}")
        if self.input_shape is not None and x.shape[1:] != self.input_shape:
            raise ValueError(f"{name}: the model expects samples of shape {self.input_shape}, "
                             f"got a batch of shape {x.shape}")
        return x

    def forward(self, x, training=False):
        """Scores of a batch. x: (N, *input_shape) -> (N, *output_shape), the model's dtype.

        Builds the model (seed 0) on first use if build() was not called.
        """
        x = self._input(x)
        if not self.built:
            self.build(x.shape[1:])
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    __call__ = forward

    def backward(self, dy, need_dx=True):
        """Back-propagate dL/dscores through every layer (after forward(training=True)).

        Fills each layer's grads; returns dL/dx, or None with need_dx=False (the
        first layer then skips its input gradient).
        """
        for i in range(len(self.layers) - 1, -1, -1):
            dy = self.layers[i].backward(dy, need_dx=need_dx or i > 0)
        return dy if need_dx else None

    def predict(self, x, batch_size=256):
        """Class scores (N, *output_shape) in inference mode, computed batch_size samples at a time."""
        x = self._input(x)
        batch_size = check_int(batch_size, "batch_size")
        if not self.built:
            self.build(x.shape[1:])
        out = None
        for start in range(0, x.shape[0], batch_size):
            scores = self.forward(x[start:start + batch_size])
            if out is None:
                out = np.empty((x.shape[0],) + scores.shape[1:], dtype=scores.dtype)
            out[start:start + scores.shape[0]] = scores
        return out

    # -- targets and evaluation ---------------------------------------------------------
    def _targets(self, y, n, name):
        """Validated targets: int labels (N,) in [0, K) when the model has K > 1 outputs and
        y is 1-D; otherwise an array with N rows (binary labels, soft labels, regression)."""
        y = np.asarray(y)
        if y.ndim == 0 or y.shape[0] != n:
            raise ValueError(f"{name}: {y.shape[0] if y.ndim else 'a scalar'} targets for "
                             f"{n} samples (shape {y.shape} vs N={n})")
        classes = int(np.prod(self.output_shape))
        if y.ndim == 1 and classes > 1:
            return as_labels(y, name, classes, n)
        return as_float(y, name, dtype=self.dtype) if y.dtype.kind not in "iub" else y

    def _default_loss(self, loss):
        """The loss object: given (a loss, a name such as "hinge", or a class), else the one of
        the last fit, else CrossEntropyLoss."""
        if loss is not None:
            return get_loss(loss)
        return self.loss if self.loss is not None else CrossEntropyLoss()

    def evaluate(self, x, y, batch_size=256, loss=None):
        """dict(loss=..., accuracy=...): the mean loss and accuracy over (x, y) in inference mode.

        loss: defaults to the loss of the last fit, else CrossEntropyLoss.
        """
        x = self._input(x)
        batch_size = check_int(batch_size, "batch_size")
        if not self.built:
            self.build(x.shape[1:])
        y = self._targets(y, x.shape[0], "y")
        loss = self._default_loss(loss)
        total, correct = 0.0, 0
        for start in range(0, x.shape[0], batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            scores = self.forward(xb)
            value, _ = loss(scores, yb)
            total += float(value) * xb.shape[0]
            correct += count_correct(scores, yb)
        return {"loss": total / x.shape[0], "accuracy": correct / x.shape[0]}

    # -- description and persistence -----------------------------------------------------
    def summary(self):
        """A Keras-like table: index and type, output shape (None = batch), parameter count;
        then the totals of trainable parameters and of buffers (e.g. running statistics).
        Unbuilt layers are counted on a throw-away built copy (the model's weights stay unset);
        without an input_shape, shapes and unbuilt counts show as "?"."""
        shapes = self._shapes(self.input_shape) if self.input_shape is not None else None
        rows, params, buffers, unknown = [], 0, 0, 0
        for i, layer in enumerate(self.layers):
            probe = layer
            if not layer.built and shapes is not None:
                probe = copy.deepcopy(layer)
                probe.build(shapes[i - 1] if i else self.input_shape, np.random.default_rng(0))
            if probe.built:
                count = probe.count_params()
                params += count
                buffers += sum(b.size for b in probe.buffers.values())
            else:
                count = None
                unknown += 1
            shape = "?" if shapes is None else str((None,) + shapes[i])
            rows.append((f"{i} {type(layer).__name__}", shape, "?" if count is None else f"{count:,}"))
            if isinstance(probe, Residual):     # its sub-layers, indented (counted in its row)
                rows += probe.summary_rows(None if shapes is None else (shapes[i - 1] if i else self.input_shape))
        header = ("Layer (type)", "Output shape", "Param #")
        widths = [max(len(r[k]) for r in rows + [header]) + 2 for k in range(3)]

        def line(r):
            return r[0].ljust(widths[0]) + r[1].ljust(widths[1]) + r[2].rjust(widths[2])
        rule = "=" * sum(widths)
        out = [f'Model: "{self.name}"', line(header), rule] + [line(r) for r in rows] + [rule]
        out.append(f"Total params: {params:,}" + (f" (+ {unknown} layer(s) of unknown size)" if unknown else ""))
        out.append(f"Buffers (non-trainable): {buffers:,}")
        return "\n".join(out)

    def get_config(self):
        return {"name": self.name,
                "input_shape": None if self.input_shape is None else list(self.input_shape),
                "layers": [{"type": type(layer).__name__, "config": layer.get_config()}
                           for layer in self.layers]}

    @classmethod
    def from_config(cls, config):
        """A new (unbuilt) model from get_config()'s dict; unknown keys or layer types are a ValueError."""
        if not isinstance(config, dict):
            raise TypeError(f"config: expected a dict, got {type(config).__name__}")
        unknown = sorted(set(config) - {"name", "input_shape", "layers"})
        if unknown:
            raise ValueError(f"config: unknown key(s) {unknown} for Sequential")
        layers = []
        for i, entry in enumerate(config.get("layers", [])):
            if not isinstance(entry, dict) or set(entry) - {"type", "config"} or "type" not in entry:
                raise ValueError(f"config: layer {i} must be {{'type': ..., 'config': {{...}}}}, got {entry!r}")
            kind = entry["type"]
            if kind not in LAYER_TYPES:
                raise ValueError(f"config: layer {i} has unknown type {kind!r}; known: {sorted(LAYER_TYPES)}")
            layers.append(LAYER_TYPES[kind].from_config(entry.get("config", {})))
        return cls(layers, input_shape=config.get("input_shape"), name=config.get("name"))

    def __repr__(self):
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"{type(self).__name__}([\n  {inner}\n], input_shape={self.input_shape}, name={self.name!r})"


def _as_model(layers, name):
    """A Model from a Model (used as it is) or a list of layers."""
    if isinstance(layers, Model):
        return layers
    if isinstance(layers, Layer):
        return Model([layers])
    if isinstance(layers, (list, tuple)):
        return Model(layers)
    raise TypeError(f"{name}: expected a Sequential or a list of layers, got {type(layers).__name__}")


class Residual(Layer):
    """A residual connection (He et al. 2016): y = block(x) + shortcut(x).

    block: a Sequential (or a list of layers); shortcut: None for the identity, or
    a Sequential / list of layers (e.g. a 1x1 convolution with stride and batch
    norm, the "projection" that matches a block that changes the shape).
    Backward: dx = dblock(dy) + dshortcut(dy) (dy itself for the identity).

    The sub-layers' parameters, gradients and buffers appear in ``params``,
    ``grads`` and ``buffers`` as "block/<i>/<name>" and "shortcut/<i>/<name>"
    (the same arrays), so optimizers, saving and counting treat a Residual like
    any layer. An array assigned into ``params`` replaces the sub-layer's at the
    next forward. The config nests the two stacks' configs.
    """

    def __init__(self, block, shortcut=None):
        super().__init__()
        self.block = _as_model(block, "block")
        self.shortcut = None if shortcut is None else _as_model(shortcut, "shortcut")
        self.dtype = _common_dtype([layer for _, stack in self._parts() for layer in stack.layers],
                                   "Residual")
        self._collect()

    @property
    def built(self):
        return all(layer.built for _, stack in self._parts() for layer in stack.layers)

    def _parts(self):
        parts = [("block", self.block)]
        if self.shortcut is not None:
            parts.append(("shortcut", self.shortcut))
        return parts

    def children(self):
        """("block.<i>", layer) and ("shortcut.<i>", layer) for every sub-layer."""
        return [(f"{prefix}.{i}", layer) for prefix, stack in self._parts()
                for i, layer in enumerate(stack.layers)]

    def _collect(self):
        """Refill params/grads/buffers (in place: training loops keep these dicts) from the sub-layers."""
        for store, attr in ((self.params, "params"), (self.grads, "grads"), (self.buffers, "buffers")):
            store.clear()
            for prefix, stack in self._parts():
                for i, layer in enumerate(stack.layers):
                    for key, value in getattr(layer, attr).items():
                        store[f"{prefix}/{i}/{key}"] = value

    def _push(self):
        """Arrays assigned into params since the last collect go down to their sub-layer."""
        for name, value in self.params.items():
            prefix, index, key = name.split("/", 2)
            layer = dict(self._parts())[prefix].layers[int(index)]
            if layer.params.get(key) is not value:
                layer.params[key] = value

    def output_shape(self, input_shape):
        shapes = {}
        for prefix, stack in [("block", self.block), ("shortcut", self.shortcut)]:
            if stack is None or not stack.layers:
                shapes[prefix] = tuple(input_shape)
            else:
                try:
                    shapes[prefix] = stack._shapes(input_shape)[-1]
                except ValueError as exc:
                    raise ValueError(f"Residual {prefix}: {exc}") from None
        if shapes["block"] != shapes["shortcut"]:
            raise ValueError(f"Residual: the block's output shape {shapes['block']} differs from the "
                             f"shortcut's {shapes['shortcut']} (for input_shape {tuple(input_shape)}); "
                             f"give a shortcut (projection) that maps the input to the block's shape")
        return shapes["block"]

    def build(self, input_shape, rng=None):
        """Check the input shape against both stacks and build what is not built yet."""
        out = self.output_shape(check_shape(input_shape))
        for _, stack in self._parts():
            stack.astype(self.dtype)
            stack.build(input_shape, rng)
        self.input_shape = tuple(input_shape)
        self._collect()
        return out

    def reset_parameters(self, rng=None):
        rng = as_generator(rng)
        for _, stack in self._parts():
            stack.reset_parameters(rng)
        self._collect()
        return self

    def check_dtypes(self):
        self._push()
        for _, stack in self._parts():
            for layer in stack.layers:
                layer.check_dtypes()

    def astype(self, dtype):
        for _, stack in self._parts():
            stack.astype(dtype)
        self.dtype = np.dtype(dtype)
        self._collect()
        return self

    def zero_grads(self):
        for _, stack in self._parts():
            for layer in stack.layers:
                layer.zero_grads()
        self._collect()

    def forward(self, x, training=False):
        self._prepare(x)
        y = x
        for layer in self.block.layers:
            y = layer.forward(y, training)
        s = x
        if self.shortcut is not None:
            for layer in self.shortcut.layers:
                s = layer.forward(s, training)
        if y.shape != s.shape:
            raise ValueError(f"Residual: the block's output shape {y.shape[1:]} differs from the "
                             f"shortcut's {s.shape[1:]}")
        return y + s

    def backward(self, dy, need_dx=True):
        dx = self.block.backward(dy)
        dx = dx + (dy if self.shortcut is None else self.shortcut.backward(dy))
        self._collect()
        return dx

    def summary_rows(self, input_shape):
        """(name, output shape, parameter count) of each sub-layer, for Model.summary."""
        rows = []
        for prefix, stack in self._parts():
            shapes = stack._shapes(input_shape) if input_shape is not None else None
            for j, layer in enumerate(stack.layers):
                shape = "?" if shapes is None else str((None,) + shapes[j])
                rows.append((f"  {prefix}/{j} {type(layer).__name__}", shape, f"{layer.count_params():,}"))
        return rows

    def get_config(self):
        """{"block": {"layers": [...]}, "shortcut": None or {"layers": [...]}}: the stacks' layer lists."""
        def layers(stack):
            return None if stack is None else {"layers": stack.get_config()["layers"]}
        return {"block": layers(self.block), "shortcut": layers(self.shortcut)}

    @classmethod
    def from_config(cls, config):
        config = check_config(cls, config)
        if "block" not in config:
            raise ValueError("config: Residual needs 'block'")
        shortcut = config.get("shortcut")
        return cls(Model.from_config(config["block"]),
                   None if shortcut is None else Model.from_config(shortcut))

    def __repr__(self):
        inner = ", ".join(repr(layer) for layer in self.block.layers)
        short = "" if self.shortcut is None else \
            ", shortcut=[" + ", ".join(repr(layer) for layer in self.shortcut.layers) + "]"
        return f"Residual([{inner}]{short})"


#: Every layer type a model config may name (the loader rebuilds layers only from here).
LAYER_TYPES = {**LAYERS, "Residual": Residual}
