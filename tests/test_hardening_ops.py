"""Hardening of the operations: property-based fuzzing against independent references,
random invalid arguments, 64-bit index arithmetic, threads, and numerical edge cases.

Run alone with ``bash test.sh -m hardening``. The number of random examples per
property is IM2COLNET_FUZZ_EXAMPLES (default 25, which keeps this file quick);
``python scripts/fuzz_ops.py`` runs the same properties with thousands.
"""
import os
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import im2colnet.functional as F
from im2colnet import reference
from im2colnet._checks import conv_geometry

pytestmark = pytest.mark.hardening

EXAMPLES = int(os.environ.get("IM2COLNET_FUZZ_EXAMPLES", "25"))
fuzz = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 100,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# ------------------------------------------------------------------ strategies

@st.composite
def conv_problems(draw):
    """A valid convolution: shapes, stride, dilation and one of every padding form or an anchor."""
    N, C, K = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    H, W = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    form = draw(st.sampled_from(["int", "pair", "sides", "same", "valid", "anchor"]))
    anchor, padding = None, 0
    if form == "int":
        padding = draw(st.integers(-1, 3))
    elif form == "pair":
        padding = (draw(st.integers(-1, 3)), draw(st.integers(-1, 3)))
    elif form == "sides":
        padding = tuple((draw(st.integers(-2, 3)), draw(st.integers(-2, 3))) for _ in range(2))
    elif form in ("same", "valid"):
        padding = form
    else:
        anchor = (draw(st.integers(-2, kh + 1)), draw(st.integers(-2, kw + 1)))
    opts = dict(stride=stride, padding=padding, dilation=dilation, anchor=anchor)
    try:  # keep only geometries with an output (the others are tested as invalid input)
        conv_geometry((H, W), (kh, kw), stride, padding, dilation, anchor)
    except ValueError:
        assume(False)
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((N, C, H, W)), rng.standard_normal((K, C, kh, kw)),
            rng.standard_normal(K), opts)


@st.composite
def pool_problems(draw):
    """A valid pooling window: overlapping, tiling or gapped, with padding smaller than the kernel."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 4), st.integers(1, 4))))
    padding = ((draw(st.integers(0, kh - 1)), draw(st.integers(0, kh - 1))),
               (draw(st.integers(0, kw - 1)), draw(st.integers(0, kw - 1))))
    H, W = draw(st.integers(kh, 10)), draw(st.integers(kw, 10))
    N, C = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    # Distinct values (a shuffled ramp) keep the winner unique: no ties to argue about.
    x = np.random.default_rng(seed).permutation(N * C * H * W).reshape(N, C, H, W) / 7.0
    return x, (kh, kw), stride, padding


# ------------------------------------------------------- valid input: correct

@fuzz
@given(conv_problems())
def test_conv_fuzz_against_loops_and_direct(problem):
    x, w, b, opts = problem
    expected = reference.conv2d_loops(x, w, b, **opts)
    y = F.conv2d_forward(x, w, b, **opts)
    assert np.allclose(y, expected, atol=1e-10)
    assert np.allclose(F.conv2d_forward(x, w, b, method="direct", **opts), expected, atol=1e-10)
    dy = np.random.default_rng(0).standard_normal(y.shape)
    dx_ref, dw_ref, db_ref = reference.conv2d_backward_kronecker(dy, x, w, **opts)
    for method in ("im2col", "direct"):
        assert np.allclose(F.conv2d_backward_data(dy, w, x.shape, method=method, **opts), dx_ref, atol=1e-10)
        dw, db = F.conv2d_backward_weights(dy, x, w.shape, method=method, **opts)
        assert np.allclose(dw, dw_ref, atol=1e-10) and np.allclose(db, db_ref, atol=1e-10)


@fuzz
@given(pool_problems())
def test_pool_fuzz_against_window_loops(problem):
    x, kernel, stride, padding = problem
    y, path = F.maxpool2d_forward(x, kernel, stride, padding)
    g = conv_geometry(x.shape[2:], kernel, kernel if stride is None else stride, padding)
    H, W = x.shape[2:]
    for i in range(g.out_h):
        for j in range(g.out_w):
            r0, c0 = i * g.sh - g.pt, j * g.sw - g.pl
            rows = slice(max(r0, 0), min(r0 + g.kh, H))
            cols = slice(max(c0, 0), min(c0 + g.kw, W))
            window = x[:, :, rows, cols]
            assert np.array_equal(y[:, :, i, j], window.max(axis=(2, 3)))
            avg = F.avgpool2d_forward(x, kernel, stride, padding)[:, :, i, j]
            assert np.allclose(avg, window.sum(axis=(2, 3)) / (g.kh * g.kw))
    assert np.array_equal(np.take_along_axis(x.reshape(*x.shape[:2], -1),
                                             path.reshape(*path.shape[:2], -1), 2).reshape(y.shape), y)
    # The max-pool backward is the adjoint of "read the winners": <dy, x[path]> = <dx, x>.
    dy = np.random.default_rng(1).standard_normal(y.shape)
    dx = F.maxpool2d_backward(dy, path, x.shape)
    assert np.isclose(np.sum(dy * y), np.sum(dx * x))


@fuzz
@given(st.integers(1, 4), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4),
       st.sampled_from(["spatial", "per_activation"]), st.integers(0, 2 ** 32 - 1))
def test_batchnorm_fuzz_against_formula(N, C, H, W, mode, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)) * 3 + 1
    shape = (C,) if mode == "spatial" else (C, H, W)
    gamma, beta = rng.standard_normal(shape), rng.standard_normal(shape)
    if N * (H * W if mode == "spatial" else 1) < 2:   # one value per statistic: no variance
        with pytest.raises(ValueError, match="more than one value"):
            F.batchnorm_forward(x, gamma, beta, mode=mode)
        return
    y, _ = F.batchnorm_forward(x, gamma, beta, mode=mode)
    axes = (0, 2, 3) if mode == "spatial" else (0,)
    bshape = (1, C, 1, 1) if mode == "spatial" else (1, C, H, W)
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    expected = gamma.reshape(bshape) * (x - mean) / np.sqrt(var + 1e-5) + beta.reshape(bshape)
    assert np.allclose(y, expected, atol=1e-10) and np.all(np.isfinite(y))


# ----------------------------------------------------- invalid input: an error

_not_an_int = st.one_of(st.floats(allow_nan=True), st.text(max_size=3), st.just(None),
                       st.just(True), st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)))
_INVALID = {
    "stride": st.one_of(st.integers(max_value=0), _not_an_int),
    "dilation": st.one_of(st.integers(max_value=0), _not_an_int),
    "kernel_size": st.one_of(st.integers(max_value=0), st.integers(min_value=6), _not_an_int),
    "padding": st.one_of(st.integers(max_value=-3), st.floats(allow_nan=True),
                         st.text(max_size=4).filter(lambda s: s not in ("same", "valid")),
                         st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2))),
    "anchor": st.one_of(st.floats(allow_nan=True), st.text(max_size=3),
                        st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2))),
}


@fuzz
@given(st.data())
def test_invalid_window_arguments_raise(data):
    """A random invalid stride, dilation, kernel size, padding or anchor: ValueError/TypeError naming it."""
    argument = data.draw(st.sampled_from(sorted(_INVALID)))
    value = data.draw(_INVALID[argument])
    x, w = np.ones((1, 2, 5, 5)), np.ones((1, 2, 3, 3))
    with pytest.raises((ValueError, TypeError)) as info:
        if argument == "kernel_size":
            F.im2col(x, value)
        else:
            F.conv2d_forward(x, w, **{argument: value})
    # A padding that crops the whole image is reported as the kernel not fitting.
    assert argument in str(info.value) or "kernel_size" in str(info.value)


@fuzz
@given(st.lists(st.integers(0, 6), min_size=0, max_size=6), st.sampled_from([
    np.float32, np.float64, np.int32, np.complex64, object]))
def test_arbitrary_shapes_and_dtypes_never_crash(shape, dtype):
    """Any shape and dtype gives a result or a ValueError/TypeError, never a crash."""
    x = np.zeros(shape, dtype=dtype)
    for call in (lambda: F.conv2d_forward(x, np.ones((2, 1, 2, 2))),
                 lambda: F.maxpool2d_forward(x, 2),
                 lambda: F.avgpool2d_forward(x, 2, 1, 1),
                 lambda: F.im2col(x, (2, 1)),
                 lambda: F.relu_forward(x),
                 lambda: F.softmax_forward(x)):
        try:
            call()
        except (ValueError, TypeError):
            pass


def test_fast_2x2_max_pool_is_not_used_when_padding_adds_a_window():
    """Regression (found by the fuzzer): 2x2/stride 2 with bottom padding on an odd height
    made a last window that the unclipped 2x2 kernel read past the plane (into the next one)."""
    x = np.arange(20.0).reshape(1, 2, 5, 2)[:, ::-1].copy()     # plane 1 holds the small values
    y, path = F.maxpool2d_forward(x, 2, padding=((0, 1), (0, 0)))
    assert y.shape == (1, 2, 3, 1)
    assert np.array_equal(y[0, :, 2, 0], [x[0, 0, 4].max(), x[0, 1, 4].max()])
    assert np.array_equal(path[0, :, 2, 0], [9, 9])


def test_max_pool_backward_rejects_out_of_range_paths():
    dy = np.ones((1, 1, 2, 2))
    for bad in (-1, 16, 2 ** 40):
        path = np.zeros((1, 1, 2, 2), dtype=np.int64)
        path[0, 0, 1, 1] = bad
        with pytest.raises(ValueError, match="path"):
            F.maxpool2d_backward(dy, path, (1, 1, 4, 4))


# ------------------------------------------------------------ large indices

@pytest.mark.slow
def test_im2col_matrix_larger_than_2_to_the_31():
    """The batch's im2col matrix would hold 2.4e9 > 2**31 elements (9.7 GB): it runs in
    blocks of the bounded workspace, and sampled outputs match the direct convolution."""
    rng = np.random.default_rng(11)
    N, C, H, W, k = 160, 4, 128, 128, 15
    x = rng.standard_normal((N, C, H, W), dtype=np.float32)
    w = rng.standard_normal((2, C, k, k), dtype=np.float32) / 30
    assert N * C * k * k * H * W > 2 ** 31
    from im2colnet.functional import conv
    # Buffers of other dtypes/roles left by earlier tests in this thread would count too.
    conv._workspace.buffers.clear()
    y = F.conv2d_forward(x, w, padding=7)
    assert conv.workspace_bytes() <= conv.WORKSPACE_BYTES + (1 << 20)
    for n in (0, 77, 159):
        expected = F.conv2d_forward(x[n:n + 1], w, padding=7, method="direct")
        assert np.allclose(y[n:n + 1], expected, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------- concurrency

def test_threads_running_kernels_at_once_match_sequential_runs():
    """Kernels release the GIL; conv workspaces are per thread, so concurrent calls agree."""
    rng = np.random.default_rng(12)
    jobs = []
    for t in range(4):
        x = rng.standard_normal((8, 6, 20, 20), dtype=np.float32)
        w = rng.standard_normal((8, 6, 3, 3), dtype=np.float32)
        jobs.append((x, w))

    def work(x, w):
        y = F.conv2d_forward(x, w, padding=1)
        dx = F.conv2d_backward_data(y, w, x.shape, padding=1)
        dw, _ = F.conv2d_backward_weights(y, x, w.shape, padding=1)
        p, path = F.maxpool2d_forward(F.relu_forward(y), 2)
        return y, dx, dw, p, path, F.maxpool2d_backward(p, path, y.shape)

    sequential = [work(*job) for job in jobs]
    results = [None] * (len(jobs) * 3)

    def run(slot):
        for _ in range(3):
            results[slot] = work(*jobs[slot % len(jobs)])

    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for slot, got in enumerate(results):
        for a, b in zip(got, sequential[slot % len(jobs)]):
            assert np.array_equal(a, b)


# ----------------------------------------------------------------- numerics

def test_softmax_cross_entropy_finite_for_huge_logits():
    for dtype in (np.float32, np.float64):
        x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [3e4, 3e4, -3e4]], dtype=dtype)
        p = F.softmax_forward(x)
        loss, dx = F.softmax_cross_entropy(x, np.array([1, 0, 2]))
        assert np.all(np.isfinite(p)) and np.isfinite(loss) and np.all(np.isfinite(dx))
        assert np.allclose(p.sum(axis=1), 1)
        assert np.isclose(loss, (2e4 + np.log(3) + 6e4 + np.log(2)) / 3, rtol=1e-5)


def test_batchnorm_batch_of_one_and_constant_inputs_stay_finite():
    gamma, beta = np.ones(2), np.zeros(2)
    for x in (np.full((1, 2, 3, 3), 5.0), np.full((4, 2, 3, 3), -2.0), np.ones((1, 2, 1, 2))):
        y, cache = F.batchnorm_forward(x, gamma, beta, mode="spatial")
        dx, dgamma, dbeta = F.batchnorm_backward(np.ones_like(x), cache)
        for arr in (y, dx, dgamma, dbeta):
            assert np.all(np.isfinite(arr))
        assert np.allclose(y, 0)   # (x - mean) = 0 everywhere; eps keeps 1/sqrt finite
    # A single value per channel has no batch statistics: a clear error, as in PyTorch.
    with pytest.raises(ValueError, match="more than one value"):
        F.batchnorm_forward(np.ones((1, 2, 1, 1)), gamma, beta, mode="spatial")
