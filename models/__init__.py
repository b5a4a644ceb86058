"""The model zoo: builders for LeNet-5, a small VGG and a small ResNet, and the shipped weights.

    from im2colnet.models import lenet5, vgg_small
    net = lenet5(pretrained=True)                 # MNIST digits
    net = lenet5(pretrained="fashion-mnist")      # Fashion-MNIST clothes
    net = vgg_small(pretrained=True)              # Fashion-MNIST clothes
    net = resnet_small()                          # fresh weights (none shipped yet)

Every model takes samples of shape (1, 28, 28) (pixels scaled to [0, 1], no
other normalisation) and returns 10 class scores (logits; apply a softmax for
probabilities). The weights are HDF5 model files in this package's folder
(see docs/model-format.md), read by :func:`im2colnet.load_model`; each file's
``metadata`` records the dataset, the test accuracy measured after training,
and how it was trained (the scripts in examples/ made them).
"""
import os

from ..layers import AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU
from ..model import Residual
from ..sequential import Sequential, load_model

__all__ = ["lenet5", "vgg_small", "resnet_small", "PRETRAINED", "weights_path"]

INPUT_SHAPE = (1, 28, 28)

# (builder name, weights name) -> file in this folder. True means the default weights.
PRETRAINED = {
    ("lenet5", "mnist"): "lenet5_mnist.h5",
    ("lenet5", "fashion-mnist"): "lenet5_fashion_mnist.h5",
    ("vgg_small", "fashion-mnist"): "vgg_small_fashion_mnist.h5",
    ("resnet_small", "fashion-mnist"): "resnet_small_fashion_mnist.h5",
}
_DEFAULT = {"lenet5": "mnist", "vgg_small": "fashion-mnist", "resnet_small": "fashion-mnist"}

_HERE = os.path.dirname(os.path.abspath(__file__))


def weights_path(model, weights=True):
    """Path of the shipped weight file of ``model`` ("lenet5", "vgg_small" or "resnet_small").

    weights: True for the model's default dataset, or a dataset name
    ("mnist", "fashion-mnist"). A name without shipped weights is a ValueError;
    a file missing from the installation is a FileNotFoundError.
    """
    if model not in _DEFAULT:
        raise ValueError(f"model: unknown model {model!r}; choose from {sorted(_DEFAULT)}")
    name = _DEFAULT[model] if weights is True else weights
    if not isinstance(name, str) or (model, name.lower()) not in PRETRAINED:
        choices = [True] + sorted(d for m, d in PRETRAINED if m == model)
        raise ValueError(f"pretrained: {model} has no weights {weights!r}; choose from "
                         f"False, {', '.join(repr(c) for c in choices)}")
    path = os.path.join(_HERE, PRETRAINED[model, name.lower()])
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"pretrained {model} weights ({name}): the file {path} is missing from this "
            f"installation; reinstall im2colnet, or train it with examples/train_{model}.py "
            f"--out {path}")
    return path


def _load(model, weights):
    return load_model(weights_path(model, weights))


def lenet5(pretrained=False):
    """LeNet-5 for 1x28x28 images, with ReLU and max pooling (61,706 parameters).

    conv 1->6 5x5 pad 2 (6x28x28), ReLU, max-pool 2 (6x14x14),
    conv 6->16 5x5 (16x10x10), ReLU, max-pool 2 (16x5x5), flatten (400),
    linear 400->120, ReLU, linear 120->84, ReLU, linear 84->10.

    pretrained: False or None (fresh weights, unbuilt until build()/fit), True or "mnist"
    (trained on MNIST), "fashion-mnist" (trained on Fashion-MNIST).
    """
    if pretrained is not None and pretrained is not False:
        return _load("lenet5", pretrained)
    return Sequential([
        Conv2d(1, 6, 5, padding=2), ReLU(), MaxPool2d(2),
        Conv2d(6, 16, 5), ReLU(), MaxPool2d(2),
        Flatten(),
        Linear(16 * 5 * 5, 120), ReLU(),
        Linear(120, 84), ReLU(),
        Linear(84, 10),
    ], input_shape=INPUT_SHAPE, name="lenet5")


def _vgg_block(in_channels, channels):
    """Two 3x3 convolutions (padding 1, no bias: batch norm supplies it), each with
    batch norm and ReLU, then a 2x2 max-pool halving the image (rounding down)."""
    layers = []
    for c_in in (in_channels, channels):
        layers += [Conv2d(c_in, channels, 3, padding=1, bias=False), BatchNorm2d(channels), ReLU()]
    return layers + [MaxPool2d(2)]


def vgg_small(pretrained=False):
    """A small VGG for 1x28x28 images: three blocks of two 3x3 conv + batch norm + ReLU
    (32, 64, 128 channels), each followed by 2x2 max pooling (28 -> 14 -> 7 -> 3), then
    dropout 0.3, linear 1152->256, ReLU, dropout 0.3, linear 256->10.

    pretrained: False or None (fresh weights) or True / "fashion-mnist" (trained on Fashion-MNIST).
    """
    if pretrained is not None and pretrained is not False:
        return _load("vgg_small", pretrained)
    return Sequential(
        _vgg_block(1, 32) + _vgg_block(32, 64) + _vgg_block(64, 128) + [
            Flatten(),
            Dropout(0.3), Linear(128 * 3 * 3, 256), ReLU(),
            Dropout(0.3), Linear(256, 10),
        ], input_shape=INPUT_SHAPE, name="vgg_small")


def _basic_block(in_channels, channels, stride):
    """He et al.'s basic block: [conv 3x3 (stride), BN, ReLU, conv 3x3, BN] + shortcut, then ReLU.
    The shortcut is the identity, or a 1x1 convolution (stride) + BN where the shape changes."""
    block = Sequential([
        Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False), BatchNorm2d(channels), ReLU(),
        Conv2d(channels, channels, 3, padding=1, bias=False), BatchNorm2d(channels)])
    shortcut = None
    if stride != 1 or in_channels != channels:
        shortcut = Sequential([Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                               BatchNorm2d(channels)])
    return [Residual(block, shortcut), ReLU()]


def resnet_small(pretrained=False):
    """A ResNet for 1x28x28 images after He et al.'s CIFAR ResNets (ResNet-20 layout, 6n+2 with n=3):
    conv 3x3 1->16 + BN + ReLU; three stages of 3 basic blocks with 16, 32, 64 channels
    (28x28, 14x14, 7x7; the first block of stages 2 and 3 has stride 2 and a 1x1 conv + BN
    projection shortcut); average pooling over the whole 7x7 map; linear 64->10.

    pretrained: False or None (fresh weights) or True / "fashion-mnist" (trained on Fashion-MNIST).
    """
    if pretrained is not None and pretrained is not False:
        return _load("resnet_small", pretrained)
    layers = [Conv2d(1, 16, 3, padding=1, bias=False), BatchNorm2d(16), ReLU()]
    in_channels = 16
    for channels, stride in ((16, 1), (32, 2), (64, 2)):
        for k in range(3):
            layers += _basic_block(in_channels, channels, stride if k == 0 else 1)
            in_channels = channels
    layers += [AvgPool2d(7), Flatten(), Linear(64, 10)]
    return Sequential(layers, input_shape=INPUT_SHAPE, name="resnet_small")
