"""LeakyReLU (Cython loop), LogSoftmax and NLLLoss against their formulas, float64 finite
differences, PyTorch where installed; bad input."""
import numpy as np
import pytest

import im2colnet as inn
import im2colnet.functional as F
from im2colnet.losses import CrossEntropyLoss, NLLLoss, get_loss
from _gradcheck import check_directional, check_layer_gradients


@pytest.mark.parametrize("slope", [0.01, 0.2, 0.0, -0.5, 1.5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_leaky_relu_matches_the_formula(slope, dtype):
    rng = np.random.default_rng(0)
    # more than one parallel block (65,536 elements), zeros and a NaN included
    x = rng.standard_normal((3, 5, 80, 70)).astype(dtype)
    x[0, 0, 0, :5] = 0
    x[1, 1, 1, 1] = np.nan
    y = F.leaky_relu_forward(x, slope)
    assert y.dtype == dtype and y.shape == x.shape
    expected = np.where(x > 0, x, x * dtype(slope))
    np.testing.assert_array_equal(y, expected)
    dy = rng.standard_normal(x.shape).astype(dtype)
    dx = F.leaky_relu_backward(dy, x, slope)
    np.testing.assert_array_equal(dx, np.where(x > 0, dy, dy * dtype(slope)))
    assert np.all(dx[0, 0, 0, :5] == dy[0, 0, 0, :5] * dtype(slope))   # the slope at x == 0


def test_leaky_relu_any_layout_and_default_slope():
    x = np.arange(-6.0, 6.0).reshape(3, 4)
    np.testing.assert_array_equal(F.leaky_relu_forward(x.T), np.where(x.T > 0, x.T, 0.01 * x.T))
    np.testing.assert_array_equal(F.leaky_relu_forward(x.tolist()), F.leaky_relu_forward(x))


@pytest.mark.parametrize("slope", [0.1, -0.3])
def test_leaky_relu_layer_gradient_check(slope):
    rng = np.random.default_rng(1)
    layer = inn.LeakyReLU(slope).astype(np.float64)
    x = rng.permutation(np.linspace(-1, 1, 60)).reshape(2, 3, 10)   # no zero: away from the kink
    check_layer_gradients(layer, x + np.sign(x) * 0.01, rng)
    assert inn.LeakyReLU.from_config(layer.get_config()).negative_slope == slope
    assert repr(inn.LeakyReLU()) == "LeakyReLU()" and repr(layer) == f"LeakyReLU(negative_slope={slope})"


def test_log_softmax_matches_the_formula_and_passes_gradient_check():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3, 2, 2)) * 5
    logp = F.log_softmax_forward(x)
    x2 = x.reshape(4, -1)
    expected = x2 - np.log(np.exp(x2).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(logp.reshape(4, -1), expected, rtol=1e-12, atol=1e-12)
    big = F.log_softmax_forward(np.array([[1e4, 0.0, -1e4]], dtype=np.float32))
    assert np.all(np.isfinite(big[0, :2])) and big[0, 0] == 0
    check_layer_gradients(inn.LogSoftmax().astype(np.float64), x, rng)


def test_nll_loss_after_log_softmax_is_cross_entropy():
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((5, 7))
    labels = rng.integers(0, 7, 5)
    logp_layer = inn.LogSoftmax()
    logp = logp_layer.forward(scores, training=True)
    loss, dlogp = NLLLoss()(logp, labels)
    assert loss == pytest.approx(-np.mean(logp[np.arange(5), labels]), rel=1e-14)
    expected = np.zeros((5, 7))
    expected[np.arange(5), labels] = -1 / 5
    np.testing.assert_array_equal(dlogp, expected)
    ce_loss, ce_grad = CrossEntropyLoss()(scores, labels)
    assert loss == pytest.approx(ce_loss, rel=1e-12)
    np.testing.assert_allclose(logp_layer.backward(dlogp), ce_grad, rtol=1e-10, atol=1e-14)
    assert isinstance(get_loss("nll"), NLLLoss)
    check_directional(lambda z: NLLLoss()(z, labels)[0], logp, dlogp, rng)


def test_log_softmax_and_nll_train_a_model():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((64, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model = inn.Sequential([inn.Linear(5, 8), inn.LeakyReLU(), inn.Linear(8, 2), inn.LogSoftmax()],
                           input_shape=(5,))
    history = model.fit(x, y, epochs=15, batch_size=16, loss=NLLLoss(),
                        optimizer=inn.optim.SGD(0.1), verbose=0, seed=0)
    assert history.history["loss"][-1] < history.history["loss"][0] * 0.7


def test_bad_input_is_a_clear_error():
    with pytest.raises(TypeError, match="negative_slope"):
        inn.LeakyReLU("0.1")
    with pytest.raises(ValueError, match="negative_slope"):
        F.leaky_relu_forward(np.zeros(3), float("nan"))
    with pytest.raises(ValueError, match="dy"):
        F.leaky_relu_backward(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="target"):
        NLLLoss()(np.zeros((2, 3)), [0, 3])
    with pytest.raises(ValueError, match="target"):
        NLLLoss()(np.zeros((2, 3)), [0.5, 1])
    with pytest.raises(ValueError, match="dy"):
        F.log_softmax_backward(np.zeros((2, 3)), np.zeros((2, 4)))


def test_against_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 6))
    labels = rng.integers(0, 6, 4)
    xt = torch.from_numpy(x).requires_grad_()
    yt = torch.nn.functional.leaky_relu(xt, 0.2)
    dy = rng.standard_normal(x.shape)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_array_equal(F.leaky_relu_forward(x, 0.2), yt.detach().numpy())
    np.testing.assert_allclose(F.leaky_relu_backward(dy, x, 0.2), xt.grad.numpy(), rtol=1e-15)
    xt = torch.from_numpy(x).requires_grad_()
    logpt = torch.log_softmax(xt, dim=1)
    losst = torch.nn.functional.nll_loss(logpt, torch.from_numpy(labels))
    losst.backward()
    logp = F.log_softmax_forward(x)
    np.testing.assert_allclose(logp, logpt.detach().numpy(), rtol=1e-13)
    loss, dlogp = NLLLoss()(logp, labels)
    assert loss == pytest.approx(losst.item(), rel=1e-13)
    np.testing.assert_allclose(F.log_softmax_backward(dlogp, logp), xt.grad.numpy(), rtol=1e-12,
                               atol=1e-15)
