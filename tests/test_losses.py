"""Losses against naive per-sample loops, central-difference gradients, torch, bad targets."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import im2colnet as inet
from im2colnet import losses
from im2colnet.losses import (CrossEntropyLoss, HingeLoss, LogisticLoss, MSELoss, NLLLoss,
                              SignedLogisticLoss, get_loss, LOSSES)
from _gradcheck import check_elementwise


# ---------------------------------------------------------------------------------------
# Independent references: one sample at a time, plain Python math.

def naive_cross_entropy(s, z):
    total = 0.0
    for row, zrow in zip(s.reshape(len(s), -1), z):
        log_norm = math.log(sum(math.exp(v) for v in row))
        total -= sum(zk * (v - log_norm) for v, zk in zip(row, zrow) if zk > 0)
    return total / len(s)


def naive_mse(s, t):
    s, t = s.ravel(), t.ravel()
    return sum((a - b) ** 2 for a, b in zip(s, t)) / len(s)


def naive_logistic(s, t):
    """-t log sigma(s) - (1 - t) log(1 - sigma(s)), moderate scores only."""
    total = 0.0
    for v, y in zip(s.ravel(), t.ravel()):
        sig = 1 / (1 + math.exp(-v))
        total -= y * math.log(sig) + (1 - y) * math.log(1 - sig)
    return total / s.shape[0]


def naive_signed_logistic(s, y):
    return sum(math.log(1 + math.exp(-b * v)) for v, b in zip(s.ravel(), y.ravel())) / s.shape[0]


def naive_hinge(s, labels, margin=1.0):
    s2 = s.reshape(len(s), -1)
    total = 0.0
    for row, y in zip(s2, labels):
        total += sum(max(0.0, row[j] - row[y] + margin) for j in range(len(row)) if j != y)
    return total / len(s)


def one_hot(labels, k):
    z = np.zeros((len(labels), k))
    z[np.arange(len(labels)), labels] = 1
    return z


def soft_labels(rng, n, k):
    z = rng.random((n, k))
    return z / z.sum(axis=1, keepdims=True)


def hinge_scores(rng, n, k):
    """Scores whose margins s_j - s_y + 1 all stay at least 0.05 away from the kink at 0."""
    while True:
        s = rng.standard_normal((n, k)) * 2
        labels = rng.integers(0, k, n)
        m = s - s[np.arange(n), labels][:, None] + 1
        m[np.arange(n), labels] = 1
        if np.abs(m).min() > 0.05:
            return s, labels


# Each case: (loss, scores, target, naive loss value) built from one seeded generator.
def cases():
    rng = np.random.default_rng(0)
    s = rng.standard_normal((5, 4)) * 2
    labels = rng.integers(0, 4, 5)
    yield "ce-int", CrossEntropyLoss(), s, labels, naive_cross_entropy(s, one_hot(labels, 4))
    z = soft_labels(rng, 5, 4)
    yield "ce-soft", CrossEntropyLoss(), s, z, naive_cross_entropy(s, z)
    s4 = rng.standard_normal((3, 2, 2, 2))
    lab4 = rng.integers(0, 8, 3)
    yield "ce-4d", CrossEntropyLoss(), s4, lab4, naive_cross_entropy(s4, one_hot(lab4, 8))
    t = rng.standard_normal((5, 4))
    yield "mse", MSELoss(), s, t, naive_mse(s, t)
    yield "mse-4d", MSELoss(), s4, s4[::-1] * 0.5, naive_mse(s4, s4[::-1] * 0.5)
    yield "mse-onehot", MSELoss(), s, labels, naive_mse(s, one_hot(labels, 4))
    b = rng.standard_normal(6) * 3
    t01 = rng.integers(0, 2, 6)
    yield "logistic", LogisticLoss(), b, t01, naive_logistic(b, t01)
    yield "logistic-col", LogisticLoss(), b[:, None], t01, naive_logistic(b, t01)
    tp = rng.random(6)
    yield "logistic-soft", LogisticLoss(), b, tp, naive_logistic(b, tp)
    ypm = 2 * t01 - 1
    yield "signed", SignedLogisticLoss(), b[:, None], ypm[:, None], naive_signed_logistic(b, ypm)
    sh, lh = hinge_scores(rng, 6, 5)
    yield "hinge", HingeLoss(), sh, lh, naive_hinge(sh, lh)
    yield "hinge-margin", HingeLoss(margin=0.5), sh, lh, naive_hinge(sh, lh, 0.5)


CASES = {c[0]: c[1:] for c in cases()}


@pytest.mark.parametrize("name", CASES)
def test_loss_matches_naive_and_finite_differences(name):
    loss, s, t, expected = CASES[name]
    value, ds = loss(s, t)
    assert isinstance(value, float)
    assert value == pytest.approx(expected, rel=1e-12, abs=1e-14)
    assert ds.shape == s.shape and ds.dtype == np.float64
    check_elementwise(lambda x: loss(x, t)[0], s, ds)


@pytest.mark.parametrize("name", CASES)
def test_float32_keeps_dtype_and_agrees(name):
    loss, s, t, _ = CASES[name]
    value64, ds64 = loss(s, t)
    value32, ds32 = loss(s.astype(np.float32), t)
    assert ds32.dtype == np.float32 and ds32.shape == s.shape
    assert value32 == pytest.approx(value64, rel=1e-5)
    np.testing.assert_allclose(ds32, ds64, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["ce-int", "mse", "logistic-col", "hinge"])
def test_non_contiguous_scores(name):
    loss, s, t, _ = CASES[name]
    fortran = np.asfortranarray(s)
    strided = np.repeat(s, 2, axis=0)[::2]
    readonly = s.copy()
    readonly.flags.writeable = False
    value, ds = loss(s, t)
    for other in (fortran, strided, readonly):
        v, d = loss(other, t)
        assert v == value
        np.testing.assert_array_equal(d, ds)
    assert np.array_equal(readonly, s)  # inputs are not modified


def test_logistic_is_stable_for_huge_scores():
    s = np.array([1e4, -1e4, 800.0, -800.0, 0.0])
    t = np.array([1, 0, 0, 1, 1])
    value, ds = LogisticLoss()(s, t)
    # The wrong-side scores cost |s| each, the right-side ones 0, and s = 0 costs log 2.
    assert value == pytest.approx((800 + 800 + math.log(2)) / 5, rel=1e-12)
    np.testing.assert_allclose(ds, np.array([0, 0, 1, -1, -0.5]) / 5, atol=1e-15)
    value, ds = SignedLogisticLoss()(s.astype(np.float32), 2 * t - 1)
    assert np.isfinite(value) and np.all(np.isfinite(ds))


def test_signed_logistic_equals_logistic_with_mapped_labels():
    rng = np.random.default_rng(1)
    s = rng.standard_normal(7)
    y = rng.choice([-1, 1], 7)
    a, da = SignedLogisticLoss()(s, y)
    b, db = LogisticLoss()(s, (y + 1) // 2)
    assert a == pytest.approx(b, rel=1e-14)
    np.testing.assert_allclose(da, db, rtol=1e-14)


def test_hinge_gradient_at_the_kink_is_zero_for_that_class():
    s = np.array([[1.0, 0.0, 3.0]])  # class 1: margins 1-0+1 = 2, 3-0+1 = 4
    value, ds = HingeLoss()(s, [1])
    assert value == 6.0
    np.testing.assert_array_equal(ds, [[1.0, -2.0, 1.0]])
    s = np.array([[0.0, 1.0, 0.5]])  # class 1: margin of class 0 exactly 0 (inactive), class 2 0.5
    value, ds = HingeLoss()(s, [1])
    assert value == 0.5
    np.testing.assert_array_equal(ds, [[0.0, -1.0, 1.0]])


def test_mse_column_scores_take_flat_targets():
    s = np.array([[1.0], [2.0], [4.0]])
    value, ds = MSELoss()(s, [0.0, 2.0, 1.0])
    assert value == pytest.approx((1 + 0 + 9) / 3)
    np.testing.assert_allclose(ds, [[2 / 3], [0.0], [2.0]])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 6), k=st.integers(2, 6), seed=st.integers(0, 2**32 - 1),
       scale=st.sampled_from([1e-3, 1.0, 30.0]), shift=st.floats(-50, 50))
def test_classification_invariants(n, k, seed, scale, shift):
    """Cross-entropy and hinge: non-negative, unchanged when a constant is added to a row
    of scores, gradient rows summing to 0 (both depend on score differences only)."""
    rng = np.random.default_rng(seed)
    s = rng.standard_normal((n, k)) * scale
    labels = rng.integers(0, k, n)
    for loss in (CrossEntropyLoss(), HingeLoss()):
        value, ds = loss(s, labels)
        shifted, ds_shifted = loss(s + shift, labels)
        assert value >= 0 and shifted == pytest.approx(value, rel=1e-9, abs=1e-9)
        np.testing.assert_allclose(ds.sum(axis=1), 0, atol=1e-12)
        np.testing.assert_allclose(ds_shifted, ds, atol=1e-9)
    # cross-entropy lies between 0 and log K + the largest score gap
    value, _ = CrossEntropyLoss()(s, labels)
    assert value <= math.log(k) + np.ptp(s, axis=1).max() + 1e-12


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 8), seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([1e-3, 1.0, 50.0]))
def test_binary_losses_are_symmetric(n, seed, scale):
    """Logistic loss: flipping the sign of the score and of the label (0 <-> 1) changes nothing;
    the gradient flips sign and lies in [-1/N, 1/N]."""
    rng = np.random.default_rng(seed)
    s = rng.standard_normal(n) * scale
    t = rng.integers(0, 2, n)
    value, ds = LogisticLoss()(s, t)
    flipped, ds_flipped = LogisticLoss()(-s, 1 - t)
    assert value >= 0 and flipped == pytest.approx(value, rel=1e-12, abs=1e-300)
    np.testing.assert_allclose(ds_flipped, -ds, rtol=1e-12, atol=1e-300)
    assert np.all(np.abs(ds) <= 1 / n)


# ---------------------------------------------------------------------------------------
# Bad targets and scores

@pytest.mark.parametrize("loss, scores, target, match", [
    (CrossEntropyLoss(), np.zeros((3, 4)), [0, 1, 4], r"\[0, 4\)"),
    (CrossEntropyLoss(), np.zeros((3, 4)), [0, 1], "2 labels for a batch of 3"),
    (CrossEntropyLoss(), np.zeros((3, 4)), [0.5, 1, 2], "whole numbers"),
    (CrossEntropyLoss(), np.zeros((3, 4)), np.full((3, 4), 0.3), "sum to 1"),
    (CrossEntropyLoss(), np.zeros(3), [0, 1, 2], "scores"),
    (CrossEntropyLoss(), np.zeros((0, 4)), np.zeros(0, int), "scores"),
    (MSELoss(), np.zeros((3, 2)), np.zeros((3, 3)), r"shape of scores \(3, 2\)"),
    (MSELoss(), np.zeros((3, 2)), np.zeros((2, 2)), "target"),
    (MSELoss(), np.zeros((3, 1)), [1.0, np.nan, 0.0], "NaN"),
    (MSELoss(), np.zeros((3, 2)), [0, 2, 1], r"\[0, 2\)"),
    (MSELoss(), np.zeros((3, 2)), [0.0, 1.0, 1.0], r"or integer class labels"),
    (LogisticLoss(), np.zeros(3), [0, 1, -1], "SignedLogisticLoss"),
    (LogisticLoss(), np.zeros(3), [0, 1, 2], r"\[0, 1\]"),
    (LogisticLoss(), np.zeros(3), [0, 1], r"3 values"),
    (LogisticLoss(), np.zeros((3, 2)), [0, 1, 1], r"one score per sample"),
    (SignedLogisticLoss(), np.zeros(3), [0, 1, 1], "LogisticLoss"),
    (SignedLogisticLoss(), np.zeros(3), [-1, 1, 0.5], "-1/\\+1"),
    (HingeLoss(), np.zeros((2, 3)), [0, 3], r"\[0, 3\)"),
    (HingeLoss(), np.zeros((2, 3)), [[0], [1]], "1-D"),
    (HingeLoss(), np.zeros((2, 3)), [0, 1, 2], "3 labels for a batch of 2"),
])
def test_bad_targets_raise_value_error(loss, scores, target, match):
    with pytest.raises(ValueError, match=match):
        loss(scores, target)


@pytest.mark.parametrize("loss", [CrossEntropyLoss(), MSELoss(), HingeLoss()])
def test_bad_dtypes_raise_type_error(loss):
    with pytest.raises(TypeError, match="scores"):
        loss(np.array([["a", "b"]]), [0])
    with pytest.raises(TypeError, match="target"):
        loss(np.zeros((2, 2)), np.array(["x", "y"]))


def test_hinge_margin_is_checked():
    with pytest.raises(ValueError, match="margin"):
        HingeLoss(margin=-1)


# ---------------------------------------------------------------------------------------
# Through a model: the gradient reaches the parameters, and each loss can train

# (loss, outputs, targets for a batch of points x (N, 2))
def model_targets(x):
    positive = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    return [(CrossEntropyLoss(), 2, positive), (MSELoss(), 2, positive),
            (MSELoss(), 1, x[:, :1] - 2 * x[:, 1:]), (HingeLoss(), 2, positive),
            (LogisticLoss(), 1, positive), (SignedLogisticLoss(), 1, 2 * positive - 1)]


@pytest.mark.parametrize("case", range(6))
def test_gradients_through_a_model(case):
    rng = np.random.default_rng(40 + case)
    x = rng.standard_normal((6, 2))
    loss, outputs, target = model_targets(x)[case]
    model = inet.Sequential([inet.Linear(2, 5), inet.Tanh(), inet.Linear(5, outputs)],
                            input_shape=(2,)).astype(np.float64).reset_parameters(case)
    value, dscores = loss(model.forward(x, training=True), target)
    model.backward(dscores)
    for name, p in model.parameters().items():
        grad = model.gradients()[name].copy()

        def objective(pv, p=p):
            saved = p.copy()
            p[...] = pv
            try:
                return loss(model.forward(x, training=True), target)[0]
            finally:
                p[...] = saved
        check_elementwise(objective, p.copy(), grad)


@pytest.mark.parametrize("case", range(6))
def test_each_loss_trains_a_model(case):
    rng = np.random.default_rng(50 + case)
    x = rng.standard_normal((128, 2)).astype(np.float32)
    loss, outputs, target = model_targets(x)[case]
    model = inet.Sequential([inet.Linear(2, outputs)], input_shape=(2,)).reset_parameters(0)
    history = model.fit(x, target, epochs=15, batch_size=16, optimizer=inet.optim.SGD(0.1, momentum=0.5),
                        loss=loss, verbose=0, seed=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    if outputs == 2 or target.dtype.kind == "i":
        assert history.history["accuracy"][-1] >= 0.95


# ---------------------------------------------------------------------------------------
# Registry and configs

def test_registry_names_and_configs_round_trip():
    assert set(LOSSES) == {"CrossEntropyLoss", "NLLLoss", "MSELoss", "LogisticLoss",
                           "SignedLogisticLoss", "HingeLoss"}
    for short, cls in [("cross_entropy", CrossEntropyLoss), ("mse", MSELoss), ("logistic", LogisticLoss),
                       ("signed_logistic", SignedLogisticLoss), ("hinge", HingeLoss),
                       ("HingeLoss", HingeLoss), ("MSE", MSELoss), ("nll", NLLLoss)]:
        assert type(get_loss(short)) is cls
    assert get_loss("hinge", margin=2.0).margin == 2.0
    assert get_loss(HingeLoss).margin == 1.0
    obj = HingeLoss(0.25)
    assert get_loss(obj) is obj
    for cls in LOSSES.values():
        loss = cls()
        again = cls.from_config(loss.get_config())
        assert again == loss and repr(again) == repr(loss)
    assert HingeLoss.from_config({"margin": 0.5}).margin == 0.5
    with pytest.raises(ValueError, match="unknown config keys"):
        HingeLoss.from_config({"margin": 1.0, "magin": 2})
    with pytest.raises(ValueError, match="unknown name"):
        get_loss("poisson")
    with pytest.raises(TypeError):
        get_loss(3)


def test_module_exports():
    for name in losses.__all__:
        assert hasattr(losses, name)


# ---------------------------------------------------------------------------------------
# torch as an independent oracle

def test_against_torch():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    for name, (loss, s, t, _) in CASES.items():
        value, ds = loss(s, t)
        x = torch.tensor(s, requires_grad=True)
        if name.startswith("ce"):
            ref = nn.CrossEntropyLoss()(x.reshape(len(s), -1), torch.tensor(t))
        elif name == "mse-onehot":
            ref = nn.MSELoss()(x, torch.tensor(one_hot(t, s.shape[1])))
        elif name.startswith("mse"):
            ref = nn.MSELoss()(x, torch.tensor(np.ascontiguousarray(t)))
        elif name.startswith("logistic"):
            ref = nn.BCEWithLogitsLoss()(x, torch.tensor(np.asarray(t, float).reshape(s.shape)))
        elif name == "signed":
            ref = nn.BCEWithLogitsLoss()(x, torch.tensor((t + 1) / 2.0))
        else:  # MultiMarginLoss divides the Weston-Watkins sum by the number of classes
            k = s.shape[1]
            ref = k * nn.MultiMarginLoss(margin=loss.margin)(x, torch.tensor(t))
        ref.backward()
        assert value == pytest.approx(ref.item(), rel=1e-12), name
        np.testing.assert_allclose(ds, x.grad.numpy(), rtol=1e-10, atol=1e-15, err_msg=name)
