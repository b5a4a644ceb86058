"""``im2colnet demo``: a tour in a few minutes.

1. locate Fashion-MNIST (demo.sh installs its Debian package where it can),
2. train LeNet-5 for one epoch on MNIST with a progress bar, score it on the test set,
3. score the pretrained LeNet-5 and VGG-small on their test sets,
4. print the quick benchmark table (im2col + GEMM against direct loops and others).

Each part that cannot run (no data, no pretrained file) says so in one line
and the demo goes on.
"""
import argparse
import os
import time

from ..losses import CrossEntropyLoss
from ..optim import SGD
from . import bench
from .inputs import CommandError, data_root, load_dataset, zoo_model
from .report import evaluate_model

FASHION_PACKAGE = "dataset-fashion-mnist"
PRETRAINED = (("lenet5", True), ("lenet5", "fashion-mnist"), ("vgg_small", True),
              ("resnet_small", True))


def _part(title, fn, out):
    """Run one part; a missing piece or a failure is one line, never the end of the demo."""
    print(f"\n== {title}", file=out, flush=True)
    t0 = time.perf_counter()
    try:
        fn()
    except (FileNotFoundError, CommandError) as exc:
        print(f"   skipped: {_first_line(exc)}", file=out)
    except Exception as exc:  # noqa: BLE001 -- the demo reports and continues
        print(f"   skipped: {type(exc).__name__}: {_first_line(exc)}", file=out)
    print(f"   ({time.perf_counter() - t0:.1f} s)", file=out, flush=True)


def _first_line(exc):
    return " ".join(str(exc).split())


def locate_fashion(data, out):
    try:
        x, _ = load_dataset("fashion-mnist", "test", data)
    except CommandError:
        raise FileNotFoundError(
            f"Fashion-MNIST not found; install it with `sudo apt-get install {FASHION_PACKAGE}` "
            f"or put its IDX files in $IM2COLNET_DATA/fashion-mnist") from None
    print(f"   Fashion-MNIST found: {len(x)} test images", file=out)


def train_lenet5(data, out):
    x, y = load_dataset("mnist", "train", data)
    model = zoo_model("lenet5").reset_parameters(0)
    print(f"   LeNet-5 on MNIST, one epoch of {len(x)} images, SGD lr 0.01 momentum 0.9, "
          f"batch 64", file=out, flush=True)
    t0 = time.perf_counter()
    model.fit(x, y, epochs=1, batch_size=64, optimizer=SGD(0.01, momentum=0.9),
              loss=CrossEntropyLoss(), verbose=1, seed=0)
    print(f"   trained in {time.perf_counter() - t0:.1f} s "
          f"({len(x) / (time.perf_counter() - t0):.0f} images/s)", file=out)
    evaluate_model(model, "mnist", data, out=out, confusion=False, prefix="   ")


def score_pretrained(data, out):
    for name, weights in PRETRAINED:
        label = f"{name} ({'default' if weights is True else weights} weights)"
        try:
            model = zoo_model(name, pretrained=weights)
        except Exception as exc:  # noqa: BLE001 -- a missing file is reported, not fatal
            print(f"   {label}: not available ({_first_line(exc)})", file=out)
            continue
        meta = dict(getattr(model, "metadata", None) or {})
        dataset = meta.get("dataset") or (weights if isinstance(weights, str) else "mnist")
        print(f"   {label}:", file=out, end=" ", flush=True)
        try:
            root = _fashion_root(data) if dataset == "fashion-mnist" else data
            evaluate_model(model, dataset, root, out=out, confusion=False)
        except FileNotFoundError as exc:
            print(f"no {dataset} test data ({_first_line(exc)})", file=out)


def quick_bench(out):
    """`im2colnet bench --quick --threads 1`: one thread gives steady figures on a
    shared machine (see the README); the rest of the demo keeps the default."""
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    before = bench.blas_threads()
    try:
        bench.run(parser.parse_args(["--quick", "--threads", "1"]), out=out)
    finally:
        if before:
            bench.set_blas_threads(before)


def _fashion_root(data):
    """--data names a folder of datasets; without fashion-mnist/ in it, use the default places."""
    return data if data and os.path.isdir(os.path.join(data, "fashion-mnist")) else None


def run_demo(args, out):
    start = time.perf_counter()
    data = args.data
    print(f"im2colnet demo: MNIST from {data_root('mnist', data) or os.environ.get('IM2COLNET_DATA') or 'the default location'}",
          file=out)
    _part("1/4 Fashion-MNIST",
          lambda: locate_fashion(_fashion_root(data), out), out)
    _part("2/4 train LeNet-5 for one epoch on MNIST", lambda: train_lenet5(data, out), out)
    _part("3/4 pretrained models on their test sets", lambda: score_pretrained(data, out), out)
    if not args.no_bench:
        _part("4/4 quick benchmark (im2colnet bench --quick --threads 1)",
              lambda: quick_bench(out), out)
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s", file=out)
    return 0
