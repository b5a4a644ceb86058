"""The convolution layer shapes the bench times: named ones, and N,C,H,W,K,kh,kw[,s,p,d,g]
strings from the command line."""
from dataclasses import dataclass

from .._checks import conv_geometry

__all__ = ["ConvShape", "SHAPES", "QUICK_SHAPES", "parse_shape"]


@dataclass(frozen=True)
class ConvShape:
    """One convolution layer: input (n, c, h, w), k filters of kh x kw, symmetric padding;
    groups > 1 makes it grouped (each filter sees c // groups channels; depthwise: groups = c)."""
    name: str
    n: int
    c: int
    h: int
    w: int
    k: int
    kh: int
    kw: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1

    def geometry(self):
        return conv_geometry((self.h, self.w), (self.kh, self.kw), self.stride,
                             self.padding, self.dilation)

    def flops(self):
        """Multiply-adds x 2 of one pass: 2 * N*Ho*Wo * K * (C/groups)*kh*kw (the same for all three)."""
        g = self.geometry()
        return 2 * self.n * g.out_h * g.out_w * self.k * (self.c // self.groups) * self.kh * self.kw

    def describe(self):
        extra = "".join(f", {label} {value}" for label, value, default in (
            ("pad", self.padding, 0), ("stride", self.stride, 1), ("dil", self.dilation, 1),
            ("groups", self.groups, 1))
            if value != default)
        return (f"N={self.n}, {self.c}->{self.k}, {self.h}x{self.w}, "
                f"{self.kh}x{self.kw}{extra}")


SHAPES = {s.name: s for s in (
    ConvShape("lenet5-conv1", 64, 1, 28, 28, 6, 5, 5, padding=2),
    ConvShape("lenet5-conv2", 64, 6, 14, 14, 16, 5, 5),
    ConvShape("vgg-28", 64, 32, 28, 28, 32, 3, 3, padding=1),
    ConvShape("vgg-14", 64, 64, 14, 14, 64, 3, 3, padding=1),
    ConvShape("vgg-7", 64, 128, 7, 7, 128, 3, 3, padding=1),
    ConvShape("c64-16", 64, 64, 16, 16, 64, 3, 3, padding=1),   # the engine's target shape
    ConvShape("wide", 32, 128, 16, 16, 128, 3, 3, padding=1),
    ConvShape("strided", 64, 32, 28, 28, 64, 3, 3, stride=2, padding=1),
    ConvShape("dilated", 64, 32, 28, 28, 32, 3, 3, padding=2, dilation=2),
    ConvShape("depthwise", 64, 64, 28, 28, 64, 3, 3, padding=1, groups=64),  # MobileNet-style
)}
QUICK_SHAPES = ("lenet5-conv1", "lenet5-conv2", "vgg-14")


def parse_shape(text):
    """'N,C,H,W,K,kh,kw[,stride,pad,dil,groups]' -> ConvShape (ValueError with the reason)."""
    fields = [f.strip() for f in text.split(",")]
    if not 7 <= len(fields) <= 11:
        raise ValueError(f"--shape: expected N,C,H,W,K,kh,kw[,stride,pad,dil,groups] "
                         f"(7 to 11 integers), got {text!r}")
    try:
        values = [int(f) for f in fields]
    except ValueError:
        raise ValueError(f"--shape: every field must be an integer, got {text!r}") from None
    shape = ConvShape(",".join(fields), *values)
    if min(values[:7]) < 1 or min(shape.stride, shape.dilation, shape.groups) < 1 \
            or shape.padding < 0:
        raise ValueError(f"--shape: sizes, stride, dilation and groups must be >= 1 and the "
                         f"padding >= 0, got {text!r}")
    if shape.c % shape.groups or shape.k % shape.groups:
        raise ValueError(f"--shape: groups must divide C and K, got {text!r}")
    try:
        shape.geometry()  # the kernel must fit the padded input
    except ValueError as exc:
        raise ValueError(f"--shape {text!r}: {exc}") from None
    return shape
