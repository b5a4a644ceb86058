"""Optimizers: closed-form steps on quadratics, naive scalar loops, torch, state round trips,
schedules, configs and bad arguments."""
import math

import numpy as np
import pytest

from im2colnet.optim import (SGD, Adam, CosineLR, LambdaLR, OPTIMIZERS, SCHEDULES, StepLR,
                             get_optimizer)


def run_quadratic(opt, p0, curvature, steps):
    """Minimise f(p) = 1/2 sum a p^2 (gradient a * p) for a number of steps; the history of p."""
    p = {"w": np.array(p0, dtype=np.float64)}
    history = []
    for _ in range(steps):
        opt.step(p, {"w": curvature * p["w"]})
        history.append(p["w"].copy())
    return history


A = np.array([0.5, 1.0, 2.0, 3.0])
P0 = np.array([1.0, -2.0, 0.5, 4.0])


# ---------------------------------------------------------------------------------------
# Closed forms on the quadratic

def test_plain_sgd_is_geometric():
    # p_t = (1 - lr (a + wd))^t p_0: the gradient plus L2 decay wd * p
    for wd in (0.0, 0.1):
        history = run_quadratic(SGD(0.1, weight_decay=wd), P0, A, 5)
        for t, p in enumerate(history, 1):
            np.testing.assert_allclose(p, (1 - 0.1 * (A + wd)) ** t * P0, rtol=1e-13)


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_follows_its_linear_recurrence(nesterov):
    # State (p, b): b' = m b + a p;  p' = p - lr b' (heavy ball) or p - lr (a p + m b') (Nesterov).
    # With b_0 = 0 the first buffer is the first gradient, as torch starts it.
    lr, m, wd = 0.05, 0.9, 0.01
    history = run_quadratic(SGD(lr, momentum=m, nesterov=nesterov, weight_decay=wd), P0, A, 6)
    for i, a in enumerate(A + wd):
        if nesterov:
            step = np.array([[1 - lr * a - lr * m * a, -lr * m * m], [a, m]])
        else:
            step = np.array([[1 - lr * a, -lr * m], [a, m]])
        state = np.array([P0[i], 0.0])
        for t in range(6):
            state = step @ state
            assert history[t][i] == pytest.approx(state[0], rel=1e-12)


def test_dampening_scales_all_but_the_first_gradient():
    lr, m, damp = 0.1, 0.5, 0.3
    history = run_quadratic(SGD(lr, momentum=m, dampening=damp), P0, A, 4)
    p, b = P0.copy(), None
    for t in range(4):
        g = A * p
        b = g.copy() if b is None else m * b + (1 - damp) * g
        p = p - lr * b
        np.testing.assert_allclose(history[t], p, rtol=1e-13)


def naive_adam(p0, grad_fn, steps, lr, b1, b2, eps, wd):
    """Kingma & Ba's algorithm 1 on scalars, with L2 decay added to the gradient."""
    out = []
    for i, p in enumerate(p0):
        m = v = 0.0
        path = []
        for t in range(1, steps + 1):
            g = grad_fn(i, p) + wd * p
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
            p = p - lr * m_hat / (math.sqrt(v_hat) + eps)
            path.append(p)
        out.append(path)
    return np.array(out).T


@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_adam_matches_the_paper(wd):
    history = run_quadratic(Adam(0.1, betas=(0.8, 0.99), eps=1e-3, weight_decay=wd), P0, A, 7)
    expected = naive_adam(P0, lambda i, p: A[i] * p, 7, 0.1, 0.8, 0.99, 1e-3, wd)
    np.testing.assert_allclose(np.array(history), expected, rtol=1e-12)


def test_adam_first_step_moves_every_coordinate_by_lr():
    # m_hat = g, v_hat = g^2: the first step is lr * g / (|g| + eps) ~ lr sign(g).
    history = run_quadratic(Adam(0.01, eps=0.0), P0, A, 1)
    np.testing.assert_allclose(history[0], P0 - 0.01 * np.sign(P0), rtol=1e-14)


# ---------------------------------------------------------------------------------------
# In place, dtypes, pairs

@pytest.mark.parametrize("make", [lambda: SGD(0.1, momentum=0.9, weight_decay=1e-3),
                                  lambda: SGD(0.1), lambda: Adam(0.01, weight_decay=1e-3)])
def test_updates_in_place_and_keep_float32(make):
    opt = make()
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    w_view, b_view = w, b
    address = w.__array_interface__["data"][0]
    for _ in range(3):
        opt.step([("0/weight", w), ("0/bias", b)],
                 {"0/weight": rng.standard_normal((3, 4)), "0/bias": np.ones(3, np.float32)})
    assert w is w_view and b is b_view and w.__array_interface__["data"][0] == address
    assert w.dtype == np.float32 and b.dtype == np.float32
    for state in opt.state.values():
        assert all(a.dtype == np.float32 for a in state.values())
    # float32 and float64 runs of the same problem agree to float32 precision
    opt64, opt32 = make(), make()
    p64 = {"w": P0.copy()}
    p32 = {"w": P0.astype(np.float32)}
    for _ in range(5):
        opt64.step(p64, {"w": A * p64["w"]})
        opt32.step(p32, {"w": (A * p32["w"]).astype(np.float32)})
    np.testing.assert_allclose(p32["w"], p64["w"], rtol=1e-5, atol=1e-6)


def test_gradient_arrays_are_not_modified():
    g = np.array([1.0, 2.0, 3.0])
    g.flags.writeable = False
    for opt in (SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.1), Adam(weight_decay=0.1)):
        p = {"w": np.ones(3)}
        opt.step(p, {"w": g})
        opt.step(p, {"w": g})
    np.testing.assert_array_equal(g, [1.0, 2.0, 3.0])


# ---------------------------------------------------------------------------------------
# State round trip

@pytest.mark.parametrize("make", [
    lambda: SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-2, schedule=StepLR(2, 0.5)),
    lambda: Adam(0.05, weight_decay=1e-2, schedule=CosineLR(6, 1e-3))])
def test_state_dict_round_trip_continues_identically(make):
    rng = np.random.default_rng(3)
    targets = [rng.standard_normal((2, 3)) for _ in range(6)]

    def train(opt, params, steps, epoch):
        opt.set_epoch(epoch)
        for t in steps:
            opt.step(params, {k: v - targets[t] for k, v in params.items()})

    start = {"a": rng.standard_normal((2, 3)), "b": rng.standard_normal((2, 3))}
    whole, whole_params = make(), {k: v.copy() for k, v in start.items()}
    train(whole, whole_params, range(3), 1)
    saved_params = {k: v.copy() for k, v in whole_params.items()}
    saved = whole.state_dict()
    # the state_dict is a snapshot: plain numbers and copies
    assert saved["step"] == 3 and saved["epoch"] == 1
    assert all(isinstance(v, (int, float, np.ndarray)) for v in saved.values())
    before = {k: v.copy() for k, v in saved.items() if isinstance(v, np.ndarray)}
    train(whole, whole_params, range(3, 6), 3)
    for k, v in before.items():
        np.testing.assert_array_equal(saved[k], v)

    resumed = make()
    resumed.load_state_dict(saved)
    train(resumed, saved_params, range(3, 6), 3)
    for k in start:
        np.testing.assert_array_equal(saved_params[k], whole_params[k])
    assert resumed.state_dict().keys() == whole.state_dict().keys()
    # numbers that come back from a file as NumPy scalars are fine too
    again = make()
    again.load_state_dict({k: (np.int64(v) if isinstance(v, int) else
                               np.float64(v) if isinstance(v, float) else v)
                           for k, v in saved.items()})
    assert again.step_count == 3 and again.lr == saved["lr"]


def test_load_state_dict_rejects_foreign_state():
    adam = Adam()
    adam.step({"w": np.ones(2)}, {"w": np.ones(2)})
    with pytest.raises(ValueError, match="unknown entry 'exp_avg/w'"):
        SGD(0.1, momentum=0.9).load_state_dict(adam.state_dict())
    broken = adam.state_dict()
    del broken["exp_avg_sq/w"]
    with pytest.raises(ValueError, match="needs slots"):
        Adam().load_state_dict(broken)
    with pytest.raises(ValueError, match="missing entries"):
        Adam().load_state_dict({"exp_avg/w": np.ones(2)})
    loaded = Adam()
    loaded.load_state_dict(adam.state_dict())
    with pytest.raises(ValueError, match=r"shape \(3,\) differs"):
        loaded.step({"w": np.ones(3)}, {"w": np.ones(3)})


# ---------------------------------------------------------------------------------------
# Schedules

def test_schedules_give_their_formulas():
    opt = SGD(0.1, schedule=StepLR(3, gamma=0.5))
    assert [opt.set_epoch(e) for e in range(7)] == pytest.approx(
        [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025], rel=1e-15)
    assert opt.lr == pytest.approx(0.025) and opt.base_lr == 0.1
    opt = Adam(1.0, schedule=CosineLR(4, eta_min=0.2))
    for e, expected in [(0, 1.0), (2, 0.6), (4, 0.2), (9, 0.2)]:
        opt.set_epoch(e)
        assert opt.lr == pytest.approx(expected, rel=1e-14, abs=1e-15)
    opt = Adam(1.0, schedule=CosineLR(4, eta_min=0.2, start=3))   # a warm restart at epoch 3
    for e, expected in [(0, 1.0), (3, 1.0), (5, 0.6), (7, 0.2), (20, 0.2)]:
        opt.set_epoch(e)
        assert opt.lr == pytest.approx(expected, rel=1e-14, abs=1e-15)
    restored = Adam.from_config(opt.get_config())
    assert restored.schedule.start == 3 and restored.set_epoch(5) == pytest.approx(0.6, rel=1e-14)
    opt = SGD(0.2, schedule=LambdaLR(lambda e: 1 / (1 + e)))
    opt.set_epoch(3)
    assert opt.lr == pytest.approx(0.05)
    assert SGD(0.3).set_epoch(10) == 0.3


def test_assigning_lr():
    opt = SGD(0.1)
    opt.lr = 0.5
    assert opt.set_epoch(3) == 0.5 and opt.base_lr == 0.5 and opt.get_config()["lr"] == 0.5
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -1
    scheduled = SGD(0.1, schedule=StepLR(1))
    with pytest.raises(AttributeError, match="base_lr"):
        scheduled.lr = 0.5
    scheduled.base_lr = 1.0
    assert scheduled.set_epoch(2) == pytest.approx(0.01)


def test_the_scheduled_lr_is_the_one_used():
    opt = SGD(1.0, schedule=StepLR(1, gamma=0.25))
    p = {"w": np.zeros(1)}
    opt.set_epoch(2)
    opt.step(p, {"w": np.ones(1)})
    assert p["w"][0] == -1 / 16


def test_schedules_against_torch():
    torch = pytest.importorskip("torch")
    sched = torch.optim.lr_scheduler
    cases = [(StepLR(2, 0.3), lambda o: sched.StepLR(o, 2, 0.3)),
             (CosineLR(5, 0.01), lambda o: sched.CosineAnnealingLR(o, 5, 0.01)),
             (LambdaLR(lambda e: 0.9 ** e), lambda o: sched.LambdaLR(o, lambda e: 0.9 ** e))]
    for ours, make_theirs in cases:
        opt = SGD(0.5, schedule=ours)
        torch_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
        theirs = make_theirs(torch_opt)
        for epoch in range(6):  # CosineLR: up to T_max, where both agree
            opt.set_epoch(epoch)
            assert opt.lr == pytest.approx(torch_opt.param_groups[0]["lr"], rel=1e-12), (ours, epoch)
            torch_opt.step()
            theirs.step()


# ---------------------------------------------------------------------------------------
# torch.optim as an oracle over several steps

@pytest.mark.parametrize("kwargs", [dict(), dict(momentum=0.9), dict(momentum=0.9, nesterov=True),
                                    dict(momentum=0.8, weight_decay=0.05),
                                    dict(momentum=0.9, nesterov=True, weight_decay=0.01),
                                    dict(momentum=0.7, dampening=0.4)])
def test_sgd_matches_torch(kwargs):
    torch = pytest.importorskip("torch")
    compare_with_torch(torch, SGD(0.1, **kwargs), lambda ps: torch.optim.SGD(ps, lr=0.1, **kwargs))


@pytest.mark.parametrize("kwargs", [dict(), dict(weight_decay=0.1), dict(betas=(0.5, 0.9), eps=1e-4)])
def test_adam_matches_torch(kwargs):
    torch = pytest.importorskip("torch")
    compare_with_torch(torch, Adam(0.05, **kwargs), lambda ps: torch.optim.Adam(ps, lr=0.05, **kwargs))


def compare_with_torch(torch, ours, make_theirs, steps=8):
    rng = np.random.default_rng(7)
    params = {"0/weight": rng.standard_normal((3, 4)), "0/bias": rng.standard_normal(3)}
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    theirs = make_theirs(list(tparams.values()))
    for _ in range(steps):
        grads = {k: rng.standard_normal(v.shape) + v for k, v in params.items()}
        ours.step(params, grads)
        for k, t in tparams.items():
            t.grad = torch.tensor(grads[k])
        theirs.step()
        for k in params:
            np.testing.assert_allclose(params[k], tparams[k].detach().numpy(), rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------
# Configs, registry, bad arguments

def test_configs_round_trip():
    import json
    for opt in (SGD(0.1, momentum=0.9, nesterov=True, weight_decay=1e-4, schedule=StepLR(5)),
                SGD(0.01), Adam(betas=(0.8, 0.95), schedule=CosineLR(10, 1e-4))):
        config = json.loads(json.dumps(opt.get_config()))
        again = type(opt).from_config(config)
        assert again.get_config() == opt.get_config() and repr(again) == repr(opt)
    lam = SGD(0.1, schedule=LambdaLR(math.exp))
    with pytest.raises(ValueError, match="LambdaLR"):
        SGD.from_config(lam.get_config())
    again = SGD.from_config(lam.get_config(), schedule=LambdaLR(math.exp))
    assert again.schedule.fn is math.exp
    with pytest.raises(ValueError, match="bad config"):
        SGD.from_config({"lr": 0.1, "momentun": 0.9})
    with pytest.raises(ValueError, match="unknown type"):
        SGD.from_config({"lr": 0.1, "schedule": {"type": "Exp", "config": {}}})


def test_registry_and_get_optimizer():
    assert OPTIMIZERS == {"SGD": SGD, "Adam": Adam}
    assert set(SCHEDULES) == {"StepLR", "CosineLR", "LambdaLR"}
    assert isinstance(get_optimizer("sgd", lr=0.1, momentum=0.9), SGD)
    assert get_optimizer("ADAM").lr == 1e-3
    opt = Adam()
    assert get_optimizer(opt) is opt and isinstance(get_optimizer(SGD, lr=0.5), SGD)
    with pytest.raises(ValueError, match="unknown name"):
        get_optimizer("rmsprop")


@pytest.mark.parametrize("make, match", [
    (lambda: SGD(-0.1), "lr"), (lambda: SGD(float("nan")), "lr"),
    (lambda: SGD(0.1, momentum=-1), "momentum"),
    (lambda: SGD(0.1, nesterov=True), "nesterov"),
    (lambda: SGD(0.1, momentum=0.9, nesterov=True, dampening=0.1), "nesterov"),
    (lambda: SGD(0.1, weight_decay=-1), "weight_decay"),
    (lambda: Adam(betas=(0.9, 1.0)), r"betas\[1\]"), (lambda: Adam(betas=0.9), "betas"),
    (lambda: Adam(eps=-1), "eps"), (lambda: StepLR(0), "step_size"),
    (lambda: CosineLR(0), "T_max"), (lambda: CosineLR(3, start=-1), "start"),
    (lambda: SGD(0.1).set_epoch(-1), "epoch"),
    (lambda: SGD(0.1, schedule=LambdaLR(lambda e: -1.0)).set_epoch(0), "LambdaLR"),
])
def test_bad_hyperparameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_types():
    with pytest.raises(TypeError, match="lr"):
        SGD("fast")
    with pytest.raises(TypeError, match="schedule"):
        SGD(0.1, schedule=lambda e: 1.0)
    with pytest.raises(TypeError, match="fn"):
        LambdaLR(0.5)


def test_bad_steps():
    opt = SGD(0.1, momentum=0.9)
    w = np.ones((2, 2))
    with pytest.raises(ValueError, match="no gradient for parameter 'w'"):
        opt.step({"w": w}, {})
    with pytest.raises(ValueError, match=r"names without a parameter: \['v'\]"):
        opt.step({"w": w}, {"w": w, "v": w})
    with pytest.raises(ValueError, match=r"grads\['w'\]: shape \(4,\) does not match.*\(2, 2\)"):
        opt.step({"w": w}, {"w": np.ones(4)})
    with pytest.raises(TypeError, match=r"params\['w'\]"):
        opt.step({"w": np.ones(2, int)}, {"w": np.ones(2)})
    readonly = np.ones(2)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        opt.step({"w": readonly}, {"w": np.ones(2)})
    with pytest.raises(TypeError, match="pairs"):
        opt.step([w], {"w": w})
    assert opt.step_count == 0 and opt.state == {}  # nothing happened
    np.testing.assert_array_equal(w, 1)


# ---------------------------------------------------------------------------------------
# With Sequential.fit: stopping, restoring the optimizer state and continuing is bit-identical

@pytest.mark.parametrize("make", [lambda: SGD(0.05, momentum=0.9, nesterov=True, schedule=StepLR(1, 0.5)),
                                  lambda: Adam(0.01, weight_decay=1e-3, schedule=CosineLR(3))])
def test_fit_resumes_from_a_state_dict(make):
    import im2colnet as inet
    rng = np.random.default_rng(60)
    x = rng.standard_normal((48, 3)).astype(np.float32)
    y = (x.sum(axis=1) > 0).astype(np.int64)

    def model():
        return inet.Sequential([inet.Linear(3, 8), inet.ReLU(), inet.Linear(8, 2)],
                               input_shape=(3,)).reset_parameters(0)

    whole, whole_opt = model(), make()
    whole.fit(x, y, epochs=3, batch_size=16, optimizer=whole_opt, verbose=0, seed=4)
    first, first_opt = model(), make()
    first.fit(x, y, epochs=1, batch_size=16, optimizer=first_opt, verbose=0, seed=4)
    resumed, resumed_opt = model(), make()
    resumed.load_state(first.state_copy())
    resumed_opt.load_state_dict(first_opt.state_dict())
    resumed.fit(x, y, epochs=3, batch_size=16, optimizer=resumed_opt, verbose=0, seed=4, initial_epoch=1)
    for key, value in whole.parameters().items():
        np.testing.assert_array_equal(resumed.parameters()[key], value)
    assert resumed_opt.lr == whole_opt.lr and resumed_opt.step_count == whole_opt.step_count == 9
