"""Loss functions: ``loss(scores, target) -> (value, dscores)``.

Every loss reduces over the batch with the mean (Obj = 1/N sum_n loss_n), returns
the value as a Python float and dscores = dObj/dscores with the shape and dtype
of ``scores`` (float32 stays float32). Targets are checked before anything is
computed: a wrong shape, a batch mismatch or a label out of range is a
ValueError (a non-numeric dtype a TypeError) naming ``scores``/``target``.

| class | scores | target | per-sample loss |
| --- | --- | --- | --- |
| CrossEntropyLoss | (N, K) or (N, C, H, W) | int labels (N,) or soft labels (N, K) | -sum_k z_k log softmax(s)_k |
| NLLLoss | log-probabilities (N, K) or (N, C, H, W) | int labels (N,) | -s_y |
| MSELoss | any (N, ...) | same shape (or int labels (N,), one-hot) | mean over elements of (s - t)^2 |
| LogisticLoss | (N,) or (N, 1) | 0/1 (or probabilities) | log(1 + e^s) - t s |
| SignedLogisticLoss | (N,) or (N, 1) | -1/+1 | log(1 + e^(-y s)) |
| HingeLoss | (N, K) | int labels (N,) | sum_{j != y} max(0, s_j - s_y + margin) |

``LOSSES`` maps class names to classes; :func:`get_loss` also takes the short
names ``"cross_entropy"``, ``"nll"``, ``"mse"``, ``"logistic"``, ``"signed_logistic"``,
``"hinge"``.
"""
import numpy as np

from ._checks import as_float, as_labels, check_batch, check_number
from ._config import Configurable
from .functional.softmax import softmax_cross_entropy

__all__ = ["Loss", "CrossEntropyLoss", "NLLLoss", "MSELoss", "LogisticLoss", "SignedLogisticLoss",
           "HingeLoss", "LOSSES", "get_loss"]


def _scores(scores, min_ndim=1, layout="(N, ...)"):
    """scores as a non-empty float32/float64 array with at least min_ndim axes."""
    s = as_float(scores, "scores")
    if s.ndim < min_ndim:
        raise ValueError(f"scores: expected a {layout} array, got shape {s.shape}")
    check_batch(s, "scores")
    if s.size == 0:
        raise ValueError(f"scores: there are no outputs per sample (shape {s.shape})")
    return s


def _class_scores(scores, target):
    """(s, s2, labels, rows): scores (N, K) or (N, C, H, W), s2 its (N, K) view, the int
    labels (N,) in [0, K) of target, and the row indices arange(N)."""
    s = _scores(scores, 2, "(N, K) or (N, C, H, W)")
    n = s.shape[0]
    s2 = s.reshape(n, -1)
    return s, s2, as_labels(target, "target", s2.shape[1], n), np.arange(n)


def _finite_target(target, dtype):
    t = as_float(target, "target", dtype=dtype)
    if not np.all(np.isfinite(t)):
        raise ValueError("target: contains NaN or inf")
    return t


class Loss(Configurable):
    """Base class: subclasses implement ``__call__(scores, target) -> (loss, dscores)``.

    ``name`` is the short name :func:`get_loss` accepts; ``get_config()`` returns the
    keyword arguments of ``__init__`` (JSON-able), ``from_config`` rebuilds the loss.
    """
    name = None

    def __call__(self, scores, target):
        raise NotImplementedError

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))


class CrossEntropyLoss(Loss):
    """Softmax over all non-batch axes fused with the cross-entropy (numerically stable).

    scores: (N, K) or (N, C, H, W) (K = C*H*W classes); target: int labels (N,) in
    [0, K) or soft labels (N, K) whose rows are non-negative and sum to 1.
    loss = -1/N sum_n sum_k z[n, k] log softmax(s[n])_k;  dscores = (softmax(s) - z) / N.
    Same as torch.nn.CrossEntropyLoss() (reduction="mean").
    """
    name = "cross_entropy"

    def __call__(self, scores, target):
        s = _scores(scores, 2, "(N, K) or (N, C, H, W)")
        return softmax_cross_entropy(s, target)


class NLLLoss(Loss):
    """Negative log-likelihood of log-probabilities (the output of a LogSoftmax layer).

    scores: (N, K) or (N, C, H, W) log-probabilities (K = C*H*W classes); target: int
    labels (N,) in [0, K). loss = -1/N sum_n s[n, y_n];  dscores[n, y_n] = -1/N, 0 elsewhere.
    Same as torch.nn.NLLLoss() (reduction="mean"); after LogSoftmax it equals
    CrossEntropyLoss on the scores.
    """
    name = "nll"

    def __call__(self, scores, target):
        s, s2, labels, rows = _class_scores(scores, target)
        n = s.shape[0]
        loss = -s2[rows, labels].sum(dtype=np.float64) / n
        ds = np.zeros_like(s2)
        ds[rows, labels] = -1.0 / n
        return float(loss), ds.reshape(s.shape)


class MSELoss(Loss):
    """Mean squared error over all elements, as torch.nn.MSELoss() (reduction="mean").

    scores: (N, ...); target: the same shape (for scores (N, 1) also (N,)); integer
    class labels (N,) with scores (N, K), K > 1, are one-hot encoded first.
    loss = 1/(N*F) sum (s - t)^2 with F elements per sample, i.e. the batch mean of the
    per-sample mean of squares;  dscores = 2 (s - t) / (N*F).
    """
    name = "mse"

    def __call__(self, scores, target):
        s = _scores(scores)
        n = s.shape[0]
        t = np.asarray(target)
        if t.ndim == 1 and t.dtype.kind in "iu" and s.ndim >= 2 and s[0].size > 1:
            # Class labels against K outputs: the one-hot rows as regression targets.
            k = s[0].size
            labels = as_labels(t, "target", k, n)
            t = np.zeros((n, k), dtype=s.dtype)
            t[np.arange(n), labels] = 1
            t = t.reshape(s.shape)
        else:
            t = _finite_target(t, s.dtype)
            if t.shape != s.shape:
                if not (s.shape[-1] == 1 and t.shape == s.shape[:-1]):
                    raise ValueError(f"target: expected the shape of scores {s.shape} (or integer "
                                     f"class labels (N,)), got {t.shape}")
                t = t.reshape(s.shape)  # (N,) targets for (N, 1) scores
        diff = s - t
        loss = float(np.dot(diff.ravel(), diff.ravel())) / s.size
        diff *= 2 / s.size
        return loss, diff


def _binary_scores(scores, target):
    """scores (N,) or (N, 1) and a target of N values (either shape), as float arrays."""
    s = _scores(scores, 1, "(N,) or (N, 1)")
    if s.ndim > 2 or (s.ndim == 2 and s.shape[1] != 1):
        raise ValueError(f"scores: expected one score per sample, (N,) or (N, 1), got shape {s.shape}")
    t = _finite_target(target, s.dtype)
    if t.ndim not in (1, 2) or (t.ndim == 2 and t.shape[1] != 1) or t.shape[0] != s.shape[0]:
        raise ValueError(f"target: expected {s.shape[0]} values, shape (N,) or (N, 1) to match "
                         f"scores {s.shape}, got {t.shape}")
    return s, t.reshape(s.shape)


def _logistic(s, t):
    """Mean of log(1 + e^s) - t s and its gradient (sigma(s) - t) / N, stable for any |s|.

    log(1 + e^s) = max(s, 0) + log1p(e^-|s|). With e = e^-|s| both sigma(|s|) = 1/(1 + e)
    and sigma(-|s|) = e/(1 + e) are accurate, and the gradient is taken as
    (1 - t) sigma(s) - t sigma(-s) (= sigma(s) - t) so that a confident correct score
    gives its tiny gradient to full relative precision instead of 1 - 1/(1 + e).
    """
    n = s.shape[0]
    e = np.exp(-np.abs(s))
    loss = (np.maximum(s, 0) - t * s + np.log1p(e)).sum(dtype=np.float64) / n
    high, low = 1 / (1 + e), e / (1 + e)
    positive = s >= 0
    ds = (1 - t) * np.where(positive, high, low) - t * np.where(positive, low, high)
    ds = ds.astype(s.dtype, copy=False)
    ds /= n
    return float(loss), ds


class LogisticLoss(Loss):
    """Binary logistic loss on raw scores (labels 0/1), as torch.nn.BCEWithLogitsLoss().

    scores: (N,) or (N, 1); target: N values in [0, 1] (labels 0/1; probabilities
    are accepted as soft labels), shape (N,) or (N, 1).
    loss = 1/N sum log(1 + e^s) - t s = -1/N sum t log sigma(s) + (1 - t) log(1 - sigma(s));
    dscores = (sigma(s) - t) / N.
    """
    name = "logistic"

    def __call__(self, scores, target):
        s, t = _binary_scores(scores, target)
        if t.size and (t.min() < 0 or t.max() > 1):
            raise ValueError(f"target: LogisticLoss takes labels 0/1 (values in [0, 1]), got range "
                             f"[{t.min()}, {t.max()}]; for -1/+1 labels use SignedLogisticLoss")
        return _logistic(s, t)


class SignedLogisticLoss(Loss):
    """Logistic loss for labels y = -1/+1: loss = 1/N sum log(1 + e^(-y s)).

    scores: (N,) or (N, 1); target: N values, each -1 or +1.
    It is LogisticLoss with t = (y + 1) / 2, since log(1 + e^(-ys)) = log(1 + e^s) - t s;
    dscores = (sigma(s) - t) / N = -y sigma(-y s) / N.
    """
    name = "signed_logistic"

    def __call__(self, scores, target):
        s, y = _binary_scores(scores, target)
        if not np.all(np.abs(y) == 1):
            bad = y[np.abs(y) != 1].ravel()[:3]
            raise ValueError(f"target: SignedLogisticLoss takes labels -1/+1, got values such as "
                             f"{bad.tolist()}; for 0/1 labels use LogisticLoss")
        return _logistic(s, (y + 1) / 2)


class HingeLoss(Loss):
    """Multiclass SVM loss (Weston-Watkins, as in CS231n), margin 1 by default.

    scores: (N, K) (or (N, C, H, W), K = C*H*W); target: int labels (N,) in [0, K).
    loss = 1/N sum_n sum_{j != y_n} max(0, s[n, j] - s[n, y_n] + margin);
    dscores[n, j] = [margin_nj > 0] / N for j != y_n, dscores[n, y_n] = -(count of j) / N
    (0 at the kink). torch.nn.MultiMarginLoss() is this divided by K.
    """
    name = "hinge"

    def __init__(self, margin=1.0):
        self.margin = check_number(margin, "margin", 0.0)

    def get_config(self):
        return {"margin": self.margin}

    def __call__(self, scores, target):
        s, s2, labels, rows = _class_scores(scores, target)
        n = s.shape[0]
        margins = s2 - s2[rows, labels][:, None] + s.dtype.type(self.margin)
        margins[rows, labels] = 0
        np.maximum(margins, 0, out=margins)
        loss = margins.sum(dtype=np.float64) / n
        ds = (margins > 0).astype(s.dtype)
        ds[rows, labels] = -ds.sum(axis=1)
        ds /= n
        return float(loss), ds.reshape(s.shape)


LOSSES = {cls.__name__: cls for cls in
          (CrossEntropyLoss, NLLLoss, MSELoss, LogisticLoss, SignedLogisticLoss, HingeLoss)}
_SHORT_NAMES = {cls.name: cls for cls in LOSSES.values()}


def get_loss(loss, **kwargs):
    """A loss object from a name ("cross_entropy", "mse", "logistic", "signed_logistic",
    "hinge", or a class name such as "HingeLoss"), a Loss class, or a loss object
    (returned as is). kwargs go to the constructor.
    """
    if isinstance(loss, str):
        cls = _SHORT_NAMES.get(loss.lower()) or LOSSES.get(loss) or {
            k.lower(): v for k, v in LOSSES.items()}.get(loss.lower())
        if cls is None:
            raise ValueError(f"loss: unknown name {loss!r}; choose from "
                             f"{sorted(_SHORT_NAMES)} or {sorted(LOSSES)}")
        return cls(**kwargs)
    if isinstance(loss, type) and issubclass(loss, Loss):
        return loss(**kwargs)
    if kwargs:
        raise TypeError("get_loss: keyword arguments only go with a name or a class")
    if callable(loss):
        return loss
    raise TypeError(f"loss: expected a name, a Loss class or a callable, got {type(loss).__name__}")
