"""IDX reading and the MNIST/Fashion-MNIST loaders: small files written here, plus the real data."""
import gzip
import os
import struct

import numpy as np
import pytest

from im2colnet import datasets


def write_idx(path, array, compress=False, type_code=0x08):
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    dtype = {0x08: ">u1", 0x0C: ">i4", 0x0D: ">f4"}[type_code]
    data = header + np.ascontiguousarray(array, dtype=dtype).tobytes()
    with (gzip.open if compress else open)(path, "wb") as fh:
        fh.write(data)
    return path


def write_split(folder, prefix, n, rng, compress=True):
    os.makedirs(folder, exist_ok=True)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    suffix = ".gz" if compress else ""
    write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte{suffix}"), images, compress)
    write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte{suffix}"), labels, compress)
    return images, labels


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, compress):
    rng = np.random.default_rng(0)
    for array, code in ((rng.integers(0, 256, (3, 4, 5), dtype=np.uint8), 0x08),
                        (rng.integers(-1000, 1000, (7,)).astype(np.int32), 0x0C),
                        (rng.standard_normal((2, 3)).astype(np.float32), 0x0D)):
        path = write_idx(tmp_path / f"a{code}", array, compress, code)
        back = datasets.read_idx(path)
        assert back.shape == array.shape and back.dtype.isnative
        assert np.array_equal(back, array)


@pytest.mark.parametrize("damage, words", [
    (lambda raw: raw[:-5], "truncated"),
    (lambda raw: raw + b"\0\0", "extra bytes"),
    (lambda raw: b"\x01\x02" + raw[2:], "not an IDX file"),
    (lambda raw: raw[:6], "truncated IDX header"),
    (lambda raw: b"", "not an IDX file"),
    (lambda raw: gzip.compress(raw)[:30], "damaged gzip"),
])
def test_read_idx_rejects_damaged_files(tmp_path, damage, words):
    good = write_idx(tmp_path / "good", np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    bad = tmp_path / "bad"
    bad.write_bytes(damage(good.read_bytes()))
    with pytest.raises(ValueError, match=words) as info:
        datasets.read_idx(bad)
    assert "bad" in str(info.value)


@pytest.mark.parametrize("compress", [False, True])
def test_load_mnist_from_root_and_from_environment(tmp_path, monkeypatch, compress):
    rng = np.random.default_rng(1)
    images, labels = write_split(tmp_path / "mnist", "t10k", 5, rng, compress)
    x, y = datasets.load_mnist(tmp_path / "mnist", split="test")
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    assert np.array_equal(x[:, 0] * 255, images) and np.array_equal(y, labels)
    assert 0 <= x.min() and x.max() <= 1
    monkeypatch.setenv("IM2COLNET_DATA", str(tmp_path))
    x2, y2 = datasets.load_mnist(split="test")
    assert np.array_equal(x2, x) and np.array_equal(y2, y)


def test_missing_data_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("IM2COLNET_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        datasets.load_mnist()
    assert str(tmp_path / "mnist") in str(info.value) and "IM2COLNET_DATA" in str(info.value)
    monkeypatch.setattr(datasets, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        datasets.load_fashion_mnist(split="test")


def test_image_and_label_counts_must_agree(tmp_path):
    rng = np.random.default_rng(2)
    write_split(tmp_path, "train", 4, rng)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(3, np.uint8), compress=True)
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        datasets.load_mnist(tmp_path)


def test_bad_split_and_name():
    with pytest.raises(ValueError, match="split"):
        datasets.load_mnist(split="validation")
    with pytest.raises(ValueError, match="name"):
        datasets.load_dataset("cifar10")


def _real(loader, split):
    try:
        return loader(split=split)
    except FileNotFoundError as exc:
        pytest.skip(f"real data not present: {exc}")


def test_real_mnist():
    x, y = _real(datasets.load_mnist, "test")
    assert x.shape == (10000, 1, 28, 28) and np.bincount(y).min() > 800
    x, y = _real(datasets.load_mnist, "train")
    assert x.shape[0] == len(y) == 22699 and set(np.unique(y)) == set(range(10))


def test_real_fashion_mnist():
    x, y = _real(datasets.load_fashion_mnist, "test")
    assert x.shape == (10000, 1, 28, 28) and np.array_equal(np.bincount(y), [1000] * 10)
