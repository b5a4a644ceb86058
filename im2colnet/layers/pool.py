"""Max and average pooling layers over (N, C, H, W) images (im2colnet.functional pool ops)."""
from .. import functional as F
from .._checks import check_max_pool_padding, conv_geometry
from .base import Layer, to_json

__all__ = ["MaxPool2d", "AvgPool2d"]


class _Pool2d(Layer):
    """Shared arguments and geometry: ``stride`` None means stride = kernel_size (tiling windows)."""
    keeps_activation = True

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        # Check the arguments now (on a large dummy image) rather than at the first forward.
        self._geometry = conv_geometry((1 << 20, 1 << 20), kernel_size,
                                       kernel_size if stride is None else stride, padding)
        self._x_shape = None

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"input_shape: {type(self).__name__} expects images (C, H, W), "
                             f"got input_shape {tuple(input_shape)}")
        g = conv_geometry(tuple(input_shape[1:]), self.kernel_size,
                          self.kernel_size if self.stride is None else self.stride, self.padding)
        return (input_shape[0], g.out_h, g.out_w)

    def get_config(self):
        return {"kernel_size": to_json(self.kernel_size), "stride": to_json(self.stride),
                "padding": to_json(self.padding)}


class MaxPool2d(_Pool2d):
    """y = max over each window; the winners' flat positions (the path) route the gradient back.

    (N, C, H, W) -> (N, C, Ho, Wo); padding is -inf and must be smaller than the kernel.
    """

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__(kernel_size, stride, padding)
        check_max_pool_padding(self._geometry)
        self._path = None

    def forward(self, x, training=False):
        y, path = F.maxpool2d_forward(x, self.kernel_size, self.stride, self.padding)
        if training:
            self._path, self._x_shape = path, x.shape
        return y

    def backward(self, dy, need_dx=True):
        return F.maxpool2d_backward(dy, self._saved(self._path), self._x_shape)


class AvgPool2d(_Pool2d):
    """y = mean over each window (padding counts as 0, included in the divisor).

    (N, C, H, W) -> (N, C, Ho, Wo).
    """

    def forward(self, x, training=False):
        self._x_shape = x.shape if training else None
        return F.avgpool2d_forward(x, self.kernel_size, self.stride, self.padding)

    def backward(self, dy, need_dx=True):
        return F.avgpool2d_backward(dy, self._saved(self._x_shape), self.kernel_size,
                                    self.stride, self.padding)
