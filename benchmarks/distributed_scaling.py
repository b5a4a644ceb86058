"""Data-parallel training throughput: 1 rank x T threads against R ranks x T/R threads.

    python benchmarks/distributed_scaling.py --rounds 3            # lenet5 and vgg_small
    python benchmarks/distributed_scaling.py --models lenet5 --steps 40 --layouts 1x2 2x1

Each measurement is its own `mpiexec -n R` run (the mpiexec beside this Python) of this
script in worker mode: random float32 images, one untimed warm-up epoch, then one timed
epoch of ``--steps`` steps of global batch 64 (model.fit with distributed=DataParallel).
The layouts alternate within each round, and the table gives medians over the rounds:
images/s of the timed epoch; per step, the time rank 0 spent in the gradient Allreduce
(waiting for the slower rank included) and the bytes it reduces; and the Allreduce of the
same buffer alone, right after a barrier (its median over 50 calls).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np


def worker(model_name, steps, threads):
    # Imported here: the driver process itself starts no MPI and loads no model.
    from mpi4py import MPI

    from im2colnet import models
    from im2colnet.losses import CrossEntropyLoss
    from im2colnet.optim import SGD
    from im2colnet.runtime import tune
    from im2colnet.runtime.blas import set_blas_threads
    from im2colnet.runtime.threads import set_thread_count
    from im2colnet.training.distributed import DataParallel
    from mpi_allreduce import allreduce_seconds   # beside this script

    tune()   # the process-wide training settings, as the im2colnet command makes them
    comm = MPI.COMM_WORLD
    if comm.Get_size() > 1:
        parallel = DataParallel(threads=threads)
    else:   # the baseline: plain fit, no gradient buffer, no Allreduce
        parallel = False
        set_thread_count(threads)
        set_blas_threads(threads)
    rng = np.random.default_rng(0)
    x = rng.random((64 * steps, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 64 * steps)
    model = getattr(models, model_name)().reset_parameters(0)
    optimizer, loss = SGD(0.01, momentum=0.9), CrossEntropyLoss()
    fit = dict(batch_size=64, optimizer=optimizer, loss=loss, verbose=0, seed=0,
               distributed=parallel)
    model.fit(x, y, epochs=1, **fit)
    if parallel:
        parallel.allreduce_seconds, parallel.allreduce_calls = 0.0, 0
    comm.Barrier()
    t0 = time.perf_counter()
    model.fit(x, y, epochs=2, initial_epoch=1, **fit)
    seconds = time.perf_counter() - t0
    result = {"images_per_s": x.shape[0] / seconds}
    if parallel:
        buffer = parallel._flat
        result.update(allreduce_ms=parallel.allreduce_seconds / parallel.allreduce_calls * 1e3,
                      alone_ms=allreduce_seconds(comm, buffer, 50) * 1e3, bytes=buffer.nbytes)
    if comm.Get_rank() == 0:
        print(json.dumps(result))


def measure(model_name, ranks, threads, steps):
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    out = subprocess.run([mpiexec, "-n", str(ranks), sys.executable, os.path.abspath(__file__),
                          "--worker", model_name, str(steps), str(threads)],
                         capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lenet5", "vgg_small"])
    parser.add_argument("--layouts", nargs="+", default=["1x2", "2x1"],
                        help="RANKSxTHREADS per rank (default 1x2 2x1)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), int(args.worker[2]))
        return
    layouts = [tuple(int(v) for v in layout.split("x")) for layout in args.layouts]
    runs = {}
    for round_ in range(args.rounds):
        for model_name in args.models:
            for ranks, threads in layouts:
                result = measure(model_name, ranks, threads, args.steps)
                runs.setdefault((model_name, ranks, threads), []).append(result)
                print(f"round {round_ + 1}: {model_name} {ranks}x{threads}: "
                      f"{result['images_per_s']:,.0f} img/s", file=sys.stderr, flush=True)
    print("| model | ranks x threads | images/s | allreduce in step ms | allreduce alone ms "
          "| bytes per step | all rounds img/s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    for (model_name, ranks, threads), results in runs.items():
        def median(key, form):
            values = [r[key] for r in results if key in r]
            return format(statistics.median(values), form) if values else "-"
        every = ", ".join(f"{r['images_per_s']:,.0f}" for r in results)
        print(f"| {model_name} | {ranks} x {threads} | {median('images_per_s', ',.0f')} | "
              f"{median('allreduce_ms', '.3f')} | {median('alone_ms', '.3f')} | "
              f"{median('bytes', ',.0f')} | {every} |")


if __name__ == "__main__":
    main()
