"""Recurrent layers: finite-difference BPTT checks (input, every weight, the initial state),
PyTorch agreement by parameter name, a memory task learned with fit, save/load, bad input."""
import numpy as np
import pytest

import im2colnet as inet
from _gradcheck import check_directional, check_param_gradients

KINDS = {
    "rnn_tanh": lambda f, h, L, rng: inet.RNN(f, h, L, rng=rng),
    "rnn_relu": lambda f, h, L, rng: inet.RNN(f, h, L, nonlinearity="relu", rng=rng),
    "lstm": lambda f, h, L, rng: inet.LSTM(f, h, L, rng=rng),
    "gru": lambda f, h, L, rng: inet.GRU(f, h, L, rng=rng),
}


def make(kind, f=3, h=4, layers=2, seed=0):
    """A float64 layer whose weights come from `seed` (they are drawn at construction)."""
    layer = KINDS[kind](f, h, layers, np.random.default_rng(seed)).astype(np.float64)
    layer.build((5, f))
    return layer


def random_state(layer, n, rng):
    shape = (layer.num_layers, n, layer.hidden_size)
    parts = tuple(rng.standard_normal(shape) * 0.5 for _ in range(layer.STATES))
    return parts[0] if len(parts) == 1 else parts


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_bptt_gradients_by_finite_differences(kind):
    """T = 5 >= 3 steps, 2 stacked layers; the loss <y, g> + <last_state, g_state>."""
    rng = np.random.default_rng(1)
    layer = make(kind)
    x = rng.standard_normal((2, 5, 3))
    h0 = random_state(layer, 2, rng)
    g = rng.standard_normal((2, 5, 4))
    g_state = tuple(rng.standard_normal((2, 2, 4)) for _ in range(layer.STATES))

    def loss(x_=x, h0_=h0):
        y = layer.forward(x_, initial_state=h0_)
        return np.sum(y * g) + sum(np.sum(s * gs) for s, gs in zip(layer.last_state, g_state))

    layer.forward(x, training=True, initial_state=h0)
    dx = layer.backward(g, d_last_state=g_state)
    grads = {k: v.copy() for k, v in layer.grads.items()}
    d_init = layer.initial_state_grad
    check_directional(lambda v: loss(x_=v), x, dx, rng)
    check_param_gradients(loss, layer.params, grads, rng)
    states = (h0,) if layer.STATES == 1 else h0
    for k, state in enumerate(states):
        def loss_state(v, k=k):
            parts = list(states)
            parts[k] = v
            return loss(h0_=parts[0] if layer.STATES == 1 else tuple(parts))
        check_directional(loss_state, state, d_init[k], rng)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_against_torch_by_parameter_name(kind):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    layer = make(kind, f=3, h=5, layers=2)
    cls = {"rnn_tanh": torch.nn.RNN, "rnn_relu": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind]
    extra = {"nonlinearity": "relu"} if kind == "rnn_relu" else {}
    ref = cls(3, 5, num_layers=2, batch_first=True, **extra).double()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            p.copy_(torch.tensor(layer.params[name]))      # the same names, the same layouts
    x = rng.standard_normal((3, 6, 3))
    h0 = random_state(layer, 3, rng)
    xt = torch.tensor(x, requires_grad=True)
    h0t = tuple(torch.tensor(s, requires_grad=True) for s in ((h0,) if layer.STATES == 1 else h0))
    yt, state_t = ref(xt, h0t[0] if layer.STATES == 1 else h0t)
    y = layer.forward(x, training=True, initial_state=h0)
    assert np.allclose(y, yt.detach().numpy(), atol=1e-12)
    state_t = (state_t,) if layer.STATES == 1 else state_t
    for ours, theirs in zip(layer.last_state, state_t):
        assert np.allclose(ours, theirs.detach().numpy(), atol=1e-12)
    g = rng.standard_normal(y.shape)
    yt.backward(torch.tensor(g))
    dx = layer.backward(g)
    assert np.allclose(dx, xt.grad.numpy(), atol=1e-10)
    for name, p in ref.named_parameters():
        assert np.allclose(layer.grads[name], p.grad.numpy(), atol=1e-10), name
    for ours, theirs in zip(layer.initial_state_grad, h0t):
        assert np.allclose(ours, theirs.grad.numpy(), atol=1e-10)


def test_lstm_learns_a_task_that_needs_memory():
    """Classify a sequence by its FIRST element's sign, read after 8 noise steps."""
    rng = np.random.default_rng(4)
    n, T = 512, 9
    x = rng.standard_normal((n, T, 1)) * 0.5
    first = rng.choice([-1.0, 1.0], n)
    x[:, 0, 0] = first
    y = (first > 0).astype(np.int64)
    model = inet.Sequential([inet.LSTM(1, 12), inet.LastTimeStep(), inet.Linear(12, 2)],
                            input_shape=(T, 1), seed=0)
    model.fit(x, y, epochs=15, batch_size=32, optimizer=inet.optim.Adam(0.02), verbose=0, seed=0)
    assert model.evaluate(x, y)["accuracy"] > 0.95


@pytest.mark.parametrize("kind", ["gru", "rnn_tanh"])
def test_sequence_classifier_trains_and_round_trips_through_a_file(kind, tmp_path):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, 4, 3))
    y = (x[:, :, 0].sum(axis=1) > 0).astype(np.int64)
    model = inet.Sequential([KINDS[kind](3, 6, 2, None), inet.Dropout(0.1), inet.Linear(6, 6), inet.ReLU(),
                             inet.LastTimeStep(), inet.Linear(6, 2)], input_shape=(4, 3), seed=0)
    model.fit(x, y, epochs=3, batch_size=16, verbose=0, seed=0)
    path = model.save(tmp_path / "seq.h5")
    loaded = inet.load_model(path)
    assert np.array_equal(loaded.predict(x), model.predict(x))
    assert loaded.get_config() == model.get_config()


def test_linear_maps_sequences_step_by_step():
    rng = np.random.default_rng(6)
    lin = inet.Linear(3, 2).astype(np.float64)
    x = rng.standard_normal((4, 5, 3))
    y = lin.forward(x, training=True)
    assert y.shape == (4, 5, 2)
    assert np.allclose(y[:, 2], x[:, 2] @ lin.params["weight"].T + lin.params["bias"])
    g = rng.standard_normal(y.shape)
    dx = lin.backward(g)
    assert dx.shape == x.shape and np.allclose(dx, g @ lin.params["weight"])
    assert lin.output_shape((5, 3)) == (5, 2)


@pytest.mark.parametrize("call, words", [
    (lambda l: l.forward(np.ones((2, 5))), ["x", "(N, T, 3)"]),
    (lambda l: l.forward(np.ones((2, 5, 4))), ["x", "(2, 5, 4)"]),
    (lambda l: l.forward(np.ones((2, 5, 3)), initial_state=np.ones((1, 2, 4))), ["initial_state", "(2, 2, 4)"]),
    (lambda l: l.forward(np.ones((2, 5, 3)), initial_state=(np.ones((2, 2, 4)),) * 2), ["initial_state", "1 state"]),
    (lambda l: l.backward(np.ones((2, 5, 4))), ["forward"]),
    (lambda l: inet.RNN(3, 4, nonlinearity="sigmoid"), ["nonlinearity"]),
    (lambda l: inet.GRU(3, 0), ["hidden_size"]),
    (lambda l: inet.Sequential([inet.LSTM(3, 4)], input_shape=(5, 2)), ["layer 0", "LSTM"]),
])
def test_bad_input_is_a_clear_error(call, words):
    layer = make("rnn_tanh", f=3, h=4, layers=2)
    with pytest.raises((ValueError, RuntimeError)) as info:
        call(layer)
    for word in words:
        assert word in str(info.value)
