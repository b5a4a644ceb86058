"""The MPI Allreduce alone, on buffers the size of a float32 scalar, LeNet-5's gradient
buffer and VGG-small's (docs/performance.md: which MPI).

    mpiexec -n 2 python benchmarks/mpi_allreduce.py

Rank 0 prints the MPI library and, per buffer size in bytes, the median time in
microseconds of 200 in-place sums (the first 20 not counted), each right after a barrier.
"""
import statistics
import time

import numpy as np
from mpi4py import MPI

SIZES = (1, 61706 + 2, 584618 + 2)   # float32 values: a scalar, LeNet-5, VGG-small (+ loss, hits)


def allreduce_seconds(comm, buffer, calls, warmup=0):
    """Median seconds of ``calls`` in-place Allreduce sums of ``buffer``, each right after a
    barrier; the first ``warmup`` calls are not counted."""
    times = []
    for _ in range(warmup + calls):
        comm.Barrier()
        t0 = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[warmup:])


def main():
    comm = MPI.COMM_WORLD
    medians = {}
    for n in SIZES:
        buffer = np.ones(n, np.float32)
        medians[buffer.nbytes] = round(allreduce_seconds(comm, buffer, 180, warmup=20) * 1e6, 1)
    if comm.Get_rank() == 0:
        print(MPI.Get_library_version().splitlines()[0].strip(), medians)


if __name__ == "__main__":
    main()
