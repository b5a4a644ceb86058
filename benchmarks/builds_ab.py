"""Two builds of im2colnet on the same convolution passes, taking turns process by process.

    python benchmarks/builds_ab.py OLD_DIR NEW_DIR [--threads 2] [--rounds 6] vgg-7:forward ...

OLD_DIR and NEW_DIR are source folders built in place (`python setup.py build_ext --inplace`),
put first on PYTHONPATH of each child. Each case is SHAPE:PASS, SHAPE a name of
`im2colnet bench` or N,C,H,W,K,kh,kw[,stride,pad,dil] and PASS one of forward,
backward-data, backward-weights. Every round runs each case once per build (a child that
loops the pass for --seconds after one warm-up call), the order of the two builds swapped
from round to round, so that a slow minute of a shared machine falls on both; the table
gives the medians of the rounds' GFLOP/s and their ratio.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time


def child(case, threads, seconds, batch_rule=0):
    """Loop one pass in this process (the build on sys.path); print its GFLOP/s. batch_rule:
    the packed kernel's batch-lanes forward by its rule (0), forced (1) or off (-1)."""
    import numpy as np

    import im2colnet.functional as F
    from im2colnet.apps.bench_runs import _conv_calls, _layer_inputs
    from im2colnet.apps.bench_shapes import SHAPES, parse_shape
    from im2colnet.runtime.threads import set_thread_count

    name, pass_ = case.rsplit(":", 1)
    shape = SHAPES[name] if name in SHAPES else parse_shape(name)
    set_thread_count(threads)
    if batch_rule:
        from im2colnet._kernels import packed_conv
        packed_conv._batch_rule(batch_rule)
    tensors = _layer_inputs(shape, np.float32, np.random.default_rng(0))
    fn = _conv_calls(F, shape, tensors)[pass_]   # the bench's own inputs and calls
    fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    print(shape.flops() * calls / (time.perf_counter() - start) / 1e9)


def alternate(variants, cases, threads, rounds, seconds):
    """{(case, label): median GFLOP/s} of the two variants {label: (build folder or None for
    the build on this process's path, batch_rule)}: every round runs each case once per
    variant, each in a child process of this script, the order swapped from round to round."""
    labels = list(variants)
    rates = {(case, label): [] for case in cases for label in labels}
    for round_ in range(rounds):
        for case in cases:
            for label in (labels if round_ % 2 == 0 else labels[::-1]):
                build, batch_rule = variants[label]
                env = dict(os.environ, PYTHONPATH=build) if build else None
                out = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), "x", "x", case, "--child",
                     "--threads", str(threads), "--seconds", str(seconds),
                     "--batch-rule", str(batch_rule)],
                    env=env, cwd=os.path.dirname(build) if build else None,
                    capture_output=True, text=True, check=True)
                rates[(case, label)].append(float(out.stdout.split()[-1]))
    return {key: statistics.median(values) for key, values in rates.items()}


def report(medians, cases, labels, threads, rounds):
    """The table of alternate()'s medians: each case's two figures and their ratio."""
    a, b = labels
    print(f"{threads} thread(s), medians of {rounds} rounds, GFLOP/s")
    for case in cases:
        x, y = medians[(case, a)], medians[(case, b)]
        print(f"{case:36s} {a} {x:7.1f}  {b} {y:7.1f}  {b}/{a} {y / x:5.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("cases", nargs="+", help="SHAPE:PASS")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one child's loop")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch-rule", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.cases[0], args.threads, args.seconds, args.batch_rule)
    variants = {"old": (os.path.abspath(args.old), 0), "new": (os.path.abspath(args.new), 0)}
    medians = alternate(variants, args.cases, args.threads, args.rounds, args.seconds)
    report(medians, args.cases, list(variants), args.threads, args.rounds)


if __name__ == "__main__":
    main()
