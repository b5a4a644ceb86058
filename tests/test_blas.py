"""How im2colnet drives NumPy's OpenBLAS (im2colnet/_blas.py): the thread count of small
products, and idle threads that sleep right after a product."""
import os
import threading

import numpy as np
import pytest

from im2colnet import _blas

needs_openblas = pytest.mark.skipif(_blas._OPENBLAS is None, reason="NumPy's BLAS is not OpenBLAS")


@needs_openblas
def test_small_products_run_on_one_thread_and_the_count_comes_back():
    set_threads, get_threads = _blas._OPENBLAS
    before = get_threads()
    with _blas.gemm_threads(_blas.SMALL_GEMM_FLOPS / 2):
        assert get_threads() == 1
        with _blas.gemm_threads(0):  # nested windows share the count
            assert get_threads() == 1
        assert get_threads() == 1
    assert get_threads() == before
    with _blas.gemm_threads(_blas.SMALL_GEMM_FLOPS * 2):
        assert get_threads() == before


@needs_openblas
def test_idle_threads_sleep_after_import_and_products_still_agree():
    """The import set OPENBLAS_THREAD_TIMEOUT (unless the user had) and restarted the threads;
    multi-threaded products afterwards give what one thread gives."""
    libs = [lib for lib in _blas._openblas_libraries() if hasattr(lib, "openblas_thread_timeout")]
    if not libs:
        pytest.skip("this OpenBLAS does not export openblas_thread_timeout")
    if os.environ.get("OPENBLAS_THREAD_TIMEOUT") == str(_blas.IDLE_TIMEOUT_LOG2):
        assert libs[0].openblas_thread_timeout() == _blas.IDLE_TIMEOUT_LOG2
    a = np.random.default_rng(0).standard_normal((700, 900)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((900, 800)).astype(np.float32)
    with _blas.gemm_threads(0):
        one = a @ b
    results = []
    threads = [threading.Thread(target=lambda: results.append(a @ b)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for many in results + [a @ b]:
        np.testing.assert_allclose(many, one, rtol=1e-5, atol=1e-4)


def test_a_users_own_timeout_wins():
    environ = {"OPENBLAS_THREAD_TIMEOUT": "28"}
    assert _blas.quiet_idle_threads(environ) is False
    assert environ == {"OPENBLAS_THREAD_TIMEOUT": "28"}
