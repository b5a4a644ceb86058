"""Weights under PyTorch's names: ``Sequential.state_dict`` / ``load_state_dict``.

A Sequential of our layers corresponds to a ``torch.nn.Sequential`` of the
same layers; its ``state_dict`` names an array ``"<index>.<name>"``, where
every layer, with or without parameters, takes one index (as nn.Sequential
numbers its children). The names inside a layer are PyTorch's:

    Conv2d, Linear            weight, bias
    BatchNorm2d/1d            weight (our gamma), bias (our beta), running_mean,
                              running_var, num_batches_tracked
    RNN, LSTM, GRU            weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k}

``num_batches_tracked`` (int64, shape ()) is written as 0 and checked for its
shape on load, then ignored: our batch norm always uses ``momentum``. A
per-activation BatchNorm2d keeps its (C, H, W) arrays, which no PyTorch layer
has. No torch is imported: the values are NumPy arrays, e.g.
``{k: v.numpy() for k, v in torch_model.state_dict().items()}``.
A Residual's sub-layers are named like the children ``block`` and ``shortcut``
of a torch module: ``<index>.block.<i>.<name>``, ``<index>.shortcut.<i>.<name>``.
"""
from collections import namedtuple

import numpy as np

from .layers import BatchNorm1d, BatchNorm2d

__all__ = ["state_dict", "load_state_dict", "StateDictError", "IncompatibleKeys"]

#: Our BN parameter names -> PyTorch's.
_BN_NAMES = {"gamma": "weight", "beta": "bias"}
_TRACKED = "num_batches_tracked"

#: What load_state_dict(strict=False) returns (PyTorch's field names).
IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class StateDictError(RuntimeError, ValueError):
    """A state dict that does not fit the model: PyTorch raises RuntimeError here, and
    our convention for bad arguments is ValueError, so it is both."""


def _built(model):
    """The model with parameters: built from its input_shape when it is not built yet."""
    if not model.built:
        if model.input_shape is None:
            raise ValueError("model: its parameters do not exist yet; give Sequential(..., "
                             "input_shape=...) or call build(input_shape) first")
        model.build()
    return model


def _slots(model):
    """[(PyTorch name, the store dict, its key)] for every array, in layer order;
    num_batches_tracked has store None."""
    slots = []
    for i, layer in enumerate(model.layers):
        _add_slots(slots, str(i), layer)
    return slots


def _add_slots(slots, prefix, layer):
    """A layer's slots under ``prefix``; a layer made of others (Residual) names theirs
    ``<prefix>.<child>.<name>``, e.g. 3.block.0.weight, as a torch module with the same
    attributes would."""
    children = layer.children()
    if children:
        for name, child in children:
            _add_slots(slots, f"{prefix}.{name}", child)
        return
    is_bn = isinstance(layer, (BatchNorm1d, BatchNorm2d))
    for key in layer.params:
        slots.append((f"{prefix}.{_BN_NAMES.get(key, key) if is_bn else key}", layer.params, key))
    for key in layer.buffers:
        slots.append((f"{prefix}.{key}", layer.buffers, key))
    if is_bn:
        slots.append((f"{prefix}.{_TRACKED}", None, None))


def state_dict(model):
    """{PyTorch name: a copy of the array} of every parameter and buffer, in layer order."""
    return {name: (np.zeros((), np.int64) if store is None else store[key].copy())
            for name, store, key in _slots(_built(model))}


def _quoted(names):
    return ", ".join(f'"{n}"' for n in names)


def load_state_dict(model, state, strict=True):
    """Copy the arrays of ``state`` (PyTorch names) into the model's own arrays, in place.

    strict=True: any missing or unexpected key is a StateDictError listing them
    all, and nothing is copied. strict=False: the keys that match are copied and
    ``IncompatibleKeys(missing_keys, unexpected_keys)`` is returned. A key whose
    array has the wrong shape is an error either way (as in PyTorch). Values are
    cast to the model's dtype.
    """
    if not hasattr(state, "keys") or not hasattr(state, "__getitem__"):
        raise TypeError(f"state: expected a dict of arrays (name -> array), got {type(state).__name__}")
    slots = _slots(_built(model))
    expected = {name for name, _, _ in slots}
    missing = [name for name, _, _ in slots if name not in state]
    unexpected = [name for name in state if name not in expected]
    errors, values = [], {}
    for name, store, key in slots:
        if name not in state:
            continue
        try:
            value = np.asarray(state[name])
        except Exception as exc:  # noqa: BLE001 -- whatever the object, name the key
            raise TypeError(f"state[{name!r}]: not an array ({type(exc).__name__}: {exc})") from None
        if value.dtype.kind not in "fiub":
            raise TypeError(f"state[{name!r}]: expected a numeric array, got dtype {value.dtype}")
        want = () if store is None else store[key].shape
        if value.shape != want:
            errors.append(f"size mismatch for {name}: copying a param with shape {value.shape} "
                          f"from checkpoint, the shape in current model is {want}.")
        values[name] = value
    if strict:
        if unexpected:
            errors.insert(0, f"Unexpected key(s) in state_dict: {_quoted(unexpected)}.")
        if missing:
            errors.insert(0, f"Missing key(s) in state_dict: {_quoted(missing)}.")
    if errors:
        raise StateDictError(f"Error(s) in loading state_dict for {model.name}:\n\t" + "\n\t".join(errors))
    for name, store, key in slots:
        if store is not None and name in values:
            np.copyto(store[key], values[name], casting="unsafe")
    return IncompatibleKeys(missing, unexpected)
