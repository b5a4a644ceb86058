"""MNIST and Fashion-MNIST from IDX files (gzip-compressed or raw).

IDX (LeCun's format): two zero bytes, a type code, the number of dimensions d,
then d big-endian uint32 sizes and the values, big-endian, row-major. Readers
take N from the header, so a prefix of a dataset (fewer images than the
official 60,000) reads as it is.

Where the data is looked for (the first folder that has the files wins):
``root`` if given, else ``$IM2COLNET_DATA/<name>`` (``mnist`` or
``fashion-mnist``), and for Fashion-MNIST also the Debian package's folder
``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``).
"""
import gzip
import os
import struct
import zlib

import numpy as np

__all__ = ["read_idx", "load_mnist", "load_fashion_mnist", "load_dataset", "DATASETS",
           "FASHION_MNIST_SYSTEM_DIR"]

FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"

# IDX type code -> big-endian dtype of the stored values.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

_SPLITS = {"train": "train", "test": "t10k"}

_HOW_TO_GET = {
    "mnist": ("set IM2COLNET_DATA to a folder whose mnist/ subfolder holds the four IDX files "
              "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-...), "
              "or pass root=FOLDER"),
    "fashion-mnist": ("install the Debian package (apt-get install dataset-fashion-mnist, which "
                      f"puts the files in {FASHION_MNIST_SYSTEM_DIR}), or set IM2COLNET_DATA to "
                      "a folder with a fashion-mnist/ subfolder, or pass root=FOLDER"),
}


def read_idx(path):
    """The array stored in an IDX file (gzip or raw, detected from the first bytes).

    Returns a native-endian array of the file's type (uint8 for MNIST) and of
    the shape in its header. A file that is not IDX, truncated or longer than
    its header says is a ValueError naming the file.
    """
    path = os.fspath(path)
    with open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: a damaged gzip file ({exc})") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise ValueError(f"{path}: not an IDX file (magic bytes {raw[:4].hex() or 'missing'})")
    ndim = raw[3]
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes for {ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", raw[4:start])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    size = int(np.prod(shape, dtype=np.int64))
    expected = start + size * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: the header says shape {shape} ({expected} bytes) but the data "
                         f"has {len(raw)} bytes ({'truncated' if len(raw) < expected else 'extra bytes'})")
    return np.frombuffer(raw, dtype=dtype, count=size, offset=start).reshape(shape).astype(
        dtype.newbyteorder("="))


def _candidate_roots(name, root):
    if root is not None:
        return [os.fspath(root)]
    roots = []
    if os.environ.get("IM2COLNET_DATA"):
        roots.append(os.path.join(os.environ["IM2COLNET_DATA"], name))
    if name == "fashion-mnist":
        roots.append(FASHION_MNIST_SYSTEM_DIR)
    return roots


def _find(folder, stem):
    for candidate in (stem + ".gz", stem):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    return None


def load_dataset(name, root=None, split="train"):
    """(x, y) of MNIST-format data: x float32 (N, 1, 28, 28) in [0, 1], y int64 (N,).

    name: "mnist" or "fashion-mnist"; split: "train" or "test".
    """
    if name not in _HOW_TO_GET:
        raise ValueError(f"name: unknown dataset {name!r}; choose from {sorted(_HOW_TO_GET)}")
    if split not in _SPLITS:
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    prefix = _SPLITS[split]
    roots = _candidate_roots(name, root)
    for folder in roots:
        images = _find(folder, f"{prefix}-images-idx3-ubyte")
        labels = _find(folder, f"{prefix}-labels-idx1-ubyte")
        if images and labels:
            break
    else:
        looked = ", ".join(roots) if roots else "nowhere (IM2COLNET_DATA is not set and no root was given)"
        raise FileNotFoundError(
            f"{name} ({split}): {prefix}-images-idx3-ubyte[.gz] and {prefix}-labels-idx1-ubyte[.gz] "
            f"not found; looked in: {looked}. To get it: {_HOW_TO_GET[name]}.")
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or x.dtype != np.uint8 or y.ndim != 1 or y.dtype != np.uint8:
        raise ValueError(f"{images}, {labels}: expected uint8 images (N, H, W) and uint8 labels (N,), "
                         f"got {x.dtype} {x.shape} and {y.dtype} {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{images}, {labels}: {x.shape[0]} images but {y.shape[0]} labels")
    return (x.reshape(x.shape[0], 1, *x.shape[1:]).astype(np.float32) / np.float32(255),
            y.astype(np.int64))


def load_mnist(root=None, split="train"):
    """MNIST digits: (x float32 (N, 1, 28, 28) in [0, 1], y int64 (N,)); root defaults to $IM2COLNET_DATA/mnist."""
    return load_dataset("mnist", root, split)


def load_fashion_mnist(root=None, split="train"):
    """Fashion-MNIST: like :func:`load_mnist`; root defaults to $IM2COLNET_DATA/fashion-mnist,
    then /usr/share/datasets/fashion-mnist (the Debian package dataset-fashion-mnist)."""
    return load_dataset("fashion-mnist", root, split)


DATASETS = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist}
