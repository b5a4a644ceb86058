"""The operations of a CNN: forward activations, backward sensitivities, weight gradients.

Every function validates its arguments, then calls a Cython kernel or one BLAS
matrix product. The README ("The mathematics, and where each piece lives") maps them to the formulas.
"""
from .conv import im2col, col2im, conv2d_forward, conv2d_backward_data, conv2d_backward_weights
from .conv_transpose import (conv_transpose2d_forward, conv_transpose2d_backward_data,
                             conv_transpose2d_backward_weights)
from .pool import (maxpool2d_forward, maxpool2d_backward,
                   avgpool2d_forward, avgpool2d_backward,
                   global_avgpool2d_forward, global_avgpool2d_backward)
from .activation import relu_forward, relu_backward, leaky_relu_forward, leaky_relu_backward
from .linear import linear_forward, linear_backward_data, linear_backward_weights
from .batchnorm import batchnorm_forward, batchnorm_backward
from .softmax import (softmax_forward, softmax_backward, log_softmax_forward, log_softmax_backward,
                      softmax_cross_entropy)

__all__ = [
    "im2col", "col2im", "conv2d_forward", "conv2d_backward_data", "conv2d_backward_weights",
    "conv_transpose2d_forward", "conv_transpose2d_backward_data",
    "conv_transpose2d_backward_weights",
    "maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward",
    "global_avgpool2d_forward", "global_avgpool2d_backward",
    "relu_forward", "relu_backward", "leaky_relu_forward", "leaky_relu_backward",
    "linear_forward", "linear_backward_data", "linear_backward_weights",
    "batchnorm_forward", "batchnorm_backward",
    "softmax_forward", "softmax_backward", "log_softmax_forward", "log_softmax_backward", "softmax_cross_entropy",
]
