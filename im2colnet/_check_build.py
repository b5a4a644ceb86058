"""Turn a missing or stale compiled extension into an ImportError that says what to do;
say how the kernels were built (build_info)."""
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
# this module before anything that uses the kernels).
try:
    from ._kernels import batchnorm, conv_direct, gemm, im2col, pool, relu  # noqa: F401
except ImportError as exc:
    raise ImportError(_HOW_TO_BUILD.format(error=exc)) from exc


def build_info():
    """How the compiled kernels were built: {'openmp': bool, 'boundscheck': bool}."""
    if _build_config is None:
        raise ImportError(_HOW_TO_BUILD.format(error="im2colnet/_build_config.py is missing"))
    return {"openmp": _build_config.OPENMP, "boundscheck": _build_config.BOUNDSCHECK}
