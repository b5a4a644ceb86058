"""The malloc settings of runtime.tune() (im2colnet/runtime/malloc.py): when they apply, and
when not; the import alone leaves malloc as it is."""
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


# Trains LeNet-5 for 30 steps after a warm-up and prints the page faults per step;
# with the argument "tune", after im2colnet.runtime.tune().
CHILD_STEPS = """
import resource, sys
import numpy as np
import im2colnet
from im2colnet import models
from im2colnet.losses import CrossEntropyLoss
from im2colnet.optim import SGD
if sys.argv[1:] == ["tune"]:
    im2colnet.runtime.tune()
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
def test_training_steps_do_not_fault_in_fresh_pages_after_tune(tmp_path):
    """Without the settings, glibc hands LeNet-5's freed activations back to the kernel and
    every step faults fresh pages in (~310 measured); after runtime.tune() a step reuses its
    pages. The import alone leaves malloc as it is (the untuned child faults)."""
    import ctypes
    if not hasattr(ctypes.CDLL(None), "gnu_get_libc_version"):
        pytest.skip("not glibc")
    env = {k: v for k, v in os.environ.items()
           if k not in _malloc._USER_SETTINGS and k != "IM2COLNET_MALLOC_TUNING"}
    faults = {}
    for mode in ("tune", "import-only"):
        out = subprocess.run([sys.executable, "-c", CHILD_STEPS, mode], capture_output=True, text=True,
                             cwd=tmp_path, env=env, check=True)
        faults[mode] = float(out.stdout.split()[-1])
    print("page faults per step after tune() / after the import only:", faults)
    assert faults["tune"] < 20, faults
    assert faults["import-only"] > 5 * max(faults["tune"], 1), faults
