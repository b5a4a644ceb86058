"""Max and average pooling against naive loops, gradient checks, torch, bad input."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import im2colnet.functional as F
from im2colnet._kernels import pool as pool_kernels
from _gradcheck import check_directional

# (x shape, kernel_size, stride, padding): tiling, overlapping, gapped windows,
# non-square kernels and strides, every padding form, N = 1..4.
CASES = [
    ((1, 1, 4, 4), 2, None, 0),
    ((2, 3, 7, 7), 2, None, 0),             # odd size: the last row/column is dropped
    ((3, 2, 6, 8), 3, 1, 0),                # overlapping
    ((2, 2, 9, 9), 2, 3, 0),                # gaps between windows
    ((4, 1, 5, 7), (2, 3), (1, 2), 0),      # non-square kernel and stride
    ((1, 2, 6, 6), 3, 2, 1),                # padding, overlapping
    ((2, 1, 5, 6), (3, 2), 1, (1, 0)),      # (ph, pw) padding
    ((1, 2, 7, 5), 3, 2, ((2, 0), (1, 2))), # per-side padding
    ((2, 2, 8, 8), 4, 2, "same"),
    ((1, 1, 9, 9), 3, 3, ((-1, 0), (0, -2))),  # negative padding crops
    ((2, 2, 1, 1), 1, None, 0),
]


def naive_maxpool(x, kernel_size, stride, padding):
    """Python loops over an explicitly -inf-padded copy; np.argmax picks the first maximum."""
    g = F.pool._geometry(x.shape[2:], kernel_size, stride, padding)
    N, C, H, W = x.shape
    big = np.full((N, C, H + 4 * g.kh, W + 4 * g.kw), -np.inf)
    oh, ow = 2 * g.kh, 2 * g.kw  # where the image sits inside big
    big[:, :, oh:oh + H, ow:ow + W] = x
    y = np.empty((N, C, g.out_h, g.out_w))
    path = np.empty((N, C, g.out_h, g.out_w), dtype=np.int64)
    for n in range(N):
        for c in range(C):
            for i in range(g.out_h):
                for j in range(g.out_w):
                    r0, c0 = oh + i * g.sh - g.pt, ow + j * g.sw - g.pl
                    window = big[n, c, r0:r0 + g.kh, c0:c0 + g.kw]
                    p, q = divmod(int(np.argmax(window)), g.kw)
                    y[n, c, i, j] = window[p, q]
                    r, s = r0 + p - oh, c0 + q - ow
                    assert 0 <= r < H and 0 <= s < W
                    path[n, c, i, j] = r * W + s
    return y, path


def naive_avgpool(x, kernel_size, stride, padding):
    g = F.pool._geometry(x.shape[2:], kernel_size, stride, padding)
    N, C, H, W = x.shape
    big = np.zeros((N, C, H + 4 * g.kh, W + 4 * g.kw))
    oh, ow = 2 * g.kh, 2 * g.kw
    big[:, :, oh:oh + H, ow:ow + W] = x
    y = np.empty((N, C, g.out_h, g.out_w))
    for i in range(g.out_h):
        for j in range(g.out_w):
            r0, c0 = oh + i * g.sh - g.pt, ow + j * g.sw - g.pl
            y[:, :, i, j] = big[:, :, r0:r0 + g.kh, c0:c0 + g.kw].sum(axis=(2, 3)) / (g.kh * g.kw)
    return y


def naive_scatter(dy, path, x_shape):
    dx = np.zeros(x_shape)
    N, C, H, W = x_shape
    for n in range(N):
        for c in range(C):
            for o, p in zip(dy[n, c].ravel(), path[n, c].ravel()):
                dx[n, c, p // W, p % W] += o
    return dx


def tie_free(shape, rng):
    """A shuffled linspace: all values distinct and at least 1/size apart (no kinks)."""
    return rng.permutation(np.linspace(-1, 1, int(np.prod(shape)))).reshape(shape)


@pytest.mark.parametrize("shape, k, s, p", CASES)
def test_maxpool_forward_matches_naive_with_ties(shape, k, s, p):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=shape).astype(np.float64)  # many ties
    y, path = F.maxpool2d_forward(x, k, s, p)
    y_ref, path_ref = naive_maxpool(x, k, s, p)
    assert path.dtype == np.int64 and path.shape == y.shape
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(path, path_ref)


@pytest.mark.parametrize("shape, k, s, p", CASES)
def test_maxpool_backward_matches_naive_scatter(shape, k, s, p):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, size=shape).astype(np.float64)
    y, path = F.maxpool2d_forward(x, k, s, p)
    dy = rng.standard_normal(y.shape)
    np.testing.assert_allclose(F.maxpool2d_backward(dy, path, shape),
                               naive_scatter(dy, path, shape), rtol=1e-12, atol=1e-12)


def test_maxpool_ties_worked_example():
    x = np.array([[[[1., 5., 5., 0.],
                    [5., 2., 1., 5.],
                    [3., 3., 7., 7.],
                    [3., 3., 7., 7.]]]])
    y, path = F.maxpool2d_forward(x, 2)
    np.testing.assert_array_equal(y[0, 0], [[5, 5], [3, 7]])
    # first maximum in row-major window order: (0,1), (0,2), (2,0), (2,2)
    np.testing.assert_array_equal(path[0, 0], [[1, 2], [8, 10]])


def test_overlapping_windows_sum_at_a_shared_winner():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 2] = 9.0  # the maximum of all four 3x3 windows (stride 1)
    x[0, 0, 3, 0] = -1.0
    y, path = F.maxpool2d_forward(x, 3, 1)
    np.testing.assert_array_equal(path, np.full((1, 1, 2, 2), 1 * 4 + 2))
    dy = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    dx = F.maxpool2d_backward(dy, path, x.shape)
    assert dx[0, 0, 1, 2] == 10.0 and np.count_nonzero(dx) == 1


def test_padding_never_wins_and_nan_propagates():
    x = np.full((1, 1, 3, 3), -np.inf)
    y, path = F.maxpool2d_forward(x, 2, 2, 1)
    assert np.all(np.isneginf(y))
    np.testing.assert_array_equal(path[0, 0], [[0, 1], [3, 4]])  # the first image cell
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = np.nan
    x[0, 0, 3, 3] = np.nan
    for specialise in (True, False):
        y = np.empty((1, 1, 2, 2))
        path = np.empty((1, 1, 2, 2), dtype=np.int64)
        pool_kernels.maxpool_forward(x, y, path, 2, 2, 2, 2, 0, 0, specialise)
        assert np.isnan(y[0, 0, 0, 0]) and path[0, 0, 0, 0] == 1
        assert np.isnan(y[0, 0, 1, 1]) and path[0, 0, 1, 1] == 15
        np.testing.assert_array_equal(y[0, 0, [0, 1], [1, 0]], [7.0, 13.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_2x2_fast_path_equals_general_kernel(dtype):
    rng = np.random.default_rng(2)
    # rows wider than one chunk of the 2x2 kernel (256 outputs), odd sizes
    for shape in [(3, 4, 8, 8), (2, 3, 7, 9), (1, 1, 2, 2), (1, 2, 5, 2 * 300 + 1)]:
        x = rng.integers(-2, 2, size=shape).astype(dtype)  # ties everywhere
        for value in (np.nan, np.inf, -np.inf):  # windows the fast kernel redoes exactly
            x[rng.random(shape) < 0.03] = value
        outs = []
        for specialise in (True, False):
            y = np.empty(shape[:2] + (shape[2] // 2, shape[3] // 2), dtype)
            path = np.empty(y.shape, np.int64)
            pool_kernels.maxpool_forward(x, y, path, 2, 2, 2, 2, 0, 0, specialise)
            outs.append((y, path))
        np.testing.assert_array_equal(outs[0][0], outs[1][0])
        np.testing.assert_array_equal(outs[0][1], outs[1][1])


def test_serial_and_parallel_max_pooling_agree():
    """With parallel=True the kernels run their planes on threads: the same numbers, and
    the scatter counts the out-of-range indices it skipped."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 16, 64, 66))
    outs = []
    for parallel in (True, False):
        for kernel, stride in ((2, 2), (3, 2)):
            g = F.pool._geometry(x.shape[2:], kernel, stride, 0)
            y = np.empty(x.shape[:2] + (g.out_h, g.out_w))
            path = np.empty(y.shape, np.int64)
            pool_kernels.maxpool_forward(x, y, path, kernel, kernel, stride, stride, 0, 0, True, parallel)
            path_planes = path.reshape(128, -1).copy()
            path_planes[7, 3] = -1
            path_planes[100, 0] = 64 * 66
            dx = np.empty((128, 64 * 66))
            bad = pool_kernels.maxpool_backward(y.reshape(128, -1), path_planes, dx, parallel)
            outs.append((y, path, dx, bad))
    for a, b in zip(outs[:2], outs[2:]):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
    assert outs[0][3] == 2


@pytest.mark.parametrize("shape, k, s, p", CASES[:9])
def test_maxpool_gradient_check(shape, k, s, p):
    rng = np.random.default_rng(3)
    x = tie_free(shape, rng)
    y, path = F.maxpool2d_forward(x, k, s, p)
    r = rng.standard_normal(y.shape)
    dx = F.maxpool2d_backward(r, path, shape)
    check_directional(lambda z: float(np.sum(r * F.maxpool2d_forward(z, k, s, p)[0])), x, dx, rng)


@pytest.mark.parametrize("shape, k, s, p", CASES)
def test_avgpool_forward_matches_naive(shape, k, s, p):
    x = np.random.default_rng(4).standard_normal(shape)
    np.testing.assert_allclose(F.avgpool2d_forward(x, k, s, p), naive_avgpool(x, k, s, p),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape, k, s, p", CASES)
def test_avgpool_backward_is_the_adjoint_and_passes_gradient_check(shape, k, s, p):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape)
    y = F.avgpool2d_forward(x, k, s, p)
    dy = rng.standard_normal(y.shape)
    dx = F.avgpool2d_backward(dy, shape, k, s, p)
    assert dx.shape == shape
    np.testing.assert_allclose(np.vdot(y, dy), np.vdot(x, dx), rtol=1e-12)
    check_directional(lambda z: float(np.sum(dy * F.avgpool2d_forward(z, k, s, p))), x, dx, rng)


def test_avgpool_padding_counts_in_the_divisor():
    y = F.avgpool2d_forward(np.ones((1, 1, 2, 2)), 2, 2, 1)
    np.testing.assert_array_equal(y[0, 0], [[0.25, 0.25], [0.25, 0.25]])


@pytest.mark.parametrize("op", ["max", "avg"])
def test_float32_matches_float64_and_keeps_dtype(op):
    rng = np.random.default_rng(6)
    x = tie_free((2, 3, 9, 8), rng)
    if op == "max":
        fwd = lambda z: F.maxpool2d_forward(z, 3, 2, 1)  # noqa: E731
        y64, path64 = fwd(x)
        y32, path32 = fwd(x.astype(np.float32))
        np.testing.assert_array_equal(path32, path64)
        dx32 = F.maxpool2d_backward(y32, path32, x.shape)
    else:
        y64 = F.avgpool2d_forward(x, 3, 2, 1)
        y32 = F.avgpool2d_forward(x.astype(np.float32), 3, 2, 1)
        dx32 = F.avgpool2d_backward(y32, x.shape, 3, 2, 1)
    assert y32.dtype == np.float32 and dx32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=1e-5, atol=1e-6)


def test_any_memory_layout_gives_the_same_result():
    rng = np.random.default_rng(7)
    base = tie_free((2, 3, 8, 10), rng)
    y_ref, path_ref = F.maxpool2d_forward(base, 2)
    avg_ref = F.avgpool2d_forward(base, 3, 1, 1)
    readonly = base.copy()
    readonly.flags.writeable = False
    variants = [np.asfortranarray(base), base.transpose(1, 0, 2, 3).copy().transpose(1, 0, 2, 3),
                np.repeat(base, 2, axis=3)[..., ::2], readonly, base.tolist()]
    for v in variants:
        y, path = F.maxpool2d_forward(v, 2)
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(path, path_ref)
        np.testing.assert_array_equal(F.avgpool2d_forward(v, 3, 1, 1), avg_ref)
    dy = rng.standard_normal(y_ref.shape)
    dx_ref = F.maxpool2d_backward(dy, path_ref, base.shape)
    np.testing.assert_array_equal(F.maxpool2d_backward(np.asfortranarray(dy), np.asfortranarray(path_ref),
                                                       base.shape), dx_ref)
    path_ro = path_ref.astype(np.int32)
    path_ro.flags.writeable = False
    np.testing.assert_array_equal(F.maxpool2d_backward(dy, path_ro, base.shape), dx_ref)
    dya = rng.standard_normal(avg_ref.shape)
    np.testing.assert_array_equal(F.avgpool2d_backward(np.asfortranarray(dya), base.shape, 3, 1, 1),
                                  F.avgpool2d_backward(dya, base.shape, 3, 1, 1))


def test_bad_input_messages_name_the_argument():
    x = np.zeros((2, 3, 6, 6))
    bad = [
        (lambda: F.maxpool2d_forward(np.zeros((3, 6, 6)), 2), ValueError, "x"),
        (lambda: F.maxpool2d_forward(np.zeros((0, 3, 6, 6)), 2), ValueError, "x: .*empty"),
        (lambda: F.avgpool2d_forward(np.zeros((0, 3, 6, 6)), 2), ValueError, "x: .*empty"),
        (lambda: F.maxpool2d_forward(x.astype(complex), 2), TypeError, "x"),
        (lambda: F.maxpool2d_forward(x, 0), ValueError, "kernel_size"),
        (lambda: F.maxpool2d_forward(x, 2, 0), ValueError, "stride"),
        (lambda: F.maxpool2d_forward(x, 7), ValueError, "kernel_size"),
        (lambda: F.maxpool2d_forward(x, 2, 2, 2), ValueError, "padding"),
        (lambda: F.maxpool2d_forward(x, 3, 1, ((0, 3), (0, 0))), ValueError, "padding"),
        (lambda: F.maxpool2d_forward(x, 2, 2, "full"), ValueError, "padding"),
        (lambda: F.avgpool2d_forward(x, (2, 2, 2)), ValueError, "kernel_size"),
        (lambda: F.maxpool2d_backward(np.zeros((2, 3, 3, 3)), np.zeros((2, 3, 3, 3), int), (2, 3, 6)),
         ValueError, "x_shape"),
        (lambda: F.maxpool2d_backward(np.zeros((2, 3, 3, 3)), np.zeros((2, 3, 3, 2), int), x.shape),
         ValueError, "path"),
        (lambda: F.maxpool2d_backward(np.zeros((2, 3, 3, 3)), np.zeros((2, 3, 3, 3)), x.shape),
         TypeError, "path"),
        (lambda: F.maxpool2d_backward(np.zeros((2, 3, 3, 3)), np.full((2, 3, 3, 3), 36), x.shape),
         ValueError, "path"),
        (lambda: F.maxpool2d_backward(np.zeros((2, 3, 3, 3)), np.full((2, 3, 3, 3), -1), x.shape),
         ValueError, "path"),
        (lambda: F.maxpool2d_backward(np.zeros((2, 4, 3, 3)), np.zeros((2, 4, 3, 3), int), x.shape),
         ValueError, "dy"),
        (lambda: F.avgpool2d_backward(np.zeros((2, 3, 2, 2)), x.shape, 2), ValueError, "dy"),
        (lambda: F.avgpool2d_backward(np.zeros((2, 3, 3, 3)), (0, 3, 6, 6), 2), ValueError, "x_shape"),
    ]
    for call, error, pattern in bad:
        with pytest.raises(error, match="^" + pattern):
            call()


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       kh=st.integers(1, 4), kw=st.integers(1, 4), sh=st.integers(1, 4), sw=st.integers(1, 4),
       pads=st.tuples(*[st.integers(0, 3)] * 4), seed=st.integers(0, 2**16))
def test_maxpool_and_avgpool_match_naive_on_random_geometry(n, c, h, w, kh, kw, sh, sw, pads, seed):
    pt, pb, pl, pr = (min(p, k - 1) for p, k in zip(pads, (kh, kh, kw, kw)))
    padding = ((pt, pb), (pl, pr))
    if h + pt + pb < kh or w + pl + pr < kw:
        with pytest.raises(ValueError, match="kernel_size"):
            F.maxpool2d_forward(np.zeros((n, c, h, w)), (kh, kw), (sh, sw), padding)
        return
    x = np.random.default_rng(seed).integers(0, 4, size=(n, c, h, w)).astype(np.float64)
    y, path = F.maxpool2d_forward(x, (kh, kw), (sh, sw), padding)
    y_ref, path_ref = naive_maxpool(x, (kh, kw), (sh, sw), padding)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(path, path_ref)
    np.testing.assert_allclose(F.avgpool2d_forward(x, (kh, kw), (sh, sw), padding),
                               naive_avgpool(x, (kh, kw), (sh, sw), padding), atol=1e-12)


@pytest.mark.parametrize("k, s, p", [(2, None, 0), (3, 1, 1), (3, 2, 1), ((2, 3), (2, 1), (1, 1)), (2, 3, 0)])
def test_against_torch(k, s, p):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    x = tie_free((3, 4, 9, 11), rng)
    y, path = F.maxpool2d_forward(x, k, s, p)
    ty, tpath = torch.nn.functional.max_pool2d(torch.from_numpy(x), k, s, p, return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(path, tpath.numpy())
    xt = torch.from_numpy(x).requires_grad_()
    ya = torch.nn.functional.avg_pool2d(xt, k, s, p, count_include_pad=True)
    np.testing.assert_allclose(F.avgpool2d_forward(x, k, s, p), ya.detach().numpy(), rtol=1e-12)
    dy = rng.standard_normal(y.shape)
    ya.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(F.avgpool2d_backward(dy, x.shape, k, s, p), xt.grad.numpy(), rtol=1e-12)
    xt.grad = None
    torch.nn.functional.max_pool2d(xt, k, s, p).backward(torch.from_numpy(dy))
    np.testing.assert_allclose(F.maxpool2d_backward(dy, path, x.shape), xt.grad.numpy(), rtol=1e-12)
