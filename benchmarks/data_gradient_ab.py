"""The packed data gradient of a stride-1 convolution two ways, taking turns in one process:
col2im (dphi^T = C dY^T, scattered back into dx) against the forward pass of dY with the
kernel turned 180 degrees and its channel axes swapped (functional.conv._adjoint_window).

    python benchmarks/data_gradient_ab.py [--threads N] [--rounds R] [shape ...]
    python benchmarks/data_gradient_ab.py --vgg-small     # VGG-small's training step instead

A shape is a name of `im2colnet bench` or N,C,H,W,K,kh,kw[,stride,pad,dil]. The script
replaces the rule functional.conv._data_as_forward by "always" and "never" in turn and
prints the medians (ms), GFLOP/s and the ratio col2im time / forward-pass time, and which
route the rule picks on that shape. With --vgg-small it times Sequential.fit of VGG-small
(batch 64, 512 random images a round) with the rule as it is and with col2im only.
"""
import argparse
import time

import numpy as np

import im2colnet.functional as F
import im2colnet.functional.conv as conv
from im2colnet.apps.bench_shapes import SHAPES, parse_shape
from im2colnet.runtime import tune
from im2colnet.runtime.threads import set_thread_count

DEFAULT_SHAPES = ["vgg-28", "vgg-14", "vgg-7", "c64-16", "wide", "dilated", "lenet5-conv2",
                  "64,32,14,14,64,3,3,1,1", "64,64,7,7,128,3,3,1,1",   # VGG-small's widening layers
                  "64,8,28,28,32,3,3,1,1", "64,16,28,28,32,3,3,1,1", "64,16,14,14,64,3,3,1,1"]
ROUTES = {"col2im": False, "as forward": True}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shapes", nargs="*", default=DEFAULT_SHAPES)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--vgg-small", action="store_true", help="time VGG-small's training instead")
    args = parser.parse_args()
    tune()
    set_thread_count(args.threads)
    if args.vgg_small:
        return vgg_small_training(args.rounds)
    rng = np.random.default_rng(0)
    rule = conv._data_as_forward
    print(f"{args.threads} thread(s); ms are medians of {args.rounds} alternating rounds")
    print(f"{'shape':38s} {'col2im ms':>10s} {'GF/s':>6s} {'forward ms':>11s} {'GF/s':>6s} "
          f"{'col2im/forward':>15s}  rule takes")
    for text in args.shapes:
        s = SHAPES[text] if text in SHAPES else parse_shape(text)
        if s.stride != 1 or s.groups != 1:
            raise SystemExit(f"{text}: the forward-pass route is for stride 1, groups 1")
        g = s.geometry()
        w = rng.standard_normal((s.k, s.c, s.kh, s.kw)).astype(np.float32)
        dy = rng.standard_normal((s.n, s.k, g.out_h, g.out_w)).astype(np.float32)
        geo = dict(padding=s.padding, dilation=s.dilation)
        times = {route: [] for route in ROUTES}
        try:
            for r in range(args.rounds + 1):
                for route in (list(ROUTES) if r % 2 == 0 else list(ROUTES)[::-1]):
                    conv._data_as_forward = lambda *_, _take=ROUTES[route]: _take
                    start = time.perf_counter()
                    F.conv2d_backward_data(dy, w, (s.n, s.c, s.h, s.w), **geo)
                    if r:  # round 0 warms up
                        times[route].append(time.perf_counter() - start)
        finally:
            conv._data_as_forward = rule
        a, b = (float(np.median(times[route])) for route in ROUTES)
        chosen = "forward" if rule(g, s.c, s.k) else "col2im"
        print(f"{s.describe():38s} {a * 1e3:10.2f} {s.flops() / a / 1e9:6.1f} {b * 1e3:11.2f} "
              f"{s.flops() / b / 1e9:6.1f} {a / b:15.2f}  {chosen}")


def vgg_small_training(rounds):
    """Images/s of VGG-small's fit, the rule as it is against col2im only, taking turns."""
    from im2colnet.models import vgg_small
    from im2colnet.optim import SGD
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, len(x))
    model, optimizer, rule = vgg_small(), SGD(0.01, momentum=0.9), conv._data_as_forward
    routes = {"col2im only": lambda *_: False, "the rule": rule}
    rates = {name: [] for name in routes}
    try:
        for r in range(rounds + 1):
            for name in (list(routes) if r % 2 == 0 else list(routes)[::-1]):
                conv._data_as_forward = routes[name]
                start = time.perf_counter()
                model.fit(x, y, epochs=1, batch_size=64, optimizer=optimizer, verbose=0)
                if r:  # round 0 warms up
                    rates[name].append(len(x) / (time.perf_counter() - start))
    finally:
        conv._data_as_forward = rule
    for name, values in rates.items():
        print(f"VGG-small training, {name:11s}: median {np.median(values):6.1f} img/s "
              f"(rounds: {' '.join(f'{v:.0f}' for v in values)})")


if __name__ == "__main__":
    main()
