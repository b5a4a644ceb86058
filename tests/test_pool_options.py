"""Pooling options of issue 15: ceil_mode, count_include_pad=False, max-pool dilation, and
global average pooling, against loops written from the definitions, float64 finite
differences and PyTorch where installed; bad input."""
import numpy as np
import pytest

import im2colnet as inn
import im2colnet.functional as F
from _gradcheck import check_directional, check_layer_gradients


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def torch_out_size(size, k, s, p0, p1, d, ceil_mode):
    """PyTorch's pooling output size, written out (its pooling_output_shape, per side)."""
    num = size + p0 + p1 - d * (k - 1) - 1
    out = (-(-num // s) if ceil_mode else num // s) + 1
    if ceil_mode and (out - 1) * s >= size + p0:
        out -= 1
    return out


def naive_pool(x, kernel_size, stride, padding, dilation=1, ceil_mode=False,
               count_include_pad=True, op="max"):
    """Loops over every window's taps: (y, path) for max, y for avg.

    Tap (p, q) of window (i, j) is cell (i*sh - pt + p*dh, j*sw - pl + q*dw). Image cells
    are candidates (the first maximum in tap order wins); for the average the divisor counts
    the taps inside the padded input [-pt, H + pb) x [-pl, W + pr), or only image cells.
    """
    (kh, kw), (dh, dw) = _pair(kernel_size), _pair(dilation)
    sh, sw = _pair(kernel_size if stride is None else stride)
    (pt, pb), (pl, pr) = [_pair(p) for p in padding] if isinstance(padding[0], (tuple, list)) \
        else [(padding[0], padding[0]), (padding[1], padding[1])]
    N, C, H, W = x.shape
    Ho = torch_out_size(H, kh, sh, pt, pb, dh, ceil_mode)
    Wo = torch_out_size(W, kw, sw, pl, pr, dw, ceil_mode)
    y = np.zeros((N, C, Ho, Wo))
    path = np.zeros((N, C, Ho, Wo), dtype=np.int64)
    for i in range(Ho):
        for j in range(Wo):
            cells, counted = [], 0
            for p in range(kh):
                for q in range(kw):
                    r, s = i * sh - pt + p * dh, j * sw - pl + q * dw
                    if 0 <= r < H and 0 <= s < W:
                        cells.append((r, s))
                    if count_include_pad:
                        counted += -pt <= r < H + pb and -pl <= s < W + pr
                    else:
                        counted += 0 <= r < H and 0 <= s < W
            for n in range(N):
                for c in range(C):
                    values = [x[n, c, r, s] for r, s in cells]
                    if op == "max":
                        best = int(np.argmax(values))
                        y[n, c, i, j] = values[best]
                        path[n, c, i, j] = cells[best][0] * W + cells[best][1]
                    else:
                        y[n, c, i, j] = sum(values) / counted
    return (y, path) if op == "max" else y


def tie_free(shape, rng):
    return rng.permutation(np.linspace(-1, 1, int(np.prod(shape)))).reshape(shape)


# (x shape, kernel_size, stride, padding as (ph, pw) or per side, dilation, ceil_mode)
MAX_CASES = [
    ((2, 2, 7, 7), 2, 2, (0, 0), 1, True),            # a last half window per axis
    ((1, 3, 8, 9), 3, 2, (1, 1), 1, True),
    ((2, 1, 9, 10), 3, 1, (1, 0), 2, False),          # dilation
    ((1, 2, 10, 11), (3, 2), (2, 3), (1, 1), (2, 3), True),
    ((1, 1, 6, 6), 2, 3, (0, 0), 1, True),            # the extra window would start past the input
    ((2, 1, 5, 8), 2, 2, ((1, 0), (0, 1)), 1, True),  # per-side padding
    ((1, 2, 12, 12), 3, 3, (1, 1), 2, True),
    ((1, 1, 5, 5), 5, 2, (2, 2), 1, True),
]

AVG_CASES = [
    ((2, 2, 7, 7), 2, 2, (0, 0), True, True),
    ((2, 2, 7, 7), 3, 2, (1, 1), True, False),
    ((1, 3, 8, 9), 3, 2, (1, 1), False, False),
    ((1, 2, 10, 11), (3, 2), (2, 3), (1, 1), True, True),
    ((1, 1, 6, 6), 4, 3, (2, 1), True, False),
    ((2, 1, 5, 8), 2, 2, ((1, 0), (0, 1)), True, False),
    ((1, 1, 5, 5), 3, 3, (1, 1), True, True),
]


@pytest.mark.parametrize("shape, k, s, p, d, ceil", MAX_CASES)
def test_maxpool_options_match_loops_and_gradient(shape, k, s, p, d, ceil):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=shape).astype(np.float64)       # ties: the first maximum wins
    y, path = F.maxpool2d_forward(x, k, s, p, dilation=d, ceil_mode=ceil)
    y_ref, path_ref = naive_pool(x, k, s, p, d, ceil)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(path, path_ref)
    x = tie_free(shape, rng)
    y, path = F.maxpool2d_forward(x, k, s, p, dilation=d, ceil_mode=ceil)
    dy = rng.standard_normal(y.shape)
    dx = F.maxpool2d_backward(dy, path, shape)
    check_directional(lambda z: float(np.sum(dy * F.maxpool2d_forward(z, k, s, p, d, ceil)[0])),
                      x, dx, rng)


@pytest.mark.parametrize("shape, k, s, p, ceil, include", AVG_CASES)
def test_avgpool_options_match_loops_adjoint_and_gradient(shape, k, s, p, ceil, include):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    opts = dict(ceil_mode=ceil, count_include_pad=include)
    y = F.avgpool2d_forward(x, k, s, p, **opts)
    np.testing.assert_allclose(y, naive_pool(x, k, s, p, 1, ceil, include, op="avg"),
                               rtol=1e-12, atol=1e-14)
    dy = rng.standard_normal(y.shape)
    dx = F.avgpool2d_backward(dy, shape, k, s, p, **opts)
    np.testing.assert_allclose(np.vdot(y, dy), np.vdot(x, dx), rtol=1e-12)
    check_directional(lambda z: float(np.sum(dy * F.avgpool2d_forward(z, k, s, p, **opts))),
                      x, dx, rng)


def test_ceil_mode_worked_example():
    # 5 columns, kernel 2, stride 2: floor gives 2 windows, ceil a third one on column 4 alone
    x = np.arange(10.0).reshape(1, 1, 2, 5)
    y, path = F.maxpool2d_forward(x, 2, ceil_mode=True)
    np.testing.assert_array_equal(y[0, 0], [[6, 8, 9]])
    np.testing.assert_array_equal(path[0, 0], [[6, 8, 9]])
    avg = F.avgpool2d_forward(x, 2, ceil_mode=True)
    np.testing.assert_allclose(avg[0, 0], [[3, 5, 6.5]])          # (4 + 9) / 2: two cells count
    avg = F.avgpool2d_forward(x, 2, padding=(0, 1), ceil_mode=True, count_include_pad=True)
    # windows start at columns -1, 1, 3: the first holds one padding cell (counted),
    # the last reaches column 4 and the right padding column 5 (counted)
    np.testing.assert_allclose(avg[0, 0], [[(0 + 5) / 4, (1 + 2 + 6 + 7) / 4, (3 + 4 + 8 + 9) / 4]])


def test_count_include_pad_false_divides_by_the_image_cells():
    y = F.avgpool2d_forward(np.ones((1, 1, 2, 2)), 2, 2, 1, count_include_pad=False)
    np.testing.assert_array_equal(y[0, 0], np.ones((2, 2)))
    y = F.avgpool2d_forward(np.ones((1, 1, 2, 2)), 2, 2, 1)
    np.testing.assert_array_equal(y[0, 0], np.full((2, 2), 0.25))


def test_dilated_max_pooling_reads_spaced_taps():
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 1, 1] = 9.0            # between the taps of window (0, 0) with dilation 2
    x[0, 0, 2, 2] = 1.0
    y, path = F.maxpool2d_forward(x, 2, 1, dilation=2)
    assert y.shape == (1, 1, 3, 3)
    assert y[0, 0, 0, 0] == 1.0 and path[0, 0, 0, 0] == 2 * 5 + 2
    assert y[0, 0, 1, 1] == 9.0 and path[0, 0, 1, 1] == 1 * 5 + 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_average_pooling(dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 5, 7)).astype(dtype)
    y = F.global_avgpool2d_forward(x)
    assert y.shape == (3, 4, 1, 1) and y.dtype == dtype
    np.testing.assert_allclose(y, x.astype(np.float64).mean(axis=(2, 3), keepdims=True),
                               rtol=1e-6 if dtype == np.float32 else 1e-13)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = F.global_avgpool2d_backward(dy, x.shape)
    np.testing.assert_allclose(dx, np.broadcast_to(dy / 35, x.shape), rtol=1e-6)
    for layer in (inn.GlobalAvgPool2d(), inn.AdaptiveAvgPool2d(1), inn.AdaptiveAvgPool2d((1, 1))):
        np.testing.assert_array_equal(layer.forward(x, training=True), y)
        np.testing.assert_array_equal(layer.backward(dy), dx)
        assert layer.output_shape((4, 5, 7)) == (4, 1, 1)


@pytest.mark.parametrize("layer", [
    lambda: inn.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True),
    lambda: inn.MaxPool2d((2, 3), ceil_mode=True),
    lambda: inn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
    lambda: inn.AvgPool2d(2, ceil_mode=True),
    lambda: inn.GlobalAvgPool2d(),
    lambda: inn.AdaptiveAvgPool2d(1),
])
def test_pool_layers_gradient_check_and_config_round_trip(layer):
    rng = np.random.default_rng(3)
    y = check_layer_gradients(layer().astype(np.float64), tie_free((2, 3, 9, 8), rng), rng)
    assert y.shape[1:] == layer().output_shape((3, 9, 8))
    a = layer()
    b = type(a).from_config(a.get_config())
    assert b.get_config() == a.get_config()
    x = rng.standard_normal((1, 3, 9, 8))
    np.testing.assert_array_equal(a.forward(x), b.forward(x))


def test_pool_layers_in_a_saved_model(tmp_path):
    model = inn.Sequential([inn.Conv2d(1, 4, 3), inn.MaxPool2d(2, ceil_mode=True, dilation=1),
                            inn.AvgPool2d(2, 1, 1, ceil_mode=True, count_include_pad=False),
                            inn.LeakyReLU(0.2), inn.GlobalAvgPool2d(), inn.Flatten(),
                            inn.Linear(4, 3), inn.LogSoftmax()], input_shape=(1, 9, 9)).reset_parameters(0)
    x = np.random.default_rng(4).standard_normal((2, 1, 9, 9)).astype(np.float32)
    path = model.save(tmp_path / "m.h5")
    loaded = inn.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert [type(layer).__name__ for layer in loaded.layers] == [
        "Conv2d", "MaxPool2d", "AvgPool2d", "LeakyReLU", "GlobalAvgPool2d", "Flatten", "Linear",
        "LogSoftmax"]
    assert loaded.layers[2].get_config() == model.layers[2].get_config()


def test_bad_pooling_options_are_clear_errors():
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match="kernel_size.*larger than the padded input.*ceil_mode"):
        F.maxpool2d_forward(x, 5, ceil_mode=True)
    with pytest.raises(ValueError, match="kernel_size.*larger than the padded input.*ceil_mode"):
        F.avgpool2d_forward(x, (2, 7), padding=1, ceil_mode=True)
    with pytest.raises(ValueError, match="kernel_size"):
        inn.MaxPool2d(5, ceil_mode=True).output_shape((1, 4, 4))
    # count_include_pad=False with a window of padding only would divide by 0
    with pytest.raises(ValueError, match="padding.*padding only.*count_include_pad"):
        F.avgpool2d_forward(x, 2, 2, 2, count_include_pad=False)
    # a dilated max window whose taps all fall in the padding has no winner
    with pytest.raises(ValueError, match="padding.*padding only.*no winner"):
        F.maxpool2d_forward(np.zeros((1, 1, 2, 6)), 2, 1, padding=(1, 0), dilation=(3, 1))
    with pytest.raises(ValueError, match="dilation"):
        F.maxpool2d_forward(x, 2, dilation=0)
    with pytest.raises(ValueError, match="padding: ceil_mode needs the bottom/right padding >= 0"):
        F.avgpool2d_forward(np.zeros((1, 1, 7, 7)), 2, padding=((0, -1), (0, 0)), ceil_mode=True)
    with pytest.raises(ValueError, match=r"output_size: 3 must divide the input size \(4, 4\)"):
        inn.AdaptiveAvgPool2d(3).forward(x)
    with pytest.raises(ValueError, match="output_size"):
        inn.AdaptiveAvgPool2d((2, 0))
    with pytest.raises(ValueError, match="input_shape"):
        inn.GlobalAvgPool2d().output_shape((4,))


# ------------------------------------------------------------------------- PyTorch

def _torch_pool(torch, op, x, dy, k, s, p, **opts):
    xt = torch.from_numpy(x).requires_grad_()
    if op == "max":
        yt, idx = torch.nn.functional.max_pool2d(xt, k, s, p, return_indices=True, **opts)
    else:
        yt, idx = torch.nn.functional.avg_pool2d(xt, k, s, p, **opts), None
    yt.backward(torch.from_numpy(dy))
    return yt.detach().numpy(), None if idx is None else idx.numpy(), xt.grad.numpy()


@pytest.mark.parametrize("k, s, p, d, ceil", [
    (2, 2, 0, 1, True), (3, 2, 1, 2, True), (3, 1, 1, 2, False), ((3, 2), (2, 1), (1, 1), (1, 2), True),
    (2, 3, 1, 1, True)])
def test_maxpool_against_torch(k, s, p, d, ceil):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = tie_free((2, 3, 9, 11), rng)
    y, path = F.maxpool2d_forward(x, k, s, p, dilation=d, ceil_mode=ceil)
    dy = rng.standard_normal(y.shape)
    yt, idx, dxt = _torch_pool(torch, "max", x, dy, k, s, p, dilation=d, ceil_mode=ceil)
    np.testing.assert_array_equal(y, yt)
    np.testing.assert_array_equal(path, idx)
    np.testing.assert_allclose(F.maxpool2d_backward(dy, path, x.shape), dxt, rtol=1e-12)


@pytest.mark.parametrize("k, s, p, ceil, include", [
    (2, 2, 0, True, True), (3, 2, 1, True, True), (3, 2, 1, True, False), (3, 2, 1, False, False),
    ((3, 2), (2, 3), (1, 1), True, False), (2, 3, 1, True, True)])
def test_avgpool_against_torch(k, s, p, ceil, include):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 9, 11))
    opts = dict(ceil_mode=ceil, count_include_pad=include)
    y = F.avgpool2d_forward(x, k, s, p, **opts)
    dy = rng.standard_normal(y.shape)
    yt, _, dxt = _torch_pool(torch, "avg", x, dy, k, s, p, **opts)
    np.testing.assert_allclose(y, yt, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(F.avgpool2d_backward(dy, x.shape, k, s, p, **opts), dxt,
                               rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("output_size", [1, 2, (3, 1), (6, 4)])
def test_adaptive_average_pooling_where_the_size_divides(output_size):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 3, 6, 8))
    layer = inn.AdaptiveAvgPool2d(output_size)
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    y = check_layer_gradients(layer, x, rng)
    assert y.shape == (2, 3, oh, ow) and layer.output_shape((3, 6, 8)) == (3, oh, ow)
    blocks = x.reshape(2, 3, oh, 6 // oh, ow, 8 // ow)
    np.testing.assert_allclose(y, blocks.mean(axis=(3, 5)), rtol=1e-13)
    torch = pytest.importorskip("torch")
    yt = torch.nn.AdaptiveAvgPool2d(output_size)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, yt, rtol=1e-13)


def test_global_average_pooling_against_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(7).standard_normal((2, 3, 5, 6))
    yt = torch.nn.AdaptiveAvgPool2d(1)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(F.global_avgpool2d_forward(x), yt, rtol=1e-13)


def test_random_options_agree_with_the_loops_or_raise():
    """Random geometries: the result equals the loops' whenever every window holds an image
    cell, and a ValueError names the padding when one does not (the loops have no winner)."""
    rng = np.random.default_rng(8)
    checked = raised = 0
    for _ in range(150):
        H, W = rng.integers(1, 9, 2)
        k, s, d = (tuple(int(v) for v in rng.integers(1, hi, 2)) for hi in (5, 4, 3))
        p = tuple(int(rng.integers(0, kk)) for kk in k)       # max pooling: padding < kernel
        ceil = bool(rng.integers(0, 2))
        x = tie_free((1, 2, H, W), rng)
        Ho = torch_out_size(H, k[0], s[0], p[0], p[0], d[0], ceil)
        Wo = torch_out_size(W, k[1], s[1], p[1], p[1], d[1], ceil)
        if Ho < 1 or Wo < 1 or H + 2 * p[0] < d[0] * (k[0] - 1) + 1 or W + 2 * p[1] < d[1] * (k[1] - 1) + 1:
            with pytest.raises(ValueError, match="kernel_size|padding"):
                F.maxpool2d_forward(x, k, s, p, d, ceil)
            continue
        rows = [[r for r in range(i * s[0] - p[0], i * s[0] - p[0] + k[0] * d[0], d[0]) if 0 <= r < H]
                for i in range(Ho)]
        cols = [[c for c in range(j * s[1] - p[1], j * s[1] - p[1] + k[1] * d[1], d[1]) if 0 <= c < W]
                for j in range(Wo)]
        if not all(rows) or not all(cols):
            with pytest.raises(ValueError, match="padding"):
                F.maxpool2d_forward(x, k, s, p, d, ceil)
            raised += 1
            continue
        y, path = F.maxpool2d_forward(x, k, s, p, d, ceil)
        y_ref, path_ref = naive_pool(x, k, s, p, d, ceil)
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(path, path_ref)
        if d == (1, 1):
            for include in (True, False):
                np.testing.assert_allclose(
                    F.avgpool2d_forward(x, k, s, p, ceil, include),
                    naive_pool(x, k, s, p, 1, ceil, include, op="avg"), rtol=1e-12, atol=1e-15)
        checked += 1
    assert checked > 50 and raised > 0
