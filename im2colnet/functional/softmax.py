"""Softmax, log-softmax and the fused softmax + cross-entropy loss, numerically stable.

The classes are all non-batch axes: x (N, K), or (N, C, H, W) with K = C*H*W.
    p = exp(x - max) / sum(exp(x - max))              (softmax, per row)
    log p = (x - max) - log(sum(exp(x - max)))       (log-sum-exp)
    loss = -1/N sum_n sum_k z[n, k] log p[n, k],   dx = (p - z) / N
with z the one-hot rows of int labels or the given soft labels. Subtracting
the row maximum keeps exp() <= 1, so logits of magnitude 1e4 stay finite.
"""
import numpy as np

from .._checks import as_float, as_labels, check_batch

__all__ = ["softmax_forward", "softmax_backward", "log_softmax_forward", "log_softmax_backward",
           "softmax_cross_entropy"]


def _rows(x):
    """x as (N, K) float logits, K = product of the non-batch axes."""
    x = as_float(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x: expected (N, K) or (N, C, H, W) scores, got shape {x.shape}")
    check_batch(x, "x")
    if x.size == 0:
        raise ValueError(f"x: there are no classes (shape {x.shape})")
    return x.reshape(x.shape[0], -1)


def _log_softmax(x2):
    shifted = x2 - x2.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax_forward(x):
    """p = softmax over all non-batch axes. x: (N, K) or (N, C, H, W) -> p: same shape and dtype."""
    x2 = _rows(x)
    e = np.exp(x2 - x2.max(axis=1, keepdims=True))
    e /= e.sum(axis=1, keepdims=True)
    return e.reshape(np.shape(x))


def _matching(dy, saved, name):
    """dy and the saved forward output (named `name`) as arrays of dy's dtype and one shape."""
    dy = as_float(dy, "dy")
    saved = as_float(saved, name, dtype=dy.dtype)
    if dy.shape != saved.shape:
        raise ValueError(f"dy: shape {dy.shape} does not match {name}'s shape {saved.shape}")
    return dy, saved


def softmax_backward(dy, p):
    """dx = p * (dy - sum_k dy_k p_k) per sample: the Jacobian diag(p) - p p^T applied to dy.

    dy, p: one shape (p from :func:`softmax_forward`) -> dx: that shape, dy's dtype.
    """
    dy, p = _matching(dy, p, "p")
    dy2, p2 = _rows(dy), p.reshape(dy.shape[0], -1)
    dx = p2 * (dy2 - np.sum(dy2 * p2, axis=1, keepdims=True))
    return dx.reshape(dy.shape)


def log_softmax_forward(x):
    """log p = (x - max) - log(sum(exp(x - max))) over all non-batch axes.

    x: (N, K) or (N, C, H, W) -> log p: same shape and dtype (finite for finite x).
    """
    return _log_softmax(_rows(x)).reshape(np.shape(x))


def log_softmax_backward(dy, logp):
    """dx = dy - p * sum_k dy_k per sample (p = exp(log p)): the Jacobian I - 1 p^T applied to dy.

    dy, logp: one shape (logp from :func:`log_softmax_forward`) -> dx: that shape, dy's dtype.
    """
    dy, logp = _matching(dy, logp, "logp")
    dy2, logp2 = _rows(dy), logp.reshape(dy.shape[0], -1)
    dx = dy2 - np.exp(logp2) * dy2.sum(axis=1, keepdims=True)
    return dx.reshape(dy.shape)


def _soft_labels(target, x_shape, rows_shape):
    z = as_float(target, "target")
    if z.shape == x_shape:
        z = z.reshape(rows_shape)
    if z.shape != rows_shape:
        raise ValueError(f"target: soft labels must have shape {rows_shape} (N, K), got {z.shape}")
    if not np.all(np.isfinite(z)) or np.any(z < 0):
        raise ValueError("target: soft labels must be finite and non-negative")
    sums = z.sum(axis=1, dtype=np.float64)
    worst = np.abs(sums - 1.0).max()
    if worst > 1e-6:
        raise ValueError(f"target: each row of soft labels must sum to 1 (within 1e-6); "
                         f"the worst row is off by {worst:.3g}")
    return z


def softmax_cross_entropy(x, target):
    """Mean cross-entropy of softmax(x) against target, and its gradient.

    x: (N, K) or (N, C, H, W) scores; target: int labels (N,) in [0, K), or
    soft labels (N, K) (non-negative rows summing to 1; x's shape also works).
    Returns (loss, dx): loss a Python float (the batch mean), dx = (p - z)/N
    of x's shape and dtype.
    """
    x2 = _rows(x)
    n, k = x2.shape
    logp = _log_softmax(x2)
    dx = np.exp(logp)
    if np.ndim(target) == 1:
        labels = as_labels(target, "target", k, n)
        rows = np.arange(n)
        loss = -logp[rows, labels].sum(dtype=np.float64) / n
        dx[rows, labels] -= 1
    else:
        z = _soft_labels(target, np.shape(x), (n, k))
        # z log p counts only where z > 0 (a -inf logit with z = 0 adds nothing).
        loss = -np.where(z > 0, z * logp, 0).sum(dtype=np.float64) / n
        dx -= z
    dx /= n
    return float(loss), dx.reshape(np.shape(x))
