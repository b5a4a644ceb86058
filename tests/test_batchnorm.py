"""Batch norm in both modes against per-statistic loops, gradient checks, running stats, torch."""
import numpy as np
import pytest

import im2colnet.functional as F
from _gradcheck import check_directional, check_elementwise

EPS = 1e-5


def groups(x, mode):
    """Yield (index, values) per statistic: a channel (spatial) or one activation (per_activation)."""
    if x.ndim == 2:
        for f in range(x.shape[1]):
            yield (slice(None), f), x[:, f]
    elif mode == "spatial":
        for c in range(x.shape[1]):
            yield (slice(None), c), x[:, c]
    else:
        for c, i, j in np.ndindex(*x.shape[1:]):
            yield (slice(None), c, i, j), x[:, c, i, j]


def naive_bn(x, gamma, beta, mode):
    """Each statistic on its own: mean and biased variance of its values, then y = gamma xhat + beta."""
    y = np.empty_like(x)
    mean, var_unbiased = np.empty(gamma.shape), np.empty(gamma.shape)
    for k, (index, vals) in enumerate(groups(x, mode)):
        v = vals.ravel()
        m = sum(v) / v.size
        s = sum((v - m) ** 2)
        g, b = gamma.ravel()[k], beta.ravel()[k]
        y[index] = g * (vals - m) / np.sqrt(s / v.size + EPS) + b
        mean.ravel()[k], var_unbiased.ravel()[k] = m, s / (v.size - 1)
    return y, mean, var_unbiased


def param_shape(x_shape, mode):
    if len(x_shape) == 2:
        return x_shape[1:]
    return x_shape[1:2] if mode == "spatial" else x_shape[1:]


CASES = [((4, 3, 5, 6), "spatial"), ((1, 2, 3, 3), "spatial"), ((3, 5, 7, 9), "spatial"),
         ((2, 3, 1, 1), "spatial"), ((5, 2, 3, 4), "per_activation"),
         ((2, 3, 2, 2), "per_activation"), ((6, 7), "spatial"), ((3, 4), "per_activation")]


def setup(x_shape, mode, seed=0):
    rng = np.random.default_rng(seed)
    p = param_shape(x_shape, mode)
    return (rng, rng.standard_normal(x_shape) * 2 + 1, rng.standard_normal(p) + 1, rng.standard_normal(p))


@pytest.mark.parametrize("x_shape, mode", CASES)
def test_training_forward_and_running_stats_match_naive(x_shape, mode):
    rng, x, gamma, beta = setup(x_shape, mode)
    rm, rv = rng.standard_normal(gamma.shape), rng.random(gamma.shape) + 0.5
    rm0, rv0 = rm.copy(), rv.copy()
    y, _ = F.batchnorm_forward(x, gamma, beta, mode, EPS, True, rm, rv, 0.3)
    y_ref, mean, var_unbiased = naive_bn(x, gamma, beta, mode)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rm, 0.7 * rm0 + 0.3 * mean, rtol=1e-12)
    np.testing.assert_allclose(rv, 0.7 * rv0 + 0.3 * var_unbiased, rtol=1e-12)


@pytest.mark.parametrize("x_shape, mode", CASES)
def test_inference_uses_running_stats_and_leaves_them(x_shape, mode):
    rng, x, gamma, beta = setup(x_shape, mode, 1)
    rm, rv = rng.standard_normal(gamma.shape), rng.random(gamma.shape) + 0.5
    before = (rm.copy(), rv.copy())
    y, _ = F.batchnorm_forward(x, gamma, beta, mode, EPS, False, rm, rv)
    b = (1,) + gamma.shape if mode == "per_activation" or x.ndim == 2 else (1, -1, 1, 1)
    expect = gamma.reshape(b) * (x - rm.reshape(b)) / np.sqrt(rv.reshape(b) + EPS) + beta.reshape(b)
    np.testing.assert_allclose(y, expect, rtol=1e-12)
    np.testing.assert_array_equal(rm, before[0])
    np.testing.assert_array_equal(rv, before[1])


@pytest.mark.parametrize("x_shape, mode", CASES)
@pytest.mark.parametrize("training", [True, False])
def test_gradient_check_every_element(x_shape, mode, training):
    rng, x, gamma, beta = setup(x_shape, mode, 2)
    rm, rv = rng.standard_normal(gamma.shape), rng.random(gamma.shape) + 0.5
    r = rng.standard_normal(x_shape)

    def loss(x_, g_, b_):
        y, _ = F.batchnorm_forward(x_, g_, b_, mode, EPS, training,
                                   rm.copy(), rv.copy())  # copies: the check must not drift the stats
        return float(np.sum(r * y))

    _, cache = F.batchnorm_forward(x, gamma, beta, mode, EPS, training, rm.copy(), rv.copy())
    dx, dgamma, dbeta = F.batchnorm_backward(r, cache)
    assert dx.shape == x.shape and dgamma.shape == gamma.shape and dbeta.shape == beta.shape
    check_elementwise(lambda z: loss(z, gamma, beta), x, dx)
    check_elementwise(lambda z: loss(x, z, beta), gamma, dgamma)
    check_elementwise(lambda z: loss(x, gamma, z), beta, dbeta)


def test_gradient_check_larger_batch_random_direction():
    rng, x, gamma, beta = setup((8, 4, 6, 6), "spatial", 3)
    r = rng.standard_normal(x.shape)
    _, cache = F.batchnorm_forward(x, gamma, beta)
    dx, _, _ = F.batchnorm_backward(r, cache)
    check_directional(lambda z: float(np.sum(r * F.batchnorm_forward(z, gamma, beta)[0])), x, dx, rng)


def test_batch_of_one_and_constant_input_stay_finite():
    gamma, beta = np.array([2.0, 3.0]), np.array([0.5, -1.0])
    x = np.full((1, 2, 3, 3), 7.0)   # one sample, and constant: variance 0
    with np.errstate(all="raise"):
        y, cache = F.batchnorm_forward(x, gamma, beta, running_mean=np.zeros(2), running_var=np.ones(2))
        dx, dgamma, dbeta = F.batchnorm_backward(np.ones_like(x), cache)
    np.testing.assert_array_equal(y, np.broadcast_to(beta.reshape(1, 2, 1, 1), x.shape))
    assert np.all(np.isfinite(dx)) and np.all(np.abs(dx) < 1e-9)
    np.testing.assert_array_equal(dbeta, [9.0, 9.0])


def test_float32_matches_float64():
    _, x, gamma, beta = setup((4, 3, 5, 5), "spatial", 4)
    y64, c64 = F.batchnorm_forward(x, gamma, beta)
    y32, c32 = F.batchnorm_forward(x.astype(np.float32), gamma, beta)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-5)
    dy = np.random.default_rng(5).standard_normal(x.shape)
    g64, g32 = F.batchnorm_backward(dy, c64), F.batchnorm_backward(dy.astype(np.float32), c32)
    for a, b in zip(g32, g64):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_any_memory_layout_gives_the_same_result():
    _, x, gamma, beta = setup((3, 2, 4, 5), "per_activation", 6)
    y_ref, _ = F.batchnorm_forward(x, gamma, beta, "per_activation")
    ro = x.copy()
    ro.flags.writeable = False
    for v in [np.asfortranarray(x), np.repeat(x, 2, axis=3)[..., ::2], ro]:
        y, _ = F.batchnorm_forward(v, np.asfortranarray(gamma), beta, "per_activation")
        np.testing.assert_allclose(y, y_ref, rtol=1e-13, atol=1e-13)


def test_bad_input_names_the_argument():
    x, g = np.zeros((2, 3, 4, 4)), np.ones(3)
    cases = [
        (lambda: F.batchnorm_forward(x, g, g, mode="batch"), ValueError, "mode"),
        (lambda: F.batchnorm_forward(x, np.ones(4), g), ValueError, "gamma"),
        (lambda: F.batchnorm_forward(x, g, np.ones((3, 4, 4))), ValueError, "beta"),
        (lambda: F.batchnorm_forward(x, g, g, mode="per_activation"), ValueError, "gamma"),
        (lambda: F.batchnorm_forward(np.zeros((2, 3, 4)), g, g), ValueError, "x"),
        (lambda: F.batchnorm_forward(np.zeros((0, 3, 4, 4)), g, g), ValueError, "x"),
        (lambda: F.batchnorm_forward(np.zeros((1, 3)), g, g), ValueError, "x"),
        (lambda: F.batchnorm_forward(x, g, g, training=False), ValueError, "running_mean"),
        (lambda: F.batchnorm_forward(x, g, g, running_mean=np.zeros(3)), ValueError, "running_mean"),
        (lambda: F.batchnorm_forward(x, g, g, running_mean=[0.0] * 3, running_var=np.ones(3)),
         TypeError, "running_mean"),
        (lambda: F.batchnorm_forward(x, g, g, running_mean=np.zeros(3), running_var=np.ones(4)),
         ValueError, "running_var"),
        (lambda: F.batchnorm_forward(x, g, g, eps=0), ValueError, "eps"),
        (lambda: F.batchnorm_forward(x, g, g, momentum=1.5), ValueError, "momentum"),
        (lambda: F.batchnorm_forward(x.astype(complex), g, g), TypeError, "x"),
        (lambda: F.batchnorm_backward(np.zeros((2, 3, 4, 4)), None), TypeError, "cache"),
        (lambda: F.batchnorm_backward(np.zeros((2, 3, 4, 5)), F.batchnorm_forward(x, g, g)[1]),
         ValueError, "dy"),
    ]
    for call, error, name in cases:
        with pytest.raises(error, match=f"^{name}"):
            call()


@pytest.mark.parametrize("mode", ["spatial", "per_activation"])
def test_against_torch(mode):
    torch = pytest.importorskip("torch")
    rng, x, gamma, beta = setup((6, 3, 4, 5), mode, 7)
    rm, rv = np.zeros(gamma.shape), np.ones(gamma.shape)
    y, cache = F.batchnorm_forward(x, gamma, beta, mode, EPS, True, rm, rv, 0.1)
    dy = rng.standard_normal(x.shape)
    dx, dgamma, dbeta = F.batchnorm_backward(dy, cache)
    # per_activation is BatchNorm1d over the C*H*W flattened activations
    shape = x.shape if mode == "spatial" else (x.shape[0], -1)
    xt = torch.from_numpy(x).reshape(shape).requires_grad_()
    gt = torch.from_numpy(gamma).reshape(-1).requires_grad_()
    bt = torch.from_numpy(beta).reshape(-1).requires_grad_()
    trm, trv = torch.zeros(gt.shape, dtype=torch.float64), torch.ones(gt.shape, dtype=torch.float64)
    yt = torch.nn.functional.batch_norm(xt, trm, trv, gt, bt, True, 0.1, EPS)
    yt.backward(torch.from_numpy(dy).reshape(shape))
    np.testing.assert_allclose(y.reshape(yt.shape), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rm.ravel(), trm.numpy(), rtol=1e-12)
    np.testing.assert_allclose(rv.ravel(), trv.numpy(), rtol=1e-12)
    np.testing.assert_allclose(dx.reshape(xt.shape), xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(dgamma.ravel(), gt.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(dbeta.ravel(), bt.grad.numpy(), rtol=1e-10)


def test_spatial_kernel_threads_agree_with_one_thread_and_numpy():
    """With parallel=True the spatial kernel runs its channels on threads: the same
    numbers as one thread, and NumPy's expressions of the formulas agree."""
    from im2colnet._kernels import batchnorm as bn_kernels
    rng = np.random.default_rng(3)
    x = rng.standard_normal((16, 8, 90, 91)) * 3 + 5
    dy = rng.standard_normal(x.shape)
    gamma, beta = rng.standard_normal(8), rng.standard_normal(8)
    x3, dy3 = x.reshape(16, 8, -1), dy.reshape(16, 8, -1)
    outs = []
    for parallel in (True, False):
        mean, var = np.empty(8), np.empty(8)
        xhat, y, inv_std = np.empty_like(x3), np.empty_like(x3), np.empty(8)
        bn_kernels.forward(x3, gamma, beta, mean, var, EPS, True, xhat, y, inv_std, parallel)
        dx, dgamma, dbeta = np.empty_like(x3), np.empty(8), np.empty(8)
        bn_kernels.backward(dy3, xhat, gamma, inv_std, True, dx, dgamma, dbeta, parallel)
        outs.append((mean, var, y, dx, dgamma, dbeta))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
    mean, var, y, dx, dgamma, dbeta = outs[0]
    m = x.mean(axis=(0, 2, 3), keepdims=True)
    v = x.var(axis=(0, 2, 3), keepdims=True)
    xhat_ref = (x - m) / np.sqrt(v + EPS)
    np.testing.assert_allclose(mean, m.ravel(), rtol=1e-12)
    np.testing.assert_allclose(var, v.ravel(), rtol=1e-12)
    np.testing.assert_allclose(y.reshape(x.shape), gamma[:, None, None] * xhat_ref + beta[:, None, None],
                               rtol=1e-10, atol=1e-10)
    M = x.size // 8
    db_ref = dy.sum(axis=(0, 2, 3))
    dg_ref = (dy * xhat_ref).sum(axis=(0, 2, 3))
    dx_ref = (gamma / np.sqrt(v.ravel() + EPS) / M)[:, None, None] * (
        M * dy - db_ref[:, None, None] - xhat_ref * dg_ref[:, None, None])
    np.testing.assert_allclose(dbeta, db_ref, rtol=1e-10)
    np.testing.assert_allclose(dgamma, dg_ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(dx.reshape(x.shape), dx_ref, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("length", [1, 2, 7, 15, 16, 17, 31, 33, 49])
def test_spatial_kernel_slices_of_every_length(length, dtype):
    """The kernel's slice loops (16 double lanes, then the values left over) on slices of
    every length around the lane count: statistics, y and the gradients against NumPy in
    float64. In float64 the mean is 10^4 standard deviations (Chan's combination of the
    slices' two-pass sums keeps the variance exact there); float32's element-wise steps
    would lose that much to rounding (x * inv_std - mean * inv_std), so 5 there."""
    from im2colnet._kernels import batchnorm as bn_kernels
    rng = np.random.default_rng(length)
    N, C = 5, 3
    x = (rng.standard_normal((N, C, length)) + (1e4 if dtype == np.float64 else 5.0)).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    gamma, beta = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
    mean, var = np.empty(C), np.empty(C)
    xhat, y, inv_std = np.empty_like(x), np.empty_like(x), np.empty(C, dtype)
    bn_kernels.forward(x, gamma, beta, mean, var, EPS, True, xhat, y, inv_std, False)
    dx, dgamma, dbeta = np.empty_like(x), np.empty(C, dtype), np.empty(C, dtype)
    bn_kernels.backward(dy, xhat, gamma, inv_std, True, dx, dgamma, dbeta, False)

    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    m = x64.mean(axis=(0, 2))
    v = ((x64 - m[:, None]) ** 2).mean(axis=(0, 2))
    np.testing.assert_allclose(mean, m, rtol=1e-14)
    np.testing.assert_allclose(var, v, rtol=1e-9)
    xhat_ref = (x64 - m[:, None]) / np.sqrt(v[:, None] + EPS)
    tol = dict(rtol=1e-4, atol=1e-3) if dtype == np.float32 else dict(rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(y, gamma[:, None] * xhat_ref + beta[:, None], **tol)
    # the backward's sums, on the kernel's own xhat
    xh64 = xhat.astype(np.float64)
    np.testing.assert_allclose(dbeta, dy64.sum(axis=(0, 2)), rtol=1e-6 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(dgamma, (dy64 * xh64).sum(axis=(0, 2)),
                               rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)
    M = N * length
    dx_ref = (gamma.astype(np.float64) * inv_std.astype(np.float64) / M)[:, None] * (
        M * dy64 - dy64.sum(axis=(0, 2))[:, None] - xh64 * (dy64 * xh64).sum(axis=(0, 2))[:, None])
    np.testing.assert_allclose(dx, dx_ref, **tol)
