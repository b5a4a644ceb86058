"""Pooling layers over (N, C, H, W) images (im2colnet.functional pool ops)."""
import numpy as np

from .. import functional as F
from .._checks import positive_pair
from ..functional.pool import avg_geometry, max_geometry
from .base import Layer, to_json

__all__ = ["MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "AdaptiveAvgPool2d"]

# The arguments are checked at construction on this (large) dummy image, not at the first forward.
_ANY_IMAGE = (1 << 20, 1 << 20)


def _image_shape(layer, input_shape):
    if len(input_shape) != 3:
        raise ValueError(f"input_shape: {type(layer).__name__} expects images (C, H, W), "
                         f"got input_shape {tuple(input_shape)}")
    return tuple(input_shape[1:])


class _Pool2d(Layer):
    """Base of the pooling layers: the output shape comes from ``_window(in_hw)``, the
    subclass's checked geometry for an input size. ``stride`` None means stride = kernel_size."""
    keeps_activation = True

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self._x_shape = None

    def output_shape(self, input_shape):
        g = self._window(_image_shape(self, input_shape))
        return (input_shape[0], g.out_h, g.out_w)

    def get_config(self):
        return {"kernel_size": to_json(self.kernel_size), "stride": to_json(self.stride),
                "padding": to_json(self.padding)}


class MaxPool2d(_Pool2d):
    """y = max over each window; the winners' flat positions (the path) route the gradient back.

    (N, C, H, W) -> (N, C, Ho, Wo). Padding is -inf and must be smaller than the
    kernel; ``dilation`` spaces the taps; ``ceil_mode`` rounds Ho up (PyTorch's
    rule, see im2colnet.functional.pool).
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__(kernel_size, stride, padding)
        self.dilation, self.ceil_mode = dilation, bool(ceil_mode)
        self._window()  # checks the arguments now (ceil_mode's window rules need the input size)
        self._path = None

    def _window(self, in_hw=_ANY_IMAGE):
        return max_geometry(in_hw, self.kernel_size, self.stride, self.padding,
                            self.dilation, self.ceil_mode and in_hw != _ANY_IMAGE)

    def forward(self, x, training=False):
        y, path = F.maxpool2d_forward(x, self.kernel_size, self.stride, self.padding,
                                      self.dilation, self.ceil_mode)
        if training:
            self._path, self._x_shape = path, x.shape
        return y

    def backward(self, dy, need_dx=True):
        return F.maxpool2d_backward(dy, self._saved(self._path), self._x_shape)

    def get_config(self):
        return {**super().get_config(), "dilation": to_json(self.dilation),
                "ceil_mode": self.ceil_mode}


class AvgPool2d(_Pool2d):
    """y = mean over each window; padding counts as 0.

    (N, C, H, W) -> (N, C, Ho, Wo). The divisor is kh*kw (``count_include_pad=True``,
    padding included) or the window's image cells (``count_include_pad=False``);
    ``ceil_mode`` rounds Ho up (PyTorch's rule, see im2colnet.functional.pool).
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True):
        super().__init__(kernel_size, stride, padding)
        self.ceil_mode, self.count_include_pad = bool(ceil_mode), bool(count_include_pad)
        self._window()

    def _window(self, in_hw=_ANY_IMAGE):
        checked = in_hw != _ANY_IMAGE
        return avg_geometry(in_hw, self.kernel_size, self.stride, self.padding,
                            self.ceil_mode and checked, self.count_include_pad or not checked)

    def _options(self):
        return dict(ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad)

    def forward(self, x, training=False):
        self._x_shape = x.shape if training else None
        return F.avgpool2d_forward(x, self.kernel_size, self.stride, self.padding, **self._options())

    def backward(self, dy, need_dx=True):
        return F.avgpool2d_backward(dy, self._saved(self._x_shape), self.kernel_size,
                                    self.stride, self.padding, **self._options())

    def get_config(self):
        return {**super().get_config(), **self._options()}


class AdaptiveAvgPool2d(_Pool2d):
    """PyTorch's AdaptiveAvgPool2d(output_size) where output_size divides the input size:
    then its windows are AvgPool2d's with kernel_size = stride = (H // oh, W // ow).

    (N, C, H, W) -> (N, C, oh, ow). Sizes that do not divide (windows of varying size)
    are not implemented: a ValueError naming output_size and the input size.
    """

    def __init__(self, output_size):
        super().__init__(kernel_size=None)
        self.output_size = to_json(output_size)
        self._out_hw = positive_pair(output_size, "output_size")

    def _window(self, in_hw):
        (h, w), (oh, ow) = in_hw, self._out_hw
        if h % oh or w % ow:
            raise ValueError(f"output_size: {self.output_size!r} must divide the input size "
                             f"{(h, w)} (adaptive windows of varying size are not implemented)")
        return avg_geometry(in_hw, (h // oh, w // ow))

    def forward(self, x, training=False):
        g = self._window(np.shape(x)[2:])
        self._x_shape = np.shape(x) if training else None
        return F.avgpool2d_forward(x, (g.kh, g.kw))

    def backward(self, dy, need_dx=True):
        x_shape = self._saved(self._x_shape)
        g = self._window(x_shape[2:])
        return F.avgpool2d_backward(dy, x_shape, (g.kh, g.kw))

    def get_config(self):
        return {"output_size": self.output_size}


class GlobalAvgPool2d(AdaptiveAvgPool2d):
    """y[n, c, 0, 0] = mean of x[n, c] over H x W; dx = dy / (H*W) everywhere
    (F.global_avgpool2d_forward / _backward).

    (N, C, H, W) -> (N, C, 1, 1), as AdaptiveAvgPool2d(1) (follow it with Flatten
    for a classifier head).
    """

    def __init__(self):
        super().__init__(1)

    def forward(self, x, training=False):
        self._x_shape = np.shape(x) if training else None
        return F.global_avgpool2d_forward(x)

    def backward(self, dy, need_dx=True):
        return F.global_avgpool2d_backward(dy, self._saved(self._x_shape))

    def get_config(self):
        return {}
