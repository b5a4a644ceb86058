"""Central-difference gradient checks shared by the operation tests (float64 only)."""
import numpy as np


def rel_err(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def check_directional(loss, point, grad, rng, directions=3, h=1e-6, tol=1e-6):
    """Check <grad, v> against (loss(point + h v) - loss(point - h v)) / 2h for random v.

    loss: array -> float; point: where to check (float64); grad: the analytic
    gradient of loss at point. A random direction sees every component of grad.
    """
    assert point.dtype == np.float64 and grad.shape == point.shape
    for _ in range(directions):
        v = rng.standard_normal(point.shape)
        numeric = (loss(point + h * v) - loss(point - h * v)) / (2 * h)
        analytic = float(np.sum(grad * v))
        assert rel_err(numeric, analytic) < tol, (numeric, analytic)


def check_elementwise(loss, point, grad, h=1e-6, tol=1e-6):
    """Check every component of grad by central differences (small arrays only)."""
    flat = point.reshape(-1)
    for k in range(flat.size):
        e = np.zeros_like(flat)
        e[k] = h
        numeric = (loss((flat + e).reshape(point.shape)) - loss((flat - e).reshape(point.shape))) / (2 * h)
        g = grad.reshape(-1)[k]
        assert abs(numeric - g) <= tol * max(abs(numeric), abs(g), 1.0), (k, numeric, g)


def check_param_gradients(loss, params, grads, rng, **kwargs):
    """check_directional for every parameter array, perturbed in place (and restored).

    loss: () -> float, reading the parameters; params: dict name -> array (the
    live arrays); grads: dict name -> the analytic gradient of loss.
    """
    for name, p in params.items():
        def at(pv, p=p):
            saved = p.copy()
            p[...] = pv
            try:
                return loss()
            finally:
                p[...] = saved
        check_directional(at, p.copy(), grads[name], rng, **kwargs)


def check_layer_gradients(layer, x, rng, **kwargs):
    """check_directional of a float64 layer's backward: dx at x and every parameter's grad,
    for the loss <r, layer.forward(x)> with a random r. Returns the forward output."""
    y = layer.forward(x, training=True)
    r = rng.standard_normal(y.shape)
    dx = layer.backward(r)
    grads = dict(layer.grads)
    check_param_gradients(lambda: float(np.sum(r * layer.forward(x))), layer.params, grads, rng,
                          **kwargs)
    check_directional(lambda z: float(np.sum(r * layer.forward(z))), x, dx, rng, **kwargs)
    return y
