"""How im2colnet drives NumPy's OpenBLAS (im2colnet/runtime/): the thread count of small
products, products on our threads, and (with runtime.tune()) idle threads that sleep."""
import os
import threading

import numpy as np
import pytest

from im2colnet.runtime import blas, gemm, threads

needs_openblas = pytest.mark.skipif(blas.openblas() is None, reason="NumPy's BLAS is not OpenBLAS")


@needs_openblas
def test_small_products_run_on_one_thread_and_the_count_comes_back():
    set_threads, get_threads = blas.openblas()
    before = get_threads()
    with blas.gemm_threads(blas.SMALL_GEMM_FLOPS / 2):
        assert get_threads() == 1
        with blas.gemm_threads(0):  # nested windows share the count
            assert get_threads() == 1
        assert get_threads() == 1
    assert get_threads() == before
    with blas.gemm_threads(blas.SMALL_GEMM_FLOPS * 2):
        assert get_threads() == before


TUNE_CHILD = """
import os, threading, numpy as np
import im2colnet
from im2colnet.runtime import blas
before = dict(os.environ)
libs = [lib for lib in blas.openblas_libraries() if hasattr(lib, "openblas_thread_timeout")]
timeout_before = libs[0].openblas_thread_timeout() if libs else None
applied = im2colnet.runtime.tune()
timeout_after = libs[0].openblas_thread_timeout() if libs else None
a = np.random.default_rng(0).standard_normal((700, 900)).astype(np.float32)
b = np.random.default_rng(1).standard_normal((900, 800)).astype(np.float32)
with blas.gemm_threads(0):
    one = a @ b
results = []
workers = [threading.Thread(target=lambda: results.append(a @ b)) for _ in range(3)]
for t in workers:
    t.start()
for t in workers:
    t.join()
agree = all(np.allclose(many, one, rtol=1e-5, atol=1e-4) for many in results + [a @ b])
print(applied["openblas_idle_threads"], timeout_before, timeout_after, dict(os.environ) == before, agree)
"""


@needs_openblas
def test_tune_makes_idle_threads_sleep_and_products_still_agree():
    """runtime.tune() (never the import) sets OpenBLAS's thread timeout and restarts its
    threads, without leaving OPENBLAS_THREAD_TIMEOUT in os.environ; multi-threaded
    products afterwards give what one thread gives."""
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    out = subprocess.run([sys.executable, "-c", TUNE_CHILD], env=env, cwd=os.path.dirname(__file__),
                         capture_output=True, text=True, check=True).stdout.split()
    if out[1] == "None":
        pytest.skip("this OpenBLAS does not export openblas_thread_timeout")
    assert out == ["True", out[1], str(blas.IDLE_TIMEOUT_LOG2), "True", "True"]
    assert out[1] != str(blas.IDLE_TIMEOUT_LOG2)   # the import had left OpenBLAS's own value


def test_a_users_own_timeout_wins():
    environ = {"OPENBLAS_THREAD_TIMEOUT": "28"}
    assert blas.quiet_idle_threads(environ) is False
    assert environ == {"OPENBLAS_THREAD_TIMEOUT": "28"}


# ---------------------------------------------- products on our own threads

needs_threaded = pytest.mark.skipif(not gemm.threaded_gemm(),
                                    reason="products run through np.matmul on this BLAS")

WIDE = 2 * threads.thread_count() * gemm._MIN_COLUMNS_PER_PIECE + 5   # split by columns
# (m, k, n): column splits (n wide, ragged last piece, n < pieces), inner splits (a
# narrow result over a long sum, k smaller than the pieces), and empty products.
SHAPES = [(3, 5, WIDE), (7, 33, 97), (4, 6, 1), (9, 300, 4), (5, 1, 3), (6, 0, WIDE), (6, 0, 3),
          (0, 4, 5), (2, 3, 0)]


def _operand(rng, rows, cols, dtype, transposed):
    """A (rows, cols) array of dtype: C-contiguous, or the transposed view of one."""
    if transposed:
        return rng.standard_normal((cols, rows)).astype(dtype).T
    return rng.standard_normal((rows, cols)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, k, n", SHAPES)
@pytest.mark.parametrize("a_t, b_t", [(False, False), (True, False), (False, True), (True, True)])
def test_matmul_matches_numpy(dtype, m, k, n, a_t, b_t):
    """Every split and every operand layout gives np.matmul's product (float64: to 1e-12),
    also when accumulating into out; an empty sum gives zeros."""
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    a, b = _operand(rng, m, k, dtype, a_t), _operand(rng, k, n, dtype, b_t)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    out = np.full((m, n), np.nan, dtype)
    assert gemm.matmul(a, b, out) is out
    np.testing.assert_allclose(out, expected, **tol)
    start = rng.standard_normal((m, n)).astype(dtype)
    out = start.copy()
    gemm.matmul(a, b, out, accumulate=True)
    np.testing.assert_allclose(out, start + expected, **tol)


def test_matmul_copies_an_operand_that_is_neither_layout():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((6, 20))[:, ::2]          # strided: neither C nor transposed-C
    b = rng.standard_normal((10, 300))
    out = np.empty((6, 300))
    np.testing.assert_allclose(gemm.matmul(a, b, out), a @ b, rtol=1e-12, atol=1e-12)


@needs_threaded
def test_threaded_products_run_on_one_blas_thread_and_are_deterministic():
    """Inside matmul OpenBLAS is on one thread (a piece must not start OpenBLAS's own
    threads); the thread count comes back; the pieces are fixed, so repeated and
    concurrent calls give the same bits."""
    set_threads, get_threads = blas.openblas()
    before = get_threads()
    rng = np.random.default_rng(4)
    a = rng.standard_normal((300, 5000)).astype(np.float32)
    b = rng.standard_normal((5000, 40)).astype(np.float32)     # narrow: summed pieces
    c = rng.standard_normal((5000, 700)).astype(np.float32)    # wide: column pieces
    first = [gemm.matmul(a, b, np.empty((300, 40), np.float32)),
             gemm.matmul(a, c, np.empty((300, 700), np.float32))]
    assert get_threads() == before
    results = [None] * 6

    def run(slot):
        results[slot] = [gemm.matmul(a, b, np.empty((300, 40), np.float32)),
                         gemm.matmul(a, c, np.empty((300, 700), np.float32))]

    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results:
        for x, y in zip(got, first):
            assert np.array_equal(x, y)
    assert get_threads() == before


@needs_threaded
def test_without_the_kernel_matmul_falls_back_to_numpy(monkeypatch):
    """With the kernel unregistered (another BLAS), matmul is np.matmul, and the
    convolution takes one product per sample for small layers again."""
    from im2colnet.functional import conv
    monkeypatch.setattr(gemm, "_gemm_kernel", None)
    assert not gemm.threaded_gemm()
    assert conv._per_sample(blas.SMALL_GEMM_FLOPS / 2, 1)
    assert not conv._per_sample(blas.SMALL_GEMM_FLOPS * 2, 10 ** 6, weights=True)
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((4, 9)), rng.standard_normal((9, 3))
    out = np.ones((4, 3))
    np.testing.assert_allclose(gemm.matmul(a, b, out, accumulate=True), 1 + a @ b, rtol=1e-12)


def test_the_kernel_takes_both_functions_or_neither():
    from im2colnet._kernels import gemm
    with pytest.raises(ValueError, match="both"):
        gemm.register(1, 0)


def test_threads_follow_the_wait_policy():
    """Threads from 2**16 elements of work when idle OpenMP threads spin for a while,
    from 2**20 when they sleep at once (parallel_min_work's measurements)."""
    passive = os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
    threshold = threads.parallel_min_work()
    assert threshold == (1 << 20 if passive else 1 << 16)
    assert not threads.threads_worth(threshold - 1) and threads.threads_worth(threshold)


def test_the_import_leaves_the_wait_policy_to_the_user():
    """Neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT is set by the import; a user's own
    passive policy raises the kernels' threshold for threads."""
    import subprocess
    import sys
    code = ("import os, im2colnet; from im2colnet.runtime import threads; "
            "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'), "
            "threads.parallel_min_work())")

    def run(**env):
        base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        return subprocess.run([sys.executable, "-c", code], env={**base, **env}, cwd=os.path.dirname(__file__),
                              capture_output=True, text=True, check=True).stdout.split()

    assert run() == ["None", "None", str(1 << 16)]
    assert run(OMP_WAIT_POLICY="PASSIVE") == ["PASSIVE", "None", str(1 << 20)]
    assert run(GOMP_SPINCOUNT="1000") == ["None", "1000", str(1 << 16)]


# -------------------------------------- one product per sample, on strided views

def _strided(rng, shape, dtype, layout):
    """An array of `shape` whose matrices (last two axes) are stored as `layout`:
    "rows" (contiguous rows inside a bigger array), "columns" (a transposed view),
    or "copy" (every other column: neither, so matmul copies it)."""
    s, r, c = shape
    if layout == "rows":
        return rng.standard_normal((s + 1, r, c + 3)).astype(dtype)[1:, :, 2:2 + c]
    if layout == "columns":
        return rng.standard_normal((s, c, r)).astype(dtype).transpose(0, 2, 1)
    return rng.standard_normal((s, r, 2 * c)).astype(dtype)[:, :, ::2]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("s, m, k, n", [(5, 3, 4, 6), (1, 2, 7, 1), (4, 1, 1, 5), (3, 4, 0, 2),
                                        (0, 2, 3, 4), (7, 6, 9, 33)])
@pytest.mark.parametrize("layout", ["rows", "columns", "copy"])
def test_products_per_sample_match_numpy(dtype, s, m, k, n, layout):
    """matmul_each writes a[...] @ b[s] straight into a strided out (the NCHW slices of
    the convolution); matmul_each_sum adds a[s] @ b[s] over the samples."""
    rng = np.random.default_rng(s * 1000 + m * 100 + k * 10 + n)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    a2 = _strided(rng, (1, m, k), dtype, layout)[0]
    b = _strided(rng, (s, k, n), dtype, layout)
    big = np.full((s, m + 2, n + 1), np.nan, dtype)
    out = big[:, 1:1 + m, :n]                              # rows inside a bigger array
    assert gemm.matmul_each(a2, b, out) is out
    np.testing.assert_allclose(out, np.matmul(a2.astype(np.float64), b.astype(np.float64)), **tol)
    assert np.isnan(big[:, 0]).all() and np.isnan(big[:, 1 + m:]).all() and np.isnan(big[:, :, n]).all()
    a3 = _strided(rng, (s, m, k), dtype, layout)
    expected = np.matmul(a3.astype(np.float64), b.astype(np.float64)).sum(axis=0)
    total = np.full((m, n), np.nan, dtype)
    np.testing.assert_allclose(gemm.matmul_each_sum(a3, b, total), expected, **tol)
    start = rng.standard_normal((m, n)).astype(dtype)
    total = start.copy()
    np.testing.assert_allclose(gemm.matmul_each_sum(a3, b, total, accumulate=True), start + expected, **tol)


@needs_threaded
def test_matmul_each_refuses_an_out_it_would_have_to_copy():
    out = np.zeros((2, 3, 8))[:, :, ::2]
    with pytest.raises(ValueError, match="out"):
        gemm.matmul_each(np.ones((3, 5)), np.ones((2, 5, 4)), out)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_child_forked_after_the_kernels_ran_does_not_hang():
    """GNU OpenMP's thread pool does not survive fork; the child runs on one thread
    (convolution, ReLU, pooling, products) and gives the parent's numbers."""
    import subprocess
    import sys
    code = """
import os, numpy as np
import im2colnet
from im2colnet import functional as F
rng = np.random.default_rng(0)
x = rng.standard_normal((16, 8, 20, 20)).astype(np.float32)
w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
def work():
    y = F.conv2d_forward(x, w, padding=1)
    dw, _ = F.conv2d_backward_weights(y, x, w.shape, padding=1)
    return F.maxpool2d_forward(F.relu_forward(y), 2)[0].sum() + dw.sum()
expected = work()
pid = os.fork()
if pid == 0:
    os._exit(0 if np.isclose(work(), expected, rtol=1e-4) else 3)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), float(work()) == float(expected))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(__file__),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "True"]


def test_the_thread_count_can_be_set_and_results_stay_right():
    """set_thread_count (bench --threads) changes how many pieces a product is cut into;
    the products stay right on one thread and on three."""
    before = threads.thread_count()
    rng = np.random.default_rng(8)
    a = rng.standard_normal((40, 300))
    b = rng.standard_normal((300, 500))
    c = rng.standard_normal((300, 7))
    try:
        for n in (1, 3):
            threads.set_thread_count(n)
            assert threads.thread_count() == n
            np.testing.assert_allclose(gemm.matmul(a, b, np.empty((40, 500))), a @ b, rtol=1e-12)
            # atol: an entry that cancels (e.g. 0.0117 from 300 terms of size ~1) keeps
            # the absolute rounding error of its terms, ~1e-14, whatever the order of the sums
            np.testing.assert_allclose(gemm.matmul(a, c, np.empty((40, 7))), a @ c, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(gemm.matmul_each_sum(b.reshape(3, 100, 500), b.reshape(3, 500, 100),
                                                             np.empty((100, 100))),
                                       np.matmul(b.reshape(3, 100, 500), b.reshape(3, 500, 100)).sum(0),
                                       rtol=1e-12, atol=1e-10)
    finally:
        threads.set_thread_count(before)
    assert threads.thread_count() == before
