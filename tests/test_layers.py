"""Layers: forward against independent formulas/loops, float64 gradient checks through the
layer objects, configs, initialisation, dtypes and argument errors."""
import json
import math

import numpy as np
import pytest

import im2colnet as inet
from im2colnet.layers import LAYERS
from _gradcheck import check_directional, check_param_gradients


def away_from_zero(rng, shape, low=0.1):
    """Random values with |x| >= low: no input sits near a kink at 0 (ReLU, ELU)."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(low, 1.0, size=shape)


def distinct(rng, shape):
    """A shuffled linspace: all values distinct and at least 1/size apart (no max ties)."""
    return rng.permutation(np.linspace(-1, 1, int(np.prod(shape)))).reshape(shape)


def check_layer_gradients(layer, x, seed=0, prepare=lambda layer: None, training=True):
    """Central-difference checks (random directions) of dL/dx and every dL/dparam, float64,
    for L = sum(r * layer.forward(x)) with a fixed random r."""
    rng = np.random.default_rng(seed)
    layer.astype(np.float64)
    layer.build(x.shape[1:], rng)
    prepare(layer)
    y = layer.forward(x, training=training)
    assert y.dtype == np.float64
    r = rng.standard_normal(y.shape)
    dx = layer.backward(r)
    grads = {k: v.copy() for k, v in layer.grads.items()}
    assert set(grads) == set(layer.params)

    def loss_x(xv):
        prepare(layer)
        return float(np.sum(r * layer.forward(xv, training=training)))

    check_directional(loss_x, x, dx, rng)
    check_param_gradients(lambda: loss_x(x), layer.params, grads, rng)


# -- independent references ---------------------------------------------------------------
def naive_conv(x, w, b, stride, pads, dilation):
    """y[n,k,i,j] = sum_{c,p,q} w[k,c,p,q] x[n,c,i*sh-pt+p*dh, j*sw-pl+q*dw] + b[k], 0 outside."""
    (sh, sw), ((pt, pb), (pl, pr)), (dh, dw) = stride, pads, dilation
    n, c, h, wd = x.shape
    k, _, kh, kw = w.shape
    ho = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, k, ho, wo))
    for i in range(ho):
        for j in range(wo):
            for p in range(kh):
                for q in range(kw):
                    r, s = i * sh - pt + p * dh, j * sw - pl + q * dw
                    if 0 <= r < h and 0 <= s < wd:
                        y[:, :, i, j] += x[:, :, r, s] @ w[:, :, p, q].T
    return y + (0 if b is None else b[None, :, None, None])


def naive_pool(x, k, s, reduce):
    n, c, h, w = x.shape
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    y = np.empty((n, c, ho, wo))
    for idx in np.ndindex(n, c, ho, wo):
        a, b, i, j = idx
        y[idx] = reduce(x[a, b, i * s:i * s + k, j * s:j * s + k])
    return y


# -- forward against formulas ---------------------------------------------------------------
def test_linear_forward_is_the_sum_formula():
    rng = np.random.default_rng(1)
    layer = inet.Linear(5, 3)
    layer.build((5,), rng)
    w, b = layer.params["weight"], layer.params["bias"]
    b[...] = rng.standard_normal(3)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    y = layer.forward(x)
    for n in range(4):
        for k in range(3):
            ref = sum(float(w[k, f]) * float(x[n, f]) for f in range(5)) + float(b[k])
            assert abs(y[n, k] - ref) < 1e-5
    assert y.dtype == np.float32 and y.shape == (4, 3)


@pytest.mark.parametrize("cls, formula", [
    (inet.ReLU, lambda v: max(v, 0.0)),
    (inet.Tanh, math.tanh),
    (inet.Sigmoid, lambda v: 1 / (1 + math.exp(-v))),
    (lambda: inet.ELU(alpha=0.7), lambda v: v if v > 0 else 0.7 * (math.exp(v) - 1)),
])
def test_elementwise_forward_matches_scalar_formula(cls, formula):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 2, 4, 5)) * 3
    y = cls().forward(x)
    ref = np.vectorize(formula)(x)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-15)
    assert y.dtype == np.float64 and y.shape == x.shape


def test_sigmoid_and_elu_are_finite_for_huge_inputs():
    x = np.array([[-1e4, -50.0, 0.0, 50.0, 1e4]], dtype=np.float32)
    for layer in (inet.Sigmoid(), inet.ELU()):
        assert np.all(np.isfinite(layer.forward(x)))
    np.testing.assert_allclose(inet.Sigmoid().forward(x)[0, [0, 2, 4]], [0.0, 0.5, 1.0])


def test_maxout_forward_groups_consecutive_channels():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 3, 2))
    y = inet.Maxout(3).forward(x)
    assert y.shape == (2, 2, 3, 2)
    for n, g, i, j in np.ndindex(*y.shape):
        assert y[n, g, i, j] == max(x[n, g * 3 + k, i, j] for k in range(3))
    feats = rng.standard_normal((4, 6))
    np.testing.assert_array_equal(inet.Maxout(2).forward(feats),
                                  np.maximum(feats[:, 0::2], feats[:, 1::2]))


def test_maxout_gradient_goes_to_the_first_winner_on_ties():
    layer = inet.Maxout(2)
    x = np.array([[1.0, 1.0, 0.0, 2.0]])
    layer.forward(x, training=True)
    np.testing.assert_array_equal(layer.backward(np.array([[5.0, 7.0]])), [[5.0, 0.0, 0.0, 7.0]])


@pytest.mark.parametrize("cls, reduce", [(inet.MaxPool2d, np.max), (inet.AvgPool2d, np.mean)])
def test_pool_forward_matches_loops(cls, reduce):
    rng = np.random.default_rng(4)
    x = distinct(rng, (2, 3, 7, 6))
    for k, s in ((2, None), (3, 2), (2, 3)):
        y = cls(k, stride=s).forward(x)
        np.testing.assert_allclose(y, naive_pool(x, k, k if s is None else s, reduce), rtol=1e-12)
        assert cls(k, stride=s).output_shape((3, 7, 6)) == y.shape[1:]


def test_flatten_and_softmax_forward():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 2, 2, 2))
    np.testing.assert_array_equal(inet.Flatten().forward(x), x.reshape(3, 8))
    p = inet.Softmax().forward(x)
    e = np.exp(x.reshape(3, 8))
    np.testing.assert_allclose(p.reshape(3, 8), e / e.sum(axis=1, keepdims=True), rtol=1e-12)


@pytest.mark.parametrize("mode", ["spatial", "per_activation"])
def test_batchnorm2d_training_inference_and_running_stats(mode):
    rng = np.random.default_rng(6)
    layer = inet.BatchNorm2d(3, mode=mode, momentum=0.25)
    x = rng.standard_normal((5, 3, 2, 4)) * 2 + 1
    layer.astype(np.float64).build(x.shape[1:])
    gamma, beta = layer.params["gamma"], layer.params["beta"]
    gamma[...] = rng.uniform(0.5, 2, gamma.shape)
    beta[...] = rng.standard_normal(beta.shape)
    axes = (0, 2, 3) if mode == "spatial" else (0,)
    shape = (1, 3, 1, 1) if mode == "spatial" else (1, 3, 2, 4)
    y = layer.forward(x, training=True)
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    ref = gamma.reshape(shape) * (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + 1e-5) \
        + beta.reshape(shape)
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-12)
    m = x.size // mean.size
    np.testing.assert_allclose(layer.buffers["running_mean"], 0.25 * mean, rtol=1e-12)
    np.testing.assert_allclose(layer.buffers["running_var"], 0.75 + 0.25 * var * m / (m - 1), rtol=1e-12)
    # inference uses the running statistics, and does not change them
    rm, rv = layer.buffers["running_mean"].copy(), layer.buffers["running_var"].copy()
    y_inf = layer.forward(x)
    ref_inf = gamma.reshape(shape) * (x - rm.reshape(shape)) / np.sqrt(rv.reshape(shape) + 1e-5) \
        + beta.reshape(shape)
    np.testing.assert_allclose(y_inf, ref_inf, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(layer.buffers["running_mean"], rm)


def test_batchnorm1d_normalises_each_feature():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((16, 5)) * 3 + 2
    layer = inet.BatchNorm1d(5).astype(np.float64)
    y = layer.forward(x, training=True)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=0), x.var(axis=0) / (x.var(axis=0) + 1e-5), rtol=1e-10)


def test_dropout_inverted_seeded_and_identity_in_inference():
    x = np.ones((200, 50), dtype=np.float32)
    layer = inet.Dropout(0.3, seed=11)
    y = layer.forward(x, training=True)
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(layer.backward(np.full_like(x, 2.0)), 2 * y)
    np.testing.assert_array_equal(inet.Dropout(0.3, seed=11).forward(x, training=True), y)
    assert inet.Dropout(0.3).forward(x) is x or np.array_equal(inet.Dropout(0.3).forward(x), x)
    np.testing.assert_array_equal(inet.Dropout(0.0).forward(x, training=True), x)


# -- gradient checks ------------------------------------------------------------------------
def test_gradcheck_linear_on_features_and_images():
    rng = np.random.default_rng(10)
    check_layer_gradients(inet.Linear(6, 4), rng.standard_normal((3, 6)))
    check_layer_gradients(inet.Linear(12, 2, bias=False), rng.standard_normal((3, 3, 2, 2)))


@pytest.mark.parametrize("make", [inet.ReLU, inet.Tanh, inet.Sigmoid, lambda: inet.ELU(1.3),
                                  inet.Flatten, inet.Softmax])
def test_gradcheck_parameter_free_layers(make):
    rng = np.random.default_rng(11)
    check_layer_gradients(make(), away_from_zero(rng, (3, 2, 3, 4)))


@pytest.mark.parametrize("shape, pieces", [((3, 6, 2, 3), 3), ((4, 8), 2)])
def test_gradcheck_maxout(shape, pieces):
    check_layer_gradients(inet.Maxout(pieces), distinct(np.random.default_rng(12), shape))


@pytest.mark.parametrize("make", [lambda: inet.MaxPool2d(2), lambda: inet.MaxPool2d(3, stride=2, padding=1),
                                  lambda: inet.AvgPool2d(2), lambda: inet.AvgPool2d(3, stride=1, padding=1)])
def test_gradcheck_pooling(make):
    check_layer_gradients(make(), distinct(np.random.default_rng(13), (2, 3, 6, 5)))


@pytest.mark.parametrize("mode", ["spatial", "per_activation"])
def test_gradcheck_batchnorm2d_training(mode):
    rng = np.random.default_rng(14)
    layer = inet.BatchNorm2d(3, mode=mode).astype(np.float64)
    layer.build((3, 3, 2))
    gamma = layer.params["gamma"]
    gamma[...] = rng.uniform(0.5, 1.5, gamma.shape)     # not all ones: dgamma/dx terms matter
    check_layer_gradients(layer, rng.standard_normal((4, 3, 3, 2)))


def test_gradcheck_batchnorm_inference_and_1d():
    rng = np.random.default_rng(15)
    check_layer_gradients(inet.BatchNorm1d(5), rng.standard_normal((6, 5)))
    layer = inet.BatchNorm2d(2)
    layer.astype(np.float64).build((2, 3, 3))
    layer.buffers["running_var"][...] = [0.5, 2.0]
    check_layer_gradients(layer, rng.standard_normal((2, 2, 3, 3)), training=False)


def test_gradcheck_dropout_with_fixed_mask():
    def prepare(layer):
        layer.rng = np.random.default_rng(3)
    check_layer_gradients(inet.Dropout(0.4), np.random.default_rng(16).standard_normal((5, 7)), prepare=prepare)


CONV_CASES = [
    dict(kernel_size=3),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(2, 3), stride=(1, 2), padding=((1, 0), (2, 1))),
    dict(kernel_size=3, padding="same"),
    dict(kernel_size=3, padding="valid", dilation=2),
    dict(kernel_size=(3, 2), dilation=(1, 2), padding=(2, 1)),
    dict(kernel_size=3, anchor=(0, 2)),
    dict(kernel_size=3, anchor=(-1, 3)),
    dict(kernel_size=3, padding=-1),
    dict(kernel_size=1, bias=False),
]


@pytest.mark.parametrize("kw", CONV_CASES, ids=[str(sorted(c.items())) for c in CONV_CASES])
def test_conv2d_forward_matches_naive_loops_and_gradcheck(kw):
    from im2colnet._checks import conv_geometry
    rng = np.random.default_rng(20)
    x = rng.standard_normal((2, 3, 7, 6))
    layer = inet.Conv2d(3, 4, **kw).astype(np.float64)
    layer.build(x.shape[1:], rng)
    if layer.bias:
        layer.params["bias"][...] = rng.standard_normal(4)
    g = conv_geometry((7, 6), kw["kernel_size"], kw.get("stride", 1), kw.get("padding", 0),
                      kw.get("dilation", 1), kw.get("anchor"))
    y = layer.forward(x)
    ref = naive_conv(x, layer.params["weight"], layer.params.get("bias"), (g.sh, g.sw),
                     ((g.pt, g.pb), (g.pl, g.pr)), (g.dh, g.dw))
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-12)
    assert layer.output_shape(x.shape[1:]) == y.shape[1:]
    check_layer_gradients(inet.Conv2d(3, 4, **kw), x, seed=21)


def test_conv2d_float32_and_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(22)
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    layer = inet.Conv2d(3, 5, 3, stride=2, padding=1, dilation=2)
    layer.build(x.shape[1:], rng)
    y = layer.forward(x)
    assert y.dtype == np.float32
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(layer.params["weight"]),
                                     torch.from_numpy(layer.params["bias"]), stride=2, padding=1, dilation=2)
    np.testing.assert_allclose(y, ref.numpy(), rtol=1e-4, atol=1e-5)


# -- configuration, init, dtype, errors ------------------------------------------------------
EXAMPLES = {
    "Conv2d": inet.Conv2d(3, 8, (3, 2), stride=(2, 1), padding=((1, 0), (0, 1)), dilation=2, bias=False),
    "Linear": inet.Linear(10, 4, bias=False), "ReLU": inet.ReLU(), "Tanh": inet.Tanh(),
    "Sigmoid": inet.Sigmoid(), "ELU": inet.ELU(0.5), "Maxout": inet.Maxout(4),
    "MaxPool2d": inet.MaxPool2d(3, stride=2, padding=1), "AvgPool2d": inet.AvgPool2d((2, 3)),
    "BatchNorm2d": inet.BatchNorm2d(8, mode="per_activation", eps=1e-3, momentum=0.2),
    "BatchNorm1d": inet.BatchNorm1d(4, momentum=0.3), "Dropout": inet.Dropout(0.2, seed=3),
    "Flatten": inet.Flatten(), "Softmax": inet.Softmax(),
    "RNN": inet.RNN(3, 5, 2, nonlinearity="relu"), "LSTM": inet.LSTM(4, 6), "GRU": inet.GRU(2, 3, 3),
    "LastTimeStep": inet.LastTimeStep(),
    "ConvTranspose2d": inet.ConvTranspose2d(4, 6, (3, 2), stride=2, padding=(1, 0), output_padding=1,
                                            groups=2, bias=False, dilation=(1, 2)),
    "LeakyReLU": inet.LeakyReLU(0.2), "LogSoftmax": inet.LogSoftmax(),
    "GlobalAvgPool2d": inet.GlobalAvgPool2d(), "AdaptiveAvgPool2d": inet.AdaptiveAvgPool2d((1, 1)),
}


def test_registry_lists_every_layer():
    assert set(LAYERS) == set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_config_round_trip_through_json(name):
    layer = EXAMPLES[name]
    config = json.loads(json.dumps(layer.get_config()))
    assert config == layer.get_config()
    clone = LAYERS[name].from_config(config)
    assert type(clone) is type(layer) and clone.get_config() == config
    with pytest.raises(ValueError, match="bogus"):
        LAYERS[name].from_config({**config, "bogus": 1})


def test_init_he_normal_and_glorot_and_seeded():
    layer = inet.Conv2d(16, 32, 3, rng=np.random.default_rng(0))
    w = layer.params["weight"]
    assert w.dtype == np.float32 and w.shape == (32, 16, 3, 3)
    assert abs(w.std() / math.sqrt(2 / 144) - 1) < 0.05
    assert np.all(layer.params["bias"] == 0)
    dense = inet.Linear(300, 200)
    dense.init = "glorot"
    dense.reset_parameters(np.random.default_rng(0))
    assert abs(dense.params["weight"].std() / math.sqrt(2 / 500) - 1) < 0.05
    again = inet.Conv2d(16, 32, 3, rng=0)
    np.testing.assert_array_equal(again.params["weight"], w)
    before = w.copy()
    assert layer.build((16, 8, 8), np.random.default_rng(1)) == (32, 6, 6)    # keeps the weights
    np.testing.assert_array_equal(layer.params["weight"], before)
    assert layer.build((16, 9, 9)) == (32, 7, 7)        # any image size fits a convolution


def test_astype_float64_and_back():
    layer = inet.Linear(3, 2)
    layer.build((3,))
    layer.astype(np.float64)
    assert layer.params["weight"].dtype == np.float64 and layer.grads["weight"].dtype == np.float64
    assert layer.forward(np.ones((1, 3))).dtype == np.float64
    layer.astype(np.float32)
    assert layer.forward(np.ones((1, 3), dtype=np.float32)).dtype == np.float32
    with pytest.raises(TypeError, match="dtype"):
        layer.astype(np.int32)


@pytest.mark.parametrize("make, match", [
    (lambda: inet.Conv2d(0, 3, 3), "in_channels"),
    (lambda: inet.Conv2d(1, 3, 0), "kernel_size"),
    (lambda: inet.Conv2d(1, 3, 3, stride=0), "stride"),
    (lambda: inet.Conv2d(1, 3, 3, padding="full"), "padding"),
    (lambda: inet.Conv2d(1, 3, 3, padding=1, anchor=(1, 1)), "anchor"),
    (lambda: inet.Linear(3, -1), "out_features"),
    (lambda: inet.Maxout(0), "pieces"),
    (lambda: inet.Dropout(1.0), "p"),
    (lambda: inet.Dropout(0.5, seed=-1), "seed"),
    (lambda: inet.ELU(-1), "alpha"),
    (lambda: inet.BatchNorm2d(3, mode="batch"), "mode"),
    (lambda: inet.BatchNorm2d(3, eps=0), "eps"),
    (lambda: inet.MaxPool2d(2, stride=0), "stride"),
    (lambda: inet.MaxPool2d(2, padding=2), "padding"),
])
def test_bad_arguments_name_the_argument(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


@pytest.mark.parametrize("layer, shape", [
    (inet.Conv2d(3, 4, 3), (2, 8, 8)), (inet.Conv2d(3, 4, 5), (3, 4, 4)),
    (inet.Linear(10, 2), (3, 3)), (inet.Maxout(4), (6, 2, 2)), (inet.MaxPool2d(2), (8,)),
    (inet.BatchNorm2d(3), (4, 2, 2)), (inet.BatchNorm1d(3), (4,)),
])
def test_output_shape_rejects_misfits(layer, shape):
    with pytest.raises(ValueError, match="input_shape|kernel_size"):
        layer.output_shape(shape)


def test_backward_before_forward_is_a_clear_error():
    layer = inet.Tanh()
    layer.forward(np.ones((1, 2)))          # inference keeps nothing
    with pytest.raises(RuntimeError, match="training=True"):
        layer.backward(np.ones((1, 2)))


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), k=st.integers(1, 4), s=st.integers(1, 3),
       d=st.integers(1, 2), pads=st.tuples(*[st.integers(-1, 3)] * 4), same=st.booleans())
def test_conv2d_output_shape_agrees_with_forward_or_both_reject(h, w, k, s, d, pads, same):
    """output_shape (used by Sequential's construction check) and forward agree on every geometry."""
    padding = "same" if same else ((pads[0], pads[1]), (pads[2], pads[3]))
    layer = inet.Conv2d(2, 3, k, stride=s, padding=padding, dilation=d)
    x = np.ones((1, 2, h, w), dtype=np.float32)
    try:
        expected = layer.output_shape((2, h, w))
    except ValueError:
        with pytest.raises(ValueError):
            layer.forward(x)
        return
    assert layer.forward(x).shape[1:] == expected


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 8), w=st.integers(1, 8), k=st.integers(1, 3), s=st.integers(1, 3),
       p=st.integers(0, 2), kind=st.sampled_from([inet.MaxPool2d, inet.AvgPool2d]))
def test_pool_output_shape_agrees_with_forward_or_both_reject(h, w, k, s, p, kind):
    x = np.arange(2 * h * w, dtype=np.float64).reshape(1, 2, h, w)
    try:
        layer = kind(k, stride=s, padding=p)
        expected = layer.output_shape((2, h, w))
    except ValueError:
        with pytest.raises(ValueError):
            kind(k, stride=s, padding=p).forward(x)
        return
    assert layer.forward(x).shape[1:] == expected


def test_batchnorm2d_matches_torch_over_several_steps():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(23)
    ours = inet.BatchNorm2d(3, momentum=0.3).astype(np.float64)
    ours.build((3, 4, 4))
    ref = torch.nn.BatchNorm2d(3, momentum=0.3).double()
    for _ in range(3):
        x = rng.standard_normal((5, 3, 4, 4)) * 2 + 1
        dy = rng.standard_normal(x.shape)
        y = ours.forward(x, training=True)
        dx = ours.backward(dy)
        tx = torch.from_numpy(x).requires_grad_()
        ty = ref(tx)
        ty.backward(torch.from_numpy(dy))
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-9, atol=1e-12)
        ref.weight.grad = ref.bias.grad = None
    np.testing.assert_allclose(ours.buffers["running_mean"], ref.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.buffers["running_var"], ref.running_var.numpy(), rtol=1e-12)
    ref.eval()
    x = rng.standard_normal((2, 3, 4, 4))
    np.testing.assert_allclose(ours.forward(x), ref(torch.from_numpy(x)).detach().numpy(), rtol=1e-10)
