"""``im2colnet bench``: when is im2col + GEMM faster than direct convolution, by how much,
at what memory cost, and how does it stand against a plain-NumPy im2col and PyTorch?

For each layer shape and each pass (forward, backward-data, backward-weights)
it times, in one run and one process:

  direct  the direct loop convolution (``method="direct"``)
  ours    the packed GEMM fed by im2col panels (``method="im2col"``, the default)
  blas    im2col blocks + NumPy's BLAS products (``method="blas"``)
  gemm    the BLAS product alone on matrices of the same shapes: the floor of ``blas``
  numpy   a plain-NumPy im2col (stride tricks + matmul, ``im2colnet.numpy_im2col``)
  torch   PyTorch CPU, when it is installed (never a dependency), in a process of its
          own that times each of its calls

Each figure is the median and the minimum over repeats after one warm-up call;
the methods take turns, round by round (PyTorch too: a turn passing to or from
its process opens with 20 ms of untimed calls, so neither side's idle threads
still hold the cores), so a burst of load hits them alike; the direct loops,
seconds per call, run after them as a block; slow methods get fewer repeats
(the number of repeats fits a time budget).
Ratios compare medians of the same run. Timings on a shared machine are noisy:
compare ratios, not absolute times across runs. Memory: the im2col workspace
our call holds (``functional.conv.workspace_bytes``, measured in a fresh thread),
the peak NumPy allocates during one call (tracemalloc, output included), and the
process's peak resident set size.

The header gives the machine's measured one-core peak: the better of our micro-kernel
(a 1x1 convolution, i.e. one 1024 x 1024 x 1024 product) and NumPy's BLAS on a
1024 x 1024 product, on one thread; "ours %peak" is the packed kernel's GFLOP/s
against it.

Whole models (LeNet-5, VGG-small): training images/s at batch 64, inference
images/s at batch 256 and batch-1 latency, next to the same network in PyTorch,
each call taking turns with PyTorch's round by round.

Use from Python: ``run_layers(shapes, ...)`` / ``run_models(...)`` return plain
dicts (what ``--json`` writes); ``format_layer_table`` / ``format_model_table``
render them.
"""
import argparse
import json
import sys

import numpy as np

from ..runtime import tune
from .bench_machine import (blas_threads, machine_info, measure_peak, peak_rss_mib,
                            set_blas_threads)
from .bench_peer import torch_version
from .bench_plots import plot_layers
from .bench_runs import METHODS, PASSES, run_layers, run_models
from .bench_shapes import QUICK_SHAPES, SHAPES, ConvShape, parse_shape
from .bench_tables import format_header, format_layer_table, format_model_table

# The command; what it runs lives beside it: bench_shapes (what is timed), bench_runs (the
# measurements), bench_machine (threads, peak, versions), bench_peer (PyTorch's process),
# bench_tables and bench_plots (the output), _timing (repeats and medians).
__all__ = ["ConvShape", "SHAPES", "QUICK_SHAPES", "METHODS", "PASSES", "parse_shape",
           "run_layers", "run_models", "format_layer_table", "format_model_table",
           "format_header", "measure_peak", "machine_info", "blas_threads", "set_blas_threads",
           "torch_version", "BenchError", "add_arguments", "run", "main"]


class BenchError(Exception):
    """A problem with the benchmark's options (reported as one line, exit code 2)."""


def add_arguments(parser):
    """The options of `im2colnet bench` (shared with `python -m im2colnet.bench`)."""
    parser.add_argument("shapes", nargs="*", metavar="NAME",
                        help=f"named layer shapes to run (default: all): {', '.join(SHAPES)}")
    parser.add_argument("--shape", action="append", default=[], metavar="N,C,H,W,K,kh,kw[,s,p,d,g]",
                        help="an extra layer shape (repeatable); stride, padding, dilation, "
                             "groups default to 1, 0, 1, 1")
    parser.add_argument("--quick", action="store_true",
                        help=f"a fast subset ({', '.join(QUICK_SHAPES)}) with short time "
                             "budgets and no model benchmarks (what the demo runs)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="the floating-point type (default float32)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated subset of {','.join(METHODS)} (default: all)")
    parser.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                        help="time spent repeating each measurement (default 1, quick 0.2)")
    parser.add_argument("--repeats", type=int, default=20, metavar="N",
                        help="at most N repeats per measurement (default 20)")
    parser.add_argument("--no-layers", action="store_true", help="skip the layer table")
    parser.add_argument("--no-models", action="store_true",
                        help="skip the whole-model (LeNet-5, VGG-small) throughput table")
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="also draw time per shape for each method (needs matplotlib)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="threads of the products and our kernels, and of PyTorch "
                             "(default: OMP_NUM_THREADS or the usable CPUs). On a busy shared "
                             "machine --threads 1 gives steadier figures")


def _selected_shapes(args):
    unknown = [name for name in args.shapes if name not in SHAPES]
    if unknown:
        raise BenchError(f"unknown layer shape {unknown[0]!r}; choose from {', '.join(SHAPES)} "
                         "or give --shape N,C,H,W,K,kh,kw")
    # Named shapes as given; with only --shape, just those; else the quick set or all.
    names = args.shapes or ([] if args.shape else list(QUICK_SHAPES) if args.quick else list(SHAPES))
    try:
        extra = [parse_shape(text) for text in args.shape]
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    return [SHAPES[n] for n in names] + extra


def run(args, out=sys.stdout, err=sys.stderr):
    """Run the benchmark for parsed arguments; prints the tables. Raises BenchError."""
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise BenchError(f"--methods: unknown method {bad[0] if bad else args.methods!r}; "
                         f"choose from {','.join(METHODS)}")
    if args.repeats < 1:
        raise BenchError(f"--repeats: must be >= 1, got {args.repeats}")
    if args.budget is not None and args.budget < 0:
        raise BenchError(f"--budget: must be >= 0, got {args.budget}")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise BenchError("--plot needs matplotlib: pip install matplotlib "
                             "(or pip install im2colnet[plot])") from None
    if args.threads is not None:
        if args.threads < 1:
            raise BenchError(f"--threads: must be >= 1, got {args.threads}")
        if not set_blas_threads(args.threads):
            raise BenchError("--threads: cannot find NumPy's OpenBLAS to set its thread count")
    shapes = _selected_shapes(args)
    dtype = np.dtype(args.dtype).type
    budget = args.budget if args.budget is not None else (0.2 if args.quick else 1.0)
    tty = getattr(err, "isatty", lambda: False)()

    def progress(text):
        if tty:
            err.write(f"\r\033[Kbenchmarking {text} ...")
            err.flush()

    info = machine_info()
    if not args.no_layers and "ours" in methods:
        info["peak"] = measure_peak()
    report = {"machine": info, "dtype": np.dtype(dtype).name, "budget_s": budget,
              "max_repeats": args.repeats, "layers": [], "models": []}
    print(format_header(info, dtype), file=out)
    if not args.no_layers and shapes:
        report["layers"] = run_layers(shapes, dtype, methods, budget, args.repeats,
                                      direct_budget=min(budget, 0.5), seed=args.seed,
                                      progress=progress)
        if tty:
            err.write("\r\033[K")
        print("\nConvolution layers: ms per call, median/min over repeats after a warm-up; "
              "ratios of medians in this run; ours %peak against the header's one-core peak;\n"
              "ws MiB = im2col workspace of the blas route (the packed kernel's panels: a few "
              "MiB per thread at most); "
              "ours/numpy MiB = peak memory allocated during one call (output included).",
              file=out)
        print(format_layer_table(report["layers"], methods,
                                 (info.get("peak") or {}).get("gflops")), file=out)
        threads = {r.get("torch_threads") for r in report["layers"]} - {None}
        if threads:
            print(f"(PyTorch ran in a child process with {threads.pop()} threads)", file=out)
    if not (args.no_models or args.quick):
        report["models"] = run_models(dtype=dtype, budget=max(budget, 1.0), seed=args.seed,
                                      with_torch="torch" in methods, progress=progress)
        if tty:
            err.write("\r\033[K")
        print("\nWhole models (random data): images/s, median over repeats; SGD momentum, "
              "batch 64 for training, 256 for inference.", file=out)
        print(format_model_table(report["models"]), file=out)
    report["peak_rss_mib"] = rss = peak_rss_mib()
    print(f"\nprocess peak RSS: {'-' if rss is None else format(rss, '.0f')} MiB", file=out)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
        print(f"wrote {args.json}", file=out)
    if args.plot and report["layers"]:
        plot_layers(report["layers"], args.plot, methods)
        print(f"wrote {args.plot}", file=out)
    return report


def main(argv=None, prog="python -m im2colnet.apps.bench"):
    """Parse argv (default sys.argv[1:]), tune the process (im2colnet.runtime.tune), run,
    print; returns the exit code (2 on a bad option)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    tune()
    try:
        run(args)
    except BenchError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
