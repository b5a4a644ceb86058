"""The convolution's matrices written out explicitly, for tiny shapes: the tests' oracle.

Nothing here is fast; everything is the textbook formula with dense matrices:

* ``selection_matrix``: the 0/1 matrix M with vec phi(x) = M vec x for one
  sample (vec = row-major flattening; phi(x) is (Ho*Wo, C*kh*kw)).
* ``conv2d_kronecker``: vec(Y) = (I_K (x) phi(x)) vec(C), with vec stacking
  columns (the column-major vec of the Kronecker identity) and C the
  (C*kh*kw, K) kernel matrix.
* ``conv2d_backward_kronecker``: dx = M^T vec(dY C^T) and
  vec(dC) = (I_K (x) phi(x))^T vec(dY).
* ``conv2d_loops``: the definition as nested Python loops.
"""
import numpy as np

from ._checks import conv_geometry

__all__ = ["selection_matrix", "conv2d_kronecker", "conv2d_backward_kronecker", "conv2d_loops"]


def selection_matrix(chw, kernel_size, stride=1, padding=0, dilation=1, anchor=None):
    """M of shape (Ho*Wo*C*kh*kw, C*H*W): vec phi(x) = M vec x for one (C, H, W) sample."""
    C, H, W = chw
    g = conv_geometry((H, W), kernel_size, stride, padding, dilation, anchor)
    taps = C * g.kh * g.kw
    M = np.zeros((g.out_h * g.out_w * taps, C * H * W))
    for i in range(g.out_h):
        for j in range(g.out_w):
            for c in range(C):
                for p in range(g.kh):
                    for q in range(g.kw):
                        r = i * g.sh - g.pt + p * g.dh
                        s = j * g.sw - g.pl + q * g.dw
                        if 0 <= r < H and 0 <= s < W:
                            row = (i * g.out_w + j) * taps + (c * g.kh + p) * g.kw + q
                            M[row, (c * H + r) * W + s] = 1.0
    return M, g


def _phi(x_sample, M, g):
    """phi(x) (Ho*Wo, C*kh*kw) of one sample from vec phi = M vec x."""
    return (M @ x_sample.reshape(-1)).reshape(g.out_h * g.out_w, -1)


def conv2d_kronecker(x, w, b=None, stride=1, padding=0, dilation=1, anchor=None):
    """Conv_F per sample as vec(Y) = (I_K (x) phi(x)) vec(C) (+ b). x (N, C, H, W), w (K, C, kh, kw)."""
    N, K = x.shape[0], w.shape[0]
    M, g = selection_matrix(x.shape[1:], w.shape[2:], stride, padding, dilation, anchor)
    Cmat = w.reshape(K, -1).T                       # (C*kh*kw, K): one kernel per column
    P = g.out_h * g.out_w
    y = np.empty((N, K, g.out_h, g.out_w))
    for n in range(N):
        phi = _phi(x[n], M, g)
        vec_y = np.kron(np.eye(K), phi) @ Cmat.reshape(-1, order="F")
        Y = vec_y.reshape(P, K, order="F")           # (Ho*Wo, K)
        y[n] = Y.T.reshape(K, g.out_h, g.out_w)
    if b is not None:
        y += np.asarray(b).reshape(K, 1, 1)
    return y


def conv2d_backward_kronecker(dy, x, w, stride=1, padding=0, dilation=1, anchor=None):
    """(dx, dw, db) from the matrix formulas: dx = M^T vec(dY C^T), vec(dC) = (I (x) phi)^T vec(dY)."""
    N, K = x.shape[0], w.shape[0]
    M, g = selection_matrix(x.shape[1:], w.shape[2:], stride, padding, dilation, anchor)
    Cmat = w.reshape(K, -1).T
    P = g.out_h * g.out_w
    dx = np.empty(x.shape)
    dC = np.zeros_like(Cmat)
    for n in range(N):
        dY = dy[n].reshape(K, P).T                   # (Ho*Wo, K)
        dx[n] = (M.T @ (dY @ Cmat.T).reshape(-1)).reshape(x.shape[1:])
        phi = _phi(x[n], M, g)
        vec_dc = np.kron(np.eye(K), phi).T @ dY.reshape(-1, order="F")
        dC += vec_dc.reshape(Cmat.shape, order="F")
    return dx, dC.T.reshape(w.shape), dy.sum(axis=(0, 2, 3))


def conv2d_loops(x, w, b=None, stride=1, padding=0, dilation=1, anchor=None):
    """Conv_F straight from the definition, one output element at a time."""
    N, C, H, W = x.shape
    K = w.shape[0]
    g = conv_geometry((H, W), w.shape[2:], stride, padding, dilation, anchor)
    y = np.zeros((N, K, g.out_h, g.out_w))
    for n in range(N):
        for k in range(K):
            for i in range(g.out_h):
                for j in range(g.out_w):
                    total = 0.0 if b is None else float(b[k])
                    for c in range(C):
                        for p in range(g.kh):
                            for q in range(g.kw):
                                r = i * g.sh - g.pt + p * g.dh
                                s = j * g.sw - g.pl + q * g.dw
                                if 0 <= r < H and 0 <= s < W:
                                    total += w[k, c, p, q] * x[n, c, r, s]
                    y[n, k, i, j] = total
    return y
