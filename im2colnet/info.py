"""Information measures of discrete distributions (natural log unless ``base`` is given).

    H(p)       = -sum_i p_i log p_i                       entropy
    H(p||q)    = -sum_i p_i log q_i                       cross-entropy
    KL(p||q)   =  sum_i p_i log(p_i / q_i)                = H(p||q) - H(p)
    H(X,Y)     = -sum_ij p(i,j) log p(i,j)                joint entropy of a table pxy
    H(X|Y)     = -sum_ij p(i,j) log(p(i,j) / p(j))        = H(X,Y) - H(Y)
    I(X;Y)     =  sum_ij p(i,j) log(p(i,j) / (p(i) p(j))) = H(X) + H(Y) - H(X,Y)

Conventions: 0 log 0 = 0 (terms with p_i = 0 are left out); q_i = 0 where
p_i > 0 makes H(p||q) and KL(p||q) infinite. The joint table is
pxy[i, j] = P(X = i, Y = j). Distributions must be finite, non-negative and sum
to 1 within 1e-6, else ValueError; the sums are computed in float64 and
returned as Python floats. KL, H(X|Y) and I(X;Y) are computed from their
defining sums (no cancellation between entropies) and clipped at 0 against
rounding.
"""
import math

import numpy as np

from ._checks import as_float, check_number

__all__ = ["entropy", "cross_entropy", "kl_divergence", "joint_entropy",
           "conditional_entropy", "mutual_information"]

_TOLERANCE = 1e-6


def _distribution(p, name, ndim=None):
    """p as a float64 array of probabilities (any shape, or exactly ndim axes)."""
    arr = as_float(p, name).astype(np.float64, copy=False)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D table, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: the distribution is empty (shape {arr.shape})")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name}: probabilities must be finite and non-negative")
    total = arr.sum()
    if abs(total - 1.0) > _TOLERANCE:
        raise ValueError(f"{name}: probabilities must sum to 1 (within {_TOLERANCE}), "
                         f"got {total!r} over shape {arr.shape}")
    return arr


def _pair(p, q):
    p, q = _distribution(p, "p"), _distribution(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"p, q: the distributions must have the same shape, got {p.shape} and {q.shape}")
    return p, q


def _log_base(base):
    """The divisor that turns natural logs into logs of base (1 for None)."""
    if base is None:
        return 1.0
    base = check_number(base, "base", 0.0, low_open=True)
    if base == 1:
        raise ValueError("base: expected a finite number > 0 other than 1, got 1")
    return math.log(base)


def _sum_p_log_ratio(p, num, den):
    """sum over p > 0 of p log(num / den); +inf if den = 0 somewhere p > 0.

    num and den broadcast against p; num > 0 wherever p > 0 is the caller's
    promise (num is p itself or a table of which p is a part).
    """
    support = p > 0
    num = np.broadcast_to(num, p.shape)[support]
    den = np.broadcast_to(den, p.shape)[support]
    if np.any(den == 0):
        return math.inf
    return float(np.sum(p[support] * (np.log(num) - np.log(den))))


def entropy(p, base=None):
    """H(p) = -sum p log p of a distribution p (any shape: all entries are the outcomes).

    0 <= H(p) <= log(p.size). Returns a float.
    """
    p = _distribution(p, "p")
    return -_sum_p_log_ratio(p, p, 1.0) / _log_base(base) + 0.0  # + 0.0 turns -0.0 into 0.0


def cross_entropy(p, q, base=None):
    """H(p||q) = -sum p log q for distributions p, q of one shape (inf if q = 0 where p > 0)."""
    p, q = _pair(p, q)
    return _sum_p_log_ratio(p, 1.0, q) / _log_base(base) + 0.0  # sum p log(1/q)


def kl_divergence(p, q, base=None):
    """KL(p||q) = sum p log(p/q) >= 0 for distributions p, q of one shape (inf if q = 0 where p > 0)."""
    p, q = _pair(p, q)
    return max(_sum_p_log_ratio(p, p, q), 0.0) / _log_base(base)


def joint_entropy(pxy, base=None):
    """H(X,Y) of a joint table pxy (nx, ny), pxy[i, j] = P(X=i, Y=j)."""
    pxy = _distribution(pxy, "pxy", ndim=2)
    return -_sum_p_log_ratio(pxy, pxy, 1.0) / _log_base(base) + 0.0


def conditional_entropy(pxy, base=None):
    """H(X|Y) = H(X,Y) - H(Y) of a joint table pxy (nx, ny), pxy[i, j] = P(X=i, Y=j)."""
    pxy = _distribution(pxy, "pxy", ndim=2)
    py = pxy.sum(axis=0, keepdims=True)
    return max(-_sum_p_log_ratio(pxy, pxy, py), 0.0) / _log_base(base)


def mutual_information(pxy, base=None):
    """I(X;Y) = H(X) + H(Y) - H(X,Y) of a joint table pxy (nx, ny); 0 iff X, Y independent."""
    pxy = _distribution(pxy, "pxy", ndim=2)
    px = pxy.sum(axis=1, keepdims=True)
    py = pxy.sum(axis=0, keepdims=True)
    return max(_sum_p_log_ratio(pxy, pxy, px * py), 0.0) / _log_base(base)
