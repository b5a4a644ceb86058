"""The malloc settings applied at import (im2colnet/runtime/malloc.py): when they apply, and when not."""
import os
import subprocess
import sys

import pytest

from im2colnet.runtime import malloc as _malloc


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_applied_by_default_on_glibc():
    libc_is_glibc = hasattr(__import__("ctypes").CDLL(None), "gnu_get_libc_version")
    assert _malloc.tune_malloc({}) is libc_is_glibc


@pytest.mark.parametrize("environ", [
    {"IM2COLNET_MALLOC_TUNING": "0"},
    {"IM2COLNET_MALLOC_TUNING": "off"},
    {"MALLOC_TOP_PAD_": "0"},
    {"MALLOC_MMAP_THRESHOLD_": "131072"},
    {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"},
])
def test_opt_out_and_user_settings_are_respected(environ):
    assert _malloc.tune_malloc(environ) is False


# Trains LeNet-5 for 30 steps after a warm-up and prints the page faults per step.
CHILD_STEPS = """
import resource
import numpy as np
from im2colnet import models
from im2colnet.losses import CrossEntropyLoss
from im2colnet.optim import SGD
rng = np.random.default_rng(0)
x = rng.random((64 * 10, 1, 28, 28), dtype=np.float32)
y = rng.integers(0, 10, 64 * 10)
model, loss, opt = models.lenet5(), CrossEntropyLoss(), SGD(0.01, momentum=0.9)
model.fit(x, y, epochs=1, optimizer=opt, loss=loss, verbose=0, seed=0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
model.fit(x, y, epochs=4, initial_epoch=1, optimizer=opt, loss=loss, verbose=0, seed=0)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 30)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_training_steps_do_not_fault_in_fresh_pages(tmp_path):
    """Without the settings, glibc handed LeNet-5's freed activations back to the kernel and
    every step faulted ~310 fresh pages in (measured); with them, a step reuses its pages."""
    import ctypes
    if not hasattr(ctypes.CDLL(None), "gnu_get_libc_version"):
        pytest.skip("not glibc")
    env = {k: v for k, v in os.environ.items() if k not in _malloc._USER_SETTINGS}
    faults = {}
    for tuning in ("1", "0"):
        out = subprocess.run([sys.executable, "-c", CHILD_STEPS], capture_output=True, text=True,
                             cwd=tmp_path, env=dict(env, IM2COLNET_MALLOC_TUNING=tuning), check=True)
        faults[tuning] = float(out.stdout.split()[-1])
    print("page faults per step with / without the settings:", faults["1"], faults["0"])
    assert faults["1"] < 20, faults
