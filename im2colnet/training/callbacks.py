"""Training callbacks: History, EarlyStopping, ModelCheckpoint, LambdaCallback.

Sequential.fit calls, on each callback: set_model(model), on_train_begin(logs),
on_epoch_begin(epoch, logs), on_batch_end(step, logs) (logs: loss, accuracy,
size of the step), on_epoch_end(epoch, logs) (logs: the epoch's loss, accuracy,
val_loss, val_accuracy, lr, time) and on_train_end(logs). A callback stops
training by setting ``model.stop_training = True``.
"""
import math

import numpy as np

__all__ = ["Callback", "History", "LambdaCallback", "EarlyStopping", "ModelCheckpoint"]


class Callback:
    """Base class: every hook does nothing.

    root_only: in a distributed fit, only rank 0 calls this callback (checkpoints, logs).
    """
    model = None
    root_only = False

    def set_model(self, model):
        self.model = model

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_batch_end(self, step, logs=None):
        pass


class History(Callback):
    """What fit returns: ``history[metric]`` is the list of per-epoch values
    (loss, accuracy, val_loss, val_accuracy, lr, time); ``epoch`` lists the epochs."""

    def __init__(self):
        self.history = {}
        self.epoch = []
        self.params = {}

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)


class LambdaCallback(Callback):
    """A callback from plain functions: on_epoch_end(epoch, logs), on_batch_end(step, logs), ..."""

    def __init__(self, on_epoch_end=None, on_batch_end=None, on_train_begin=None,
                 on_train_end=None):
        for name, fn in (("on_epoch_end", on_epoch_end), ("on_batch_end", on_batch_end),
                         ("on_train_begin", on_train_begin), ("on_train_end", on_train_end)):
            if fn is not None:
                if not callable(fn):
                    raise TypeError(f"{name}: expected a function, got {fn!r}")
                setattr(self, name, fn)


def _better_fn(monitor, mode, min_delta):
    """value, best -> bool: "min" for losses, "max" for accuracies ("auto" decides by name)."""
    if mode == "auto":
        mode = "max" if "acc" in monitor else "min"
    if mode == "min":
        return lambda value, best: value < best - min_delta
    if mode == "max":
        return lambda value, best: value > best + min_delta
    raise ValueError(f"mode: expected 'auto', 'min' or 'max', got {mode!r}")


def _monitored(logs, monitor, who):
    if monitor not in logs:
        raise KeyError(f"{who}: monitor {monitor!r} is not among the epoch's metrics "
                       f"{sorted(logs)} (val_* needs validation_data)")
    return float(logs[monitor])


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than min_delta for ``patience`` epochs.

    restore_best: at the end, put back the weights (and buffers) of the best epoch.
    """

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto",
                 restore_best=False):
        self.monitor, self.patience = monitor, int(patience)
        self.min_delta, self.restore_best = float(min_delta), bool(restore_best)
        self._better = _better_fn(monitor, mode, self.min_delta)
        self.best = None
        self.best_epoch = None
        self.stopped_epoch = None
        self._wait = 0
        self._best_state = None

    def on_train_begin(self, logs=None):
        self.best, self.best_epoch, self.stopped_epoch = None, None, None
        self._wait, self._best_state = 0, None

    def on_epoch_end(self, epoch, logs=None):
        value = _monitored(logs or {}, self.monitor, "EarlyStopping")
        if self.best is None or (math.isfinite(value) and self._better(value, self.best)):
            self.best, self.best_epoch, self._wait = value, epoch, 0
            if self.restore_best:
                self._best_state = self.model.state_copy()
            return
        self._wait += 1
        if self._wait > self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best and self._best_state is not None:
            self.model.load_state(self._best_state)


class ModelCheckpoint(Callback):
    """Save the model after each epoch with ``model.save(path)``.

    ``path`` may contain ``{epoch}`` (1-based) and metric fields, e.g.
    "ckpt-{epoch:02d}-{val_loss:.3f}.h5". With save_best_only, save only when
    ``monitor`` (default val_loss) improves. The optimizer's state is saved
    too when the model is being trained with one (to resume with initial_epoch).
    """

    def __init__(self, path, monitor=None, save_best_only=False, mode="auto"):
        self.path, self.save_best_only = str(path), bool(save_best_only)
        self.monitor = monitor if monitor is not None else "val_loss"
        self._better = _better_fn(self.monitor, mode, 0.0)
        self.best = None
        self.saved = []

    root_only = True     # one writer of the file in a distributed fit

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            value = _monitored(logs, self.monitor, "ModelCheckpoint")
            if not np.isfinite(value) or (self.best is not None and not self._better(value, self.best)):
                return
            self.best = value
        path = self.path.format(epoch=epoch + 1, **logs)
        self.model.save(path, metadata={"epoch": epoch + 1, **{k: v for k, v in logs.items()
                                                                if isinstance(v, (int, float))}},
                        optimizer=getattr(self.model, "optimizer", None))
        self.saved.append(path)
