"""The ``im2colnet`` command (also ``python -m im2colnet``).

    im2colnet train MODEL --dataset mnist --out model.h5     train, save
    im2colnet evaluate FILE.h5|MODEL[:pretrained]            accuracy, loss, confusion matrix
    im2colnet predict FILE.h5|MODEL IMAGE...                 class and probability per image
    im2colnet summary FILE.h5|MODEL                          layer table and metadata
    im2colnet export FILE.h5|MODEL[:pretrained] OUT.onnx     the model as ONNX (needs onnx)
    im2colnet bench [--quick]                                im2col against direct convolution
    im2colnet demo                                           a few minutes' tour of all of it

Mistakes (missing data, an unreadable file, a bad option) are one line on
stderr and exit code 2. Set IM2COLNET_DEBUG=1 to see the traceback instead.
"""
import argparse
import os
import sys
import time

import numpy as np

__all__ = ["main", "build_parser", "CommandError"]

MODEL_NAMES = ("lenet5", "vgg_small")
DATASETS = ("mnist", "fashion-mnist")
CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
}
EXIT_USAGE = 2


class CommandError(Exception):
    """A user's mistake: printed as one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (with a pointer to --help) and exit code 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _one_line(text):
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


# ---------------------------------------------------------------- models and data

def _checkout_dirs():
    """Folders that may be a source checkout of im2colnet: the package's parent (an
    editable install) and the parent of the virtual environment (a .venv in the repo)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for folder in (here, os.path.dirname(os.path.abspath(sys.prefix))):
        if os.path.isfile(os.path.join(folder, "setup.py")) and os.path.isdir(
                os.path.join(folder, "im2colnet")):
            yield folder


def data_root(name, given=None):
    """The folder to read dataset ``name`` from, or None for the loader's default.

    given (--data) may be the folder with the IDX files or a parent holding
    ``<name>/``. Without it: $IM2COLNET_DATA (the loader's own default), else
    ``../shared/data/<name>`` beside a source checkout, else the loader's default.
    """
    if given:
        if not os.path.isdir(given):
            raise CommandError(f"--data: {given} is not a folder")
        sub = os.path.join(given, name)
        return sub if os.path.isdir(sub) else given
    if os.environ.get("IM2COLNET_DATA"):
        return None
    for repo in _checkout_dirs():
        candidate = os.path.join(os.path.dirname(repo), "shared", "data", name)
        if os.path.isdir(candidate):
            return candidate
    return None


def load_dataset(name, split, root=None, limit=None):
    """(x, y) of ``name``'s split ('train' or 'test'); the first ``limit`` samples if given."""
    from . import datasets
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


def _parse_model_spec(spec):
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
    """models.<name>(pretrained=...); a zoo that is not there yet is a CommandError."""
    from . import models
    builder = getattr(models, name, None)
    if builder is None:
        raise CommandError(f"the model zoo has no {name!r} in this build of im2colnet")
    return builder(pretrained=pretrained)


def load_model_file(path, with_optimizer=False):
    """load_model(path), checking first that the file is there.

    with_optimizer: returns (model, optimizer or None)."""
    if not os.path.isfile(path):
        raise CommandError(f"{path}: no such model file")
    from .serialization import load_model
    if not with_optimizer:
        return load_model(path)
    loaded = load_model(path, with_optimizer=True)
    return loaded if isinstance(loaded, tuple) else (loaded, None)


def load_model_spec(spec):
    """A model from a .h5 file or from the zoo (MODEL[:pretrained]) -> (model, metadata dict)."""
    if _is_file_spec(spec):
        model = load_model_file(spec)
    else:
        model = zoo_model(*_parse_model_spec(spec))
    return model, dict(getattr(model, "metadata", None) or {})


def _input_shape(model):
    shape = getattr(model, "input_shape", None)
    return tuple(shape) if shape else (1, 28, 28)


# ---------------------------------------------------------------- output helpers

def confusion_matrix(y_true, y_pred, num_classes):
    """counts[i, j]: how many samples of class i were predicted as j."""
    return np.bincount(y_true * num_classes + y_pred,
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def format_confusion(counts):
    """Rows: true class, columns: predicted class."""
    k = counts.shape[0]
    width = max(len(str(counts.max())), len(str(k - 1))) + 1
    lines = ["true\\pred" + "".join(str(j).rjust(width) for j in range(k))]
    for i in range(k):
        lines.append(str(i).rjust(9) + "".join(str(c).rjust(width) for c in counts[i]))
    return "\n".join(lines)


def _history_dict(history):
    """History -> {name: [per-epoch values]} (a History object or a plain dict)."""
    data = getattr(history, "history", history)
    return dict(data) if isinstance(data, dict) else {}


def plot_curves(history, path):
    """Loss and accuracy per epoch, train and validation (needs matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        # `train` validates on the test split after each epoch: val_* are test-set figures.
        for key, label in ((metric, "train"), (f"val_{metric}", "test set")):
            values = history.get(key)
            if values:
                ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel(metric)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _require(module, purpose, extra):
    try:
        __import__(module)
    except ImportError:
        raise CommandError(f"{purpose} needs {module}: pip install {module} "
                           f"(or pip install im2colnet[{extra}])") from None


# ---------------------------------------------------------------- subcommands

def _make_optimizer(name, lr):
    from . import optim
    if name == "sgd":
        return optim.SGD(0.01 if lr is None else lr, momentum=0.9)
    return optim.Adam(1e-3 if lr is None else lr)


def cmd_train(args, out=sys.stdout):
    """Train a zoo model, or continue a saved one (--resume), and save it (--out).

    A resumed run continues where the file stopped: its optimizer state, its
    epoch count and its seed (unless --seed is given), so that training 2 epochs
    equals training 1, saving, and resuming for 1 more.
    """
    if args.plot:
        _require("matplotlib", "--plot", "plot")
    if args.epochs < 1:
        raise CommandError(f"--epochs: must be >= 1, got {args.epochs}")
    if args.batch_size is not None and args.batch_size < 1:
        raise CommandError(f"--batch-size: must be >= 1, got {args.batch_size}")
    if args.lr is not None and not args.lr > 0:
        raise CommandError(f"--lr: must be > 0, got {args.lr}")
    if args.limit is not None and args.limit < 1:
        raise CommandError(f"--limit: must be >= 1, got {args.limit}")
    if args.data and not os.path.isdir(args.data):
        raise CommandError(f"--data: {args.data} is not a folder")
    if bool(args.model) == bool(args.resume):
        raise CommandError("give a MODEL to train or --resume FILE.h5 (one of the two)")
    meta, optimizer = {}, None
    if args.resume:
        model, optimizer = load_model_file(args.resume, with_optimizer=True)
        meta = dict(getattr(model, "metadata", None) or {})
    else:
        model = zoo_model(*_parse_model_spec(args.model))
    if optimizer is None:
        optimizer = _make_optimizer(args.optimizer, args.lr)
    dataset = args.dataset or meta.get("dataset") or "mnist"
    if dataset not in DATASETS:
        raise CommandError(f"--dataset: the model file names dataset {dataset!r}; "
                           f"give --dataset {{{','.join(DATASETS)}}}")
    first_epoch = int(meta.get("epochs", 0))
    batch_size = args.batch_size or int(meta.get("batch_size", 64))
    seed = args.seed if args.seed is not None else int(meta.get("seed", 0))
    x, y = load_dataset(dataset, "train", args.data, args.limit)
    x_test, y_test = load_dataset(dataset, "test", args.data, args.limit)
    from .losses import CrossEntropyLoss
    epochs = (f"epoch {first_epoch + 1}" if args.epochs == 1
              else f"epochs {first_epoch + 1}-{first_epoch + args.epochs}")
    print(f"training {args.resume or args.model} on {dataset}: {len(x)} images, {epochs}, "
          f"batch {batch_size}, {type(optimizer).__name__}, seed {seed}", file=out, flush=True)
    t0 = time.perf_counter()
    history = model.fit(x, y, epochs=first_epoch + args.epochs, initial_epoch=first_epoch,
                        batch_size=batch_size, optimizer=optimizer,
                        loss=CrossEntropyLoss(), validation_data=(x_test, y_test),
                        verbose=1, seed=seed)
    seconds = time.perf_counter() - t0
    scores = model.evaluate(x_test, y_test)
    print(f"test accuracy {scores['accuracy']:.4f}, loss {scores['loss']:.4f} "
          f"(trained in {seconds:.1f} s, validation included)", file=out)
    if args.out:
        from . import __version__
        from .serialization import save_model
        metadata = {
            "dataset": dataset, "test_accuracy": float(scores["accuracy"]),
            "test_loss": float(scores["loss"]), "epochs": first_epoch + args.epochs,
            "batch_size": batch_size, "optimizer": type(optimizer).__name__,
            "lr": float(getattr(optimizer, "lr", args.lr or 0)), "seed": seed,
            "library_version": __version__}
        if args.resume:
            metadata["resumed_from"] = args.resume
        save_model(model, args.out, optimizer=optimizer, metadata=metadata)
        print(f"saved {args.out}", file=out)
    if args.plot:
        plot_curves(_history_dict(history), args.plot)
        print(f"wrote {args.plot}", file=out)
    return 0


def evaluate_model(model, dataset, data=None, limit=None, out=sys.stdout, confusion=True,
                   prefix=""):
    """Print accuracy, loss, images/s (and the confusion matrix) of model on dataset's test set;
    returns the accuracy. prefix starts the summary line."""
    from .functional import softmax_cross_entropy
    x, y = load_dataset(dataset, "test", data, limit)
    t0 = time.perf_counter()
    scores = model.predict(x, batch_size=256)
    seconds = time.perf_counter() - t0
    loss, _ = softmax_cross_entropy(scores.astype(np.float64), y)
    predicted = scores.argmax(axis=1)
    accuracy = float(np.mean(predicted == y))
    print(f"{prefix}{dataset} test set: accuracy {accuracy:.4f}, loss {loss:.4f}, {len(x)} images, "
          f"{len(x) / seconds:.0f} images/s", file=out)
    if confusion:
        print("confusion matrix (rows: true class, columns: predicted):", file=out)
        print(format_confusion(confusion_matrix(y, predicted, scores.shape[1])), file=out)
    return accuracy


def cmd_evaluate(args, out=sys.stdout):
    if args.data and not os.path.isdir(args.data):
        raise CommandError(f"--data: {args.data} is not a folder")
    model, meta = load_model_spec(args.model)
    dataset = args.dataset or meta.get("dataset") or "mnist"
    if dataset not in DATASETS:
        raise CommandError(f"--dataset: the model file names dataset {dataset!r}; "
                           f"give --dataset {{{','.join(DATASETS)}}}")
    evaluate_model(model, dataset, args.data, args.limit, out)
    return 0


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
        _require("PIL", f"reading {os.path.basename(path)}", "image")
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


def _class_label(k, names):
    """'3', or '3 (Dress)' when the dataset's classes have names other than their numbers."""
    if names and k < len(names) and names[k] != str(k):
        return f"{k} ({names[k]})"
    return str(k)


def cmd_predict(args, out=sys.stdout):
    from .functional import softmax_forward
    if args.top < 1:
        raise CommandError(f"--top: must be >= 1, got {args.top}")
    for path in args.images:
        if not os.path.isfile(path):
            raise CommandError(f"{path}: no such image file")
    model, meta = load_model_spec(args.model)
    shape = _input_shape(model)
    names = CLASS_NAMES.get(meta.get("dataset", "mnist"))
    for path in args.images:
        probs = softmax_forward(model.predict(read_image(path, shape, args.invert)))
        for i, p in enumerate(probs):
            top = np.argsort(p)[::-1][:args.top]
            label = path if len(probs) == 1 else f"{path}[{i}]"
            print(label + ": " + ", ".join(f"{_class_label(k, names)} {p[k]:.3f}" for k in top),
                  file=out)
    return 0


def _cell(value):
    return format(value, ".4g") if isinstance(value, float) else str(value)


def format_metadata(meta, indent="  "):
    """A model file's metadata as text lines: nested dicts indented, a list of records
    (e.g. the per-epoch training history) as a table, everything else as key: value."""
    lines = []
    for key in sorted(meta):
        value = meta[key]
        if isinstance(value, dict) and value:
            lines.append(f"{indent}{key}:")
            lines += format_metadata(value, indent + "  ")
        elif (isinstance(value, list) and value
              and all(isinstance(v, dict) for v in value)):
            columns = list(dict.fromkeys(k for record in value for k in record))
            rows = [columns] + [[_cell(record.get(c, "")) for c in columns] for record in value]
            widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
            lines.append(f"{indent}{key}:")
            lines += [indent + "  " + "  ".join(cell.rjust(w) for cell, w in zip(row, widths))
                      for row in rows]
        else:
            lines.append(f"{indent}{key}: {_cell(value)}")
    return lines


def cmd_summary(args, out=sys.stdout):
    model, meta = load_model_spec(args.model)
    print(model.summary(), file=out)
    if meta:
        print("metadata:", file=out)
        print("\n".join(format_metadata(meta)), file=out)
    return 0


def cmd_export(args, out=sys.stdout):
    """Write MODEL as an ONNX file (im2colnet.onnx.export), with the class names in its metadata."""
    try:
        from .onnx import export
    except ImportError as exc:     # its message says what to install
        raise CommandError(str(exc)) from None
    model, meta = load_model_spec(args.model)
    extra = {"classes": CLASS_NAMES[meta["dataset"]]} if meta.get("dataset") in CLASS_NAMES else {}
    export(model, args.out, opset=args.opset, metadata=extra)
    print(f"wrote {args.out} (ONNX opset {args.opset}, input {model.input_shape} per sample)", file=out)
    return 0


def cmd_bench(args, out=sys.stdout):
    from . import bench
    try:
        bench.run(args, out=out)
    except bench.BenchError as exc:
        raise CommandError(str(exc)) from None
    return 0


def cmd_demo(args, out=sys.stdout):
    from .demo import run_demo
    return run_demo(args, out)


# ---------------------------------------------------------------- the parser

def _add_data_args(p, dataset_default="mnist"):
    p.add_argument("--dataset", choices=DATASETS, default=dataset_default,
                   help=f"the dataset (default: {dataset_default or 'from the model file, else mnist'})")
    p.add_argument("--data", metavar="DIR",
                   help="folder with the IDX files (or a parent holding mnist/, fashion-mnist/); "
                        "default $IM2COLNET_DATA/<dataset>, then the Debian package's folder")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N images")


def build_parser():
    from . import __version__, bench
    parser = _Parser(prog="im2colnet", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"im2colnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    spec_help = "a model file (.h5) or a zoo model: lenet5, vgg_small, optionally :pretrained"

    p = sub.add_parser("train", help="train a model and save it",
                       description="Train a zoo model (or continue a saved one) with progress bars; "
                                   "prints a line per epoch and the final test accuracy.")
    p.add_argument("model", metavar="MODEL", nargs="?",
                   help=f"one of {', '.join(MODEL_NAMES)} (not needed with --resume)")
    _add_data_args(p, dataset_default=None)
    p.add_argument("--epochs", type=int, default=1, help="passes over the training set (default 1)")
    p.add_argument("--batch-size", type=int,
                   help="samples per step (default 64, or the resumed file's)")
    p.add_argument("--lr", type=float, help="learning rate (default 0.01 for sgd, 0.001 for adam)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                   help="sgd (momentum 0.9) or adam (default sgd)")
    p.add_argument("--seed", type=int,
                   help="seed of the initial weights and the shuffling (default 0, or the "
                        "resumed file's)")
    p.add_argument("--out", metavar="FILE.h5", help="save the trained model here")
    p.add_argument("--resume", metavar="FILE.h5", help="continue training this saved model")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw loss and accuracy per epoch (needs matplotlib)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="accuracy, loss, confusion matrix, images/s",
                       description="Score a model on a test set.")
    p.add_argument("model", metavar="FILE.h5|MODEL[:pretrained]", help=spec_help)
    _add_data_args(p, dataset_default=None)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="class and probability of images",
                       description="Classify images: .npy arrays, or PNG/JPEG when Pillow is "
                                   "installed (converted to the model's channels and size, "
                                   "scaled to [0, 1] like the training data).")
    p.add_argument("model", metavar="FILE.h5|MODEL[:pretrained]", help=spec_help)
    p.add_argument("images", metavar="IMAGE", nargs="+", help=".npy, .png or .jpg files")
    p.add_argument("--top", type=int, default=1, help="show the top N classes (default 1)")
    p.add_argument("--invert", action="store_true",
                   help="invert intensities (dark digits on a light background)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("summary", help="layer table and metadata",
                       description="Print a model's layers, output shapes, parameter counts "
                                   "and the file's metadata.")
    p.add_argument("model", metavar="FILE.h5|MODEL[:pretrained]", help=spec_help)
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("export", help="write a model as ONNX (for ONNX Runtime, Netron, ...)",
                       description="Write a model as an ONNX file (needs onnx: pip install "
                                   "'im2colnet[onnx]'); the batch size stays free.")
    p.add_argument("model", metavar="FILE.h5|MODEL[:pretrained]", help=spec_help)
    p.add_argument("out", metavar="OUT.onnx", help="the ONNX file to write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version (default 17)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="im2col + GEMM against direct convolution and others",
                       description=bench.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_arguments(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="train, evaluate and benchmark in a few minutes",
                       description="Locate the data, train LeNet-5 for one epoch on MNIST, "
                                   "score the pretrained models, print the quick benchmark.")
    p.add_argument("--data", metavar="DIR",
                   help="a folder holding mnist/ (and fashion-mnist/); default $IM2COLNET_DATA, "
                        "then ../shared/data beside a source checkout")
    p.add_argument("--no-bench", action="store_true", help="skip the benchmark table")
    p.add_argument("--no-install", action="store_true",
                   help="do not try to install the Fashion-MNIST Debian package")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"im2colnet {args.command}"
    if os.environ.get("IM2COLNET_DEBUG"):
        return args.func(args)
    from .serialization import ModelFormatError
    try:
        return args.func(args)
    except BrokenPipeError:  # the output went to a pager or `head` that closed early
        sys.stdout = open(os.devnull, "w")  # nothing left to flush at exit
        return 0
    except (CommandError, ModelFormatError, OSError, ValueError, TypeError) as exc:
        # OSError covers FileNotFoundError (missing data), unreadable and unwritable files.
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 -- a bug of ours: still one line, not a traceback
        print(f"{prog}: internal error: {type(exc).__name__}: {_one_line(exc)} "
              "(run with IM2COLNET_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
