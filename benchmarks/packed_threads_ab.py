"""Small-work threading of the packed convolution: PACKED_MIN_FLOPS_PER_THREAD at its value
against 0 (every pass on all threads), alternating in one process.

    python benchmarks/packed_threads_ab.py [--rounds 7]

For LeNet-5 and VGG-small: batch-1 and batch-8 inference latency (ms, median) and batch-64
training images/s (Sequential.fit, SGD with momentum), on thread_count() threads.
"""
import argparse
import statistics
import time

import numpy as np

import im2colnet.functional.conv as conv
from im2colnet import models
from im2colnet.losses import CrossEntropyLoss
from im2colnet.optim import SGD
from im2colnet.runtime import tune
from im2colnet.runtime.threads import thread_count

SETTINGS = {"threshold": conv.PACKED_MIN_FLOPS_PER_THREAD, "always threads": 0}


def seconds(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    tune()
    rng = np.random.default_rng(0)
    print(f"{thread_count()} threads; medians over {args.rounds} rounds, settings alternating")
    print(f"{'model':10s} {'measure':22s}" + "".join(f"{name:>16s}" for name in SETTINGS))
    for name in ("lenet5", "vgg_small"):
        model = getattr(models, name)().reset_parameters(0)
        x = rng.random((256, 1, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, 256)
        opt, loss = SGD(0.01, momentum=0.9), CrossEntropyLoss()
        measures = {
            "latency b=1 (ms)": (lambda: model.predict(x[:1], batch_size=1), 1e3, 20),
            "latency b=8 (ms)": (lambda: model.predict(x[:8], batch_size=8), 1e3, 10),
            "train b=64 (img/s)": (lambda: model.fit(x, y, epochs=1, batch_size=64, optimizer=opt,
                                                      loss=loss, verbose=0), None, 2),
        }
        for label, (fn, scale, repeats) in measures.items():
            fn()   # warm-up
            results = {setting: [] for setting in SETTINGS}
            for _ in range(args.rounds):
                for setting, value in SETTINGS.items():
                    conv.PACKED_MIN_FLOPS_PER_THREAD = value
                    results[setting].append(seconds(fn, repeats))
            conv.PACKED_MIN_FLOPS_PER_THREAD = SETTINGS["threshold"]
            cells = [statistics.median(t) * scale if scale else len(x) / statistics.median(t)
                     for t in results.values()]
            print(f"{name:10s} {label:22s}" + "".join(f"{c:16.2f}" for c in cells))


if __name__ == "__main__":
    main()
