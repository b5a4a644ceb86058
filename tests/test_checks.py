"""The shared argument checks: every padding form, output sizes, dtypes, messages."""
import numpy as np
import pytest

from im2colnet._checks import (as_float, as_labels, conv_geometry, conv_output_size,
                               pair, positive_pair, resolve_padding)


@pytest.mark.parametrize("value, expected", [(3, (3, 3)), ((2, 5), (2, 5)), ([1, 4], (1, 4)),
                                             (np.int64(2), (2, 2))])
def test_pair(value, expected):
    assert pair(value, "stride") == expected


@pytest.mark.parametrize("value", [1.5, "2", (1, 2, 3), True, None])
def test_pair_rejects(value):
    with pytest.raises((TypeError, ValueError), match="stride"):
        pair(value, "stride")


@pytest.mark.parametrize("value", [0, -1, (1, 0)])
def test_positive_pair_rejects(value):
    with pytest.raises(ValueError, match="dilation"):
        positive_pair(value, "dilation")


def test_padding_forms():
    k, s, d, hw = (3, 3), (1, 1), (1, 1), (8, 8)
    assert resolve_padding(1, k, s, d, hw) == ((1, 1), (1, 1))
    assert resolve_padding((1, 2), k, s, d, hw) == ((1, 1), (2, 2))
    assert resolve_padding(((0, 1), (2, -1)), k, s, d, hw) == ((0, 1), (2, -1))
    assert resolve_padding("valid", k, s, d, hw) == ((0, 0), (0, 0))
    assert resolve_padding("same", k, s, d, hw) == ((1, 1), (1, 1))
    # even kernel: the extra row/column goes to the bottom/right (PyTorch)
    assert resolve_padding("same", (2, 4), s, d, hw) == ((0, 1), (1, 2))
    # dilation widens the kernel to d*(k-1)+1
    assert resolve_padding("same", k, s, (2, 3), hw) == ((2, 2), (3, 3))


@pytest.mark.parametrize("size, k, s, d", [(7, 3, 1, 1), (8, 2, 1, 1), (9, 3, 2, 1),
                                           (10, 4, 3, 2), (5, 5, 1, 1), (28, 5, 2, 1)])
def test_same_padding_output_size(size, k, s, d):
    (p0, p1), _ = resolve_padding("same", (k, k), (s, s), (d, d), (size, size))
    assert conv_output_size(size, k, s, p0, p1, d) == -(-size // s)


@pytest.mark.parametrize("anchor, k", [((0, 0), (3, 3)), ((1, 1), (3, 3)), ((2, 0), (3, 2)),
                                       ((-1, 4), (3, 3)), ((5, -2), (2, 2))])
def test_anchor_keeps_size(anchor, k):
    g = conv_geometry((9, 7), k, anchor=anchor)
    assert (g.out_h, g.out_w) == (9, 7)
    assert (g.pt, g.pb, g.pl, g.pr) == (anchor[0], k[0] - 1 - anchor[0],
                                        anchor[1], k[1] - 1 - anchor[1])


def test_anchor_with_padding_is_an_error():
    with pytest.raises(ValueError, match="anchor"):
        conv_geometry((9, 7), 3, padding=1, anchor=(1, 1))


@pytest.mark.parametrize("size, k, s, p0, p1, d", [(5, 3, 1, 0, 0, 1), (7, 3, 2, 1, 1, 1),
                                                   (10, 3, 3, 2, 0, 2), (6, 2, 1, -1, 0, 1)])
def test_output_size_invariant(size, k, s, p0, p1, d):
    """(out-1)*s + dk <= in + pads < out*s + dk (Chainer's relation)."""
    out = conv_output_size(size, k, s, p0, p1, d)
    dk = d * (k - 1) + 1
    assert (out - 1) * s + dk <= size + p0 + p1 < out * s + dk


def test_kernel_too_large_names_kernel_size():
    with pytest.raises(ValueError, match="kernel_size"):
        conv_geometry((4, 4), 5)
    with pytest.raises(ValueError, match="kernel_size"):
        conv_geometry((4, 4), 3, padding=-1)


def test_as_float_dtypes():
    assert as_float(np.zeros(3, np.float64), "x").dtype == np.float64
    assert as_float(np.zeros(3, np.float32), "x").dtype == np.float32
    assert as_float(np.arange(3), "x").dtype == np.float32
    assert as_float([True, False], "x").dtype == np.float32
    assert as_float(np.zeros(3, np.float32), "w", np.float64).dtype == np.float64
    for bad in (np.zeros(2, complex), np.array(["a"]), np.array([None, 1], dtype=object)):
        with pytest.raises(TypeError, match="weight"):
            as_float(bad, "weight")


def test_as_labels():
    np.testing.assert_array_equal(as_labels([0, 2, 1], "target", 3, 3), [0, 2, 1])
    np.testing.assert_array_equal(as_labels(np.array([1.0, 0.0]), "target", 2, 2), [1, 0])
    with pytest.raises(ValueError, match="target"):
        as_labels([0, 3], "target", 3, 2)
    with pytest.raises(ValueError, match="target"):
        as_labels([0.5, 1.0], "target", 3, 2)
    with pytest.raises(ValueError, match="target"):
        as_labels([0, 1, 1], "target", 3, 2)
    with pytest.raises(ValueError, match="target"):
        as_labels([-1, 1], "target", 3, 2)
