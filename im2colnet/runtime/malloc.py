"""Keep the memory of freed activations in the heap instead of handing it back to the kernel.

A training step allocates and frees the same arrays every step (activations,
gradients, 0.1-2 MiB each). glibc's malloc gives such blocks back to the
kernel (munmap, or trimming the top of the heap), so the next step's arrays
start on fresh pages that the kernel must fault in and zero (hundreds of page
faults per LeNet-5 step; docs/performance.md has what they cost).

Two malloc settings stop that:
  M_MMAP_THRESHOLD = 32 MiB  blocks below it come from the heap (glibc's own
                             adaptive threshold stops growing at this value);
  M_TOP_PAD = 16 MiB         the heap keeps up to 16 MiB spare at its top when
                             it shrinks, instead of returning every free page.
They are process-wide, so they are set only by ``im2colnet.runtime.tune()``
(never at import), and only with glibc (elsewhere nothing happens).
``IM2COLNET_MALLOC_TUNING=0`` leaves malloc as it is, and so does a user's own
MALLOC_TOP_PAD_, MALLOC_MMAP_THRESHOLD_ or GLIBC_TUNABLES setting.
"""
import ctypes
import os
import sys

__all__ = ["tune_malloc", "MMAP_THRESHOLD", "TOP_PAD"]

# mallopt parameter numbers from glibc's <malloc.h>
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 2 ** 20
TOP_PAD = 16 * 2 ** 20

_USER_SETTINGS = ("MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")


def tune_malloc(environ=os.environ):
    """Apply the two settings; True when glibc took them, False when skipped or unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    if environ.get("IM2COLNET_MALLOC_TUNING", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if any(name in environ for name in _USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TOP_PAD, TOP_PAD))
