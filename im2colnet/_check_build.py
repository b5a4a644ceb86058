"""Load the compiled kernels (or raise an ImportError that says what to do); say how they
were built (build_info)."""

try:
    from . import _build_config   # written by setup.py
except ImportError:
    _build_config = None

_HOW_TO_BUILD = (
    "im2colnet's compiled kernels could not be imported ({error}).\n"
    "You are probably importing im2colnet from a source checkout that has not been built,\n"
    "or that was built for another Python or NumPy. Build it with one of:\n"
    "    pip install .                 (a normal install)\n"
    "    pip install -e .              (an editable install for development)\n"
    "    python setup.py build_ext --inplace\n"
    "and make sure the source folder is not shadowing the installed package."
)


# Every compiled kernel module, or a readable ImportError (im2colnet/__init__.py imports
# this module before anything that uses the kernels). GNU OpenMP, which they load, keeps
# its own defaults: GOMP_SPINCOUNT and OMP_WAIT_POLICY are the user's to set.
try:
    from ._kernels import batchnorm, conv_direct, gemm, im2col, packed_conv, pool, relu  # noqa: F401
except ImportError as exc:
    raise ImportError(_HOW_TO_BUILD.format(error=exc)) from exc


def build_info():
    """How the compiled kernels were built and which micro-kernels run:
    {'openmp': bool, 'boundscheck': bool, 'kernel': the packed GEMM's level in use
    ("avx512", "avx2" or "portable"; IM2COLNET_KERNEL forces one),
    'kernels_supported': the levels this CPU runs}."""
    if _build_config is None:
        raise ImportError(_HOW_TO_BUILD.format(error="im2colnet/_build_config.py is missing"))
    return {"openmp": _build_config.OPENMP, "boundscheck": _build_config.BOUNDSCHECK,
            "kernel": packed_conv.level(), "kernels_supported": packed_conv.supported_levels()}


def set_kernel_level(name):
    """Run the packed GEMM's micro-kernel level `name` from now on; returns the previous
    one (for tests: the process-wide choice IM2COLNET_KERNEL makes at import)."""
    return packed_conv.set_level(name)
