"""Convolution (cross-correlation) forward, backward-data and backward-weights.

The im2col path is the vec/Kronecker form of the layer. With phi(x) the
(Ho*Wo, C*kh*kw) im2col matrix of one sample (vec phi(x) = M vec x for a 0/1
selection matrix M) and the kernel bank as the matrix C = w.reshape(K, -1)^T
of shape (C*kh*kw, K):

    Conv_F:    vec(Y) = (I (x) phi(x)) vec(C),  i.e.  Y = phi(x) C      (+ b)
    Conv_grad: dC = phi(x)^T dY,                 db = sum of dY
    Conv_BF:   dx = M^T vec(dY C^T) = col2im(dY C^T)

Each pass is one im2col (or col2im) kernel plus BLAS products. The kernels
build phi(x)^T (Caffe's layout, see ``im2colnet._kernels.im2col``), so the
products are computed transposed: Y^T = C^T phi^T is a sample's (K, Ho*Wo)
slice of the NCHW output, and dphi^T = C dY^T is in the layout col2im reads.
The products run one per sample, reading and writing the NCHW arrays in
place (im2colnet.runtime.gemm.matmul_each: the samples are split over our threads).
Only when NumPy's matmul does the products (a BLAS other than NumPy's
OpenBLAS) do large layers (products over SMALL_GEMM_FLOPS) take one product
per block of samples instead, with a copy between the block's (K, nb, Ho*Wo)
layout and NCHW: one large product on the BLAS's threads beats many small
ones on one thread (see _per_sample).

The column matrix of a whole batch can be large (64 samples of a 64-channel
3x3 layer at 16x16: 36 MiB in float32), so samples are processed in blocks
whose columns fit in ``WORKSPACE_BYTES`` (8 MiB): small enough that the GEMM
reads the columns from the cache the im2col kernel just wrote them to, large
enough for an efficient GEMM (docs/performance.md has the measurements).
The block buffer is kept per thread and per dtype and reused from call to
call (no per-step allocation); a sample larger than the bound is processed
alone.

1x1 kernels with stride 1 and no padding skip im2col: phi(x)^T is x itself.

conv2d_backward_weights builds the columns again instead of keeping them from
the forward pass: one more im2col per step, against holding a column matrix
per layer (C*kh*kw times the layer's output) from forward to backward.

``method="direct"`` runs the loops of ``im2colnet._kernels.conv_direct``
instead: the same results (to rounding), no im2col, no BLAS.

Methods. ``method="im2col"`` (the default) runs float32 convolutions on our own
packed GEMM (``im2colnet._kernels.packed_conv``, C sources in _kernels/csrc): phi(x)
is packed straight from x one cache-sized panel at a time inside the product,
never built for a whole sample, and a register-tiled micro-kernel writes Y^T into
the NCHW output; the three passes split their work over our OpenMP threads. float64
(and shapes where the packed kernel is slower, see _packed_wins) take the route
above, im2col blocks + BLAS products, which ``method="blas"`` always takes. Conv_BF of
a stride-1 layer with few output channels runs as the forward pass of dY with the
kernel turned 180 degrees (_adjoint_window), which the packed kernel does faster than
its col2im (_data_as_forward).

``groups=G`` (grouped convolution; depthwise when G = C): the C input and K
output channels split into G consecutive groups, and output group g sees only
input group g, with w of shape (K, C/G, kh, kw). Each of the three passes is a
loop over the groups around the ungrouped pass on the channel slices (one
product per group, with method "im2col" or "blas"). ``method="direct"`` runs the
grouped loops of conv_direct in one call, and so does "im2col" when the groups are
too thin for a product (depthwise: one input channel per kernel, see _grouped_direct).
"""
import threading

import numpy as np

from ..runtime.blas import SMALL_GEMM_FLOPS, gemm_threads
from ..runtime.gemm import matmul, matmul_each, matmul_each_sum, threaded_gemm
from ..runtime.threads import thread_count
from .._checks import as_float, check_image, check_int, check_ndim, check_x_shape, conv_geometry
from .._kernels import conv_direct as _direct
from .._kernels import im2col as _im2col
from .._kernels import packed_conv as _packed

__all__ = ["im2col", "col2im", "conv2d_forward", "conv2d_backward_data",
           "conv2d_backward_weights", "workspace_bytes", "WORKSPACE_BYTES"]

# Upper bound on the im2col block (see the module docstring; a single sample
# larger than this is still processed, alone).
WORKSPACE_BYTES = 8 * 2 ** 20

METHODS = ("im2col", "blas", "direct")

# A grouped layer with fewer input channels per kernel than this runs the direct loops
# under method="im2col" (see _grouped_direct).
DIRECT_GROUP_MAX_CHANNELS = 2

# The packed data gradient of a stride-1 layer with C >= DATA_AS_FORWARD_MIN_CHANNELS
# input channels and K <= 2 C output channels runs as a forward pass (see _data_as_forward).
DATA_AS_FORWARD_MIN_CHANNELS = 8


class _Workspace(threading.local):
    """Reusable scratch arrays of the calling thread: {(role, dtype): flat array}."""

    def __init__(self):
        self.buffers = {}


_workspace = _Workspace()


def _scratch(role, shape, dtype):
    """A scratch array of the given shape from the thread's buffer for `role`, grown on demand."""
    size = int(np.prod(shape))
    key = (role, np.dtype(dtype))
    buf = _workspace.buffers.get(key)
    if buf is None or buf.size < size:
        buf = np.empty(size, dtype=dtype)
        _workspace.buffers[key] = buf
    return buf[:size].reshape(shape)


def workspace_bytes():
    """Bytes of scratch memory the calling thread holds for im2col blocks (its peak use)."""
    return sum(buf.nbytes for buf in _workspace.buffers.values())


# ---------------------------------------------------------------- validation

def _check_method(method):
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    return method


def _check_weight(w, channels, dtype):
    """w as a C-contiguous (K, C, kh, kw) array of `dtype` matching `channels` input channels."""
    w = as_float(w, "w", dtype=dtype)
    check_ndim(w, 4, "w", "(K, C, kh, kw)")
    if w.shape[1] != channels or min(w.shape) < 1:
        raise ValueError(
            f"w: expected shape (K, {channels}, kh, kw) with K, kh, kw >= 1 for inputs "
            f"with {channels} channels, got {w.shape}")
    return np.ascontiguousarray(w)


def _check_bias(b, out_channels, dtype):
    b = as_float(b, "b", dtype=dtype)
    if b.shape != (out_channels,):
        raise ValueError(f"b: expected shape ({out_channels},) for {out_channels} kernels, got {b.shape}")
    return b


def _check_input(x):
    x = check_image(x, "x")
    if x.shape[1] == 0:
        raise ValueError(f"x: has no channels (shape {x.shape})")
    return x


def _check_dy(dy, expected, dtype=None):
    dy = as_float(dy, "dy", dtype=dtype)
    check_ndim(dy, 4, "dy", "(N, K, Ho, Wo)")
    if dy.shape != expected:
        raise ValueError(f"dy: shape {dy.shape} does not match the convolution's output shape {expected}")
    return np.ascontiguousarray(dy)


def _check_w_shape(w_shape, x_shape, out_channels):
    try:
        shape = tuple(int(s) for s in w_shape)
    except (TypeError, ValueError):
        raise TypeError(f"w_shape: expected a shape (K, C, kh, kw), got {w_shape!r}") from None
    if len(shape) != 4 or min(shape) < 1 or shape[0] != out_channels or shape[1] != x_shape[1]:
        raise ValueError(
            f"w_shape: expected ({out_channels}, {x_shape[1]}, kh, kw) for dy with "
            f"{out_channels} channels and x of shape {x_shape}, got {w_shape!r}")
    return shape


# ------------------------------------------------------------------- helpers

def _packed_wins(dtype, g, pass_):
    """Does method="im2col" take the packed kernel rather than the BLAS route?

    float32 only, and not the data gradient of a convolution with a column stride
    above 1: its col2im adds back one cell in sw, element by element, and it was the
    one pass measured slower than the BLAS route (docs/performance.md).
    """
    if dtype != np.float32:
        return False
    return not (pass_ == "backward-data" and g.sw > 1)


def _sum_in_order(partial):
    """partial[0] + partial[1] + ... in this order (the same sum on every run)."""
    total = partial[0]
    for piece in partial[1:]:
        total += piece
    return total


def _packed_window(g):
    """The geometry tuple of the packed kernel (kh, kw, sh, sw, dh, dw, pt, pl)."""
    return (g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl)


def _data_as_forward(g, channels, out_channels):
    """Run the packed data gradient as a forward pass (_adjoint_window)?

    Stride 1 only, and where that product is the faster one: the col2im route's product
    has an inner dimension of only K and a scatter of C*kh*kw rows after it, the forward
    pass's has C rows; so it wins for few output channels, not too many beside C
    (benchmarks/data_gradient_ab.py, docs/performance.md).
    """
    return ((g.sh, g.sw) == (1, 1) and channels >= DATA_AS_FORWARD_MIN_CHANNELS
            and out_channels <= 2 * channels)


def _adjoint_window(g):
    """The window of Conv_BF at stride 1 as a correlation: with y[i] = sum_p x[i - pt + p dh] w[p],
    dx[i] = sum_p dy[i - (dh (kh-1) - pt) + p dh] w[kh-1-p], i.e. the forward pass of dY with
    the kernel turned 180 degrees and its two channel axes swapped, padded by dh (kh-1) - pt
    (negative: a crop) at the top and dw (kw-1) - pl at the left; dx's shape sets the rest."""
    return (g.kh, g.kw, 1, 1, g.dh, g.dw, g.dh * (g.kh - 1) - g.pt, g.dw * (g.kw - 1) - g.pl)


def _window(g):
    """The geometry arguments of the im2col kernels, in their order (before the row range)."""
    return g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl


def _is_pointwise(g):
    """1x1 kernel, stride 1, no padding: phi(x)^T of a sample is x itself, (C, H*W)."""
    return (g.kh, g.kw, g.sh, g.sw, g.pt, g.pb, g.pl, g.pr) == (1, 1, 1, 1, 0, 0, 0, 0)


def _blocks(n, taps, g, itemsize):
    """(n0, nb, i0, i1) blocks whose im2col columns fit in WORKSPACE_BYTES.

    Whole samples when one sample fits (nb of them), else output rows
    [i0, i1) of one sample at a time (a single output row larger than the
    bound is processed alone).
    """
    row_bytes = taps * g.out_w * itemsize
    sample_bytes = row_bytes * g.out_h
    if sample_bytes <= WORKSPACE_BYTES:
        nb = max(1, min(n, WORKSPACE_BYTES // max(sample_bytes, 1)))
        for n0 in range(0, n, nb):
            yield n0, min(nb, n - n0), 0, g.out_h
    else:
        rows = max(1, WORKSPACE_BYTES // row_bytes)
        for n0 in range(n):
            for i0 in range(0, g.out_h, rows):
                yield n0, 1, i0, min(g.out_h, i0 + rows)


def _column_blocks(x, g):
    """Yield (n0, nb, i0, i1, cols_t): the columns of output rows [i0, i1) of samples
    n0 .. n0+nb-1, as a (C*kh*kw, nb*(i1-i0)*Wo) scratch array."""
    taps = x.shape[1] * g.kh * g.kw
    for n0, nb, i0, i1 in _blocks(x.shape[0], taps, g, x.itemsize):
        cols_t = _scratch("cols", (taps, nb * (i1 - i0) * g.out_w), x.dtype)
        _im2col.im2col_t(x, n0, cols_t, *_window(g), i0, i1, g.out_w)
        yield n0, nb, i0, i1, cols_t


# With the products on our threads, a sample's product is worth its own BLAS call
# from this many output pixels on (see _per_sample).
PER_SAMPLE_MIN_PIXELS = 64


def _per_sample(flops, pixels, weights=False):
    """One product per sample, reading and writing the NCHW arrays in place, instead of
    one product per block and a layout copy?

    flops: the layer's products; pixels: output pixels per sample; weights: for the
    weight gradient.
    - Products on our threads (the samples split over them): per sample from
      PER_SAMPLE_MIN_PIXELS output pixels (below, the products get too thin), and
      always for the weight gradient.
    - Products through NumPy's matmul (another BLAS), one after the other on one
      BLAS thread: per sample only for small layers (under SMALL_GEMM_FLOPS); a
      large layer's block product runs on the BLAS's threads.
    docs/performance.md has the A/B timings behind these rules.
    """
    if threaded_gemm():
        return weights or pixels >= PER_SAMPLE_MIN_PIXELS
    return flops < SMALL_GEMM_FLOPS


def _dy_block_t(dy3, n0, nb, i0, i1, g):
    """dY^T of a block: dy of samples n0 .. n0+nb-1, output rows [i0, i1), copied into a
    (K, nb*(i1-i0)*Wo) scratch array (the layout of the block's columns)."""
    K, L = dy3.shape[1], (i1 - i0) * g.out_w
    dy_t = _scratch("dy", (K, nb, L), dy3.dtype)
    np.copyto(dy_t, dy3[n0:n0 + nb, :, i0 * g.out_w:i1 * g.out_w].transpose(1, 0, 2))
    return dy_t.reshape(K, nb * L)


# ------------------------------------------------------------ im2col, col2im

def im2col(x, kernel_size, stride=1, padding=0, dilation=1):
    """phi(x): x (N, C, H, W) -> cols (N*Ho*Wo, C*kh*kw).

    Row ``(n*Ho + i)*Wo + j``, column ``(c*kh + p)*kw + q`` holds
    ``x[n, c, i*sh - pt + p*dh, j*sw - pl + q*dw]`` (0 outside the image).
    The result is the transpose (a view) of a C-contiguous (C*kh*kw, N*Ho*Wo)
    array, the layout the convolution's GEMM uses.
    """
    x = _check_input(x)
    g = conv_geometry(x.shape[2:], kernel_size, stride, padding, dilation)
    N, C = x.shape[:2]
    cols_t = np.empty((C * g.kh * g.kw, N * g.out_h * g.out_w), dtype=x.dtype)
    _im2col.im2col_t(x, 0, cols_t, *_window(g), 0, g.out_h, g.out_w)
    return cols_t.T


def col2im(cols, x_shape, kernel_size, stride=1, padding=0, dilation=1):
    """M^T: the adjoint of :func:`im2col`. cols (N*Ho*Wo, C*kh*kw) -> x (x_shape).

    Entries that im2col copied from one input cell are summed back into it;
    entries that came from padding are dropped.
    """
    shape = check_x_shape(x_shape)
    cols = as_float(cols, "cols")
    g = conv_geometry(shape[2:], kernel_size, stride, padding, dilation)
    expected = (shape[0] * g.out_h * g.out_w, shape[1] * g.kh * g.kw)
    if cols.shape != expected:
        raise ValueError(f"cols: expected shape {expected} (N*Ho*Wo, C*kh*kw) for x_shape {shape}, "
                         f"got {cols.shape}")
    dx = np.empty(shape, dtype=cols.dtype)
    _im2col.col2im_t(np.ascontiguousarray(cols.T), dx, 0, *_window(g), 0, g.out_h, g.out_w)
    return dx


# --------------------------------------------------------------- convolution

def conv2d_forward(x, w, b=None, stride=1, padding=0, dilation=1, anchor=None, method="im2col",
                   groups=1):
    """Conv_F: y[n,k,i,j] = sum_{c,p,q} w[k,c,p,q] x[n, c, i*sh-pt+p*dh, j*sw-pl+q*dw] + b[k].

    x: (N, C, H, W); w: (K, C/groups, kh, kw); b: (K,) or None. Returns y (N, K, Ho, Wo)
    in x's dtype. ``padding`` takes every form of the API (int, pair, per side,
    negative = crop, "same", "valid"); ``anchor=(m, n)`` replaces it. ``groups``:
    see the module docstring (c then runs over the group of k).
    """
    if check_int(groups, "groups") > 1:
        return _grouped_forward(x, w, b, groups, stride=stride, padding=padding,
                                dilation=dilation, anchor=anchor, method=method)
    x = _check_input(x)
    w = _check_weight(w, x.shape[1], x.dtype)
    _check_method(method)
    g = conv_geometry(x.shape[2:], w.shape[2:], stride, padding, dilation, anchor)
    N, K, P = x.shape[0], w.shape[0], g.out_h * g.out_w
    b = None if b is None else _check_bias(b, K, x.dtype)
    if method == "direct":
        return _direct_forward(x, w, b, g)
    y = np.empty((N, K, g.out_h, g.out_w), dtype=x.dtype)
    if method == "im2col" and _packed_wins(x.dtype, g, "forward"):
        bias = None if b is None else np.ascontiguousarray(b)
        _packed.forward(x, w.reshape(K, -1), bias, y, _packed_window(g), thread_count())
        return y
    else:
        wmat = w.reshape(K, -1)
        y3 = y.reshape(N, K, P)
        flops = 2.0 * N * P * wmat.size
        with gemm_threads(flops):
            _forward_im2col(x, wmat, y3, g, per_sample=_per_sample(flops, P))
    if b is not None:
        y += b.reshape(K, 1, 1)
    return y


# The direct loops (method="direct", and thin groups under "im2col"): every group in one call.

def _direct_forward(x, w, b, g, groups=1):
    """Conv_F by the loops: y = b + conv(x, w)."""
    y = np.zeros((x.shape[0], w.shape[0], g.out_h, g.out_w), dtype=x.dtype)
    _direct.conv_forward(x, np.ascontiguousarray(w), y, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl,
                         groups=groups)
    if b is not None:
        y += b.reshape(-1, 1, 1)
    return y


def _direct_backward_data(dy, w, x_shape, g, groups=1):
    """Conv_BF by the loops: dx of x_shape."""
    dx = np.empty(x_shape, dtype=dy.dtype)
    _direct.conv_backward_data(dy, np.ascontiguousarray(w), dx, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl,
                               groups=groups)
    return dx


def _direct_backward_weights(dy, x, w_shape, g, groups=1):
    """Conv_grad by the loops: dw of w_shape."""
    dw = np.empty(w_shape, dtype=dy.dtype)
    _direct.conv_backward_weights(dy, x, dw, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl,
                                  groups=groups)
    return dw


def _forward_im2col(x, wmat, y3, g, per_sample=False):
    """y3 (N, K, Ho*Wo) = C^T phi(x)^T per sample, block by block.

    per_sample: one product per sample written straight into y3, instead of one
    product per block and a layout copy (see _per_sample for when).
    """
    N, K, P = y3.shape
    if _is_pointwise(g):
        matmul_each(wmat, x.reshape(N, -1, P), y3)
    else:
        for n0, nb, i0, i1, cols_t in _column_blocks(x, g):
            L = (i1 - i0) * g.out_w
            y_block = y3[n0:n0 + nb, :, i0 * g.out_w:i1 * g.out_w]
            if per_sample:
                # Y^T = C^T phi^T of each sample, straight into y
                matmul_each(wmat, cols_t.reshape(-1, nb, L).transpose(1, 0, 2), y_block)
            else:
                # Y^T = C^T phi^T for the whole block in one product, then (K, nb, L) -> y
                y_t = _scratch("y", (K, nb, L), x.dtype)
                matmul(wmat, cols_t, y_t.reshape(K, nb * L))
                np.copyto(y_block, y_t.transpose(1, 0, 2))


def conv2d_backward_data(dy, w, x_shape, stride=1, padding=0, dilation=1, anchor=None,
                         method="im2col", groups=1):
    """Conv_BF: dx = col2im(dY C^T), the gradient of the loss with respect to x.

    dy: (N, K, Ho, Wo); w: (K, C/groups, kh, kw); x_shape: (N, C, H, W) of the forward
    input. Returns dx of shape x_shape in dy's dtype.
    """
    if check_int(groups, "groups") > 1:
        return _grouped_backward_data(dy, w, x_shape, groups, stride=stride, padding=padding,
                                      dilation=dilation, anchor=anchor, method=method)
    shape = check_x_shape(x_shape)
    dy = as_float(dy, "dy")
    w = _check_weight(w, shape[1], dy.dtype)
    _check_method(method)
    g = conv_geometry(shape[2:], w.shape[2:], stride, padding, dilation, anchor)
    N, K, P = shape[0], w.shape[0], g.out_h * g.out_w
    dy = _check_dy(dy, (N, K, g.out_h, g.out_w))
    if method == "direct":
        return _direct_backward_data(dy, w, shape, g)
    dx = np.empty(shape, dtype=dy.dtype)
    if method == "im2col" and _packed_wins(dy.dtype, g, "backward-data"):
        if _data_as_forward(g, shape[1], K):
            _packed.forward_adjoint(dy, w, dx, _adjoint_window(g), thread_count())
        else:
            _packed.backward_data(dy, w.reshape(K, -1), dx, _packed_window(g), thread_count())
        return dx
    wmat_t = w.reshape(K, -1).T
    flops = 2.0 * N * P * wmat_t.size
    with gemm_threads(flops):
        _backward_data_im2col(dy.reshape(N, K, P), wmat_t, dx, g, per_sample=_per_sample(flops, P))
    return dx


def _backward_data_im2col(dy3, wmat_t, dx, g, per_sample=False):
    """dx = col2im(dY C^T), block by block; dy3 is (N, K, Ho*Wo)."""
    N, K, P = dy3.shape
    if _is_pointwise(g):
        matmul_each(wmat_t, dy3, dx.reshape(N, -1, P))
        return
    taps = wmat_t.shape[0]
    for n0, nb, i0, i1 in _blocks(N, taps, g, dy3.itemsize):
        L = (i1 - i0) * g.out_w
        dcols_t = _scratch("cols", (taps, nb * L), dy3.dtype)
        # dphi^T = C dY^T, in the layout col2im reads: one product per sample, or one
        # for the whole block (see _per_sample)
        if per_sample:
            matmul_each(wmat_t, dy3[n0:n0 + nb, :, i0 * g.out_w:i1 * g.out_w],
                        dcols_t.reshape(taps, nb, L).transpose(1, 0, 2))
        else:
            matmul(wmat_t, _dy_block_t(dy3, n0, nb, i0, i1, g), dcols_t)
        _im2col.col2im_t(dcols_t, dx, n0, *_window(g), i0, i1, g.out_w)


def conv2d_backward_weights(dy, x, w_shape, stride=1, padding=0, dilation=1, anchor=None,
                            method="im2col", groups=1):
    """Conv_grad: dC = phi(x)^T dY (returned as dw of shape w_shape), db = sum of dy over n, i, j.

    dy: (N, K, Ho, Wo); x: the forward input (N, C, H, W); w_shape: (K, C/groups, kh, kw).
    Sums over the batch, not means (the loss's gradient carries the 1/N).
    Returns (dw, db) in dy's dtype.
    """
    if check_int(groups, "groups") > 1:
        return _grouped_backward_weights(dy, x, w_shape, groups, stride=stride, padding=padding,
                                         dilation=dilation, anchor=anchor, method=method)
    dy = as_float(dy, "dy")
    x = _check_input(as_float(x, "x", dtype=dy.dtype))
    _check_method(method)
    K = dy.shape[1] if dy.ndim == 4 else -1
    shape = _check_w_shape(w_shape, x.shape, K)
    g = conv_geometry(x.shape[2:], shape[2:], stride, padding, dilation, anchor)
    N, P = x.shape[0], g.out_h * g.out_w
    dy = _check_dy(dy, (N, K, g.out_h, g.out_w))
    if method == "im2col" and _packed_wins(dy.dtype, g, "backward-weights"):
        # dC^T (K, C*kh*kw) = dY phi and db, one partial sum per thread, added in thread order
        partial = np.empty((thread_count(), K, shape[1] * g.kh * g.kw), dtype=dy.dtype)
        bias_partial = np.empty((thread_count(), K))
        _packed.backward_weights(dy, x, partial, bias_partial, _packed_window(g))
        return (_sum_in_order(partial).reshape(shape),
                _sum_in_order(bias_partial).astype(dy.dtype))
    db = dy.sum(axis=(0, 2, 3))
    if method == "direct":
        return _direct_backward_weights(dy, x, shape, g), db
    dC = np.empty((shape[1] * g.kh * g.kw, K), dtype=dy.dtype)
    flops = 2.0 * N * P * dC.size
    with gemm_threads(flops):
        _backward_weights_im2col(dy.reshape(N, K, P), x, dC, g,
                                 per_sample=_per_sample(flops, P, weights=True))
    return np.ascontiguousarray(dC.T).reshape(shape), db


def _backward_weights_im2col(dy3, x, dC, g, per_sample=False):
    """dC (C*kh*kw, K) = phi(x)^T dY, summed over the blocks; dy3 is (N, K, Ho*Wo).

    The product is taken in this orientation, phi^T (taps, pixels) times dY
    (pixels, K), not as dC^T = dY^T phi: OpenBLAS runs it faster so
    (docs/performance.md).
    per_sample: one product per sample, read straight from dy, summed (see
    _per_sample for when).
    """
    N, K, P = dy3.shape
    if _is_pointwise(g):
        matmul_each_sum(x.reshape(N, -1, P), dy3.transpose(0, 2, 1), dC)
        return
    first = True
    for n0, nb, i0, i1, cols_t in _column_blocks(x, g):
        if per_sample:
            # phi^T dY of each sample (no copy of dy), summed
            L = (i1 - i0) * g.out_w
            matmul_each_sum(cols_t.reshape(-1, nb, L).transpose(1, 0, 2),
                            dy3[n0:n0 + nb, :, i0 * g.out_w:i1 * g.out_w].transpose(0, 2, 1),
                            dC, accumulate=not first)
        else:
            # phi^T dY over the block's pixels, in one product
            matmul(cols_t, _dy_block_t(dy3, n0, nb, i0, i1, g).T, dC, accumulate=not first)
        first = False


# ------------------------------------------------------- grouped convolution

def _check_group_split(groups, channels, out_channels, w_shape, where):
    """G must divide C and K, and the weight (if given) have C/G input channels per kernel."""
    if channels % groups or out_channels % groups:
        raise ValueError(f"groups: {groups} groups must divide both the {channels} input channels "
                         f"and the {out_channels} output channels ({where})")
    if w_shape is not None and w_shape[1] != channels // groups:
        raise ValueError(f"w: expected shape ({out_channels}, {channels // groups}, kh, kw) "
                         f"(C/groups = {channels}/{groups} input channels per kernel), got {w_shape}")


def _group_slices(groups, size):
    """The G consecutive channel slices of `size` channels."""
    return [slice(g * (size // groups), (g + 1) * (size // groups)) for g in range(groups)]


def _grouped_direct(groups, w_shape, method):
    """Does a grouped pass run the direct loops (one call, every group) rather than a product
    per group? Always for method="direct"; for method="im2col" when each group's product
    is thinner than DIRECT_GROUP_MAX_CHANNELS input channels per kernel (depthwise: 1),
    where a product per group loses to the loops (docs/performance.md)."""
    _check_method(method)
    return method == "direct" or (method == "im2col" and w_shape[1] < DIRECT_GROUP_MAX_CHANNELS)


def _grouped_forward(x, w, b, groups, method, **window):
    """y = the per-group convolutions of the channel slices, side by side along K."""
    x = _check_input(x)
    w = as_float(w, "w", dtype=x.dtype)
    check_ndim(w, 4, "w", "(K, C/groups, kh, kw)")
    _check_group_split(groups, x.shape[1], w.shape[0], w.shape, f"x {x.shape}, w {w.shape}")
    b = None if b is None else _check_bias(b, w.shape[0], x.dtype)
    if _grouped_direct(groups, w.shape, method):
        return _direct_forward(x, w, b, conv_geometry(x.shape[2:], w.shape[2:], **window), groups)
    window["method"] = method
    return np.concatenate([
        conv2d_forward(x[:, cs], w[ks], None if b is None else b[ks], **window)
        for cs, ks in zip(_group_slices(groups, x.shape[1]), _group_slices(groups, w.shape[0]))],
        axis=1)


def _grouped_backward_data(dy, w, x_shape, groups, method, **window):
    """dx = the per-group Conv_BF of the dy slices, side by side along C."""
    shape = check_x_shape(x_shape)
    dy = as_float(dy, "dy")
    w = as_float(w, "w", dtype=dy.dtype)
    check_ndim(w, 4, "w", "(K, C/groups, kh, kw)")
    _check_group_split(groups, shape[1], w.shape[0], w.shape, f"x_shape {shape}, w {w.shape}")
    check_ndim(dy, 4, "dy", "(N, K, Ho, Wo)")
    if dy.shape[:2] != (shape[0], w.shape[0]):
        raise ValueError(f"dy: expected shape ({shape[0]}, {w.shape[0]}, Ho, Wo) for x_shape "
                         f"{shape} and w {w.shape}, got {dy.shape}")
    if _grouped_direct(groups, w.shape, method):
        g = conv_geometry(shape[2:], w.shape[2:], **window)
        dy = _check_dy(dy, (shape[0], w.shape[0], g.out_h, g.out_w))
        return _direct_backward_data(dy, w, shape, g, groups)
    window["method"] = method
    part = (shape[0], shape[1] // groups) + shape[2:]
    return np.concatenate([conv2d_backward_data(dy[:, ks], w[ks], part, **window)
                           for ks in _group_slices(groups, w.shape[0])], axis=1)


def _grouped_backward_weights(dy, x, w_shape, groups, method, **window):
    """(dw, db): the per-group weight gradients stacked along K (each group's kernels)."""
    dy = as_float(dy, "dy")
    x = _check_input(as_float(x, "x", dtype=dy.dtype))
    check_ndim(dy, 4, "dy", "(N, K, Ho, Wo)")
    _check_group_split(groups, x.shape[1], dy.shape[1], None, f"x {x.shape}, dy {dy.shape}")
    shape = _check_w_shape(w_shape, (x.shape[0], x.shape[1] // groups), dy.shape[1])
    if _grouped_direct(groups, shape, method):
        g = conv_geometry(x.shape[2:], shape[2:], **window)
        dy = _check_dy(dy, (x.shape[0], shape[0], g.out_h, g.out_w))
        return _direct_backward_weights(dy, x, shape, g, groups), dy.sum(axis=(0, 2, 3))
    window["method"] = method
    part = (shape[0] // groups,) + shape[1:]
    grads = [conv2d_backward_weights(dy[:, ks], x[:, cs], part, **window)
             for cs, ks in zip(_group_slices(groups, x.shape[1]), _group_slices(groups, shape[0]))]
    return (np.concatenate([dw for dw, _ in grads], axis=0),
            np.concatenate([db for _, db in grads]))
