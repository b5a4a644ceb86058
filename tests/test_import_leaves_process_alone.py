"""Importing im2colnet changes nothing in the process beyond loading the kernels and a fork
handler: no environment variable, no OpenBLAS setting, no thread started or stopped, no
BLAS self-test. Each check runs in a fresh child process (this one imported im2colnet already)."""
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def run_child(code, **env):
    result = subprocess.run([sys.executable, "-c", code], cwd=HERE, capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_import_leaves_os_environ_unchanged():
    code = ("import os; before = dict(os.environ); import im2colnet; "
            "print(dict(os.environ) == before)")
    # also with none of the variables the import used to set
    bare = {k: v for k, v in os.environ.items()
            if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_THREAD_TIMEOUT")}
    result = subprocess.run([sys.executable, "-c", code], cwd=HERE, capture_output=True,
                            text=True, env=bare, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True"]
    assert run_child(code) == ["True"]


# A NumPy product loop runs in a thread (OpenBLAS's own threads busy) while the child
# imports im2colnet; OpenBLAS's settings and the process's threads are read before and
# after through OpenBLAS's own functions (found by their names, as threadpoolctl does).
BESIDE_A_PRODUCT_LOOP = r"""
import ctypes, os, threading
import numpy as np

def openblas():
    with open("/proc/self/maps") as fh:
        paths = sorted({line.split()[-1] for line in fh if "openblas" in line.lower()})
    for path in paths:
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                get = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                if get is not None:
                    get.restype = ctypes.c_int
                    timeout = getattr(lib, "openblas_thread_timeout", None)
                    if timeout is not None:
                        timeout.restype = ctypes.c_int
                    return get, timeout
    return None, None

get_threads, get_timeout = openblas()
def settings():
    return (get_threads() if get_threads else None, get_timeout() if get_timeout else None,
            len(os.listdir("/proc/self/task")))

a = np.random.default_rng(0).standard_normal((400, 400))
expected = a @ a          # OpenBLAS's pool is up
stop, errors = threading.Event(), []
def loop():
    while not stop.is_set():
        if not np.array_equal(a @ a, expected):
            errors.append("a product changed")
worker = threading.Thread(target=loop)
worker.start()
before = settings()
import im2colnet
after = settings()
stop.set()
worker.join()
print(before == after, not errors, before, after)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")
def test_import_beside_a_product_loop_leaves_openblas_alone():
    """OpenBLAS's thread count and idle timeout, and the number of threads in the process
    (the import used to restart OpenBLAS's threads and run products on ours), are the same
    after the import; the loop's products do not change."""
    out = run_child(BESIDE_A_PRODUCT_LOOP)
    assert out[:2] == ["True", "True"], out


def test_products_go_to_our_threads_at_the_first_product_not_at_import():
    """The BLAS functions are looked up and checked when the first product needs them."""
    code = """
import numpy as np
import im2colnet
from im2colnet.runtime import blas, gemm
decided_at_import = gemm._decided or blas.openblas.cache_info().currsize > 0
x = np.ones((2, 3, 8, 8), np.float32)
im2colnet.functional.conv2d_forward(x, np.ones((4, 3, 3, 3), np.float32), method="blas")
print(decided_at_import, gemm._decided)
"""
    assert run_child(code) == ["False", "True"]


def test_the_zoo_and_the_old_names_are_reachable_after_import_im2colnet():
    """im2colnet.models.lenet5 without `from im2colnet import models`; the public names that
    moved with the layout (API section 2 and 5) still answer where they did."""
    code = """
import im2colnet
import im2colnet.cli
print(im2colnet.models.lenet5().name, im2colnet.layers.Sequential is im2colnet.Sequential,
      im2colnet.layers.History is im2colnet.History, callable(im2colnet.cli.main),
      im2colnet.load_model is im2colnet.sequential.load_model)
"""
    assert run_child(code) == ["lenet5", "True", "True", "True", "True"]
