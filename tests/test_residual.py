"""Residual(block, shortcut): y = block(x) + shortcut(x), against the explicit sum of its two
stacks, float64 finite differences with and without a projection, saving, summary, training."""
import json
import re

import numpy as np
import pytest

import im2colnet as inet
from im2colnet.layers import BatchNorm2d, Conv2d, Linear, ReLU, Tanh, Flatten
from im2colnet.model import LAYER_TYPES
from _gradcheck import check_directional, check_param_gradients


def projection_block(rng=0):
    """3 -> 4 channels with stride 2: the block and its 1x1 conv + BN projection."""
    block = inet.Sequential([Conv2d(3, 4, 3, stride=2, padding=1, bias=False, rng=rng),
                             BatchNorm2d(4), Tanh(),
                             Conv2d(4, 4, 3, padding=1, rng=rng + 1)])
    shortcut = inet.Sequential([Conv2d(3, 4, 1, stride=2, bias=False, rng=rng + 2), BatchNorm2d(4)])
    return inet.Residual(block, shortcut)


def identity_block(rng=0):
    return inet.Residual([Conv2d(3, 3, 3, padding=1, rng=rng), Tanh(), Conv2d(3, 3, 3, padding=1, rng=rng + 1)])


def run(stack, x, training):
    for layer in stack:
        x = layer.forward(x, training)
    return x


@pytest.mark.parametrize("make", [identity_block, projection_block])
def test_forward_is_the_sum_of_block_and_shortcut(make):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 6))
    res = make().astype(np.float64)
    y = res.forward(x)
    reference = make().astype(np.float64)     # the same weights (same seeds), run by hand
    expected = run(reference.block, x, False) + (x if reference.shortcut is None
                                                 else run(reference.shortcut, x, False))
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    assert res.output_shape((3, 6, 6)) == y.shape[1:]


@pytest.mark.parametrize("make", [identity_block, projection_block])
def test_gradcheck_float64(make):
    """Central differences of L = sum(r * y) for x and every parameter (BN in training mode)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 3, 5, 5))
    res = make().astype(np.float64)
    for name, p in res.params.items():        # biases and BN gammas/betas away from their init
        p[...] += 0.1 * rng.standard_normal(p.shape)
    y = res.forward(x, training=True)
    r = rng.standard_normal(y.shape)
    dx = res.backward(r)
    grads = {k: v.copy() for k, v in res.grads.items()}
    assert set(grads) == set(res.params) and len(grads) == (4 if res.shortcut is None else 8)

    def loss(xv=x):
        return float(np.sum(r * res.forward(xv, training=True)))

    check_directional(loss, x, dx, rng)
    check_param_gradients(loss, res.params, grads, rng)


def test_identity_shortcut_adds_dy_to_the_input_gradient():
    res = inet.Residual([Linear(4, 4, bias=False, rng=0)]).astype(np.float64)
    res.params["block/0/weight"][...] = 0.0
    x = np.arange(8.0).reshape(2, 4)
    np.testing.assert_array_equal(res.forward(x, training=True), x)
    dy = np.ones((2, 4))
    np.testing.assert_array_equal(res.backward(dy), dy)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 3, 3\).*\(3, 6, 6\)"):
        inet.Sequential([inet.Residual([Conv2d(3, 4, 3, stride=2, padding=1)])], input_shape=(3, 6, 6))
    res = inet.Residual([Conv2d(3, 4, 3, padding=1)])
    with pytest.raises(ValueError, match=r"block's output shape \(4, 5, 5\).*shortcut's \(3, 5, 5\)"):
        res.forward(np.zeros((1, 3, 5, 5)))
    with pytest.raises(TypeError, match="block"):
        inet.Residual("conv")


def small_resnet(seed=3):
    return inet.Sequential([Conv2d(1, 3, 3, padding=1), BatchNorm2d(3), ReLU(),
                            identity_block(), ReLU(), projection_block(), ReLU(),
                            Flatten(), Linear(4 * 3 * 3, 5)], input_shape=(1, 6, 6), seed=seed)


def test_parameters_are_named_counted_and_summarised():
    model = small_resnet()
    names = model.parameters()
    assert "3/block/0/weight" in names and "5/shortcut/0/weight" in names and "5/shortcut/1/gamma" in names
    res = model.layers[5]
    assert names["5/block/0/weight"] is res.block.layers[0].params["weight"]
    expected = sum(layer.count_params() for stack in (res.block, res.shortcut) for layer in stack)
    assert res.count_params() == expected == 4 * 3 * 9 + 8 + (4 * 4 * 9 + 4) + 4 * 3 + 8
    assert model.count_params() == sum(p.size for p in names.values())
    text = model.summary()
    assert f"Total params: {model.count_params():,}" in text and "5 Residual" in text
    assert re.search(r"\n  shortcut/0 Conv2d +\(None, 4, 3, 3\) +12\n", text) and "\n  block/1 BatchNorm2d" in text


def test_trains_with_an_optimizer_and_saves_and_loads(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((40, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 5, 40)
    model = small_resnet()
    before = {k: v.copy() for k, v in model.parameters().items()}
    optimizer = inet.optim.SGD(0.05, momentum=0.9)
    model.fit(x, y, epochs=2, batch_size=8, optimizer=optimizer, verbose=0, seed=0)
    for name, value in model.parameters().items():
        assert not np.array_equal(value, before[name]), name      # every parameter was updated
    assert np.any(model.layers[5].buffers["shortcut/1/running_mean"] != 0)
    path = model.save(tmp_path / "res.h5")
    loaded = inet.load_model(path)
    assert json.dumps(loaded.get_config()) == json.dumps(model.get_config())
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    for name, value in {**model.parameters()}.items():
        np.testing.assert_array_equal(loaded.parameters()[name], value)
    # With the optimizer's state (momentum per "5/block/0/weight"...), one more epoch resumes exactly.
    model.save(tmp_path / "ckpt.h5", optimizer=optimizer)
    resumed, resumed_optimizer = inet.load_model(tmp_path / "ckpt.h5", with_optimizer=True)
    model.fit(x, y, epochs=3, initial_epoch=2, batch_size=8, optimizer=optimizer, verbose=0, seed=0)
    resumed.fit(x, y, epochs=3, initial_epoch=2, batch_size=8, optimizer=resumed_optimizer, verbose=0, seed=0)
    for name, value in model.parameters().items():
        np.testing.assert_array_equal(resumed.parameters()[name], value)


def test_config_nests_and_rejects_unknown_types():
    config = projection_block().get_config()
    assert config["shortcut"]["layers"][0]["type"] == "Conv2d"
    clone = LAYER_TYPES["Residual"].from_config(json.loads(json.dumps(config)))
    assert clone.get_config() == config
    bad = json.loads(json.dumps(config))
    bad["block"]["layers"][0]["type"] = "os.system"
    with pytest.raises(ValueError, match="unknown type"):
        inet.Residual.from_config(bad)
    with pytest.raises(ValueError, match="bogus"):
        inet.Residual.from_config({**config, "bogus": 1})


def test_assigned_array_reaches_the_sub_layer_and_dtype_is_checked():
    res = identity_block()
    w = np.zeros((3, 3, 3, 3), np.float32)
    res.params["block/0/weight"] = w
    res.forward(np.ones((1, 3, 4, 4), np.float32))
    assert res.block.layers[0].params["weight"] is w
    res.params["block/2/weight"] = np.zeros((3, 3, 3, 3))
    with pytest.raises(TypeError, match=r"Conv2d.*'weight'.*float64.*float32"):
        res.forward(np.ones((1, 3, 4, 4), np.float32))


def test_resnet_small_matches_torch_forward_and_gradients():
    """resnet_small against the same network written in torch.nn with our weights copied in:
    the scores and the input gradient in training mode (batch statistics), float64."""
    torch = pytest.importorskip("torch")
    from im2colnet.models import resnet_small
    nn = torch.nn
    ours = resnet_small().reset_parameters(5).astype(np.float64)
    rng = np.random.default_rng(6)
    for name, p in ours.parameters().items():          # BN gammas/betas away from 1/0
        if "gamma" in name or "beta" in name:
            p[...] += 0.2 * rng.standard_normal(p.shape)

    def torch_layer(layer):
        if isinstance(layer, inet.Residual):
            return TorchResidual(layer)
        if isinstance(layer, Conv2d):
            m = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                          layer.padding, bias=layer.bias)
            m.weight.data = torch.from_numpy(layer.params["weight"].copy())
            if layer.bias:
                m.bias.data = torch.from_numpy(layer.params["bias"].copy())
            return m
        if isinstance(layer, BatchNorm2d):
            m = nn.BatchNorm2d(layer.num_features, eps=layer.eps)
            m.weight.data = torch.from_numpy(layer.params["gamma"].copy())
            m.bias.data = torch.from_numpy(layer.params["beta"].copy())
            return m
        if isinstance(layer, Linear):
            m = nn.Linear(layer.in_features, layer.out_features)
            m.weight.data = torch.from_numpy(layer.params["weight"].copy())
            m.bias.data = torch.from_numpy(layer.params["bias"].copy())
            return m
        return {"ReLU": nn.ReLU, "Flatten": nn.Flatten}.get(type(layer).__name__, lambda: nn.AvgPool2d(7))()

    class TorchResidual(nn.Module):
        def __init__(self, layer):
            super().__init__()
            self.block = nn.Sequential(*map(torch_layer, layer.block))
            self.shortcut = nn.Sequential(*map(torch_layer, layer.shortcut)) if layer.shortcut else None

        def forward(self, x):
            return self.block(x) + (x if self.shortcut is None else self.shortcut(x))

    theirs = nn.Sequential(*map(torch_layer, ours.layers)).double().train()
    x = rng.random((4, 1, 28, 28))
    y = ours.forward(x, training=True)
    r = rng.standard_normal(y.shape)
    dx = ours.backward(r)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = theirs(xt)
    (yt * torch.from_numpy(r)).sum().backward()
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-7, atol=1e-10)
    torch_conv = theirs[9].shortcut[0].weight.grad.numpy()       # a projection's weight gradient
    np.testing.assert_allclose(ours.layers[9].grads["shortcut/0/weight"], torch_conv, rtol=1e-7, atol=1e-10)
    # state_dict under torch's names both ways: torch's trained-mode statistics come back to us.
    theirs_state = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}
    assert list(ours.state_dict()) == list(theirs_state)
    fresh = resnet_small().astype(np.float64)
    fresh.load_state_dict(theirs_state)
    theirs.eval()
    np.testing.assert_allclose(fresh.predict(x), theirs(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-9, atol=1e-10)


def test_resnet_small_exports_to_onnx_and_runs_in_onnxruntime(tmp_path):
    """The exported graph (each Residual: both branches from one input, then Add), run by
    ONNX Runtime, gives our inference scores."""
    ort = pytest.importorskip("onnxruntime")
    import im2colnet.onnx as inet_onnx
    from im2colnet.models import resnet_small
    model = resnet_small().reset_parameters(0)
    rng = np.random.default_rng(8)
    for name, array in {**model.parameters(), **{f"{i}/{k}": v for i, layer in enumerate(model.layers)
                                                   for k, v in layer.buffers.items()}}.items():
        if "gamma" in name or "beta" in name or "running_mean" in name:   # non-trivial BN
            array += 0.1 * rng.standard_normal(array.shape).astype(array.dtype)
    path = inet_onnx.export(model, tmp_path / "resnet_small.onnx")
    x = rng.random((3, 1, 28, 28), dtype=np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (theirs,) = session.run(None, {session.get_inputs()[0].name: x})
    np.testing.assert_allclose(theirs, model.predict(x), rtol=1e-4, atol=1e-5)
