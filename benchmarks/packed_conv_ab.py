"""The packed convolution kernel (method="im2col") against the im2col + BLAS route
(method="blas"), pass by pass, in one process: the two take turns round by round and each
figure is a median; with --threads 1 the clock is the thread's CPU time, which a busy
shared machine disturbs less than the wall clock.

    python benchmarks/packed_conv_ab.py --threads 1 vgg-28 vgg-14 vgg-7 c64-16 wide

Prints GFLOP/s of both, the packed kernel's share of a one-core peak measured in the same
run (NumPy's BLAS on a 1024^3 product, same clock) and the ratio blas time / packed time.
"""
import argparse
import time

import numpy as np

import im2colnet.functional as F
from im2colnet.runtime import threads as _threads
from im2colnet.runtime.blas import set_blas_threads
from im2colnet.apps.bench import SHAPES


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shapes", nargs="*", default=["vgg-28", "vgg-14", "vgg-7", "c64-16", "wide"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    _threads.set_thread_count(args.threads)
    set_blas_threads(args.threads)
    clock = time.thread_time if args.threads == 1 else time.perf_counter

    def seconds(fn):
        start = clock()
        fn()
        return clock() - start

    rng = np.random.default_rng(0)
    a = rng.standard_normal((1024, 1024)).astype(np.float32)
    c = np.empty_like(a)
    np.matmul(a, a, out=c)
    peak = 2 * 1024 ** 3 / np.median([seconds(lambda: np.matmul(a, a, out=c))
                                      for _ in range(args.rounds)]) / 1e9
    print(f"one-core peak (NumPy's BLAS, 1024^3, same clock): {peak:.1f} GFLOP/s; "
          f"{args.threads} thread(s)")
    for name in args.shapes:
        s = SHAPES[name]
        g = s.geometry()
        x = rng.standard_normal((s.n, s.c, s.h, s.w)).astype(np.float32)
        w = rng.standard_normal((s.k, s.c, s.kh, s.kw)).astype(np.float32)
        b = rng.standard_normal(s.k).astype(np.float32)
        dy = rng.standard_normal((s.n, s.k, g.out_h, g.out_w)).astype(np.float32)
        geo = dict(stride=s.stride, padding=s.padding, dilation=s.dilation)
        passes = {
            "forward": lambda m: F.conv2d_forward(x, w, b, method=m, **geo),
            "bwd-data": lambda m: F.conv2d_backward_data(dy, w, x.shape, method=m, **geo),
            "bwd-weights": lambda m: F.conv2d_backward_weights(dy, x, w.shape, method=m, **geo),
        }
        cells = []
        for label, fn in passes.items():
            times = {"im2col": [], "blas": []}
            fn("im2col")
            fn("blas")
            for r in range(args.rounds):
                for m in ("im2col", "blas") if r % 2 == 0 else ("blas", "im2col"):
                    times[m].append(seconds(lambda: fn(m)))
            ours, blas = np.median(times["im2col"]), np.median(times["blas"])
            cells.append(f"{label} {s.flops() / ours / 1e9:5.1f} ({100 * s.flops() / ours / 1e9 / peak:3.0f}%)"
                         f" blas {s.flops() / blas / 1e9:5.1f} x{blas / ours:.2f}")
        print(f"{name:13s} " + " | ".join(cells))


if __name__ == "__main__":
    main()
