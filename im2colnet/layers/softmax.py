"""The Softmax and LogSoftmax layers (im2colnet.functional softmax ops)."""
from .. import functional as F
from .._checks import as_float
from .base import Layer

__all__ = ["Softmax", "LogSoftmax"]


class Softmax(Layer):
    """p = softmax over all non-batch axes (F.softmax_forward); (N, K) or (N, C, H, W).

    backward: dx = p * (dy - sum_k dy_k p_k) per sample (F.softmax_backward: the softmax
    Jacobian diag(p) - p p^T applied to dy). For training a classifier, use
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
        return F.softmax_backward(as_float(dy, "dy", dtype=p.dtype), p)


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
