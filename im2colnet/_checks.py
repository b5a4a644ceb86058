"""Argument checks and normalisation shared by every operation.

Everything a Cython kernel relies on (dtypes, ndim, sizes, index ranges) is
established here, at the Python boundary, before any ``nogil`` loop runs.
Messages name the offending argument and the shapes involved.
"""
from collections import namedtuple
import inspect
import math
import numbers

import numpy as np

__all__ = [
    "as_float", "as_labels", "pair", "positive_pair", "check_ndim",
    "check_batch", "resolve_padding", "conv_output_size", "ConvGeometry",
    "conv_geometry", "check_image", "check_x_shape", "ArgumentTypeError", "check_int",
    "check_number", "check_shape", "check_config", "check_max_pool_padding",
    "BATCHNORM_MODES", "check_batchnorm_mode",
]


class ArgumentTypeError(TypeError, ValueError):
    """A scalar argument of the wrong type (a string for a rate, a float for a count):
    both a TypeError and a ValueError, as NumPy's AxisError is both an IndexError and
    a ValueError, so code catching either keeps working."""


def check_int(value, name, low=1):
    """An int >= low (bools rejected), as a Python int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name}: expected an int >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"{name}: must be >= {low}, got {value}")
    return int(value)


def check_number(value, name, low=-math.inf, high=math.inf, low_open=False, high_open=False):
    """A finite real number in the interval from low to high (open ends where asked), as a
    float; bools are rejected."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name}: expected a number, got {value!r}")
    lo_ok = (low < value) if low_open else (low <= value)
    hi_ok = (value < high) if high_open else (value <= high)
    if not (math.isfinite(value) and lo_ok and hi_ok):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name}: expected a finite number in {interval}, got {value!r}")
    return float(value)


def check_shape(input_shape, name="input_shape"):
    """A per-sample shape as a tuple of positive ints."""
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a per-sample shape such as (1, 28, 28), "
                        f"got {input_shape!r}") from None
    if not shape or min(shape) < 1:
        raise ValueError(f"{name}: expected a non-empty per-sample shape of sizes >= 1, "
                         f"got {input_shape!r}")
    return shape


def check_config(cls, config):
    """A config dict for ``cls(**config)`` (a layer, loss, optimizer or schedule): a dict
    whose keys are all keyword arguments of cls.__init__; else TypeError/ValueError."""
    if not isinstance(config, dict):
        raise TypeError(f"config: expected a dict for {cls.__name__}, got {type(config).__name__}")
    known = set(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"config: unknown config keys {unknown} for {cls.__name__} "
                         f"(it knows {sorted(known)})")
    return dict(config)

# Dtypes that convert to float32 without losing anything the user meant.
_LOSSLESS_KINDS = "biu"  # bool, signed int, unsigned int


def as_float(x, name, dtype=None):
    """Return ``x`` as a float32/float64 ndarray (any memory order).

    float32 and float64 are kept (or cast to ``dtype`` when given: weights
    follow their input's dtype); bool, integer and float16 arrays become
    float32; complex, object, string and other dtypes are a TypeError.
    """
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as exc:  # ragged lists and the like
            raise TypeError(f"{name}: cannot be read as an array ({exc})") from None
    kind = arr.dtype.kind
    if arr.dtype in (np.float32, np.float64):
        pass
    elif kind in _LOSSLESS_KINDS or arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    else:
        raise TypeError(
            f"{name}: dtype {arr.dtype} is not supported; use float32 or float64 "
            f"(bool and integer arrays are converted to float32)")
    if dtype is not None and arr.dtype != dtype:
        arr = arr.astype(dtype)
    return arr


def as_labels(y, name, num_classes, batch):
    """Integer class labels in [0, num_classes) as an int64 vector of length batch.

    Float arrays are accepted only when every value is a whole number:
    fractional labels are never truncated silently.
    """
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name}: integer labels must be 1-D (N,), got shape {arr.shape}")
    if arr.shape[0] != batch:
        raise ValueError(
            f"{name}: {arr.shape[0]} labels for a batch of {batch} (shapes {arr.shape} vs N={batch})")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name}: labels must be whole numbers, got fractional or non-finite values")
    elif arr.dtype.kind not in "iub":
        raise TypeError(f"{name}: labels must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(
            f"{name}: labels must lie in [0, {num_classes}), got range "
            f"[{arr.min()}, {arr.max()}]")
    return arr


def _as_int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int or a pair of ints, got {value!r}")
    return int(value)


def pair(value, name):
    """``v`` -> ``(v, v)``; a pair of ints -> a tuple of two ints."""
    if isinstance(value, (tuple, list, np.ndarray)):
        if len(value) != 2:
            raise ValueError(f"{name}: expected an int or a pair of ints, got {value!r}")
        return (_as_int(value[0], name), _as_int(value[1], name))
    v = _as_int(value, name)
    return (v, v)


def positive_pair(value, name):
    """Like :func:`pair` but every entry must be >= 1 (kernel sizes, strides, dilations)."""
    result = pair(value, name)
    if min(result) < 1:
        raise ValueError(f"{name}: must be >= 1, got {value!r}")
    return result


def check_ndim(x, ndim, name, layout):
    if x.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array {layout}, got shape {x.shape}")


def check_batch(x, name):
    if x.shape[0] == 0:
        raise ValueError(f"{name}: the batch is empty (shape {x.shape})")


def _same_padding(size, k, s, d):
    """Total 'same' padding of one axis, split with the extra at the end.

    Stride 1 keeps the size; stride s gives ceil(size / s) outputs (the
    TensorFlow/Keras rule, which is PyTorch's for stride 1).
    """
    span = d * (k - 1) + 1
    out = -(-size // s)
    total = max((out - 1) * s + span - size, 0)
    return (total // 2, total - total // 2)


def resolve_padding(padding, kernel_size, stride, dilation, in_hw, anchor=None):
    """Normalise every padding form to ``((top, bottom), (left, right))``.

    padding: int | (ph, pw) | ((top, bottom), (left, right)) | "valid" | "same";
    negative values crop.  anchor=(m, n) replaces padding: kernel element
    (m, n) sits on the output pixel, i.e. padding ((m*dh, (kh-1-m)*dh),
    (n*dw, (kw-1-n)*dw)) -- the output keeps the input's size at stride 1.
    m, n may lie outside the kernel (an "exclave" convolution).
    """
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, stride, dilation
    if anchor is not None:
        if not (isinstance(padding, numbers.Integral) and not isinstance(padding, bool)
                and padding == 0):
            raise ValueError(f"anchor: replaces padding, so padding must be left at 0 "
                             f"(got padding={padding!r}, anchor={anchor!r})")
        m, n = pair(anchor, "anchor")
        return ((m * dh, (kh - 1 - m) * dh), (n * dw, (kw - 1 - n) * dw))
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0), (0, 0))
        if padding == "same":
            return (_same_padding(in_hw[0], kh, sh, dh), _same_padding(in_hw[1], kw, sw, dw))
        raise ValueError(f"padding: unknown mode {padding!r}; use 'valid', 'same', an int or pairs")
    if isinstance(padding, (tuple, list, np.ndarray)) and len(padding) == 2 and all(
            isinstance(p, (tuple, list, np.ndarray)) for p in padding):
        (pt, pb), (pl, pr) = pair(padding[0], "padding"), pair(padding[1], "padding")
        return ((pt, pb), (pl, pr))
    ph, pw = pair(padding, "padding")
    return ((ph, ph), (pw, pw))


def conv_output_size(size, k, s, p0, p1, d, axis="H", ceil_mode=False):
    """Ho = (H + pt + pb - d*(k-1) - 1) // s + 1 (Chainer's get_conv_outsize, per axis).

    ceil_mode (pooling): the division rounds up, so a last, partial window may
    reach past the bottom/right padding, but (PyTorch's rule) only while it
    starts inside the input or the top/left padding: (Ho-1)*s < H + pt.
    """
    span = d * (k - 1) + 1
    if ceil_mode:
        if size + p0 + p1 < span:
            raise ValueError(
                f"kernel_size: the (dilated) kernel {span} is larger than the padded input "
                f"along {axis} (size {size} + padding ({p0}, {p1})); ceil_mode does not pad it")
        out = -(-(size + p0 + p1 - span) // s) + 1
        if (out - 1) * s >= size + p0:
            out -= 1
        if out < 1:
            raise ValueError(f"padding: no window starts inside the input along {axis} "
                             f"(size {size}, padding ({p0}, {p1}))")
        return out
    out = (size + p0 + p1 - span) // s + 1
    if out < 1 or size + p0 + p1 < 1:
        raise ValueError(
            f"kernel_size: the (dilated) kernel {span} does not fit the padded "
            f"input along {axis}: size {size} + padding ({p0}, {p1}) gives output size {out}")
    return out


ConvGeometry = namedtuple(
    "ConvGeometry", "kh kw sh sw dh dw pt pb pl pr out_h out_w")
ConvGeometry.__doc__ = """Everything a sliding-window kernel needs, per axis, in plain ints."""


def conv_geometry(in_hw, kernel_size, stride=1, padding=0, dilation=1, anchor=None,
                  ceil_mode=False):
    """Check and normalise the window arguments for an input of spatial size in_hw.

    ceil_mode=True (pooling only) rounds the output size up, see conv_output_size.
    """
    kh, kw = positive_pair(kernel_size, "kernel_size")
    sh, sw = positive_pair(stride, "stride")
    dh, dw = positive_pair(dilation, "dilation")
    (pt, pb), (pl, pr) = resolve_padding(padding, (kh, kw), (sh, sw), (dh, dw), in_hw, anchor)
    out_h = conv_output_size(in_hw[0], kh, sh, pt, pb, dh, "H", ceil_mode)
    out_w = conv_output_size(in_hw[1], kw, sw, pl, pr, dw, "W", ceil_mode)
    return ConvGeometry(kh, kw, sh, sw, dh, dw, pt, pb, pl, pr, out_h, out_w)


def check_image(x, name):
    """x as a C-contiguous float32/float64 (N, C, H, W) array with N, H, W >= 1."""
    x = as_float(x, name)
    check_ndim(x, 4, name, "(N, C, H, W)")
    check_batch(x, name)
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"{name}: the image is empty (shape {x.shape})")
    return np.ascontiguousarray(x)


def check_x_shape(x_shape, name="x_shape"):
    """x_shape as a tuple of four ints (N, C, H, W), N, H, W >= 1."""
    try:
        shape = tuple(int(s) for s in x_shape)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a shape (N, C, H, W), got {x_shape!r}") from None
    if len(shape) != 4 or min(shape) < 0 or 0 in (shape[0], shape[2], shape[3]):
        raise ValueError(f"{name}: expected a non-empty shape (N, C, H, W), got {x_shape!r}")
    return shape


def check_max_pool_padding(g):
    """Max pooling needs each padding of ConvGeometry g smaller than the kernel: a window of
    padding only has no winner."""
    for pad, k, axis in ((g.pt, g.kh, "top"), (g.pb, g.kh, "bottom"),
                         (g.pl, g.kw, "left"), (g.pr, g.kw, "right")):
        if pad >= k:
            raise ValueError(
                f"padding: max pooling needs each padding smaller than the kernel "
                f"(a window of padding only has no winner); {axis} padding {pad} with "
                f"kernel_size ({g.kh}, {g.kw})")


BATCHNORM_MODES = ("spatial", "per_activation")


def check_batchnorm_mode(mode):
    if mode not in BATCHNORM_MODES:
        raise ValueError(f"mode: expected 'spatial' or 'per_activation', got {mode!r}")
    return mode
