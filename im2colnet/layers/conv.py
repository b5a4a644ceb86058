"""The 2-D convolution layer over im2colnet.functional's conv2d_* operations."""
import numpy as np

from .. import functional as F
from .._checks import check_int, conv_geometry
from .base import ParamLayer, to_json

__all__ = ["Conv2d"]


class _Convolution(ParamLayer):
    """What Conv2d and ConvTranspose2d share: channels and groups, and the three passes
    taken from the functional operations named by the subclass (_forward_op: the layer's
    forward; _weights_op: (dw, db); _data_op: dx)."""

    def _set_channels(self, in_channels, out_channels, groups):
        self.in_channels = check_int(in_channels, "in_channels")
        self.out_channels = check_int(out_channels, "out_channels")
        self.groups = check_int(groups, "groups")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"groups: {groups} groups must divide both in_channels={in_channels} "
                             f"and out_channels={out_channels}")

    def forward(self, x, training=False):
        self._prepare(x)
        self._x = x if training else None
        return type(self)._forward_op(x, self.params["weight"], self.params.get("bias"),
                                      **self._window())

    def backward(self, dy, need_dx=True):
        x, w = self._saved(self._x), self.params["weight"]
        dw, db = type(self)._weights_op(dy, x, w.shape, **self._window())
        self.grads["weight"] = dw
        if self.bias:
            self.grads["bias"] = db
        if not need_dx:      # the first layer's input gradient is not needed in training
            return None
        return type(self)._data_op(dy, w, np.shape(x), **self._window())


class Conv2d(_Convolution):
    """Cross-correlation y[n,k,i,j] = sum_{c,p,q} w[k,c,p,q] x[n,c,i*sh-pt+p*dh, j*sw-pl+q*dw] + b[k].

    weight (out_channels, in_channels // groups, kh, kw), bias (out_channels,).
    Input (N, in_channels, H, W) -> output (N, out_channels, Ho, Wo).
    ``groups=G``: grouped convolution, c running over the group of k
    (depthwise for G = in_channels); G must divide both channel counts.
    ``padding``: int, (ph, pw), ((top, bottom), (left, right)), "valid" or "same";
    ``anchor=(m, n)`` replaces padding (the kernel element (m, n) sits on the
    output pixel). ``kernel_size``, ``stride``, ``dilation``: int or pair.
    ``rng``: np.random.Generator or seed for the initial weight (He-normal), see Layer.
    """

    # Conv_F: Y = phi(x) C; Conv_grad: dC = phi(x)^T dY, db = sum of dY; Conv_BF: col2im(dY C^T)
    _forward_op = staticmethod(F.conv2d_forward)
    _weights_op = staticmethod(F.conv2d_backward_weights)
    _data_op = staticmethod(F.conv2d_backward_data)

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, anchor=None, bias=True, groups=1, rng=None):
        super().__init__()
        self._set_channels(in_channels, out_channels, groups)
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.anchor, self.bias = dilation, anchor, bool(bias)
        # Check the window arguments now (on a large dummy image), not at the first forward.
        g = conv_geometry((1 << 20, 1 << 20), kernel_size, stride, padding, dilation, anchor)
        self._kh, self._kw = g.kh, g.kw
        self._x = None
        self._create_params(rng)

    def output_shape(self, input_shape):
        if len(input_shape) != 3 or input_shape[0] != self.in_channels:
            raise ValueError(f"input_shape: Conv2d expects images ({self.in_channels}, H, W), "
                             f"got input_shape {tuple(input_shape)}")
        g = conv_geometry(tuple(input_shape[1:]), self.kernel_size, self.stride, self.padding,
                          self.dilation, self.anchor)
        return (self.out_channels, g.out_h, g.out_w)

    def _init_params(self, input_shape, rng):
        area = self._kh * self._kw
        self._init_weight((self.out_channels, self.in_channels // self.groups, self._kh, self._kw),
                          self.in_channels // self.groups * area, self.out_channels * area, rng,
                          self.out_channels if self.bias else None)

    def _window(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    anchor=self.anchor, groups=self.groups)


    def get_config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": to_json(self.kernel_size), "stride": to_json(self.stride),
                "padding": to_json(self.padding), "dilation": to_json(self.dilation),
                "anchor": to_json(self.anchor), "bias": self.bias, "groups": self.groups}
