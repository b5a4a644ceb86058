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

from builds_ab import alternate, report


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="+", help="SHAPE:PASS")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=0.8, help="length of one child's loop")
    args = parser.parse_args()
    variants = {"packed": (None, -1), "batch": (None, 1)}   # the route forced off, then on
    medians = alternate(variants, args.cases, args.threads, args.rounds, args.seconds)
    report(medians, args.cases, list(variants), args.threads, args.rounds)


if __name__ == "__main__":
    main()
