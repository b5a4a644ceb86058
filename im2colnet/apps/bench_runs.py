"""The measurements: every pass of each layer shape by each method (run_layers), and whole
models' training and inference speed (run_models); plain dicts out. PyTorch's calls take
their turns among ours, from a child process (bench_peer.TorchPeer)."""
import contextlib
import functools
import threading
import tracemalloc
from dataclasses import asdict

import numpy as np

from .. import functional as F
from .. import models as zoo
from .. import numpy_im2col
from ..functional.conv import workspace_bytes
from ..losses import CrossEntropyLoss
from ..optim import SGD
from ..runtime.blas import gemm_threads
from ..runtime.gemm import matmul
from ._timing import SelfTimed, model_figures, time_interleaved, timed, timing_dict
from .bench_machine import blas_threads
from .bench_peer import PeerUnavailable, TorchPeer

__all__ = ["METHODS", "PASSES", "run_layers", "run_models"]

METHODS = ("direct", "ours", "blas", "gemm", "numpy", "torch")
PASSES = ("forward", "backward-data", "backward-weights")


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
    """{pass: fn} of one of our methods (torch's are set up in its own process); None where the
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


def _peer_for_run(wanted):
    """One PyTorch process for a whole run (closed at its end), or None when not wanted."""
    return TorchPeer(blas_threads()) if wanted else contextlib.nullcontext()


def _with_torch(time_fns, fns, peer, id, request):
    """time_fns(fns), PyTorch's call (request, set up in the peer under id) taking its turns
    among fns as "torch". When the peer is unavailable or fails meanwhile, time_fns(fns)
    alone, and "torch": {"error": reason}. No peer: time_fns(fns)."""
    if peer is None:
        return time_fns(fns)
    try:
        peer.setup(id, request)
        return time_fns(dict(fns, torch=SelfTimed(functools.partial(peer.seconds, id))))
    except PeerUnavailable as exc:
        return dict(time_fns(fns), torch={"error": str(exc)})


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
    PyTorch ("torch") runs in a process of its own, started once for the run; its calls
    take their turns with ours round by round (timed in that process), so that a slow
    minute of a shared machine does not fall on one side only.
    Each result: {"shape": {...}, "pass", "flops", "methods": {method: {...}},
    "ratios": {...}, "memory_mib": {"ours_workspace", "ours_peak", "numpy_peak",
    "full_cols"}}.
    """
    direct_budget = budget if direct_budget is None else direct_budget
    rng = np.random.default_rng(seed)
    ours_methods = [m for m in methods if m != "torch"]
    results = []
    with _peer_for_run("torch" in methods) as peer:
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
                timings = _with_torch(
                    lambda fns: _time_pass(fns, shape.flops(), budget, direct_budget, max_repeats),
                    {m: fns[pass_] for m, fns in calls.items()}, peer, pass_,
                    {"layer": asdict(shape), "pass": pass_, "dtype": np.dtype(dtype).name,
                     "seed": seed})
                timings.update({m: {"error": f"{m} has no grouped convolution"} for m in missing})
                memory = {"full_cols": full_cols}
                for method in ("ours", "blas", "numpy"):
                    if "median_ms" in timings.get(method, {}):
                        workspace, peak = _memory_of_call(calls[method][pass_])
                        memory[f"{method}_peak"] = peak
                        if method in ("ours", "blas"):
                            memory[f"{method}_workspace"] = workspace
                result = {"shape": asdict(shape), "pass": pass_, "flops": shape.flops(),
                          "methods": timings, "memory_mib": memory}
                if "median_ms" in timings.get("torch", {}):
                    result["torch_threads"] = peer.threads
                results.append(result)
    for r in results:
        r["methods"] = {m: r["methods"][m] for m in methods if m in r["methods"]}
        _set_ratios(r)
    return results


def _model_calls(model, x_train, y_train, x_infer):
    """{"train", "infer", "latency"}: one call each of our model. train: an epoch of SGD
    with momentum at batch 64 through Sequential.fit; infer: the batch x_infer; latency:
    one image."""
    optimizer, loss_fn = SGD(0.01, momentum=0.9), CrossEntropyLoss()

    def train():
        model.fit(x_train, y_train, epochs=1, batch_size=64, optimizer=optimizer,
                  loss=loss_fn, verbose=0, seed=0)

    return {"train": train,
            "infer": lambda: model.predict(x_infer, batch_size=x_infer.shape[0]),
            "latency": lambda: model.predict(x_infer[:1], batch_size=1)}


def _model_entry(name, peer, dtype, budget, max_repeats, train_images, seed, rng):
    """One model's result of run_models; PyTorch's figures when peer is not None."""
    model = getattr(zoo, name)()
    in_shape = tuple(model.input_shape)
    x_train = rng.random((train_images,) + in_shape).astype(dtype)
    model.build(in_shape).reset_parameters(seed)
    model.astype(dtype)
    classes = model.predict(x_train[:1]).shape[1]
    y_train = rng.integers(0, classes, train_images)
    x_infer = rng.random((256,) + in_shape).astype(dtype)
    request = {"model": model.get_config(), "dtype": np.dtype(dtype).name,
               "train_images": train_images, "seed": seed}
    seconds = {}   # {side: {call: (median s, min s, repeats), or {"error"} for torch}}
    for call, fn in _model_calls(model, x_train, y_train, x_infer).items():
        measured = _with_torch(lambda fns: time_interleaved(fns, budget, max_repeats),
                               {"ours": fn}, peer, call, dict(request, call=call))
        for side, timing in measured.items():
            seconds.setdefault(side, {})[call] = timing
    entry = {"model": name, "input_shape": list(in_shape),
             "ours": model_figures(seconds["ours"], train_images, x_infer.shape[0])}
    if "torch" not in seconds:
        return entry
    errors = [t for t in seconds["torch"].values() if isinstance(t, dict)]
    if errors:
        entry["torch"] = errors[0]
        return entry
    entry["torch"] = t = model_figures(seconds["torch"], train_images, x_infer.shape[0])
    ours = entry["ours"]
    entry["ratios"] = {
        "train ours/torch": ours["train"]["images_per_s"] / t["train"]["images_per_s"],
        "infer ours/torch": ours["infer"]["images_per_s"] / t["infer"]["images_per_s"],
        "latency torch/ours": t["latency_ms"] / ours["latency_ms"],
    }
    return entry


def run_models(names=("lenet5", "vgg_small"), dtype=np.float32, budget=2.0, max_repeats=5,
               train_images=640, seed=0, with_torch=True, progress=None):
    """Whole-model throughput; a list of {"model", "ours": {...}, "torch": {...}, "ratios"}.

    Training: SGD with momentum, batch 64, over train_images random images (a
    multiple of 64); inference: one batch of 256; latency: one image. Random
    data: this measures speed only. PyTorch runs the same architecture (built
    from the model's config) in a process of its own, started once for the run;
    its training, inference and latency calls take turns with ours, round by round.
    """
    rng = np.random.default_rng(seed)
    train_images = max(64, train_images // 64 * 64)
    results = []
    with _peer_for_run(with_torch) as peer:
        for name in names:
            if progress:
                progress(f"model {name}")
            if name not in ("lenet5", "vgg_small"):
                raise ValueError(f"names: no zoo model {name!r}; choose from lenet5, vgg_small")
            results.append(_model_entry(name, peer, dtype, budget, max_repeats, train_images,
                                        seed, rng))
    return results
