"""Sequential: shape checks, gradients through a model and its loss, learning, determinism,
callbacks, progress output, summary, configs and bad input."""
import json

import numpy as np
import pytest

import im2colnet as inet
from im2colnet.models import lenet5
import im2colnet.functional as F
from im2colnet.losses import CrossEntropyLoss
from im2colnet.optim import SGD
from _gradcheck import check_directional, check_param_gradients


def cross_entropy():
    return CrossEntropyLoss()


def sgd(lr):
    return SGD(lr)


def mlp(dropout=0.0, seed=0):
    model = inet.Sequential([inet.Linear(2, 16), inet.Tanh(), inet.Dropout(dropout),
                             inet.Linear(16, 2)], input_shape=(2,))
    return model.reset_parameters(seed)


def blobs(n, rng):
    """Two classes of 2-D points around (-1, -1) and (1, 1)."""
    y = rng.integers(0, 2, n)
    x = rng.standard_normal((n, 2)) * 0.5 + (2 * y[:, None] - 1)
    return x.astype(np.float32), y


def params_of(model):
    return {k: v.copy() for k, v in model.parameters().items()}


# -- construction -------------------------------------------------------------------------
@pytest.mark.parametrize("layers, shape, match", [
    ([inet.Linear(4, 8), inet.ReLU(), inet.Linear(9, 2)], (4,), r"layer 2 \(Linear\)"),
    ([inet.Conv2d(1, 6, 5), inet.ReLU()], (1, 3, 3), r"layer 0 \(Conv2d\)"),
    ([inet.Conv2d(1, 6, 3), inet.Conv2d(3, 6, 3)], (1, 8, 8), r"layer 1 \(Conv2d\)"),
    ([inet.Flatten(), inet.MaxPool2d(2)], (1, 4, 4), r"layer 1 \(MaxPool2d\)"),
    ([inet.Conv2d(1, 6, 3), inet.BatchNorm2d(4)], (1, 8, 8), r"layer 1 \(BatchNorm2d\)"),
])
def test_shapes_that_do_not_fit_name_the_layer(layers, shape, match):
    with pytest.raises(ValueError, match=match):
        inet.Sequential(layers, input_shape=shape)


def test_non_layers_are_rejected():
    with pytest.raises(TypeError, match="item 1"):
        inet.Sequential([inet.ReLU(), "relu"])


def test_summary_table_lists_shapes_and_counts():
    text = lenet5().summary()
    assert 'Model: "lenet5"' in text
    assert "(None, 6, 28, 28)" in text and "(None, 16, 5, 5)" in text and "(None, 10)" in text
    # 6*25+6 + 16*6*25+16 + 400*120+120 + 120*84+84 + 84*10+10
    assert "Total params: 61,706" in text
    assert "48,120" in text


def test_initialisation_follows_the_next_activation():
    model = inet.Sequential([inet.Conv2d(1, 4, 3), inet.BatchNorm2d(4), inet.ReLU(), inet.Flatten(),
                             inet.Linear(144, 8), inet.Tanh(), inet.Linear(8, 3)], input_shape=(1, 8, 8))
    model.reset_parameters(0)
    assert [getattr(l, "init", None) for l in model.layers if isinstance(l, (inet.Conv2d, inet.Linear))] \
        == ["he", "glorot", "glorot"]
    leaky = inet.Sequential([inet.Linear(4, 4), inet.LeakyReLU(0.1), inet.Linear(4, 2)],
                            input_shape=(4,)).reset_parameters(0)
    assert [l.init for l in leaky.layers if isinstance(l, inet.Linear)] == ["he", "glorot"]
    again = inet.Sequential.from_config(model.get_config()).reset_parameters(0)
    for key, value in model.parameters().items():
        np.testing.assert_array_equal(again.parameters()[key], value)


def test_config_round_trip_and_unknown_types():
    model = lenet5()
    config = json.loads(json.dumps(model.get_config()))
    assert config["input_shape"] == [1, 28, 28] and config["layers"][0]["type"] == "Conv2d"
    clone = inet.Sequential.from_config(config)
    assert clone.get_config() == config and clone.name == "lenet5"
    config["layers"][1]["type"] = "Lambda"
    with pytest.raises(ValueError, match="Lambda"):
        inet.Sequential.from_config(config)
    with pytest.raises(ValueError, match="extra"):
        inet.Sequential.from_config({**model.get_config(), "extra": 1})


# -- gradients through the model and the loss ----------------------------------------------
def check_model_gradients(model, x, y, seed=0):
    """Central differences of the mean loss against model.backward, for x and every parameter."""
    rng = np.random.default_rng(seed)
    loss = cross_entropy()
    dropouts = [layer for layer in model.layers if isinstance(layer, inet.Dropout)]

    def scores_at(xv):
        for layer in dropouts:
            layer.rng = np.random.default_rng(5)       # the same mask every evaluation
        return model.forward(xv, training=True)

    def objective(xv):
        return float(loss(scores_at(xv), y)[0])

    dx = model.backward(loss(scores_at(x), y)[1])
    grads = {k: v.copy() for k, v in model.gradients().items()}
    check_directional(objective, x, dx, rng)
    check_param_gradients(lambda: objective(x), model.parameters(), grads, rng)


def test_gradcheck_through_a_dense_model_and_its_loss():
    rng = np.random.default_rng(30)
    model = inet.Sequential([inet.Linear(6, 8, bias=False), inet.BatchNorm1d(8), inet.ELU(), inet.Maxout(2),
                             inet.Dropout(0.3), inet.Linear(4, 6), inet.Sigmoid(), inet.Linear(6, 3)],
                            input_shape=(6,)).astype(np.float64).reset_parameters(1)
    check_model_gradients(model, rng.standard_normal((5, 6)), rng.integers(0, 3, 5))


def test_gradcheck_through_a_conv_model_and_its_loss():
    rng = np.random.default_rng(31)
    model = inet.Sequential([inet.Conv2d(2, 3, 3, padding=1, bias=False), inet.BatchNorm2d(3), inet.Tanh(),
                             inet.AvgPool2d(2), inet.Conv2d(3, 4, 2, stride=1, dilation=1), inet.Tanh(),
                             inet.Flatten(), inet.Linear(4 * 2 * 2, 3)],
                            input_shape=(2, 6, 6)).astype(np.float64).reset_parameters(2)
    check_model_gradients(model, rng.standard_normal((3, 2, 6, 6)), rng.integers(0, 3, 3))


# -- learning -------------------------------------------------------------------------------
def test_learns_xor_with_linear_and_tanh():
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array([0, 1, 1, 0])
    model = inet.Sequential([inet.Linear(2, 8), inet.Tanh(), inet.Linear(8, 2)], input_shape=(2,), seed=0)
    history = model.fit(x, y, epochs=400, batch_size=4, optimizer=sgd(0.5), loss=cross_entropy(),
                        verbose=0, seed=0)
    assert history.history["accuracy"][-1] == 1.0
    assert history.history["loss"][-1] < 0.1 < history.history["loss"][0]
    np.testing.assert_array_equal(model.predict(x).argmax(axis=1), y)


def test_small_conv_net_separates_two_image_classes():
    rng = np.random.default_rng(32)

    def images(n):
        y = rng.integers(0, 2, n)
        x = rng.standard_normal((n, 1, 8, 8)).astype(np.float32) * 0.5
        x[y == 0, 0, :4, :4] += 1.0          # class 0: bright top-left
        x[y == 1, 0, 4:, 4:] += 1.0          # class 1: bright bottom-right
        return x, y
    (x, y), (xt, yt) = images(256), images(128)
    model = inet.Sequential([inet.Conv2d(1, 4, 3, padding=1), inet.ReLU(), inet.MaxPool2d(2),
                             inet.Flatten(), inet.Linear(64, 2)], input_shape=(1, 8, 8), seed=1)
    model.fit(x, y, epochs=4, batch_size=32, optimizer=sgd(0.1), loss=cross_entropy(), verbose=0, seed=1)
    assert model.evaluate(xt, yt, loss=cross_entropy())["accuracy"] >= 0.95


# -- determinism ---------------------------------------------------------------------------
def test_same_seed_gives_bit_identical_weights():
    x, y = blobs(100, np.random.default_rng(33))
    runs = []
    for seed in (7, 7, 8):
        model = mlp(dropout=0.3)
        model.fit(x, y, epochs=2, batch_size=16, optimizer=sgd(0.1), loss=cross_entropy(),
                  verbose=0, seed=seed)
        runs.append(params_of(model))
    for key in runs[0]:
        np.testing.assert_array_equal(runs[0][key], runs[1][key])
    assert any(not np.array_equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_resuming_with_initial_epoch_is_exact():
    x, y = blobs(90, np.random.default_rng(34))
    whole = mlp(dropout=0.2)
    whole.fit(x, y, epochs=3, batch_size=16, optimizer=sgd(0.1), loss=cross_entropy(), verbose=0, seed=5)
    parts = mlp(dropout=0.2)
    parts.fit(x, y, epochs=1, batch_size=16, optimizer=sgd(0.1), loss=cross_entropy(), verbose=0, seed=5)
    history = parts.fit(x, y, epochs=3, batch_size=16, optimizer=sgd(0.1), loss=cross_entropy(),
                        verbose=0, seed=5, initial_epoch=1)
    assert history.epoch == [1, 2]
    for key, value in whole.parameters().items():
        np.testing.assert_array_equal(parts.parameters()[key], value)


# -- fit's outputs, callbacks, progress --------------------------------------------------------
def test_history_and_evaluate():
    rng = np.random.default_rng(35)
    (x, y), (xv, yv) = blobs(64, rng), blobs(32, rng)
    model = mlp()
    history = model.fit(x, y, epochs=3, batch_size=10, optimizer=sgd(0.1), loss=cross_entropy(),
                        validation_data=(xv, yv), verbose=0, seed=0)
    h = history.history
    assert set(h) >= {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "time"}
    assert all(len(v) == 3 for v in h.values()) and history.epoch == [0, 1, 2]
    scores = model.predict(xv, batch_size=7)
    np.testing.assert_allclose(scores, model.forward(xv), rtol=1e-6)
    result = model.evaluate(xv, yv, batch_size=5)
    assert result["loss"] == pytest.approx(F.softmax_cross_entropy(scores, yv)[0], rel=1e-5)
    assert result["accuracy"] == np.mean(scores.argmax(axis=1) == yv)
    assert h["val_loss"][-1] == pytest.approx(result["loss"], rel=1e-6)


def test_batch_callbacks_and_early_stopping_in_fit():
    x, y = blobs(50, np.random.default_rng(36))
    steps = []
    cb = inet.LambdaCallback(on_batch_end=lambda step, logs: steps.append((step, logs["size"])))
    # mode="max" on a falling loss: no epoch after the first counts as an improvement
    stop = inet.EarlyStopping(monitor="loss", patience=1, mode="max")
    history = mlp().fit(x, y, epochs=10, batch_size=16, optimizer=sgd(0.1), loss=cross_entropy(),
                        callbacks=[cb, stop], verbose=0, seed=0)
    assert len(history.epoch) == 3 and stop.stopped_epoch == 2
    assert [s for s, _ in steps[:4]] == [0, 1, 2, 3] and [n for _, n in steps[:4]] == [16, 16, 16, 2]


def test_early_stopping_restores_the_best_weights():
    model = mlp()
    stop = inet.EarlyStopping(monitor="val_loss", patience=1, restore_best=True)
    stop.set_model(model)
    stop.on_train_begin()
    w = model.layers[0].params["weight"]
    best = None
    for epoch, value in enumerate([1.0, 0.5, 0.7, 0.8]):
        w += 1.0                                  # training changes the weights
        if value == 0.5:
            best = w.copy()
        stop.on_epoch_end(epoch, {"val_loss": value})
    assert model.stop_training and stop.best_epoch == 1 and stop.stopped_epoch == 3
    stop.on_train_end()
    np.testing.assert_array_equal(model.layers[0].params["weight"], best)
    with pytest.raises(KeyError, match="val_accuracy"):
        inet.EarlyStopping(monitor="val_accuracy").on_epoch_end(0, {"loss": 1.0})


def test_model_checkpoint_saves_only_improvements():
    model = mlp()
    saved = []
    model.save = lambda path, metadata=None, optimizer=None: saved.append((path, metadata["epoch"]))
    cb = inet.ModelCheckpoint("m-{epoch:02d}.h5", save_best_only=True)
    cb.set_model(model)
    for epoch, value in enumerate([1.0, 0.6, 0.9, 0.4]):
        cb.on_epoch_end(epoch, {"val_loss": value})
    assert saved == [("m-01.h5", 1), ("m-02.h5", 2), ("m-04.h5", 4)]
    every = inet.ModelCheckpoint("last.h5")
    every.set_model(model)
    every.on_epoch_end(0, {"loss": 1.0})
    assert saved[-1] == ("last.h5", 1)


@pytest.mark.parametrize("verbose", [0, 1, 2])
def test_progress_output_on_stderr(verbose, capsys):
    x, y = blobs(40, np.random.default_rng(37))
    mlp().fit(x, y, epochs=2, batch_size=8, optimizer=sgd(0.1), loss=cross_entropy(),
              verbose=verbose, seed=0)
    out, err = capsys.readouterr()
    assert out == ""
    if verbose == 0:
        assert err == ""
    else:
        assert err.count("\n") == 2 and "img/s" in err and "loss" in err and "Epoch 2/2" in err
    if verbose == 1:
        assert "ETA" in err and "acc" in err


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("labels, error, match", [
    (np.array([0, 1, 2, 1]), ValueError, r"labels must lie in \[0, 2\)"),
    (np.array([0, 1, -1, 1]), ValueError, r"labels must lie in"),
    (np.array([0, 1, 1]), ValueError, "3 targets for 4 samples"),
    (np.array([0.5, 1, 1, 0]), ValueError, "whole numbers"),
    (np.array(["a", "b", "a", "b"]), TypeError, "integers"),
])
def test_bad_labels_are_rejected_before_training(labels, error, match):
    model = mlp()
    before = params_of(model)
    with pytest.raises(error, match=match):
        model.fit(np.zeros((4, 2)), labels, epochs=1, optimizer=sgd(0.1), loss=cross_entropy(), verbose=0)
    for key, value in before.items():
        np.testing.assert_array_equal(model.parameters()[key], value)


def test_bad_inputs_name_the_argument():
    model = mlp()
    with pytest.raises(ValueError, match=r"x: the model expects samples of shape \(2,\)"):
        model.predict(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="batch_size"):
        model.fit(np.zeros((4, 2)), np.zeros(4, int), epochs=1, batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="validation_data"):
        model.fit(np.zeros((4, 2)), np.zeros(4, int), epochs=1, validation_data=np.zeros(3),
                  optimizer=sgd(0.1), loss=cross_entropy(), verbose=0)


def test_non_finite_loss_or_gradient_names_epoch_and_step():
    x, y = blobs(64, np.random.default_rng(38))
    model = mlp()
    model.fit(x, y, epochs=1, batch_size=16, optimizer=sgd(0.1), loss=cross_entropy(), verbose=0, seed=0)
    x_bad = x.copy()
    x_bad[11] = np.nan
    step = int(np.flatnonzero(np.random.default_rng([0, 1]).permutation(64) == 11)[0]) // 16
    with pytest.raises(FloatingPointError, match=rf"epoch 1, step {step} .*loss"):
        model.fit(x_bad, y, epochs=2, batch_size=16, optimizer=sgd(0.1), loss=cross_entropy(),
                  verbose=0, seed=0, initial_epoch=1)

    class InfGradient(CrossEntropyLoss):
        def __call__(self, scores, target):
            value, d = super().__call__(scores, target)
            d[0, 0] = np.inf
            return value, d
    with pytest.raises(FloatingPointError, match=r"epoch 0, step 0 .*gradient of parameter \d+/weight"):
        mlp().fit(x, y, epochs=1, batch_size=16, optimizer=sgd(0.1), loss=InfGradient(), verbose=0, seed=0)


def test_float64_models_compute_in_float64():
    model = mlp().astype(np.float64)
    assert model.forward(np.zeros((2, 2), dtype=np.float32)).dtype == np.float64
    assert all(p.dtype == np.float64 for p in model.parameters().values())


def test_lenet_scores_and_gradients_match_torch():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    model = lenet5().astype(np.float64).reset_parameters(3)
    ref = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5),
                        nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(),
                        nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10)).double()
    ours = [l for l in model.layers if l.params]
    theirs = [m for m in ref if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for a, b in zip(ours, theirs):
            b.weight.copy_(torch.from_numpy(a.params["weight"]))
            b.bias.copy_(torch.from_numpy(a.params["bias"]))
    rng = np.random.default_rng(39)
    x, y = rng.standard_normal((5, 1, 28, 28)), rng.integers(0, 10, 5)
    loss = cross_entropy()
    scores = model.forward(x, training=True)
    value, dscores = loss(scores, y)
    dx = model.backward(dscores)
    tx = torch.from_numpy(x).requires_grad_()
    tscores = ref(tx)
    tloss = nn.functional.cross_entropy(tscores, torch.from_numpy(y))
    tloss.backward()
    np.testing.assert_allclose(scores, tscores.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert value == pytest.approx(tloss.item(), rel=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-9, atol=1e-14)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.grads["weight"], b.weight.grad.numpy(), rtol=1e-9, atol=1e-14)
        np.testing.assert_allclose(a.grads["bias"], b.bias.grad.numpy(), rtol=1e-9, atol=1e-14)


def test_one_hot_targets_train_exactly_like_int_labels():
    x, y = blobs(48, np.random.default_rng(40))
    a, b = mlp(), mlp()
    ha = a.fit(x, y, epochs=2, batch_size=16, optimizer=sgd(0.1), loss=cross_entropy(), verbose=0, seed=1)
    hb = b.fit(x, np.eye(2)[y], epochs=2, batch_size=16, optimizer=sgd(0.1), loss="cross_entropy",
               verbose=0, seed=1)
    for key, value in a.parameters().items():
        np.testing.assert_array_equal(b.parameters()[key], value)
    assert ha.history["accuracy"] == hb.history["accuracy"]


@pytest.mark.parametrize("loss, labels", [("logistic", (0, 1)), ("signed_logistic", (-1, 1))])
def test_binary_losses_with_one_output(loss, labels):
    x, y = blobs(200, np.random.default_rng(41))
    target = np.where(y == 1, labels[1], labels[0])
    model = inet.Sequential([inet.Linear(2, 1)], input_shape=(2,), seed=0)
    history = model.fit(x, target, epochs=5, batch_size=20, optimizer="sgd", loss=loss, verbose=0, seed=0)
    assert history.history["accuracy"][-1] > 0.9
    result = model.evaluate(x, target)
    assert result["accuracy"] == np.mean((model.predict(x)[:, 0] > 0) == (y == 1))


def test_default_loss_and_optimizer_and_unknown_names():
    x, y = blobs(32, np.random.default_rng(42))
    model = mlp()
    history = model.fit(x, y, epochs=1, verbose=0, seed=0)
    assert type(model.optimizer).__name__ == "Adam" and type(model.loss).__name__ == "CrossEntropyLoss"
    assert history.history["lr"] == [pytest.approx(1e-3)]
    with pytest.raises(ValueError, match="optimizer"):
        model.fit(x, y, epochs=1, optimizer="rmsprop", verbose=0)
    with pytest.raises(ValueError, match="loss"):
        model.fit(x, y, epochs=1, loss="focal", verbose=0)


def test_resuming_from_copied_weights_and_optimizer_state_is_exact():
    from im2colnet.optim import Adam
    x, y = blobs(80, np.random.default_rng(43))
    whole = mlp(dropout=0.3)
    whole.fit(x, y, epochs=2, batch_size=16, optimizer=Adam(0.01), verbose=0, seed=9)
    first, opt = mlp(dropout=0.3), Adam(0.01)
    first.fit(x, y, epochs=1, batch_size=16, optimizer=opt, verbose=0, seed=9)
    resumed, opt2 = mlp(dropout=0.3, seed=123), Adam(0.01)      # other initial weights ...
    resumed.load_state(first.state_copy())                         # ... replaced by the saved ones
    opt2.load_state_dict(opt.state_dict())
    resumed.fit(x, y, epochs=2, batch_size=16, optimizer=opt2, verbose=0, seed=9, initial_epoch=1)
    for key, value in whole.parameters().items():
        np.testing.assert_array_equal(resumed.parameters()[key], value)


def test_save_load_and_resume_is_bit_identical(tmp_path):
    from im2colnet.optim import Adam
    x, y = blobs(64, np.random.default_rng(44))
    model = inet.Sequential([inet.Linear(2, 8), inet.BatchNorm1d(8), inet.ReLU(), inet.Dropout(0.2),
                             inet.Linear(8, 2)], input_shape=(2,)).reset_parameters(0)
    twin = inet.Sequential.from_config(model.get_config()).reset_parameters(0)
    model.fit(x, y, epochs=2, batch_size=16, optimizer=Adam(0.01), verbose=0, seed=3)
    opt = Adam(0.01)
    twin.fit(x, y, epochs=1, batch_size=16, optimizer=opt, verbose=0, seed=3)
    path = tmp_path / "twin.h5"
    twin.save(path, metadata={"note": "after epoch 1"}, optimizer=opt)
    loaded = inet.load_model(path, with_optimizer=True)
    restored, restored_opt = loaded if isinstance(loaded, tuple) else (loaded, loaded.optimizer)
    for i, layer in enumerate(twin.layers):
        for key, value in {**layer.params, **layer.buffers}.items():
            np.testing.assert_array_equal(value, {**restored.layers[i].params,
                                                  **restored.layers[i].buffers}[key])
    restored.fit(x, y, epochs=2, batch_size=16, optimizer=restored_opt, verbose=0, seed=3, initial_epoch=1)
    for i, layer in enumerate(model.layers):
        for key, value in {**layer.params, **layer.buffers}.items():
            np.testing.assert_array_equal({**restored.layers[i].params,
                                           **restored.layers[i].buffers}[key], value)


def test_model_checkpoint_writes_loadable_files(tmp_path):
    rng = np.random.default_rng(45)
    (x, y), (xv, yv) = blobs(48, rng), blobs(24, rng)
    model = mlp()
    cb = inet.ModelCheckpoint(str(tmp_path / "best.h5"), save_best_only=True)
    model.fit(x, y, epochs=3, batch_size=16, optimizer=sgd(0.1), validation_data=(xv, yv),
              callbacks=[cb], verbose=0, seed=0)
    assert cb.saved and all(p == str(tmp_path / "best.h5") for p in cb.saved)
    loaded = inet.load_model(tmp_path / "best.h5")
    assert loaded.get_config() == model.get_config()


def test_summary_counts_batchnorm_parameters_and_buffers_without_building():
    model = inet.Sequential([inet.Conv2d(1, 2, 3, bias=False), inet.BatchNorm2d(2, mode="per_activation"),
                             inet.Flatten(), inet.Linear(18, 3)], input_shape=(1, 5, 5))
    text = model.summary()
    # conv 2*9, BN gamma+beta 2*(2*3*3), linear 18*3+3; buffers: running mean+var 2*(2*3*3)
    assert f"Total params: {18 + 36 + 57:,}" in text and "Buffers (non-trainable): 36" in text
    assert not model.built
    assert "?" in inet.Sequential([inet.Linear(3, 2)]).summary()
