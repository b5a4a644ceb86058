"""Grouped and depthwise convolution (groups=G): each pass against the ungrouped convolution
with the block-diagonal kernel bank, against the direct loops, float64 finite differences,
PyTorch where installed; the layer, its file format, and bad input."""
import numpy as np
import pytest

import im2colnet as inn
import im2colnet.functional as F
from im2colnet.reference import conv2d_loops
from _gradcheck import check_directional, check_layer_gradients


def block_diagonal(w, groups, channels):
    """The (K, C, kh, kw) bank of the same convolution without groups: zero between groups."""
    K, cg = w.shape[:2]
    full = np.zeros((K, channels) + w.shape[2:])
    kg = K // groups
    for k in range(K):
        g = k // kg
        full[k, g * cg:(g + 1) * cg] = w[k]
    return full


# (x shape, K, kernel, groups, window kwargs)
CASES = [
    ((2, 4, 7, 6), 6, 3, 2, dict()),
    ((1, 6, 8, 8), 6, 3, 6, dict(padding=1)),                             # depthwise
    ((2, 3, 9, 7), 6, (3, 2), 3, dict(stride=2, padding=(1, 0))),         # depthwise, 2 per channel
    ((1, 4, 9, 9), 8, 3, 4, dict(dilation=2, padding="same")),
    ((2, 6, 5, 6), 4, 1, 2, dict()),                                      # 1x1 (pointwise path)
    ((1, 4, 6, 7), 4, 3, 2, dict(anchor=(0, 2))),
]


@pytest.mark.parametrize("method", ["im2col", "blas", "direct"])
@pytest.mark.parametrize("shape, K, k, groups, kw", CASES)
def test_three_passes_equal_the_block_diagonal_convolution(shape, K, k, groups, kw, method):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    kh, kwid = (k, k) if isinstance(k, int) else k
    w = rng.standard_normal((K, shape[1] // groups, kh, kwid))
    b = rng.standard_normal(K)
    full = block_diagonal(w, groups, shape[1])
    y = F.conv2d_forward(x, w, b, method=method, groups=groups, **kw)
    np.testing.assert_allclose(y, F.conv2d_forward(x, full, b, **kw), rtol=1e-11, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx = F.conv2d_backward_data(dy, w, shape, method=method, groups=groups, **kw)
    np.testing.assert_allclose(dx, F.conv2d_backward_data(dy, full, shape, **kw),
                               rtol=1e-11, atol=1e-12)
    dw, db = F.conv2d_backward_weights(dy, x, w.shape, method=method, groups=groups, **kw)
    dw_full, db_full = F.conv2d_backward_weights(dy, x, full.shape, **kw)
    # the grouped weight gradient is the block-diagonal part of the ungrouped one
    np.testing.assert_allclose(block_diagonal(dw, groups, shape[1]),
                               np.where(block_diagonal(np.ones_like(w), groups, shape[1]) != 0,
                                        dw_full, 0), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(db, db_full, rtol=1e-12)


@pytest.mark.parametrize("shape, K, k, groups, kw", CASES)
def test_float32_routes_agree_with_the_grouped_loops(shape, K, k, groups, kw):
    """float32: the packed kernel per group (or the loops, for thin groups) against the
    grouped direct loops and a float64 reference."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(np.float32)
    kh, kwid = (k, k) if isinstance(k, int) else k
    w = rng.standard_normal((K, shape[1] // groups, kh, kwid)).astype(np.float32)
    y = F.conv2d_forward(x, w, groups=groups, **kw)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    passes = {
        "y": lambda m, d: F.conv2d_forward(x.astype(d), w.astype(d), method=m, groups=groups, **kw),
        "dx": lambda m, d: F.conv2d_backward_data(dy.astype(d), w.astype(d), shape, method=m,
                                                  groups=groups, **kw),
        "dw": lambda m, d: F.conv2d_backward_weights(dy.astype(d), x.astype(d), w.shape, method=m,
                                                     groups=groups, **kw)[0],
    }
    for name, run in passes.items():
        exact = run("direct", np.float64)
        for method in ("im2col", "blas", "direct"):
            got = run(method, np.float32)
            assert got.dtype == np.float32, (name, method)
            np.testing.assert_allclose(got, exact, rtol=1e-4, atol=1e-4 * np.abs(exact).max(),
                                       err_msg=f"{name} {method}")


def test_depthwise_against_the_loops_of_the_definition():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 6, 5))
    w = rng.standard_normal((3, 1, 3, 3))
    y = F.conv2d_forward(x, w, stride=(1, 2), padding=1, groups=3)
    for c in range(3):   # channel c convolved with its own kernel alone
        np.testing.assert_allclose(y[:, c:c + 1], conv2d_loops(x[:, c:c + 1], w[c:c + 1], None,
                                                               stride=(1, 2), padding=1),
                                   rtol=1e-12, atol=1e-12)


def test_grouped_passes_pass_gradient_checks():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 6, 6))
    w = rng.standard_normal((6, 2, 3, 3))
    kw = dict(stride=2, padding=1, groups=2)
    y = F.conv2d_forward(x, w, **kw)
    r = rng.standard_normal(y.shape)
    dx = F.conv2d_backward_data(r, w, x.shape, **kw)
    dw, _ = F.conv2d_backward_weights(r, x, w.shape, **kw)
    check_directional(lambda z: float(np.sum(r * F.conv2d_forward(z, w, **kw))), x, dx, rng)
    check_directional(lambda v: float(np.sum(r * F.conv2d_forward(x, v, **kw))), w, dw, rng)


def test_conv2d_layer_with_groups():
    rng = np.random.default_rng(3)
    layer = inn.Conv2d(4, 8, 3, padding=1, groups=4)
    layer.build((4, 5, 5), rng)
    layer.astype(np.float64)
    assert layer.params["weight"].shape == (8, 1, 3, 3)
    assert layer.count_params() == 8 * 9 + 8
    x = rng.standard_normal((2, 4, 5, 5))
    y = check_layer_gradients(layer, x, rng)
    np.testing.assert_allclose(
        y, F.conv2d_forward(x, block_diagonal(layer.params["weight"], 4, 4), layer.params["bias"],
                            padding=1), rtol=1e-12, atol=1e-12)
    assert layer.get_config()["groups"] == 4 and "groups=4" in repr(layer)


def test_grouped_model_saves_and_loads(tmp_path):
    model = inn.Sequential([inn.Conv2d(2, 4, 3, groups=2), inn.ReLU(),
                            inn.Conv2d(4, 4, 3, groups=4), inn.Flatten(), inn.Linear(4 * 3 * 3, 2)],
                           input_shape=(2, 7, 7)).reset_parameters(1)
    x = np.random.default_rng(4).standard_normal((3, 2, 7, 7)).astype(np.float32)
    loaded = inn.load_model(model.save(tmp_path / "g.h5"))
    assert loaded.layers[2].groups == 4 and loaded.layers[2].params["weight"].shape == (4, 1, 3, 3)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    # a file written before groups existed has no such key: it loads as groups=1
    config = model.layers[0].get_config()
    del config["groups"]
    assert inn.Conv2d.from_config(config).groups == 1


def test_bad_groups_are_clear_errors():
    x, w = np.zeros((1, 4, 5, 5)), np.zeros((6, 2, 3, 3))
    with pytest.raises(ValueError, match="groups: 3 groups must divide both the 4 input channels"):
        F.conv2d_forward(x, np.zeros((6, 1, 3, 3)), groups=3)
    with pytest.raises(ValueError, match="groups.*6 output channels"):
        F.conv2d_forward(x, np.zeros((6, 1, 3, 3)), groups=4)
    with pytest.raises(ValueError, match=r"w: expected shape \(6, 2, kh, kw\)"):
        F.conv2d_forward(x, np.zeros((6, 4, 3, 3)), groups=2)
    with pytest.raises(ValueError, match="groups"):
        F.conv2d_backward_data(np.zeros((1, 6, 3, 3)), w, (1, 5, 5, 5), groups=2)
    with pytest.raises(ValueError, match="dy"):
        F.conv2d_backward_data(np.zeros((1, 4, 3, 3)), w, x.shape, groups=2)
    with pytest.raises(ValueError, match="groups"):
        F.conv2d_backward_weights(np.zeros((1, 6, 3, 3)), np.zeros((1, 3, 5, 5)), (6, 1, 3, 3), groups=2)
    with pytest.raises(ValueError, match="w_shape"):
        F.conv2d_backward_weights(np.zeros((1, 6, 3, 3)), x, (6, 4, 3, 3), groups=2)
    with pytest.raises(ValueError, match="groups: must be >= 1"):
        F.conv2d_forward(x, w, groups=0)
    with pytest.raises(TypeError, match="groups"):
        F.conv2d_forward(x, w, groups=2.0)
    with pytest.raises(ValueError, match="groups: 3 groups must divide both in_channels=4"):
        inn.Conv2d(4, 6, 3, groups=3)


@pytest.mark.parametrize("shape, K, k, groups, kw", [c for c in CASES if "anchor" not in c[4]
                                                     and c[4].get("padding") != "same"])
def test_against_torch(shape, K, k, groups, kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape)
    kh, kwid = (k, k) if isinstance(k, int) else k
    w = rng.standard_normal((K, shape[1] // groups, kh, kwid))
    b = rng.standard_normal(K)
    xt, wt, bt = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    yt = torch.nn.functional.conv2d(xt, wt, bt, groups=groups, **kw)
    dy = rng.standard_normal(tuple(yt.shape))
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(F.conv2d_forward(x, w, b, groups=groups, **kw), yt.detach().numpy(),
                               rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(F.conv2d_backward_data(dy, w, shape, groups=groups, **kw),
                               xt.grad.numpy(), rtol=1e-11, atol=1e-12)
    dw, db = F.conv2d_backward_weights(dy, x, w.shape, groups=groups, **kw)
    np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(db, bt.grad.numpy(), rtol=1e-12)


def test_float32_and_non_contiguous_inputs():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 6, 7, 7))
    w = rng.standard_normal((6, 2, 3, 3))
    y64 = F.conv2d_forward(x, w, groups=3, padding=1)
    y32 = F.conv2d_forward(x.astype(np.float32), w.astype(np.float32), groups=3, padding=1)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(F.conv2d_forward(np.asfortranarray(x), w[:, ::-1][:, ::-1],
                                                   groups=3, padding=1), y64)
    dy = rng.standard_normal(y64.shape).astype(np.float32)
    dx = F.conv2d_backward_data(dy, w, x.shape, groups=3, padding=1)
    dw, db = F.conv2d_backward_weights(dy, x, w.shape, groups=3, padding=1)
    assert dx.dtype == dw.dtype == db.dtype == np.float32
