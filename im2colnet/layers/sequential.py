"""Sequential: a stack of layers with training (fit), inference, summary and saving.

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
import time

import numpy as np

from .._checks import as_float, as_labels
from .interrupt import deferred_interrupt
from .base import Layer, ParamLayer, check_int, check_shape
from .activations import ReLU
from .callbacks import Callback, History
from .dense import Dropout, Flatten
from .normalization import _BatchNorm
from .pooling import _Pool2d
from .progress import ProgressBar

__all__ = ["Sequential"]

# Layers that sit between a weight layer and its activation without changing
# which initialisation suits it.
_TRANSPARENT = (_BatchNorm, Dropout, _Pool2d, Flatten)


def _current_lr(optimizer):
    """The learning rate the optimizer uses this epoch (after its schedule), if it says."""
    for name in ("current_lr", "lr"):
        value = getattr(optimizer, name, None)
        if callable(value):
            value = value()
        if isinstance(value, (int, float, np.floating)):
            return float(value)
    return None


def _count_correct(scores, target):
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


class Sequential:
    """Layers applied one after the other.

    Sequential(layers, input_shape=None, name=None). With input_shape (per sample)
    the stack's shapes are checked at construction: a layer that does not fit is a
    ValueError naming its index and type. Weights are created by build() (or by the
    first fit/forward), He-normal for weight layers followed by ReLU, Glorot otherwise.
    """

    def __init__(self, layers, input_shape=None, name=None):
        layers = list(layers)
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layers: item {i} is not a Layer, got {type(layer).__name__}")
        self.layers = layers
        self.name = "sequential" if name is None else str(name)
        self.input_shape = None
        self.metadata = {}
        self.dtype = np.dtype(np.float32)
        self.optimizer = self.loss = None
        self.stop_training = False
        if input_shape is not None:
            self.input_shape = check_shape(input_shape)
            self._shapes(self.input_shape)

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
        """He-normal for a weight layer whose next activation is ReLU, Glorot otherwise."""
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, ParamLayer) or "init" in vars(layer):
                continue
            nxt = next((l for l in self.layers[i + 1:] if not isinstance(l, _TRANSPARENT)), None)
            layer.init = "he" if isinstance(nxt, ReLU) else "glorot"

    def build(self, input_shape=None, seed=0):
        """Create every layer's parameters for a per-sample input_shape (idempotent).

        seed: int or np.random.Generator for the initial weights. Returns self.
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
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        for layer in self.layers:
            if not layer.built:
                layer.dtype = self.dtype
            shape = layer.build(shape, rng)
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
        from ..state_dict import state_dict
        return state_dict(self)

    def load_state_dict(self, state, strict=True):
        """Copy arrays named as by state_dict() (e.g. a PyTorch model's) into the model
        (im2colnet.state_dict.load_state_dict)."""
        from ..state_dict import load_state_dict
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

    # -- training -------------------------------------------------------------------------
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
        from ..losses import CrossEntropyLoss, get_loss
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
            correct += _count_correct(scores, yb)
        return {"loss": total / x.shape[0], "accuracy": correct / x.shape[0]}

    def fit(self, x, y, epochs, batch_size=64, optimizer=None, loss=None, validation_data=None,
            callbacks=(), verbose=1, seed=None, initial_epoch=0):
        """Train with mini-batch gradient descent; returns a History.

        x: (N, *input_shape); y: int labels (N,), or targets with N rows.
        epochs: the index to stop at (run epochs initial_epoch .. epochs-1, as Keras does).
        optimizer: an optimizer object or name ("sgd", "adam"; default Adam());
        loss: a loss object or name ("cross_entropy", "hinge", ...; default CrossEntropyLoss()).
        validation_data: (x_val, y_val), evaluated after each epoch.
        verbose: 0 silent, 1 progress bar on stderr, 2 one line per epoch.
        seed: shuffling and dropout (and the initial weights if the model is not built
        yet); None picks a random one (recorded in history.params["seed"]).
        A non-finite loss or gradient raises FloatingPointError naming epoch and step.
        """
        epochs = check_int(epochs, "epochs", low=0)
        batch_size = check_int(batch_size, "batch_size")
        initial_epoch = check_int(initial_epoch, "initial_epoch", low=0)
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose: expected 0, 1 or 2, got {verbose!r}")
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (1 << 63))
        seed = check_int(seed, "seed", low=0)
        x = self._input(x)
        n = x.shape[0]
        if not self.built:
            self.build(x.shape[1:], seed=seed)
        y = self._targets(y, n, "y")
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data: expected a pair (x_val, y_val)")
            x_val = self._input(validation_data[0], "validation_data[0]")
            y_val = self._targets(validation_data[1], x_val.shape[0], "validation_data[1]")
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks: expected Callback objects, got {type(cb).__name__}")
        from ..optim import get_optimizer
        optimizer = get_optimizer("Adam" if optimizer is None else optimizer)
        self.loss = loss = self._default_loss(loss)
        self.optimizer = optimizer

        history = History()
        history.params = {"epochs": epochs, "batch_size": batch_size, "samples": n,
                          "seed": seed, "initial_epoch": initial_epoch}
        everyone = [history, *callbacks]
        batch_listeners = [cb for cb in callbacks
                           if type(cb).on_batch_end is not Callback.on_batch_end
                           or "on_batch_end" in vars(cb)]
        for cb in everyone:
            cb.set_model(self)
            cb.on_train_begin({})
        self.stop_training = False
        params = self.parameters()
        # (name, grads dict, key): gradients are new arrays each step, looked up by key.
        grad_slots = [(f"{i}/{k}", layer.grads, k)
                      for i, layer in enumerate(self.layers) for k in layer.params]
        dropouts = [layer for layer in self.layers if isinstance(layer, Dropout)]

        with deferred_interrupt() as interrupt:
            for epoch in range(initial_epoch, epochs):
                if hasattr(optimizer, "set_epoch"):
                    optimizer.set_epoch(epoch)
                for cb in everyone:
                    cb.on_epoch_begin(epoch, {})
                order = np.random.default_rng([seed, epoch]).permutation(n)
                bar = ProgressBar(n, epoch, epochs, verbose)
                loss_sum, correct, done = 0.0, 0, 0
                for step, start in enumerate(range(0, n, batch_size)):
                    if interrupt.requested:   # Ctrl-C: stop between steps (see interrupt.py)
                        raise KeyboardInterrupt(f"training interrupted by the user at epoch {epoch}, "
                                                f"step {step} (0-based), after a completed step")
                    index = order[start:start + batch_size]
                    xb, yb = np.take(x, index, axis=0), np.take(y, index, axis=0)
                    if dropouts:
                        rng = np.random.default_rng([seed, epoch, step])
                        for layer in dropouts:
                            layer.rng = rng
                    scores = xb
                    for layer in self.layers:
                        scores = layer.forward(scores, True)
                    value, dscores = loss(scores, yb)
                    value = float(value)
                    if not np.isfinite(value):
                        raise FloatingPointError(f"epoch {epoch}, step {step} (0-based): the loss is {value}")
                    self.backward(dscores, need_dx=False)
                    grads = {}
                    for name, store, key in grad_slots:
                        g = store[key]
                        if not np.isfinite(g).all():
                            raise FloatingPointError(f"epoch {epoch}, step {step} (0-based): the gradient "
                                                     f"of parameter {name} is not finite (NaN or inf)")
                        grads[name] = g
                    optimizer.step(params, grads)
                    size, hits = index.shape[0], _count_correct(scores, yb)
                    loss_sum += value * size
                    correct += hits
                    done += size
                    bar.update(done, loss_sum / done, correct / done)
                    for cb in batch_listeners:
                        cb.on_batch_end(step, {"loss": value, "accuracy": hits / size, "size": size})
                logs = {"loss": loss_sum / n, "accuracy": correct / n}
                if validation_data is not None:
                    val = self.evaluate(x_val, y_val, loss=loss)
                    logs["val_loss"], logs["val_accuracy"] = val["loss"], val["accuracy"]
                logs["lr"] = _current_lr(optimizer)
                logs["time"] = time.perf_counter() - bar.start
                bar.close(logs)
                for cb in everyone:
                    cb.on_epoch_end(epoch, logs)
                if self.stop_training:
                    break
        for cb in everyone:
            cb.on_train_end({})
        return history

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
        from . import LAYERS
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
            if kind not in LAYERS:
                raise ValueError(f"config: layer {i} has unknown type {kind!r}; known: {sorted(LAYERS)}")
            layers.append(LAYERS[kind].from_config(entry.get("config", {})))
        return cls(layers, input_shape=config.get("input_shape"), name=config.get("name"))

    def save(self, path, metadata=None, optimizer=None):
        """Write the model (architecture, weights, buffers, metadata, optionally the
        optimizer's state) to an HDF5 file: im2colnet.serialization.save_model."""
        from ..serialization import save_model
        return save_model(self, path, metadata=metadata, optimizer=optimizer)

    def __repr__(self):
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential([\n  {inner}\n], input_shape={self.input_shape}, name={self.name!r})"
