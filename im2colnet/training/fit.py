"""The training loop: mini-batch gradient descent over a Model (Sequential.fit).

Determinism: epoch e visits the samples in the order
``np.random.default_rng([seed, e]).permutation(N)``, and the dropout masks of
step s of epoch e come from ``np.random.default_rng([seed, e, s])`` (see im2colnet.model;
rank r > 0 of a distributed fit draws its masks from ``[seed, e, s, r]``).

The loop calls a few hooks of a "parallel" object: _OneProcess here (they change nothing),
or training/distributed.py's DataParallel, which spreads each step over MPI ranks.
"""
import time

import numpy as np

from .._checks import check_int
from ..layers.linear import Dropout
from ..model import count_correct
from ..optim import get_optimizer
from .callbacks import Callback, History
from .interrupt import deferred_interrupt
from .progress import ProgressBar

__all__ = ["fit"]


def _current_lr(optimizer):
    """The learning rate the optimizer uses this epoch (after its schedule), if it says."""
    for name in ("current_lr", "lr"):
        value = getattr(optimizer, name, None)
        if callable(value):
            value = value()
        if isinstance(value, (int, float, np.floating)):
            return float(value)
    return None


class _OneProcess:
    """The loop's hooks when this process trains alone: no shard, no average."""
    rank, size, is_root, where = 0, 1, True, None

    def agree(self, value):
        return value

    def start(self, model, optimizer, samples):
        pass

    def shard(self, index):
        return index

    def reduce_step(self, grads, loss, hits, count, total):
        return grads, loss, hits

    def end_epoch(self, model):
        pass

    def evaluate(self, model, x, y, loss):
        return model.evaluate(x, y, loss=loss)

    def fail(self, exc):
        pass


def _parallel(distributed):
    """The hooks object for fit's ``distributed`` argument."""
    if distributed is None or distributed is False:
        return _OneProcess()
    if distributed is True:
        try:   # imported here, not at the top: it needs the optional mpi4py
            from . import distributed as mpi_training
        except ImportError as exc:
            raise ImportError(f"distributed=True needs mpi4py and an MPI: pip install "
                              f"\"im2colnet[mpi]\" ({exc})") from None
        return mpi_training.DataParallel()
    if all(hasattr(distributed, name) for name in vars(_OneProcess) if not name.startswith("_")):
        return distributed
    raise TypeError(f"distributed: expected True, False or a DataParallel object, "
                    f"got {type(distributed).__name__}")


def _local_step(model, xb, yb, loss, grad_slots, epoch, step):
    """Forward and backward of one batch: (mean loss, correct answers, name -> gradient)."""
    scores = xb
    for layer in model.layers:
        scores = layer.forward(scores, True)
    value, dscores = loss(scores, yb)
    value = float(value)
    if not np.isfinite(value):
        raise FloatingPointError(f"epoch {epoch}, step {step} (0-based): the loss is {value}")
    model.backward(dscores, need_dx=False)
    grads = {}
    for name, store, key in grad_slots:
        g = store[key]
        if not np.isfinite(g).all():
            raise FloatingPointError(f"epoch {epoch}, step {step} (0-based): the gradient "
                                     f"of parameter {name} is not finite (NaN or inf)")
        grads[name] = g
    return value, count_correct(scores, yb), grads


def fit(model, x, y, epochs, batch_size=64, optimizer=None, loss=None, validation_data=None,
        callbacks=(), verbose=1, seed=None, initial_epoch=0, distributed=False):
    """Train with mini-batch gradient descent; returns a History.

    x: (N, *input_shape); y: int labels (N,), or targets with N rows.
    epochs: the index to stop at (run epochs initial_epoch .. epochs-1, as Keras does).
    optimizer: an optimizer object or name ("sgd", "adam"; default Adam());
    loss: a loss object or name ("cross_entropy", "hinge", ...; default CrossEntropyLoss()).
    validation_data: (x_val, y_val), evaluated after each epoch.
    verbose: 0 silent, 1 progress bar on stderr, 2 one line per epoch.
    seed: shuffling and dropout (and the parameters of layers that are not built yet;
    the others keep theirs: Sequential(..., seed=) or reset_parameters(seed) draws them);
    None picks a random one (recorded in history.params["seed"]).
    A non-finite loss or gradient raises FloatingPointError naming epoch and step.
    distributed: True to train data-parallel over MPI.COMM_WORLD under mpiexec (one process
    per rank; batch_size is the global batch, see im2colnet.training.distributed), or a
    training.distributed.DataParallel object for other settings.
    """
    parallel = _parallel(distributed)
    try:
        return _train(parallel, model, x, y, epochs, batch_size, optimizer, loss,
                      validation_data, callbacks, verbose, seed, initial_epoch)
    except BaseException as exc:
        parallel.fail(exc)     # distributed: says where, and stops every rank
        raise


def _train(parallel, model, x, y, epochs, batch_size, optimizer, loss, validation_data,
           callbacks, verbose, seed, initial_epoch):
    """fit's body, on the hooks of ``parallel``."""
    parallel.where = None    # (epoch, step) once the loop runs; (epoch, None) after its steps
    epochs = check_int(epochs, "epochs", low=0)
    batch_size = check_int(batch_size, "batch_size")
    initial_epoch = check_int(initial_epoch, "initial_epoch", low=0)
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose: expected 0, 1 or 2, got {verbose!r}")
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (1 << 63))
    seed = check_int(parallel.agree(seed), "seed", low=0)
    x = model._input(x)
    n = x.shape[0]
    if not model.built:
        model.build(x.shape[1:], seed=seed)
    y = model._targets(y, n, "y")
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data: expected a pair (x_val, y_val)")
        x_val = model._input(validation_data[0], "validation_data[0]")
        y_val = model._targets(validation_data[1], x_val.shape[0], "validation_data[1]")
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks: expected Callback objects, got {type(cb).__name__}")
    optimizer = get_optimizer("Adam" if optimizer is None else optimizer)
    model.loss = loss = model._default_loss(loss)
    model.optimizer = optimizer

    history = History()
    history.params = {"epochs": epochs, "batch_size": batch_size, "samples": n,
                      "seed": seed, "initial_epoch": initial_epoch, "ranks": parallel.size}
    # Checkpoints (root_only callbacks) and the progress bar belong to rank 0 alone.
    everyone = [history, *(cb for cb in callbacks
                           if parallel.is_root or not getattr(cb, "root_only", False))]
    if not parallel.is_root:
        verbose = 0
    batch_listeners = [cb for cb in everyone[1:]
                       if type(cb).on_batch_end is not Callback.on_batch_end
                       or "on_batch_end" in vars(cb)]
    for cb in everyone:
        cb.set_model(model)
        cb.on_train_begin({})
    model.stop_training = False
    params = model.parameters()
    # (name, grads dict, key): gradients are new arrays each step, looked up by key.
    grad_slots = [(f"{i}/{k}", layer.grads, k)
                  for i, layer in enumerate(model.layers) for k in layer.params]
    dropouts = [layer for layer in model.layers if isinstance(layer, Dropout)]

    parallel.start(model, optimizer, n)
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
                parallel.where = (epoch, step)
                if interrupt.requested:   # Ctrl-C: stop between steps (see interrupt.py)
                    raise KeyboardInterrupt(f"training interrupted by the user at epoch {epoch}, "
                                            f"step {step} (0-based), after a completed step")
                index = order[start:start + batch_size]
                mine = parallel.shard(index)
                if dropouts:
                    key = [seed, epoch, step] + ([parallel.rank] if parallel.rank else [])
                    rng = np.random.default_rng(key)
                    for layer in dropouts:
                        layer.rng = rng
                value, hits, grads = (_local_step(model, np.take(x, mine, axis=0),
                                                  np.take(y, mine, axis=0), loss, grad_slots,
                                                  epoch, step)
                                      if mine.size else (0.0, 0, None))
                size = index.shape[0]
                grads, value, hits = parallel.reduce_step(grads, value, hits, mine.size, size)
                optimizer.step(params, grads)
                loss_sum += value * size
                correct += hits
                done += size
                bar.update(done, loss_sum / done, correct / done)
                for cb in batch_listeners:
                    cb.on_batch_end(step, {"loss": value, "accuracy": hits / size, "size": size})
            parallel.where = (epoch, None)
            parallel.end_epoch(model)
            logs = {"loss": loss_sum / n, "accuracy": correct / n}
            if validation_data is not None:
                val = parallel.evaluate(model, x_val, y_val, loss)
                logs["val_loss"], logs["val_accuracy"] = val["loss"], val["accuracy"]
            logs["lr"] = _current_lr(optimizer)
            logs["time"] = time.perf_counter() - bar.start
            bar.close(logs)
            for cb in everyone:
                cb.on_epoch_end(epoch, logs)
            if parallel.agree(model.stop_training):   # rank 0's callbacks decide
                model.stop_training = True
                break
    for cb in everyone:
        cb.on_train_end({})
    return history
