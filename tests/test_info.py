"""Information measures: identities on random distributions, worked values, bad input."""
import math

import numpy as np
import pytest

from im2colnet.info import (conditional_entropy, cross_entropy, entropy, joint_entropy,
                            kl_divergence, mutual_information)


def random_distribution(rng, shape, zeros=0):
    p = rng.random(shape) ** 3  # skewed, with some small entries
    flat = p.reshape(-1)
    flat[rng.choice(flat.size, zeros, replace=False)] = 0
    return p / p.sum()


def naive_entropy(p):
    return -sum(v * math.log(v) for v in np.ravel(p) if v > 0)


SEEDS = range(20)


@pytest.mark.parametrize("seed", SEEDS)
def test_identities_on_random_distributions(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 9))
    p = random_distribution(rng, n, zeros=int(rng.integers(0, n)))  # zeros only in p: q > 0
    q = random_distribution(rng, n)
    h = entropy(p)
    assert h == pytest.approx(naive_entropy(p), rel=1e-12, abs=1e-15)
    assert -1e-15 <= h <= math.log(n) + 1e-12
    assert cross_entropy(p, q) == pytest.approx(kl_divergence(p, q) + h, rel=1e-12)
    assert kl_divergence(p, q) >= 0 and kl_divergence(p, p) == 0
    assert cross_entropy(p, p) == pytest.approx(h, rel=1e-12, abs=1e-15)

    pxy = random_distribution(rng, (n, int(rng.integers(2, 6))), zeros=int(rng.integers(0, 3)))
    px, py = pxy.sum(axis=1), pxy.sum(axis=0)
    hxy = joint_entropy(pxy)
    assert hxy == pytest.approx(naive_entropy(pxy), rel=1e-12)
    mi = mutual_information(pxy)
    assert mi == pytest.approx(entropy(px) + entropy(py) - hxy, rel=1e-9, abs=1e-12)
    assert mi >= 0
    assert conditional_entropy(pxy) == pytest.approx(hxy - entropy(py), rel=1e-9, abs=1e-12)
    # I(X;Y) = H(X) - H(X|Y), and I is the KL divergence of pxy from px py
    assert mi == pytest.approx(entropy(px) - conditional_entropy(pxy), rel=1e-9, abs=1e-12)
    assert mi == pytest.approx(kl_divergence(pxy, np.outer(px, py)), rel=1e-12, abs=1e-15)
    # symmetric in X and Y
    assert mutual_information(pxy.T) == pytest.approx(mi, rel=1e-12, abs=1e-15)


def test_worked_values():
    assert entropy([0.5, 0.5]) == pytest.approx(math.log(2), rel=1e-15)
    assert entropy([0.5, 0.5], base=2) == pytest.approx(1.0, rel=1e-15)
    assert entropy(np.full(8, 1 / 8), base=2) == pytest.approx(3.0, rel=1e-15)
    assert entropy([0.25, 0.25, 0.5], base=2) == pytest.approx(1.5, rel=1e-15)
    assert entropy([1.0, 0.0]) == 0.0
    # the uniform distribution attains the maximum log n
    assert entropy(np.full(7, 1 / 7)) == pytest.approx(math.log(7), rel=1e-14)
    assert cross_entropy([1.0, 0.0], [0.5, 0.5], base=2) == pytest.approx(1.0)
    assert kl_divergence([0.5, 0.5], [0.25, 0.75], base=2) == pytest.approx(
        0.5 * math.log2(2) + 0.5 * math.log2(2 / 3))
    # X = Y a fair bit: I = H = 1 bit, H(X|Y) = 0; an XOR-like table
    same = np.array([[0.5, 0.0], [0.0, 0.5]])
    assert mutual_information(same, base=2) == pytest.approx(1.0)
    assert conditional_entropy(same) == 0.0
    assert joint_entropy(same, base=2) == pytest.approx(1.0)
    # H(X|Y) conditions on the columns: pxy[i, j] = P(X=i, Y=j)
    pxy = np.array([[0.25, 0.5], [0.25, 0.0]])  # Y=0: X uniform (1 bit); Y=1: X=0 surely
    assert conditional_entropy(pxy, base=2) == pytest.approx(0.5)
    assert conditional_entropy(pxy.T, base=2) == pytest.approx(
        0.75 * entropy([1 / 3, 2 / 3], base=2))


def test_independence_gives_zero_information():
    rng = np.random.default_rng(1)
    px, py = random_distribution(rng, 4), random_distribution(rng, 5)
    pxy = np.outer(px, py)
    assert mutual_information(pxy) == pytest.approx(0.0, abs=1e-14)
    assert conditional_entropy(pxy) == pytest.approx(entropy(px), rel=1e-12)
    assert joint_entropy(pxy) == pytest.approx(entropy(px) + entropy(py), rel=1e-12)


def test_zero_q_where_p_is_positive_is_infinite():
    p, q = [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]
    assert cross_entropy(p, q) == math.inf
    assert kl_divergence(p, q) == math.inf
    # where p = 0 a zero q costs nothing (0 log 0 = 0)
    assert kl_divergence([1.0, 0.0], [1.0, 0.0]) == 0.0
    assert cross_entropy([0.0, 1.0], [0.0, 1.0]) == 0.0


def test_dtypes_and_layouts():
    rng = np.random.default_rng(2)
    pxy = random_distribution(rng, (3, 4))
    reference = mutual_information(pxy)
    assert mutual_information(pxy.astype(np.float32)) == pytest.approx(reference, rel=1e-5, abs=1e-6)
    assert mutual_information(np.asfortranarray(pxy)) == pytest.approx(reference, rel=1e-14)
    assert mutual_information(pxy.T.copy().T) == pytest.approx(reference, rel=1e-14)
    assert isinstance(entropy([0.5, 0.5]), float)
    assert entropy([[0.25, 0.25], [0.25, 0.25]]) == pytest.approx(math.log(4))


@pytest.mark.parametrize("call, match", [
    (lambda: entropy([0.5, 0.6]), "sum to 1"),
    (lambda: entropy([1.5, -0.5]), "non-negative"),
    (lambda: entropy([np.nan, 1.0]), "finite"),
    (lambda: entropy([]), "empty"),
    (lambda: entropy([0.5, 0.5], base=1), "base"),
    (lambda: entropy([0.5, 0.5], base=-2), "base"),
    (lambda: cross_entropy([0.5, 0.5], [0.2, 0.3, 0.5]), r"same shape.*\(2,\).*\(3,\)"),
    (lambda: kl_divergence([0.5, 0.5], [0.2, 0.2]), "q: probabilities must sum to 1"),
    (lambda: joint_entropy([0.5, 0.5]), "pxy: expected a 2-D table"),
    (lambda: conditional_entropy(np.full((2, 2, 2), 1 / 8)), "2-D"),
    (lambda: mutual_information([[0.5, 0.5], [0.5, 0.5]]), "pxy: probabilities must sum to 1"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_dtype():
    with pytest.raises(TypeError, match="p"):
        entropy(np.array(["a", "b"]))
