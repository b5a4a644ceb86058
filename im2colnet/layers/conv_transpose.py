"""The transposed convolution layer over im2colnet.functional's conv_transpose2d_* operations."""
from .. import functional as F
from .._checks import positive_pair
from ..functional.conv_transpose import conv_transpose_geometry
from .base import to_json
from .conv import _Convolution

__all__ = ["ConvTranspose2d"]


class ConvTranspose2d(_Convolution):
    """Conv_BF as a forward pass (PyTorch's ConvTranspose2d):

        y[n, o, i*sh - pt + p*dh, j*sw - pl + q*dw] += x[n, c, i, j] w[c, o, p, q]   (+ b[o])

    i.e. forward y = conv2d_backward_data(x, w), backward dx = conv2d_forward(dy, w),
    and dw = conv2d_backward_weights with the roles of x and dy swapped
    (see im2colnet.functional.conv_transpose).

    weight (in_channels, out_channels // groups, kh, kw), bias (out_channels,).
    Input (N, in_channels, H, W) -> output (N, out_channels, Ho, Wo) with
    Ho = (H - 1)*sh - pt - pb + dh*(kh - 1) + output_padding + 1; output_padding must
    be smaller than the stride or the dilation (PyTorch's rule).
    ``rng``: np.random.Generator or seed for the initial weight, see Layer.
    """

    # forward: Conv_BF; weights: Conv_grad with x and dy swapped; dx: Conv_F
    _forward_op = staticmethod(F.conv_transpose2d_forward)
    _weights_op = staticmethod(F.conv_transpose2d_backward_weights)
    _data_op = staticmethod(F.conv_transpose2d_backward_data)

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, rng=None):
        super().__init__()
        self._set_channels(in_channels, out_channels, groups)
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.output_padding, self.dilation, self.bias = output_padding, dilation, bool(bias)
        # Check the window arguments now (on a large dummy image), not at the first forward.
        conv_transpose_geometry((1 << 20, 1 << 20), kernel_size, stride, padding, output_padding,
                                dilation)
        self._kh, self._kw = positive_pair(kernel_size, "kernel_size")
        self._x = None
        self._create_params(rng)

    def output_shape(self, input_shape):
        if len(input_shape) != 3 or input_shape[0] != self.in_channels:
            raise ValueError(f"input_shape: ConvTranspose2d expects images ({self.in_channels}, H, W), "
                             f"got input_shape {tuple(input_shape)}")
        out_hw, _ = conv_transpose_geometry(tuple(input_shape[1:]), self.kernel_size, self.stride,
                                            self.padding, self.output_padding, self.dilation)
        return (self.out_channels,) + out_hw

    def _init_params(self, input_shape, rng):
        # fans from the weight's shape, as PyTorch computes them: fan_in = weight.shape[1]*kh*kw
        area = self._kh * self._kw
        self._init_weight((self.in_channels, self.out_channels // self.groups, self._kh, self._kw),
                          self.out_channels // self.groups * area, self.in_channels * area, rng,
                          self.out_channels if self.bias else None)

    def _window(self):
        return dict(stride=self.stride, padding=self.padding, output_padding=self.output_padding,
                    dilation=self.dilation, groups=self.groups)

    def get_config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": to_json(self.kernel_size), "stride": to_json(self.stride),
                "padding": to_json(self.padding), "output_padding": to_json(self.output_padding),
                "groups": self.groups, "bias": self.bias, "dilation": to_json(self.dilation)}
