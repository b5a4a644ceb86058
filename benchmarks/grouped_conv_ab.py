"""Grouped convolution: the direct loops (one call for every group) against a product per
group, for each pass, in one process with the two routes taking turns.

    python benchmarks/grouped_conv_ab.py [--threads N] [--repeats R]

method="im2col" picks the loops when a kernel sees fewer than
functional.conv.DIRECT_GROUP_MAX_CHANNELS input channels; this script sets that threshold
to "always" and "never" in turn and prints the medians (ms) and their ratio.
"""
import argparse
import time

import numpy as np

import im2colnet.functional as F
import im2colnet.functional.conv as conv
from im2colnet.runtime import tune
from im2colnet.runtime.threads import set_thread_count

# name: (N, C = K, H = W, input channels per kernel), 3x3 kernels, padding 1
SHAPES = {"depthwise 64ch 28x28": (64, 64, 28, 1), "depthwise 128ch 14x14": (64, 128, 14, 1),
          "groups of 2, 64ch 28x28": (64, 64, 28, 2), "groups of 4, 64ch 28x28": (64, 64, 28, 4),
          "groups of 8, 16ch 14x14": (64, 16, 14, 8)}
ROUTES = {"loops": 1 << 30, "per-group": 0}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    tune()
    set_thread_count(args.threads)
    rng = np.random.default_rng(0)
    saved = conv.DIRECT_GROUP_MAX_CHANNELS
    print(f"{'shape':24s} {'pass':17s} {'loops ms':>9s} {'per-group ms':>13s} {'per-group/loops':>16s}")
    for name, (n, c, side, per_kernel) in SHAPES.items():
        groups = c // per_kernel
        x = rng.standard_normal((n, c, side, side)).astype(np.float32)
        w = rng.standard_normal((c, per_kernel, 3, 3)).astype(np.float32)
        dy = rng.standard_normal((n, c, side, side)).astype(np.float32)
        passes = {
            "forward": lambda: F.conv2d_forward(x, w, padding=1, groups=groups),
            "backward-data": lambda: F.conv2d_backward_data(dy, w, x.shape, padding=1, groups=groups),
            "backward-weights": lambda: F.conv2d_backward_weights(dy, x, w.shape, padding=1,
                                                                  groups=groups),
        }
        for pass_, fn in passes.items():
            seconds = {route: [] for route in ROUTES}
            try:
                for _ in range(args.repeats):
                    for route, threshold in ROUTES.items():
                        conv.DIRECT_GROUP_MAX_CHANNELS = threshold
                        start = time.perf_counter()
                        fn()
                        seconds[route].append(time.perf_counter() - start)
            finally:
                conv.DIRECT_GROUP_MAX_CHANNELS = saved
            loops, per_group = (1e3 * float(np.median(s[1:])) for s in seconds.values())
            print(f"{name:24s} {pass_:17s} {loops:9.2f} {per_group:13.2f} {per_group / loops:16.2f}")


if __name__ == "__main__":
    main()
