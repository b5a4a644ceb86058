"""What the commands read: datasets, models (a file or the zoo), image files.

A user's mistake (missing data, an unreadable file) is a CommandError: one line on
stderr and exit code 2 (see cli.py).
"""
import os

import numpy as np

from .. import datasets, models
from ..sequential import load_model

__all__ = ["CommandError", "MODEL_NAMES", "DATASETS", "CLASS_NAMES", "data_root", "load_dataset",
           "parse_model_spec", "zoo_model", "load_model_file", "load_model_spec", "input_shape",
           "read_image", "require"]


MODEL_NAMES = ("lenet5", "vgg_small", "resnet_small")


DATASETS = ("mnist", "fashion-mnist")


CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
}


class CommandError(Exception):
    """A user's mistake: printed as one line on stderr, exit code 2."""


def _one_line(text):
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def require(module, purpose, extra):
    try:
        __import__(module)
    except ImportError:
        raise CommandError(f"{purpose} needs {module}: pip install {module} "
                           f"(or pip install im2colnet[{extra}])") from None


def data_root(name, given=None):
    """The folder to read dataset ``name`` from, or None for the loader's default
    ($IM2COLNET_DATA/<name>, see im2colnet.datasets).

    given (--data) may be the folder with the IDX files or a parent holding ``<name>/``.
    """
    if not given:
        return None
    if not os.path.isdir(given):
        raise CommandError(f"--data: {given} is not a folder")
    sub = os.path.join(given, name)
    return sub if os.path.isdir(sub) else given


def load_dataset(name, split, root=None, limit=None):
    """(x, y) of ``name``'s split ('train' or 'test'); the first ``limit`` samples if given."""
    loader = getattr(datasets, "load_" + name.replace("-", "_"), None)
    if loader is None:
        raise CommandError(f"no loader for {name} in this build of im2colnet")
    try:
        x, y = loader(root=data_root(name, root), split=split)
    except FileNotFoundError as exc:
        raise CommandError(f"{_one_line(exc)} (on the command line: --data DIR)") from None
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return x, y


def parse_model_spec(spec):
    """'lenet5', 'lenet5:pretrained', 'lenet5:fashion-mnist' -> (builder name, pretrained)."""
    name, _, weights = spec.partition(":")
    name = name.replace("-", "_")
    if name not in MODEL_NAMES:
        raise CommandError(f"unknown model {spec!r}: give a .h5 file or one of "
                           f"{', '.join(MODEL_NAMES)} (optionally :pretrained or :<dataset>)")
    if weights in ("", None):
        return name, False
    if weights == "pretrained":
        return name, True
    if weights in DATASETS:
        return name, weights
    raise CommandError(f"unknown weights {weights!r} in {spec!r}: use :pretrained or "
                       f":{' or :'.join(DATASETS)}")


def _is_file_spec(spec):
    return os.path.splitext(spec)[1].lower() in (".h5", ".hdf5") or os.path.sep in spec \
        or os.path.exists(spec)


def zoo_model(name, pretrained=False):
    """models.<name>(pretrained=...) for a name of MODEL_NAMES."""
    if name not in MODEL_NAMES:
        raise CommandError(f"the model zoo has no {name!r}; choose from {', '.join(MODEL_NAMES)}")
    return getattr(models, name)(pretrained=pretrained)


def load_model_file(path, with_optimizer=False):
    """load_model(path), checking first that the file is there.

    with_optimizer: returns (model, optimizer or None)."""
    if not os.path.isfile(path):
        raise CommandError(f"{path}: no such model file")
    return load_model(path, with_optimizer=with_optimizer)


def load_model_spec(spec):
    """A model from a .h5 file or from the zoo (MODEL[:pretrained]) -> (model, metadata dict)."""
    if _is_file_spec(spec):
        model = load_model_file(spec)
    else:
        model = zoo_model(*parse_model_spec(spec))
    return model, dict(getattr(model, "metadata", None) or {})


def input_shape(model):
    shape = getattr(model, "input_shape", None)
    return tuple(shape) if shape else (1, 28, 28)


def read_image(path, shape, invert=False):
    """One image file -> float32 array (n, C, H, W) scaled like the training data ([0, 1]).

    .npy: (H, W), (C, H, W) or a batch (n, C, H, W); integer arrays are divided by 255.
    PNG/JPEG (Pillow): converted to the model's channels, resized to its H x W.
    invert: 1 - x, for dark digits on a light background (MNIST is light on dark).
    """
    channels, height, width = shape
    if path.lower().endswith(".npy"):
        arr = np.load(path, allow_pickle=False)
        if arr.dtype.kind in "iub":
            arr = arr.astype(np.float32) / 255.0
        elif arr.dtype.kind != "f":
            raise CommandError(f"{path}: dtype {arr.dtype} is not an image")
        arr = arr.astype(np.float32)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[1:] != shape:
            raise CommandError(f"{path}: shape {arr.shape} does not fit the model's input "
                               f"{shape} (give (H, W), (C, H, W) or (n, C, H, W))")
    else:
        require("PIL", f"reading {os.path.basename(path)}", "image")
        from PIL import Image, UnidentifiedImageError
        try:
            with Image.open(path) as img:
                img = img.convert("L" if channels == 1 else "RGB").resize(
                    (width, height), Image.BILINEAR)
                arr = np.asarray(img, dtype=np.float32) / 255.0
        except UnidentifiedImageError:
            raise CommandError(f"{path}: not an image Pillow can read") from None
        arr = arr[None, None] if channels == 1 else arr.transpose(2, 0, 1)[None]
    return 1.0 - arr if invert else arr
