"""Transposed convolution: the seeds' Conv_BF used as a forward pass.

With w of shape (C_in, C_out/groups, kh, kw), the transposed convolution of x
(N, C_in, H, W) scatters every input pixel through the kernel:

    y[n, o, i*sh - pt + p*dh, j*sw - pl + q*dw] += x[n, c, i, j] w[c, o, p, q]   (+ b[o])

which is exactly conv2d_backward_data (Conv_BF, dx = col2im(dY C^T)) with x in
the role of dy and the weight read as a (K = C_in, C = C_out) convolution bank.
So the three passes are the convolution's three, rearranged:

    forward:          y  = conv2d_backward_data(x, w, y_shape)
    backward (data):  dx = conv2d_forward(dy, w)                  (Conv_F)
    weight gradient:  dw = conv2d_backward_weights(x, dy, w.shape)  (Conv_grad, x and dy swapped)
                      db = sum of dy over n, i, j

Output size (PyTorch's): Ho = (H - 1)*sh - pt - pb + dh*(kh - 1) + oph + 1.
``output_padding`` (oph, opw) adds rows/columns at the bottom/right, to pick
one of the sizes that a stride-sh convolution maps to H; as in PyTorch it
must be smaller than the stride or the dilation, oph < max(sh, dh). In the
convolution it is the bottom/right padding pb - oph (negative: a crop).
``padding`` is an int, (ph, pw) or ((top, bottom), (left, right)), >= 0.
"""
from .._checks import (as_float, check_image, check_int, check_ndim, check_x_shape, pair,
                       positive_pair, resolve_padding)
from .conv import conv2d_backward_data, conv2d_backward_weights, conv2d_forward

__all__ = ["conv_transpose2d_forward", "conv_transpose2d_backward_data",
           "conv_transpose2d_backward_weights", "conv_transpose_geometry"]


def conv_transpose_geometry(in_hw, kernel_size, stride=1, padding=0, output_padding=0, dilation=1):
    """(out_hw, conv_padding): the output size, and the padding of the convolution it transposes.

    ValueError (naming the argument) for a string or negative padding, an
    output_padding not smaller than max(stride, dilation), or an empty output.
    """
    (kh, kw), (sh, sw) = positive_pair(kernel_size, "kernel_size"), positive_pair(stride, "stride")
    dh, dw = positive_pair(dilation, "dilation")
    if isinstance(padding, str):
        raise ValueError(f"padding: a transposed convolution takes an int, (ph, pw) or "
                         f"((top, bottom), (left, right)), got {padding!r}")
    (pt, pb), (pl, pr) = resolve_padding(padding, (kh, kw), (sh, sw), (dh, dw), in_hw)
    if min(pt, pb, pl, pr) < 0:
        raise ValueError(f"padding: must be >= 0 for a transposed convolution, got {padding!r}")
    oph, opw = pair(output_padding, "output_padding")
    if not (0 <= oph < max(sh, dh) and 0 <= opw < max(sw, dw)):
        raise ValueError(f"output_padding: must be >= 0 and smaller than the stride or the "
                         f"dilation (PyTorch's rule), got output_padding={output_padding!r} with "
                         f"stride ({sh}, {sw}) and dilation ({dh}, {dw})")
    out_h = (in_hw[0] - 1) * sh - pt - pb + dh * (kh - 1) + oph + 1
    out_w = (in_hw[1] - 1) * sw - pl - pr + dw * (kw - 1) + opw + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"padding: {padding!r} leaves no output for input size {tuple(in_hw)} "
                         f"(output size ({out_h}, {out_w}))")
    return (out_h, out_w), ((pt, pb - oph), (pl, pr - opw))


def _check_weight(w, in_channels, groups, dtype):
    """w as a (C_in, C_out/groups, kh, kw) array of dtype; groups must divide C_in."""
    w = as_float(w, "w", dtype=dtype)
    check_ndim(w, 4, "w", "(C_in, C_out/groups, kh, kw)")
    if w.shape[0] != in_channels or min(w.shape) < 1:
        raise ValueError(f"w: expected shape ({in_channels}, C_out/groups, kh, kw) for inputs with "
                         f"{in_channels} channels, got {w.shape}")
    if in_channels % check_int(groups, "groups"):
        raise ValueError(f"groups: {groups} groups must divide the {in_channels} input channels")
    return w


def _kernel_of(w_shape):
    try:
        shape = tuple(int(s) for s in w_shape)
    except (TypeError, ValueError):
        raise TypeError(f"w_shape: expected a shape (C_in, C_out/groups, kh, kw), got {w_shape!r}") from None
    if len(shape) != 4:
        raise ValueError(f"w_shape: expected a shape (C_in, C_out/groups, kh, kw), got {w_shape!r}")
    return shape[2:]


def conv_transpose2d_forward(x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1,
                             groups=1, method="im2col"):
    """y = Conv_BF(x): x (N, C_in, H, W), w (C_in, C_out/groups, kh, kw), b (C_out,) or None.

    Returns y (N, C_out, Ho, Wo) in x's dtype (sizes in the module docstring).
    """
    x = check_image(x, "x")
    w = _check_weight(w, x.shape[1], groups, x.dtype)
    out_hw, conv_padding = conv_transpose_geometry(x.shape[2:], w.shape[2:], stride, padding,
                                                   output_padding, dilation)
    out_channels = w.shape[1] * groups
    if b is not None:
        b = as_float(b, "b", dtype=x.dtype)
        if b.shape != (out_channels,):
            raise ValueError(f"b: expected shape ({out_channels},) for {out_channels} output "
                             f"channels, got {b.shape}")
    y = conv2d_backward_data(x, w, (x.shape[0], out_channels) + out_hw, stride, conv_padding,
                             dilation, method=method, groups=groups)
    if b is not None:
        y += b.reshape(-1, 1, 1)
    return y


def conv_transpose2d_backward_data(dy, w, x_shape, stride=1, padding=0, output_padding=0,
                                   dilation=1, groups=1, method="im2col"):
    """dx = Conv_F(dy): the convolution of dy (N, C_out, Ho, Wo) with w. Returns dx of shape x_shape."""
    shape = check_x_shape(x_shape)
    dy = as_float(dy, "dy")
    w = _check_weight(w, shape[1], groups, dy.dtype)
    out_hw, conv_padding = conv_transpose_geometry(shape[2:], w.shape[2:], stride, padding,
                                                   output_padding, dilation)
    check_ndim(dy, 4, "dy", "(N, C_out, Ho, Wo)")
    if dy.shape[0] != shape[0] or dy.shape[2:] != out_hw:
        raise ValueError(f"dy: shape {dy.shape} does not match the transposed convolution's "
                         f"output shape ({shape[0]}, C_out) + {out_hw}")
    return conv2d_forward(dy, w, None, stride, conv_padding, dilation, method=method, groups=groups)


def conv_transpose2d_backward_weights(dy, x, w_shape, stride=1, padding=0, output_padding=0,
                                      dilation=1, groups=1, method="im2col"):
    """(dw, db): dw = Conv_grad with x and dy swapped, db = sum of dy over n, i, j.

    dy: (N, C_out, Ho, Wo); x: the forward input (N, C_in, H, W); w_shape:
    (C_in, C_out/groups, kh, kw). Returns (dw, db) in dy's dtype.
    """
    dy = as_float(dy, "dy")
    x = check_image(as_float(x, "x", dtype=dy.dtype), "x")
    out_hw, conv_padding = conv_transpose_geometry(x.shape[2:], _kernel_of(w_shape), stride,
                                                   padding, output_padding, dilation)
    check_ndim(dy, 4, "dy", "(N, C_out, Ho, Wo)")
    if dy.shape[0] != x.shape[0] or dy.shape[2:] != out_hw:
        raise ValueError(f"dy: shape {dy.shape} does not match the transposed convolution's "
                         f"output shape ({x.shape[0]}, C_out) + {out_hw}")
    dw, _ = conv2d_backward_weights(x, dy, w_shape, stride, conv_padding, dilation,
                                    method=method, groups=groups)
    return dw, dy.sum(axis=(0, 2, 3))
