"""Max and average pooling over (N, C, H, W) images, forward and backward.

Geometry follows the convolution's (``im2colnet._checks.conv_geometry``):
window (i, j) covers rows ``i*sh - pt + p*dh`` (p < kh) and columns
``j*sw - pl + q*dw`` (q < kw); ``Ho = (H + pt + pb - dh*(kh-1) - 1) // sh + 1``.
``stride`` defaults to ``kernel_size``, so windows tile the image; other
strides make them overlap (stride < kernel) or leave gaps (stride > kernel).
Padding is an int, ``(ph, pw)``, ``((top, bottom), (left, right))``,
``"valid"`` or ``"same"``; a negative value crops. Dilation (max pooling
only) spaces the taps, as in a dilated convolution.

``ceil_mode=True`` rounds Ho up (PyTorch's rule): a last window may hang past
the bottom/right padding, but only while it starts inside the input or the
top/left padding, ``(Ho-1)*sh < H + pt``. Cells past the padding count
nowhere (not even in an average's divisor).

Max pooling pads with -inf and requires every padding to be smaller than the
kernel on its axis (as PyTorch does, more loosely), and every window to hold
an image cell (dilation or ceil_mode could make one miss the image): its
winner is then always an image cell.
Average pooling pads with 0 and divides by the window's cells inside the padded
input (``count_include_pad=True``, kh*kw except for a ceil_mode window) or
inside the image (``count_include_pad=False``, which then needs every window to
hold an image cell).
"""
import numpy as np

from ..runtime.threads import threads_worth
from .._checks import (as_float, check_image, check_max_pool_padding, check_ndim, check_x_shape,
                       conv_geometry)
from .._kernels import pool as _pool

__all__ = ["maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward",
           "global_avgpool2d_forward", "global_avgpool2d_backward"]


def _geometry(in_hw, kernel_size, stride, padding, dilation=1, ceil_mode=False):
    """The window geometry; stride None means stride = kernel_size."""
    g = conv_geometry(in_hw, kernel_size, kernel_size if stride is None else stride, padding,
                      dilation, ceil_mode=bool(ceil_mode))
    if ceil_mode and min(g.pb, g.pr) < 0:
        # a last window would reach into the cropped cells, which the kernels would read
        raise ValueError(f"padding: ceil_mode needs the bottom/right padding >= 0 (a negative "
                         f"one crops), got padding={padding!r}")
    return g


def _window_misses_image(size, out, s, d, k, pad):
    """Does some window along one axis (starts t*s - pad, k taps d apart) miss [0, size)?

    A window starting inside the image holds its first tap there, so only those
    starting in the padding before (t*s < pad) or past the image are looked at.
    """
    before = min(out, max(0, -(-pad // s)))
    past = max(before, min(out, -(-(size + pad) // s)))
    for t in (*range(before), *range(past, out)):
        start = t * s - pad
        first = 0 if start >= 0 else -(start // d)        # the first tap at or after 0
        if first >= k or start + first * d >= size:
            return True
    return False


def _check_windows_touch_image(in_hw, g, why):
    """ValueError unless every window holds at least one image cell (``why`` says why it must)."""
    for axis, size, out, s, d, k, pad in (("H", in_hw[0], g.out_h, g.sh, g.dh, g.kh, g.pt),
                                          ("W", in_hw[1], g.out_w, g.sw, g.dw, g.kw, g.pl)):
        if _window_misses_image(size, out, s, d, k, pad):
            raise ValueError(
                f"padding: a window along {axis} holds padding only ({why}): input size {size}, "
                f"kernel_size {k}, stride {s}, dilation {d}, padding before {pad}, output size {out}")


def _check_dy(dy, out_shape):
    dy = as_float(dy, "dy")
    check_ndim(dy, 4, "dy", "(N, C, Ho, Wo)")
    if dy.shape != out_shape:
        raise ValueError(f"dy: shape {dy.shape} does not match the pooling output shape {out_shape}")
    return np.ascontiguousarray(dy)


def max_geometry(in_hw, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """The checked geometry of max pooling (see the module docstring for its two rules)."""
    g = _geometry(in_hw, kernel_size, stride, padding, dilation, ceil_mode)
    check_max_pool_padding(g)
    if ceil_mode or (g.dh, g.dw) != (1, 1):
        _check_windows_touch_image(in_hw, g, "max pooling has no winner there")
    return g


def maxpool2d_forward(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Max pooling with the winners' positions.

    x: (N, C, H, W) -> (y, path), both (N, C, Ho, Wo). y has x's dtype;
    path (int64) holds the flat index ``r*W + c`` of each window's maximum in
    its input plane. Ties go to the first maximum in row-major window order;
    a NaN in a window wins (the first NaN), so NaNs propagate.
    """
    x = check_image(x, "x")
    g = max_geometry(x.shape[2:], kernel_size, stride, padding, dilation, ceil_mode)
    out_shape = (x.shape[0], x.shape[1], g.out_h, g.out_w)
    y = np.empty(out_shape, dtype=x.dtype)
    path = np.empty(out_shape, dtype=np.int64)
    # a window's comparisons count double
    _pool.maxpool_forward(x, y, path, g.kh, g.kw, g.sh, g.sw, g.pt, g.pl, True,
                          threads_worth(2 * x.size), g.dh, g.dw)
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


def avg_geometry(in_hw, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True):
    """The checked geometry of average pooling (see the module docstring)."""
    g = _geometry(in_hw, kernel_size, stride, padding, 1, ceil_mode)
    if not count_include_pad:
        _check_windows_touch_image(in_hw, g, "count_include_pad=False would divide by 0")
    return g


def avgpool2d_forward(x, kernel_size, stride=None, padding=0, ceil_mode=False,
                      count_include_pad=True):
    """Average pooling. x: (N, C, H, W) -> y: (N, C, Ho, Wo), x's dtype.

    ``y[n, c, i, j] = sum of window (i, j) / divisor``: padding counts as 0;
    the divisor is kh*kw with ``count_include_pad=True`` (PyTorch's default;
    a ceil_mode window counts only its cells inside the padded input), else
    the number of the window's image cells.
    """
    x = check_image(x, "x")
    g = avg_geometry(x.shape[2:], kernel_size, stride, padding, ceil_mode, count_include_pad)
    y = np.empty((x.shape[0], x.shape[1], g.out_h, g.out_w), dtype=x.dtype)
    _pool.avgpool_forward(x, y, g.kh, g.kw, g.sh, g.sw, g.pt, g.pl, g.pb, g.pr,
                          bool(count_include_pad))
    return y


def avgpool2d_backward(dy, x_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                       count_include_pad=True):
    """The adjoint of :func:`avgpool2d_forward`: each window spreads dy/divisor over its cells.

    dy: (N, C, Ho, Wo); x_shape: (N, C, H, W). Returns dx of shape x_shape
    and dy's dtype (overlapping windows add up).
    """
    shape = check_x_shape(x_shape)
    g = avg_geometry(shape[2:], kernel_size, stride, padding, ceil_mode, count_include_pad)
    dy = _check_dy(dy, (shape[0], shape[1], g.out_h, g.out_w))
    dx = np.empty(shape, dtype=dy.dtype)
    _pool.avgpool_backward(dy, dx, g.kh, g.kw, g.sh, g.sw, g.pt, g.pl, g.pb, g.pr,
                           bool(count_include_pad))
    return dx


def global_avgpool2d_forward(x):
    """Global average pooling: y[n, c, 0, 0] = mean of x[n, c] (an H x W window).

    x: (N, C, H, W) -> y: (N, C, 1, 1), x's dtype (PyTorch's AdaptiveAvgPool2d(1)).
    """
    x = check_image(x, "x")
    return avgpool2d_forward(x, x.shape[2:])


def global_avgpool2d_backward(dy, x_shape):
    """The adjoint of :func:`global_avgpool2d_forward`: dx[n, c] = dy[n, c, 0, 0] / (H*W) everywhere.

    dy: (N, C, 1, 1); x_shape: (N, C, H, W).
    """
    shape = check_x_shape(x_shape)
    return avgpool2d_backward(dy, shape, shape[2:])
