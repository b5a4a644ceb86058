# cython: language_level=3
"""When a kernel is worth running on several threads.

Starting a parallel region costs 15-40 us on the 2-core machine (the other
thread sleeps between regions, since OMP_WAIT_POLICY=PASSIVE keeps it from
spinning against the BLAS), about what one thread needs to stream 300,000
float32 elements. Measured (benchmarks/ops.py and a kernel sweep, serial /
parallel): ReLU forward on 300k elements 44 / 59 us, on 1M 139 / 132 us, on
3M 474 / 297 us; the max-pool scatter on (64, 16, 10, 10) 22 / 58 us. So
the element-wise kernels use threads from PARALLEL_MIN_WORK elements of work
on (a kernel that does more per element counts it double).
"""

cdef enum:
    PARALLEL_MIN_WORK = 1 << 20
