"""Model files: one HDF5 file per model, no pickle, nothing executed on load.

Layout (documented for plain-h5py readers in docs/model-format.md):

    /                      attributes:
        format             "im2colnet-model"
        format_version     1 (int): files newer than the library are refused
        library_version    the im2colnet version that wrote the file
        dtype              "float32" or "float64": the dtype of every weight
        architecture       JSON: Sequential.get_config() (layer types and configs, input shape)
        metadata           JSON: dataset, test accuracy, training settings, date, ...
        weights_sha256     SHA-256 of the weights (see _weights_digest)
    /weights/<i>/<name>    layer i's parameters and buffers (e.g. /weights/0/weight,
                           /weights/3/running_mean)
    /optimizer             optional, for resuming training exactly:
        attributes type (e.g. "Adam"), config (JSON), scalars (JSON: step, epoch, lr)
        /optimizer/state/<slot>/<i>/<name>   e.g. exp_avg/0/weight

save_model writes a temporary file beside the target and renames it over the
target only when complete (os.replace is atomic), so an interrupted save never
leaves a broken file where a good one was. read_model verifies the format tag
and version, the JSON, the layer types and configs, the presence, shape and
dtype of every dataset (and the absence of others) and the checksum; any
failure is a ModelFormatError naming the file and the reason.
"""
import contextlib
import datetime
import hashlib
import json
import os
import tempfile

import h5py
import numpy as np

from ._version import __version__
from .model import Model
from .optim import OPTIMIZERS

__all__ = ["ModelFormatError", "save_model", "read_model", "atomic_path", "FORMAT", "FORMAT_VERSION"]

FORMAT = "im2colnet-model"
FORMAT_VERSION = 1


class ModelFormatError(Exception):
    """A model file that cannot be verified: the message names the file and the reason."""


def _named_arrays(model):
    """{"<i>/<name>": array} of every parameter and buffer, in layer order."""
    out = {}
    for i, layer in enumerate(model.layers):
        for name, array in {**layer.params, **layer.buffers}.items():
            out[f"{i}/{name}"] = array
    return out


def _weights_digest(arrays):
    """SHA-256 over the weights in a canonical form: for each name in sorted order,
    the name, the dtype (little-endian), the shape, and the little-endian bytes."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.asarray(arrays[name])
        little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        digest.update(f"{name}|{little.dtype.str}|{list(little.shape)}|".encode())
        digest.update(little.tobytes())
    return digest.hexdigest()


def _json(value, what):
    try:
        return json.dumps(value, sort_keys=True, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what}: must be JSON-serialisable ({exc})") from None


@contextlib.contextmanager
def atomic_path(path):
    """A temporary file name beside ``path`` to write to: when the block completes the file
    is synced and renamed over ``path`` (os.replace is atomic); when it fails it is removed.
    The file gets the usual permissions (0666 & ~umask, not mkstemp's 0600)."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        yield tmp
        with open(tmp, "rb+") as fh:   # the bytes are on disk before the rename publishes them
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_model(model, path, metadata=None, optimizer=None):
    """Write a built Model (a Sequential) (and optionally its optimizer's state, to ``path`` atomically.

    metadata: a JSON-able dict merged over model.metadata (a "date" is added
    when missing). Returns the path.
    """
    if not model.built:
        raise ValueError("model: build it (model.build(input_shape)) or fit it before saving")
    meta = {**getattr(model, "metadata", {}), **(metadata or {})}
    meta.setdefault("date", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    meta_json = _json(meta, "metadata")
    arch_json = _json(model.get_config(), "architecture")
    arrays = _named_arrays(model)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["library_version"] = __version__
            f.attrs["dtype"] = np.dtype(model.dtype).name
            f.attrs["architecture"] = arch_json
            f.attrs["metadata"] = meta_json
            f.attrs["weights_sha256"] = _weights_digest(arrays)
            weights = f.create_group("weights")
            for name, array in arrays.items():
                weights.create_dataset(name, data=array)
            if optimizer is not None:
                _write_optimizer(f.create_group("optimizer"), optimizer)
    model.metadata = meta
    return path


def _write_optimizer(group, optimizer):
    state = optimizer.state_dict()
    scalars = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
    group.attrs["type"] = type(optimizer).__name__
    group.attrs["config"] = _json(optimizer.get_config(), "optimizer config")
    group.attrs["scalars"] = _json({k: (v.item() if hasattr(v, "item") else v) for k, v in scalars.items()},
                                   "optimizer state")
    arrays = group.create_group("state")
    for name, value in state.items():
        if isinstance(value, np.ndarray):
            arrays.create_dataset(name, data=value)


def _datasets(group):
    """{relative path: dataset} of every dataset below group."""
    found = {}
    group.visititems(lambda name, obj: found.__setitem__(name, obj) if isinstance(obj, h5py.Dataset) else None)
    return found


def _read_json(f, key, fail):
    if key not in f.attrs:
        fail(f"the attribute {key!r} is missing")
    try:
        text = f.attrs[key]
        return json.loads(text.decode() if isinstance(text, bytes) else str(text))
    except (ValueError, UnicodeDecodeError) as exc:
        fail(f"the {key} JSON is malformed ({exc})")


def read_model(path, model_class=Model, with_optimizer=False):
    """Read and verify a model file. Returns a built ``model_class`` (a Model, e.g. the
    public Sequential: im2colnet.load_model) with ``.metadata``; with_optimizer=True
    returns (model, optimizer or None) to resume training exactly."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such model file")

    def fail(reason):
        raise ModelFormatError(f"{path}: {reason}")

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        fail(f"not a readable HDF5 file (truncated or not a model file: {exc})")
    try:
        with f:
            return _read_model(f, fail, model_class, with_optimizer)
    except ModelFormatError:
        raise
    except (OSError, KeyError, RuntimeError) as exc:   # h5py's errors on damaged content
        fail(f"the file is damaged ({type(exc).__name__}: {exc})")


def _read_model(f, fail, model_class, with_optimizer):
    if f.attrs.get("format") != FORMAT:
        fail(f"not an im2colnet model file (format attribute {f.attrs.get('format')!r}, "
             f"expected {FORMAT!r})")
    version = f.attrs.get("format_version")
    if not isinstance(version, (int, np.integer)) or version < 1:
        fail(f"bad format_version {version!r}")
    if version > FORMAT_VERSION:
        fail(f"format_version {int(version)} is newer than this library's ({FORMAT_VERSION}); "
             f"upgrade im2colnet to read it")
    dtype = f.attrs.get("dtype")
    if dtype not in ("float32", "float64"):
        fail(f"bad dtype attribute {dtype!r} (expected 'float32' or 'float64')")
    architecture = _read_json(f, "architecture", fail)
    metadata = _read_json(f, "metadata", fail)
    if not isinstance(metadata, dict):
        fail("the metadata JSON is not an object")
    try:
        model = model_class.from_config(architecture)
        if model.input_shape is None:
            fail("the architecture has no input_shape")
        model.astype(dtype)
        model.build(model.input_shape, seed=0)
    except (ValueError, TypeError) as exc:
        fail(f"the architecture cannot be built: {exc}")
    expected = _named_arrays(model)
    found = _datasets(f["weights"]) if "weights" in f else fail("the group /weights is missing")
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing:
        fail(f"missing weight datasets {missing}")
    if extra:
        fail(f"unexpected datasets {extra} (not in the architecture)")
    for name, array in expected.items():
        ds = found[name]
        if ds.shape != array.shape or ds.dtype != array.dtype:
            fail(f"dataset /weights/{name} has shape {ds.shape} and dtype {ds.dtype}; the "
                 f"architecture needs {array.shape} {array.dtype}")
        ds.read_direct(array)
    if f.attrs.get("weights_sha256") != _weights_digest(expected):
        fail("the weights do not match their checksum (weights_sha256): the file is corrupted")
    model.metadata = {**metadata, "format_version": int(version),
                      "library_version": str(f.attrs.get("library_version", "unknown"))}
    if not with_optimizer:
        return model
    return model, (_read_optimizer(f["optimizer"], fail) if "optimizer" in f else None)


def _read_optimizer(group, fail):
    kind = group.attrs.get("type")
    if kind not in OPTIMIZERS:
        fail(f"unknown optimizer type {kind!r}; known: {sorted(OPTIMIZERS)}")
    config, scalars = _read_json(group, "config", fail), _read_json(group, "scalars", fail)
    state = {name: ds[()] for name, ds in _datasets(group["state"]).items()} if "state" in group else {}
    try:
        optimizer = OPTIMIZERS[kind].from_config(config)
        optimizer.load_state_dict({**scalars, **state})
    except (ValueError, TypeError) as exc:
        fail(f"the optimizer state cannot be restored: {exc}")
    return optimizer
