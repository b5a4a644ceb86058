"""Linear forward and backward against explicit sums, gradient checks, layouts, bad input."""
import numpy as np
import pytest

import im2colnet.functional as F
from _gradcheck import check_directional


def naive_linear(x2, w, b):
    n, fin = x2.shape
    y = np.zeros((n, w.shape[0]))
    for i in range(n):
        for o in range(w.shape[0]):
            y[i, o] = sum(x2[i, f] * w[o, f] for f in range(fin)) + (0 if b is None else b[o])
    return y


@pytest.mark.parametrize("x_shape, fout", [((1, 5), 3), ((4, 7), 1), ((3, 2, 3, 4), 5), ((2, 1, 5, 5), 4)])
@pytest.mark.parametrize("bias", [True, False])
def test_forward_and_backward_match_explicit_sums(x_shape, fout, bias):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape)
    fin = int(np.prod(x_shape[1:]))
    w = rng.standard_normal((fout, fin))
    b = rng.standard_normal(fout) if bias else None
    x2 = x.reshape(x_shape[0], -1)
    y = F.linear_forward(x, w, b)
    np.testing.assert_allclose(y, naive_linear(x2, w, b), rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx = F.linear_backward_data(dy, w, x_shape)
    dw, db = F.linear_backward_weights(dy, x)
    assert dx.shape == x_shape and dw.shape == w.shape and db.shape == (fout,)
    dx_ref = np.array([[sum(dy[i, o] * w[o, f] for o in range(fout)) for f in range(fin)]
                       for i in range(x_shape[0])]).reshape(x_shape)
    dw_ref = np.array([[sum(dy[i, o] * x2[i, f] for i in range(x_shape[0])) for f in range(fin)]
                       for o in range(fout)])
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, [dy[:, o].sum() for o in range(fout)], rtol=1e-12)


def test_gradient_checks():
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((3, 2, 3, 3)), rng.standard_normal((4, 18)), rng.standard_normal(4)
    r = rng.standard_normal((3, 4))
    dw, db = F.linear_backward_weights(r, x)
    check_directional(lambda z: float(np.sum(r * F.linear_forward(z, w, b))), x,
                      F.linear_backward_data(r, w, x.shape), rng)
    check_directional(lambda z: float(np.sum(r * F.linear_forward(x, z, b))), w, dw, rng)
    check_directional(lambda z: float(np.sum(r * F.linear_forward(x, w, z))), b, db, rng)


def test_dtypes_and_layouts():
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((5, 6)), rng.standard_normal((3, 6)), rng.standard_normal(3)
    y = F.linear_forward(x, w, b)
    y32 = F.linear_forward(x.astype(np.float32), w, b)  # weights follow the input's dtype
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, y, rtol=1e-5, atol=1e-5)
    ro = x.copy()
    ro.flags.writeable = False
    for v in [np.asfortranarray(x), np.repeat(x, 2, axis=1)[:, ::2], ro]:
        np.testing.assert_allclose(F.linear_forward(v, np.asfortranarray(w), b), y, rtol=1e-14)
    dy = rng.standard_normal((5, 3))
    dw, db = F.linear_backward_weights(dy, x)
    dw_t, db_t = F.linear_backward_weights(np.asfortranarray(dy), np.repeat(x, 2, axis=1)[:, ::2])
    np.testing.assert_allclose(dw_t, dw, rtol=1e-14)
    assert F.linear_backward_data(dy.astype(np.float32), w, x.shape).dtype == np.float32


def test_bad_input_names_the_argument():
    x, w = np.zeros((2, 6)), np.zeros((3, 6))
    cases = [
        (lambda: F.linear_forward(np.zeros(6), w), ValueError, "x"),
        (lambda: F.linear_forward(np.zeros((0, 6)), w), ValueError, "x"),
        (lambda: F.linear_forward(x, np.zeros((3, 5))), ValueError, "w"),
        (lambda: F.linear_forward(x, w, np.zeros(4)), ValueError, "b"),
        (lambda: F.linear_forward(x.astype(complex), w), TypeError, "x"),
        (lambda: F.linear_backward_data(np.zeros((2, 4)), w, x.shape), ValueError, "w"),
        (lambda: F.linear_backward_data(np.zeros((2, 3)), w, (2, 5)), ValueError, "x_shape"),
        (lambda: F.linear_backward_data(np.zeros((0, 3)), w, (0, 6)), ValueError, "dy"),
        (lambda: F.linear_backward_weights(np.zeros((3, 3)), x), ValueError, "x"),
        (lambda: F.linear_backward_weights(np.zeros(3), x), ValueError, "dy"),
    ]
    for call, error, name in cases:
        with pytest.raises(error, match=f"^{name}:"):
            call()
