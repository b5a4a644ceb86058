"""Time per optimizer step and per loss call, next to torch.optim / torch.nn when installed.

The parameters are LeNet-5's (61,706 float32 values in 10 arrays), the scores a batch
of 64 x 10 float32. Prints a table of medians over repeats (microseconds per call)
and the ratio ours / torch measured in the same run.

    python benchmarks/optim_losses.py [--repeats 7] [--calls 500]
"""
import argparse
import time

import numpy as np

import im2colnet as inet  # before torch: sets the OpenMP wait policy for our kernels
from im2colnet import losses, optim

try:
    import torch
except ImportError:
    torch = None

LENET_SHAPES = [(6, 1, 5, 5), (6,), (16, 6, 5, 5), (16,), (120, 400), (120,),
                (84, 120), (84,), (10, 84), (10,)]


def median_us(fn, calls, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return float(np.median(times)) * 1e6


def optimizer_rows(calls, repeats):
    rng = np.random.default_rng(0)
    params = {f"{i}/p": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(LENET_SHAPES)}
    grads = {k: rng.standard_normal(v.shape).astype(np.float32) * 1e-3 for k, v in params.items()}
    cases = [("SGD", dict(lr=0.01)), ("SGD momentum 0.9", dict(lr=0.01, momentum=0.9)),
             ("SGD nesterov + wd", dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)),
             ("Adam", dict(lr=1e-3)), ("Adam + wd", dict(lr=1e-3, weight_decay=1e-4))]
    for label, kwargs in cases:
        cls = optim.SGD if label.startswith("SGD") else optim.Adam
        ours = cls(**kwargs)
        ours_us = median_us(lambda: ours.step(params, grads), calls, repeats)
        theirs_us = None
        if torch is not None:
            tparams = [torch.tensor(v) for v in params.values()]
            for t, g in zip(tparams, grads.values()):
                t.grad = torch.tensor(g)
            topt = getattr(torch.optim, cls.__name__)(tparams, **kwargs)
            theirs_us = median_us(topt.step, calls, repeats)
        yield label, ours_us, theirs_us


def loss_rows(calls, repeats):
    rng = np.random.default_rng(1)
    scores = rng.standard_normal((64, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 64)
    column = scores[:, :1].copy()
    bits = rng.integers(0, 2, 64)
    cases = [("CrossEntropyLoss", losses.CrossEntropyLoss(), scores, labels,
              "CrossEntropyLoss", lambda t: t(labels).long()),
             ("MSELoss (one-hot)", losses.MSELoss(), scores, labels,
              "MSELoss", lambda t: torch.nn.functional.one_hot(t(labels), 10).float()),
             ("LogisticLoss", losses.LogisticLoss(), column, bits,
              "BCEWithLogitsLoss", lambda t: t(bits[:, None]).float()),
             ("HingeLoss", losses.HingeLoss(), scores, labels,
              "MultiMarginLoss", lambda t: t(labels).long())]
    for label, loss, s, target, torch_name, torch_target in cases:
        ours_us = median_us(lambda: loss(s, target), calls, repeats)
        theirs_us = None
        if torch is not None:
            ts = torch.tensor(s, requires_grad=True)
            tt = torch_target(torch.tensor)
            criterion = getattr(torch.nn, torch_name)()

            def forward_backward():
                ts.grad = None
                criterion(ts, tt).backward()
            theirs_us = median_us(forward_backward, calls, repeats)
        yield label, ours_us, theirs_us


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    if torch is not None:
        torch.set_num_threads(1)
    print(f"im2colnet {inet.__version__}, numpy {np.__version__}, "
          f"torch {torch.__version__ if torch else 'not installed'} (1 thread)")
    header = f"{'':28s} {'ours us':>10s} {'torch us':>10s} {'ours/torch':>10s}"
    for title, rows in (("optimizer step, LeNet-5 parameters (float32)", optimizer_rows),
                        ("loss + gradient, batch 64 x 10 (float32)", loss_rows)):
        print(f"\n{title}\n{header}")
        for label, ours_us, theirs_us in rows(args.calls, args.repeats):
            theirs = f"{theirs_us:10.1f}" if theirs_us else f"{'-':>10s}"
            ratio = f"{ours_us / theirs_us:10.2f}" if theirs_us else f"{'-':>10s}"
            print(f"{label:28s} {ours_us:10.1f} {theirs} {ratio}")


if __name__ == "__main__":
    main()
