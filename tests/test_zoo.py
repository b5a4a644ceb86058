"""The model zoo: builders, shipped weight files, and their accuracy on the real test sets.

The accuracy checks evaluate every shipped model on its full official test set
(10,000 images) and fail when it scores below the accuracy its file's metadata
records minus 0.1 percentage point; they skip, saying why, when the data is absent
(MNIST: $IM2COLNET_DATA/mnist; Fashion-MNIST: apt-get install dataset-fashion-mnist).
"""
import os

import numpy as np
import pytest

import im2colnet
from im2colnet import datasets, models
from im2colnet.layers import BatchNorm2d, Conv2d, Dropout, Linear, MaxPool2d

SHIPPED = sorted(models.PRETRAINED)          # (builder, dataset) pairs
BUILDERS = {"lenet5": models.lenet5, "vgg_small": models.vgg_small, "resnet_small": models.resnet_small}
LOADERS = {"mnist": datasets.load_mnist, "fashion-mnist": datasets.load_fashion_mnist}
# Upper bounds on the file sizes: float32 weights plus HDF5 and JSON overhead.
MAX_BYTES = {"lenet5": 300_000, "vgg_small": 2_600_000, "resnet_small": 1_400_000}
# The accuracy each shipped model is required to reach (issue targets).
TARGETS = {("lenet5", "mnist"): 0.990, ("lenet5", "fashion-mnist"): 0.905,
           ("vgg_small", "fashion-mnist"): 0.935, ("resnet_small", "fashion-mnist"): 0.940}


def _test_set(dataset):
    try:
        return LOADERS[dataset](split="test")
    except FileNotFoundError as exc:
        pytest.skip(f"{dataset} test set not available: {exc}")


@pytest.fixture(scope="module", params=SHIPPED, ids=lambda p: f"{p[0]}-{p[1]}")
def shipped(request):
    builder, dataset = request.param
    weights = True if models._DEFAULT[builder] == dataset else dataset
    return builder, dataset, BUILDERS[builder](pretrained=weights)


# -- the builders ---------------------------------------------------------------------------

def test_lenet5_layout():
    net = models.lenet5().reset_parameters(0)
    convs = [l for l in net.layers if isinstance(l, Conv2d)]
    linears = [l for l in net.layers if isinstance(l, Linear)]
    assert [c.params["weight"].shape for c in convs] == [(6, 1, 5, 5), (16, 6, 5, 5)]
    assert [l.params["weight"].shape for l in linears] == [(120, 400), (84, 120), (10, 84)]
    assert sum(isinstance(l, MaxPool2d) for l in net.layers) == 2
    assert net.count_params() == 6 * 26 + 16 * 151 + 120 * 401 + 84 * 121 + 10 * 85 == 61706
    shapes = net._shapes(net.input_shape)
    assert shapes[2] == (6, 14, 14) and shapes[5] == (16, 5, 5) and shapes[-1] == (10,)


def test_vgg_small_layout():
    net = models.vgg_small().reset_parameters(0)
    convs = [l for l in net.layers if isinstance(l, Conv2d)]
    assert [c.params["weight"].shape[:2] for c in convs] == [
        (32, 1), (32, 32), (64, 32), (64, 64), (128, 64), (128, 128)]
    assert sum(isinstance(l, BatchNorm2d) for l in net.layers) == 6
    assert sum(isinstance(l, Dropout) for l in net.layers) == 2
    pooled = [s for l, s in zip(net.layers, net._shapes(net.input_shape)) if isinstance(l, MaxPool2d)]
    assert pooled == [(32, 14, 14), (64, 7, 7), (128, 3, 3)]
    assert net.output_shape == (10,)


def test_resnet_small_layout():
    """ResNet-20 (He et al.'s CIFAR layout, n=3) on 1x28x28: 16/32/64 channels, projections
    where the shape changes, average pooling over the final 7x7 map."""
    net = models.resnet_small()
    blocks = [l for l in net.layers if isinstance(l, im2colnet.Residual)]
    assert len(blocks) == 9
    assert [b.shortcut is not None for b in blocks] == [False] * 3 + [True, False, False] * 2
    shapes = dict(zip(map(id, net.layers), net._shapes(net.input_shape)))
    assert [shapes[id(b)] for b in blocks[::3]] == [(16, 28, 28), (32, 14, 14), (64, 7, 7)]
    convs = 1 + sum(len([l for l in b.block if isinstance(l, Conv2d)]) for b in blocks)
    assert convs + 1 == 20                       # 19 convolutions + the linear layer
    assert 200_000 <= net.count_params() == 272_186 <= 500_000
    assert net.output_shape == (10,)
    with pytest.raises(ValueError, match="pretrained: resnet_small has no weights 'mnist'"):
        models.resnet_small(pretrained="mnist")


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_fresh_models_predict_and_differ_by_seed(name):
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    a = BUILDERS[name]().reset_parameters(1).predict(x)
    b = BUILDERS[name]().reset_parameters(2).predict(x)
    assert a.shape == (3, 10) and a.dtype == np.float32 and np.isfinite(a).all()
    assert not np.allclose(a, b)
    assert BUILDERS[name](pretrained=None).built and BUILDERS[name]().built   # parameters at once


def test_every_registered_weight_file_is_shipped():
    for key, name in models.PRETRAINED.items():
        assert os.path.isfile(models.weights_path(*key)), name


def test_unknown_weights_and_missing_file(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="pretrained: vgg_small has no weights 'mnist'"):
        models.vgg_small(pretrained="mnist")
    with pytest.raises(ValueError, match="pretrained"):
        models.lenet5(pretrained="imagenet")
    monkeypatch.setattr(models, "_HERE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="lenet5_mnist.h5 is missing"):
        models.lenet5(pretrained=True)


# -- the shipped files ------------------------------------------------------------------------

def test_every_shipped_file_is_small_float32_and_described(shipped):
    builder, dataset, net = shipped
    path = models.weights_path(builder, dataset)
    assert os.path.getsize(path) < MAX_BYTES[builder]
    assert isinstance(net, im2colnet.Sequential) and net.input_shape == (1, 28, 28)
    assert all(v.dtype == np.float32 for l in net.layers for v in {**l.params, **l.buffers}.values())
    # Same architecture as the builder makes (so the weights fit a fresh model too).
    assert net.get_config()["layers"] == BUILDERS[builder]().get_config()["layers"]
    meta = net.metadata
    assert meta["dataset"] == dataset and meta["model"] == builder
    assert meta["test_samples"] == 10000 and meta["epochs_done"] == meta["epochs"]
    for key in ("test_accuracy", "seed", "settings", "date", "training_seconds", "history"):
        assert key in meta, key


def test_shipped_accuracy_matches_metadata_and_target(shipped):
    builder, dataset, net = shipped
    x, y = _test_set(dataset)
    assert len(x) == 10000
    accuracy = net.evaluate(x, y, batch_size=500)["accuracy"]
    recorded = net.metadata["test_accuracy"]
    assert accuracy >= recorded - 0.001, (builder, dataset, accuracy, recorded)
    assert recorded >= TARGETS[builder, dataset], (builder, dataset, recorded)


# -- the training scripts that made the shipped files -------------------------------------------

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


@pytest.fixture(scope="module")
def training():
    if not os.path.isdir(EXAMPLES):
        pytest.skip("the examples/ folder is not part of this installation")
    import importlib.util
    spec = importlib.util.spec_from_file_location("_training", os.path.join(EXAMPLES, "_training.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("shift, flip", [(1, False), (2, True), (0, True)])
def test_augment_matches_a_pixel_loop(training, shift, flip):
    x = np.random.default_rng(0).random((40, 2, 6, 7), dtype=np.float32) + 1
    out = training.augment(x, np.random.default_rng(5), shift, flip)
    # The same draws, in the same order, applied pixel by pixel.
    rng = np.random.default_rng(5)
    mirrored = rng.random(40) < 0.5 if flip else np.zeros(40, bool)
    di = rng.integers(-shift, shift + 1, 40) if shift else np.zeros(40, int)
    dj = rng.integers(-shift, shift + 1, 40) if shift else np.zeros(40, int)
    expected = np.zeros_like(x)
    for n in range(40):
        src = x[n, :, :, ::-1] if mirrored[n] else x[n]
        for i in range(6):
            for j in range(7):
                if 0 <= i - di[n] < 6 and 0 <= j - dj[n] < 7:
                    expected[n, :, i, j] = src[:, i - di[n], j - dj[n]]
    assert np.array_equal(out, expected)
    assert not np.array_equal(out, x)
    assert (di != 0).any() or (dj != 0).any() or mirrored.any()


def test_weight_averaging_and_batchnorm_statistics(training):
    """average_weights: the mean of every parameter; reestimate_batchnorm: each batch-norm
    layer's running mean and variance are the means of its batches' statistics (computed
    here from the layer's input by NumPy), in a Residual block too."""
    from im2colnet.layers import ReLU, Residual
    from im2colnet.layers import Sequential as Stack

    def build(seed):
        return im2colnet.Sequential([
            Conv2d(1, 3, 3, padding=1), BatchNorm2d(3), ReLU(),
            Residual(Stack([Conv2d(3, 3, 3, padding=1), BatchNorm2d(3)]))],
            input_shape=(1, 6, 6)).reset_parameters(seed)

    models_ = [build(1), build(2), build(3)]
    expected = {k: np.mean([m.state_dict()[k] for m in models_], axis=0)
                for k in models_[0].state_dict() if k.endswith((".weight", ".bias"))}
    averaged = training.average_weights(models_)
    assert averaged is models_[-1]
    for key, value in expected.items():
        np.testing.assert_allclose(averaged.state_dict()[key], value, rtol=1e-6, atol=1e-7)

    x = np.random.default_rng(0).standard_normal((10, 1, 6, 6)).astype(np.float32)
    training.reestimate_batchnorm(averaged, x, batch_size=4)     # batches of 4, 4, 2
    first, inner = averaged.layers[1], averaged.layers[3].block.layers[1]
    assert first.momentum == inner.momentum == 0.1
    for bn, feed in ((first, lambda xb: averaged.layers[0].forward(xb)),
                     (inner, lambda xb: averaged.layers[3].block.layers[0].forward(
                         averaged.layers[2].forward(first.forward(averaged.layers[0].forward(xb), True))))):
        stats = [feed(x[i:i + 4]).astype(np.float64) for i in (0, 4, 8)]
        means = [a.mean(axis=(0, 2, 3)) for a in stats]
        variances = [a.var(axis=(0, 2, 3), ddof=1) for a in stats]
        np.testing.assert_allclose(bn.buffers["running_mean"], np.mean(means, axis=0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn.buffers["running_var"], np.mean(variances, axis=0), rtol=1e-5, atol=1e-6)


def _write_idx(path, array):
    import gzip
    import struct
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_training_script_writes_a_described_model_and_resumes(tmp_path):
    import subprocess
    import sys
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 96), ("t10k", 32)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 60, (n, 28, 28)) + 150 * (labels[:, None, None] == np.arange(28)[:, None] % 10)
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    script = os.path.join(EXAMPLES, "train_lenet5.py")
    if not os.path.isfile(script):
        pytest.skip("the examples/ folder is not part of this installation")
    common = [sys.executable, script, "--data", str(tmp_path), "--batch-size", "32", "--verbose", "0"]

    def run(*args):
        result = subprocess.run(common + list(args), capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    out, ckpt = tmp_path / "m.h5", tmp_path / "ckpt.h5"
    assert "test accuracy" in run("--epochs", "1", "--out", str(out), "--checkpoint", str(ckpt))
    meta = im2colnet.load_model(out).metadata
    assert meta["dataset"] == "mnist" and meta["train_samples"] == 96 and meta["test_samples"] == 32
    assert meta["epochs_done"] == 1 and meta["settings"]["augmentation"] == {"shift": 2, "flip": False}
    assert 0 <= meta["test_accuracy"] <= 1 and len(meta["history"]) == 1
    _, optimizer = im2colnet.load_model(ckpt, with_optimizer=True)
    assert optimizer is not None and optimizer.step_count == 3
    # Resuming for one more epoch continues the history (and re-targets the cosine decay).
    run("--epochs", "2", "--resume", str(ckpt), "--out", str(out))
    meta = im2colnet.load_model(out).metadata
    assert meta["epochs_done"] == 2 and [h["epoch"] for h in meta["history"]] == [1, 2]
    assert "from epoch 2 cosine over 2" in meta["settings"]["schedule"]
    # A warm restart from the epoch-1 checkpoint: a new cosine cycle from --restart-lr.
    run("--epochs", "3", "--resume", str(ckpt), "--restart-lr", "0.05", "--out", str(out))
    meta = im2colnet.load_model(out).metadata
    assert [h["epoch"] for h in meta["history"]] == [1, 2, 3]
    assert [h["lr"] for h in meta["history"][1:]] == pytest.approx([0.05, 0.025])
    assert "from epoch 2 a warm restart: cosine from lr 0.05 to 0 at epoch 3" in meta["settings"]["schedule"]
    refused = subprocess.run(common + ["--epochs", "1", "--restart-lr", "0.05", "--out", str(out)],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "give --resume too" in refused.stderr
