"""The Softmax and LogSoftmax layers (im2colnet.functional softmax ops)."""
import numpy as np

from .. import functional as F
from .._checks import as_float
from .base import Layer

__all__ = ["Softmax", "LogSoftmax"]


class Softmax(Layer):
    """p = softmax over all non-batch axes (F.softmax_forward); (N, K) or (N, C, H, W).

    backward: dx = p * (dy - sum_k dy_k p_k) per sample (the softmax Jacobian
    diag(p) - p p^T applied to dy). For training a classifier, use
    CrossEntropyLoss on the scores instead: it fuses the softmax.
    """

    def __init__(self):
        super().__init__()
        self._p = None

    def forward(self, x, training=False):
        p = F.softmax_forward(x)
        self._p = p if training else None
        return p

    def backward(self, dy, need_dx=True):
        p = self._saved(self._p)
        dy = as_float(dy, "dy", dtype=p.dtype)
        p2, dy2 = p.reshape(p.shape[0], -1), dy.reshape(p.shape[0], -1)
        dx = p2 * (dy2 - np.sum(dy2 * p2, axis=1, keepdims=True))
        return dx.reshape(p.shape)


class LogSoftmax(Layer):
    """log p = log softmax over all non-batch axes (F.log_softmax_forward); (N, K) or (N, C, H, W).

    backward: dx = dy - p * sum_k dy_k per sample (F.log_softmax_backward). Its
    output is what im2colnet.losses.NLLLoss takes; LogSoftmax + NLLLoss is
    CrossEntropyLoss on the scores.
    """

    def __init__(self):
        super().__init__()
        self._logp = None

    def forward(self, x, training=False):
        logp = F.log_softmax_forward(x)
        self._logp = logp if training else None
        return logp

    def backward(self, dy, need_dx=True):
        return F.log_softmax_backward(dy, self._saved(self._logp))
