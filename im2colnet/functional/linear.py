"""Linear (fully connected) layer: y = x W^T + b, with w of shape (Fout, Fin).

Each pass is one BLAS matrix product (im2colnet.runtime.gemm.matmul):
    Full_F:    y  = x W^T + b         (N, Fin) x (Fin, Fout)
    Full_BF:   dx = dY W              (N, Fout) x (Fout, Fin)
    Full_grad: dW = dY^T x,  db = sum_n dY[n]
An input with more than two axes, e.g. (N, C, H, W), is flattened to
(N, C*H*W) (row-major, i.e. feature index (c*H + h)*W + w).
"""
import numpy as np

from ..runtime.blas import gemm_threads
from ..runtime.gemm import matmul
from .._checks import as_float, check_batch

__all__ = ["linear_forward", "linear_backward_data", "linear_backward_weights"]


def _flat_input(x, name):
    """x as (N, F) in its float dtype: (N, F) stays, (N, C, H, W) etc. are flattened."""
    x = as_float(x, name)
    if x.ndim < 2:
        raise ValueError(f"{name}: expected (N, Fin) or (N, C, H, W), got shape {x.shape}")
    check_batch(x, name)
    return x.reshape(x.shape[0], -1)


def _product(a, b):
    """a @ b as a new C-contiguous array (a and b of one dtype)."""
    out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
    with gemm_threads(2.0 * a.shape[0] * a.shape[1] * b.shape[1]):
        return matmul(a, b, out)


def _check_weight(w, fin, dtype):
    w = as_float(w, "w", dtype=dtype)
    if w.ndim != 2 or w.shape[1] != fin:
        raise ValueError(f"w: expected shape (Fout, {fin}) for inputs of {fin} features, got {w.shape}")
    return w


def linear_forward(x, w, b=None):
    """Full_F: y = x W^T + b. x: (N, Fin) or (N, C, H, W) with C*H*W = Fin; w: (Fout, Fin); b: (Fout,).

    Returns y: (N, Fout) in x's dtype (w and b are cast to it).
    """
    x2 = _flat_input(x, "x")
    w = _check_weight(w, x2.shape[1], x2.dtype)
    y = _product(x2, w.T)
    if b is not None:
        b = as_float(b, "b", dtype=y.dtype)
        if b.shape != (w.shape[0],):
            raise ValueError(f"b: expected shape ({w.shape[0]},) for w of shape {w.shape}, got {b.shape}")
        y += b
    return y


def linear_backward_data(dy, w, x_shape):
    """Full_BF: dx = dY W, reshaped to x_shape. dy: (N, Fout); w: (Fout, Fin); x_shape: (N, Fin) or (N, C, H, W)."""
    dy = as_float(dy, "dy")
    if dy.ndim != 2:
        raise ValueError(f"dy: expected (N, Fout), got shape {dy.shape}")
    check_batch(dy, "dy")
    w = as_float(w, "w", dtype=dy.dtype)
    if w.ndim != 2 or w.shape[0] != dy.shape[1]:
        raise ValueError(f"w: expected shape ({dy.shape[1]}, Fin) for dy of shape {dy.shape}, got {w.shape}")
    try:
        shape = tuple(int(s) for s in x_shape)
    except (TypeError, ValueError):
        raise TypeError(f"x_shape: expected a shape such as (N, Fin), got {x_shape!r}") from None
    if len(shape) < 2 or shape[0] != dy.shape[0] or int(np.prod(shape[1:])) != w.shape[1]:
        raise ValueError(
            f"x_shape: {shape} does not fit dy {dy.shape} and w {w.shape} "
            f"(need N = {dy.shape[0]} and {w.shape[1]} features)")
    return _product(dy, w).reshape(shape)


def linear_backward_weights(dy, x):
    """Full_grad: dW = dY^T x (Fout, Fin), db = sum of dY over the batch (Fout,).

    dy: (N, Fout); x: the forward input, (N, Fin) or (N, C, H, W). Sums, not
    means: the loss's gradient already carries the 1/N of the batch mean.
    """
    dy = as_float(dy, "dy")
    if dy.ndim != 2:
        raise ValueError(f"dy: expected (N, Fout), got shape {dy.shape}")
    check_batch(dy, "dy")
    x2 = _flat_input(as_float(x, "x", dtype=dy.dtype), "x")
    if x2.shape[0] != dy.shape[0]:
        raise ValueError(f"x: batch {x2.shape[0]} (shape {np.shape(x)}) does not match dy's {dy.shape}")
    return _product(dy.T, x2), dy.sum(axis=0)
