"""ReLU forward/backward against element loops, gradient check, layouts, bad input."""
import numpy as np
import pytest

import im2colnet.functional as F
from im2colnet._kernels import relu as relu_kernels
from _gradcheck import check_directional


def naive_relu(x):
    return np.array([v if v > 0 else 0.0 for v in x.ravel()]).reshape(x.shape)


def naive_relu_backward(dy, x):
    return np.array([g if v > 0 else 0.0 for g, v in zip(dy.ravel(), x.ravel())]).reshape(x.shape)


# Shapes below and above one parallel block (65536 elements), and ragged tails.
SHAPES = [(1, 1), (3, 5), (2, 3, 4, 5), (4, 1, 7, 9), (1, 65536), (2, 3, 150, 151)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_naive_loops(shape, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    x.ravel()[::7] = 0.0  # exact zeros: the gradient there is 0
    dy = rng.standard_normal(shape).astype(dtype)
    y = F.relu_forward(x)
    dx = F.relu_backward(dy, x)
    assert y.dtype == dtype and dx.dtype == dtype and y.shape == shape
    if x.size <= 5000:
        np.testing.assert_array_equal(y, naive_relu(x))
        np.testing.assert_array_equal(dx, naive_relu_backward(dy, x))
    else:  # the naive loops are slow: compare with NumPy's expressions instead
        np.testing.assert_array_equal(y, np.where(x > 0, x, 0))
        np.testing.assert_array_equal(dx, np.where(x > 0, dy, 0))


def test_serial_and_parallel_kernels_agree():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1 << 20) + 300_001)  # 21 blocks, the last one ragged
    dy = rng.standard_normal(x.size)
    outs = []
    for parallel in (True, False):
        y, dx = np.empty_like(x), np.empty_like(x)
        relu_kernels.relu_forward(x, y, parallel)
        relu_kernels.relu_backward(dy, x, dx, parallel)
        outs.append((y, dx))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])


def test_gradient_check_away_from_zero():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 5, 6))
    x += np.sign(x) * 0.1  # |x| >= 0.1: central differences never cross the kink
    r = rng.standard_normal(x.shape)
    check_directional(lambda z: float(np.sum(r * F.relu_forward(z))), x, F.relu_backward(r, x), rng)


def test_nan_and_signed_zero():
    x = np.array([np.nan, -0.0, 0.0, -np.inf, np.inf, 2.0])
    y = F.relu_forward(x)
    assert np.isnan(y[0]) and list(y[1:]) == [0, 0, 0, np.inf, 2.0]
    np.testing.assert_array_equal(F.relu_backward(np.ones(6), x), [0, 0, 0, 0, 1, 1])


def test_any_memory_layout_gives_the_same_result():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 6, 5))
    dy = rng.standard_normal(x.shape)
    y_ref, dx_ref = F.relu_forward(x), F.relu_backward(dy, x)
    ro = x.copy()
    ro.flags.writeable = False
    for v in [np.asfortranarray(x), np.repeat(x, 2, axis=2)[:, :, ::2], ro, x.tolist()]:
        np.testing.assert_array_equal(F.relu_forward(v), y_ref)
        np.testing.assert_array_equal(F.relu_backward(np.asfortranarray(dy), v), dx_ref)
    assert F.relu_forward(x.astype(np.int64)).dtype == np.float32
    assert F.relu_forward(np.zeros((0, 3))).shape == (0, 3)


def test_bad_input():
    with pytest.raises(TypeError, match="^x:"):
        F.relu_forward(np.zeros(3, dtype=complex))
    with pytest.raises(TypeError, match="^x:"):
        F.relu_forward(np.array(["a"]))
    with pytest.raises(ValueError, match="^dy: .*\\(2, 3\\).*\\(3, 2\\)"):
        F.relu_backward(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(TypeError, match="^dy:"):
        F.relu_backward(np.zeros(3, dtype=object), np.zeros(3))


def test_against_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(4).standard_normal((4, 3, 8, 8)).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_()
    yt = torch.relu(xt)
    np.testing.assert_array_equal(F.relu_forward(x), yt.detach().numpy())
    dy = np.ones_like(x)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_array_equal(F.relu_backward(dy, x), xt.grad.numpy())
