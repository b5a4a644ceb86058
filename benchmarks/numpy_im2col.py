"""The plain-NumPy (CS231n-style) im2col baseline against im2colnet's compiled path.

The baseline itself is ``im2colnet.numpy_im2col`` (stride tricks + one matmul;
col2im as a loop over kernel taps). It ships with the package so that the
installed ``im2colnet bench`` can run it; this script imports it (one copy of
the code) and times it against ours:

    python benchmarks/numpy_im2col.py                   # every named shape
    python benchmarks/numpy_im2col.py vgg-14 --dtype float64
"""
import sys

import im2colnet  # noqa: F401 -- first: sets the OpenMP wait policy before any other OpenMP runtime
from im2colnet.apps import bench
from im2colnet.numpy_im2col import (col2im, conv2d_backward_data,  # noqa: F401 -- re-exported
                                    conv2d_backward_weights, conv2d_forward, im2col)

if __name__ == "__main__":
    sys.exit(bench.main(["--methods", "ours,numpy", "--no-models", *sys.argv[1:]],
                        prog="python benchmarks/numpy_im2col.py"))
