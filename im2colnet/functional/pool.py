"""Max and average pooling over (N, C, H, W) images, forward and backward.

Geometry follows the convolution's (``im2colnet._checks.conv_geometry``):
window (i, j) covers rows ``i*sh - pt ... i*sh - pt + kh - 1`` and columns
``j*sw - pl ... j*sw - pl + kw - 1``; ``Ho = (H + pt + pb - kh) // sh + 1``.
``stride`` defaults to ``kernel_size``, so windows tile the image; other
strides make them overlap (stride < kernel) or leave gaps (stride > kernel).
Padding is an int, ``(ph, pw)``, ``((top, bottom), (left, right))``,
``"valid"`` or ``"same"``; a negative value crops.

Max pooling pads with -inf and requires every padding to be smaller than the
kernel on its axis (as PyTorch does, more loosely): then every window holds at
least one image cell, and its winner is always an image cell.
Average pooling pads with 0 and divides by kh*kw (padding included).
"""
import numpy as np

from ..runtime.threads import threads_worth
from .._checks import (as_float, check_image, check_max_pool_padding, check_ndim, check_x_shape,
                       conv_geometry)
from .._kernels import pool as _pool

__all__ = ["maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward"]

def _geometry(in_hw, kernel_size, stride, padding):
    """The window geometry; stride None means stride = kernel_size."""
    return conv_geometry(in_hw, kernel_size, kernel_size if stride is None else stride, padding)


def _check_dy(dy, out_shape):
    dy = as_float(dy, "dy")
    check_ndim(dy, 4, "dy", "(N, C, Ho, Wo)")
    if dy.shape != out_shape:
        raise ValueError(f"dy: shape {dy.shape} does not match the pooling output shape {out_shape}")
    return np.ascontiguousarray(dy)


def maxpool2d_forward(x, kernel_size, stride=None, padding=0):
    """Max pooling with the winners' positions.

    x: (N, C, H, W) -> (y, path), both (N, C, Ho, Wo). y has x's dtype;
    path (int64) holds the flat index ``r*W + c`` of each window's maximum in
    its input plane. Ties go to the first maximum in row-major window order;
    a NaN in a window wins (the first NaN), so NaNs propagate.
    """
    x = check_image(x, "x")
    g = _geometry(x.shape[2:], kernel_size, stride, padding)
    check_max_pool_padding(g)
    out_shape = (x.shape[0], x.shape[1], g.out_h, g.out_w)
    y = np.empty(out_shape, dtype=x.dtype)
    path = np.empty(out_shape, dtype=np.int64)
    # a window's comparisons count double
    _pool.maxpool_forward(x, y, path, g.kh, g.kw, g.sh, g.sw, g.pt, g.pl, True,
                          threads_worth(2 * x.size))
    return y, path


def maxpool2d_backward(dy, path, x_shape):
    """Scatter dy to the winners: ``dx[n, c].flat[path[n, c, i, j]] += dy[n, c, i, j]``.

    dy, path: (N, C, Ho, Wo) (path from :func:`maxpool2d_forward`); x_shape:
    (N, C, H, W). Returns dx of shape x_shape and dy's dtype; where overlapping
    windows share a winner their contributions are summed.
    """
    shape = check_x_shape(x_shape)
    dy = as_float(dy, "dy")
    check_ndim(dy, 4, "dy", "(N, C, Ho, Wo)")
    path = np.asarray(path)
    if path.dtype.kind not in "iu":
        raise TypeError(f"path: expected an integer array (from maxpool2d_forward), got dtype {path.dtype}")
    if path.shape != dy.shape:
        raise ValueError(f"path: shape {path.shape} does not match dy's shape {dy.shape}")
    if dy.shape[:2] != shape[:2]:
        raise ValueError(f"dy: shape {dy.shape} does not match x_shape {shape} in (N, C)")
    planes, size = shape[0] * shape[1], shape[2] * shape[3]
    dx = np.empty(shape, dtype=dy.dtype)
    if dy.size == 0:
        dx[...] = 0
        return dx
    dy_planes = np.ascontiguousarray(dy).reshape(planes, -1)
    path_planes = np.ascontiguousarray(path, dtype=np.int64).reshape(planes, -1)
    # The scatter kernel writes only indices inside the plane and counts the others.
    if _pool.maxpool_backward(dy_planes, path_planes, dx.reshape(planes, size), threads_worth(dx.size)):
        raise ValueError(
            f"path: indices must lie in [0, H*W) = [0, {size}) for x_shape {shape}, "
            f"got range [{path_planes.min()}, {path_planes.max()}]")
    return dx


def avgpool2d_forward(x, kernel_size, stride=None, padding=0):
    """Average pooling. x: (N, C, H, W) -> y: (N, C, Ho, Wo), x's dtype.

    ``y[n, c, i, j] = sum of window (i, j) / (kh*kw)``: padding counts as 0
    and is included in the divisor (PyTorch's count_include_pad=True).
    """
    x = check_image(x, "x")
    g = _geometry(x.shape[2:], kernel_size, stride, padding)
    y = np.empty((x.shape[0], x.shape[1], g.out_h, g.out_w), dtype=x.dtype)
    _pool.avgpool_forward(x, y, g.kh, g.kw, g.sh, g.sw, g.pt, g.pl)
    return y


def avgpool2d_backward(dy, x_shape, kernel_size, stride=None, padding=0):
    """The adjoint of :func:`avgpool2d_forward`: each window spreads dy/(kh*kw) over its cells.

    dy: (N, C, Ho, Wo); x_shape: (N, C, H, W). Returns dx of shape x_shape
    and dy's dtype (overlapping windows add up).
    """
    shape = check_x_shape(x_shape)
    g = _geometry(shape[2:], kernel_size, stride, padding)
    dy = _check_dy(dy, (shape[0], shape[1], g.out_h, g.out_w))
    dx = np.empty(shape, dtype=dy.dtype)
    _pool.avgpool_backward(dy, dx, g.kh, g.kw, g.sh, g.sw, g.pt, g.pl)
    return dx
