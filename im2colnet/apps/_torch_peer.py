"""PyTorch's figures for ``im2colnet bench``, measured in a process of its own.

Run as a script, never imported by the package. PyTorch ships its own OpenMP
runtime; loaded next to ours (and next to NumPy's BLAS threads), idle threads of
one spin while the other works, which slowed both sides by large factors on a
2-core machine. A separate process keeps each side's figures clean: this script
imports numpy, torch and ``_timing.py`` only.

``python _torch_peer.py --serve [--threads N]`` serves the bench, which alternates
PyTorch's calls with ours: one JSON request per line on stdin, one JSON answer per
line on stdout. The first line out is {"version", "threads"}; then (id: a string)
  {"setup": id, "layer": {n, c, h, w, k, kh, kw, stride, padding, dilation, groups},
   "pass": "forward" | "backward-data" | "backward-weights", "dtype", "seed"}  -> {}
  {"setup": id, "model": Sequential.get_config(), "call": "train" | "infer" | "latency",
   "dtype", "train_images", "seed"}                                          -> {}
      (a set-up under an id in use replaces it)
  {"seconds": id, "warmup": s}  -> {"seconds": one call of that set-up, timed here
                                    after untimed calls for s seconds (_timing.timed)}
An answer {"error": reason} reports a layer PyTorch lacks or an unknown id; any
other failure ends the process, its traceback on stderr.

``python _torch_peer.py`` with one JSON request on stdin times everything at once and
writes one JSON answer (each request may also hold "threads": the number of threads
PyTorch uses, the same as our products in the parent):
  {"kind": "layers", "shapes": [{name, n, c, h, w, k, kh, kw, stride, padding, dilation, groups}],
   "dtype", "budget", "max_repeats", "seed"}
      -> {"threads", "version", "layers": {name: {pass: timing}}}
  {"kind": "models", "models": [{"name", "config": Sequential.get_config()}],
   "dtype", "budget", "max_repeats", "seed", "train_images"}
      -> {"threads", "version", "models": {name: {"train", "infer", "latency_ms"} or {"error"}}}
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _timing  # noqa: E402 -- this folder's timing helpers, loaded without the package

import torch  # noqa: E402


TRAIN_BATCH, INFER_BATCH = 64, 256


def layer_calls(shape, dtype, rng):
    """({pass: fn}, flops) of one convolution shape: forward, backward-data, backward-weights."""
    groups = shape.get("groups", 1)
    geo = dict(stride=shape["stride"], padding=shape["padding"], dilation=shape["dilation"],
               groups=groups)
    x = torch.from_numpy(rng.standard_normal(
        (shape["n"], shape["c"], shape["h"], shape["w"])).astype(dtype))
    w = torch.from_numpy(rng.standard_normal(
        (shape["k"], shape["c"] // groups, shape["kh"], shape["kw"])).astype(dtype))
    b = torch.from_numpy(rng.standard_normal(shape["k"]).astype(dtype))
    with torch.no_grad():
        out_shape = torch.nn.functional.conv2d(x, w, b, **geo).shape
    dy = torch.from_numpy(rng.standard_normal(tuple(out_shape)).astype(dtype))
    oh, ow = out_shape[2], out_shape[3]
    flops = 2 * shape["n"] * oh * ow * shape["k"] * (shape["c"] // groups) * shape["kh"] * shape["kw"]
    calls = {
        "forward": lambda: torch.nn.functional.conv2d(x, w, b, **geo),
        "backward-data": lambda: torch.nn.grad.conv2d_input(x.shape, w, dy, **geo),
        "backward-weights": lambda: (torch.nn.grad.conv2d_weight(x, w.shape, dy, **geo),
                                     dy.sum((0, 2, 3))),
    }
    return {pass_: torch.no_grad()(fn) for pass_, fn in calls.items()}, flops


def _layer_timings(shape, dtype, budget, max_repeats, rng):
    """{pass: timing} of one convolution shape."""
    calls, flops = layer_calls(shape, dtype, rng)
    return {pass_: _timing.timing_dict(_timing.time_calls(fn, budget, max_repeats), flops)
            for pass_, fn in calls.items()}


def twin(config):
    """The network of a Sequential config in PyTorch; ValueError for a layer it lacks."""
    nn = torch.nn
    modules = []
    for entry in config["layers"]:
        kind, cfg = entry["type"], entry.get("config", {})
        if kind == "Conv2d":
            if cfg.get("anchor") is not None:
                raise ValueError("Conv2d with an anchor")
            modules.append(nn.Conv2d(cfg["in_channels"], cfg["out_channels"], cfg["kernel_size"],
                                     cfg.get("stride", 1), cfg.get("padding", 0),
                                     cfg.get("dilation", 1), cfg.get("groups", 1),
                                     bias=cfg.get("bias", True)))
        elif kind == "Linear":
            modules.append(nn.Linear(cfg["in_features"], cfg["out_features"],
                                     bias=cfg.get("bias", True)))
        elif kind in ("MaxPool2d", "AvgPool2d"):
            extra = {"count_include_pad": cfg.get("count_include_pad", True)} \
                if kind == "AvgPool2d" else {"dilation": cfg.get("dilation", 1)}
            modules.append(getattr(nn, kind)(cfg["kernel_size"], cfg.get("stride"),
                                             cfg.get("padding", 0), ceil_mode=cfg.get("ceil_mode", False),
                                             **extra))
        elif kind in ("GlobalAvgPool2d", "AdaptiveAvgPool2d"):
            modules.append(nn.AdaptiveAvgPool2d(cfg.get("output_size", 1)))
        elif kind == "LeakyReLU":
            modules.append(nn.LeakyReLU(cfg.get("negative_slope", 0.01)))
        elif kind in ("BatchNorm2d", "BatchNorm1d"):
            if cfg.get("mode", "spatial") != "spatial":
                raise ValueError(f"{kind} with mode {cfg['mode']!r}")
            modules.append(getattr(nn, kind)(cfg["num_features"], eps=cfg.get("eps", 1e-5),
                                             momentum=cfg.get("momentum", 0.1)))
        elif kind in ("ReLU", "Tanh", "Sigmoid", "Flatten"):
            modules.append(getattr(nn, kind)())
        elif kind == "ELU":
            modules.append(nn.ELU(cfg.get("alpha", 1.0)))
        elif kind == "Dropout":
            modules.append(nn.Dropout(cfg.get("p", 0.5)))
        elif kind == "Softmax":
            continue  # scores go to a fused softmax + cross-entropy loss, as in im2colnet
        else:
            raise ValueError(f"no PyTorch layer for {kind}")
    return nn.Sequential(*modules)


def model_calls(config, dtype, train_images, rng):
    """{"train", "infer", "latency"}: one call each of a Sequential config's network in
    PyTorch. train: an epoch of SGD with momentum at batch 64 over train_images (rounded
    down to whole batches); infer: a batch of 256; latency: one image."""
    net = twin(config).to(torch.float64 if dtype == "float64" else torch.float32)
    in_shape = tuple(config["input_shape"])
    steps = train_images // TRAIN_BATCH
    x_train = torch.from_numpy(rng.random((steps * TRAIN_BATCH,) + in_shape).astype(dtype))
    x_infer = torch.from_numpy(rng.random((INFER_BATCH,) + in_shape).astype(dtype))
    with torch.no_grad():
        classes = net.eval()(x_train[:1]).shape[1]
    y_train = torch.from_numpy(rng.integers(0, classes, steps * TRAIN_BATCH))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def train():
        net.train()
        for s in range(steps):
            batch = slice(s * TRAIN_BATCH, (s + 1) * TRAIN_BATCH)
            optimizer.zero_grad()
            loss_fn(net(x_train[batch]), y_train[batch]).backward()
            optimizer.step()

    def infer(x):
        net.eval()
        with torch.no_grad():
            return net(x)

    return {"train": train, "infer": lambda: infer(x_infer), "latency": lambda: infer(x_infer[:1])}


def _model_timings(config, dtype, budget, max_repeats, train_images, rng):
    """Training images/s, inference images/s, batch-1 ms (see model_calls)."""
    calls = model_calls(config, dtype, train_images, rng)
    seconds = {which: _timing.time_calls(fn, budget, max_repeats) for which, fn in calls.items()}
    return _timing.model_figures(seconds, train_images // TRAIN_BATCH * TRAIN_BATCH, INFER_BATCH)


def answer(request):
    """The one-shot answer: everything in the request timed at once."""
    if request.get("threads"):
        torch.set_num_threads(request["threads"])
    rng = np.random.default_rng(request.get("seed", 0))
    dtype, budget, repeats = request["dtype"], request["budget"], request["max_repeats"]
    result = {"version": torch.__version__, "threads": torch.get_num_threads()}
    if request["kind"] == "layers":
        result["layers"] = {s["name"]: _layer_timings(s, dtype, budget, repeats, rng)
                            for s in request["shapes"]}
    else:
        result["models"] = {}
        for m in request["models"]:
            try:
                result["models"][m["name"]] = _model_timings(
                    m["config"], dtype, budget, repeats, request["train_images"], rng)
            except ValueError as exc:
                result["models"][m["name"]] = {"error": str(exc)}
    return result


def _set_up(request):
    """The one call a set-up request describes."""
    rng = np.random.default_rng(request.get("seed", 0))
    if "layer" in request:
        return layer_calls(request["layer"], request["dtype"], rng)[0][request["pass"]]
    return model_calls(request["model"], request["dtype"], request["train_images"],
                       rng)[request["call"]]


def serve(threads=None):
    """Answer the bench's requests, a line each, until stdin closes (see the module docstring)."""
    if threads:
        torch.set_num_threads(threads)
    answers, sys.stdout = sys.stdout, sys.stderr   # a stray print must not pass for an answer

    def send(message):
        answers.write(json.dumps(message) + "\n")
        answers.flush()

    send({"version": torch.__version__, "threads": torch.get_num_threads()})
    calls = {}
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if "setup" in request:
                calls.pop(request["setup"], None)   # the replaced set-up's tensors go first
                calls[request["setup"]] = _set_up(request)
                send({})
            elif request["seconds"] in calls:
                send({"seconds": _timing.timed(calls[request["seconds"]],
                                               request.get("warmup", 0.0))})
            else:
                send({"error": f"no set-up {request['seconds']!r}"})
        except ValueError as exc:
            send({"error": str(exc)})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="PyTorch's figures for im2colnet bench")
    parser.add_argument("--serve", action="store_true",
                        help="answer requests line by line (else: one request, one answer)")
    parser.add_argument("--threads", type=int, help="PyTorch's threads when serving")
    args = parser.parse_args()
    if args.serve:
        serve(args.threads)
    else:
        json.dump(answer(json.load(sys.stdin)), sys.stdout)
