"""The ``im2colnet`` command, driven in a subprocess as a user would run it.

Errors must be one line on stderr and exit code 2, never a traceback. The
training round trip writes a small IDX data set of its own (--data DIR).
"""
import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import im2colnet
from im2colnet.apps.report import format_metadata

SUBCOMMANDS = ("train", "evaluate", "predict", "summary", "bench", "demo")


# `python -m` puts the working folder first on sys.path: run from an empty folder, so the
# child imports the installed (compiled) package, never the source tree of a checkout.
_EMPTY_DIR = tempfile.mkdtemp(prefix="im2colnet-cli-")


def run_cli(*args, cwd=None, env=None, timeout=120):
    """Run `python -m im2colnet args...` (in cwd, default an empty folder); the CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("IM2COLNET_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "im2colnet", *map(str, args)],
                          cwd=cwd or _EMPTY_DIR, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def assert_one_line_error(result, command, *words):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"im2colnet{' ' + command if command else ''}: error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_help_everywhere():
    top = run_cli("--help")
    assert top.returncode == 0 and "usage: im2colnet" in top.stdout
    for command in SUBCOMMANDS:
        assert command in top.stdout
        result = run_cli(command, "--help")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"usage: im2colnet {command}"), result.stdout[:200]


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"im2colnet {im2colnet.__version__}"


@pytest.mark.parametrize("args, command, words", [
    (["frobnicate"], "", ["invalid choice", "frobnicate"]),
    ([], "", ["COMMAND"]),
    (["bench", "--shape", "1,2,3"], "bench", ["--shape", "7 to 11 integers"]),
    (["bench", "--shape", "1,1,4,4,1,7,7"], "bench", ["--shape", "does not fit"]),
    (["bench", "no-such-layer"], "bench", ["no-such-layer", "lenet5-conv1"]),
    (["bench", "--methods", "ours,fast"], "bench", ["--methods", "fast"]),
    (["bench", "--repeats", "0"], "bench", ["--repeats"]),
    (["bench", "--dtype", "float16"], "bench", ["--dtype", "float16"]),
    (["bench", "--threads", "0"], "bench", ["--threads"]),
    (["summary", "missing.h5"], "summary", ["missing.h5", "no such model file"]),
    (["evaluate", "missing.h5"], "evaluate", ["missing.h5", "no such model file"]),
    (["evaluate", "resnet"], "evaluate", ["unknown model 'resnet'", "lenet5"]),
    (["evaluate", "lenet5:imagenet"], "evaluate", ["unknown weights 'imagenet'"]),
    (["predict", "lenet5", "missing.npy"], "predict", ["missing.npy", "no such image file"]),
    (["train"], "train", ["MODEL", "--resume"]),
    (["train", "lenet5", "--epochs", "0"], "train", ["--epochs"]),
    (["train", "lenet5", "--lr", "-1"], "train", ["--lr"]),
    (["train", "lenet5", "--dataset", "cifar"], "train", ["--dataset", "cifar"]),
    (["train", "lenet5", "--data", "no/such/dir"], "train", ["--data", "no/such/dir"]),
    (["train", "--resume", "missing.h5"], "train", ["missing.h5", "no such model file"]),
])
def test_error_paths_are_one_line_and_exit_2(tmp_path, args, command, words):
    assert_one_line_error(run_cli(*args, cwd=tmp_path), command, *words)


def test_unreadable_model_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"this is not an HDF5 file")
    for command in ("summary", "evaluate"):
        assert_one_line_error(run_cli(command, bad, cwd=tmp_path), command, "bad.h5")


def test_bench_quick_runs_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    # Without torch here (importing it takes seconds; test_bench covers the torch column),
    # and with one BLAS thread: on a loaded machine two spinning BLAS threads can stall a
    # millisecond product for seconds, and this test checks the output, not the speed.
    result = run_cli("bench", "--quick", "--budget", "0", "--repeats", "1", "--json", out,
                     "--methods", "direct,ours,gemm,numpy", cwd=tmp_path,
                     env={"OPENBLAS_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for name in ("lenet5-conv1", "lenet5-conv2", "vgg-14"):
        assert name in result.stdout
    assert "process peak RSS" in result.stdout
    report = json.loads(out.read_text())
    assert report["dtype"] == "float32"
    assert {r["shape"]["name"] for r in report["layers"]} == {"lenet5-conv1", "lenet5-conv2", "vgg-14"}
    assert len(report["layers"]) == 9
    for r in report["layers"]:
        assert r["methods"]["ours"]["median_ms"] > 0
        assert r["ratios"]["direct/ours"] > 0
    assert report["peak_rss_mib"] > 0


def test_bench_plot(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "bench.png"
    result = run_cli("bench", "--shape", "2,2,6,6,2,3,3", "--methods", "ours,gemm", "--budget", "0",
                     "--repeats", "1", "--no-models", "--plot", png, cwd=tmp_path,
                     env={"OPENBLAS_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- a training round trip

def write_idx(path, array):
    """Write an IDX file (gzip): magic 0x0000 08 ndim, big-endian dims, then unsigned bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.tobytes())


def synthetic_digits(n, rng):
    """28x28 images of 10 classes: class k is a bright 8x8 block at a position of its own."""
    y = np.arange(n) % 10
    rng.shuffle(y)
    x = rng.integers(0, 40, size=(n, 28, 28))
    for i, k in enumerate(y):
        r, c = 2 + 8 * (k // 4), 2 + 6 * (k % 4)
        x[i, r:r + 8, c:c + 8] = 255
    return x.astype(np.uint8), y.astype(np.uint8)


@pytest.fixture(scope="module")
def idx_data(tmp_path_factory):
    """A folder mnist/ with 320 training and 100 test images in the MNIST file names."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 320), ("t10k", 100)):
        x, y = synthetic_digits(n, rng)
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", x)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", y)
    return root


@pytest.fixture(scope="module")
def trained(idx_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    out = folder / "lenet5.h5"
    plot = ["--plot", folder / "curves.png"] if _has("matplotlib") else []
    result = run_cli("train", "lenet5", "--data", idx_data, "--epochs", "1", "--batch-size", "32",
                     "--optimizer", "adam", "--seed", "3", "--out", out, *plot)
    assert result.returncode == 0, result.stderr
    if plot:
        assert (folder / "curves.png").read_bytes()[:4] == b"\x89PNG"
    return idx_data, out, result


def _has(module):
    import importlib.util
    return importlib.util.find_spec(module) is not None


def test_train_reports_and_saves(trained):
    _, out, result = trained
    assert "training lenet5 on mnist: 320 images" in result.stdout
    assert "test accuracy" in result.stdout and f"saved {out}" in result.stdout
    assert out.is_file()
    model = im2colnet.load_model(str(out))
    assert model.metadata["dataset"] == "mnist" and model.metadata["epochs"] == 1


def test_evaluate_prints_accuracy_loss_and_confusion(trained):
    data, out, _ = trained
    result = run_cli("evaluate", out, "--data", data)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "mnist test set: accuracy" in lines[0] and "images/s" in lines[0]
    accuracy = float(lines[0].split("accuracy ")[1].split(",")[0])
    # The confusion matrix: 10 rows of 10 counts; row sums are the test set's class counts
    # (10 of each), and the diagonal over the total is the accuracy printed above.
    start = next(i for i, line in enumerate(lines) if line.startswith("true\\pred"))
    counts = np.array([[int(v) for v in line.split()[1:]] for line in lines[start + 1:start + 11]])
    assert counts.shape == (10, 10)
    np.testing.assert_array_equal(counts.sum(axis=1), np.full(10, 10))
    assert np.trace(counts) / 100 == pytest.approx(accuracy, abs=1e-4)


def test_predict_npy(trained, tmp_path):
    _, out, _ = trained
    rng = np.random.default_rng(5)
    x, _ = synthetic_digits(3, rng)
    single, batch = tmp_path / "one.npy", tmp_path / "batch.npy"
    np.save(single, x[0])                                         # (28, 28) uint8
    np.save(batch, x[:, None].astype(np.float32) / 255)           # (3, 1, 28, 28) in [0, 1]
    result = run_cli("predict", out, single, batch, "--top", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 4
    assert lines[0].startswith(f"{single}: ") and lines[1].startswith(f"{batch}[0]: ")
    for line in lines:
        probs = [float(part.split()[-1]) for part in line.split(": ", 1)[1].split(", ")]
        assert len(probs) == 2 and 0 <= probs[1] <= probs[0] <= 1


def test_predict_rejects_a_wrong_shape(trained, tmp_path):
    _, out, _ = trained
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((3, 32, 32), np.float32))
    assert_one_line_error(run_cli("predict", out, wrong), "predict", "wrong.npy", "(1, 28, 28)")


def test_summary_shows_layers_and_metadata(trained):
    _, out, _ = trained
    result = run_cli("summary", out)
    assert result.returncode == 0, result.stderr
    assert "Conv2d" in result.stdout and "Total params" in result.stdout
    assert "metadata:" in result.stdout and "dataset: mnist" in result.stdout


def test_resume_continues_exactly(trained, tmp_path):
    """Two epochs in one run equal one epoch, save, and --resume for one more: the file
    carries the epoch count, the seed and the optimizer's state."""
    data, _, _ = trained
    common = ["--data", data, "--batch-size", "32", "--optimizer", "adam", "--seed", "7"]
    both, first, resumed = (tmp_path / name for name in ("both.h5", "first.h5", "resumed.h5"))
    for args in (["lenet5", "--epochs", "2", *common, "--out", both],
                 ["lenet5", "--epochs", "1", *common, "--out", first],
                 ["--resume", first, "--data", data, "--out", resumed]):
        result = run_cli("train", *args)
        assert result.returncode == 0, result.stderr
    assert "epoch 2," in result.stdout and "Adam" in result.stdout
    a, b = im2colnet.load_model(str(both)), im2colnet.load_model(str(resumed))
    assert b.metadata["epochs"] == 2 and b.metadata["resumed_from"] == str(first)
    for layer_a, layer_b in zip(a.layers, b.layers):
        for key in layer_a.params:
            np.testing.assert_array_equal(layer_a.params[key], layer_b.params[key])


def test_train_missing_data_is_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run_cli("train", "lenet5", "--data", empty), "train",
                          "not found", "--data DIR")


def test_demo_trains_and_carries_on(trained):
    data, _, _ = trained
    result = run_cli("demo", "--no-bench", "--no-install", "--data", data)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "== 2/4 train LeNet-5" in result.stdout and "trained in" in result.stdout
    assert "mnist test set: accuracy" in result.stdout
    assert "demo finished" in result.stdout


def test_metadata_is_printed_readably():
    meta = {"dataset": "mnist", "test_accuracy": 0.99213,
            "optimizer": {"type": "SGD", "schedule": {"type": "CosineLR"}},
            "history": [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25, "lr": 0.1}]}
    assert format_metadata(meta) == [
        "  dataset: mnist",
        "  history:",
        "    epoch  loss   lr",
        "        1   0.5     ",
        "        2  0.25  0.1",
        "  optimizer:",
        "    schedule:",
        "      type: CosineLR",
        "    type: SGD",
        "  test_accuracy: 0.9921",
    ]


def test_evaluate_and_predict_pretrained_on_real_digits(tmp_path):
    from im2colnet import datasets, models
    try:
        models.weights_path("lenet5")
        x, y = datasets.load_mnist(split="test")
    except (AttributeError, FileNotFoundError) as exc:
        pytest.skip(f"pretrained LeNet-5 or MNIST not here: {exc}")
    result = run_cli("evaluate", "lenet5:pretrained", "--limit", "500")
    assert result.returncode == 0, result.stderr
    accuracy = float(result.stdout.split("accuracy ")[1].split(",")[0])
    assert accuracy > 0.95 and "500 images" in result.stdout
    np.save(tmp_path / "digits.npy", x[:5])
    result = run_cli("predict", "lenet5:pretrained", tmp_path / "digits.npy")
    assert result.returncode == 0, result.stderr
    predicted = [int(line.split(": ")[1].split()[0]) for line in result.stdout.splitlines()]
    assert predicted == list(y[:5])
