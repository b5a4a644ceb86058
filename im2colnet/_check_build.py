"""Turn a missing or stale compiled extension into an ImportError that says what to do."""

_HOW_TO_BUILD = (
    "im2colnet's compiled kernels could not be imported ({error}).\n"
    "You are probably importing im2colnet from a source checkout that has not been built,\n"
    "or that was built for another Python or NumPy. Build it with one of:\n"
    "    pip install .                 (a normal install)\n"
    "    pip install -e .              (an editable install for development)\n"
    "    python setup.py build_ext --inplace\n"
    "and make sure the source folder is not shadowing the installed package."
)


def import_kernels():
    """Import every compiled kernel module, or raise a readable ImportError."""
    try:
        from ._kernels import batchnorm, conv_direct, gemm, im2col, packed_conv, pool, relu  # noqa: F401
    except ImportError as exc:
        raise ImportError(_HOW_TO_BUILD.format(error=exc)) from exc
