"""Sequential.state_dict / load_state_dict: PyTorch nn.Sequential names, PyTorch's error reports,
and (when torch is installed) torch's own weights giving torch's outputs."""
import numpy as np
import pytest

import im2colnet as inet
from im2colnet import models
from im2colnet.state_dict import StateDictError

from _torch_models import images, in_eval_mode, numpy_state, torch_lenet5, torch_vgg_small

LENET5_KEYS = ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias",
               "9.weight", "9.bias", "11.weight", "11.bias"]


def test_lenet5_names_are_nn_sequentials():
    state = models.lenet5(pretrained=True).state_dict()
    assert list(state) == LENET5_KEYS
    assert state["0.weight"].shape == (6, 1, 5, 5) and state["7.weight"].shape == (120, 400)


def test_batchnorm_and_recurrent_names():
    state = models.vgg_small(pretrained=True).state_dict()
    assert list(state)[:7] == ["0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                               "1.num_batches_tracked", "3.weight"]
    assert state["1.num_batches_tracked"].dtype == np.int64 and state["1.num_batches_tracked"].shape == ()
    assert list(state)[-4:] == ["23.weight", "23.bias", "26.weight", "26.bias"]   # Flatten, Dropout count
    rec = inet.Sequential([inet.LSTM(3, 4, num_layers=2), inet.LastTimeStep(), inet.Linear(4, 2)],
                          input_shape=(5, 3))
    assert list(rec.state_dict()) == [f"0.{w}_l{k}" for k in (0, 1)
                                      for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")] + \
        ["2.weight", "2.bias"]


def test_state_dict_holds_copies_and_round_trips_exactly():
    source = models.vgg_small(pretrained=True)
    state = source.state_dict()
    state["0.weight"][...] = 0                    # a copy: the model is untouched
    assert np.any(source[0].params["weight"] != 0)
    target = models.vgg_small().reset_parameters(5)
    weight = target[0].params["weight"]
    assert target.load_state_dict(source.state_dict()) == ([], [])
    assert target[0].params["weight"] is weight    # written in place (optimizers keep their arrays)
    x = images(3)
    np.testing.assert_array_equal(target.predict(x), source.predict(x))


def test_strict_reports_missing_unexpected_and_mis_shaped_keys_and_changes_nothing():
    model = models.lenet5().reset_parameters(0)
    before = model.state_dict()
    state = models.lenet5(pretrained=True).state_dict()
    del state["3.bias"], state["11.weight"]
    state["12.weight"] = np.zeros(3, np.float32)
    state["7.weight"] = np.zeros((120, 401), np.float32)
    with pytest.raises(RuntimeError) as info:
        model.load_state_dict(state)
    message = str(info.value)
    assert message.startswith("Error(s) in loading state_dict for lenet5:")
    assert 'Missing key(s) in state_dict: "3.bias", "11.weight".' in message
    assert 'Unexpected key(s) in state_dict: "12.weight".' in message
    assert ("size mismatch for 7.weight: copying a param with shape (120, 401) from checkpoint, "
            "the shape in current model is (120, 400).") in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, StateDictError)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_non_strict_loads_what_matches_and_returns_the_rest():
    model = models.lenet5().reset_parameters(0)
    pretrained = models.lenet5(pretrained=True)
    state = pretrained.state_dict()
    del state["11.bias"]
    state["extra"] = np.ones(2)
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == ["11.bias"] and result.unexpected_keys == ["extra"]
    np.testing.assert_array_equal(model[0].params["weight"], pretrained[0].params["weight"])
    assert np.all(model[11].params["bias"] == 0)          # not in the dict: left as it was
    state["0.weight"] = state["0.weight"][:3]
    with pytest.raises(RuntimeError, match="size mismatch for 0.weight"):
        model.load_state_dict(state, strict=False)        # a wrong shape is an error either way


def test_unbuilt_models_and_bad_values():
    model = inet.Sequential([inet.Linear(3, 2)])
    with pytest.raises(ValueError, match="input_shape"):
        model.state_dict()
    with pytest.raises(ValueError, match="input_shape"):
        model.load_state_dict({})
    model = inet.Sequential([inet.Linear(3, 2)], input_shape=(3,))
    model.load_state_dict({"0.weight": np.ones((2, 3)), "0.bias": [1, 2]})     # built from input_shape
    assert model[0].params["weight"].dtype == np.float32
    np.testing.assert_array_equal(model.predict(np.ones((1, 3))), [[4, 5]])
    with pytest.raises(TypeError, match=r"state\['0.bias'\]: expected a numeric array"):
        model.load_state_dict({"0.weight": np.ones((2, 3)), "0.bias": np.array(["a", "b"])})
    with pytest.raises(TypeError, match="state: expected a dict"):
        model.load_state_dict([("0.weight", np.ones((2, 3)))])


# ---------------------------------------------------------------- PyTorch's own weights

@pytest.mark.parametrize("ours, theirs", [(models.lenet5, torch_lenet5), (models.vgg_small, torch_vgg_small)])
def test_torch_weights_give_torchs_outputs(ours, theirs):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = in_eval_mode(torch, theirs(torch))
    model = ours()
    model.load_state_dict(numpy_state(net))
    x = images(7)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-5, atol=1e-5)
    # and back: torch takes our dict with strict=True
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()}, strict=True)


def test_torch_recurrent_weights_give_torchs_outputs():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    nn = torch.nn
    cells = nn.ModuleList([nn.GRU(4, 6, batch_first=True), nn.LSTM(6, 5, num_layers=2, batch_first=True),
                           nn.RNN(5, 3, nonlinearity="relu", batch_first=True)])
    head = nn.Linear(3, 2)
    state = {f"{i}.{k}": v.detach().numpy() for i, cell in enumerate(cells) for k, v in cell.state_dict().items()}
    state.update({f"4.{k}": v.detach().numpy() for k, v in head.state_dict().items()})
    model = inet.Sequential([inet.GRU(4, 6), inet.LSTM(6, 5, num_layers=2), inet.RNN(5, 3, nonlinearity="relu"),
                             inet.LastTimeStep(), inet.Linear(3, 2)], input_shape=(7, 4))
    model.load_state_dict(state)
    x = np.random.default_rng(0).standard_normal((5, 7, 4)).astype(np.float32)
    with torch.no_grad():
        h = torch.from_numpy(x)
        for cell in cells:
            h = cell(h)[0]
        expected = head(h[:, -1]).numpy()
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-5, atol=1e-5)
