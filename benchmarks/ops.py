"""Speed of the non-convolution operations: pooling, ReLU, batch norm, softmax, linear.

Prints one table: median and minimum time per call over interleaved repeats
(every implementation runs once per round, so load on the shared machine hits
them alike), and the ratio of each median to PyTorch's when torch is
installed. "ours" is the public function (validation and allocation
included); "kernel, N threads" calls the Cython kernel on preallocated outputs
with and without its prange loop, which shows what the threads bring.

PyTorch is timed first, in a child process of its own, so that its OpenMP
runtime and ours never share one process (docs/performance.md).

    python benchmarks/ops.py                 # float32, the issue's shapes
    python benchmarks/ops.py --quick         # tiny shapes, few repeats (a smoke test)
    python benchmarks/ops.py --no-torch --dtype float64 --repeats 200
"""
import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

if "--torch-only" in sys.argv:
    # The PyTorch child: its OpenMP runtime loads first (ours is loaded below too).
    import torch  # noqa: F401

import im2colnet
import im2colnet.functional as F
from im2colnet._kernels import pool as pool_kernels
from im2colnet._kernels import relu as relu_kernels


def measure(impls, repeats, warmup=3):
    """{name: fn} -> {name: (median s, min s)}, calling the functions in round-robin."""
    for fn in impls.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in impls}
    for _ in range(repeats):
        for name, fn in impls.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(t), min(t)) for name, t in times.items()}


def maxpool_cases(x, torch, tx, k, s, p):
    """Max pooling k x k, stride s, padding p: forward and backward."""
    y, path = F.maxpool2d_forward(x, k, s, p)
    y_buf, path_buf = np.empty_like(y), np.empty_like(path)
    fwd = {"ours": lambda: F.maxpool2d_forward(x, k, s, p)}
    for threads in (2, 1):
        fwd[f"kernel, {threads} thread(s)"] = (
            lambda par=threads > 1: pool_kernels.maxpool_forward(x, y_buf, path_buf, k, k, s, s, p, p,
                                                                 True, par))
    if (k, s, p) == (2, 2, 0):
        fwd["general kernel, 2 threads"] = lambda: pool_kernels.maxpool_forward(
            x, y_buf, path_buf, 2, 2, 2, 2, 0, 0, False, True)
    if torch is not None:
        fwd["torch"] = lambda: torch.nn.functional.max_pool2d_with_indices(tx, k, s, p)
        tcl = tx.contiguous(memory_format=torch.channels_last)
        fwd["torch channels_last"] = lambda: torch.nn.functional.max_pool2d_with_indices(tcl, k, s, p)

    dy = np.random.default_rng(0).standard_normal(y.shape).astype(x.dtype)
    planes = x.shape[0] * x.shape[1]
    dy_p, path_p = dy.reshape(planes, -1), path.reshape(planes, -1)
    dx_buf = np.empty((planes, x.shape[2] * x.shape[3]), x.dtype)
    bwd = {"ours": lambda: F.maxpool2d_backward(dy, path, x.shape)}
    for threads in (2, 1):
        bwd[f"kernel, {threads} thread(s)"] = (
            lambda par=threads > 1: pool_kernels.maxpool_backward(dy_p, path_p, dx_buf, par))
    if torch is not None:
        ty, ti = torch.nn.functional.max_pool2d_with_indices(tx, k, s, p)
        tdy = torch.from_numpy(dy)
        bwd["torch"] = lambda: torch.ops.aten.max_pool2d_with_indices_backward(
            tdy, tx, [k, k], [s, s], [p, p], [1, 1], False, ti)
    return [(f"maxpool {k}x{k}/s{s}/p{p} fwd", fwd), (f"maxpool {k}x{k}/s{s}/p{p} bwd", bwd)]


def avgpool_cases(x, torch, tx):
    y = F.avgpool2d_forward(x, 2)
    dy = np.ones_like(y)
    fwd = {"ours": lambda: F.avgpool2d_forward(x, 2)}
    bwd = {"ours": lambda: F.avgpool2d_backward(dy, x.shape, 2)}
    if torch is not None:
        tdy = torch.from_numpy(dy)
        fwd["torch"] = lambda: torch.nn.functional.avg_pool2d(tx, 2)
        bwd["torch"] = lambda: torch.ops.aten.avg_pool2d_backward(tdy, tx, [2, 2], [2, 2], [0, 0],
                                                                  False, True, None)
    return [("avgpool 2x2 fwd", fwd), ("avgpool 2x2 bwd", bwd)]


def relu_cases(x, torch, tx):
    dy = np.random.default_rng(1).standard_normal(x.shape).astype(x.dtype)
    flat, dflat, buf = x.reshape(-1), dy.reshape(-1), np.empty(x.size, x.dtype)
    fwd = {"ours": lambda: F.relu_forward(x), "numpy maximum": lambda: np.maximum(x, 0)}
    bwd = {"ours": lambda: F.relu_backward(dy, x), "numpy where": lambda: np.where(x > 0, dy, 0)}
    for threads in (2, 1):
        fwd[f"kernel, {threads} thread(s)"] = lambda par=threads > 1: relu_kernels.relu_forward(flat, buf, par)
        bwd[f"kernel, {threads} thread(s)"] = (
            lambda par=threads > 1: relu_kernels.relu_backward(dflat, flat, buf, par))
    if torch is not None:
        tdy = torch.from_numpy(dy)
        fwd["torch"] = lambda: torch.relu(tx)
        bwd["torch"] = lambda: torch.ops.aten.threshold_backward(tdy, tx, 0)
    return [("relu fwd", fwd), ("relu bwd", bwd)]


def batchnorm_cases(x, torch, tx):
    c = x.shape[1]
    gamma, beta = np.ones(c, x.dtype), np.zeros(c, x.dtype)
    rm, rv = np.zeros(c, x.dtype), np.ones(c, x.dtype)
    _, cache = F.batchnorm_forward(x, gamma, beta, running_mean=rm, running_var=rv)
    dy = np.random.default_rng(2).standard_normal(x.shape).astype(x.dtype)
    fwd = {"ours": lambda: F.batchnorm_forward(x, gamma, beta, running_mean=rm, running_var=rv)}
    bwd = {"ours": lambda: F.batchnorm_backward(dy, cache)}
    if torch is not None:
        tg, tb, trm, trv = (torch.from_numpy(a.copy()) for a in (gamma, beta, rm, rv))
        fwd["torch"] = lambda: torch.ops.aten.native_batch_norm(tx, tg, tb, trm, trv, True, 0.1, 1e-5)
        _, tmean, tinvstd = torch.ops.aten.native_batch_norm(tx, tg, tb, trm, trv, True, 0.1, 1e-5)
        tdy = torch.from_numpy(dy)
        bwd["torch"] = lambda: torch.ops.aten.native_batch_norm_backward(
            tdy, tx, tg, trm, trv, tmean, tinvstd, True, 1e-5, [True, True, True])
    return [("batchnorm spatial fwd", fwd), ("batchnorm spatial bwd", bwd)]


def head_cases(n, dtype, torch, quick):
    """The classifier head of LeNet-5: linear 400 -> 120 and softmax cross-entropy over 10 classes."""
    rng = np.random.default_rng(3)
    fin, fout = (16, 8) if quick else (400, 120)
    x = rng.standard_normal((n, fin)).astype(dtype)
    w, b = rng.standard_normal((fout, fin)).astype(dtype), np.zeros(fout, dtype)
    dy = rng.standard_normal((n, fout)).astype(dtype)
    scores, labels = rng.standard_normal((n, 10)).astype(dtype), rng.integers(0, 10, n)
    lin = {"ours": lambda: (F.linear_forward(x, w, b), F.linear_backward_data(dy, w, x.shape),
                            F.linear_backward_weights(dy, x))}
    ce = {"ours": lambda: F.softmax_cross_entropy(scores, labels)}
    if torch is not None:
        tx, tw, tb, tdy = (torch.from_numpy(a) for a in (x, w, b, dy))
        lin["torch"] = lambda: (torch.nn.functional.linear(tx, tw, tb), tdy @ tw, tdy.T @ tx, tdy.sum(0))
        ts, tl = torch.from_numpy(scores), torch.from_numpy(labels)

        def torch_ce():
            s = ts.clone().requires_grad_()
            loss = torch.nn.functional.cross_entropy(s, tl)
            loss.backward()
            return loss.item(), s.grad
        ce["torch"] = torch_ce
    return [(f"linear {fin}->{fout} fwd+bwd", lin, (n, fin)),
            ("softmax cross-entropy fwd+bwd", ce, (n, 10))]


def cases(shapes, dtype, torch, quick):
    """Yield (op, shape, {implementation: fn}) for every operation and shape."""
    rng = np.random.default_rng(4)
    for shape in shapes:
        # a shuffled linspace: no ties, like real activations
        x = rng.permutation(np.linspace(-1, 1, int(np.prod(shape)))).reshape(shape).astype(dtype)
        tx = torch.from_numpy(x) if torch is not None else None
        for op, impls in (maxpool_cases(x, torch, tx, 2, 2, 0) + maxpool_cases(x, torch, tx, 3, 2, 1)
                          + avgpool_cases(x, torch, tx) + relu_cases(x, torch, tx)
                          + batchnorm_cases(x, torch, tx)):
            yield op, shape, impls
    for op, impls, shape in head_cases(2 if quick else 64, dtype, torch, quick):
        yield op, shape, impls


def torch_timings(args):
    """({(op, shape): {name: (median s, min s)}}, description) of PyTorch's implementations,
    timed in a child process with PyTorch's own defaults; ({}, reason) when unavailable."""
    if args.no_torch or importlib.util.find_spec("torch") is None:
        return {}, "torch: not installed (or --no-torch)"
    cmd = [sys.executable, os.path.abspath(__file__), "--torch-only", "--dtype", args.dtype,
           "--repeats", str(args.repeats)] + (["--quick"] if args.quick else [])
    child = subprocess.run(cmd, capture_output=True, text=True)
    if child.returncode != 0:
        last = (child.stderr.strip().splitlines() or ["no message"])[-1]
        return {}, f"torch: the child process failed ({last})"
    lines = child.stdout.splitlines()
    timings = {}
    for op, shape, name, median, best in map(json.loads, lines[1:]):
        timings.setdefault((op, str(tuple(shape))), {})[name] = (median, best)
    return timings, lines[0] + ", in a child process with its own defaults"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--no-torch", action="store_true", help="do not compare with PyTorch")
    parser.add_argument("--quick", action="store_true", help="tiny shapes and few repeats (smoke test)")
    parser.add_argument("--torch-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    dtype = np.dtype(args.dtype)
    repeats = 3 if args.quick else args.repeats
    shapes = [(2, 3, 8, 8)] if args.quick else [(64, 16, 28, 28), (64, 6, 28, 28), (64, 16, 10, 10)]

    if args.torch_only:  # the child: PyTorch's implementations only, one JSON line each
        import torch
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
        for op, shape, impls in cases(shapes, dtype, torch, args.quick):
            theirs = {name: fn for name, fn in impls.items() if name.startswith("torch")}
            for name, (med, best) in measure(theirs, repeats).items():
                print(json.dumps([op, shape, name, med, best]), flush=True)
        return

    torch_times, torch_line = torch_timings(args)
    print(f"im2colnet {im2colnet.__version__} {im2colnet.build_info()}; numpy {np.__version__}; "
          f"{os.cpu_count()} cores; python {platform.python_version()}")
    print(torch_line)
    print(f"dtype {dtype}; median and min of {repeats} interleaved repeats; "
          f"x torch = our median / torch's median (< 1 is faster)\n")
    header = f"{'op':<30} {'shape':<17} {'implementation':<27} {'median ms':>10} {'min ms':>9} {'x torch':>8}"
    print(header)
    print("-" * len(header))

    for op, shape, impls in cases(shapes, dtype, None, args.quick):
        results = measure(impls, repeats)
        results.update(torch_times.get((op, str(tuple(shape))), {}))
        ref = results.get("torch", (None,))[0]
        for name, (med, best) in results.items():
            ratio = f"{med / ref:8.2f}" if ref and not name.startswith("torch") else ""
            print(f"{op:<30} {str(shape):<17} {name:<27} {med * 1e3:10.3f} {best * 1e3:9.3f} {ratio:>8}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
