"""Build script: the Cython kernels in im2colnet/_kernels/*.pyx, one extension each.

Environment switches (read at build time):
  IM2COLNET_BOUNDSCHECK=1  compile every kernel with boundscheck/wraparound/
                           initializedcheck on (slow; for debugging an index bug).
  IM2COLNET_OPENMP=0       build without OpenMP even where the compiler has it
                           (prange loops then run serially). Default: on when the
                           compiler accepts -fopenmp.
"""
import glob
import os
import subprocess
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def _flag(name, default):
    value = os.environ.get(name, default).strip().lower()
    return value not in ("0", "false", "no", "off", "")


def _compiler_accepts(flag, src="int main(void){return 0;}\n"):
    """True when the C compiler compiles and links a tiny program with `flag`."""
    if sys.platform == "win32":
        return False
    cc = os.environ.get("CC", "cc")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.c")
        with open(path, "w") as fh:
            fh.write(src)
        try:
            result = subprocess.run(
                [cc, flag, path, "-o", os.path.join(tmp, "t")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return False
        return result.returncode == 0


def _compiler_has_openmp():
    """True when the C compiler compiles and links a tiny OpenMP program."""
    return _compiler_accepts(
        "-fopenmp", "#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n")


BOUNDSCHECK = _flag("IM2COLNET_BOUNDSCHECK", "0")
OPENMP = _flag("IM2COLNET_OPENMP", "1") and _compiler_has_openmp()

compile_args = ["-O3"]
# Loops start on a 64-byte boundary, so the speed of a store-bound loop (ReLU) does
# not depend on where the linker puts it (docs/performance.md).
if _compiler_accepts("-falign-loops=64"):
    compile_args.append("-falign-loops=64")
link_args = []
if OPENMP:
    compile_args.append("-fopenmp")
    link_args.append("-fopenmp")

# C sources compiled into one kernel's extension (besides its .pyx): the packed GEMM's
# driver and its micro-kernels, batch norm's loops; code for one instruction set is
# compiled for it by function attributes (no global -march flag) and chosen at run time.
CSRC = os.path.join("im2colnet", "_kernels", "csrc")
C_SOURCES = {
    "packed_conv": [os.path.join(CSRC, name) for name in (
        "packed_conv.c", "gemm_avx512.c", "gemm_avx2.c", "gemm_portable.c")],
    "batchnorm": [os.path.join(CSRC, "bn_loops.c")],
}

extensions = []
for pyx in sorted(glob.glob(os.path.join("im2colnet", "_kernels", "*.pyx"))):
    module = os.path.splitext(pyx)[0].replace(os.sep, ".")
    name = os.path.basename(os.path.splitext(pyx)[0])
    extensions.append(Extension(
        module, [pyx] + C_SOURCES.get(name, []),
        include_dirs=[np.get_include(), CSRC],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    ))


class BuildEveryKernel(build_ext):
    """Compile every kernel on every build.

    setuptools reuses an extension left in build/ when its .c file is older,
    whatever the compiler flags, so a build made with other CFLAGS could stay
    in use unnoticed (docs/performance.md). Recompiling costs about 30 s.
    """

    def initialize_options(self):
        super().initialize_options()
        self.force = True


directives = {
    "language_level": 3,
    "boundscheck": BOUNDSCHECK,
    "wraparound": BOUNDSCHECK,
    "initializedcheck": BOUNDSCHECK,
    "cdivision": True,
    "embedsignature": True,
}

# The build records how it was configured, so `im2colnet.build_info()` can say.
with open(os.path.join(HERE, "im2colnet", "_build_config.py"), "w") as fh:
    fh.write("# Written by setup.py at build time.\n")
    fh.write(f"OPENMP = {OPENMP!r}\nBOUNDSCHECK = {BOUNDSCHECK!r}\n")

setup(
    packages=[
        "im2colnet",
        "im2colnet._kernels",
        "im2colnet.runtime",
        "im2colnet.functional",
        "im2colnet.layers",
        "im2colnet.training",
        "im2colnet.models",
        "im2colnet.apps",
        "im2colnet.onnx",
    ],
    # The model zoo lives in the top-level models/ folder of the repository.
    package_dir={"im2colnet.models": "models"},
    package_data={
        "im2colnet.models": ["*.h5"],
        "im2colnet._kernels": ["*.pyx", "*.pxd"],
    },
    # force: the generated C depends on the directives (BOUNDSCHECK), not only on the .pyx
    ext_modules=cythonize(extensions, compiler_directives=directives, force=True),
    cmdclass={"build_ext": BuildEveryKernel},
    zip_safe=False,
)
