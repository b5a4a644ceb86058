"""The packed kernel's forward with the batch in the vector lanes against its packed route,
on one build, taking turns process by process.

    python benchmarks/batch_route_ab.py [--threads 1] [--rounds 4] vgg-28:forward 64,3,32,32,64,3,3,1,1,1:forward ...

Each case is SHAPE:PASS as in builds_ab.py (the data gradient of a stride-1 layer runs as
a forward pass, so it takes the route too). Every round runs each case once with the route
forced off and once forced on (the order swapped from round to round); the table gives the
medians of the rounds' GFLOP/s and their ratio, the figures behind pg_batch_applies's rule
(IM2COLNET_KERNEL picks the level).
"""
import argparse
import os
import statistics
import subprocess
import sys

AB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "builds_ab.py")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="+", help="SHAPE:PASS")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=0.8, help="length of one child's loop")
    args = parser.parse_args()
    rates = {(case, rule): [] for case in args.cases for rule in (-1, 1)}
    for round_ in range(args.rounds):
        for case in args.cases:
            for rule in ((-1, 1) if round_ % 2 == 0 else (1, -1)):
                out = subprocess.run(
                    [sys.executable, AB, "x", "x", case, "--child", "--threads", str(args.threads),
                     "--seconds", str(args.seconds), "--batch-rule", str(rule)],
                    capture_output=True, text=True, check=True)
                rates[(case, rule)].append(float(out.stdout.split()[-1]))
    print(f"{args.threads} thread(s), medians of {args.rounds} rounds, GFLOP/s")
    for case in args.cases:
        packed, batch = (statistics.median(rates[(case, r)]) for r in (-1, 1))
        print(f"{case:36s} packed {packed:7.1f}  batch {batch:7.1f}  batch/packed {batch / packed:5.3f}")


if __name__ == "__main__":
    main()
