"""Parameters from construction: seedable, checked against the stack's shapes, re-drawn by
reset_parameters; one dtype per layer; the textbook pattern of writing weights by hand."""
import math

import numpy as np
import pytest

import im2colnet as inet
from im2colnet import models
from im2colnet.layers import (GRU, LSTM, RNN, BatchNorm1d, BatchNorm2d, Conv2d, Flatten, Linear,
                              MaxPool2d, ReLU, Tanh)


def test_textbook_conv_weights_written_by_hand():
    """Conv2d(2, 2, 3, bias=False) on one 2x3x3 image: each output is one 3x3x2 dot product."""
    conv = Conv2d(2, 2, 3, bias=False)
    assert set(conv.params) == {"weight"} and conv.params["weight"].shape == (2, 2, 3, 3)
    conv.params["weight"][...] = 0
    conv.params["weight"][0] = 1              # filter 0 sums the window of both channels
    conv.params["weight"][1, 1, 1, 1] = 2     # filter 1: twice the centre of channel 1
    x = np.arange(18, dtype=np.float32).reshape(1, 2, 3, 3)
    y = conv.forward(x, training=True)
    # 0 + 1 + ... + 17 = 153; the centre of channel 1 is x[0, 1, 1, 1] = 13.
    np.testing.assert_array_equal(y, np.array([153, 26], np.float32).reshape(1, 2, 1, 1))
    dx = conv.backward(np.array([1, -1], np.float32).reshape(1, 2, 1, 1))
    # dx = 1 * w[0] - 1 * w[1]: ones, except the centre of channel 1 (1 - 2 = -1).
    expected_dx = np.ones((1, 2, 3, 3), np.float32)
    expected_dx[0, 1, 1, 1] = -1
    np.testing.assert_array_equal(dx, expected_dx)
    # dw[k] = dy[k] * x: +x for filter 0, -x for filter 1.
    np.testing.assert_array_equal(conv.grads["weight"], np.concatenate([x, -x]))


@pytest.mark.parametrize("make, names", [
    (lambda rng: Conv2d(2, 2, 3, rng=rng), {"weight": (2, 2, 3, 3), "bias": (2,)}),
    (lambda rng: Linear(5, 3, rng=rng), {"weight": (3, 5), "bias": (3,)}),
    (lambda rng: BatchNorm2d(4), {"gamma": (4,), "beta": (4,)}),
    (lambda rng: BatchNorm1d(6), {"gamma": (6,), "beta": (6,)}),
    (lambda rng: LSTM(3, 2, rng=rng), {"weight_ih_l0": (8, 3), "weight_hh_l0": (8, 2),
                                       "bias_ih_l0": (8,), "bias_hh_l0": (8,)}),
    (lambda rng: GRU(3, 2, 2, rng=rng), {f"{k}_l{i}": s for i in (0, 1) for k, s in
                                         (("weight_ih", (6, 3 if i == 0 else 2)), ("weight_hh", (6, 2)),
                                          ("bias_ih", (6,)), ("bias_hh", (6,)))}),
])
def test_parameters_exist_at_construction_and_the_rng_seeds_them(make, names):
    layer = make(7)
    assert layer.built
    assert {k: v.shape for k, v in layer.params.items()} == names
    assert {k: v.shape for k, v in layer.grads.items()} == names
    again = make(np.random.default_rng(7))
    for key, value in layer.params.items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(again.params[key], value)


def test_he_init_at_construction_and_seeds_differ():
    conv = Conv2d(16, 32, 3, rng=0)
    w = conv.params["weight"]
    assert abs(w.std() / math.sqrt(2 / (16 * 9)) - 1) < 0.05 and np.all(conv.params["bias"] == 0)
    expected = (math.sqrt(2 / (16 * 9)) * np.random.default_rng(0).standard_normal((32, 16, 3, 3)))
    np.testing.assert_array_equal(w, expected.astype(np.float32))
    assert not np.array_equal(Conv2d(16, 32, 3, rng=1).params["weight"], w)
    assert not np.array_equal(Conv2d(16, 32, 3).params["weight"], Conv2d(16, 32, 3).params["weight"])


def test_per_activation_batchnorm_waits_for_build():
    bn = BatchNorm2d(3, mode="per_activation")
    assert not bn.built and bn.params == {}
    bn.build((3, 2, 4))
    assert bn.params["gamma"].shape == (3, 2, 4)
    with pytest.raises(ValueError, match=r"\(3, 2, 4\)"):
        bn.build((3, 5, 5))
    assert BatchNorm2d(3, mode="per_activation").forward(np.ones((2, 3, 2, 2), np.float32)).shape == (2, 3, 2, 2)


def test_lenet5_is_complete_before_training():
    net = models.lenet5()
    assert net.built and net.count_params() == 61706
    assert "Total params: 61,706" in net.summary()
    assert net.predict(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)


def test_sequential_seed_draws_he_or_glorot_from_the_following_layer():
    """Sequential(..., seed=s): in layer order from default_rng(s), He-normal before a ReLU
    (N(0, 2/fan_in)), Glorot otherwise (N(0, 2/(fan_in + fan_out)))."""
    model = inet.Sequential([Linear(6, 5), BatchNorm1d(5), ReLU(), Linear(5, 4), Tanh(), Linear(4, 3)],
                            seed=11)
    rng = np.random.default_rng(11)
    he = math.sqrt(2 / 6) * rng.standard_normal((5, 6))
    glorot1 = math.sqrt(2 / 9) * rng.standard_normal((4, 5))
    glorot2 = math.sqrt(2 / 7) * rng.standard_normal((3, 4))
    for layer, expected in zip([model[0], model[3], model[5]], [he, glorot1, glorot2]):
        np.testing.assert_array_equal(layer.params["weight"], expected.astype(np.float32))
    again = inet.Sequential([Linear(6, 5), BatchNorm1d(5), ReLU(), Linear(5, 4), Tanh(), Linear(4, 3)],
                            seed=11)
    for name, value in model.parameters().items():
        np.testing.assert_array_equal(again.parameters()[name], value)


def test_reset_parameters_redraws_in_place():
    model = inet.Sequential([Conv2d(1, 2, 3), BatchNorm2d(2), ReLU(), Flatten(), Linear(8, 2)],
                            input_shape=(1, 4, 4), seed=0)
    arrays = model.parameters()
    first = {k: v.copy() for k, v in arrays.items()}
    model.fit(np.random.default_rng(0).random((8, 1, 4, 4)), np.arange(8) % 2, epochs=1,
              batch_size=4, optimizer="sgd", verbose=0, seed=0)
    assert np.any(model[1].buffers["running_mean"] != 0)
    assert model.reset_parameters(0) is model
    for name, value in model.parameters().items():
        assert value is arrays[name]                    # the same arrays, written again
        np.testing.assert_array_equal(value, first[name])
    assert np.all(model[1].buffers["running_mean"] == 0) and np.all(model[1].buffers["running_var"] == 1)
    layer = Linear(3, 2, rng=0)
    w = layer.params["weight"]
    layer.reset_parameters(1)
    assert layer.params["weight"] is w
    np.testing.assert_array_equal(w, Linear(3, 2, rng=1).params["weight"])


def test_construction_names_the_first_layer_that_does_not_fit():
    with pytest.raises(ValueError, match=r"layer 3 \(Linear\).*\(8, 6, 6\)"):
        inet.Sequential([Conv2d(1, 8, 3), ReLU(), MaxPool2d(2), Linear(100, 10)], input_shape=(1, 14, 14))


def test_a_parameter_of_another_dtype_is_a_type_error_at_forward():
    conv = Conv2d(2, 2, 3)
    conv.params["weight"] = conv.params["weight"].astype(np.float64)
    with pytest.raises(TypeError, match=r"Conv2d: params\['weight'\] is float64 .* computes in float32"):
        conv.forward(np.ones((1, 2, 5, 5), np.float32))
    conv.astype(np.float64)           # the whole layer follows: now it computes in float64
    assert conv.forward(np.ones((1, 2, 5, 5))).dtype == np.float64
    bn = BatchNorm2d(2)
    bn.buffers["running_var"] = np.ones(2)
    with pytest.raises(TypeError, match=r"BatchNorm2d: buffers\['running_var'\] is float64"):
        bn.forward(np.ones((2, 2, 3, 3), np.float32))


def test_model_astype_follows_and_mixed_layers_are_refused():
    model = models.lenet5()
    model.layers[0].params["weight"] = model.layers[0].params["weight"].astype(np.float64)
    x = np.random.default_rng(0).random((2, 1, 28, 28))
    with pytest.raises(TypeError, match=r"Conv2d: params\['weight'\] is float64.*float32"):
        model.predict(x)
    model.astype(np.float64)
    assert model.predict(x).dtype == np.float64
    assert all(p.dtype == np.float64 for p in model.parameters().values())
    with pytest.raises(TypeError, match=r"one dtype per model.*float64.*float32|float32.*float64"):
        inet.Sequential([Linear(3, 3).astype(np.float64), Linear(3, 2)])
    mixed = inet.Sequential([Linear(3, 3).astype(np.float64), ReLU(), Linear(3, 2).astype(np.float64)])
    assert mixed.dtype == np.float64 and mixed.predict(np.ones((1, 3))).dtype == np.float64
    model.layers[3].astype(np.float32)
    with pytest.raises(TypeError, match=r"layer 3 \(Conv2d\) computes in float32 but the model in float64"):
        model.predict(x)


def test_recurrent_layers_are_seeded_like_pytorch_uniform():
    rnn = RNN(2, 4, rng=3)
    bound = 1 / math.sqrt(4)
    expected = np.random.default_rng(3).uniform(-bound, bound, (4, 2))
    np.testing.assert_array_equal(rnn.params["weight_ih_l0"], expected.astype(np.float32))
