"""A plain-NumPy im2col convolution: the CS231n-style baseline of ``im2colnet bench``.

No compiled code of ours: im2col is one ``as_strided`` view of the padded
input copied into a matrix, the convolution is one ``matmul``, and col2im is a
loop over the kh*kw kernel taps, each adding a strided slice. This is what a
NumPy user would write by hand, and what ``im2colnet bench`` compares against.

It lives inside the package so that the installed ``im2colnet bench`` command
can use it; ``benchmarks/numpy_im2col.py`` is the script that compares it with
im2colnet's compiled path (it imports this module: one copy of the code).
The tests check it against ``im2colnet.functional`` (a baseline must be right
to be a fair one).

Layouts follow the public contract (``im2colnet.functional``):
cols is (N*Ho*Wo, C*kh*kw), row ``(n*Ho + i)*Wo + j``, column ``(c*kh + p)*kw + q``.
"""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from ._checks import as_float, conv_geometry

__all__ = ["im2col", "col2im", "conv2d_forward", "conv2d_backward_data",
           "conv2d_backward_weights"]


def _pad_or_crop(x, g):
    """x (N, C, H, W) with g's padding applied: zeros for positive pads, a crop for negative."""
    pads = ((0, 0), (0, 0), (max(g.pt, 0), max(g.pb, 0)), (max(g.pl, 0), max(g.pr, 0)))
    xp = np.pad(x, pads) if any(p for pair_ in pads for p in pair_) else x
    return xp[:, :, max(-g.pt, 0):xp.shape[2] - max(-g.pb, 0),
              max(-g.pl, 0):xp.shape[3] - max(-g.pr, 0)]


def _windows(xp, g):
    """The (N, Ho, Wo, C, kh, kw) strided view of the padded input xp: no copy."""
    N, C = xp.shape[:2]
    sN, sC, sH, sW = xp.strides
    return as_strided(xp, shape=(N, g.out_h, g.out_w, C, g.kh, g.kw),
                      strides=(sN, sH * g.sh, sW * g.sw, sC, sH * g.dh, sW * g.dw),
                      writeable=False)


def im2col(x, kernel_size, stride=1, padding=0, dilation=1):
    """x (N, C, H, W) -> cols (N*Ho*Wo, C*kh*kw), one copy of a strided view."""
    x = as_float(x, "x")
    g = conv_geometry(x.shape[2:], kernel_size, stride, padding, dilation)
    N, C = x.shape[:2]
    return _windows(_pad_or_crop(x, g), g).reshape(N * g.out_h * g.out_w, C * g.kh * g.kw)


def col2im(cols, x_shape, kernel_size, stride=1, padding=0, dilation=1):
    """The adjoint of im2col: cols (N*Ho*Wo, C*kh*kw) -> x (N, C, H, W), overlaps summed."""
    N, C, H, W = x_shape
    g = conv_geometry((H, W), kernel_size, stride, padding, dilation)
    taps = cols.reshape(N, g.out_h, g.out_w, C, g.kh, g.kw)
    # The padded canvas; negative pads (crops) are handled by a larger image view below.
    Hp, Wp = H + g.pt + g.pb, W + g.pl + g.pr
    top, left = max(-g.pt, 0), max(-g.pl, 0)
    canvas = np.zeros((N, C, H + max(g.pt, 0) + max(g.pb, 0), W + max(g.pl, 0) + max(g.pr, 0)),
                      dtype=cols.dtype)
    padded = canvas[:, :, top:top + Hp, left:left + Wp]
    row_end, col_end = g.sh * (g.out_h - 1) + 1, g.sw * (g.out_w - 1) + 1
    for p in range(g.kh):
        for q in range(g.kw):
            r0, c0 = p * g.dh, q * g.dw
            padded[:, :, r0:r0 + row_end:g.sh, c0:c0 + col_end:g.sw] += \
                taps[:, :, :, :, p, q].transpose(0, 3, 1, 2)
    return np.ascontiguousarray(
        canvas[:, :, max(g.pt, 0):max(g.pt, 0) + H, max(g.pl, 0):max(g.pl, 0) + W])


def conv2d_forward(x, w, b=None, stride=1, padding=0, dilation=1):
    """y (N, K, Ho, Wo) = im2col(x) (N*Ho*Wo, C*kh*kw) @ w.reshape(K, -1).T, plus b (K,)."""
    x = as_float(x, "x")
    w = as_float(w, "w", x.dtype)
    N, K = x.shape[0], w.shape[0]
    g = conv_geometry(x.shape[2:], w.shape[2:], stride, padding, dilation)
    y = im2col(x, w.shape[2:], stride, padding, dilation) @ w.reshape(K, -1).T
    if b is not None:
        y += b
    return np.ascontiguousarray(y.reshape(N, g.out_h, g.out_w, K).transpose(0, 3, 1, 2))


def _dy_matrix(dy):
    """dy (N, K, Ho, Wo) -> (N*Ho*Wo, K), the row order of cols."""
    return dy.transpose(0, 2, 3, 1).reshape(-1, dy.shape[1])


def conv2d_backward_data(dy, w, x_shape, stride=1, padding=0, dilation=1):
    """dx (x_shape) = col2im(dY (N*Ho*Wo, K) @ w.reshape(K, -1))."""
    dy = as_float(dy, "dy")
    w = as_float(w, "w", dy.dtype)
    dcols = _dy_matrix(dy) @ w.reshape(w.shape[0], -1)
    return col2im(dcols, x_shape, w.shape[2:], stride, padding, dilation)


def conv2d_backward_weights(dy, x, w_shape, stride=1, padding=0, dilation=1):
    """(dw, db): dw (w_shape) = dY^T (K, N*Ho*Wo) @ im2col(x); db (K,) = dy summed over n, i, j."""
    dy = as_float(dy, "dy")
    x = as_float(x, "x", dy.dtype)
    cols = im2col(x, w_shape[2:], stride, padding, dilation)
    dw = (_dy_matrix(dy).T @ cols).reshape(w_shape)
    return dw, dy.sum(axis=(0, 2, 3))
