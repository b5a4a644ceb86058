"""Softmax and fused cross-entropy against explicit formulas, gradient checks, labels, torch."""
import math

import numpy as np
import pytest

import im2colnet.functional as F
from _gradcheck import check_elementwise


def naive_softmax(x2):
    """exp(x) / sum exp(x) per row, term by term (fine for moderate logits)."""
    out = np.empty_like(x2, dtype=np.float64)
    for n, row in enumerate(x2):
        e = [math.exp(v) for v in row]
        out[n] = [v / sum(e) for v in e]
    return out


def naive_cross_entropy(x2, z):
    p = naive_softmax(x2)
    return -sum(z[n, k] * math.log(p[n, k]) for n in range(len(x2)) for k in range(x2.shape[1])
                if z[n, k] > 0) / len(x2)


def one_hot(labels, k):
    z = np.zeros((len(labels), k))
    z[np.arange(len(labels)), labels] = 1
    return z


@pytest.mark.parametrize("shape", [(1, 1), (1, 10), (4, 3), (3, 2, 2, 3)])
def test_softmax_matches_naive(shape):
    x = np.random.default_rng(0).standard_normal(shape) * 3
    p = F.softmax_forward(x)
    assert p.shape == shape
    np.testing.assert_allclose(p.reshape(shape[0], -1), naive_softmax(x.reshape(shape[0], -1)), rtol=1e-12)


@pytest.mark.parametrize("shape", [(1, 4), (5, 3), (3, 2, 2, 2)])
def test_cross_entropy_hard_and_soft_labels(shape):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape) * 2
    n, k = shape[0], int(np.prod(shape[1:]))
    labels = rng.integers(0, k, n)
    loss, dx = F.softmax_cross_entropy(x, labels)
    x2 = x.reshape(n, k)
    z = one_hot(labels, k)
    assert isinstance(loss, float) and dx.shape == shape
    assert abs(loss - naive_cross_entropy(x2, z)) < 1e-12 * max(1, loss)
    np.testing.assert_allclose(dx.reshape(n, k), (naive_softmax(x2) - z) / n, rtol=1e-12, atol=1e-15)
    # one-hot soft labels are the same thing
    loss_soft, dx_soft = F.softmax_cross_entropy(x, z)
    assert abs(loss_soft - loss) < 1e-12
    np.testing.assert_allclose(dx_soft, dx, rtol=1e-12, atol=1e-15)
    # general soft labels
    soft = rng.random((n, k))
    soft /= soft.sum(axis=1, keepdims=True)
    loss, dx = F.softmax_cross_entropy(x, soft)
    assert abs(loss - naive_cross_entropy(x2, soft)) < 1e-12 * max(1, loss)
    np.testing.assert_allclose(dx.reshape(n, k), (naive_softmax(x2) - soft) / n, rtol=1e-12, atol=1e-15)


def test_gradient_check_hard_and_soft():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 5))
    labels = np.array([0, 4, 2, 2])
    soft = rng.random((4, 5))
    soft /= soft.sum(axis=1, keepdims=True)
    for target in (labels, soft):
        _, dx = F.softmax_cross_entropy(x, target)
        check_elementwise(lambda z: F.softmax_cross_entropy(z, target)[0], x, dx)


def test_large_logits_stay_finite():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 6))
    labels = np.array([1, 5, 0])
    base_loss, base_dx = F.softmax_cross_entropy(x, labels)
    # shifting the logits by a constant changes nothing, even by 1e4
    for dtype in (np.float64, np.float32):
        loss, dx = F.softmax_cross_entropy((x + 1e4).astype(dtype), labels)
        tol = 1e-9 if dtype == np.float64 else 2e-3
        assert abs(loss - base_loss) < tol
        np.testing.assert_allclose(dx, base_dx, atol=tol)
    big = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]])
    loss, dx = F.softmax_cross_entropy(big, np.array([1, 0]))
    assert np.isfinite(loss) and np.all(np.isfinite(dx))
    assert abs(loss - (2e4 + (2e4 + math.log(2))) / 2) < 1e-9
    p = F.softmax_forward(big.astype(np.float32))
    assert p.dtype == np.float32 and np.all(np.isfinite(p))
    np.testing.assert_allclose(p[1], [0, 0.5, 0.5])


def test_float32_matches_float64_and_layouts():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 7))
    labels = rng.integers(0, 7, 4)
    loss, dx = F.softmax_cross_entropy(x, labels)
    loss32, dx32 = F.softmax_cross_entropy(x.astype(np.float32), labels.astype(np.int32))
    assert dx32.dtype == np.float32 and abs(loss32 - loss) < 1e-5
    np.testing.assert_allclose(dx32, dx, atol=1e-6)
    ro = x.copy()
    ro.flags.writeable = False
    for v in [np.asfortranarray(x), np.repeat(x, 2, axis=1)[:, ::2], ro]:
        l2, d2 = F.softmax_cross_entropy(v, labels.astype(float))  # whole-number floats are fine
        assert abs(l2 - loss) < 1e-14
        np.testing.assert_allclose(d2, dx, rtol=1e-14)
        np.testing.assert_allclose(F.softmax_forward(v), F.softmax_forward(x), rtol=1e-14)


def test_bad_targets_and_inputs():
    x = np.zeros((2, 3))
    cases = [
        (lambda: F.softmax_cross_entropy(x, [0, 3]), ValueError, "target"),
        (lambda: F.softmax_cross_entropy(x, [0, -1]), ValueError, "target"),
        (lambda: F.softmax_cross_entropy(x, [0.5, 1.0]), ValueError, "target"),
        (lambda: F.softmax_cross_entropy(x, [0, 1, 2]), ValueError, "target"),
        (lambda: F.softmax_cross_entropy(x, ["a", "b"]), TypeError, "target"),
        (lambda: F.softmax_cross_entropy(x, [[0.5, 0.5, 0.1], [1, 0, 0]]), ValueError, "target"),
        (lambda: F.softmax_cross_entropy(x, [[1.5, -0.5, 0], [1, 0, 0]]), ValueError, "target"),
        (lambda: F.softmax_cross_entropy(x, [[0.5, 0.5], [1, 0]]), ValueError, "target"),
        (lambda: F.softmax_cross_entropy(x, np.zeros((2, 3, 1, 1))), ValueError, "target"),
        (lambda: F.softmax_cross_entropy(np.zeros((0, 3)), np.zeros(0, int)), ValueError, "x"),
        (lambda: F.softmax_cross_entropy(np.zeros(3), [0]), ValueError, "x"),
        (lambda: F.softmax_forward(np.zeros((0, 3))), ValueError, "x"),
        (lambda: F.softmax_forward(np.zeros(3, dtype=complex)), TypeError, "x"),
    ]
    for call, error, name in cases:
        with pytest.raises(error, match=f"^{name}:"):
            call()
    # soft labels within 1e-6 of summing to one are accepted
    F.softmax_cross_entropy(x, [[0.5, 0.5 + 5e-7, 0], [1, 0, 0]])


def test_against_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 10)) * 4
    labels = rng.integers(0, 10, 6)
    soft = rng.random((6, 10))
    soft /= soft.sum(axis=1, keepdims=True)
    for target, tt in ((labels, torch.from_numpy(labels)), (soft, torch.from_numpy(soft))):
        xt = torch.from_numpy(x).requires_grad_()
        lt = torch.nn.functional.cross_entropy(xt, tt)
        lt.backward()
        loss, dx = F.softmax_cross_entropy(x, target)
        assert abs(loss - lt.item()) < 1e-12
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(F.softmax_forward(x), torch.softmax(torch.from_numpy(x), 1).numpy(), rtol=1e-12)


def test_softmax_backward_is_the_explicit_jacobian():
    """F.softmax_backward(dy, p) = (diag(p) - p p^T) dy per sample, for images too; bad shapes refused."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 2, 2, 2))
    dy = rng.standard_normal(x.shape)
    p = F.softmax_forward(x)
    dx = F.softmax_backward(dy, p)
    for n in range(3):
        pn = p[n].ravel()
        jac = np.diag(pn) - np.outer(pn, pn)
        np.testing.assert_allclose(dx[n].ravel(), jac @ dy[n].ravel(), rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="does not match p's shape"):
        F.softmax_backward(dy[:2], p)
