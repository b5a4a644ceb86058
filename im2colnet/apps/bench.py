"""``im2colnet bench``: when is im2col + GEMM faster than direct convolution, by how much,
at what memory cost, and how does it stand against a plain-NumPy im2col and PyTorch?

For each layer shape and each pass (forward, backward-data, backward-weights)
it times, in one run and one process:

  direct  the direct loop convolution (``method="direct"``)
  ours    the packed GEMM fed by im2col panels (``method="im2col"``, the default)
  blas    im2col blocks + NumPy's BLAS products (``method="blas"``)
  gemm    the BLAS product alone on matrices of the same shapes: the floor of ``blas``
  numpy   a plain-NumPy im2col (stride tricks + matmul, ``im2colnet.numpy_im2col``)
  torch   PyTorch CPU, when it is installed (never a dependency)

Each figure is the median and the minimum over repeats after one warm-up call;
the methods take turns, round by round, so a burst of load hits them alike;
slow methods get fewer repeats (the number of repeats fits a time budget).
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
images/s at batch 256 and batch-1 latency, next to the same network in PyTorch.

Use from Python: ``run_layers(shapes, ...)`` / ``run_models(...)`` return plain
dicts (what ``--json`` writes); ``format_layer_table`` / ``format_model_table``
render them.
"""
import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import threading
import tracemalloc
from dataclasses import asdict, dataclass

import numpy as np

from .. import functional as F
from .. import models as zoo
from .. import numpy_im2col
from .._checks import conv_geometry
from ..functional.conv import workspace_bytes
from ..losses import CrossEntropyLoss
from ..optim import SGD
from .._check_build import build_info
from ..runtime.blas import blas_info, gemm_threads
from ..runtime.blas import set_blas_threads as _set_openblas_threads
from ..runtime.gemm import matmul, threaded_gemm
from ..runtime import tune
from ..runtime.threads import set_thread_count, thread_count
from ._timing import images_per_second, time_calls, time_interleaved, timed, timing_dict

__all__ = ["ConvShape", "SHAPES", "QUICK_SHAPES", "METHODS", "PASSES", "parse_shape",
           "run_layers", "run_models", "format_layer_table", "format_model_table",
           "add_arguments", "run", "main"]

METHODS = ("direct", "ours", "blas", "gemm", "numpy", "torch")
PASSES = ("forward", "backward-data", "backward-weights")


class BenchError(Exception):
    """A problem with the benchmark's options (reported as one line, exit code 2)."""


@dataclass(frozen=True)
class ConvShape:
    """One convolution layer: input (n, c, h, w), k filters of kh x kw, symmetric padding;
    groups > 1 makes it grouped (each filter sees c // groups channels; depthwise: groups = c)."""
    name: str
    n: int
    c: int
    h: int
    w: int
    k: int
    kh: int
    kw: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1

    def geometry(self):
        return conv_geometry((self.h, self.w), (self.kh, self.kw), self.stride,
                             self.padding, self.dilation)

    def flops(self):
        """Multiply-adds x 2 of one pass: 2 * N*Ho*Wo * K * (C/groups)*kh*kw (the same for all three)."""
        g = self.geometry()
        return 2 * self.n * g.out_h * g.out_w * self.k * (self.c // self.groups) * self.kh * self.kw

    def describe(self):
        extra = "".join(f", {label} {value}" for label, value, default in (
            ("pad", self.padding, 0), ("stride", self.stride, 1), ("dil", self.dilation, 1),
            ("groups", self.groups, 1))
            if value != default)
        return (f"N={self.n}, {self.c}->{self.k}, {self.h}x{self.w}, "
                f"{self.kh}x{self.kw}{extra}")


SHAPES = {s.name: s for s in (
    ConvShape("lenet5-conv1", 64, 1, 28, 28, 6, 5, 5, padding=2),
    ConvShape("lenet5-conv2", 64, 6, 14, 14, 16, 5, 5),
    ConvShape("vgg-28", 64, 32, 28, 28, 32, 3, 3, padding=1),
    ConvShape("vgg-14", 64, 64, 14, 14, 64, 3, 3, padding=1),
    ConvShape("vgg-7", 64, 128, 7, 7, 128, 3, 3, padding=1),
    ConvShape("c64-16", 64, 64, 16, 16, 64, 3, 3, padding=1),   # the engine's target shape
    ConvShape("wide", 32, 128, 16, 16, 128, 3, 3, padding=1),
    ConvShape("strided", 64, 32, 28, 28, 64, 3, 3, stride=2, padding=1),
    ConvShape("dilated", 64, 32, 28, 28, 32, 3, 3, padding=2, dilation=2),
    ConvShape("depthwise", 64, 64, 28, 28, 64, 3, 3, padding=1, groups=64),  # MobileNet-style
)}
QUICK_SHAPES = ("lenet5-conv1", "lenet5-conv2", "vgg-14")


def parse_shape(text):
    """'N,C,H,W,K,kh,kw[,stride,pad,dil,groups]' -> ConvShape (ValueError with the reason)."""
    fields = [f.strip() for f in text.split(",")]
    if not 7 <= len(fields) <= 11:
        raise ValueError(f"--shape: expected N,C,H,W,K,kh,kw[,stride,pad,dil,groups] "
                         f"(7 to 11 integers), got {text!r}")
    try:
        values = [int(f) for f in fields]
    except ValueError:
        raise ValueError(f"--shape: every field must be an integer, got {text!r}") from None
    shape = ConvShape(",".join(fields), *values)
    if min(values[:7]) < 1 or min(shape.stride, shape.dilation, shape.groups) < 1 \
            or shape.padding < 0:
        raise ValueError(f"--shape: sizes, stride, dilation and groups must be >= 1 and the "
                         f"padding >= 0, got {text!r}")
    if shape.c % shape.groups or shape.k % shape.groups:
        raise ValueError(f"--shape: groups must divide C and K, got {text!r}")
    try:
        shape.geometry()  # the kernel must fit the padded input
    except ValueError as exc:
        raise ValueError(f"--shape {text!r}: {exc}") from None
    return shape


# ---------------------------------------------------------------- timing

def _memory_of_call(fn):
    """(workspace MiB, traced peak MiB) of one call of fn, run in a fresh thread.

    The im2col scratch buffers are per thread and reused between calls, so a new
    thread starts with none: what it holds afterwards (``workspace_bytes()``) is
    the workspace this call needs. The traced peak (tracemalloc, which sees
    NumPy's allocations) is everything allocated during the call, output included.
    """
    result = {}

    def target():
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            fn()
            result["peak"] = (tracemalloc.get_traced_memory()[1] - base) / 2**20
        finally:
            tracemalloc.stop()
        result["workspace"] = workspace_bytes() / 2**20

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    return result.get("workspace"), result.get("peak")


def peak_rss_mib():
    """The process's peak resident set size so far (MiB), or None where unknown."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


def blas_threads():
    """The threads our products run on now: ours (im2colnet.runtime.gemm.matmul) or, when the
    products go through np.matmul, NumPy's OpenBLAS's (None when it cannot be found)."""
    return thread_count() if threaded_gemm() else blas_info()["threads"]


def set_blas_threads(n):
    """Run the products, and our kernels, on n threads from now on: NumPy's OpenBLAS
    (its products below the engine's small-product threshold still run on one) and
    our OpenMP threads. False when OpenBLAS cannot be found."""
    if not _set_openblas_threads(n):
        return False
    set_thread_count(n)
    return True


def torch_version():
    """The installed PyTorch's version (without importing it), or None."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


class _Unavailable(Exception):
    """A method that cannot run here (PyTorch not installed, or its process failed)."""


def run_torch_peer(request, timeout=1800):
    """PyTorch's figures for a request (see ``_torch_peer.py``), from a child process.

    Raises _Unavailable with the reason when PyTorch is not installed or the
    child fails.
    """
    if torch_version() is None:
        raise _Unavailable("PyTorch is not installed")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_torch_peer.py")
    request = dict(request, threads=blas_threads())  # the same number of cores as ours
    try:
        child = subprocess.run([sys.executable, script], input=json.dumps(request),
                               capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        raise _Unavailable(f"the PyTorch process did not run ({exc})") from None
    if child.returncode != 0:
        last = (child.stderr.strip().splitlines() or ["no message"])[-1]
        raise _Unavailable(f"the PyTorch process failed: {last}")
    return json.loads(child.stdout)


# ---------------------------------------------------------------- the calls of each method

def _layer_inputs(shape, dtype, rng):
    g = shape.geometry()
    return dict(
        x=rng.standard_normal((shape.n, shape.c, shape.h, shape.w)).astype(dtype),
        w=rng.standard_normal((shape.k, shape.c // shape.groups, shape.kh, shape.kw)).astype(dtype),
        b=rng.standard_normal(shape.k).astype(dtype),
        dy=rng.standard_normal((shape.n, shape.k, g.out_h, g.out_w)).astype(dtype))


def _conv_calls(module, shape, t, **method):
    """The three passes of an im2colnet.functional-like module on the inputs t."""
    geo = dict(stride=shape.stride, padding=shape.padding, dilation=shape.dilation)
    if shape.groups > 1:
        geo["groups"] = shape.groups
    return {
        "forward": lambda: module.conv2d_forward(t["x"], t["w"], t["b"], **geo, **method),
        "backward-data": lambda: module.conv2d_backward_data(
            t["dy"], t["w"], t["x"].shape, **geo, **method),
        "backward-weights": lambda: module.conv2d_backward_weights(
            t["dy"], t["x"], t["w"].shape, **geo, **method),
    }


def _gemm_calls(shape, t, rng):
    """The GEMM(s) of each pass alone, on matrices of the im2col shapes, into preallocated
    outputs, by the route our products take (im2colnet.runtime.gemm.matmul: our threads, or
    np.matmul with another BLAS), in the layout the im2col path uses (see
    im2colnet.functional.conv):
    phi^T (CKK, M), W (K, CKK), dY^T (K, M) with M = N*Ho*Wo and CKK = C*kh*kw.

    forward: Y^T = W phi^T; backward-data: dphi^T = W^T dY^T; backward-weights: dW = dY^T phi.
    """
    g = shape.geometry()
    # a grouped layer: one product per group, each of K/G filters on C/G channels
    k = shape.k // shape.groups
    m, ckk, dtype = shape.n * g.out_h * g.out_w, shape.c // shape.groups * shape.kh * shape.kw, t["x"].dtype
    cols_t = rng.standard_normal((ckk, m)).astype(dtype)
    wmat = t["w"][:k].reshape(k, ckk)
    dy_t = rng.standard_normal((k, m)).astype(dtype)
    out_f, out_d = np.empty((k, m), dtype), np.empty((ckk, m), dtype)
    out_w = np.empty((k, ckk), dtype)
    flops = 2.0 * m * ckk * k

    def product(a, b, out):
        # the route our convolution's products take (im2colnet.runtime.gemm.matmul)
        with gemm_threads(flops):
            for _ in range(shape.groups):
                matmul(a, b, out)

    return {
        "forward": lambda: product(wmat, cols_t, out_f),
        "backward-data": lambda: product(wmat.T, dy_t, out_d),
        "backward-weights": lambda: product(dy_t, cols_t.T, out_w),
    }


def _method_calls(method, shape, t, rng):
    """{pass: fn} of one of our methods (torch runs in a process of its own); None where the
    method cannot run the shape (the plain-NumPy im2col has no groups)."""
    if method == "direct":
        return _conv_calls(F, shape, t, method="direct")
    if method == "ours":
        return _conv_calls(F, shape, t)
    if method == "blas":
        return _conv_calls(F, shape, t, method="blas")
    if method == "gemm":
        return _gemm_calls(shape, t, rng)
    return None if shape.groups > 1 else _conv_calls(numpy_im2col, shape, t)


def _ratio(a, b):
    if a is None or b is None or b <= 0:
        return None
    return a / b


def _time_pass(fns, flops, budget, direct_budget, max_repeats):
    """{method: fn} of one pass -> {method: timing dict}."""
    runnable, timings = dict(fns), {}
    first = {method: timed(fn) for method, fn in fns.items()}   # the warm-up calls
    # The fast methods take turns; the direct loops (seconds per call) run as a block
    # with their own budget.
    shared = {m: fn for m, fn in runnable.items() if m != "direct"}
    measured = time_interleaved(shared, budget, max_repeats, first)
    if "direct" in runnable:
        measured.update(time_interleaved({"direct": runnable["direct"]}, direct_budget,
                                         max_repeats, first))
    for method, seconds in measured.items():
        timings[method] = timing_dict(seconds, flops)
    return timings


def _set_ratios(result):
    med = {m: t.get("median_ms") for m, t in result["methods"].items()}
    result["ratios"] = {
        "ours/gemm": _ratio(med.get("ours"), med.get("gemm")),
        "blas/ours": _ratio(med.get("blas"), med.get("ours")),
        "direct/ours": _ratio(med.get("direct"), med.get("ours")),
        "numpy/ours": _ratio(med.get("numpy"), med.get("ours")),
        "ours/torch": _ratio(med.get("ours"), med.get("torch")),
    }


def run_layers(shapes, dtype=np.float32, methods=METHODS, budget=1.0, max_repeats=20,
               direct_budget=None, seed=0, progress=None):
    """Time every pass of every shape with every method; a list of result dicts.

    shapes: ConvShape list; dtype: float32 or float64; budget: seconds of repeats
    per (shape, pass, method) after the warm-up (direct_budget for the direct
    loops, default budget); progress: callable(str) for status lines, or None.
    PyTorch ("torch") is timed afterwards, in a process of its own.
    Each result: {"shape": {...}, "pass", "flops", "methods": {method: {...}},
    "ratios": {...}, "memory_mib": {"ours_workspace", "ours_peak", "numpy_peak",
    "full_cols"}}.
    """
    direct_budget = budget if direct_budget is None else direct_budget
    rng = np.random.default_rng(seed)
    ours_methods = [m for m in methods if m != "torch"]
    results = []
    for shape in shapes:
        tensors = _layer_inputs(shape, dtype, rng)
        calls = {m: _method_calls(m, shape, tensors, rng) for m in ours_methods}
        missing = [m for m, fns in calls.items() if fns is None]
        calls = {m: fns for m, fns in calls.items() if fns is not None}
        g = shape.geometry()
        full_cols = (shape.n * g.out_h * g.out_w * shape.c * shape.kh * shape.kw
                     * np.dtype(dtype).itemsize / 2**20)
        for pass_ in PASSES:
            if progress:
                progress(f"{shape.name} {pass_}")
            timings = _time_pass({m: fns[pass_] for m, fns in calls.items()}, shape.flops(),
                                 budget, direct_budget, max_repeats)
            timings.update({m: {"error": f"{m} has no grouped convolution"} for m in missing})
            memory = {"full_cols": full_cols}
            for method in ("ours", "blas", "numpy"):
                if "median_ms" in timings.get(method, {}):
                    workspace, peak = _memory_of_call(calls[method][pass_])
                    memory[f"{method}_peak"] = peak
                    if method in ("ours", "blas"):
                        memory[f"{method}_workspace"] = workspace
            results.append({"shape": asdict(shape), "pass": pass_, "flops": shape.flops(),
                            "methods": timings, "memory_mib": memory})
    if "torch" in methods:
        if progress:
            progress("PyTorch (in a child process)")
        try:
            answer = run_torch_peer({"kind": "layers", "shapes": [asdict(s) for s in shapes],
                                     "dtype": np.dtype(dtype).name, "budget": budget,
                                     "max_repeats": max_repeats, "seed": seed})
            theirs = answer["layers"]
            for r in results:
                r["torch_threads"] = answer["threads"]
        except _Unavailable as exc:
            theirs = {s.name: {p: {"error": str(exc)} for p in PASSES} for s in shapes}
        for r in results:
            r["methods"]["torch"] = theirs[r["shape"]["name"]][r["pass"]]
    for r in results:
        r["methods"] = {m: r["methods"][m] for m in methods if m in r["methods"]}
        _set_ratios(r)
    return results


# ---------------------------------------------------------------- whole models

def _bench_ours(model, x_train, y_train, x_infer, budget, max_repeats):
    """Training images/s (SGD momentum, batch 64, through Sequential.fit), inference
    images/s (batch 256), batch-1 latency (ms)."""
    optimizer, loss_fn, batch = SGD(0.01, momentum=0.9), CrossEntropyLoss(), 64

    def train():
        model.fit(x_train, y_train, epochs=1, batch_size=batch, optimizer=optimizer,
                  loss=loss_fn, verbose=0, seed=0)

    return {
        "train": images_per_second(time_calls(train, budget, max_repeats), x_train.shape[0]),
        "infer": images_per_second(time_calls(lambda: model.predict(x_infer, batch_size=256),
                                              budget, max_repeats), x_infer.shape[0]),
        "latency_ms": time_calls(lambda: model.predict(x_infer[:1], batch_size=1),
                                 budget, max_repeats)[0] * 1e3,
    }


def run_models(names=("lenet5", "vgg_small"), dtype=np.float32, budget=2.0, max_repeats=5,
               train_images=640, seed=0, with_torch=True, progress=None):
    """Whole-model throughput; a list of {"model", "ours": {...}, "torch": {...}, "ratios"}.

    Training: SGD with momentum, batch 64, over train_images random images (a
    multiple of 64); inference: one batch of 256; latency: one image. Random
    data: this measures speed only. PyTorch runs the same architecture (built
    from the model's config) in a process of its own.
    """
    rng = np.random.default_rng(seed)
    train_images = max(64, train_images // 64 * 64)
    results, configs = [], []
    for name in names:
        if progress:
            progress(f"model {name}")
        if name not in ("lenet5", "vgg_small"):
            raise ValueError(f"names: no zoo model {name!r}; choose from lenet5, vgg_small")
        model = getattr(zoo, name)()
        in_shape = tuple(model.input_shape)
        x_train = rng.random((train_images,) + in_shape).astype(dtype)
        model.build(in_shape).reset_parameters(seed)
        model.astype(dtype)
        classes = model.predict(x_train[:1]).shape[1]
        y_train = rng.integers(0, classes, train_images)
        x_infer = rng.random((256,) + in_shape).astype(dtype)
        results.append({"model": name, "input_shape": list(in_shape),
                        "ours": _bench_ours(model, x_train, y_train, x_infer, budget, max_repeats)})
        configs.append({"name": name, "config": model.get_config()})
    if with_torch and configs:
        if progress:
            progress("PyTorch models (in a child process)")
        try:
            theirs = run_torch_peer({"kind": "models", "models": configs,
                                     "dtype": np.dtype(dtype).name, "budget": budget,
                                     "max_repeats": max_repeats, "seed": seed,
                                     "train_images": train_images})["models"]
        except _Unavailable as exc:
            theirs = {c["name"]: {"error": str(exc)} for c in configs}
        for entry in results:
            if "ours" not in entry:
                continue
            entry["torch"] = t = theirs[entry["model"]]
            ours = entry["ours"]
            if "train" in t:
                entry["ratios"] = {
                    "train ours/torch": ours["train"]["images_per_s"] / t["train"]["images_per_s"],
                    "infer ours/torch": ours["infer"]["images_per_s"] / t["infer"]["images_per_s"],
                    "latency torch/ours": t["latency_ms"] / ours["latency_ms"],
                }
    return results


# ---------------------------------------------------------------- output

def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def _table(header, rows):
    """Left-align the first column, right-align the rest, two spaces between columns."""
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = []
    for row in [header] + rows:
        cells = [str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i])
                 for i, c in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


# A median this many times the minimum means calls were stalled (a busy machine).
UNSTEADY = 2.0

UNSTEADY_NOTE = (f"*  median > {UNSTEADY:g} x min: calls were stalled (a busy machine; with several "
                 "BLAS threads on shared cores, --threads 1 steadies the figures)")


def _ms(value):
    """Milliseconds with about three significant digits, without exponents."""
    return format(value, ".0f" if value >= 100 else ".1f" if value >= 10
                  else ".2f" if value >= 1 else ".3f")


def _time_cell(timing):
    """'median/min' in ms; '-' when the method did not run, 'n/a' when it could not."""
    if timing is None:
        return "-"
    if "error" in timing:
        return "n/a"
    unsteady = timing["median_ms"] > UNSTEADY * timing["min_ms"]
    return f"{_ms(timing['median_ms'])}/{_ms(timing['min_ms'])}{'*' if unsteady else ''}"


def _blas_name():
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas.get('version', '')}".strip()
    except Exception:  # noqa: BLE001 -- older NumPy: the name is a nicety
        return "unknown"


def measure_peak(size=1024, repeats=5):
    """The machine's one-core peak in GFLOP/s: the better of our packed micro-kernel (a 1x1
    convolution of `size` channels to `size` kernels over `size` pixels) and NumPy's BLAS
    on a `size`^3 product, each the median of `repeats` calls on one thread.
    Returns {"gflops", "ours", "blas"}."""
    rng = np.random.default_rng(0)
    side = int(round(size ** 0.5))
    x = rng.standard_normal((1, size, side, size // side)).astype(np.float32)
    w = rng.standard_normal((size, size, 1, 1)).astype(np.float32)
    a = rng.standard_normal((size, size)).astype(np.float32)
    out = np.empty_like(a)
    flops = 2.0 * size * size * side * (size // side)
    before = blas_threads()
    set_blas_threads(1)
    set_thread_count(1)
    try:
        ours = time_calls(lambda: F.conv2d_forward(x, w), 0, repeats)[0]
        blas = time_calls(lambda: np.matmul(a, a, out=out), 0, repeats)[0]
    finally:
        if before is not None:
            set_blas_threads(before)
            set_thread_count(before)
    result = {"ours": flops / ours / 1e9, "blas": 2.0 * size ** 3 / blas / 1e9}
    result["gflops"] = max(result.values())
    return result


def machine_info():
    return {
        "python": platform.python_version(), "numpy": np.__version__, "blas": _blas_name(),
        "platform": platform.platform(), "cpus": os.cpu_count(),
        "blas_threads": blas_threads(),
        "im2colnet_build": build_info(),
        "products_on_our_threads": threaded_gemm(),
        "torch": torch_version(),
    }


def format_header(info, dtype):
    """One line: what ran where."""
    threads = "" if info["blas_threads"] is None else f", {info['blas_threads']} threads"
    torch = ("torch not installed" if info["torch"] is None
             else f"torch {info['torch']} (in a child process, as many threads)")
    line = (f"im2colnet bench: {np.dtype(dtype).name}, numpy {info['numpy']} ({info['blas']}"
            f"{threads}), {torch}, {info['cpus']} CPUs, "
            f"OpenMP {'on' if info['im2colnet_build']['openmp'] else 'off'}, products on "
            f"{'our OpenMP threads' if info.get('products_on_our_threads') else 'the BLAS threads'}"
            f", packed kernel {info['im2colnet_build'].get('kernel', '?')}")
    peak = info.get("peak")
    if peak:
        line += (f"\none-core peak (measured): {peak['gflops']:.1f} GFLOP/s (our micro-kernel "
                 f"{peak['ours']:.1f}, NumPy's BLAS {peak['blas']:.1f}, 1024^3 product, 1 thread)")
    return line


def format_layer_table(results, methods=METHODS, peak=None):
    """The layer results as a text table: one block of three passes per shape; peak: the
    one-core peak in GFLOP/s (for the "ours %peak" column), or None."""
    header = (["shape / pass"] + [f"{m} ms" for m in methods]
              + ["ours GF/s", "ours %peak", "blas/ours", "ours/gemm", "direct/ours", "numpy/ours",
                 "ours/torch", "ws MiB", "ours MiB", "numpy MiB"])
    rows, last = [], None
    short = {"forward": "  forward", "backward-data": "  bwd-data", "backward-weights": "  bwd-weights"}
    for r in results:
        s = r["shape"]
        if s["name"] != last:
            rows.append([f"{s['name']}  ({ConvShape(**s).describe()})"] + [""] * (len(header) - 1))
            last = s["name"]
        ours, ratios, mem = r["methods"].get("ours", {}), r["ratios"], r["memory_mib"]
        rows.append([short[r["pass"]]]
                    + [_time_cell(r["methods"].get(m)) for m in methods]
                    + [_fmt(ours.get("gflops"), ".1f"),
                       _fmt(None if not (peak and ours.get("gflops")) else
                            100 * ours["gflops"] / peak, ".0f"),
                       _fmt(ratios.get("blas/ours"), ".2f"),
                       _fmt(ratios["ours/gemm"], ".2f"), _fmt(ratios["direct/ours"], ".1f"),
                       _fmt(ratios["numpy/ours"], ".2f"), _fmt(ratios["ours/torch"], ".2f"),
                       _fmt(mem.get("blas_workspace"), ".1f"), _fmt(mem.get("ours_peak"), ".1f"),
                       _fmt(mem.get("numpy_peak"), ".1f")])
    notes = sorted({f"n/a  {m}: {t['error']}" for r in results for m, t in r["methods"].items()
                    if "error" in t})
    if any(cell.endswith("*") for row in rows for cell in row):
        notes.append(UNSTEADY_NOTE)
    return "\n".join([_table(header, rows)] + notes)


def format_model_table(results):
    header = ["model", "train img/s (b=64)", "torch", "infer img/s (b=256)", "torch",
              "latency ms (b=1)", "torch", "train ours/torch", "infer ours/torch"]
    rows, notes = [], []
    for r in results:
        ours, theirs, ratios = r["ours"], r.get("torch", {}), r.get("ratios", {})
        if "error" in theirs:
            notes.append(f"{r['model']} torch: {theirs['error']}")
        rows.append([r["model"],
                     _fmt(ours["train"]["images_per_s"], ".0f"),
                     _fmt(theirs.get("train", {}).get("images_per_s"), ".0f"),
                     _fmt(ours["infer"]["images_per_s"], ".0f"),
                     _fmt(theirs.get("infer", {}).get("images_per_s"), ".0f"),
                     _fmt(ours["latency_ms"], ".2f"), _fmt(theirs.get("latency_ms"), ".2f"),
                     _fmt(ratios.get("train ours/torch"), ".2f"),
                     _fmt(ratios.get("infer ours/torch"), ".2f")])
    text = _table(header, rows) if rows else ""
    return "\n".join([text] + [f"n/a  {n}" for n in notes]).strip("\n")


def plot_layers(results, path, methods=METHODS):
    """Bar chart, one panel per pass: median time per shape for each method (log scale)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(dict.fromkeys(r["shape"]["name"] for r in results))
    fig, axes = plt.subplots(len(PASSES), 1, figsize=(max(6, 1.2 * len(names) + 2), 9),
                             sharex=True)
    width = 0.8 / len(methods)
    for ax, pass_ in zip(axes, PASSES):
        by_name = {r["shape"]["name"]: r for r in results if r["pass"] == pass_}
        for i, m in enumerate(methods):
            values = [by_name[n]["methods"].get(m, {}).get("median_ms", np.nan) for n in names]
            ax.bar(np.arange(len(names)) + i * width, values, width, label=m)
        ax.set_yscale("log")
        ax.set_ylabel("ms (median)")
        ax.set_title(pass_)
    axes[-1].set_xticks(np.arange(len(names)) + 0.4 - width / 2)
    axes[-1].set_xticklabels(names, rotation=30, ha="right")
    axes[0].legend(ncol=len(methods), fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- command line

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
    report["peak_rss_mib"] = peak_rss_mib()
    print(f"\nprocess peak RSS: {_fmt(report['peak_rss_mib'], '.0f')} MiB", file=out)
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
