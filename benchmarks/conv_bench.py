"""Convolution speed: im2col + GEMM against direct loops, the GEMM alone, a plain-NumPy
im2col and PyTorch (when installed), per layer shape and pass; then whole models.

The same program as ``im2colnet bench`` (see ``im2colnet bench --help``):

    python benchmarks/conv_bench.py                     # every named shape, then the models
    python benchmarks/conv_bench.py --quick             # three shapes, short budgets
    python benchmarks/conv_bench.py vgg-14 --shape 64,64,16,16,64,3,3,1,1 --json out.json
"""
import sys

import im2colnet  # noqa: F401 -- first: sets the OpenMP wait policy before torch's OpenMP loads
from im2colnet.apps import bench

if __name__ == "__main__":
    sys.exit(bench.main(prog="python benchmarks/conv_bench.py"))
